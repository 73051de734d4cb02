"""Soft value-based decoding (SVDD, Li et al. 2024), derivative-free, over any transition.

Per particle and step: M candidates from the transition, each scored by its value
(align._search), one kept: the argmax, or at ``temperature`` tau > 0 a draw from
softmax(value / tau) (SVDD's soft selection; tau -> 0 is the argmax).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from glass_core import _random
from glass_core.align._common import Generator
from glass_core.align._config import sampling_validator
from glass_core.align._search import CandidateValue, SearchResult, check_search_args, run_search
from glass_core.rewards.base import Reward


def per_particle_selector(temperature: float) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """Build the selector keeping one of each particle's M candidates.

    Parameters
    ----------
    temperature : float
        0 selects the argmax; a positive value makes a Gumbel-max draw from
        softmax(value / temperature), with noise from the run's generator (one uniform per
        candidate, split by groups like all the run's noise).

    Returns
    -------
    callable
        ``select(scores [B, N, M], noise) -> [B * N]`` flat indices of the kept candidates.
    """

    def select(scores: torch.Tensor, noise: Any) -> torch.Tensor:
        b, n, m = scores.shape
        flat = scores.reshape(b * n, m)
        if temperature > 0.0:
            u = _random.rand((b * n, m), noise, device=flat.device, dtype=torch.float64)
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
            flat = flat / temperature + gumbel
        choice = flat.argmax(dim=1)
        return torch.arange(b * n, device=flat.device) * m + choice

    return select


def value_decoding(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    num_particles: int,
    time_grid: Any,
    num_candidates: int = 4,
    value: str = "denoised",
    value_samples: int = 4,
    value_transition: Callable[..., torch.Tensor] | None = None,
    temperature: float = 0.0,
    shape: Any = None,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    profile: bool = False,
    process_group: Any = None,
    x0: torch.Tensor | None = None,
) -> SearchResult:
    """Run SVDD-style value decoding.

    `num_particles` independent chains per group, each step keeping one of `num_candidates`
    transition draws by its value.

    Parameters
    ----------
    model, reward, transition, num_particles, time_grid, shape, generator, num_groups, dtype,
    device, max_batch, progress, profile, x0
        As in :func:`glass_core.align.fk_steering` (a list of B generators: B groups, equal to
        B separate runs; `max_batch` chunks every model call, candidates included).
    num_candidates
        M, the candidates drawn per particle and step.
    value
        "denoised": r(D_t(x')) (1 model evaluation per candidate); "posterior": the soft value
        log mean_j exp r(z_j) over `value_samples` posterior samples drawn by
        `value_transition` (default ``Glass(inner_steps=4)``) from (x', t) to 1.
    temperature
        0 keeps the best candidate; tau > 0 draws one from softmax(value / tau).
    process_group
        Not supported (raises InvalidInputError).

    Returns
    -------
    SearchResult
        The kept particles (uniform weights) with their rewards and per-step values; `nfe`
        counts every model evaluation per particle, candidates (x M) and posterior value
        samples (x M x J) included.

    Raises
    ------
    InvalidInputError
        Bad arguments (the message names the argument).
    RewardError
        The reward returned NaN/inf or the wrong shape.
    """
    m, temp = check_search_args(num_candidates, temperature, process_group)
    validate = sampling_validator(
        model, reward, transition, time_grid, num_particles, shape, generator, num_groups,
        max_batch, x0,
    )  # fmt: skip
    return run_search(
        model=model,
        reward=reward,
        transition=transition,
        value=CandidateValue(value, value_samples, value_transition),
        select=per_particle_selector(temp),
        num_candidates=m,
        validate=validate,
        generator=generator,
        x0=x0,
        dtype=dtype,
        device=device,
        progress=progress,
        profile=profile,
        desc="value decoding",
    )
