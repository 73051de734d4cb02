"""Best-of-N (GLASS_MATH §5.1): N independent samples, keep the highest reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    initial_noise,
    propagate,
    ungroup,
)
from glass_core.align._config import SamplingConfig
from glass_core.align.results import BestOfNResult
from glass_core.rewards.base import Reward, evaluate_reward

R = TypeVar("R", bound=BestOfNResult)


def best_of_n_result(
    cls: type[R],
    cfg: SamplingConfig,
    *,
    best: torch.Tensor,
    rewards: torch.Tensor,
    index: torch.Tensor,
    samples: torch.Tensor,
    nfe: int,
    **extra: Any,
) -> R:
    """`cls` (BestOfNResult or a subclass taking `extra`) from [B, N] rewards, the [B] index of
    the best in each group, the [B, ...] best samples and [B, N, ...] samples."""
    rows = torch.arange(cfg.num_groups, device=index.device)
    g = cfg.grouped
    return cls(
        best=ungroup(best, g),
        best_reward=ungroup(rewards[rows, index], g),
        best_index=ungroup(index, g),
        samples=ungroup(samples, g),
        rewards=ungroup(rewards, g),
        nfe=nfe,
        total_nfe=nfe * cfg.n * cfg.num_groups,
        **extra,
    )


def best_of_n(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    n: int,
    time_grid: Any,
    shape: Any,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    process_group: Any = None,
) -> BestOfNResult:
    """Draw `n` samples per group with `transition` over `time_grid` and return the best by reward
    together with all samples and rewards. Ties go to the lowest index (torch.argmax).
    `process_group` (a torch.distributed ProcessGroup or `align.distributed.Sharding`) shards the
    samples over its ranks with the same results (see glass_core.align.distributed)."""
    args = dict(locals())  # the arguments only
    if process_group is not None:
        from glass_core.align.distributed import sharded_best_of_n

        return sharded_best_of_n(**args)
    cfg = SamplingConfig.from_args(args)
    counted = CountedModel(model, cfg.max_batch, timed=False)
    x = initial_noise(cfg.num_groups * cfg.n, cfg.shape, generator, dtype, device)
    with torch.no_grad():
        x = propagate(counted, transition, x, cfg.grid, generator, progress, "best-of-N")
        r = evaluate_reward(reward, x).reshape(cfg.num_groups, cfg.n)
    samples = x.reshape(cfg.num_groups, cfg.n, *cfg.shape)
    idx = r.argmax(dim=1)
    rows = torch.arange(cfg.num_groups, device=idx.device)
    return best_of_n_result(
        BestOfNResult,
        cfg,
        best=samples[rows, idx],
        rewards=r,
        index=idx,
        samples=samples,
        nfe=counted.nfe,
    )
