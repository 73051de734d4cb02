"""The SDE by exact frozen-denoiser (DDPM-ancestral) steps: it ends on the denoised estimate, is
stable on any grid, and its kernel converges to the exact DDPM kernel (Prop. 1)."""

from __future__ import annotations

import pytest
import torch
from align_fixtures import gmm
from glass_core.schedules import VP, Cosine, RectifiedFlow
from glass_core.transitions import SDE, sample, sde_coefficients
from stat_checks import assert_moments

F64 = torch.float64


class LastOutput:
    """Forwards to a model and keeps its last denoiser output."""

    def __init__(self, model) -> None:
        self.model, self.schedule, self.last = model, model.schedule, None

    def denoise(self, x, t):
        self.last = self.model.denoise(x, t)
        return self.last

    def velocity(self, x, t):
        return self.model.velocity(x, t)


@pytest.mark.parametrize("substeps", [1, 3])
@pytest.mark.parametrize("kappa", [1.0, 0.5])
def test_last_substep_returns_the_denoised_estimate(substeps, kappa):
    """At t' = 1 sigma = 0, so the ancestral step has no noise and gamma = 0: x' = D (exactly)."""
    model = LastOutput(gmm(Cosine()))
    x = model.model.sample_marginal(64, 0.4, torch.Generator().manual_seed(1))
    out = SDE(substeps, kappa)(model, x, 0.4, 1.0, torch.Generator().manual_seed(2))
    assert torch.equal(out, model.last)


@pytest.mark.parametrize("grid", [[0.0, 0.01, 1.0], [0.0, 1e-6, 1.0], [0.0, 0.5, 0.5 + 1e-9, 1.0]])
def test_coarse_and_uneven_grids_stay_on_the_data(grid):
    """Euler-Maruyama reached |x| ~ 300 on [0, 0.01, 1] and ~3e6 on [0, 1e-6, 1] (data of scale
    2). Each exact step is a convex mixture of the start and denoised estimates plus bounded
    noise, so the samples stay near the data (|x| < 6 here: the mixture's means are within 2.5
    of 0 and its standard deviations below 0.5)."""
    model = gmm(RectifiedFlow())
    res = sample(model, SDE(), grid, shape=(4000, 2), generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(res.samples).all()
    assert res.samples.abs().max() < 6.0


def test_many_steps_from_pure_noise_reach_the_data_distribution():
    """200 exact ancestral steps from N(0, I) at t = 0 match the mixture's exact mean and
    covariance (N = 4e4, 5 standard errors; the time discretisation error is O(1/200))."""
    model = gmm(RectifiedFlow())
    grid = torch.linspace(0.0, 1.0, 201).tolist()
    res = sample(
        model, SDE(), grid, shape=(40_000, 2), generator=torch.Generator().manual_seed(4),
        dtype=F64,
    )  # fmt: skip
    assert_moments(res.samples, model.mean(), model.covariance(), what="SDE x200 from noise")


@pytest.mark.parametrize("t", [0.3, 0.7])
def test_sde_coefficients_on_rectified_flow_are_the_closed_form(t):
    """alpha = t, sigma = 1 - t: eta = sigma^2 alpha'/alpha - sigma sigma' = (1 - t)/t, and the
    drift A x + B D is u + kappa eta score with u = -x/(1-t) + D/(1-t), score = (t D - x)/(1-t)^2,
    so A = -1/(1-t) - kappa/(t(1-t)) and B = (1 + kappa)/(1-t). The default kappa is 1."""
    rf = RectifiedFlow()
    for kappa, coefficients in (
        (1.0, sde_coefficients(rf, t)),
        (2.5, sde_coefficients(rf, t, 2.5)),
    ):
        a, b, eta = coefficients
        assert eta == pytest.approx((1 - t) / t, rel=1e-12)
        assert a == pytest.approx(-1 / (1 - t) - kappa / (t * (1 - t)), rel=1e-12)
        assert b == pytest.approx((1 + kappa) / (1 - t), rel=1e-12)


@pytest.mark.parametrize(
    "schedule", [Cosine(), VP.from_betas(0.00085, 0.012, 1000, "scaled_linear")]
)
@pytest.mark.parametrize("kappa", [1.0, 0.5])
@pytest.mark.parametrize("t", [0.3, 0.7])
def test_sde_coefficients_are_the_small_step_limit_of_the_exact_kernel(schedule, kappa, t):
    """The SDE's exact step x' = gamma x + abar D + sbar xi over [t, t + dt] is the solution of
    dX = (A X + B D) dt + sqrt(2 kappa eta) dW, so (gamma - 1)/dt -> A, abar/dt -> B and
    sbar^2/dt -> 2 kappa eta as dt -> 0. The remainder is first order in dt, with a constant
    (the schedule's log-derivatives and A, below 20 on these VP schedules) times dt: relative
    tolerance 50 dt. Here sigma' is not -1 (as on rectified flow), which tells s * sigma' from
    s / sigma'."""
    dt = 1e-5
    a, b, eta = sde_coefficients(schedule, t, kappa)
    ((_, gamma, abar, sbar),) = SDE(1, kappa).scalars(schedule, t, t + dt)
    assert (gamma - 1) / dt == pytest.approx(a, rel=50 * dt)
    assert abar / dt == pytest.approx(b, rel=50 * dt)
    assert sbar**2 / dt == pytest.approx(2 * kappa * eta, rel=50 * dt)
