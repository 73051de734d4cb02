"""Beam search over the denoising path (as in tree search for diffusion, e.g. TreeG).

Each step expands every one of the B beams of a group into M candidates with the transition and
keeps the top B of the B x M candidates by value (align._search); the beams are then ordered by
value, best first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from glass_core._checks import positive_int
from glass_core.align._common import Generator
from glass_core.align._config import sampling_validator
from glass_core.align._search import CandidateValue, SearchResult, check_search_args, run_search
from glass_core.rewards.base import Reward


def top_per_group(scores: torch.Tensor, noise: Any) -> torch.Tensor:
    """Select the top B of each group's B x M candidates.

    Parameters
    ----------
    scores : torch.Tensor
        [groups, B, M] candidate values.
    noise : Any
        Unused (the selection is deterministic); kept for the selector signature.

    Returns
    -------
    torch.Tensor
        [groups * B] flat candidate indices, best first per group; ties go to the lowest index.
    """
    g, b, m = scores.shape
    flat = scores.reshape(g, b * m)
    # a stable descending sort keeps the lowest index first among ties (topk does not promise it)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :b]
    offset = torch.arange(g, device=flat.device).unsqueeze(1) * (b * m)
    return (order + offset).reshape(-1)


def beam_search(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    beam_width: int,
    time_grid: Any,
    num_candidates: int = 4,
    value: str = "denoised",
    value_samples: int = 4,
    value_transition: Callable[..., torch.Tensor] | None = None,
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
    """Run beam search over the chain of `transition` steps.

    Per group, `beam_width` beams are expanded into `num_candidates` candidates each per step,
    and the top `beam_width` are kept by value.

    Parameters
    ----------
    beam_width
        B, the beams kept per group (the result's N).
    num_candidates
        M, the candidates per beam and step.
    value, value_samples, value_transition
        The candidates' value, as in :func:`glass_core.align.value_decoding`.
    model, reward, transition, time_grid, shape, generator, num_groups, dtype, device,
    max_batch, progress, profile, x0
        As in :func:`glass_core.align.fk_steering` (`x0` holds `beam_width` particles per group).
    process_group
        Not supported: the selection is global per group (raises InvalidInputError).

    Returns
    -------
    SearchResult
        The final beams, best first, with uniform weights; `nfe` counts candidates and value
        evaluations per beam.

    Raises
    ------
    InvalidInputError
        Bad arguments (the message names the argument).
    RewardError
        The reward returned NaN/inf or the wrong shape.
    """
    m, _ = check_search_args(num_candidates, 0.0, process_group)
    width = positive_int(beam_width, "beam_width")
    validate = sampling_validator(
        model, reward, transition, time_grid, width, shape, generator, num_groups, max_batch, x0
    )
    return run_search(
        model=model,
        reward=reward,
        transition=transition,
        value=CandidateValue(value, value_samples, value_transition),
        select=top_per_group,
        num_candidates=m,
        validate=validate,
        generator=generator,
        x0=x0,
        dtype=dtype,
        device=device,
        progress=progress,
        profile=profile,
        desc="beam search",
    )
