"""SD 1.x / 2.x: ``StableDiffusionPipeline`` (CLIP text encoder, UNet, eps- or v-prediction).

CFG batches the negative and conditional rows (two passes per evaluation when
``guidance_scale > 1``).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers._conditioning import (
    Conditioning,
    Tensors,
    cfg_above_one,
    checked_encoder,
)
from glass_core.models.diffusers.unet import UNetDenoiser

#: given pooled embeddings are checked, then unused (SD has no pooled input)
POOLED = False
#: the pipeline's default CFG scale (guidance_scale), used when none is given
DEFAULT_GUIDANCE: float = 7.5


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
    pipe : StableDiffusionPipeline
        The pipeline.
    prompts, negs : list of str or None
        One prompt (negative prompt) per group, or None when embeddings are given.
    e : dict
        Given ``prompt_embeds`` and ``negative_prompt_embeds`` (or None).
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
    pe, npe = pipe.encode_prompt(
        prompt=prompts,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=do_cfg,
        negative_prompt=negs,
        prompt_embeds=e["prompt_embeds"],
        negative_prompt_embeds=e["negative_prompt_embeds"],
        **kw,
    )
    return {"encoder_hidden_states": pe}, ({"encoder_hidden_states": npe} if do_cfg else None)


encode = checked_encoder(_encode, "sd", needs_pooled=POOLED)


does_cfg = cfg_above_one


def size_multiple(pipe: Any) -> int:
    """Return the pixel multiple of height and width (the VAE factor).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.

    Returns
    -------
    int
        Height and width must be multiples of this many pixels.
    """
    return int(pipe.vae_scale_factor)


def default_size(pipe: Any) -> int:
    """Return the default height and width in pixels.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.

    Returns
    -------
    int
        The default height and width in pixels.
    """
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def make_denoiser(pipe: Any, conditioning: Conditioning, **kwargs: Any) -> UNetDenoiser:
    """Build the UNet denoiser of an SD pipeline.

    Parameters
    ----------
    pipe : StableDiffusionPipeline
        The pipeline.
    conditioning : Conditioning
        The encoded prompts.
    **kwargs
        Keyword arguments of ``UNetDenoiser`` (guidance, size, batching).

    Returns
    -------
    UNetDenoiser
        The denoiser.
    """
    return UNetDenoiser(pipe, conditioning, family="sd", **kwargs)
