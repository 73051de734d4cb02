"""Feynman-Kac steering / SMC over any transition (GLASS_MATH §5.2).

Per step k (t_{k-1} -> t_k): propagate all B*N particles with the transition; at a potential step
score r(D_{t_k}(x)) on the denoiser output (that call is handed to the next transition as
`denoised=`, so it costs no extra NFE), add the log-potential, and let the native SMCState
resample (row-local per group) or carry the weights. Only the [2, B*N] float64 (reward, log-G)
block crosses to the host: one sync per potential step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    Timer,
    as_generator_arg,
    check_callable,
    check_finite_float,
    check_model,
    check_optional_positive_int,
    check_positive_int,
    check_shape,
    check_time_grid,
    check_window,
    draw_seeds,
    fail,
    initial_noise,
    progress_bar,
    resolve_groups,
    ungroup,
)
from glass_core.align.potentials import POTENTIALS, Potential
from glass_core.align.results import FKResult
from glass_core.errors import RewardError
from glass_core.rewards.base import Reward, check_rewards

SCHEMES = ("multinomial", "stratified", "systematic", "residual")


def _potential_steps(
    grid: list[float], every: int | None, window: tuple[float, float] | None
) -> list[bool]:
    """is_potential[k] for k = 1..K (index 0 unused): scheduled intermediate steps plus the end."""
    num_k = len(grid) - 1
    flags = [False] * (num_k + 1)
    for k in range(1, num_k):
        on = every is None or k % every == 0
        if window is not None:
            on = on and window[0] <= grid[k] <= window[1]
        flags[k] = on
    flags[num_k] = True
    return flags


def _raise_bad_rewards(values: np.ndarray, step: int, t: float) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    shown = ", ".join(str(i) for i in bad[:10]) + (
        f", ... ({bad.size} in total)" if bad.size > 10 else ""
    )
    raise RewardError(
        f"reward returned NaN/inf at step {step} (t={t:.4g}) for particle indices [{shown}]"
    )


def fk_steering(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    num_particles: int,
    time_grid: Any,
    shape: Any,
    potential: str = "diff",
    lambda_: float = 1.0,
    resample: str = "systematic",
    ess_threshold: float | None = None,
    resample_every: int | None = None,
    resample_window: tuple[float, float] | None = None,
    final_resample: bool = False,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    track_genealogy: bool = True,
    progress: bool = True,
    profile: bool = False,
    process_group: Any = None,
) -> FKResult:
    """Feynman-Kac steering toward p(z) exp(lambda_ r(z)) / Z.

    Potential steps are t_k with k % resample_every == 0 (every step if None) and t_k inside
    `resample_window`, plus always the final t=1. At each one the intermediate reward is computed
    and resampling happens (or, with `ess_threshold`, only when ESS < ess_threshold * N); weights
    are carried otherwise. The last step applies the exact final correction and resamples only if
    `final_resample`. `generator` may be a list of B torch.Generators: B groups (e.g. prompts) x N
    particles, equal to B separate runs with those generators. Rows are group-major.
    `max_batch` splits model calls into consecutive row chunks; a model conditioned per row
    (one prompt per group) must then map chunk rows to groups itself, or batch internally.
    `profile=True` measures model and reward time (syncing CUDA around each call); otherwise
    they are reported as NaN and the loop makes one host sync per potential step.
    `process_group` (a torch.distributed ProcessGroup or `align.distributed.Sharding`) shards the
    particles over its ranks with the same results (see glass_core.align.distributed).
    """
    if process_group is not None:
        args = dict(locals())  # the arguments only
        from glass_core.align.distributed import sharded_fk_steering

        return sharded_fk_steering(**args)
    wall_start = time.perf_counter()
    check_model(model)
    check_callable(reward, "reward")
    check_callable(transition, "transition")
    n = check_positive_int(num_particles, "num_particles")
    grid = check_time_grid(time_grid)
    shape_t = check_shape(shape)
    if potential not in POTENTIALS:
        raise fail("potential", f"must be one of {POTENTIALS}, got {potential!r}")
    lam = check_finite_float(lambda_, "lambda_")
    if resample not in SCHEMES:
        raise fail("resample", f"must be one of {SCHEMES}, got {resample!r}")
    if ess_threshold is not None:
        ess_threshold = check_finite_float(ess_threshold, "ess_threshold")
        if not 0.0 < ess_threshold <= 1.0:
            raise fail("ess_threshold", f"must be in (0, 1] (a fraction of N), got {ess_threshold}")
    every = check_optional_positive_int(resample_every, "resample_every")
    window = check_window(resample_window, "resample_window")
    max_batch = check_optional_positive_int(max_batch, "max_batch")
    num_b, grouped = resolve_groups(generator, num_groups)

    from glass_core.weights import SMCState  # native core

    counted = CountedModel(model, max_batch, timed=profile)
    reward_timer = Timer(profile)
    gen = as_generator_arg(generator)
    x = initial_noise(num_b * n, shape_t, generator, dtype, device)
    seeds = draw_seeds(generator, num_b)
    state = SMCState(
        num_b,
        n,
        scheme=cast(Any, resample),  # validated against SCHEMES above
        ess_threshold=ess_threshold,
        seeds=seeds,
        track_genealogy=track_genealogy,
    )
    pot = Potential(potential, lam, num_b * n, x.device)
    flags = _potential_steps(grid, every, window)
    num_k = len(grid) - 1
    ess_rows: list[np.ndarray] = []
    resampled_rows: list[np.ndarray] = []
    step_times: list[float] = []
    denoised: torch.Tensor | None = None
    rewards = torch.empty(0)

    with torch.no_grad(), progress_bar(num_k, progress, "FK steering") as bar:
        for k in range(1, num_k + 1):
            t, t_next = grid[k - 1], grid[k]
            x = transition(counted, x, t, t_next, gen, denoised=denoised)
            denoised = None
            bar.update(1)
            if not flags[k]:
                continue
            final = k == num_k
            if not final:
                denoised = counted.denoise(x, t_next)
            # shape/dtype now; finiteness on the host copy below (no extra device sync)
            r_raw = reward_timer(reward, x if final else denoised)
            rewards = check_rewards(r_raw, num_b * n, finite=False)
            log_g = pot.step(rewards, final=final)
            host = torch.stack([rewards.to(torch.float64), log_g]).cpu().numpy()  # the one sync
            if not np.isfinite(host[0]).all():
                _raise_bad_rewards(host[0], k, t_next)
            decision = final_resample if final else (None if ess_threshold is not None else True)
            res = state.step(host[1].reshape(num_b, n), resample=decision)
            ess_rows.append(np.asarray(res.ess, dtype=np.float64))
            resampled_rows.append(np.asarray(res.resampled, dtype=bool))
            step_times.append(t_next)
            if res.any_resampled:
                idx = torch.from_numpy(np.asarray(res.flat_ancestors, dtype=np.int64)).to(x.device)
                x = x.index_select(0, idx)
                if final:  # intermediate rewards are not kept, only the final ones
                    rewards = rewards.index_select(0, idx)
                if denoised is not None:
                    denoised = denoised.index_select(0, idx)
                pot.gather(idx)

    log_w = torch.as_tensor(np.asarray(state.log_weights), dtype=torch.float64)
    log_z = np.asarray(state.log_evidence, dtype=np.float64).reshape(num_b)
    ancestors = np.asarray(state.genealogy()) if track_genealogy else None
    ess_hist = np.stack(ess_rows)  # [S, B]
    res_hist = np.stack(resampled_rows)
    return FKResult(
        samples=ungroup(x.reshape(num_b, n, *shape_t), grouped),
        log_weights=ungroup(log_w.reshape(num_b, n), grouped),
        rewards=ungroup(rewards.reshape(num_b, n), grouped),
        log_evidence=log_z if grouped else float(log_z[0]),
        ess_history=ess_hist if grouped else ess_hist[:, 0],
        resampled=res_hist if grouped else res_hist[:, 0],
        step_times=np.asarray(step_times),
        ancestors=(None if ancestors is None else ancestors if grouped else ancestors[:, 0]),
        nfe=counted.nfe,
        total_nfe=counted.nfe * n * num_b,
        model_time=counted.model_time if profile else float("nan"),
        reward_time=reward_timer.total if profile else float("nan"),
        wall_time=time.perf_counter() - wall_start,
    )
