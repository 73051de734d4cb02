"""Adapters turning a diffusers pipeline (FLUX, SD3, SD 1.x/2.x, SDXL) plus prompts into a
glass_core ``Denoiser`` in glass_core's convention (t = 0 noise, t = 1 data).

Only the pipeline's components are used (``pipe.transformer`` / ``pipe.unet``, ``pipe.scheduler``'s
tables and grids, ``pipe.vae``, ``pipe.encode_prompt``); no pipeline ``__call__`` is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from glass_core.errors import InvalidInputError
from glass_core.models.diffusers._conditioning import Conditioning, encode
from glass_core.models.diffusers._family import SUPPORTED_FAMILIES, detect_family
from glass_core.models.diffusers.base import DiffusersDenoiser, module_device
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

#: Default guidance per family (the pipelines' own defaults).
DEFAULT_GUIDANCE: dict[str, float] = {"flux": 3.5, "sd3": 7.0, "sd": 7.5, "sdxl": 5.0}


def _execution_device(pipe: Any) -> torch.device:
    dev = getattr(pipe, "_execution_device", None)
    if isinstance(dev, torch.device):
        return dev
    net = getattr(pipe, "transformer", None) or pipe.unet
    return module_device(net)


def _default_size(pipe: Any, family: str) -> int:
    vsf = int(pipe.vae_scale_factor)
    if family == "flux":
        return int(getattr(pipe, "default_sample_size", 128)) * vsf
    net = pipe.transformer if family == "sd3" else pipe.unet
    return int(net.config.sample_size) * vsf


def call_options(pipe: Any) -> tuple[str, ...]:
    """The pipeline call options ``from_pipeline`` (hence ``steer``) passes through by name for
    ``pipe``'s family (none for the unconditional, FLUX.1, SD3, SD and SDXL adapters, which take
    theirs as explicit arguments)."""
    family = detect_family(pipe)
    return option_names(family) if family in FAMILIES else ()


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

    Args:
        pipe: a FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline or
            StableDiffusionXLPipeline (or a subclass using the same components).
        prompt: one prompt or a list of B prompts (B groups); or give ``prompt_embeds`` (and
            ``pooled_prompt_embeds`` for FLUX/SD3/SDXL) instead.
        guidance_scale: FLUX: distilled guidance input (default 3.5); SD3/SD/SDXL: CFG scale
            (defaults 7.0 / 7.5 / 5.0); CFG runs 2 forward passes per evaluation when > 1.
        true_cfg_scale: FLUX.1 and Qwen-Image: true CFG with ``negative_prompt`` when > 1
            (default: the pipeline's, 1.0 for FLUX.1 and 4.0 for Qwen-Image).
        height, width: image size in pixels (default: the pipeline's default size).
        max_batch: network rows per forward pass (CFG rows included); None = whole batch.
        requires_grad: run the network with autograd enabled (default: under no_grad).
        encode_kwargs: extra keyword arguments for ``pipe.encode_prompt`` (e.g.
            ``{"max_sequence_length": 256}`` for FLUX/SD3, ``{"clip_skip": 2}``).
        original_size, crops_coords_top_left, target_size: SDXL micro-conditioning.
        **options: the call options of the newer families, named and defaulting as in the
            pipeline's ``__call__`` (``glass_core.models.diffusers.families.option_names``):
            ``max_sequence_length`` (all), ``text_encoder_out_layers`` (FLUX.2),
            ``complex_human_instruction`` / ``clean_caption`` / ``use_resolution_binning``
            (SANA), ``num_frames`` (Wan).

    Raises:
        UnsupportedModelError: ``pipe`` is not one of the supported families (message lists them).
        InvalidInputError: inconsistent prompts/embeddings (message names the argument).
    """
    family = detect_family(pipe)
    common: dict[str, Any] = {
        "negative_prompt": negative_prompt,
        "prompt_embeds": prompt_embeds,
        "negative_prompt_embeds": negative_prompt_embeds,
        "guidance_scale": guidance_scale,
        "true_cfg_scale": true_cfg_scale,
        "height": height,
        "width": width,
        "max_batch": max_batch,
        "requires_grad": requires_grad,
        "encode_kwargs": encode_kwargs,
    }
    if family in FAMILIES:
        pooled = {"pooled_prompt_embeds": pooled_prompt_embeds}
        pooled["negative_pooled_prompt_embeds"] = negative_pooled_prompt_embeds
        given = sorted(k for k, v in pooled.items() if v is not None)
        if given:
            raise InvalidInputError(f"{', '.join(given)}: {family} pipelines take no pooled embeds")
        return build(family, pipe, prompt, **common, **options)
    if options:
        names = ", ".join(sorted(options))
        raise InvalidInputError(f"{names}: not an option of {family} pipelines")
    sdxl = {
        "original_size": original_size,
        "crops_coords_top_left": crops_coords_top_left,
        "target_size": target_size,
    }
    pooled_embeds = (pooled_prompt_embeds, negative_pooled_prompt_embeds)
    return _classic(family, pipe, prompt, pooled_embeds, sdxl, **common)


def _classic_size(pipe: Any, family: str, height: int | None, width: int | None) -> tuple[int, int]:
    default = _default_size(pipe, family)
    h, w = int(height or default), int(width or default)
    mult = int(pipe.vae_scale_factor) * (2 if family == "flux" else 1)
    if family == "sd3":
        mult *= int(pipe.transformer.config.patch_size)
    if h % mult or w % mult or h <= 0 or w <= 0:
        raise InvalidInputError(
            f"height and width must be positive multiples of {mult} for {family}, "
            f"got height={h}, width={w}"
        )
    return h, w


def _classic(
    family: str,
    pipe: Any,
    prompt: Any,
    pooled: tuple[torch.Tensor | None, torch.Tensor | None],
    sdxl: dict[str, Any],
    *,
    negative_prompt: Any,
    prompt_embeds: torch.Tensor | None,
    negative_prompt_embeds: torch.Tensor | None,
    guidance_scale: float | None,
    true_cfg_scale: float | None,
    height: int | None,
    width: int | None,
    encode_kwargs: Mapping[str, Any] | None,
    **common: Any,
) -> DiffusersDenoiser:
    """The FLUX.1, SD3, SD and SDXL adapters (their options are explicit arguments)."""
    height, width = _classic_size(pipe, family, height, width)
    g = DEFAULT_GUIDANCE[family] if guidance_scale is None else float(guidance_scale)
    true_cfg_scale = 1.0 if true_cfg_scale is None else true_cfg_scale
    if family == "flux":
        has_neg = negative_prompt is not None or negative_prompt_embeds is not None
        do_cfg = float(true_cfg_scale) > 1.0 and has_neg
    else:
        do_cfg = g > 1.0
    cond = encode(
        pipe,
        family,
        prompt=prompt,
        negative_prompt=negative_prompt,
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled[0],
        negative_prompt_embeds=negative_prompt_embeds,
        negative_pooled_prompt_embeds=pooled[1],
        do_cfg=do_cfg,
        device=_execution_device(pipe),
        encode_kwargs=encode_kwargs,
    )
    common.update(height=height, width=width)
    if family == "flux":
        return FluxDenoiser(pipe, cond, guidance_scale=g, true_cfg_scale=true_cfg_scale, **common)
    if family == "sd3":
        return SD3Denoiser(pipe, cond, guidance_scale=g, **common)
    ids = sdxl_add_time_ids(pipe, height, width, **sdxl) if family == "sdxl" else None
    return UNetDenoiser(pipe, cond, family=family, guidance_scale=g, add_time_ids=ids, **common)


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
