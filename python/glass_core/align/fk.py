"""Feynman-Kac steering / SMC over any transition (docs/math.md §6.2) as an init/step engine.

:class:`FKSampler` holds the model and the strategies; :meth:`FKSampler.init` returns an
:class:`~glass_core.align.fk_state.FKState` and :meth:`FKSampler.step` advances it by one
transition t_{k-1} -> t_k in three named parts, each replaceable by a subclass:

* :meth:`~FKSampler.propose` moves the particles with the transition (reusing ``denoised``);
* :meth:`~FKSampler.weight` (potential steps only) scores them with the potential on the device
  (r(D_{t_k}(x)), whose denoiser output is handed to the next transition so it costs no extra
  NFE), turns the scores into log-potentials and brings everything the host needs across in one
  [2, B*N] float64 transfer: the one device sync per potential step;
* :meth:`~FKSampler.resample` lets the native SMCState reweight and resample (row-local per
  group) or carry the weights, and moves the particles to their ancestors.

:func:`fk_steering` is the loop ``init``, ``step`` until ``done``, ``result``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from glass_core import _random
from glass_core.align._common import (
    CountedModel,
    Generator,
    Timer,
    draw_seeds,
    fail,
    nonfinite_reward_error,
    progress_bar,
    ungroup,
)
from glass_core.align._config import FKConfig, sampling_validator
from glass_core.align._finite import blame, finite_flag, unchecked_step
from glass_core.align._start import start_particles
from glass_core.align.fk_state import FKState, SMCBook
from glass_core.align.potentials import Potential, ScoreContext, overflow_error
from glass_core.align.results import FKResult
from glass_core.align.storage import particle_storage
from glass_core.rewards.base import Reward


def upload_ancestors(flat: Any, device: torch.device) -> torch.Tensor:
    """Upload the host int64 ancestors to `device`.

    From pinned memory without blocking on CUDA (the copy is ordered on the stream before the
    gathers that use it).

    Parameters
    ----------
    flat : array-like
        The flat [B*N] ancestor indices.
    device : torch.device
        Where the particles live.

    Returns
    -------
    torch.Tensor
        int64 indices on `device`.
    """
    idx = torch.from_numpy(np.asarray(flat, dtype=np.int64))
    if device.type == "cuda":
        return idx.pin_memory().to(device, non_blocking=True)
    return idx.to(device)


class FKSampler:
    """Feynman-Kac steering toward p(z) exp(lambda_ r(z)) / Z, one step at a time.

    ``state = fk.init(num_particles=N, shape=...)``, ``state = fk.step(state)`` until
    ``state.done``, then ``fk.result(state)``; between steps the state can be inspected, its
    particles replaced, or saved with ``torch.save`` and resumed after ``torch.load(...,
    weights_only=False)`` to the same bits. See :func:`fk_steering` for the arguments.

    Parameters
    ----------
    model : Denoiser
        The flow/diffusion model.
    reward : callable
        [rows, ...] samples -> [rows] rewards.
    transition : callable
        The proposal x_t -> x_t' (any glass_core transition).
    time_grid : array-like
        Increasing times from t0 to 1.
    potential : Potential or str
        A :class:`~glass_core.align.potentials.Potential` or a shorthand ("diff", "max", "sum",
        "lookahead").
    lambda_, resampling, ess_threshold, resample_every, resample_window, final_resample,
    max_batch, track_genealogy, profile, process_group
        As for :func:`fk_steering`; checked by :meth:`init`.
    """

    def __init__(
        self,
        model: Any,
        reward: Reward,
        *,
        transition: Callable[..., torch.Tensor],
        time_grid: Any,
        potential: Potential | str = "diff",
        lambda_: float = 1.0,
        resampling: str = "systematic",
        ess_threshold: float | None = None,
        resample_every: int | None = None,
        resample_window: tuple[float, float] | None = None,
        final_resample: bool = False,
        max_batch: int | None = None,
        track_genealogy: bool = True,
        profile: bool = False,
        process_group: Any = None,
    ) -> None:
        self.model, self.reward, self.transition = model, reward, transition
        self.time_grid, self.max_batch = time_grid, max_batch
        self.options = dict(
            potential=potential,
            lambda_=lambda_,
            resampling=resampling,
            ess_threshold=ess_threshold,
            resample_every=resample_every,
            resample_window=resample_window,
            final_resample=final_resample,
        )
        self.track_genealogy, self.profile = track_genealogy, profile
        self.process_group = process_group

    def init(
        self,
        num_particles: int,
        *,
        shape: Any = None,
        generator: Generator = None,
        num_groups: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        x0: torch.Tensor | None = None,
    ) -> FKState:
        """Check every argument and return the state at the grid's first time.

        Parameters
        ----------
        num_particles : int
            N, particles per group.
        shape : tuple of int, optional
            One sample's shape (may be None when `x0` is given).
        generator : torch.Generator or list of them, optional
            The run's randomness (a list of B: B groups, each equal to a separate run).
        num_groups : int, optional
            B groups sharing one generator.
        dtype, device : optional
            Of fresh noise particles (or to cast/move `x0` to).
        x0 : torch.Tensor, optional
            The particles at the grid's first time ([N, ...] or [B, N, ...]).

        Returns
        -------
        FKState

        Raises
        ------
        InvalidInputError
            Naming the first invalid argument.
        """
        start = time.perf_counter()
        sampling = sampling_validator(
            self.model, self.reward, self.transition, self.time_grid, num_particles, shape,
            generator, num_groups, self.max_batch, x0, self.process_group,
        )  # fmt: skip
        storage = particle_storage(self.process_group)
        cfg = storage.configure(lambda world: self._config(sampling(world)), generator)
        with storage.guard(0):
            x = start_particles(x0, storage.local_rows, cfg.shape, storage.noise, dtype, device)
            seeds = draw_seeds(generator, cfg.num_groups)
        smc = SMCBook(
            cfg.num_groups,
            cfg.num_particles,
            scheme=cfg.resampling,
            ess_threshold=cfg.ess_threshold,
            seeds=seeds,
            track_genealogy=self.track_genealogy,
        )
        host = storage.host_device or x.device  # where the potential state and ancestors live
        pot = cfg.potential.init(cfg.num_groups * cfg.num_particles, host)
        state = FKState(config=cfg, storage=storage, smc=smc, potential=pot, particles=x)
        state.seconds = time.perf_counter() - start
        return state

    def _config(self, sampling: Any) -> FKConfig:
        cfg = FKConfig.from_sampling(sampling, **self.options)
        if self.process_group is not None and not cfg.potential.shardable:
            raise fail("potential", f"{cfg.potential.name!r} is not supported with process_group")
        return cfg

    def step(self, state: FKState) -> FKState:
        """Advance `state` by one transition (and its potential step, if it is one).

        Parameters
        ----------
        state : FKState
            From :meth:`init` or a previous step; advanced in place and returned.

        Returns
        -------
        FKState

        Raises
        ------
        InvalidInputError
            If the state is done, the potential overflows, or a part rejects its input.
        RewardError
            If the reward returns NaN/inf.
        """
        if state.done:
            raise fail("state", "is done (every transition has run): call result(state)")
        start = time.perf_counter()
        cfg, storage = state.config, state.storage
        k = state.step + 1
        final = k == cfg.num_steps
        ctx = ScoreContext(
            CountedModel(self.model, cfg.max_batch, timed=self.profile),
            self.reward,
            Timer(self.profile),
            storage.noise,
            cfg.lambda_,
        )
        weighted = self.is_weighted(state, k)
        if weighted:  # what a failure needs to replay the transition (host-side RNG state)
            state.proposed_from = (state.particles, state.denoised, _random.snapshot(storage.noise))
        with torch.no_grad():
            with storage.guard(k):
                self.propose(ctx, state, cfg.grid[k - 1], cfg.grid[k])
                scores = self.score(ctx, state, cfg.grid[k], final) if weighted else None
            if scores is not None:
                log_g, rewards = self.weight(state, scores, k, final)
                self.resample(state, log_g, rewards, k, final)
        state.proposed_from = None  # do not keep the previous particles alive between steps
        state.step = k
        state.nfe += ctx.model.nfe
        state.model_time += ctx.model.model_time
        state.reward_time += ctx.reward_timer.total
        state.seconds += time.perf_counter() - start
        return state

    def is_weighted(self, state: FKState, k: int) -> bool:
        """Whether transition `k` ends at a potential step."""
        return state.config.is_potential_step(k)

    def propose(self, ctx: ScoreContext, state: FKState, t: float, t_next: float) -> None:
        """Move the particles from t to t_next with the transition (the propose part).

        Parameters
        ----------
        ctx : ScoreContext
            The step's counted model, reward and noise.
        state : FKState
            Updated in place (``particles``; ``denoised`` is consumed).
        t, t_next : float
            The transition's times.
        """
        state.particles = unchecked_step(
            self.transition, ctx.model, state.particles, t, t_next, ctx.noise, state.denoised
        )
        state.denoised = None

    def score(self, ctx: ScoreContext, state: FKState, t: float, final: bool) -> torch.Tensor:
        """Score this process's particles at a potential step (sets ``state.denoised``).

        Parameters
        ----------
        ctx : ScoreContext
            The step's counted model, reward and noise.
        state : FKState
            The state after :meth:`propose`.
        t : float
            The potential step's time.
        final : bool
            Whether `t` is the grid's last time.

        Returns
        -------
        torch.Tensor
            [rows] scores, on the device.
        """
        state.denoised, local = state.config.potential.score(ctx, state.particles, t, final)
        return local

    def weight(
        self, state: FKState, local: torch.Tensor, k: int, final: bool
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Turn this process's scores into log-potentials (the weight part).

        It makes the one device->host transfer of the step (scores, log-potentials and a finite
        flag of the particles; on NaN/inf the transition is replayed from
        ``state.proposed_from`` to name the party at fault).

        Parameters
        ----------
        state : FKState
            The state after :meth:`score`.
        local : torch.Tensor
            This process's [rows] scores.
        k : int
            The step's index into the grid.
        final : bool
            Whether this is the last step.

        Returns
        -------
        tuple of (numpy.ndarray, torch.Tensor)
            Host [B*N] log-potentials and the device scores of all slots.

        Raises
        ------
        ModelError, InvalidInputError
            If the particles hold NaN/inf (the model or the transition blamed), or lambda_ *
            reward overflows.
        RewardError
            If the reward returned NaN/inf.
        """
        cfg, storage = state.config, state.storage
        scores = storage.gather_rewards(local, k)  # all B*N slots
        log_g = cfg.potential.step(state.potential, scores, cfg.lambda_, final=final)
        ok = finite_flag(state.particles, state.denoised).to(scores.device).reshape(1)
        host = torch.cat([scores.to(torch.float64), log_g, ok]).cpu().numpy()  # the one sync
        size = scores.shape[0]
        r_host, g_host = host[:size], host[size : 2 * size]
        if host[-1] != 1.0:
            after = (state.particles, state.denoised)
            grid = (cfg.grid[k - 1], cfg.grid[k])
            before = state.proposed_from
            raise blame(self.transition, self.model, before, storage.noise, after, grid)
        overflow = overflow_error(r_host, g_host, cfg.lambda_)
        if overflow is not None:
            raise overflow
        if not np.isfinite(r_host).all():
            raise nonfinite_reward_error(r_host, k, cfg.grid[k], storage.held_by)
        if final:
            state.rewards = scores
            state.reward_dtype = local.dtype
        return g_host, scores

    def resample(
        self, state: FKState, log_g: np.ndarray, scores: torch.Tensor, k: int, final: bool
    ) -> None:
        """Reweight with the host log-potentials and resample as configured (the resample part).

        Every per-particle tensor moves to its ancestor.

        Parameters
        ----------
        state : FKState
            Updated in place.
        log_g : numpy.ndarray
            Host [B*N] log-potentials.
        scores : torch.Tensor
            The device scores of all slots (kept as the rewards at the final step).
        k : int
            The step's index into the grid.
        final : bool
            Whether this is the last step.
        """
        cfg, storage = state.config, state.storage
        res = state.smc.step(
            log_g.reshape(cfg.num_groups, cfg.num_particles), cfg.resample_decision(final)
        )
        state.resampled.append(res.resampled)  # [B] bool, a fresh array
        state.step_times.append(cfg.grid[k])
        state.last_ancestors = np.asarray(res.ancestors)
        idx = None
        if res.any_resampled:
            idx = upload_ancestors(res.flat_ancestors, state.potential.applied.device)
            state.potential.gather(idx)
            if final:  # intermediate scores are not kept, only the final rewards
                state.rewards = scores.index_select(0, idx)
        state.particles, state.denoised = storage.follow(
            res, idx, [state.particles, state.denoised], k
        )

    def result(self, state: FKState) -> FKResult:
        """Return the weighted particles of a finished run.

        Parameters
        ----------
        state : FKState
            A state whose ``done`` is True (on every rank of a sharded run).

        Returns
        -------
        FKResult
            Or the storage's subclass (``ShardedFKResult`` for sharded runs).

        Raises
        ------
        InvalidInputError
            If the state is not done.
        """
        if not state.done or state.rewards is None:
            raise fail("state", f"is at step {state.step} of {state.config.num_steps}: not done")
        cfg, storage, x = state.config, state.storage, state.particles
        grouped, num_b, n = cfg.grouped, cfg.num_groups, cfg.num_particles
        native = state.smc.native
        ess_hist = native.ess_history  # [S, B] float64, a fresh array (as log_evidence's [B])
        res_hist = np.stack(state.resampled)
        ancestors = np.asarray(native.genealogy()) if native.track_genealogy else None
        log_z = native.log_evidence
        rewards = state.rewards.to(dtype=state.reward_dtype, device=x.device).reshape(num_b, n)
        return storage.fk_result(
            samples=ungroup(storage.gathered_samples(x, cfg), grouped),
            log_weights=ungroup(state.log_weights.reshape(num_b, n), grouped),
            rewards=ungroup(rewards, grouped),
            log_evidence=log_z if grouped else float(log_z[0]),
            ess_history=ess_hist if grouped else ess_hist[:, 0],
            resampled=res_hist if grouped else res_hist[:, 0],
            step_times=np.asarray(state.step_times),
            ancestors=(None if ancestors is None else ancestors if grouped else ancestors[:, 0]),
            nfe=state.nfe,
            total_nfe=state.nfe * n * num_b,
            model_time=state.model_time if self.profile else float("nan"),
            reward_time=state.reward_time if self.profile else float("nan"),
            wall_time=state.seconds,
            **storage.fk_extra(x, cfg),
        )


#: The FKSampler class of each `proposal` of fk_steering; glass_core.align.twisted adds its own.
PROPOSALS: dict[str, type[FKSampler]] = {"plain": FKSampler}


def fk_steering(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    num_particles: int,
    time_grid: Any,
    shape: Any = None,
    potential: Potential | str = "diff",
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
    proposal: str = "plain",
) -> FKResult:
    """Feynman-Kac steering toward p(z) exp(lambda_ r(z)) / Z: :class:`FKSampler` run to the end.

    `potential`: a :class:`~glass_core.align.potentials.Potential` (``Diff()``, ``Max()``,
    ``Sum()``, ``Lookahead(num_samples, transition)``) or its name as a shorthand for the default
    object. `resampling` names the scheme (one of ``glass_core.weights.SCHEMES``).
    Potential steps are t_k with k % resample_every == 0 (every step if None) and t_k inside
    `resample_window`, plus always the final t=1. At each one the intermediate score is computed
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
    The final weights target p(z) exp(lambda_ r(z)) / Z exactly whatever the potential; the
    lookahead's model evaluations (J per particle per batched call) are counted in `nfe`.

    Parameters
    ----------
    model : Denoiser
        The flow/diffusion model (schedule, denoise, velocity).
    reward : callable
        [rows, ...] samples -> [rows] rewards.
    transition : callable
        The proposal x_t -> x_t' (a glass_core transition or any callable with its signature).
    num_particles : int
        N, particles per group.
    time_grid : array-like
        Increasing times from t0 to 1.
    shape : tuple of int, optional
        One sample's shape (may be None when `x0` is given).
    potential : Potential or str
        The intermediate potential or its shorthand.
    lambda_ : float
        The reward's inverse temperature.
    resampling : str
        The resampling scheme.
    ess_threshold : float, optional
        Resample adaptively when ESS < ess_threshold * N.
    resample_every : int, optional
        Potential steps every that many transitions.
    resample_window : tuple of float, optional
        Potential steps only at times t_k inside it.
    final_resample : bool
        Resample at the final step too.
    generator : torch.Generator or list of them, optional
        The run's randomness (a list of B: B groups).
    num_groups : int, optional
        B groups sharing one generator.
    dtype, device : optional
        Of fresh noise particles (or to cast/move `x0` to).
    max_batch : int, optional
        Rows per model call.
    track_genealogy : bool
        Keep the ancestors of every potential step in the result.
    progress : bool
        Show a progress bar.
    profile : bool
        Measure model and reward time.
    process_group : ProcessGroup or Sharding, optional
        Shard the particles over ranks.
    x0 : torch.Tensor, optional
        The particles at the grid's first time.
    proposal : str
        "plain" (the transition as is) or "twisted" (TDS: the transition's Gaussian kernel
        shifted by the gradient of lambda_ r(D_t(x)), with exact weights; SDE transitions only,
        see glass_core.align.twisted).

    Returns
    -------
    FKResult
        Or ``ShardedFKResult`` for sharded runs.

    Raises
    ------
    InvalidInputError
        Naming the first invalid argument, or if lambda_ * reward overflows.
    ModelError
        If the model returns NaN/inf or a badly shaped output.
    RewardError
        If the reward returns NaN/inf or a badly shaped output.
    """
    if proposal not in PROPOSALS:
        raise fail("proposal", f"must be one of {tuple(PROPOSALS)}, got {proposal!r}")
    fk = PROPOSALS[proposal](
        model, reward, transition=transition, time_grid=time_grid, potential=potential,
        lambda_=lambda_, resampling=resampling, ess_threshold=ess_threshold,
        resample_every=resample_every, resample_window=resample_window,
        final_resample=final_resample, max_batch=max_batch, track_genealogy=track_genealogy,
        profile=profile, process_group=process_group,
    )  # fmt: skip
    state = fk.init(
        num_particles, shape=shape, generator=generator, num_groups=num_groups, dtype=dtype,
        device=device, x0=x0,
    )  # fmt: skip
    return run_to_end(fk, state, progress, "FK steering")


def run_to_end(sampler: FKSampler, state: FKState, progress: bool, desc: str) -> FKResult:
    """``sampler.step(state)`` until done (with a progress bar titled `desc`), then the result.

    Parameters
    ----------
    sampler : FKSampler
        The engine (or a subclass: tempered SMC, twisted proposals).
    state : FKState
        From ``sampler.init``.
    progress : bool
        Show the bar (on the main process).
    desc : str
        The bar's title.

    Returns
    -------
    FKResult
        ``sampler.result(state)``.
    """
    show = progress and state.storage.is_main
    with progress_bar(state.config.num_steps, show, desc + state.storage.label) as bar:
        while not state.done:
            state = sampler.step(state)
            bar.update(1)
    return sampler.result(state)
