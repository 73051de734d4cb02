"""GLASS, ODE and SDE transitions against the exact Gaussian-mixture kernel (docs/math.md §7)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from align_fixtures import gmm as gmm2
from glass_core import _random
from glass_core.errors import InvalidInputError, ModelError
from glass_core.models import GaussianMixture, from_callable
from glass_core.schedules import Cosine, RectifiedFlow, resolve_rho
from glass_core.transitions import ODE, SDE, Glass, Transition
from glass_core.transitions.glass import PC_SPREAD, multistep_grid
from stat_checks import assert_moments, energy_pvalue, moment_errors

F64 = torch.float64
N = 100_000
K_HEUN = 20  # inner Heun steps for the kernel-moment tests (2K NFE per transition)
# t'=1: the last inner step must be Euler (singular at s=1), so more steps (docs/math.md §7)
K_POSTERIOR = 40


def gmm16(schedule=None):
    g = torch.Generator().manual_seed(16)
    means = 1.5 * torch.randn(4, 16, generator=g, dtype=F64)
    return GaussianMixture(
        means, torch.tensor([0.3, 0.5, 0.4, 0.6]), torch.tensor([0.1, 0.4, 0.3, 0.2]), schedule
    )


class Counting:
    """Wraps a denoiser and counts model evaluations."""

    def __init__(self, model):
        self.model, self.schedule, self.calls = model, model.schedule, 0

    def denoise(self, x, t):
        self.calls += 1
        return self.model.denoise(x, t)

    def velocity(self, x, t):
        self.calls += 1
        return self.model.velocity(x, t)


def two_measurement_posterior_mean(model, x, xbar, t, t_next, rho, s, sigma0=1.0):
    """E[z | x_t, xbar_s] for the GMM by the 2x2 matrix form of docs/math.md §3.2 (no closed-form
    shortcuts)."""
    sc = model.schedule
    a, sg, a2, sg2 = sc.alpha(t), sc.sigma(t), sc.alpha(t_next), sc.sigma(t_next)
    gam = rho * sg2 / sg
    abar, sbar = a2 - gam * a, sg2 * math.sqrt(max(1 - rho * rho, 0.0))
    a_s, s_s = s * abar, (1 - s) * sigma0 + s * sbar
    mu = torch.tensor([a, a_s + gam * a], dtype=F64)
    cov = torch.tensor(
        [[sg * sg, gam * sg * sg], [gam * sg * sg, s_s**2 + gam**2 * sg * sg]], dtype=F64
    )
    obs = torch.stack([x, xbar], dim=-1)  # [B, d, 2] per-coordinate measurements
    prec_lik = mu @ torch.linalg.solve(cov, mu)
    lin = obs @ torch.linalg.solve(cov, mu)  # [B, d]
    m, v, pi = model.means, model.stds**2, model.weights
    out_logw, out_mean = [], []
    for k in range(len(pi)):
        marg = v[k] * torch.outer(mu, mu) + cov
        dev = obs - m[k].unsqueeze(-1) * mu  # [B, d, 2]
        quad = (dev @ torch.linalg.inv(marg) * dev).sum(-1).sum(-1)
        out_logw.append(torch.log(pi[k]) - 0.5 * quad - 0.5 * x.shape[1] * torch.logdet(marg))
        out_mean.append((m[k] / v[k] + lin) / (1 / v[k] + prec_lik))
    w = torch.softmax(torch.stack(out_logw, 1), 1)
    return (w.unsqueeze(-1) * torch.stack(out_mean, 1)).sum(1)


@pytest.mark.parametrize("sched", [RectifiedFlow(), Cosine()], ids=["rf", "cosine"])
@pytest.mark.parametrize(
    "t,t_next,rho",
    [
        (0.55, 0.8, 0.4),
        (0.3, 0.7, "ddpm"),
        (0.2, 0.6, -0.5),
        (0.4, 1.0, 0.3),
        (0.0, 0.5, 0.4),
        (0.5, 0.9, 1.0),
    ],
)
def test_glass_denoiser_is_the_two_measurement_posterior(sched, t, t_next, rho):
    """Prop. 2: D_{t*}(alpha* S) equals E[z | x_t, xbar_s] to 1e-10 in float64."""
    model = gmm2(sched)
    tr = Glass(rho, inner_steps=8, solver="midpoint")
    table = tr.coefficients(sched, t, t_next)
    r = table["rho"]
    g = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(32, 2, generator=g, dtype=F64)
    y = 1.5 * torch.randn(32, 2, generator=g, dtype=F64)
    for j, s in enumerate(table["s"]):
        if s == 0:
            continue
        inp = table["alpha_star"][j] * (table["c_x"][j] * x + table["c_y"][j] * y)
        got = model.denoise(inp, float(table["t_star"][j]))
        want = two_measurement_posterior_mean(model, x, y + table["gamma"] * x, t, t_next, r, s)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f"s={s}")


def reference_glass(model, x, t, t_next, rho, k, solver, eps, sigma0=1.0):
    """Algorithm 1 (and its Heun/midpoint/multistep/pc variants) written out from docs/math.md
    §3, with the GLASS denoiser replaced by the brute-force two-measurement posterior (no t*, no
    native table)."""
    sc = model.schedule
    gam = rho * sc.sigma(t_next) / sc.sigma(t)
    abar = sc.alpha(t_next) - gam * sc.alpha(t)
    sbar = sc.sigma(t_next) * math.sqrt(max(1 - rho * rho, 0.0))

    def path(s):  # a_s, s_s
        return s * abar, (1 - s) * sigma0 + s * sbar

    def zf(s, y):
        if s == 0:
            return model.denoise(x, t)
        return two_measurement_posterior_mean(model, x, y + gam * x, t, t_next, rho, s, sigma0)

    def f(s, y):
        s_s = path(s)[1]
        w1, w2 = (sbar - sigma0) / s_s, abar * sigma0 / s_s
        return w1 * y + w2 * zf(s, y)

    def ddim(s, s_next, y, d):  # exact step with the estimate held at d (docs/math.md §3.4)
        (a0, sg0), (a1, sg1) = path(s), path(s_next)
        return sg1 / sg0 * y + (a1 - sg1 * a0 / sg0) * d

    def end_extrapolation(s_prev, s, z_prev, z):  # linear in kappa = s_s/a_s, to kappa = 0
        if s_prev == 0:
            return z
        kp, kj = path(s_prev)[1] / path(s_prev)[0], path(s)[1] / path(s)[0]
        return z + kj / (kp - kj) * (z - z_prev)

    def lam(s):
        a, sg = path(s)
        return math.log(a / sg)

    snr = (sc.alpha(t) / sc.sigma(t)) ** 2
    c = PC_SPREAD * math.sqrt(snr + 1)

    def pc_step(s, s_next, y, z_at, phi_at):
        """y/s_s integrates D dr, r = a_s/s_s, with D linear in phi = r/sqrt(c^2 + r^2) through
        the points (phi_at[i], z_at[i]): Gauss-Legendre in r, or D at phi = 1 where s_{s'} = 0."""
        (a0, sg0), (a1, sg1) = path(s), path(s_next)

        def d(phi):
            if len(z_at) == 1:
                return z_at[0]
            return z_at[0] + (phi - phi_at[0]) / (phi_at[1] - phi_at[0]) * (z_at[1] - z_at[0])

        if sg1 == 0:
            return a1 * d(1.0)
        r0, r1 = a0 / sg0, a1 / sg1
        nodes, weights = np.polynomial.legendre.leggauss(40)
        r = r0 + (r1 - r0) * (nodes + 1) / 2
        integral = sum(
            w * (r1 - r0) / 2 * d(ri / math.hypot(c, ri)) for ri, w in zip(r, weights, strict=True)
        )
        return sg1 * (y / sg0 + integral)

    def phi_of(s):
        a, sg = path(s)
        return a / math.hypot(c * sg, a)

    grid = [m / k for m in range(k + 1)]
    if solver in ("multistep", "pc"):  # step starts (the grid is a choice; the update is tested)
        spread = PC_SPREAD if solver == "pc" else 1.0
        grid = [*multistep_grid(k, snr, abar, sbar, sigma0, spread), 1.0]
    y_prev = None
    y = sigma0 * eps
    z_prev = None
    for m in range(k):
        s, s_next = grid[m], grid[m + 1]
        h = s_next - s
        if solver == "euler":
            y = y + h * f(s, y)
        elif solver == "pc":  # predictor-corrector: docs/math.md §3.5
            z = zf(s, y)
            if m > 0:
                pts = [phi_of(grid[m - 1]), phi_of(s)]
                y = pc_step(grid[m - 1], s, y_prev, [z_prev, z], pts)
            y_prev = y
            if m == 0:
                y = pc_step(s, s_next, y, [z], [0.0])
            else:
                y = pc_step(s, s_next, y, [z_prev, z], [phi_of(grid[m - 1]), phi_of(s)])
            z_prev = z
        elif m == k - 1 and sbar == 0 and solver in ("heun", "multistep"):
            z = zf(s, y)
            y = abar * end_extrapolation(grid[m - 1] if m else 0.0, s, z_prev, z)
        elif solver == "heun":
            z_prev = zf(s, y)
            k1 = f(s, y)
            y = y + h / 2 * (k1 + f(s_next, y + h * k1))
        elif solver == "multistep":
            z = d = zf(s, y)
            if m >= 2:  # DPM-Solver++(2M) with the exact exponential weight of the slope
                hj, hp = lam(s_next) - lam(s), lam(s) - lam(grid[m - 1])
                d = z + (hj / (1 - math.exp(-hj)) - 1) / hp * (z - z_prev)
            y, z_prev = ddim(s, s_next, y, d), z
        else:
            y = y + h * f(s + h / 2, y + h / 2 * f(s, y))
    return gam * x + y


@pytest.mark.parametrize(
    "solver,k",
    [
        ("euler", 5),
        ("heun", 3),
        ("midpoint", 3),
        ("multistep", 2),
        ("multistep", 4),
        ("pc", 2),
        ("pc", 4),
    ],
)
@pytest.mark.parametrize(
    "t,t_next,rho",
    [(0.55, 0.8, 0.4), (0.2, 0.7, -0.6), (0.3, 1.0, 0.4), (0.4, 0.9, 1.0), (0.0, 0.6, 0.5)],
)
def test_glass_step_matches_reference_algorithm(solver, k, t, t_next, rho):
    """The whole transition, deterministic given its noise, to 1e-10 in float64."""
    model = gmm2(Cosine())
    x = 1.5 * torch.randn(40, 2, generator=torch.Generator().manual_seed(13), dtype=F64)
    eps = _random.randn_like(x, torch.Generator().manual_seed(14))
    got = Glass(rho, inner_steps=k, solver=solver)(
        model, x, t, t_next, torch.Generator().manual_seed(14)
    )
    want = reference_glass(model, x, t, t_next, rho, k, solver, eps)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint", "multistep", "pc"])
@pytest.mark.parametrize("sigma0", [0.5, 2.0])
@pytest.mark.parametrize("t,t_next,rho", [(0.3, 0.7, 0.4), (0.4, 1.0, "ddpm")])
def test_glass_step_matches_reference_with_sigma0(solver, sigma0, t, t_next, rho):
    """The inner path's initial scale sigma0 != 1 enters every solver's table and grid."""
    model = gmm2(Cosine())
    rho_value = resolve_rho(model.schedule, rho, t, t_next)
    x = 1.5 * torch.randn(40, 2, generator=torch.Generator().manual_seed(13), dtype=F64)
    eps = _random.randn_like(x, torch.Generator().manual_seed(14))
    got = Glass(rho, inner_steps=3, solver=solver, sigma0=sigma0)(
        model, x, t, t_next, torch.Generator().manual_seed(14)
    )
    want = reference_glass(model, x, t, t_next, rho_value, 3, solver, eps, sigma0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", ["euler", "heun", "multistep", "pc"])
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 1e-5)])
def test_rho1_one_step_is_deterministic_ddim(solver, dtype, tol):
    sched = Cosine()
    model = gmm2(sched)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    t, tn = 0.35, 0.7
    a, s, a2, s2 = sched.alpha(t), sched.sigma(t), sched.alpha(tn), sched.sigma(tn)
    d = model.denoise(x, t)
    ddim = a2 * d + s2 * (x - a * d) / s  # eta = 0 DDIM
    tr = Glass(1.0, inner_steps=1, solver=solver)
    out1 = tr(model, x.to(dtype), t, tn, torch.Generator().manual_seed(1))
    out2 = tr(model, x.to(dtype), t, tn, torch.Generator().manual_seed(2))
    assert out1.dtype == dtype
    torch.testing.assert_close(out1.double(), ddim, rtol=tol, atol=tol)
    assert torch.equal(out1, out2)


def test_rho1_many_inner_steps_is_stochastic_and_exact():
    model = gmm2()
    x = torch.tensor([[0.3, -0.4]], dtype=F64).expand(N, 2)
    tr = Glass(1.0, inner_steps=K_HEUN, solver="heun")
    out1 = tr(model, x[:100], 0.55, 0.8, torch.Generator().manual_seed(1))
    out2 = tr(model, x[:100], 0.55, 0.8, torch.Generator().manual_seed(2))
    assert (out1 - out2).abs().max() > 0.1
    mu, cov = model.transition_moments(x[:1], 0.55, 0.8, 1.0)
    assert cov[0].trace() > 0.1  # the exact rho=1 kernel is not a point mass (docs/math.md §3)
    out = tr(model, x, 0.55, 0.8, torch.Generator().manual_seed(3))
    assert_moments(out, mu[0], cov[0], what="rho=1, K=20")


def test_one_euler_step_is_the_ddim_type_kernel():
    """K=1: x' = gamma x + abar D_t(x) + sbar eps (docs/math.md §3.3), with eps the transition's
    own noise."""
    model = gmm2(Cosine())
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    tr = Glass(0.4, inner_steps=1)
    c = tr.coefficients(model.schedule, 0.3, 0.75)
    eps = _random.randn_like(x, torch.Generator().manual_seed(9))
    want = c["gamma"] * x + c["abar"] * model.denoise(x, 0.3) + c["sbar"] * eps
    got = tr(model, x, 0.3, 0.75, torch.Generator().manual_seed(9))
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


KERNEL_CASES = [
    ("rf", 0.55, 0.8, 0.4),
    ("rf", 0.3, 0.7, "ddpm"),
    ("cosine", 0.4, 0.6, -0.5),
    ("rf", 0.2, 1.0, 0.4),
    ("cosine", 0.5, 1.0, "ddpm"),
    ("rf", 0.0, 0.5, 0.4),
]


def _sched(name):
    return RectifiedFlow() if name == "rf" else Cosine()


@pytest.mark.parametrize("dim", [2, pytest.param(16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sname,t,t_next,rho", KERNEL_CASES)
def test_glass_heun_matches_exact_kernel(dim, sname, t, t_next, rho):
    """Mean and covariance of 1e5 GLASS samples (Heun, K=20; K=40 for t'=1, whose last step is
    Euler) within 5 standard errors of the exact kernel, and an energy-distance permutation test
    against exact kernel samples."""
    model = (gmm2 if dim == 2 else gmm16)(_sched(sname))
    g = torch.Generator().manual_seed(6)
    x0 = model.sample_marginal(1, t, g) if t > 0 else torch.randn(1, dim, generator=g, dtype=F64)
    x = x0.expand(N, dim)
    k = K_HEUN if t_next < 1 else K_POSTERIOR
    out = Glass(rho, inner_steps=k, solver="heun")(model, x, t, t_next, g)
    mu, cov = model.transition_moments(x0, t, t_next, rho)
    assert_moments(out, mu[0], cov[0], what=f"d={dim} {t}->{t_next} rho={rho}")
    exact = model.sample_transition(x, t, t_next, rho, g)
    assert energy_pvalue(out, exact) > 0.01


def test_kernel_check_rejects_a_wrong_sampler():
    """The same moment check flags the one-step (DDIM-type) approximation as wrong."""
    model = gmm2()
    x = torch.tensor([[0.3, -0.4]], dtype=F64).expand(N, 2)
    out = Glass(0.4, inner_steps=1)(model, x, 0.55, 0.8, torch.Generator().manual_seed(7))
    mu, cov = model.transition_moments(x[:1], 0.55, 0.8, 0.4)
    zm, zc = moment_errors(out, mu[0], cov[0])
    assert max(zm.abs().max(), zc.abs().max()) > 10


@pytest.mark.parametrize("solver,k", [("euler", 200), ("midpoint", 20)])
def test_glass_other_solvers_converge(solver, k):
    model = gmm2()
    x = torch.tensor([[0.3, -0.4]], dtype=F64).expand(N, 2)
    out = Glass(0.4, inner_steps=k, solver=solver)(
        model, x, 0.55, 0.8, torch.Generator().manual_seed(8)
    )
    mu, cov = model.transition_moments(x[:1], 0.55, 0.8, 0.4)
    # Euler has O(1/K) bias (cov error ~0.006 at K=200); allow it explicitly on top of noise.
    bias = 0.01 if solver == "euler" else 0.0
    zm, zc = moment_errors(out, mu[0], cov[0])
    se_cov = (cov[0].diagonal().outer(cov[0].diagonal()) / N).sqrt()
    assert zm.abs().max() < 5
    assert torch.all(zc.abs() < 5 + bias / se_cov)


@pytest.mark.slow
def test_sde_many_substeps_matches_ddpm_kernel():
    """Prop. 1: the SDE's kernel is the GLASS kernel with rho_DDPM (EM, 1000 substeps)."""
    model = gmm2()
    x = torch.tensor([[0.3, -0.4]], dtype=F64).expand(N, 2)
    out = SDE(substeps=1000)(model, x, 0.55, 0.8, torch.Generator().manual_seed(9))
    mu, cov = model.transition_moments(x[:1], 0.55, 0.8, "ddpm")
    assert_moments(out, mu[0], cov[0], z=6.0, what="SDE 1000 substeps")


def test_ode_is_deterministic_and_converges_to_the_flow():
    """Euler is first order and Heun second order against a fine Heun reference."""
    model = gmm2(Cosine())
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(10), dtype=F64)
    fine = ODE("heun", substeps=800)(model, x, 0.2, 0.7)

    def err(solver, n):
        out = ODE(solver, substeps=n)(model, x, 0.2, 0.7, torch.Generator().manual_seed(1))
        return float((out - fine).abs().max())

    assert 1.7 < err("euler", 40) / err("euler", 80) < 2.3
    assert 3.3 < err("heun", 40) / err("heun", 80) < 4.7
    assert err("heun", 80) < 1e-3
    assert torch.equal(ODE("heun", 5)(model, x, 0.2, 0.7), ODE("heun", 5)(model, x, 0.2, 0.7))


@pytest.mark.parametrize(
    "tr",
    [
        Glass("ddpm", 4, "heun"),
        Glass(0.4, 3, "euler"),
        Glass(0.4, 3, "midpoint"),
        Glass(0.4, 3, "multistep"),
        Glass(1.0, 4, "multistep"),
        ODE("heun", 3),
        ODE("euler", 2),
        SDE(substeps=3),
    ],
    ids=repr,
)
@pytest.mark.parametrize("t_next", [0.7, 1.0])
def test_denoised_reuse_is_exact_and_saves_one_call(tr, t_next):
    model = Counting(gmm2(Cosine()))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(11), dtype=F64)
    ref = tr(model, x, 0.3, t_next, torch.Generator().manual_seed(1))
    assert model.calls == tr.nfe(model.schedule, 0.3, t_next) <= tr.nfe_per_call
    d = model.model.denoise(x, 0.3)
    model.calls = 0
    out = tr(model, x, 0.3, t_next, torch.Generator().manual_seed(1), denoised=d)
    assert model.calls == tr.nfe(model.schedule, 0.3, t_next, reuse=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "tr",
    [Glass("ddpm", 3, "heun"), Glass(0.4, 3, "multistep"), ODE("heun", 2), SDE(substeps=2)],
    ids=repr,
)
def test_any_shape_dtype_and_gradients(tr):
    sched = RectifiedFlow()
    base = gmm16(sched)
    model = from_callable(
        lambda x, t: base.denoise(x.reshape(len(x), -1), t).reshape(x.shape),
        prediction="x1",
        schedule=sched,
    )
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(6, 4, 2, 2).to(dtype)
        out = tr(model, x, 0.2, 0.6, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()
    x = torch.randn(6, 4, 2, 2, dtype=F64, requires_grad=True)
    with torch.no_grad():
        assert not tr(model, x, 0.2, 0.6).requires_grad
    tr(model, x, 0.2, 0.6, torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_generator_lists_give_per_group_reproducibility():
    model = gmm2()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(12), dtype=F64)
    tr = Glass(0.4, 4, "heun")
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    out = tr(model, x, 0.3, 0.8, gens)
    for b, s in enumerate((1, 2, 3)):
        one = tr(model, x[2 * b : 2 * b + 2], 0.3, 0.8, torch.Generator().manual_seed(s))
        torch.testing.assert_close(out[2 * b : 2 * b + 2], one, rtol=1e-12, atol=1e-12)


def test_bad_inputs_name_the_argument():
    model = gmm2()
    x = torch.zeros(4, 2, dtype=F64)
    for kwargs, name in [
        ({"rho": 1.5}, "rho"),
        ({"rho": -1.01}, "rho"),
        ({"rho": "ddim"}, "rho"),
        ({"rho": float("nan")}, "rho"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_steps": 2.5}, "inner_steps"),
        ({"solver": "rk4"}, "solver"),
        ({"sigma0": 0.0}, "sigma0"),
    ]:
        with pytest.raises(InvalidInputError, match=name):
            Glass(**kwargs)
    with pytest.raises(InvalidInputError, match="substeps"):
        ODE(substeps=0)
    with pytest.raises(InvalidInputError, match="solver"):
        ODE(solver="midpoint")
    with pytest.raises(InvalidInputError, match="substeps"):
        SDE(substeps=0)
    # one SDE step from pure noise straight to data is the frozen-denoiser step: x' = D_0 = E[z]
    torch.testing.assert_close(
        SDE(substeps=1)(model, x, 0.0, 1.0), model.mean().expand(4, 2).to(F64)
    )
    for tr in (Glass(), ODE(), SDE()):
        with pytest.raises(InvalidInputError, match="t_next"):
            tr(model, x, 0.5, 0.5)
        with pytest.raises(InvalidInputError, match="t_next"):
            tr(model, x, 0.6, 0.5)
        with pytest.raises(InvalidInputError, match="t_next"):
            tr(model, x, 0.5, 1.2)
        with pytest.raises(InvalidInputError, match="t must"):
            tr(model, x, -0.1, 0.5)
        with pytest.raises(InvalidInputError, match="t must"):
            tr(model, x, float("nan"), 0.5)
        with pytest.raises(InvalidInputError, match="denoised"):
            tr(model, x, 0.2, 0.5, denoised=torch.zeros(3, 2, dtype=F64))
        with pytest.raises(InvalidInputError, match="x must"):
            tr(model, torch.zeros(4, 3, dtype=F64), 0.2, 0.5)
        with pytest.raises(InvalidInputError, match="model"):
            tr(object(), x, 0.2, 0.5)


def test_lincomb_on_every_coefficient_path():
    """sum_i c_i v_i through each of its kernels: a leading 1 fused with a float (add with alpha),
    a leading non-1, a 0-d tensor coefficient, zero terms skipped, and all zero (zeros like the
    first tensor)."""
    from glass_core.transitions.solvers import lincomb

    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(3))
    cases = [
        ([(1.0, a), (2.5, b)], a + 2.5 * b),
        ([(1.0, a), (2.5, b), (-0.5, c)], a + 2.5 * b - 0.5 * c),
        ([(2.0, a), (0.5, b)], 2.0 * a + 0.5 * b),
        ([(1.0, a), (torch.tensor(0.5, dtype=torch.float64), b)], a + 0.5 * b),
        ([(0.0, a), (3.0, b)], 3.0 * b),
        ([(0.0, a), (0.0, b)], torch.zeros(5, dtype=torch.float64)),
        ([(0.0, a)], torch.zeros(5, dtype=torch.float64)),  # one term, zero
        ([(0.0, a.float()), (0.0, b)], torch.zeros(5)),  # zeros like the first tensor
    ]
    for terms, expected in cases:
        torch.testing.assert_close(lincomb(terms), expected, rtol=1e-15, atol=1e-15)


def test_bad_times_and_denoised_are_named_with_what_was_given():
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=r"^t must be a scalar time, got shape \(2,\)"):
        ODE()(gmm2(), x, torch.tensor([0.1, 0.2]), 0.5)
    with pytest.raises(InvalidInputError, match=r"shape of x \(4, 2\), got \(3, 2\)$"):
        ODE()(gmm2(), x, 0.1, 0.5, denoised=torch.zeros(3, 2, dtype=torch.float64))
    for t, t_next, name, given in [(False, 0.5, "t", "False"), (0.2, "0.7", "t_next", "'0.7'")]:
        with pytest.raises(InvalidInputError) as err:  # float() would read them as times
            ODE()(gmm2(), x, t, t_next)
        assert str(err.value) == f"{name} must be a float in [0, 1], got {given}"
        assert err.value.arg == name


class VelocityEuler(Transition):
    """A user's transition: one Euler step on the model's velocity, scaled by a model attribute
    that only the model has (the checking wrappers must forward it)."""

    nfe_per_call = 1

    def nfe(self, schedule, t, t_next, *, reuse=False):
        return 1

    def _step(self, model, x, t, t_next, generator, denoised):
        return x + (t_next - t) * model.speed * model.velocity(x, t)

    def __repr__(self):
        return "VelocityEuler()"


class SpeedModel:
    """The mixture with a `speed` attribute; its velocity output goes through `out`."""

    def __init__(self, out=lambda v: v):
        self.inner, self.out, self.speed = gmm2(), out, 0.5
        self.schedule = self.inner.schedule

    def denoise(self, x, t):
        return self.inner.denoise(x, t)

    def velocity(self, x, t):
        return self.out(self.inner.velocity(x, t))


def _nan_row_1(v):
    v = v.clone()
    v[1] = float("nan")
    return v


def test_a_transition_on_the_velocity_sees_the_model_through_the_checks():
    """Transitions get the model wrapped (per-output checks; per-row checks on the re-run that
    explains a NaN): velocity is the model's, other attributes are forwarded, and a bad velocity
    is blamed on the model naming the time (and the rows, found by the re-run)."""
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = SpeedModel()
    out = VelocityEuler()(model, x, 0.3, 0.5)
    assert torch.equal(out, x + 0.2 * 0.5 * model.inner.velocity(x, 0.3))
    with pytest.raises(ModelError, match=r"returned NaN/inf at t=0\.3 for rows \[1\] \(during"):
        VelocityEuler()(SpeedModel(_nan_row_1), x, 0.3, 0.5)
    with pytest.raises(
        ModelError, match=r"at t=0\.3 must be a floating-point tensor, got torch\.int"
    ):
        VelocityEuler()(SpeedModel(lambda v: v.long()), x, 0.3, 0.5)
    with pytest.raises(ModelError, match=r"at t=0\.3 is on meta, but its input was on cpu"):
        VelocityEuler()(SpeedModel(lambda v: v.to("meta")), x, 0.3, 0.5)


def test_the_checked_model_records_velocity_calls_and_checks_their_outputs():
    """CheckedModel (the re-run's wrapper) returns the model's velocity, records which rows of
    its input and output are finite, raises ModelError on a non-float or misplaced output and
    forwards other attributes."""
    from glass_core.transitions.base import CheckedModel

    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    checked = CheckedModel(SpeedModel(_nan_row_1))
    out = checked.velocity(x, 0.3)
    expected = _nan_row_1(gmm2().velocity(x, 0.3))
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert checked.speed == 0.5
    ((t, fin, fout),) = checked._calls
    assert t == 0.3 and fin.tolist() == [True] * 4 and fout.tolist() == [True, False, True, True]
    with pytest.raises(ModelError, match=r"at t=0\.3 must be a floating-point tensor"):
        CheckedModel(SpeedModel(lambda v: v.long())).velocity(x, 0.3)
    with pytest.raises(ModelError, match=r"at t=0\.3 is on meta"):
        CheckedModel(SpeedModel(lambda v: v.to("meta"))).velocity(x, 0.3)


@pytest.mark.parametrize(
    "rho", ["ddim", "", 1.5, -1.01, math.nan, math.inf, True, np.True_, None, [0.5], b"ddpm"]
)
def test_a_bad_rho_is_refused_alike_by_glass_and_by_the_exact_kernel(rho):
    """One rule for rho (schedules.check_rho): "ddpm" or a real number in [-1, 1]; a boolean is
    not read as 1.0. Glass checks it at construction, the GMM's exact kernel per call."""
    msg = rf"^rho must be a float in \[-1, 1\] or 'ddpm', got {re.escape(repr(rho))}$"
    with pytest.raises(InvalidInputError, match=msg):
        Glass(rho=rho)
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(InvalidInputError, match=msg):
        gmm2().sample_transition(x, 0.3, 0.6, rho)


@pytest.mark.parametrize("rho", [-1, 0, 1.0, np.float32(0.25), torch.tensor(0.5), "ddpm"])
def test_a_good_rho_is_used_as_given(rho):
    """Integers, numpy and 0-d torch numbers are read as floats; "ddpm" is the SDE's own
    correlation alpha_t sigma_t' / (sigma_t alpha_t')."""
    sched, t, t_next = gmm2().schedule, 0.3, 0.6
    want = (
        sched.alpha(t) * sched.sigma(t_next) / (sched.sigma(t) * sched.alpha(t_next))
        if rho == "ddpm"
        else float(rho)
    )
    assert resolve_rho(sched, rho, t, t_next) == pytest.approx(want, rel=1e-15)
    assert Glass(rho=rho).rho is rho


NUMBER = r"^`{}` must be a finite number, got {}$"
CONSTRUCTOR_ERRORS = [
    (lambda: Glass(sigma0=0.0), r"^sigma0 must be a finite float > 0, got 0.0$"),
    (lambda: Glass(sigma0=-2), r"^sigma0 must be a finite float > 0, got -2$"),
    (lambda: Glass(sigma0=math.inf), NUMBER.format("sigma0", "inf")),
    (lambda: Glass(sigma0="1.0"), NUMBER.format("sigma0", "'1.0'")),
    (lambda: Glass(sigma0=True), NUMBER.format("sigma0", "True")),
    (lambda: Glass(compile=1), r"^compile must be True or False, got 1$"),
    (
        lambda: Glass(solver="rk4"),
        r"^solver must be one of \('euler', 'heun', 'midpoint', 'multistep', 'pc'\), got 'rk4'$",
    ),
    (lambda: Glass(inner_steps=0), r"^`inner_steps` must be an integer >= 1, got 0$"),
    (lambda: SDE(kappa=-1.0), r"^kappa must be a finite float >= 0, got -1.0$"),
    (lambda: SDE(kappa=math.nan), NUMBER.format("kappa", "nan")),
    (lambda: SDE(kappa="1"), NUMBER.format("kappa", "'1'")),
    (lambda: SDE(kappa=True), NUMBER.format("kappa", "True")),
    (lambda: SDE(substeps=0), r"^`substeps` must be an integer >= 1, got 0$"),
    (
        lambda: ODE(solver="midpoint"),
        r"^solver must be one of \('euler', 'heun', 'multistep', 'pc'\), got 'midpoint'$",
    ),
    (lambda: ODE(substeps=2.0), r"^`substeps` must be an integer >= 1, got 2.0$"),
]


@pytest.mark.parametrize(("make", "msg"), CONSTRUCTOR_ERRORS)
def test_transition_constructors_refuse_bad_parameters_with_what_was_given(make, msg):
    """A typed error naming the parameter and the value; a string or a boolean is not read as a
    number (float("1.0") / True == 1.0)."""
    with pytest.raises(InvalidInputError, match=msg):
        make()


@pytest.mark.parametrize("tr", [Glass(inner_steps=2), ODE(), SDE()], ids=repr)
@pytest.mark.parametrize(
    ("t", "t_next", "msg"),
    [
        (0.5, 0.5, r"^t_next must be > t, got t=0.5, t_next=0.5$"),
        (1.0, 1.0, r"^t_next must be > t, got t=1.0, t_next=1.0$"),
        (0.6, 0.5, r"^t_next must be > t, got t=0.6, t_next=0.5$"),
        (0.5, 1.2, r"^t_next must be a finite float in \[0, 1\], got 1.2$"),
        (-0.1, 0.5, r"^t must be a finite float in \[0, 1\], got -0.1$"),
        ("a", 0.5, r"^t must be a float in \[0, 1\], got 'a'$"),
    ],
)
def test_step_times_are_named_with_what_was_given(tr, t, t_next, msg):
    with pytest.raises(InvalidInputError, match=msg):
        tr(gmm2(), torch.zeros(2, 2, dtype=F64), t, t_next)


@pytest.mark.parametrize("tr", [Glass(inner_steps=2), ODE(), SDE()], ids=repr)
def test_a_step_names_a_bad_model_and_a_bad_denoised(tr):
    x = torch.zeros(2, 2, dtype=F64)
    msg = r"^model must be a Denoiser \(schedule, denoise, velocity\), got object$"
    with pytest.raises(InvalidInputError, match=msg):
        tr(object(), x, 0.2, 0.5)
    msg = r"^denoised must have the shape of x \(2, 2\), got \[1\.0\]$"
    with pytest.raises(InvalidInputError, match=msg):
        tr(gmm2(), x, 0.2, 0.5, denoised=[1.0])


class _LowPrecisionIO:
    """`model` asked and answering in `dtype`, seen from float32 particles."""

    def __init__(self, model, dtype):
        self.model, self.dtype, self.schedule = model, dtype, model.schedule

    def denoise(self, x, t):
        return self.model.denoise(x.to(self.dtype), t).float()

    def velocity(self, x, t):
        return self.model.velocity(x.to(self.dtype), t).float()


@pytest.mark.parametrize(
    "tr",
    [Glass("ddpm", 3, "heun"), Glass(0.4, 3, "pc"), ODE("heun", 2), ODE("pc", 3), SDE(substeps=2)],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_particles_are_integrated_in_float32(tr, dtype):
    """bf16/fp16 particles: the model is asked in their dtype, but the step's arithmetic (noise,
    inner solver, combination) runs in float32 and is rounded once at the end, so it equals the
    float32 step of that model bit for bit (half-precision arithmetic would round at every
    operation)."""
    sched = RectifiedFlow()
    base = gmm16(sched)
    model = from_callable(
        lambda x, t: base.denoise(x.double(), t).to(x.dtype), prediction="x1", schedule=sched
    )
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = tr(model, x, 0.2, 0.6, torch.Generator().manual_seed(1))
    want = tr(_LowPrecisionIO(model, dtype), x.float(), 0.2, 0.6, torch.Generator().manual_seed(1))
    assert got.dtype == dtype
    assert torch.equal(got, want.to(dtype))


class _RawModel:
    """A bare Denoiser (no DenoiserBase checks) answering `make(x)` for D and u."""

    def __init__(self, make):
        self.schedule, self.make = RectifiedFlow(), make

    def denoise(self, x, t):
        return self.make(x)

    def velocity(self, x, t):
        return self.make(x)


@pytest.mark.parametrize("tr", [Glass(inner_steps=2), ODE(), SDE()], ids=repr)
def test_a_model_output_of_the_wrong_kind_is_blamed_on_the_model_with_its_time(tr):
    """Checked on each call from its metadata: a non-floating output, or one on another device
    (meta stands for it on a CPU-only machine), names the time the model was asked at."""
    x = torch.zeros(2, 2)
    ints = _RawModel(lambda x: torch.zeros(x.shape, dtype=torch.int64))
    msg = r"^the model's output at t=0\.2 must be a floating-point tensor, got torch\.int64$"
    with pytest.raises(ModelError, match=msg):
        tr(ints, x, 0.2, 0.5)
    with pytest.raises(ModelError, match=msg):  # a 1-D batch [B] (one number per particle) too
        tr(ints, torch.zeros(2), 0.2, 0.5)
    meta = _RawModel(lambda x: torch.empty(x.shape, device="meta"))
    msg = (
        r"^the model's output at t=0\.2 is on meta, but its input was on cpu; return the "
        r"output on the input's device$"
    )
    with pytest.raises(ModelError, match=msg):
        tr(meta, x, 0.2, 0.5)


class _Float64Answers:
    """`model` asked in float64, answering in float64 (`rounded`: rounded to float32)."""

    def __init__(self, model, rounded: bool):
        self.model, self.rounded, self.schedule = model, rounded, model.schedule

    def denoise(self, x, t):
        d = self.model.denoise(x.double(), t)
        return d.float() if self.rounded else d

    def velocity(self, x, t):
        u = self.model.velocity(x.double(), t)
        return u.float() if self.rounded else u


@pytest.mark.parametrize(
    "tr",
    [Glass("ddpm", 3, "heun"), Glass(0.4, 3, "pc"), Glass(0.4, 2, "euler"), SDE(substeps=2)],
    ids=repr,
)
@pytest.mark.parametrize("given", [False, True], ids=["asked", "given"])
def test_float64_answers_for_float32_particles_are_rounded_first(tr, given):
    """A model answering float32 particles in float64 (or a float64 `denoised`): the step takes
    its answers in the particles' working dtype, so it equals bit for bit the step of the same
    answers rounded to float32 (float64 answers left in would make the arithmetic float64)."""
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    base = gmm16(RectifiedFlow())

    def step(rounded: bool) -> torch.Tensor:
        model = _Float64Answers(base, rounded)
        denoised = model.denoise(x, 0.2) if given else None
        return tr(model, x, 0.2, 0.6, torch.Generator().manual_seed(1), denoised=denoised)

    got, want = step(False), step(True)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)


def test_transition_defaults():
    """The documented defaults: Glass is DDPM-correlated, 10 inner "pc" steps from sigma0 = 1,
    eager; SDE one substep at kappa = 1."""
    g = Glass()
    assert repr(g) == "Glass(rho='ddpm', inner_steps=10, solver='pc', sigma0=1.0)"
    assert g.compile is False and g.nfe_per_call == 10
    assert repr(SDE()) == "SDE(substeps=1, kappa=1.0)"


def test_sde_at_kappa_zero_is_deterministic():
    """kappa = 0 (no diffusion, DDIM) is allowed: the step draws no noise at all (the generator
    is left as it was), so two generators give the same particles."""
    model, x = gmm2(), torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    tr = SDE(substeps=2, kappa=0.0)
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    a = tr(model, x, 0.2, 0.6, g)
    assert torch.equal(g.get_state(), state)
    b = tr(model, x, 0.2, 0.6, torch.Generator().manual_seed(2))
    assert tr.kappa == 0.0 and torch.equal(a, b)


def test_a_model_needs_both_a_schedule_and_denoise():
    """An object with only one of `schedule` and `denoise` is refused, naming its type."""

    class OnlySchedule:
        schedule = RectifiedFlow()

    class OnlyDenoise:
        def denoise(self, x, t):
            return x

    for model in (OnlySchedule(), OnlyDenoise()):
        name = type(model).__name__
        msg = rf"^model must be a Denoiser \(schedule, denoise, velocity\), got {name}$"
        with pytest.raises(InvalidInputError, match=msg):
            SDE()(model, torch.zeros(2, 2), 0.2, 0.5)


def test_zero_dim_tensor_times_are_the_same_times_as_floats():
    """t and t_next as 0-d tensors give the step of the same Python floats."""
    model = gmm2(RectifiedFlow())
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for tr in (SDE(), Glass(inner_steps=2)):
        want = tr(model, x, 0.3, 0.6, torch.Generator().manual_seed(1))
        t, t_next = torch.tensor(0.3, dtype=F64), torch.tensor(0.6, dtype=F64)
        got = tr(model, x, t, t_next, torch.Generator().manual_seed(1))
        assert torch.equal(got, want)
