"""SD3 / SD3.5: ``StableDiffusion3Pipeline`` (CLIP x2 + T5, MMDiT, rectified flow).

CFG batches the negative and conditional rows (two passes per evaluation when
``guidance_scale > 1``).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers._conditioning import Tensors, cfg_above_one, checked_encoder

#: takes pooled embeddings, required with ``prompt_embeds``
POOLED = True
#: the pipeline's default CFG scale (guidance_scale), used when none is given
DEFAULT_GUIDANCE: float = 7.0


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
    pipe : StableDiffusion3Pipeline
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
        prompt_3=None,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=do_cfg,
        negative_prompt=negs,
        **e,
        **kw,
    )
    cond = {"encoder_hidden_states": pe, "pooled_projections": pp}
    return cond, ({"encoder_hidden_states": npe, "pooled_projections": npp} if do_cfg else None)


encode = checked_encoder(_encode, "sd3", needs_pooled=POOLED)


does_cfg = cfg_above_one


def size_multiple(pipe: Any) -> int:
    """Return the pixel multiple of height and width (VAE factor times the patch size).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.

    Returns
    -------
    int
        Height and width must be multiples of this many pixels.
    """
    return int(pipe.vae_scale_factor) * int(pipe.transformer.config.patch_size)
