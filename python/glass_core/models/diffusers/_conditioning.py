"""Prompt conditioning for each family, encoded once through the pipeline's own ``encode_prompt``.

The result holds per-group tensors ``[B, ...]`` (one row per prompt); the denoisers pick the rows
for a batch of particles with ``index_select`` (particle row i belongs to group i // N).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    """Return (prompts, negative prompts, number of groups B) from prompts or embeddings.

    B comes from the prompts or ``prompt_embeds`` [B, ...]; a single negative prompt is repeated
    for every group.

    Parameters
    ----------
    prompt : str or list of str, optional
        The prompt(s).
    negative_prompt : str or list of str, optional
        One negative prompt, or one per group.
    prompt_embeds : torch.Tensor, optional
        Given embeddings [B, ...] instead of prompts.

    Returns
    -------
    tuple
        (prompts or None, negative prompts or None, B).

    Raises
    ------
    InvalidInputError
        Both or neither of prompt and prompt_embeds, or a count mismatch.
    """
    prompts = _as_prompt_list(prompt, "prompt")
    negs = _as_prompt_list(negative_prompt, "negative_prompt")
    if prompts is not None and prompt_embeds is not None:
        raise InvalidInputError("pass either prompt or prompt_embeds, not both")
    if prompts is None and prompt_embeds is None:
        raise InvalidInputError("one of prompt or prompt_embeds is required")
    _check_embeds("prompt_embeds", prompt_embeds, 3, None)
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
    family: str,
    e: dict[str, Any],
    batch: int,
    do_cfg: bool,
    negs: list[str] | None,
    needs_pooled: bool,
) -> None:
    """Check given embeddings.

    Right ranks and batch, pooled ones where the family needs them, and a negative as prompt or as
    embeddings, not both.
    """
    for name, ndim in (("prompt_embeds", 3), ("pooled_prompt_embeds", 2)):
        _check_embeds(name, e[name], ndim, batch)
        _check_embeds(f"negative_{name}", e[f"negative_{name}"], ndim, batch)
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


Encoder = Callable[
    [Any, list[str] | None, list[str] | None, dict[str, Any], bool, torch.device, dict[str, Any]],
    tuple[Tensors, Tensors | None],
]


def checked_encoder(encoder: Encoder, family: str, *, needs_pooled: bool) -> Encoder:
    """Wrap a family's encoder with the checks of the given embeddings and of its outputs.

    Parameters
    ----------
    encoder : callable
        ``encoder(pipe, prompts, negs, embeds, do_cfg, device, kw) -> (cond, uncond)``.
    family : str
        The family's name (for error messages).
    needs_pooled : bool
        Whether ``pooled_prompt_embeds`` must come with ``prompt_embeds``.

    Returns
    -------
    callable
        An encoder with the same signature that raises ``InvalidInputError`` for given
        embeddings of the wrong rank or batch, or outputs without one row per group.
    """

    def encode(
        pipe: Any,
        prompts: list[str] | None,
        negs: list[str] | None,
        e: dict[str, Any],
        do_cfg: bool,
        device: torch.device,
        kw: dict[str, Any],
    ) -> tuple[Tensors, Tensors | None]:
        batch = len(prompts) if prompts is not None else int(e["prompt_embeds"].shape[0])
        _check_given_embeds(family, e, batch, do_cfg, negs, needs_pooled)
        cond, uncond = encoder(pipe, prompts, negs, e, do_cfg, device, kw)
        _check_encoded(cond, uncond, batch)
        return cond, uncond

    return encode


def cfg_above_one(pipe: Any, scale: float, has_negative: bool) -> bool:
    """Return whether classifier-free guidance runs: ``scale > 1``, negative prompt or not.

    The ``does_cfg`` rule of the families whose pipelines guide against the empty prompt when no
    negative one is given (SD, SDXL, SD3, SANA, Wan).

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
    return float(scale) > 1.0
