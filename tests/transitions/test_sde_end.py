"""The SDE by exact frozen-denoiser (DDPM-ancestral) steps: it ends on the denoised estimate, is
stable on any grid, and its kernel converges to the exact DDPM kernel (Prop. 1)."""

from __future__ import annotations

import pytest
import torch
from align_fixtures import gmm
from glass_core.schedules import Cosine, RectifiedFlow
from glass_core.transitions import SDE, sample
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
