"""FK steering and best-of-N inside any diffusers flow pipeline through ``callback_on_step_end``.

The pipeline's scheduler must be a ``TransitionScheduler``: particles are the pipeline's
``num_images_per_prompt`` rows of each prompt (groups, row-major), FK scores r(D_t(x_t)) on the
network's first evaluation of each transition (no extra evaluation), and resampling goes
through ``scheduler.resample`` so the transitions' state follows the particles. The FK
bookkeeping (native SMCState, potentials, result) is ``glass_core.align.fk``'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, ClassVar, cast

import numpy as np
import torch

from glass_core._checks import optional_positive_int, positive_int
from glass_core.align._config import FKConfig, SamplingConfig
from glass_core.align.fk import FKSampler
from glass_core.align.fk_state import FKState
from glass_core.align.potentials import as_potential
from glass_core.align.results import BestOfNResult, SamplingResult, uniform_log_weights
from glass_core.diffusers.layouts import PackedLayout
from glass_core.diffusers.scheduler import TransitionScheduler
from glass_core.errors import InvalidInputError, UnsupportedModelError
from glass_core.rewards.adapters import reward_on_latents
from glass_core.rewards.base import check_rewards
from glass_core.schedules import RectifiedFlow

METHODS = ("fk", "best_of_n")


def family_decoder(pipe: Any, scheduler: TransitionScheduler, latent_shape: tuple[int, ...]):
    """Return a decoder from model-layout latents to images for the pipeline's family.

    The decoder is glass_core's own adapter decode (VAE normalisation included) of the
    pipeline's family, built without encoding any prompt.

    Parameters
    ----------
    pipe : diffusers pipeline
        A FLUX or SD3 pipeline (detected by ``glass_core.models.diffusers.detect_family``).
    scheduler : TransitionScheduler
        The pipeline's scheduler; for FLUX its ``layout`` must be a ``PackedLayout``.
    latent_shape : tuple of int
        Shape of one model-layout latent (no batch dimension).

    Returns
    -------
    callable
        ``decode(z, max_batch=None) -> images [M, 3, H, W] in [0, 1]``.

    Raises
    ------
    UnsupportedModelError
        glass_core has no decode for the family (use a latent reward), the family is a VP
        pipeline (neither FLUX nor SD3), or FLUX without the unpacked layout.
    """
    from glass_core.meter import Meter
    from glass_core.models.diffusers import FluxDenoiser, SD3Denoiser, detect_family

    try:
        family = detect_family(pipe)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(
            f"reward_on='images': glass_core has no image decode for {type(pipe).__name__}; "
            f"score latents instead (reward_on='latents') ({e})"
        ) from None
    classes: dict[str, Any] = {"flux": FluxDenoiser, "sd3": SD3Denoiser}
    if family not in classes:
        raise UnsupportedModelError(
            f"reward_on='images': {family} pipelines are VP pipelines, which "
            "TransitionScheduler does not serve"
        )
    if family == "flux" and not isinstance(scheduler.layout, PackedLayout):
        raise UnsupportedModelError(
            "reward_on='images' on FLUX decodes unpacked latents: wrap the scheduler with "
            "layout=glass_core.diffusers.flux_layout(pipe, height, width)"
        )
    # the adapter's decode reads only these attributes (no prompt encoding needed)
    dec = classes[family].__new__(classes[family])
    dec.pipe, dec.latent_shape, dec.network_max_batch = pipe, tuple(latent_shape), None
    dec.meter = Meter()
    return dec.decode


class _AtBoundary:
    """Answer D_t(x_t) with the network's first evaluation at the transition boundary.

    The model PipelineFK scores with; the pipeline has already run that evaluation (no extra
    network call).
    """

    def __init__(self) -> None:
        self.schedule = RectifiedFlow()
        self.denoised: torch.Tensor | None = None

    def denoise(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        assert self.denoised is not None and self.denoised.shape == x.shape
        return self.denoised


class PipelineFK(FKSampler):
    """Run FK steering with the pipeline's own denoising loop as the proposal.

    ``propose`` takes the particles the TransitionScheduler reached (``reached``), and the
    model answers D_t(x_t) from the network's evaluation there. Scoring, weights and
    resampling are FKSampler's.

    Parameters
    ----------
    reward : callable
        Reward on model-layout latents ``z -> [M]``.
    transition : callable
        The scheduler's glass_core transition.
    time_grid : sequence of float
        The scheduler's run grid (glass_core times).
    **options
        Further ``FKSampler`` options (potential, lambda_, resampling, ...).
    """

    def __init__(self, reward: Any, transition: Any, time_grid: Any, **options: Any) -> None:
        super().__init__(_AtBoundary(), reward, transition=transition, time_grid=time_grid,
                         **options)  # fmt: skip
        self.reached: torch.Tensor | None = None

    def propose(self, ctx: Any, state: FKState, t: float, t_next: float) -> None:
        """Set the particles to those the pipeline reached; D_t is left to the model.

        Parameters
        ----------
        ctx : Any
            FKSampler's per-run context (unused).
        state : FKState
            The FK state, updated in place.
        t, t_next : float
            The step's start and end times (unused: the pipeline already stepped).
        """
        assert self.reached is not None
        state.particles, state.denoised = self.reached, None

    def advance(self, state: FKState, x: torch.Tensor, denoised: torch.Tensor | None) -> Any:
        """Step `state` to the particles `x` the pipeline reached.

        Parameters
        ----------
        state : FKState
            The FK state, advanced in place by one FK step.
        x : torch.Tensor
            Particles the pipeline reached, model layout [B*N, ...].
        denoised : torch.Tensor or None
            Their D_t(x) from the network's evaluation there; None at t = 1.

        Returns
        -------
        torch.Tensor or None
            The flat ancestor row indices [B*N] (offset per prompt group) if this step
            resampled, else None.
        """
        self.reached = x
        cast(_AtBoundary, self.model).denoised = denoised
        before = len(state.resampled)
        self.step(state)
        if len(state.resampled) == before or not state.resampled[-1].any():
            return None
        cfg = state.config
        offsets = np.arange(cfg.num_groups)[:, None] * cfg.num_particles
        return torch.from_numpy((np.asarray(state.last_ancestors) + offsets).reshape(-1))


class SteeringCallback:
    """Steer a pipeline call from its ``callback_on_step_end``; made by ``steering_callback``.

    Pass it as ``callback_on_step_end`` with
    ``callback_on_step_end_tensor_inputs=cb.tensor_inputs``; afterwards ``cb.result`` is an
    ``FKResult`` ("fk") or ``BestOfNResult`` ("best_of_n") with [B, N] fields (B prompts x N
    particles), samples in the scheduler's model layout. Constructing it registers a start
    hook on ``pipe.scheduler``, replacing any earlier ``SteeringCallback``'s hook.

    Parameters
    ----------
    pipe : diffusers pipeline
        The pipeline; its ``scheduler`` must be a ``TransitionScheduler``.
    reward : callable
        Reward on latents or images (see ``steering_callback``).
    method : {"fk", "best_of_n"}
        Steering method.
    num_particles : int
        N, the pipeline's ``num_images_per_prompt``.
    **opts
        ``fk`` (FKSampler options), ``reward_on``, ``reward_prompts``, ``track_genealogy``,
        ``max_batch``, as ``steering_callback`` builds them.
    """

    tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(self, pipe: Any, reward: Any, method: str, num_particles: int, **opts: Any):
        self.pipe = pipe
        self.scheduler = pipe.scheduler
        self.reward = reward
        self.method = method
        self.num_particles = num_particles
        self.opts = opts
        self.result: SamplingResult | None = None
        self._fk: PipelineFK | None = None
        self._state: FKState | None = None
        self._scored: Any = None
        self._decoder: Callable[..., torch.Tensor] | None = None
        self._wall_start = 0.0
        hooks = self.scheduler.start_hooks
        hooks[:] = [h for h in hooks if not isinstance(getattr(h, "__self__", None), type(self))]
        hooks.append(self._start)

    # -- at the scheduler's first step, before any transition noise --------------------------
    def _start(self, sample: torch.Tensor) -> None:
        sched, n, opts = self.scheduler, self.num_particles, self.opts
        x = sched.layout.to_model(sample)
        rows = x.shape[0]
        if rows % n:
            raise InvalidInputError(
                f"num_particles={n}: the pipeline runs {rows} rows; pass num_images_per_prompt="
                f"{n} (rows = prompts x num_images_per_prompt)"
            )
        self._wall_start = time.perf_counter()
        self.result = None
        num_b = rows // n
        self._latent_shape = tuple(x.shape[1:])
        holder = SimpleNamespace(decode=self._decode, device=x.device, num_groups=num_b)
        self._scored = reward_on_latents(
            self.reward, holder, opts["reward_on"], opts["max_batch"], opts["reward_prompts"], None
        )
        if self.method != "fk":
            self._fk = self._state = None
            return
        fk = PipelineFK(self._scored, sched.transition, sched.run_grid, **opts["fk"])
        # x0 = the pipeline's noise: init draws only the resampling seeds, where steer does
        x0 = x.reshape(num_b, n, *self._latent_shape)
        self._state = fk.init(n, generator=sched.generator, num_groups=num_b, x0=x0)
        self._fk = fk

    def _decode(self, z: torch.Tensor, max_batch: int | None = None) -> torch.Tensor:
        decoder = self._decoder
        if decoder is None:
            decoder = family_decoder(self.pipe, self.scheduler, self._latent_shape)
            self._decoder = decoder
        return decoder(z, max_batch=max_batch)

    # -- after every pipeline step -----------------------------------------------------------
    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Advance FK at each transition boundary; finish the result after the last step.

        The pipeline's ``callback_on_step_end(pipe, step, timestep, callback_kwargs)``.

        Parameters
        ----------
        pipe : diffusers pipeline
            The calling pipeline; its scheduler must be this callback's scheduler.
        i : int
            The pipeline's step index (unused: the scheduler tracks boundaries).
        t : Any
            The pipeline's timestep (unused).
        kwargs : dict
            The pipeline's callback tensors (unused).

        Returns
        -------
        dict
            ``{"latents": resampled latents}`` when this step resampled, else empty.

        Raises
        ------
        InvalidInputError
            If ``pipe.scheduler`` is not this callback's scheduler, or a transition boundary
            arrives out of order (one callback serves one pipeline call at a time).
        """
        sched = self.scheduler
        if pipe.scheduler is not sched:
            raise InvalidInputError(
                "callback_on_step_end: the pipeline's scheduler is not the TransitionScheduler "
                "this callback was made for; make the callback after setting pipe.scheduler"
            )
        out: dict[str, Any] = {}
        b = sched.boundary()
        if b is not None and self._fk is not None and self._state is not None:
            if b.step != self._state.step + 1:
                raise InvalidInputError(
                    f"callback_on_step_end: transition boundary {b.step} reached at FK step "
                    f"{self._state.step}; one callback serves one pipeline call at a time"
                )
            idx = self._fk.advance(self._state, b.x, b.denoised)
            if idx is not None:
                out["latents"] = sched.resample(idx)
        if sched.finished:
            out.update(self._finish())
        return out

    def _finish(self) -> dict[str, Any]:
        sched = self.scheduler
        x = sched.final
        assert x is not None
        out: dict[str, Any] = {}
        nfe = sum(len(e) for e in sched.evaluations[-(len(sched.run_grid) - 1) :])
        if self._fk is not None and self._state is not None:
            idx = self._fk.advance(self._state, x, None)
            if idx is not None:
                out["latents"] = sched.resample(idx)
            res = self._fk.result(self._state)
            n_rows = x.shape[0]
            self.result = replace(res, nfe=nfe, total_nfe=nfe * n_rows)
            return out
        with torch.no_grad():
            r = check_rewards(self._scored(x), x.shape[0])
        self.result = self._best_of_n(x, r, nfe)
        return out

    def _best_of_n(self, x: torch.Tensor, rewards: torch.Tensor, nfe: int) -> BestOfNResult:
        n = self.num_particles
        num_b = x.shape[0] // n
        samples = x.reshape(num_b, n, *x.shape[1:])
        r = rewards.reshape(num_b, n)
        best = r.argmax(dim=1)
        rows = torch.arange(num_b, device=best.device)
        return BestOfNResult(
            samples=samples,
            rewards=r,
            log_weights=uniform_log_weights(r),
            ancestors=None,
            nfe=nfe,
            total_nfe=nfe * num_b * n,
            model_time=math.nan,
            reward_time=math.nan,
            wall_time=time.perf_counter() - self._wall_start,
            best_sample=samples[rows, best],
            best_reward=r[rows, best],
            best_index=best,
        )


def steering_callback(
    pipe: Any,
    *,
    reward: Any,
    method: str = "fk",
    num_particles: int,
    lambda_: float = 1.0,
    potential: str = "diff",
    reward_on: str = "auto",
    reward_prompts: str | Sequence[str] | None = None,
    resampling: str = "systematic",
    ess_threshold: float | None = None,
    resample_every: int | None = None,
    resample_window: tuple[float, float] | None = None,
    final_resample: bool = False,
    track_genealogy: bool = True,
    max_batch: int | None = None,
) -> SteeringCallback:
    """Make a callback that runs FK steering or best-of-N inside a pipeline call.

    Use it as ``pipe(..., num_images_per_prompt=num_particles, callback_on_step_end=cb,
    callback_on_step_end_tensor_inputs=cb.tensor_inputs)``.

    Parameters
    ----------
    pipe : diffusers flow pipeline
        Its ``scheduler`` must be a ``TransitionScheduler``.
    reward : callable
        A reward on latents ``z -> [M]`` (model layout: unpacked for FLUX with ``flux_layout``)
        or an image reward (``glass_core.rewards``; decoded through glass_core's adapter decode,
        FLUX and SD3 only).
    method : {"fk", "best_of_n"}
        FK steering, or best-of-N (pick the highest-reward row per prompt at the end).
    num_particles : int
        N, the pipeline's ``num_images_per_prompt``; FK resamples within each prompt's N rows.
    lambda_, potential, resampling, ess_threshold, resample_every, resample_window,
    final_resample, track_genealogy
        As ``glass_core.align.fk_steering`` (potential "lookahead" needs the adapter route).
    reward_on : {"auto", "latents", "images"}
        What the reward scores: model-layout latents, or decoded images.
    reward_prompts : str or list of str, optional
        The text an image reward compares against, one per prompt.
    max_batch : int, optional
        Images per VAE decode / reward call.

    Returns
    -------
    SteeringCallback
        ``cb.result`` after the pipeline call.

    Raises
    ------
    InvalidInputError
        `method` not in ("fk", "best_of_n"), ``pipe.scheduler`` is not a
        ``TransitionScheduler``, potential "lookahead", a non-callable `reward`, a
        non-positive `num_particles` or `max_batch`, or (method "fk") FK options that
        ``FKConfig`` rejects. A wrong row count (rows not a multiple of `num_particles`) is
        raised at the pipeline's first step.
    """
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(getattr(pipe, "scheduler", None), TransitionScheduler):
        raise InvalidInputError(
            "pipe: its scheduler must be a glass_core.diffusers.TransitionScheduler "
            "(pipe.scheduler = TransitionScheduler.wrap(pipe.scheduler, transition=...)), got "
            f"{type(getattr(pipe, 'scheduler', None)).__name__}"
        )
    if as_potential(potential).name == "lookahead":
        raise InvalidInputError(
            "potential='lookahead' evaluates J x N rows at once, which a pipeline's own loop "
            "cannot; use glass_core.steer"
        )
    if not callable(reward):
        raise InvalidInputError(f"reward must be callable, got {type(reward).__name__}")
    n = positive_int(num_particles, "num_particles")
    fk = {
        "potential": potential,
        "lambda_": lambda_,
        "resampling": resampling,
        "ess_threshold": ess_threshold,
        "resample_every": resample_every,
        "resample_window": resample_window,
        "final_resample": final_resample,
    }
    if method == "fk":  # check now, not at the pipeline's first step
        grid = SamplingConfig(n, n, [0.0, 1.0], (1,), None, 1, True)
        FKConfig.from_sampling(grid, **fk)
    return SteeringCallback(
        pipe,
        reward,
        method,
        n,
        fk=fk,
        reward_on=reward_on,
        reward_prompts=reward_prompts,
        track_genealogy=bool(track_genealogy),
        max_batch=optional_positive_int(max_batch, "max_batch"),
    )
