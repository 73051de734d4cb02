"""GLASS inner solvers: convergence order in K, the singular end s = 1, exactness against the
closed-form mixture kernel, and the small-NFE accuracy that motivates "multistep" and "pc"."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from align_fixtures import MEANS, VARS, WEIGHTS, gmm
from glass_core.schedules import VP, Cosine, RectifiedFlow
from glass_core.transitions import ODE, Glass
from glass_core.transitions.glass import multistep_grid
from glass_core.transitions.solvers import inner_scale, multistep_coefficients, pc_coefficients
from stat_checks import assert_moments

F64 = torch.float64
SCHEDULES = {
    "rf": RectifiedFlow,
    "cosine": Cosine,
    "vp": lambda: VP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
}
# (rho, t'): interior with rho = ddpm, 0, -0.5; the singular ends t' = 1 and rho = 1
ORDER_CASES = [("ddpm", 0.8), (0.0, 0.8), (-0.5, 0.8), (0.4, 1.0), (1.0, 0.8)]


def observed_order(solver: str, sched: str, rho, t_next: float) -> float:
    """log2 of successive pathwise differences y_K - y_2K (same inner noise) at K = 32, 64, 128:
    about p for a method of order p (the inner flow is deterministic given its noise)."""
    model = gmm(SCHEDULES[sched]())
    x = model.sample_marginal(200, 0.4, torch.Generator().manual_seed(1))
    out = [
        Glass(rho, k, solver)(model, x, 0.4, t_next, torch.Generator().manual_seed(2))
        for k in (32, 64, 128, 256)
    ]
    diff = [float((out[i] - out[i + 1]).abs().mean()) for i in range(3)]
    return math.log2(diff[1] / diff[2])


def order_case_params():
    """Every schedule x case, except the singular ends on the VP table: there t*(s) runs up to 1,
    past the table's least noisy node, where every model is asked at that node (the noise-end
    convention, docs/math.md), so the denoiser is only Lipschitz in s near s = 1 and no solver can
    show its order; the analytic schedules test the singular end."""
    for sched in SCHEDULES:
        for rho, t_next in ORDER_CASES:
            singular = t_next == 1.0 or rho == 1.0
            if not (sched == "vp" and singular):
                yield sched, rho, t_next


@pytest.mark.parametrize("sched,rho,t_next", list(order_case_params()))
def test_convergence_order_in_inner_steps(sched, rho, t_next):
    """Euler is first order; midpoint, heun, multistep and pc are second order, also when the
    inner path is singular at s = 1 (t' = 1 or rho = 1), where heun, multistep and pc never
    evaluate s = 1."""
    assert 0.7 < observed_order("euler", sched, rho, t_next) < 1.5
    for solver in ("midpoint", "heun", "multistep", "pc"):
        p = observed_order(solver, sched, rho, t_next)
        assert p > 1.6, f"{solver}: observed order {p:.2f}"


@pytest.mark.parametrize("solver", ["multistep", "heun", "pc"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_singular_end_is_finite_and_continuous(solver, k):
    """At t' = 1 and |rho| = 1 the last step needs no division by s_1 = 0; the output is finite
    and a rho just below 1 (a tiny sbar, treated as singular below 1e-4) gives nearly the same."""
    model = gmm(Cosine())
    x = model.sample_marginal(64, 0.3, torch.Generator().manual_seed(3))
    for rho, t_next in ((0.4, 1.0), (1.0, 0.7), (-1.0, 0.7), ("ddpm", 1.0)):
        out = Glass(rho, k, solver)(model, x, 0.3, t_next, torch.Generator().manual_seed(4))
        assert torch.isfinite(out).all()
    one = Glass(1.0, k, solver)(model, x, 0.3, 0.7, torch.Generator().manual_seed(4))
    near = Glass(1.0 - 1e-12, k, solver)(model, x, 0.3, 0.7, torch.Generator().manual_seed(4))
    torch.testing.assert_close(near, one, rtol=1e-4, atol=1e-4)


def test_multistep_grid_is_uniform_in_the_saturated_log_snr():
    """a_s/s_s at the step starts is r_j = c u_j/(1-u_j), u uniform, c = sqrt(SNR_t + 1)."""
    snr, abar, sbar, sig0 = 2.25, 0.7, 0.3, 1.0
    s = multistep_grid(6, snr, abar, sbar, sig0)
    r = s * abar / ((1 - s) * sig0 + s * sbar)
    c = math.sqrt(snr + 1)
    u = r / (r + c)
    u_end = (abar / sbar) / (abar / sbar + c)
    np.testing.assert_allclose(u, np.arange(6) / 6 * u_end, atol=1e-14)
    assert s[0] == 0 and np.all(np.diff(s) > 0) and s[-1] < 1
    s1 = multistep_grid(4, 0.0, 1.0, 0.0, 1.0)  # t = 0 to t' = 1: uniform s
    np.testing.assert_allclose(s1, np.arange(4) / 4, atol=1e-14)


KERNEL_CASES = [
    ("rf", 0.3, 0.7, "ddpm"),
    ("rf", 0.55, 0.8, 0.4),
    ("cosine", 0.3, 0.6, 0.0),
    ("cosine", 0.4, 0.6, -0.5),
    ("vp", 0.3, 0.7, 0.4),
    ("rf", 0.4, 0.7, 1.0),
    ("rf", 0.2, 1.0, "ddpm"),
    ("cosine", 0.5, 1.0, 0.4),
]


@pytest.mark.parametrize("solver", ["multistep", "pc"])
@pytest.mark.parametrize("sname,t,t_next,rho", KERNEL_CASES)
def test_multistep_matches_exact_kernel(solver, sname, t, t_next, rho):
    """Mean and covariance of 1e5 samples (K = 64) within 5 standard errors of the exact kernel.
    Power: at N = 1e5 a 4% variance error or a 0.03 shift is > 5 standard errors
    (test_sample_stats); Euler at K = 64 misses by ~2% (1/K) and is not what is tested here."""
    model = gmm(SCHEDULES[sname]())
    g = torch.Generator().manual_seed(6)
    x0 = model.sample_marginal(1, t, g)
    x = x0.expand(100_000, 2)
    out = Glass(rho, 64, solver)(model, x, t, t_next, g)
    mu, cov = model.transition_moments(x0, t, t_next, rho)
    assert_moments(out, mu[0], cov[0], what=f"{sname} {t}->{t_next} rho={rho}")


def relative_moment_error(x, mean, cov) -> float:
    m, c = x.mean(0), torch.cov(x.T)
    return max(float((m - mean).norm() / cov.trace().sqrt()), float((c - cov).norm() / cov.norm()))


@pytest.mark.parametrize("solver", ["multistep", "pc"])
@pytest.mark.parametrize(
    "sname,t,t_next,rho",
    [("rf", 0.15, 1.0, "ddpm"), ("rf", 0.8, 0.95, "ddpm"), ("cosine", 0.8, 0.95, 0.4)],
)
def test_multistep_beats_euler_at_4_nfe(solver, sname, t, t_next, rho):
    """At 4 NFE per transition multistep's and pc's relative moment errors are at most half of
    Euler's (measured 0.03-0.1 vs 0.26-0.61; the sampling error at N = 4e4 is < 0.02)."""
    err = errors_at_4_nfe(sname, t, t_next, rho, (solver,))
    assert err[solver] <= 0.5 * err["euler"], err


def errors_at_4_nfe(sname, t, t_next, rho, solvers, points=1) -> dict[str, float]:
    """Relative moment error of each solver (and Euler) at K = 4, N = 4e4, averaged over points."""
    model = gmm(SCHEDULES[sname]())
    g = torch.Generator().manual_seed(8)
    out: dict[str, list[float]] = {s: [] for s in ("euler", *solvers)}
    for x0 in model.sample_marginal(points, t, g).split(1):
        x = x0.expand(40_000, 2)
        mu, cov = model.transition_moments(x0, t, t_next, rho)
        for s in out:
            y = Glass(rho, 4, s)(model, x, t, t_next, torch.Generator().manual_seed(9))
            out[s].append(relative_moment_error(y, mu[0], cov[0]))
    return {s: float(np.mean(v)) for s, v in out.items()}


def test_pc_halves_euler_on_the_tight_late_posterior():
    """The posterior step from t = 0.6 (RF), where the mixture's components make p(z | x_t) much
    tighter than unit variance: multistep's last-step extrapolation undershoots there (measured
    0.18 over these 4 points), pc's phi-linear predictor-corrector much less (0.12; Euler 0.67;
    sampling error of each 4-point mean < 0.02)."""
    err = errors_at_4_nfe("rf", 0.6, 1.0, "ddpm", ("multistep", "pc"), points=4)
    assert err["pc"] <= 0.5 * err["euler"], err
    assert err["pc"] < err["multistep"], err


def alpha_sigma_reference(sname: str, t: float) -> tuple[float, float]:
    """alpha_t, sigma_t from docs/math.md §2 (closed forms; VP through the schedule's table
    interpolation, which is not the GLASS coefficient table under test)."""
    if sname == "rf":
        return t, 1.0 - t
    if sname == "cosine":
        return math.sin(math.pi * t / 2), math.cos(math.pi * t / 2)
    sched = SCHEDULES[sname]()
    return float(sched.alpha(t)), float(sched.sigma(t))


def exact_kernel_reference(sname, x0, t, t_next, rho):
    """Mean [d] and covariance [d, d] of the exact GLASS kernel at x_t = x0, computed here from
    docs/math.md §3 (gamma, abar, sbar) and §7 (mixture posterior), independently of the native
    coefficient table and of models.gmm."""
    a, b = alpha_sigma_reference(sname, t)
    a2, b2 = alpha_sigma_reference(sname, t_next)
    rho = a * b2 / (b * a2) if rho == "ddpm" else rho
    gamma = rho * b2 / b
    abar = a2 - gamma * a
    sbar = b2 * math.sqrt(max(1.0 - rho * rho, 0.0))
    x = np.asarray(x0, dtype=np.float64).reshape(-1)
    m, v, pi = np.asarray(MEANS), np.asarray(VARS), np.asarray(WEIGHTS)
    d = x.size
    tot = a * a * v + b * b
    log_w = np.log(pi) - 0.5 * d * np.log(tot) - ((x - a * m) ** 2).sum(1) / (2 * tot)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    pm = (b * b * m + a * v[:, None] * x) / tot[:, None]
    pv = v * b * b / tot
    mean_k = abar * pm + gamma * x
    var_k = abar**2 * pv + sbar**2
    mu = w @ mean_k
    cov = (w[:, None, None] * np.einsum("ki,kj->kij", mean_k, mean_k)).sum(0)
    cov += (w * var_k).sum() * np.eye(d) - np.outer(mu, mu)
    return mu, cov


@pytest.mark.parametrize("sname,t,t_next,rho", KERNEL_CASES)
def test_exact_kernel_reference_is_independent_of_the_native_table(sname, t, t_next, rho):
    """The reference the solver tests compare with (models.gmm's transition_moments, built on the
    native coefficients) equals the kernel computed from the formulas alone, so a wrong native
    coefficient (e.g. abar's sign) cannot pass by being on both sides of the comparison."""
    model = gmm(SCHEDULES[sname]())
    x0 = model.sample_marginal(3, t, torch.Generator().manual_seed(6))
    for row in x0.split(1):
        mu, cov = model.transition_moments(row, t, t_next, rho)
        want_mu, want_cov = exact_kernel_reference(sname, row, t, t_next, rho)
        np.testing.assert_allclose(mu[0].numpy(), want_mu, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cov[0].numpy(), want_cov, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint", "multistep", "pc"])
@pytest.mark.parametrize("t_next", [0.7, 1.0], ids=["regular", "singular"])
def test_coefficient_tables_are_finite_and_stop_before_a_singular_end(solver, t_next):
    """Glass.coefficients tabulates the inner times the solver evaluates, all in [0, 1) except
    Heun's regular end s = 1; on a singular path (rho='ddpm' to t' = 1: sbar = 0) s = 1 is never
    tabulated, where the path's weights are 0/0. Every entry is finite."""
    k = 3
    c = Glass("ddpm", k, solver).coefficients(gmm().schedule, 0.3, t_next)
    s = np.asarray(c["s"])
    assert bool(c["singular"]) == (t_next == 1.0)
    assert s[0] == 0.0 and bool(np.all(np.diff(s) > 0))
    if solver == "heun":
        np.testing.assert_array_equal(s, np.arange(k + (t_next < 1.0)) / k)
    else:
        assert s[-1] < 1.0
    for name, v in c.items():
        if np.ndim(v):
            assert np.isfinite(np.asarray(v, dtype=np.float64)).all(), name


@pytest.mark.parametrize("s_end", [0.05, 0.0])
def test_multistep_coefficients_against_their_definitions(s_end: float) -> None:
    """keep and gain are the exact (DDIM-form) step, beta the slope that makes the estimate linear
    in lambda = log(a/s) over the step, averaged with weight d e^lambda; a singular path's last
    step is linear in kappa = s/a instead (mean of kappa over e^lambda in [1/kappa_j, 1/kappa_e],
    here by quadrature; 0 at s_K = 0). The first two steps are first order (a_0 = 0)."""
    from glass_core.transitions.solvers import multistep_coefficients
    from scipy.integrate import quad

    a = np.array([0.0, 0.3, 0.6, 0.8, 0.99])
    s = np.array([1.0, 0.9, 0.7, 0.5, s_end])
    lam = np.log(
        a[1:] / np.where(s[1:] > 0, s[1:], 1.0)
    )  # lambda_1..K (lambda_K unused at s_K = 0)
    for singular in (True, False) if s_end > 0 else (True,):
        keep, gain, beta = multistep_coefficients(a, s, singular)
        np.testing.assert_allclose(keep, s[1:] / s[:-1], rtol=1e-15)
        np.testing.assert_allclose(gain, a[1:] - s[1:] * a[:-1] / np.where(s[:-1] > 0, s[:-1], 1))
        want = [0.0, 0.0]
        for j in (2, 3):
            if singular and j == 3:
                kp, kj, ke = s[2] / a[2], s[3] / a[3], s[4] / a[4]
                mean = 0.0
                if ke > 0:
                    mean = quad(lambda u: 1.0 / u, 1 / kj, 1 / ke)[0] / (1 / ke - 1 / kj)
                want.append((mean - kj) / (kj - kp))
            else:
                h, h_prev = lam[j] - lam[j - 1], lam[j - 1] - lam[j - 2]
                want.append((h / (1 - math.exp(-h)) - 1) / h_prev)
        np.testing.assert_allclose(beta, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "solver",
    [
        "euler",
        "midpoint",
        "heun",
        "multistep",
        "pc",
    ],
)
def test_a_subnormal_step_from_pure_noise_draws_the_fresh_noise(solver):
    """From t = 0 (pure noise) to t' = 2e-323 on rectified flow, alpha' underflows to a subnormal
    and sigma' = 1: the exact kernel is N(0, I) whatever x_0, so the step returns the inner
    path's noise (sigma0 y_0 carried to sbar = 1) to rounding, for rho = ddpm and rho = 0."""
    from glass_core import _random

    model = gmm(RectifiedFlow())
    x = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    fresh = _random.randn_like(x, torch.Generator().manual_seed(0))
    for rho in ("ddpm", 0.0):
        tr = Glass(rho, inner_steps=4, solver=solver, sigma0=1e-3)
        y = tr(model, x, 0.0, 2e-323, torch.Generator().manual_seed(0))
        torch.testing.assert_close(y, fresh, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "transition",
    [
        Glass(inner_steps=4, solver="multistep"),
        Glass(0.4, inner_steps=4, solver="heun"),
        Glass(inner_steps=4, solver="pc"),
        ODE("multistep", 3),
        ODE("pc", 3),
    ],
    ids=repr,
)
def test_a_step_to_sigma_zero_computes_its_plan_without_numpy_warnings(transition):
    """Ending at sigma = 0 (t' = 1, a singular inner path: sbar = 0), the solvers' coefficients
    divide only by positive sigmas: no RuntimeWarning, even with warnings turned into errors."""
    model = gmm(RectifiedFlow())
    x = model.sample_marginal(4, 0.5, torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = transition(model, x, 0.5, 1.0, torch.Generator().manual_seed(2))
    assert torch.isfinite(y).all()


def test_multistep_and_pc_coefficients_are_exact_for_their_interpolants():
    """One step along a path (a_s, s_s), r = a/s, is y_{j+1} = keep_j y_j + s_{j+1} int z dr. The
    multistep weights integrate a z linear in lambda = log r exactly (from step 1 on, also when
    a_0 > 0; a constant z at every step); pc's predictor (steps >= 1) and corrector integrate a z
    linear in phi = r / hypot(c, r) exactly (a constant z at every step). [K, 2] tables for pc."""
    ts = np.array([0.2, 0.3, 0.45, 0.55, 0.7, 0.8])  # rectified flow, K = 5, a_0 > 0
    a, s = ts, 1.0 - ts
    k = len(ts) - 1
    r = a / s
    keep, gain, beta = multistep_coefficients(a, s, False)
    np.testing.assert_allclose(keep, s[1:] / s[:-1], rtol=1e-14)
    np.testing.assert_allclose(gain, s[1:] * np.diff(r), rtol=1e-13)  # z = 1
    lam = np.log(r)
    exact = s[1:] * np.diff(lam * r - r)  # z = lambda: int lambda d e^lambda
    for j in range(1, k):
        step = gain[j] * ((1 + beta[j]) * lam[j] - beta[j] * lam[j - 1])
        assert step == pytest.approx(exact[j], rel=1e-12), j

    c = 1.5
    pred, corr = pc_coefficients(a, s, c)
    assert pred.shape == (k, 2) and corr.shape == (k, 2)
    hyp = np.hypot(c, r)
    phi = r / hyp
    np.testing.assert_allclose(pred[:, 0] - pred[:, 1], s[1:] * np.diff(r), rtol=1e-12)
    np.testing.assert_allclose(corr[:-1].sum(axis=1), s[1:-1] * np.diff(r)[:-1], rtol=1e-12)
    assert pred[0, 1] == 0.0 and np.all(corr[-1] == 0.0)
    exact = s[1:] * np.diff(hyp)  # z = phi: int phi dr = hypot(c, r)
    for j in range(k):
        if j >= 1:
            assert pred[j, 0] * phi[j] - pred[j, 1] * phi[j - 1] == pytest.approx(
                exact[j], rel=1e-12
            )
        if j < k - 1:
            assert corr[j, 0] * phi[j] + corr[j, 1] * phi[j + 1] == pytest.approx(
                exact[j], rel=1e-12
            )


def test_inner_scale_is_the_spread_times_the_precision_of_z_given_x_t():
    """c = spread * sqrt(SNR(t) + 1), the spread 1 unless given."""
    assert inner_scale(3.0) == 2.0
    assert inner_scale(3.0, spread=1.5) == 3.0
    assert inner_scale(0.0) == 1.0


def test_the_singular_end_threshold_scales_with_sigma0_and_includes_its_bound():
    """A path is singular (heun: its last step multistep, 2K - 1 evaluations) when sbar <=
    SINGULAR_SBAR * sigma0: exactly at the bound it is, one ulp of sigma0 below it is not."""
    from glass_core.transitions.glass import SINGULAR_SBAR

    sched = RectifiedFlow()
    sbar = float(Glass(0.4, 3, "heun").coefficients(sched, 0.3, 0.7)["sbar"])
    sigma0 = sbar / SINGULAR_SBAR  # ~2750
    assert SINGULAR_SBAR * sigma0 == sbar
    assert Glass(0.4, 3, "heun").nfe(sched, 0.3, 0.7) == 6
    assert Glass(0.4, 3, "heun", sigma0=sigma0).nfe(sched, 0.3, 0.7) == 5
    below = float(np.nextafter(sigma0, 0.0))
    assert Glass(0.4, 3, "heun", sigma0=below).nfe(sched, 0.3, 0.7) == 6
