"""``glass_core.steer``: reward-steered sampling from a diffusers pipeline in one call (this module
is ``glass_core.steering``; ``glass_core.steer`` is the function).

Orchestration only: wraps the pipeline's own components (``glass_core.models.diffusers``:
``from_pipeline`` for text-conditioned FLUX/SD3/SD/SDXL pipelines, ``unconditional`` for
``UNet2DModel`` pipelines such as the embedded default model), picks the pipeline's own step grid,
turns an image reward into a reward on latents (``glass_core.rewards.adapters.reward_on_latents``,
decoding through the VAE once per scored batch), and runs one of the alignment algorithms
(``glass_core.align``) or plain sampling, optionally with the particles sharded over
torch.distributed ranks (``process_group``). Rows are group-major: B prompts x N particles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from glass_core._checks import positive_int, steer_arguments
from glass_core.align.results import SamplingResult
from glass_core.errors import InvalidInputError
from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel, is_unconditional
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

METHODS = ("fk", "best_of_n", "guidance", "sample")
SHARDED_METHODS = ("fk", "best_of_n")  # the methods that accept process_group
OUTPUT_TYPES = ("pil", "pt", "np", "latent")

StepCallback = Callable[[int, float, float, torch.Tensor], Any]
#: network evaluations per particle when neither time_grid nor num_transitions is given, whatever
#: the transition (so GLASS, ODE and SDE runs cost the same by default)
DEFAULT_NFE = 50


def default_num_transitions(transition: Any) -> int:
    """Transitions that spend ``DEFAULT_NFE`` evaluations per particle with ``transition``
    (e.g. 5 for ``Glass(inner_steps=10)``, 50 for ``ODE()`` / ``SDE()``)."""
    return max(1, DEFAULT_NFE // int(getattr(transition, "nfe_per_call", 1)))


@dataclass(frozen=True, kw_only=True)
class SteerResult(SamplingResult):
    """Output of :func:`steer`. Per-particle fields are group-major (row = b * N + i).

    images: list of B*N PIL images ("pil"), a float tensor [B*N, 3, H, W] in [0, 1] ("pt"), an
        ndarray [B*N, H, W, 3] ("np"), or the latents ("latent").
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
        """The highest-reward image of each group (list of B; latents for output "latent")."""
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


def _check_unconditional_args(pipe: Any, **given: Any) -> None:
    """Conditioning arguments make no sense for an unconditional pipeline: name the ones given."""
    bad = [k for k, v in given.items() if v is not None and not (k == "true_cfg_scale" and v == 1)]
    if bad:
        raise InvalidInputError(
            f"{', '.join(bad)}: {type(pipe).__name__} is an unconditional UNet2DModel pipeline "
            f"(no text conditioning); pass prompt=None and no prompt/embedding/guidance/size "
            f"arguments"
        )


def _format_images(
    model: Any, latents: torch.Tensor, images: torch.Tensor | None, output_type: str
) -> Any:
    if output_type == "latent":
        return latents
    assert images is not None
    if output_type == "pt":
        return images
    if output_type == "np":
        return images.detach().permute(0, 2, 3, 1).cpu().float().numpy()
    return model.to_pil(images)


def _image_latents(model: Any, image: Any, num_b: int, max_batch: int | None) -> torch.Tensor:
    """The encoded image(s) as [B, *latent_shape]: one image for every group or one per group."""
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
    """SDEdit start: (the grid from t0 = 1 - strength on, x_t0 [B, N, ...]) with
    x_t0 = alpha_t0 z + sigma_t0 eps for each of N particles per encoded image z ([B, ...]),
    eps drawn from `generator` (a list: one generator per group). The grid keeps the times
    after t0. strength 0 gives t0 = 1 and x_t0 = z exactly; strength 1 starts from pure noise."""
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
    true_cfg_scale: float = 1.0,
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
    **algorithm_kwargs: Any,
) -> SteerResult:
    """Sample from ``pipe`` steered toward ``reward`` (docs/math.md §6).

    Args:
        pipe: FLUX, SD3, SD 1.x/2.x or SDXL diffusers pipeline (components are wrapped, its
            ``__call__`` is not used), or an unconditional ``UNet2DModel`` pipeline (e.g. a
            ``DDPMPipeline``, or ``glass_core.digits.assets.load_pipeline()``, the embedded
            default model) through ``glass_core.models.diffusers.unconditional``:
            then ``prompt`` must be None (no conditioning arguments), the latents are the samples
            in [-1, 1], images are ``latents / 2 + 0.5``, the grid is uniform in t (flow matching,
            ``shifted_grid`` with a static shift) or the scheduler's timesteps (DDPM-like), and
            a list of B generators gives B groups.
        prompt: a prompt or list of B prompts (B groups x ``num_particles``); or ``prompt_embeds``
            (+ ``pooled_prompt_embeds`` for FLUX/SD3/SDXL, negatives optional).
        reward: an image reward (``glass_core.rewards.*`` adapters, ``image_reward(fn)``; scored on
            the VAE decode of the denoised estimate, decoded once per scored batch) or a reward on
            latents (any callable ``z -> [M]``, or ``latent_reward(fn)``). ``reward_on`` overrides
            the detection ("images" | "latents").
        method: "fk" (Feynman-Kac steering; ``lambda_``, ``potential`` and further keyword
            arguments of ``glass_core.align.fk_steering``), "best_of_n", "guidance" (reward guidance
            with ``reward_scale`` inside ``reward_window``, needs a differentiable reward), or
            "sample" (no reward needed). ``guide=True`` adds the same reward guidance inside
            "fk" / "best_of_n" (the paper's FKS-GLASS+grad; FK weights then do not correct for
            the guidance).
        transition: ``glass_core.transitions.Glass(...)`` (default ``Glass()``), ``SDE(...)`` or
            ``ODE(...)``.
        time_grid / num_transitions: an explicit grid from 0 to 1, or the number of transitions on
            the pipeline's own (shifted) step grid; default ``default_num_transitions(transition)``
            (``DEFAULT_NFE`` = 50 evaluations per particle for every transition).
        generator: a torch.Generator, or a list of B generators (one per prompt group).
        output_type: "pil" | "pt" | "np" | "latent".
        max_batch: network rows per forward pass (CFG rows included) and images per VAE decode /
            reward call; None = all particles at once.
        callback: ``callback(step, t, t_next, latents)`` after every transition (observe only).
        reward_prompts: the text an image reward compares against, one per group (default: the
            prompts; required for prompt-based rewards when only ``prompt_embeds`` are given).
        process_group: shard the particles of method "fk" / "best_of_n" over torch.distributed
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
        image / strength: edit an existing image (SDEdit with any method and transition): the
            image (one, or one per prompt group; PIL, list, ndarray or a tensor in [0, 1]) is
            encoded with the pipeline's VAE (the mean of its latent distribution; the
            unconditional model's samples are the pixels in [-1, 1]), noised to t0 = 1 - strength
            along the model's schedule with ``generator``, and steered from there over the
            grid's times after t0. The target is then p(x1 | x_t0) tilted by the reward.
            strength 0 returns the image's latents unchanged; 1 ignores the image.
    """
    from glass_core.align import best_of_n, fk_steering, guided, reward_guidance
    from glass_core.models.diffusers import default_time_grid, from_pipeline
    from glass_core.rewards.base import check_rewards
    from glass_core.transitions import Glass, sample

    wall_start = time.perf_counter()
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
    if method != "fk" and algorithm_kwargs:
        raise InvalidInputError(
            f"unexpected keyword arguments for method={method!r}: {sorted(algorithm_kwargs)}"
        )
    if process_group is not None:
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
    transition = Glass() if transition is None else transition
    if not callable(transition):
        raise InvalidInputError(f"transition must be a transition object, got {transition!r}")

    model: Any
    conditioning: dict[str, Any] = {
        "negative_prompt": negative_prompt,
        "prompt_embeds": prompt_embeds,
        "pooled_prompt_embeds": pooled_prompt_embeds,
        "negative_prompt_embeds": negative_prompt_embeds,
        "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds,
        "guidance_scale": guidance_scale,
        "true_cfg_scale": true_cfg_scale,
        "height": height,
        "width": width,
        "encode_kwargs": encode_kwargs,
    }
    if is_unconditional(pipe):
        _check_unconditional_args(pipe, prompt=prompt, **conditioning)
        groups = len(generator) if isinstance(generator, list | tuple) else 1
        model = UnconditionalPipelineModel(pipe, max(1, groups), max_batch)
        prompts = None
    else:
        model = from_pipeline(pipe, prompt, max_batch=max_batch, **conditioning)
        prompts = model.conditioning.prompts
    num_b = model.num_groups
    if isinstance(generator, list | tuple) and len(generator) != num_b:
        raise InvalidInputError(
            f"generator: a list must hold one torch.Generator per prompt ({num_b}), "
            f"got {len(generator)}"
        )
    if time_grid is None:
        k = default_num_transitions(transition) if num_transitions is None else num_transitions
        k = positive_int(k, "num_transitions")
        if isinstance(model, UnconditionalPipelineModel):
            grid = model.time_grid(k)
        else:
            grid = default_time_grid(model, k)
    else:
        grid = np.asarray(time_grid, dtype=np.float64)
    wrapped = reward_on_latents(reward, model, reward_on, max_batch, reward_prompts, prompts)
    shape = model.latent_shape
    x0: torch.Tensor | None = None
    if image is not None:
        z_image = _image_latents(model, image, num_b, max_batch)
        grid, x0 = image_start(model.schedule, z_image, strength, grid, n, generator)

    bar = None
    if progress and method == "sample":
        from glass_core._progress import progress_bar

        bar = progress_bar(len(grid) - 1, True, "sampling")
    observed = _ObservedTransition(transition, callback, bar)
    common: dict[str, Any] = {
        "time_grid": grid,
        "shape": shape,
        "generator": generator,
        "device": model.device,
        "dtype": torch.float32,
    }
    if not isinstance(generator, list | tuple):
        common["num_groups"] = num_b
    if x0 is not None:
        common["x0"] = x0
    # what every alignment algorithm takes; fk and best_of_n may propose from the guided model
    aligned = {**common, "transition": observed, "num_particles": n, "progress": progress}
    proposal = guided(model, wrapped, reward_scale, reward_window) if guide else model
    genealogy = log_evidence = ess = None
    log_w = torch.full((num_b, n), -float(np.log(n)), dtype=torch.float64)
    rewards: torch.Tensor | None = None
    raw: Any
    try:
        if len(grid) == 1:  # strength 0: nothing to sample, the image's latents as they are
            assert x0 is not None
            raw, latents = None, x0
            if wrapped is not None:
                with torch.no_grad():
                    rewards = check_rewards(wrapped(x0.reshape(-1, *shape)), num_b * n)
        elif method == "fk":
            raw = fk_steering(
                proposal,
                wrapped,
                potential=potential,
                lambda_=lambda_,
                process_group=process_group,
                **aligned,
                **algorithm_kwargs,
            )
            latents, rewards = raw.samples, raw.rewards
            log_w = raw.log_weights
            genealogy, log_evidence, ess = raw.ancestors, raw.log_evidence, raw.ess_history
        elif method == "best_of_n":
            raw = best_of_n(proposal, wrapped, process_group=process_group, **aligned)
            latents, rewards = raw.samples, raw.rewards
        elif method == "guidance":
            raw = reward_guidance(
                model, wrapped, scale=reward_scale, window=reward_window, **aligned
            )
            latents, rewards = raw.samples, raw.rewards
        else:
            gen = list(generator) if isinstance(generator, list | tuple) else generator
            # with one generator per prompt, x0 goes in grouped as [num_b, n, ...]
            start = (
                None
                if x0 is None
                else x0.reshape(num_b, n, *shape)
                if isinstance(gen, list)
                else x0.reshape(num_b * n, *shape)
            )
            with torch.no_grad():
                raw = sample(
                    model,
                    cast(Any, observed),
                    grid,
                    x0=start,
                    shape=None if x0 is not None else (num_b * n, *shape),
                    generator=gen,
                    device=model.device,
                    dtype=torch.float32,
                )
                latents = raw.samples.reshape(num_b * n, *shape)
                if wrapped is not None:
                    rewards = check_rewards(wrapped(latents), num_b * n)
    finally:
        if bar is not None:
            bar.close()

    latents = latents.reshape(num_b * n, *shape)
    if rewards is not None:
        rewards = rewards.reshape(num_b, n)
    if log_w.ndim == 1:
        log_w = log_w.reshape(num_b, n)
    if genealogy is not None and genealogy.ndim == 2:
        genealogy = genealogy[:, None, :]
    log_evidence = None if log_evidence is None else np.asarray(log_evidence).reshape(num_b)
    if ess is not None and np.ndim(ess) == 1:
        ess = np.asarray(ess)[:, None]

    decode_start = time.perf_counter()
    images = None
    decoded_here = False
    if output_type != "latent":
        with torch.no_grad():
            if hasattr(wrapped, "images_for"):
                images = wrapped.images_for(latents)  # reuses the final reward's decode
            else:
                images = model.decode(latents, max_batch=max_batch)
                decoded_here = True
    decode_time = time.perf_counter() - decode_start
    out_images = _format_images(model, latents, images, output_type)

    wall = time.perf_counter() - wall_start
    reward_time = decode_time + float(getattr(wrapped, "seconds", 0.0))
    # the algorithm's count per particle where one ran (FK's includes the lookahead's calls), the
    # adapter's for plain sampling (which count is which: docs/math.md §3.3)
    nfe = int(model.num_evaluations) if raw is None or method == "sample" else int(raw.nfe)
    passes = nfe * model.passes_per_eval
    return SteerResult(
        images=out_images,
        samples=latents,
        rewards=rewards,
        log_weights=log_w,
        ancestors=genealogy,
        log_evidence=log_evidence,
        ess_history=ess,
        best_index=None if rewards is None else rewards.argmax(dim=1),
        nfe=nfe,
        total_nfe=nfe * num_b * n,
        forward_passes=passes,
        total_forward_passes=model.num_forward_rows,
        wall_time=wall,
        model_time=model.model_time,
        reward_time=reward_time,
        bookkeeping_time=max(0.0, wall - model.model_time - reward_time),
        num_groups=num_b,
        num_particles=n,
        method=method,
        time_grid=np.asarray(grid, dtype=np.float64),
        prompts=prompts,
        num_decodes=int(getattr(wrapped, "num_decodes", 0)) + (1 if decoded_here else 0),
        raw=raw,
    )
