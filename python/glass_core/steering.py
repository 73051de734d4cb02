"""``glass_core.steer``.

Reward-steered sampling from a diffusers pipeline in one call (this module is
``glass_core.steering``; ``glass_core.steer`` is the function).

Orchestration only, in named steps over one interface: check the arguments, wrap the pipeline
as a ``PipelineModel`` (``glass_core.models.diffusers.pipeline_model.wrap_pipeline``: the family
adapter, or the unconditional one; docs/families.md), prepare the run (the pipeline's own step
grid, an SDEdit start, the reward on latents via ``glass_core.rewards.adapters.reward_on_latents``,
decoding once per scored batch), run one of the alignment algorithms (``glass_core.align``) or
plain sampling, optionally with the particles sharded over torch.distributed ranks
(``process_group``), and produce the outputs with the counts and times of the model's meter
(``glass_core.meter.Meter``). Rows are group-major: B prompts x N particles.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from glass_core._checks import invalid, positive_int, steer_arguments
from glass_core.align.results import FKResult, SamplingResult
from glass_core.errors import InvalidInputError
from glass_core.models.diffusers.unconditional import is_unconditional
from glass_core.rewards.adapters import reward_on_latents

__all__ = [
    "DEFAULT_NFE",
    "METHODS",
    "OUTPUT_TYPES",
    "SHARDED_METHODS",
    "SteerResult",
    "default_num_transitions",
    "is_unconditional",
    "steer",
]

METHODS = (
    "fk", "best_of_n", "guidance", "sample", "tempered", "twisted", "value_decoding", "beam_search"
)  # fmt: skip
#: the methods that take further keyword arguments of their glass_core.align function
KWARG_METHODS = ("fk", "tempered", "twisted", "value_decoding", "beam_search")
SHARDED_METHODS = ("fk", "best_of_n")  # the methods that accept process_group
OUTPUT_TYPES = ("pil", "pt", "np", "latent")

StepCallback = Callable[[int, float, float, torch.Tensor], Any]
#: network evaluations per particle when neither time_grid nor num_transitions is given, whatever
#: the transition (so GLASS, ODE and SDE runs cost the same by default)
DEFAULT_NFE = 50


def default_num_transitions(transition: Any) -> int:
    """Return the transitions that spend ``DEFAULT_NFE`` evaluations per particle.

    E.g. 5 for ``Glass(inner_steps=10)``, 50 for ``ODE()`` / ``SDE()``.

    Parameters
    ----------
    transition : Transition
        The transition (its ``nfe_per_call``).

    Returns
    -------
    int
        The number of transitions (at least 1).
    """
    return max(1, DEFAULT_NFE // int(getattr(transition, "nfe_per_call", 1)))


@dataclass(frozen=True, kw_only=True)
class SteerResult(SamplingResult):
    """Output of :func:`steer`. Per-particle fields are group-major (row = b * N + i).

    images: list of B*N PIL images ("pil"), a float tensor [B*N, 3, H, W] in [0, 1] ("pt"), an
        ndarray [B*N, H, W, 3] ("np"), or the latents ("latent"); videos (Wan): B*N lists of PIL
        frames, [B*N, F, 3, H, W], or [B*N, F, H, W, 3].
    samples: final particles [B*N, *latent_shape] (network-space latents, unpacked for FLUX).
    rewards: [B, N] final reward per particle (None for method="sample" without reward).
    log_weights: [B, N] normalised log-weights (uniform -log N except for "fk").
    ancestors: [S, B, N] ancestor indices per resampling step ("fk" with tracking), else None.
    best_index: [B] index (within the group) of the highest-reward particle (None without reward).
    num_decodes: VAE decode calls (scored batches + the output decode when it was not reused).
    nfe: denoiser evaluations per particle; total_nfe: over all B*N particles; forward_passes:
        network passes per particle (x2 with CFG); total_forward_passes: over all B*N particles.
    wall_time = model_time (network forward passes, device-synchronised) + reward_time (VAE
        decodes and reward models, including the output decode) + bookkeeping_time (everything
        else: transitions' arithmetic, weights, resampling, host syncs, and the backward pass
        of reward guidance through the VAE and reward model).
    """

    rewards: torch.Tensor | None  # type: ignore[assignment]
    images: Any
    log_evidence: np.ndarray | None
    ess_history: np.ndarray | None
    best_index: torch.Tensor | None
    forward_passes: int
    total_forward_passes: int
    bookkeeping_time: float
    num_groups: int
    num_particles: int
    method: str
    time_grid: np.ndarray
    prompts: list[str] | None
    num_decodes: int = 0
    raw: Any = field(default=None, repr=False)

    def best(self) -> list[Any]:  # type: ignore[override]
        """Return the highest-reward image of each group.

        A list of B (latents for output "latent").
        """
        if self.best_index is None:
            raise InvalidInputError("best() needs rewards (method='sample' without reward)")
        n = self.num_particles
        return [self.images[b * n + int(i)] for b, i in enumerate(self.best_index.tolist())]


class _ObservedTransition:
    """Forwards to a transition and calls `callback(step, t, t_next, x_next)` after each call."""

    def __init__(self, transition: Any, callback: StepCallback | None, bar: Any) -> None:
        self._transition = transition
        self._callback = callback
        self._bar = bar
        self.step = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transition, name)

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = self._transition(model, x, t, t_next, generator, **kwargs)
        if self._callback is not None:
            self._callback(self.step, float(t), float(t_next), out)
        if self._bar is not None:
            self._bar.update(1)
        self.step += 1
        return out


def _image_latents(model: Any, image: Any, num_b: int, max_batch: int | None) -> torch.Tensor:
    """Return the encoded image(s) as [B, *latent_shape].

    One image for every group or one per group.
    """
    try:
        z = model.encode(image, max_batch=max_batch)
    except InvalidInputError:
        raise
    except Exception as e:  # the image processor's own errors (type, size, mode)
        raise InvalidInputError(f"image: could not be read as an image batch: {e}") from e
    if tuple(z.shape[1:]) != tuple(model.latent_shape) or z.shape[0] not in (1, num_b):
        raise InvalidInputError(
            f"image: expected 1 or {num_b} image(s) (one per prompt group) encoding to latents "
            f"{tuple(model.latent_shape)}, got latents {tuple(z.shape)}"
        )
    return z.expand(num_b, *z.shape[1:])


def image_start(
    schedule: Any,
    latents: torch.Tensor,
    strength: Any,
    grid: np.ndarray,
    num_particles: int,
    generator: Any,
) -> tuple[np.ndarray, torch.Tensor]:
    """SDEdit start.

    (the grid from t0 = 1 - strength on, x_t0 [B, N, ...]) with x_t0 = alpha_t0 z + sigma_t0 eps for
    each of N particles per encoded image z ([B, ...]), eps drawn from `generator` (a list: one
    generator per group). The grid keeps the times after t0. strength 0 gives t0 = 1 and x_t0 = z
    exactly; strength 1 starts from pure noise.

    Parameters
    ----------
    schedule : Schedule
        The model's noise schedule.
    latents : torch.Tensor
        Encoded images [B, ...].
    strength : float
        In [0, 1].
    grid : ndarray
        The full time grid.
    num_particles : int
        N.
    generator : torch.Generator or list
        The noise's generator(s).

    Returns
    -------
    tuple
        (grid from t0, x_t0).

    Raises
    ------
    InvalidInputError
        A bad ``strength``.
    """
    from glass_core import _random

    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise InvalidInputError(f"strength must be a float in [0, 1], got {strength!r}") from None
    if not 0.0 <= s <= 1.0:
        raise InvalidInputError(f"strength must be a float in [0, 1], got {strength!r}")
    t0 = 1.0 - s
    num_b = latents.shape[0]
    z = latents.unsqueeze(1).expand(num_b, num_particles, *latents.shape[1:])
    start = np.concatenate([[t0], grid[grid > t0]])
    if t0 >= 1.0:
        return start, z.contiguous().clone()
    flat = (num_b * num_particles, *latents.shape[1:])
    gen = list(generator) if isinstance(generator, list | tuple) else generator
    eps = _random.randn(flat, gen, device=latents.device, dtype=latents.dtype).reshape(z.shape)
    # contiguous: the VAE may hand back channels-last latents, and the network's kernels (hence
    # rounding) depend on the memory format
    x0 = float(schedule.alpha(t0)) * z + float(schedule.sigma(t0)) * eps
    return start, x0.contiguous()


def steer(
    pipe: Any,
    prompt: str | Sequence[str] | None = None,
    *,
    reward: Any = None,
    method: str = "fk",
    transition: Any = None,
    num_particles: int = 4,
    time_grid: Sequence[float] | np.ndarray | None = None,
    num_transitions: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    output_type: str = "pil",
    max_batch: int | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
    reward_on: str = "auto",
    reward_prompts: str | Sequence[str] | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    prompt_embeds: torch.Tensor | None = None,
    pooled_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_pooled_prompt_embeds: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    true_cfg_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    encode_kwargs: Mapping[str, Any] | None = None,
    lambda_: float = 1.0,
    potential: str = "diff",
    reward_scale: float = 0.4,
    reward_window: tuple[float, float] | None = (0.2, 0.7),
    guide: bool = False,
    process_group: Any = None,
    image: Any = None,
    strength: float | None = None,
    compile: bool | None = None,
    **algorithm_kwargs: Any,
) -> SteerResult:
    """Sample from ``pipe`` steered toward ``reward`` (docs/math.md §6).

    Parameters
    ----------
    pipe
        a FLUX.1, SD3, SD 1.x/2.x, SDXL, FLUX.2 ([dev], [klein]), Qwen-Image, SANA or Wan
        2.x text-to-video diffusers pipeline (docs/families.md; components are wrapped through
        one ``PipelineModel`` interface, its ``__call__`` is not used; the same seed draws
        the same initial noise as the pipeline), or an unconditional ``UNet2DModel`` pipeline
        (e.g. a
        ``DDPMPipeline``, or ``glass_core.digits.assets.load_pipeline()``, the embedded
        default model) through ``glass_core.models.diffusers.unconditional``:
        then ``prompt`` must be None (no conditioning arguments), the latents are the samples
        in [-1, 1], images are ``latents / 2 + 0.5``, the grid is uniform in t (flow matching,
        ``shifted_grid`` with a static shift) or the scheduler's timesteps (DDPM-like), and
        a list of B generators gives B groups.
    prompt
        a prompt or list of B prompts (B groups x ``num_particles``); or ``prompt_embeds``
        (+ ``pooled_prompt_embeds`` for FLUX/SD3/SDXL, negatives optional).
    reward
        an image reward (``glass_core.rewards.*`` adapters, ``image_reward(fn)``; scored on
        the VAE decode of the denoised estimate, decoded once per scored batch) or a reward on
        latents (any callable ``z -> [M]``, or ``latent_reward(fn)``). ``reward_on`` overrides
        the detection ("images" | "latents").
    method
        "fk" (Feynman-Kac steering; ``lambda_``, ``potential`` and further keyword
        arguments of ``glass_core.align.fk_steering``), "best_of_n", "guidance" (reward guidance
        with ``reward_scale`` inside ``reward_window``, needs a differentiable reward), or
        "sample" (no reward needed). ``guide=True`` adds the same reward guidance inside
        "fk" / "best_of_n" (the paper's FKS-GLASS+grad; FK weights then do not correct for
        the guidance). "tempered" (``glass_core.align.tempered_smc``), "twisted"
        (``fk_steering(..., proposal="twisted")``: SDE transitions; ``callback`` is not
        called, its proposal does not call the transition), "value_decoding" and
        "beam_search" (``num_particles`` chains / beams; ``callback`` sees the candidate
        batches) take their function's further keyword arguments (docs/search.md).
    transition
        ``glass_core.transitions.Glass(...)`` (default ``Glass()``), ``SDE(...)`` or
        ``ODE(...)``.
    compile
        None keeps the transition's own setting; True/False runs a ``Glass``
        transition (the default one included) with ``Glass(compile=...)``, its inner loop
        as one ``torch.compile`` graph (docs/gpu.md). The given ``Glass`` is not modified (a
        copy with the same parameters is used); ``compile=True`` with another transition
        raises ``InvalidInputError``.
    time_grid, num_transitions
        an explicit grid from 0 to 1, or the number of transitions on
        the pipeline's own (shifted) step grid; default ``default_num_transitions(transition)``
        (``DEFAULT_NFE`` = 50 evaluations per particle for every transition).
    generator
        a torch.Generator, or a list of B generators (one per prompt group).
    output_type
        "pil" | "pt" | "np" | "latent".
    max_batch
        network rows per forward pass (CFG rows included) and images per VAE decode /
        reward call; None = all particles at once.
    callback
        ``callback(step, t, t_next, latents)`` after every transition (observe only).
    reward_prompts
        the text an image reward compares against, one per group (default: the
        prompts; required for prompt-based rewards when only ``prompt_embeds`` are given).
    process_group
        shard the particles of method "fk" / "best_of_n" over torch.distributed
        ranks (a ``ProcessGroup``, e.g. from ``glass_core.align.distributed.init()``, or a
        ``glass_core.align.distributed.Sharding`` with ``gather=True``); passed to
        ``fk_steering`` / ``best_of_n``. Every rank must make the same call with an
        identically seeded generator; ``num_particles`` must be a multiple of the world size.
        Every rank gets the full result (all particles, rewards, weights, genealogy: the same
        as one process with the same seed, to rounding), and decodes all output images unless
        ``output_type="latent"`` (decode on one rank to save the work). ``nfe`` is per
        particle as usual; ``model_time``, ``total_forward_passes`` and ``callback`` (which
        sees the rank's own particles) are this rank's. Not available for "guidance" and
        "sample" (not sharded).
    **algorithm_kwargs
        the pipeline family's own call options under the pipeline's names
        and defaults (``num_frames`` for Wan, ``max_sequence_length``,
        ``use_resolution_binning`` for SANA, ...: docs/families.md), then further keyword
        arguments of ``fk_steering`` (method "fk").
    image, strength
        edit an existing image (SDEdit with any method and transition): the
        image (one, or one per prompt group; PIL, list, ndarray or a tensor in [0, 1]) is
        encoded with the pipeline's VAE (the mean of its latent distribution; the
        unconditional model's samples are the pixels in [-1, 1]), noised to t0 = 1 - strength
        along the model's schedule with ``generator``, and steered from there over the
        grid's times after t0. The target is then p(x1 | x_t0) tilted by the reward.
        strength 0 returns the image's latents unchanged; 1 ignores the image.
    negative_prompt, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds
        As in ``glass_core.models.diffusers.from_pipeline``.
    negative_pooled_prompt_embeds, guidance_scale, true_cfg_scale, height, width, encode_kwargs
        As in ``glass_core.models.diffusers.from_pipeline``.
    num_particles
        Particles per prompt group (N).
    progress
        Show a progress bar.
    lambda_, potential
        FK steering's reward temperature and potential (``glass_core.align.fk_steering``).
    reward_scale, reward_window, guide
        Reward guidance: its scale, the window of t it acts in, and whether "fk" /
        "best_of_n" add it (see ``method``).

    Returns
    -------
    SteerResult
        The images (``output_type``), latents, rewards, weights, genealogy and the run's
        counts and times.

    Raises
    ------
    InvalidInputError
        A bad argument (naming it), or a reward returning bad values.
    UnsupportedModelError
        ``pipe`` is not a supported family (the message lists them).
    """
    wall_start = time.perf_counter()
    transition, num_particles = _check_arguments(
        method, output_type, num_particles, reward, time_grid, num_transitions, guide,
        process_group, transition, compile, algorithm_kwargs,
        lambda_=lambda_, reward_scale=reward_scale, image=image, strength=strength,
    )  # fmt: skip
    model, algorithm_kwargs = _wrap_pipeline(
        pipe, prompt, generator, max_batch, algorithm_kwargs, method,
        negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled_prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
        guidance_scale=guidance_scale, true_cfg_scale=true_cfg_scale, height=height, width=width,
        encode_kwargs=encode_kwargs,
    )  # fmt: skip
    run = _prepare_run(
        model, transition, reward, reward_on, reward_prompts, max_batch, time_grid,
        num_transitions, num_particles, generator, image, strength, progress and method == "sample",
        callback,
    )  # fmt: skip
    params = {
        "method": method, "progress": progress, "lambda_": lambda_, "potential": potential,
        "reward_scale": reward_scale, "reward_window": reward_window, "guide": guide,
        "process_group": process_group, "algorithm_kwargs": algorithm_kwargs,
    }  # fmt: skip
    try:
        outcome = _run_algorithm(run, params)
    finally:
        if run.bar is not None:
            run.bar.close()
    return _produce_outputs(run, outcome, method, output_type, max_batch, wall_start)


def _check_arguments(
    method: str,
    output_type: str,
    num_particles: int,
    reward: Any,
    time_grid: Any,
    num_transitions: int | None,
    guide: bool,
    process_group: Any,
    transition: Any,
    compile: bool | None,
    algorithm_kwargs: Mapping[str, Any],
    *,
    lambda_: Any,
    reward_scale: Any,
    image: Any,
    strength: Any,
) -> tuple[Any, int]:
    """Step 1: the arguments' own rules (each named in its error).

    The pipeline-free ones are ``_checks.steer_arguments`` (the command line asks them before
    loading a pipeline). Returns the transition and the particle count.
    """
    from glass_core.transitions import Glass

    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if output_type not in OUTPUT_TYPES:
        raise InvalidInputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    n = steer_arguments(
        method=method,
        reward=reward,
        num_particles=num_particles,
        num_transitions=num_transitions,
        lambda_=lambda_,
        reward_scale=reward_scale,
        image=image,
        strength=strength,
    )
    if time_grid is not None and num_transitions is not None:
        raise InvalidInputError("pass either time_grid or num_transitions, not both")
    if guide and method not in ("fk", "best_of_n"):
        raise InvalidInputError(f"guide=True applies to method 'fk' or 'best_of_n', not {method!r}")
    if process_group is not None:
        _check_process_group(process_group, method)
    transition = Glass() if transition is None else transition
    if not callable(transition):
        raise InvalidInputError(f"transition must be a transition object, got {transition!r}")
    if method == "twisted":
        from glass_core.align.twisted import check_twistable

        check_twistable(transition)
    return (transition if compile is None else _with_compile(transition, compile)), n


def _with_compile(transition: Any, compile: Any) -> Any:
    """Return the transition with ``compile`` set.

    A new ``Glass`` with the given one's parameters.
    """
    from glass_core.transitions import Glass

    if not isinstance(compile, bool):
        raise invalid("compile", f"compile must be None, True or False, got {compile!r}")
    if not isinstance(transition, Glass):
        if compile is False:
            return transition  # nothing to turn off
        raise invalid(
            "compile",
            f"compile=True applies to a Glass transition (its inner loop), not {transition!r}",
        )
    return Glass(
        rho=transition.rho, inner_steps=transition.inner_steps, solver=transition.solver,
        sigma0=transition.sigma0, compile=compile,
    )  # fmt: skip


def _check_process_group(process_group: Any, method: str) -> None:
    from glass_core.align.distributed import Sharding

    if method not in SHARDED_METHODS:
        raise InvalidInputError(
            f"process_group: method={method!r} is not sharded across ranks; process_group "
            f"applies to method {' or '.join(map(repr, SHARDED_METHODS))} only"
        )
    if isinstance(process_group, Sharding) and not process_group.gather:
        raise InvalidInputError(
            "process_group: steer returns every particle on every rank, so it needs "
            "Sharding(gather=True); call glass_core.align.fk_steering / best_of_n directly "
            "for rank-local samples"
        )


def _method_function(method: str) -> Any:
    """Return the align function whose keyword arguments ``method`` takes through ``steer``."""
    from glass_core import align

    return {
        "tempered": align.tempered_smc,
        "value_decoding": align.value_decoding,
        "beam_search": align.beam_search,
    }.get(method, align.fk_steering)  # fk and twisted: fk_steering's


def _check_method_arguments(
    rest: Mapping[str, Any], method: str, pipe_name: str, names: Any
) -> None:
    """Refuse keywords that are neither the pipeline's call options nor the method's.

    The error's ``arg`` is the keyword when there is one (the command line names its flag).
    """
    fn = _method_function(method)
    unknown = sorted(set(rest) - set(inspect.signature(fn).parameters))
    if unknown:
        raise invalid(
            unknown[0] if len(unknown) == 1 else None,
            f"{', '.join(unknown)}: neither a call option of {pipe_name} that steer passes "
            f"through (it takes {', '.join(sorted(names)) or 'none'}) nor an argument of "
            f"{fn.__name__}",
        )


def _wrap_pipeline(
    pipe: Any,
    prompt: Any,
    generator: Any,
    max_batch: int | None,
    extra: dict[str, Any],
    method: str,
    **conditioning: Any,
) -> tuple[Any, dict[str, Any]]:
    """Wrap the pipeline (step 2).

    The pipeline as a ``PipelineModel``; the pipeline's own call options are taken out of the extra
    keyword arguments, the rest must be the algorithm's (FK's).
    """
    from glass_core.models.diffusers.pipeline_model import call_options, wrap_pipeline

    names = call_options(pipe)
    options = {k: v for k, v in extra.items() if k in names}
    rest = {k: v for k, v in extra.items() if k not in names}
    if method not in KWARG_METHODS and rest:
        raise InvalidInputError(
            f"unexpected keyword arguments for method={method!r}: {sorted(rest)}"
        )
    _check_method_arguments(rest, method, type(pipe).__name__, names)
    # timed: steer reports model and reward seconds (the meter syncs the device around them)
    model = wrap_pipeline(
        pipe,
        prompt,
        generator=generator,
        max_batch=max_batch,
        timed=True,
        **conditioning,
        **options,
    )
    num_b = model.num_groups
    if isinstance(generator, list | tuple) and len(generator) != num_b:
        raise InvalidInputError(
            f"generator: a list must hold one torch.Generator per prompt ({num_b}), "
            f"got {len(generator)}"
        )
    return model, rest


@dataclass
class _Run:
    """What the algorithm runs on.

    The wrapped pipeline, the reward on latents, the grid, the start, the observed transition and
    the sizes.
    """

    model: Any
    reward: Any
    grid: np.ndarray
    x0: torch.Tensor | None
    num_particles: int
    generator: Any
    transition: _ObservedTransition
    bar: Any

    @property
    def num_groups(self) -> int:
        return int(self.model.num_groups)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.model.latent_shape)

    @property
    def rows(self) -> int:
        return self.num_groups * self.num_particles


def _prepare_run(
    model: Any,
    transition: Any,
    reward: Any,
    reward_on: str,
    reward_prompts: Any,
    max_batch: int | None,
    time_grid: Any,
    num_transitions: int | None,
    num_particles: int,
    generator: Any,
    image: Any,
    strength: Any,
    show_bar: bool,
    callback: StepCallback | None,
) -> _Run:
    """Step 3: the proposal's grid and start (SDEdit from ``image``), and the reward on latents."""
    if time_grid is None:
        k = default_num_transitions(transition) if num_transitions is None else num_transitions
        grid = model.time_grid(positive_int(k, "num_transitions"))
    else:
        grid = np.asarray(time_grid, dtype=np.float64)
    wrapped = reward_on_latents(reward, model, reward_on, max_batch, reward_prompts, model.prompts)
    x0: torch.Tensor | None = None
    if image is not None:
        z_image = _image_latents(model, image, model.num_groups, max_batch)
        grid, x0 = image_start(model.schedule, z_image, strength, grid, num_particles, generator)
    bar = None
    if show_bar:
        from glass_core._progress import progress_bar

        bar = progress_bar(len(grid) - 1, True, "sampling")
    observed = _ObservedTransition(transition, callback, bar)
    return _Run(model, wrapped, grid, x0, num_particles, generator, observed, bar)


@dataclass
class _Outcome:
    """An algorithm's particles and diagnostics, group-major."""

    raw: Any
    latents: torch.Tensor
    rewards: torch.Tensor | None
    log_weights: torch.Tensor | None = None
    ancestors: Any = None
    log_evidence: Any = None
    ess: Any = None


def _aligned_kwargs(run: _Run, progress: bool) -> dict[str, Any]:
    """Return what every alignment algorithm takes."""
    kw: dict[str, Any] = {
        "time_grid": run.grid,
        "shape": run.shape,
        "generator": run.generator,
        "device": run.model.device,
        "dtype": torch.float32,
        "transition": run.transition,
        "num_particles": run.num_particles,
        "progress": progress,
    }
    if not isinstance(run.generator, list | tuple):
        kw["num_groups"] = run.num_groups
    if run.x0 is not None:
        kw["x0"] = run.x0
    return kw


def _run_algorithm(run: _Run, p: dict[str, Any]) -> _Outcome:
    """Step 4: the chosen method on the run (strength 0: the image's latents as they are)."""
    from glass_core.align import best_of_n, fk_steering, guided, reward_guidance, tempered_smc

    if len(run.grid) == 1:
        assert run.x0 is not None
        return _Outcome(None, run.x0, _score(run, run.x0))
    if p["method"] == "sample":
        return _run_sample(run)
    aligned = _aligned_kwargs(run, p["progress"])
    if p["method"] == "guidance":
        gr = reward_guidance(
            run.model, run.reward, scale=p["reward_scale"], window=p["reward_window"], **aligned
        )
        return _Outcome(gr, gr.samples, gr.rewards)
    proposal = run.model
    if p["guide"]:
        proposal = guided(run.model, run.reward, p["reward_scale"], p["reward_window"])
    if p["method"] == "best_of_n":
        bon = best_of_n(proposal, run.reward, process_group=p["process_group"], **aligned)
        return _Outcome(bon, bon.samples, bon.rewards)
    if p["method"] in ("value_decoding", "beam_search"):
        return _run_search(run, p, aligned)
    raw: FKResult
    if p["method"] == "tempered":
        raw = tempered_smc(
            proposal, run.reward, lambda_=p["lambda_"], **aligned, **p["algorithm_kwargs"]
        )
    else:
        raw = fk_steering(
            proposal,
            run.reward,
            potential=p["potential"],
            lambda_=p["lambda_"],
            process_group=p["process_group"],
            proposal="twisted" if p["method"] == "twisted" else "plain",
            **aligned,
            **p["algorithm_kwargs"],
        )
    return _Outcome(
        raw, raw.samples, raw.rewards, raw.log_weights, raw.ancestors, raw.log_evidence,
        raw.ess_history,
    )  # fmt: skip


def _run_search(run: _Run, p: dict[str, Any], aligned: dict[str, Any]) -> _Outcome:
    """value_decoding (num_particles chains) or beam_search (num_particles beams)."""
    from glass_core.align import beam_search, value_decoding

    if p["method"] == "beam_search":
        aligned = {("beam_width" if k == "num_particles" else k): v for k, v in aligned.items()}
        res = beam_search(run.model, run.reward, **aligned, **p["algorithm_kwargs"])
    else:
        res = value_decoding(run.model, run.reward, **aligned, **p["algorithm_kwargs"])
    return _Outcome(res, res.samples, res.rewards)


def _score(run: _Run, latents: torch.Tensor) -> torch.Tensor | None:
    from glass_core.rewards.base import check_rewards

    if run.reward is None:
        return None
    with torch.no_grad():
        return check_rewards(run.reward(latents.reshape(-1, *run.shape)), run.rows)


def _run_sample(run: _Run) -> _Outcome:
    """Plain sampling along the grid (one generator per group: x0 goes in grouped)."""
    from glass_core.transitions import sample

    gen = list(run.generator) if isinstance(run.generator, list | tuple) else run.generator
    start = None
    if run.x0 is not None:
        lead = (run.num_groups, run.num_particles) if isinstance(gen, list) else (run.rows,)
        start = run.x0.reshape(*lead, *run.shape)
    with torch.no_grad():
        raw = sample(
            run.model,
            cast(Any, run.transition),
            run.grid,
            x0=start,
            shape=None if start is not None else (run.rows, *run.shape),
            generator=gen,
            device=run.model.device,
            dtype=torch.float32,
        )
    latents = raw.samples.reshape(run.rows, *run.shape)
    return _Outcome(raw, latents, _score(run, latents))


def _produce_outputs(
    run: _Run,
    out: _Outcome,
    method: str,
    output_type: str,
    max_batch: int | None,
    wall_start: float,
) -> SteerResult:
    """Step 5: shapes per group, the output decode (reusing the final reward's), the counts."""
    b, n, model = run.num_groups, run.num_particles, run.model
    latents = out.latents.reshape(run.rows, *run.shape)
    rewards = None if out.rewards is None else out.rewards.reshape(b, n)
    log_w = out.log_weights
    log_w = torch.full((b, n), -float(np.log(n)), dtype=torch.float64) if log_w is None else log_w
    genealogy = out.ancestors
    if genealogy is not None and genealogy.ndim == 2:
        genealogy = genealogy[:, None, :]
    ess = out.ess if out.ess is None or np.ndim(out.ess) != 1 else np.asarray(out.ess)[:, None]
    images = None
    if output_type != "latent":
        with torch.no_grad():
            if hasattr(run.reward, "images_for"):
                images = run.reward.images_for(latents)  # reuses the final reward's decode
            else:
                images = model.meter.reward(lambda z: model.decode(z, max_batch=max_batch), latents)
    meter = model.meter
    wall = time.perf_counter() - wall_start
    # the algorithm's count per particle where one ran (FK's includes the lookahead's calls), the
    # adapter's for plain sampling (which count is which: docs/math.md §3.3)
    nfe = meter.evaluations if out.raw is None or method == "sample" else out.raw.nfe
    return SteerResult(
        images=latents if images is None else model.to_output(images, output_type),
        samples=latents,
        rewards=rewards,
        log_weights=log_w.reshape(b, n),
        ancestors=genealogy,
        log_evidence=None if out.log_evidence is None else np.asarray(out.log_evidence).reshape(b),
        ess_history=ess,
        best_index=None if rewards is None else rewards.argmax(dim=1),
        nfe=int(nfe),
        total_nfe=int(nfe) * run.rows,
        forward_passes=int(nfe) * model.passes_per_eval,
        total_forward_passes=meter.forward_rows,
        wall_time=wall,
        model_time=meter.model_seconds,
        reward_time=meter.reward_seconds,
        bookkeeping_time=max(0.0, wall - meter.model_seconds - meter.reward_seconds),
        num_groups=b,
        num_particles=n,
        method=method,
        time_grid=np.asarray(run.grid, dtype=np.float64),
        prompts=model.prompts,
        num_decodes=meter.decodes,
        raw=out.raw,
    )
