"""Best-of-N (GLASS_MATH §5.1): N independent samples, keep the highest reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    nonfinite_reward_error,
    propagate,
    ungroup,
)
from glass_core.align._config import SamplingConfig
from glass_core.align._start import resolve_start, start_particles
from glass_core.align.results import BestOfNResult
from glass_core.align.storage import particle_storage
from glass_core.rewards.base import Reward, check_rewards

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
    shape: Any = None,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    process_group: Any = None,
    x0: torch.Tensor | None = None,
) -> BestOfNResult:
    """Draw `n` samples per group with `transition` over `time_grid` and return the best by reward
    together with all samples and rewards. Ties go to the lowest index (torch.argmax).
    `process_group` (a torch.distributed ProcessGroup or `align.distributed.Sharding`) shards the
    samples over its ranks with the same results (see glass_core.align.distributed).
    `x0`: the samples at the grid's first time ([n, ...] or [B, n, ...]), which may be t0 > 0."""
    args = dict(locals())  # the arguments only
    args["shape"], args["num_groups"] = resolve_start(
        x0, shape, n, num_groups, generator, time_grid, process_group
    )
    storage = particle_storage(process_group)
    cfg = storage.configure(
        lambda world: SamplingConfig.from_args(args, world_size=world), generator
    )
    counted = CountedModel(model, cfg.max_batch, timed=False)
    size, last = storage.local_rows, cfg.num_steps
    show = progress and storage.is_main
    with storage.guard(last), torch.no_grad():
        x = start_particles(x0, size, cfg.shape, storage.noise, dtype, device)
        x = propagate(
            counted, transition, x, cfg.grid, storage.noise, show, "best-of-N" + storage.label
        )
        local = check_rewards(reward(x), size, finite=False)
    rewards = storage.gather_rewards(local, last)  # all B*N slots
    host = rewards.to(torch.float64).cpu().numpy()
    if not np.isfinite(host).all():
        raise nonfinite_reward_error(host, last, 1.0, storage.held_by)
    r = rewards.to(dtype=local.dtype, device=x.device).reshape(cfg.num_groups, cfg.n)
    idx = r.argmax(dim=1)
    samples, best = storage.best_samples(x, idx, cfg)
    return best_of_n_result(
        storage.best_of_n_result,
        cfg,
        best=best,
        rewards=r,
        index=idx,
        samples=samples,
        nfe=counted.nfe,
        **storage.best_of_n_extra(x, cfg),
    )
