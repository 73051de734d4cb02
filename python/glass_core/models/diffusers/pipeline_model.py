"""The one interface ``glass_core.steer`` uses a diffusers pipeline through.

And the function that wraps a pipeline into it.

Every family implements :class:`PipelineModel` (the text-conditioned families through
``DiffusersDenoiser`` and their family module, unconditional ``UNet2DModel`` pipelines through
``UnconditionalPipelineModel``); ``steer`` never asks which kind of pipeline it holds.
docs/adding_a_family.md lists what a new family provides.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from glass_core.errors import InvalidInputError
from glass_core.meter import Meter
from glass_core.schedules import Schedule


@runtime_checkable
class PipelineModel(Protocol):
    """A steerable pipeline.

    A ``Denoiser`` over particles of ``latent_shape`` (glass_core time: t = 0 noise, t = 1 data)
    plus what turns particles into the pipeline's outputs.

    Attributes
    ----------
    schedule : Schedule
        The noise schedule of the particles (rectified flow or the pipeline's VP table).
    latent_shape : tuple of int
        One particle (images ``(C, h, w)``, videos ``(C, F, h, w)``), in the pipeline's noise
        layout: the same seed draws the same initial noise as the pipeline.
    num_groups : int
        B, the prompt groups; particle rows are group-major (row i belongs to group i // N).
    prompts : list of str or None
        One per group (None without text conditioning).
    media : str
        "image" or "video": what ``decode`` returns.
    passes_per_eval : int
        Network passes per evaluation (2 with classifier-free guidance).
    num_evaluations, num_forward_rows : int
        Denoiser calls and network rows processed so far.
    model_time : float
        Seconds inside network forward passes.
    meter : glass_core.meter.Meter
        Where the counts and seconds above (and decodes, reward seconds) accumulate.
    """

    schedule: Schedule
    latent_shape: tuple[int, ...]
    media: str

    @property
    def num_groups(self) -> int:
        """Return the number of prompt groups B."""

    @property
    def prompts(self) -> list[str] | None:
        """Return the prompts, one per group (None when embeddings were given)."""

    @property
    def device(self) -> torch.device:
        """Return the device the model runs on."""

    @property
    def passes_per_eval(self) -> int:
        """Return the network rows per particle per evaluation (2 with CFG)."""

    num_evaluations: int

    @property
    def num_forward_rows(self) -> int:
        """Return the network rows run so far (CFG rows included)."""

    @property
    def model_time(self) -> float:
        """Return the seconds spent in the network (when timed)."""

    meter: Meter

    def denoise(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Return the denoised estimate D_t(x) of the data."""

    def velocity(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Return the velocity of the probability-flow ODE at (x, t)."""

    def time_grid(self, num_steps: int) -> np.ndarray:
        """Return the pipeline's own grid for ``num_steps`` transitions, 0 = t_0 < ... < t_K = 1."""
        ...

    def encode(self, image: Any, *, max_batch: int | None = None) -> torch.Tensor:
        """Images -> particles ``[M, *latent_shape]`` (for SDEdit starts)."""
        ...

    def decode(self, z: torch.Tensor, *, max_batch: int | None = None) -> torch.Tensor:
        """Particles -> images ``[M, C, H, W]`` (videos ``[M, F, C, H, W]``) in [0, 1]."""
        ...

    def to_output(self, images: torch.Tensor, output_type: str) -> Any:
        """Return decoded images as "pt" | "np" | "pil", the pipeline's own output types."""
        ...


def call_options(pipe: Any) -> tuple[str, ...]:
    """Names of the pipeline call options ``wrap_pipeline`` passes through for ``pipe``.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The pipeline.

    Returns
    -------
    tuple of str
        The names (none for unconditional pipelines).
    """
    from glass_core.models.diffusers import call_options as family_options
    from glass_core.models.diffusers.unconditional import is_unconditional

    return () if is_unconditional(pipe) else family_options(pipe)


def wrap_pipeline(
    pipe: Any,
    prompt: Any = None,
    *,
    generator: Any = None,
    max_batch: int | None = None,
    timed: bool = False,
    **conditioning: Any,
) -> PipelineModel:
    """``pipe`` as a :class:`PipelineModel`.

    An unconditional ``UNet2DModel`` pipeline (B groups from a list of B generators), else the
    text-conditioned family adapter of ``from_pipeline`` with the prompts encoded.

    Parameters
    ----------
    pipe : diffusers pipeline
    prompt : str, list of str or None
    generator : torch.Generator or list of them
        A list gives the number of groups of an unconditional pipeline.
    max_batch : int, optional
        Network rows per forward pass.
    timed : bool
        Measure seconds on the model's meter (syncing the device around each network pass and
        each decode/reward call); counts are kept either way.
    **conditioning
        ``from_pipeline``'s keyword arguments (negative prompts, embeddings, guidance, size, the
        family's call options).

    Returns
    -------
    PipelineModel

    Raises
    ------
    UnsupportedModelError
        Not a supported family (the message lists them).
    InvalidInputError
        Conditioning arguments for an unconditional pipeline, or inconsistent ones.
    """
    from glass_core.models.diffusers import from_pipeline
    from glass_core.models.diffusers.unconditional import (
        UnconditionalPipelineModel,
        is_unconditional,
    )

    model: Any
    if not is_unconditional(pipe):
        model = from_pipeline(pipe, prompt, max_batch=max_batch, **conditioning)
        model.meter.timed = timed
        return model  # type: ignore[no-any-return]
    bad = [k for k, v in {"prompt": prompt, **conditioning}.items() if v is not None]
    if bad:
        raise InvalidInputError(
            f"{', '.join(bad)}: {type(pipe).__name__} is an unconditional UNet2DModel pipeline "
            f"(no text conditioning); pass prompt=None and no prompt/embedding/guidance/size "
            f"arguments"
        )
    groups = len(generator) if isinstance(generator, list | tuple) else 1
    model = UnconditionalPipelineModel(pipe, max(1, groups), max_batch)
    model.meter.timed = timed
    return model  # type: ignore[no-any-return]
