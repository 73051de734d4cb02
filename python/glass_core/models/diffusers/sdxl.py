"""SDXL: ``StableDiffusionXLPipeline`` (two CLIP text encoders, UNet with text/time conditioning).

CFG batches the negative and conditional rows; the added time ids are the pipeline's
micro-conditioning (``original_size``, ``crops_coords_top_left``, ``target_size``, passed through
under those names).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers import sd
from glass_core.models.diffusers._conditioning import Conditioning, Tensors, checked_encoder
from glass_core.models.diffusers.unet import UNetDenoiser, sdxl_add_time_ids

#: takes pooled embeddings, required with ``prompt_embeds``
POOLED = True
#: the pipeline's default CFG scale (guidance_scale), used when none is given
DEFAULT_GUIDANCE: float = 5.0
MODEL_OPTIONS = ("original_size", "crops_coords_top_left", "target_size")
does_cfg = sd.does_cfg
size_multiple = sd.size_multiple
default_size = sd.default_size


def _encode(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    e: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
    """Encode the prompts and (with CFG) the negatives through ``pipe.encode_prompt``.

    Parameters
    ----------
    pipe : StableDiffusionXLPipeline
        The pipeline.
    prompts, negs : list of str or None
        One prompt (negative prompt) per group, or None when embeddings are given.
    e : dict
        Given ``prompt_embeds``, ``pooled_prompt_embeds`` and their negatives (or None).
    do_cfg : bool
        Whether the negative rows are needed.
    device : torch.device
        Where the embeddings go.
    kw : dict
        Further keyword arguments of ``encode_prompt``.

    Returns
    -------
    tuple of dict
        The conditional and (with CFG, else None) unconditional network inputs.
    """
    pe, npe, pp, npp = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=do_cfg,
        negative_prompt=negs,
        negative_prompt_2=None,
        **e,
        **kw,
    )
    cond = {"encoder_hidden_states": pe, "text_embeds": pp}
    return cond, ({"encoder_hidden_states": npe, "text_embeds": npp} if do_cfg else None)


encode = checked_encoder(_encode, "sdxl", needs_pooled=POOLED)


def make_denoiser(
    pipe: Any,
    conditioning: Conditioning,
    *,
    height: int,
    width: int,
    original_size: tuple[int, int] | None = None,
    crops_coords_top_left: tuple[int, int] = (0, 0),
    target_size: tuple[int, int] | None = None,
    **kwargs: Any,
) -> UNetDenoiser:
    """Build the UNet denoiser of an SDXL pipeline with its added time ids.

    Parameters
    ----------
    pipe : StableDiffusionXLPipeline
        The pipeline.
    conditioning : Conditioning
        The encoded prompts.
    height, width : int
        Image size in pixels.
    original_size, crops_coords_top_left, target_size : tuple of int
        SDXL's micro-conditioning (the pipeline's defaults: the image size, (0, 0)).
    **kwargs
        Further keyword arguments of ``UNetDenoiser`` (guidance, batching).

    Returns
    -------
    UNetDenoiser
        The denoiser.
    """
    ids = sdxl_add_time_ids(
        pipe, height, width, original_size=original_size,
        crops_coords_top_left=crops_coords_top_left, target_size=target_size,
    )  # fmt: skip
    return UNetDenoiser(
        pipe, conditioning, family="sdxl", height=height, width=width, add_time_ids=ids, **kwargs
    )
