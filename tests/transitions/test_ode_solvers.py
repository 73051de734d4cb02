"""ODE(solver="multistep"/"pc"): the GLASS inner solvers run on the outer probability-flow path
(one implementation of the math). Checked against the exact Gaussian-mixture answer: from pure
noise the ODE ends exactly on the data distribution, whose moments are known in closed form."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from align_fixtures import gmm
from glass_core.models import from_callable
from glass_core.schedules import Cosine, RectifiedFlow
from glass_core.transitions import ODE, Glass
from glass_core.transitions.solvers import PC_SPREAD

F64 = torch.float64
SCHEDULES = {"rf": RectifiedFlow, "cosine": Cosine}


@pytest.mark.parametrize("solver", ["pc", "multistep"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_ode_from_noise_is_the_glass_transition_0_to_1(solver, k):
    """On rectified flow the GLASS inner path from t = 0 to t' = 1 is the outer path itself
    (docs/math.md §3.3), so ODE(solver, K) from x0 equals Glass(rho, K, solver) whose inner
    noise is x0 (any rho: the transition to t' = 1 ignores it)."""
    model = gmm(RectifiedFlow())
    x0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    ode = ODE(solver, k)(model, x0, 0.0, 1.0)
    glass = Glass(0.4, k, solver)(
        model, torch.zeros_like(x0), 0.0, 1.0, torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ode, glass, rtol=1e-12, atol=1e-12)


def pathwise_order(solver: str, sched: str, t: float, t_next: float) -> float:
    """log2 of successive differences y_K - y_2K at K = 32, 64, 128 (deterministic flow)."""
    model = gmm(SCHEDULES[sched]())
    x = model.sample_marginal(200, t, torch.Generator().manual_seed(1))
    out = [ODE(solver, k)(model, x, t, t_next) for k in (16, 32, 64, 128)]
    diff = [float((out[i] - out[i + 1]).abs().mean()) for i in range(3)]
    return math.log2(diff[1] / diff[2])


@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("t,t_next", [(0.3, 0.8), (0.2, 1.0), (0.0, 1.0)])
def test_ode_solvers_are_second_order(sched, t, t_next):
    """multistep and pc are second order (measured 1.6-2.9) in the interior, into the data end
    (sigma' = 0, where they never evaluate t' itself) and from pure noise; Euler is first order
    in the interior (measured 1.0)."""
    for solver in ("multistep", "pc"):
        p = pathwise_order(solver, sched, t, t_next)
        assert p > 1.5, f"{solver}: observed order {p:.2f}"
    if t > 0:
        assert 0.7 < pathwise_order("euler", sched, t, 0.8) < 1.3


def relative_moment_error(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    m, c = x.mean(0), torch.cov(x.T)
    return max(float((m - mean).norm() / cov.trace().sqrt()), float((c - cov).norm() / cov.norm()))


def errors_from_noise(solver: str, nfes: tuple[int, ...]) -> list[float]:
    """Relative moment error of ODE samples (N = 4e4, 0 -> 1, rectified flow) against the exact
    data moments; the sampling error of each figure is about 0.01."""
    model = gmm(RectifiedFlow())
    x0 = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    per_step = 2 if solver == "heun" else 1
    return [
        relative_moment_error(
            ODE(solver, n // per_step)(model, x0, 0.0, 1.0), model.mean(), model.covariance()
        )
        for n in nfes
    ]


def test_pc_moment_errors_from_noise_at_2_to_16_nfe():
    """At 2, 4, 8, 16 NFE pc's error (measured 0.28, 0.09, 0.017, 0.009) falls with the budget to
    the sampling floor (~0.01) and is at most 0.6 of Euler's at the same NFE (0.56, 0.27, 0.14,
    0.07), and at most a third of it from 4 NFE on; multistep likewise from 4 NFE on (0.06,
    0.02, 0.009)."""
    nfes = (2, 4, 8, 16)
    pc = errors_from_noise("pc", nfes)
    euler = errors_from_noise("euler", nfes)
    multistep = errors_from_noise("multistep", nfes)
    assert pc[0] > pc[1] > pc[2] and pc[3] < 0.03, pc
    assert all(p <= 0.6 * e for p, e in zip(pc, euler, strict=True)), (pc, euler)
    assert all(p <= e / 3 for p, e in zip(pc[1:], euler[1:], strict=True)), (pc, euler)
    assert all(m <= e / 3 for m, e in zip(multistep[1:], euler[1:], strict=True)), multistep
    assert multistep[3] < 0.03, multistep


def test_ode_pc_reuses_denoised_and_counts_nfe():
    """One evaluation per step; a precomputed D_t(x) saves the first and changes nothing."""
    model = gmm(Cosine())
    calls = []
    orig = model.denoise
    model.denoise = lambda x, t: (calls.append(t), orig(x, t))[1]  # type: ignore[method-assign]
    x = model.sample_marginal(50, 0.3, torch.Generator().manual_seed(2))
    for solver in ("pc", "multistep"):
        tr = ODE(solver, 4)
        calls.clear()
        ref = tr(model, x, 0.3, 1.0)
        assert len(calls) == tr.nfe(model.schedule, 0.3, 1.0) == 4
        calls.clear()
        out = tr(model, x, 0.3, 1.0, denoised=orig(x, 0.3))
        assert len(calls) == 3
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        assert all(0.3 <= c < 1.0 for c in calls)  # never evaluated at the data end


@pytest.mark.parametrize("solver", ["multistep", "pc"])
def test_data_prediction_solvers_call_the_model_in_the_input_dtype(solver):
    """bf16 particles are integrated in float32 but the model is always asked in bf16."""
    seen: list[torch.dtype] = []

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.dtype)
        return 0.5 * x

    model = from_callable(fn, schedule=RectifiedFlow(), prediction="x1")
    out = ODE(solver, 3)(model, torch.randn(4, 3).to(torch.bfloat16), 0.2, 0.6, None)
    assert out.dtype == torch.bfloat16 and len(seen) >= 3 and set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("solver", ["euler", "heun", "multistep", "pc"])
@pytest.mark.parametrize("t_next", [0.8, 1.0], ids=["regular", "data-end"])
def test_model_outputs_are_read_in_the_working_dtype(solver, t_next):
    """A model may answer in float64 for float32 particles: its outputs (and a float64
    `denoised`) are read in the working dtype, so the step is the one of the same model with
    float32 outputs, bit for bit."""

    def wide(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(3.0 * x.double()) + 0.1

    def narrow(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return wide(x, t).float()

    m64, m32 = (from_callable(f, schedule=Cosine(), prediction="x1") for f in (wide, narrow))
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    tr = ODE(solver, 3)
    ref = tr(m32, x, 0.2, t_next)
    assert ref.dtype == torch.float32
    assert torch.equal(tr(m64, x, 0.2, t_next), ref)
    given = m64.denoise(x, 0.2)
    assert torch.equal(tr(m64, x, 0.2, t_next, denoised=given), ref)


@pytest.mark.parametrize("solver", ["euler", "heun", "multistep", "pc"])
def test_ode_points_are_uniform_in_u_with_the_solvers_spread(solver):
    """ODE.points places K times from t uniform in u = r/(r + c), r = alpha/sigma, c the
    solver's spread (pc's PC_SPREAD, else 1). On rectified flow from 0 to 1, r = t/(1 - t), so
    u_k = k/K gives t_k = r_k/(1 + r_k) with r_k = c u_k/(1 - u_k): uniform in t when c = 1."""
    k = 4
    c = PC_SPREAD if solver == "pc" else 1.0
    u = np.arange(k) / k
    r = c * u / (1.0 - u)
    got = ODE(solver, k).points(RectifiedFlow(), 0.0, 1.0)
    np.testing.assert_allclose(got, r / (1.0 + r), rtol=1e-14, atol=1e-15)
    if c == 1.0:
        np.testing.assert_allclose(got, u, rtol=1e-14, atol=1e-15)


def test_a_path_ending_at_the_singular_sigma_is_singular(monkeypatch):
    """The data-prediction ODE treats its path as singular when sigma(t') <= SINGULAR_SIGMA,
    the bound included (multistep's last step is then linear in s/a): with the bound at
    sigma(t') itself the step is the one with the bound above it, not the one below."""
    from glass_core.transitions import ode

    model = gmm(RectifiedFlow())
    x = model.sample_marginal(50, 0.2, torch.Generator().manual_seed(3)).to(F64)
    t_next = 0.75  # sigma = 0.25 exactly

    def step(bound: float) -> torch.Tensor:
        monkeypatch.setattr(ode, "SINGULAR_SIGMA", bound)
        return ODE("multistep", 3)(model, x, 0.2, t_next)

    at, above, below = step(0.25), step(0.5), step(0.125)
    assert torch.equal(at, above)
    assert not torch.equal(at, below)


@pytest.mark.parametrize("solver", ["multistep", "pc"])
def test_a_step_from_pure_noise_warns_of_nothing(solver):
    """From t = 0 (alpha = 0, log-SNR -inf) the first multistep steps are first order by
    construction, not through a division by zero: no RuntimeWarning under -W error."""
    model = gmm(Cosine())
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ODE(solver, 3)(model, x, 0.0, 0.7)
        glass = Glass(0.4, 3, solver)(model, x, 0.0, 0.7, torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all() and torch.isfinite(glass).all()
