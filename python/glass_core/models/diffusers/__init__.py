"""Adapters turning a diffusers pipeline plus prompts into a glass_core ``Denoiser``.

FLUX.1, SD3, SD 1.x/2.x, SDXL, FLUX.2, Qwen-Image, SANA and Wan 2.x, in glass_core's convention
(t = 0 noise, t = 1 data): one module per family, one interface
(``pipeline_model.PipelineModel``).

Only the pipeline's components are used (``pipe.transformer`` / ``pipe.unet``, ``pipe.scheduler``'s
tables and grids, ``pipe.vae``, ``pipe.encode_prompt``); no pipeline ``__call__`` is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from glass_core.models.diffusers._conditioning import Conditioning
from glass_core.models.diffusers._family import SUPPORTED_FAMILIES, detect_family
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.models.diffusers.families import FAMILIES, build, option_names
from glass_core.models.diffusers.flow import (
    FluxDenoiser,
    SD3Denoiser,
    pack_latents,
    unpack_latents,
)
from glass_core.models.diffusers.grids import calculate_shift, default_time_grid
from glass_core.models.diffusers.unet import (
    UNetDenoiser,
    sdxl_add_time_ids,
    vp_schedule_from_scheduler,
)

#: Default guidance of the FLUX.1, SD3, SD and SDXL families (the pipelines' own defaults).
DEFAULT_GUIDANCE: dict[str, float] = {
    name: float(FAMILIES[name].module.DEFAULT_GUIDANCE) for name in ("flux", "sd3", "sd", "sdxl")
}


def call_options(pipe: Any) -> tuple[str, ...]:
    """Return the call options ``from_pipeline`` (hence ``steer``) passes through by name.

    Parameters
    ----------
    pipe : DiffusionPipeline
        A supported text-conditioned pipeline.

    Returns
    -------
    tuple of str
        The names, as the pipeline's ``__call__`` spells them (``families.option_names``).

    Raises
    ------
    UnsupportedModelError
        ``pipe`` is not a supported family.
    """
    return option_names(detect_family(pipe))


def from_pipeline(
    pipe: Any,
    prompt: str | Sequence[str] | None = None,
    *,
    negative_prompt: str | Sequence[str] | None = None,
    prompt_embeds: torch.Tensor | None = None,
    pooled_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_pooled_prompt_embeds: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    true_cfg_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    max_batch: int | None = None,
    requires_grad: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
    original_size: tuple[int, int] | None = None,
    crops_coords_top_left: tuple[int, int] = (0, 0),
    target_size: tuple[int, int] | None = None,
    **options: Any,
) -> DiffusersDenoiser:
    """Wrap ``pipe`` and its encoded prompt(s) as a glass_core Denoiser.

    Parameters
    ----------
    pipe
        A pipeline of a supported family (``SUPPORTED_FAMILIES``: FLUX.1, SD3, SD, SDXL, FLUX.2,
        Qwen-Image, SANA, Wan 2.x; or a subclass using the same components).
    prompt
        one prompt or a list of B prompts (B groups); or give ``prompt_embeds`` (and
        ``pooled_prompt_embeds`` for FLUX/SD3/SDXL) instead.
    guidance_scale
        FLUX: distilled guidance input (default 3.5); SD3/SD/SDXL: CFG scale
        (defaults 7.0 / 7.5 / 5.0); CFG runs 2 forward passes per evaluation when > 1.
    true_cfg_scale
        FLUX.1 and Qwen-Image: true CFG with ``negative_prompt`` when > 1
        (default: the pipeline's, 1.0 for FLUX.1 and 4.0 for Qwen-Image).
    height, width
        image size in pixels (default: the pipeline's default size).
    max_batch
        network rows per forward pass (CFG rows included); None = whole batch.
    requires_grad
        run the network with autograd enabled (default: under no_grad).
    encode_kwargs
        extra keyword arguments for ``pipe.encode_prompt`` (e.g.
        ``{"max_sequence_length": 256}`` for FLUX/SD3, ``{"clip_skip": 2}``).
    original_size, crops_coords_top_left, target_size
        SDXL micro-conditioning (other families reject values other than the defaults).
    **options
        the call options of the newer families, named and defaulting as in the
        pipeline's ``__call__`` (``glass_core.models.diffusers.families.option_names``):
        ``max_sequence_length`` (all), ``text_encoder_out_layers`` (FLUX.2),
        ``complex_human_instruction`` / ``clean_caption`` / ``use_resolution_binning``
        (SANA), ``num_frames`` (Wan).

    Returns
    -------
    DiffusersDenoiser
        The family's denoiser, with its prompts encoded once.

    Raises
    ------
    UnsupportedModelError
        ``pipe`` is not one of the supported families (message lists them).
    InvalidInputError
        Inconsistent prompts/embeddings, an option the family does not take, or a size off its
        pixel multiple (message names the argument).
    """
    micro = {"original_size": original_size, "target_size": target_size}
    micro = {k: v for k, v in micro.items() if v is not None}
    if tuple(crops_coords_top_left) != (0, 0):
        micro["crops_coords_top_left"] = crops_coords_top_left
    return build(
        detect_family(pipe),
        pipe,
        prompt,
        negative_prompt=negative_prompt,
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled_prompt_embeds,
        negative_prompt_embeds=negative_prompt_embeds,
        negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
        guidance_scale=guidance_scale,
        true_cfg_scale=true_cfg_scale,
        height=height,
        width=width,
        max_batch=max_batch,
        requires_grad=requires_grad,
        encode_kwargs=encode_kwargs,
        **micro,
        **options,
    )


__all__ = [
    "DEFAULT_GUIDANCE",
    "SUPPORTED_FAMILIES",
    "Conditioning",
    "DiffusersDenoiser",
    "FluxDenoiser",
    "SD3Denoiser",
    "UNetDenoiser",
    "calculate_shift",
    "call_options",
    "default_time_grid",
    "detect_family",
    "from_pipeline",
    "pack_latents",
    "sdxl_add_time_ids",
    "unpack_latents",
    "vp_schedule_from_scheduler",
]
