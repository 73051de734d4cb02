"""Shared fixtures for the alignment tests: the spec's 3-component GMM (docs/math.md §7) and an
exact-kernel transition, so FK estimates can be checked against the exact tilted target."""

from __future__ import annotations

import numpy as np
import torch
from glass_core.models import GaussianMixture

MEANS = [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]]
VARS = [0.05, 0.2, 0.1]
WEIGHTS = [0.3, 0.5, 0.2]
GRID = np.linspace(0.0, 1.0, 6)  # K = 5 transitions, as in the paper


def gmm(schedule=None) -> GaussianMixture:
    """The 3-component mixture of docs/math.md §7 (rectified flow unless `schedule` is given)."""
    return GaussianMixture(
        torch.tensor(MEANS, dtype=torch.float64),
        torch.tensor(VARS, dtype=torch.float64).sqrt(),
        torch.tensor(WEIGHTS, dtype=torch.float64),
        schedule,
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ExactKernel:
    """x_t' ~ p_{t'|t}(. | x_t) sampled exactly by the GMM (the GLASS kernel with rho), so the
    chain's marginals are exact and FK's evidence estimate is unbiased for the exact Z."""

    nfe_per_call = 1

    def __init__(self, rho="ddpm"):
        self.rho = rho

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        return model.sample_transition(x, t, t_next, self.rho, generator)


def nan_above_half(z: torch.Tensor) -> torch.Tensor:
    """A reward of the coordinate sum that turns NaN where the sum exceeds 0.5."""
    r = z.sum(dim=1)
    return torch.where(r > 0.5, torch.full_like(r, float("nan")), r)


def weighted_mean_and_se(values: torch.Tensor, log_w: torch.Tensor) -> tuple[float, float]:
    """Self-normalised IS estimate and its standard error sqrt(Var_w / ESS)."""
    w = log_w.exp()
    v = values.to(torch.float64)
    mean = float((w * v).sum())
    var = float((w * (v - mean) ** 2).sum())
    ess = float(1.0 / (w**2).sum())
    return mean, (var / ess) ** 0.5


def responsibilities(target: GaussianMixture, z: torch.Tensor) -> torch.Tensor:
    log_w, _, _ = target.posterior(z, 1.0)
    return log_w.exp()
