"""Feynman-Kac steering / SMC over any transition (docs/math.md §6.2).

Per step k (t_{k-1} -> t_k): propagate all B*N particles with the transition; at a potential step
score r(D_{t_k}(x)) on the denoiser output (that call is handed to the next transition as
`denoised=`, so it costs no extra NFE), add the log-potential, and let the native SMCState
resample (row-local per group) or carry the weights. Only the [2, B*N] float64 (reward, log-G)
block crosses to the host: one sync per potential step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    Timer,
    draw_seeds,
    nonfinite_reward_error,
    progress_bar,
    ungroup,
)
from glass_core.align._config import FKConfig, sampling_validator
from glass_core.align._start import start_particles
from glass_core.align.potentials import Potential
from glass_core.align.results import FKResult
from glass_core.align.storage import particle_storage
from glass_core.align.value import Lookahead
from glass_core.rewards.base import Reward, check_rewards

if TYPE_CHECKING:
    from glass_core.weights import StepResult

R = TypeVar("R", bound=FKResult)


class FKBookkeeping:
    """The global side of FK steering over all B*N particles, the same whatever the particle
    storage: the native SMCState, the potentials, the per-potential-step history and the
    assembly of the result."""

    def __init__(
        self, cfg: FKConfig, seeds: list[int], device: torch.device, track_genealogy: bool
    ) -> None:
        from glass_core.weights import SMCState  # native core

        self.cfg = cfg
        self.device = device  # where the potential state (and the returned ancestors) live
        self.track_genealogy = track_genealogy
        self.state = SMCState(
            cfg.num_groups,
            cfg.num_particles,
            scheme=cast(Any, cfg.resampling),  # validated by FKConfig
            ess_threshold=cfg.ess_threshold,
            seeds=seeds,
            track_genealogy=track_genealogy,
        )
        self.potential = Potential(
            cfg.potential, cfg.lambda_, cfg.num_groups * cfg.num_particles, device
        )
        self.ess_rows: list[np.ndarray] = []
        self.resampled_rows: list[np.ndarray] = []
        self.step_times: list[float] = []

    def step(
        self, log_g: np.ndarray, t_next: float, final: bool
    ) -> tuple[StepResult, torch.Tensor | None]:
        """Reweight with the host log-potentials [B*N] and resample as configured. Returns the
        StepResult and, if any group resampled, the flat ancestors on `device` (the potential
        state has already followed them)."""
        cfg = self.cfg
        res = self.state.step(
            log_g.reshape(cfg.num_groups, cfg.num_particles), resample=cfg.resample_decision(final)
        )
        self.ess_rows.append(np.asarray(res.ess, dtype=np.float64))
        self.resampled_rows.append(np.asarray(res.resampled, dtype=bool))
        self.step_times.append(t_next)
        if not res.any_resampled:
            return res, None
        idx = torch.from_numpy(np.asarray(res.flat_ancestors, dtype=np.int64)).to(self.device)
        self.potential.gather(idx)
        return res, idx

    def result(
        self,
        cls: type[R],
        *,
        samples: torch.Tensor,
        rewards: torch.Tensor,
        counted: CountedModel,
        reward_timer: Timer,
        wall_start: float,
        **extra: Any,
    ) -> R:
        """`cls` (FKResult or a subclass taking `extra`) from [B, N, ...] samples, [B, N]
        rewards and the recorded history."""
        cfg, grouped = self.cfg, self.cfg.grouped
        num_b, n = cfg.num_groups, cfg.num_particles
        log_w = torch.as_tensor(np.asarray(self.state.log_weights), dtype=torch.float64)
        log_z = np.asarray(self.state.log_evidence, dtype=np.float64).reshape(num_b)
        ancestors = np.asarray(self.state.genealogy()) if self.track_genealogy else None
        ess_hist = np.stack(self.ess_rows)  # [S, B]
        res_hist = np.stack(self.resampled_rows)
        return cls(
            samples=ungroup(samples, grouped),
            log_weights=ungroup(log_w.reshape(num_b, n), grouped),
            rewards=ungroup(rewards, grouped),
            log_evidence=log_z if grouped else float(log_z[0]),
            ess_history=ess_hist if grouped else ess_hist[:, 0],
            resampled=res_hist if grouped else res_hist[:, 0],
            step_times=np.asarray(self.step_times),
            ancestors=(None if ancestors is None else ancestors if grouped else ancestors[:, 0]),
            nfe=counted.nfe,
            total_nfe=counted.nfe * n * num_b,
            model_time=counted.model_time if counted.timed else float("nan"),
            reward_time=reward_timer.total if reward_timer.enabled else float("nan"),
            wall_time=time.perf_counter() - wall_start,
            **extra,
        )


def score_potential_step(
    counted: CountedModel,
    reward: Reward,
    reward_timer: Timer,
    x: torch.Tensor,
    t_next: float,
    final: bool,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(denoised, rewards) at a potential step: r(x) at the end, else r(D_{t_next}(x)) whose
    denoiser output is returned for the next transition. Shape/dtype are checked here,
    finiteness by the caller on its host copy (no extra device sync)."""
    denoised = None if final else counted.denoise(x, t_next)
    r_raw = reward_timer(reward, x if final else denoised)
    return denoised, check_rewards(r_raw, x.shape[0], finite=False, device=x.device).detach()


def fk_steering(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    num_particles: int,
    time_grid: Any,
    shape: Any = None,
    potential: str = "diff",
    lambda_: float = 1.0,
    resampling: str = "systematic",
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
    x0: torch.Tensor | None = None,
    lookahead_samples: int = 16,
    lookahead_transition: Callable[..., torch.Tensor] | None = None,
) -> FKResult:
    """Feynman-Kac steering toward p(z) exp(lambda_ r(z)) / Z.

    `resampling` names the scheme: "systematic", "stratified", "multinomial" or "residual".
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
    `x0`: the particles at the grid's first time ([N, ...] or [B, N, ...]; `shape` may then be
    None), which may be t0 > 0: the target is then p(x1 | x_t0) tilted by exp(lambda_ r).
    potential="lookahead" uses V-hat_t(x) = log mean_j exp(lambda_ r(z_j)) over
    `lookahead_samples` posterior samples z_j drawn by `lookahead_transition` (default
    ``Glass(inner_steps=4)``) from (x, t) to 1 as the value in a difference potential (see
    glass_core.align.potentials); their model evaluations (J per particle per batched call) are
    counted in `nfe`. The final weights target p(z) exp(lambda_ r(z)) / Z exactly either way.
    """
    wall_start = time.perf_counter()
    sampling = sampling_validator(
        model, reward, transition, time_grid, num_particles, shape, generator, num_groups,
        max_batch, x0, process_group,
    )  # fmt: skip
    look = Lookahead.from_args(potential, lookahead_samples, lookahead_transition, process_group)
    storage = particle_storage(process_group)

    def validate(world_size: int) -> FKConfig:
        return FKConfig.from_sampling(
            sampling(world_size),
            potential=potential,
            lambda_=lambda_,
            resampling=resampling,
            ess_threshold=ess_threshold,
            resample_every=resample_every,
            resample_window=resample_window,
            final_resample=final_resample,
        )

    cfg = storage.configure(validate, generator)
    counted = CountedModel(model, cfg.max_batch, timed=profile)
    reward_timer = Timer(profile)
    noise = storage.noise
    with storage.guard(0):
        x = start_particles(x0, storage.local_rows, cfg.shape, noise, dtype, device)
        seeds = draw_seeds(generator, cfg.num_groups)
    book = FKBookkeeping(cfg, seeds, storage.host_device or x.device, track_genealogy)
    flags = cfg.potential_steps()
    denoised: torch.Tensor | None = None
    local = rewards = torch.empty(0)
    show = progress and storage.is_main

    with torch.no_grad(), progress_bar(cfg.num_steps, show, "FK steering" + storage.label) as bar:
        for k in range(1, cfg.num_steps + 1):
            t, t_next = cfg.grid[k - 1], cfg.grid[k]
            final = k == cfg.num_steps
            with storage.guard(k):
                x = transition(counted, x, t, t_next, noise, denoised=denoised)
                denoised = None
                bar.update(1)
                if flags[k] and look is not None and not final:
                    denoised = counted.denoise(x, t_next)
                    local = look.values(counted, reward, x, t_next, cfg.lambda_, noise, denoised)
                elif flags[k]:
                    denoised, local = score_potential_step(
                        counted, reward, reward_timer, x, t_next, final
                    )
            if not flags[k]:
                continue
            rewards = storage.gather_rewards(local, k)  # all B*N slots
            log_g = book.potential.step(rewards, final=final)
            host = torch.stack([rewards.to(torch.float64), log_g]).cpu().numpy()  # the one sync
            if not np.isfinite(host[0]).all():
                raise nonfinite_reward_error(host[0], k, t_next, storage.held_by)
            res, idx = book.step(host[1], t_next, final)
            if idx is not None and final:  # intermediate rewards are not kept, only the final
                rewards = rewards.index_select(0, idx)
            x, denoised = storage.follow(res, idx, [x, denoised], k)

    b_n = (cfg.num_groups, cfg.num_particles)
    return book.result(
        storage.fk_result,
        samples=storage.gathered_samples(x, cfg),
        rewards=rewards.to(dtype=local.dtype, device=x.device).reshape(b_n),
        counted=counted,
        reward_timer=reward_timer,
        wall_start=wall_start,
        **storage.fk_extra(x, cfg),
    )
