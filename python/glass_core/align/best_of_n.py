"""Best-of-N: N independent samples per group, keep the highest reward."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    Timer,
    nonfinite_reward_error,
    propagate,
    ungroup,
)
from glass_core.align._config import sampling_validator
from glass_core.align._start import start_particles
from glass_core.align.results import BestOfNResult, uniform_log_weights
from glass_core.align.storage import particle_storage
from glass_core.rewards.base import Reward, check_rewards


def best_of_n(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    num_particles: int,
    time_grid: Any,
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
) -> BestOfNResult:
    """Draw `num_particles` samples per group and return the best by reward.

    The samples are drawn with `transition` over `time_grid`; all samples and rewards are
    returned too. Ties go to the lowest index
    (torch.argmax). `profile=True` measures model and reward time (NaN otherwise).
    `process_group` (a torch.distributed ProcessGroup or `align.distributed.Sharding`) shards the
    samples over its ranks with the same results (see glass_core.align.distributed).
    `x0`: the samples at the grid's first time ([N, ...] or [B, N, ...]; `shape` may then be
    None), which may be t0 > 0.

    Parameters
    ----------
    model, reward, transition, num_particles, time_grid, shape, generator, num_groups, dtype,
    device, max_batch, progress, profile, process_group, x0
        As for :func:`~glass_core.align.fk_steering`.

    Returns
    -------
    BestOfNResult
        Or its sharded subclass for sharded runs.

    Raises
    ------
    InvalidInputError
        Naming the first invalid argument.
    ModelError, RewardError
        If the model or the reward returns NaN/inf or a badly shaped output.
    """
    wall_start = time.perf_counter()
    validate = sampling_validator(
        model, reward, transition, time_grid, num_particles, shape, generator, num_groups,
        max_batch, x0, process_group,
    )  # fmt: skip
    storage = particle_storage(process_group)

    cfg = storage.configure(validate, generator)
    counted = CountedModel(model, cfg.max_batch, timed=profile)
    reward_timer = Timer(profile)
    size, last = storage.local_rows, cfg.num_steps
    show = progress and storage.is_main
    desc = "best-of-N" + storage.label
    with storage.guard(last), torch.no_grad():
        x = start_particles(x0, size, cfg.shape, storage.noise, dtype, device)
        x = propagate(counted, transition, x, cfg.grid, storage.noise, show, desc)
        local = check_rewards(reward_timer(reward, x), size, finite=False, device=x.device).detach()
    rewards = storage.gather_rewards(local, last)  # all B*N slots
    host = rewards.to(torch.float64).cpu().numpy()
    if not np.isfinite(host).all():
        raise nonfinite_reward_error(host, last, 1.0, storage.held_by)
    r = rewards.to(dtype=local.dtype, device=x.device).reshape(cfg.num_groups, cfg.num_particles)
    idx = r.argmax(dim=1)
    samples, best = storage.best_samples(x, idx, cfg)
    rows = torch.arange(cfg.num_groups, device=idx.device)
    g = cfg.grouped
    return storage.best_of_n_result(
        samples=ungroup(samples, g),
        rewards=ungroup(r, g),
        log_weights=ungroup(uniform_log_weights(r), g),
        ancestors=None,
        nfe=counted.nfe,
        total_nfe=counted.nfe * cfg.num_particles * cfg.num_groups,
        model_time=counted.model_time if counted.timed else float("nan"),
        reward_time=reward_timer.total if reward_timer.enabled else float("nan"),
        wall_time=time.perf_counter() - wall_start,
        best_sample=ungroup(best, g),
        best_reward=ungroup(r[rows, idx], g),
        best_index=ungroup(idx, g),
        **storage.best_of_n_extra(x, cfg),
    )
