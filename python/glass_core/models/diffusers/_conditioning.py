"""Prompt conditioning for each family, encoded once through the pipeline's own ``encode_prompt``.

The result holds per-group tensors ``[B, ...]`` (one row per prompt); the denoisers pick the rows
for a batch of particles with ``index_select`` (particle row i belongs to group i // N).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from glass_core.errors import InvalidInputError

Tensors = dict[str, torch.Tensor]


@dataclass
class Conditioning:
    """Encoded prompts. ``cond``/``uncond`` map network keyword names to ``[B, ...]`` tensors."""

    num_groups: int
    cond: Tensors
    uncond: Tensors | None = None
    prompts: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def select(self, which: Tensors, groups: torch.Tensor) -> Tensors:
        return {k: v.index_select(0, groups.to(v.device)) for k, v in which.items()}


def _as_prompt_list(prompt: str | Sequence[str] | None, name: str) -> list[str] | None:
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, Sequence) and len(prompt) > 0 and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise InvalidInputError(
        f"{name} must be a string or a non-empty list of strings, got {prompt!r}"
    )


def _check_embeds(name: str, x: torch.Tensor | None, ndim: int, batch: int | None) -> None:
    if x is None:
        return
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidInputError(f"{name} must be a tensor with {ndim} dims, got {shape}")
    if batch is not None and x.shape[0] != batch:
        raise InvalidInputError(
            f"{name} has batch size {x.shape[0]} but {batch} prompts/prompt_embeds were given"
        )


def check_prompts(
    prompt: str | Sequence[str] | None,
    negative_prompt: str | Sequence[str] | None,
    prompt_embeds: torch.Tensor | None,
) -> tuple[list[str] | None, list[str] | None, int]:
    """(prompts, negative prompts one per prompt, number of groups B) from either prompts or
    ``prompt_embeds`` [B, ...]; a single negative prompt is repeated for every group."""
    prompts = _as_prompt_list(prompt, "prompt")
    negs = _as_prompt_list(negative_prompt, "negative_prompt")
    if prompts is not None and prompt_embeds is not None:
        raise InvalidInputError("pass either prompt or prompt_embeds, not both")
    if prompts is None and prompt_embeds is None:
        raise InvalidInputError("one of prompt or prompt_embeds is required")
    if prompt_embeds is not None and not isinstance(prompt_embeds, torch.Tensor):
        raise InvalidInputError(
            f"prompt_embeds must be a tensor with 3 dims, got {type(prompt_embeds).__name__}"
        )
    batch = len(prompts) if prompts is not None else int(prompt_embeds.shape[0])  # type: ignore
    if negs is not None:
        if len(negs) == 1 and batch > 1:
            negs = negs * batch
        if len(negs) != batch:
            raise InvalidInputError(
                f"negative_prompt has {len(negs)} entries but there are {batch} prompts"
            )
    return prompts, negs, batch


def _check_given_embeds(
    family: str, e: dict[str, Any], batch: int, do_cfg: bool, negs: list[str] | None
) -> None:
    """Given embeddings: right ranks and batch, pooled ones where the family needs them, and a
    negative as prompt or as embeddings, not both."""
    for name, ndim in (("prompt_embeds", 3), ("pooled_prompt_embeds", 2)):
        _check_embeds(name, e[name], ndim, batch)
        _check_embeds(f"negative_{name}", e[f"negative_{name}"], ndim, batch)
    needs_pooled = family in ("flux", "sd3", "sdxl")
    pe, npe = e["prompt_embeds"], e["negative_prompt_embeds"]
    if pe is not None and needs_pooled and e["pooled_prompt_embeds"] is None:
        raise InvalidInputError(
            f"pooled_prompt_embeds is required with prompt_embeds for the {family} family"
        )
    if npe is not None and needs_pooled and e["negative_pooled_prompt_embeds"] is None and do_cfg:
        raise InvalidInputError(
            f"negative_pooled_prompt_embeds is required with negative_prompt_embeds for {family}"
        )
    if negs is not None and npe is not None:
        raise InvalidInputError("pass either negative_prompt or negative_prompt_embeds, not both")
    if pe is not None and npe is not None and pe.shape != npe.shape:
        raise InvalidInputError(
            f"negative_prompt_embeds shape {tuple(npe.shape)} must equal "
            f"prompt_embeds shape {tuple(pe.shape)}"
        )


def _check_encoded(cond: Tensors, uncond: Tensors | None, batch: int) -> None:
    for name, tensors in (("cond", cond), ("uncond", uncond or {})):
        for k, v in tensors.items():
            if v is None or v.shape[0] != batch:
                got = None if v is None else tuple(v.shape)
                raise InvalidInputError(
                    f"encode_prompt returned {name} {k} with shape {got}; expected batch {batch}"
                )


def encode(
    pipe: Any,
    family: str,
    *,
    prompt: str | Sequence[str] | None,
    negative_prompt: str | Sequence[str] | None,
    prompt_embeds: torch.Tensor | None,
    pooled_prompt_embeds: torch.Tensor | None,
    negative_prompt_embeds: torch.Tensor | None,
    negative_pooled_prompt_embeds: torch.Tensor | None,
    do_cfg: bool,
    device: torch.device,
    encode_kwargs: Mapping[str, Any] | None,
) -> Conditioning:
    """Encode prompts (or validate given embeddings) for `family` (FLUX.1, SD3, SD, SDXL) with
    ``pipe.encode_prompt``."""
    prompts, negs, batch = check_prompts(prompt, negative_prompt, prompt_embeds)
    embeds = {
        "prompt_embeds": prompt_embeds,
        "pooled_prompt_embeds": pooled_prompt_embeds,
        "negative_prompt_embeds": negative_prompt_embeds,
        "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds,
    }
    _check_given_embeds(family, embeds, batch, do_cfg, negs)
    with torch.no_grad():
        cond, uncond = ENCODERS[family](
            pipe, prompts, negs, embeds, do_cfg, device, dict(encode_kwargs or {})
        )
    _check_encoded(cond, uncond, batch)
    return Conditioning(num_groups=batch, cond=cond, uncond=uncond, prompts=prompts)


def _encode_sd3(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    e: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
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


def _encode_sd(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    e: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
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


def _encode_sdxl(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    e: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
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


def _encode_flux(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    e: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
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
    if npe is not None:
        negs = None
    elif negs is None:
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


#: each family's encoder: (pipe, prompts, negatives, given embeddings, cfg, device, kwargs)
ENCODERS = {"flux": _encode_flux, "sd3": _encode_sd3, "sd": _encode_sd, "sdxl": _encode_sdxl}
