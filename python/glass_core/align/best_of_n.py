"""Best-of-N (GLASS_MATH §5.1): N independent samples, keep the highest reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    check_callable,
    check_model,
    check_optional_positive_int,
    check_positive_int,
    check_shape,
    check_time_grid,
    initial_noise,
    propagate,
    resolve_groups,
    ungroup,
)
from glass_core.align.results import BestOfNResult
from glass_core.rewards.base import Reward, evaluate_reward


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
    if process_group is not None:
        args = dict(locals())  # the arguments only
        from glass_core.align.distributed import sharded_best_of_n

        return sharded_best_of_n(**args)
    check_model(model)
    check_callable(reward, "reward")
    check_callable(transition, "transition")
    n = check_positive_int(n, "n")
    max_batch = check_optional_positive_int(max_batch, "max_batch")
    grid = check_time_grid(time_grid)
    shape_t = check_shape(shape)
    num_b, grouped = resolve_groups(generator, num_groups)

    counted = CountedModel(model, max_batch, timed=False)
    x = initial_noise(num_b * n, shape_t, generator, dtype, device)
    with torch.no_grad():
        x = propagate(counted, transition, x, grid, generator, progress, "best-of-N")
        r = evaluate_reward(reward, x).reshape(num_b, n)
    samples = x.reshape(num_b, n, *shape_t)
    idx = r.argmax(dim=1)
    rows = torch.arange(num_b, device=idx.device)
    return BestOfNResult(
        best=ungroup(samples[rows, idx], grouped),
        best_reward=ungroup(r[rows, idx], grouped),
        best_index=ungroup(idx, grouped),
        samples=ungroup(samples, grouped),
        rewards=ungroup(r, grouped),
        nfe=counted.nfe,
        total_nfe=counted.nfe * n * num_b,
    )
