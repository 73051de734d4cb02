"""FLUX.1 [dev] / [schnell]: ``FluxPipeline`` (CLIP + T5 text encoders, packed 2x2 latents).

Guidance is the distilled guidance input (``guidance_scale``); classifier-free guidance is the
pipeline's ``true_cfg_scale`` with a negative prompt (two passes per evaluation when > 1).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers._conditioning import Tensors, checked_encoder

#: takes pooled embeddings, required with ``prompt_embeds``
POOLED = True
#: the pipeline's default guidance_scale (the distilled guidance input), used when none is given
DEFAULT_GUIDANCE: float = 3.5


def _encode(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    e: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
    """Encode the prompts and (with true CFG) the negatives through ``pipe.encode_prompt``.

    Parameters
    ----------
    pipe : FluxPipeline
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
    pe, pp, _ = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        device=device,
        num_images_per_prompt=1,
        prompt_embeds=e["prompt_embeds"],
        pooled_prompt_embeds=e["pooled_prompt_embeds"],
        **kw,
    )
    cond = {"encoder_hidden_states": pe, "pooled_projections": pp}
    if not do_cfg:
        return cond, None
    npe, npp = e["negative_prompt_embeds"], e["negative_pooled_prompt_embeds"]
    if npe is None and negs is None:  # FluxPipeline's default negative prompt
        negs = [""] * pe.shape[0]
    npe, npp, _ = pipe.encode_prompt(
        prompt=negs,
        prompt_2=None,
        device=device,
        num_images_per_prompt=1,
        prompt_embeds=npe,
        pooled_prompt_embeds=npp,
        **kw,
    )
    return cond, {"encoder_hidden_states": npe, "pooled_projections": npp}


encode = checked_encoder(_encode, "flux", needs_pooled=POOLED)


def does_cfg(pipe: Any, scale: float, has_negative: bool) -> bool:
    """Return whether true CFG runs: ``true_cfg_scale > 1`` and a negative prompt given.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.
    scale : float
        The scale of the family's classifier-free guidance.
    has_negative : bool
        Whether a negative prompt or negative embeddings were given.

    Returns
    -------
    bool
        True when each evaluation runs the negative rows too.
    """
    return float(scale) > 1.0 and has_negative


def size_multiple(pipe: Any) -> int:
    """Return the pixel multiple of height and width (the VAE factor times the 2x2 packing).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.

    Returns
    -------
    int
        Height and width must be multiples of this many pixels.
    """
    return int(pipe.vae_scale_factor) * 2
