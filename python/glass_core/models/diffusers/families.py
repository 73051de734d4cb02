"""One builder for the families added behind the family-module contract (FLUX.2, Qwen-Image,
SANA, Wan 2.x): each family module provides ``encode``, ``default_guidance``, ``does_cfg``, its
denoiser class, and the names of the call options it takes (``ENCODE_OPTIONS`` go to the
pipeline's ``encode_prompt``, ``MODEL_OPTIONS`` to the denoiser), spelled as the pipeline's
``__call__`` spells them and defaulting to that ``__call__``'s defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from glass_core.errors import InvalidInputError
from glass_core.models.diffusers import flux2, qwenimage, sana, wan
from glass_core.models.diffusers._conditioning import Conditioning, check_prompts
from glass_core.models.diffusers.base import DiffusersDenoiser, module_device


@dataclass(frozen=True)
class Family:
    """A family module, its denoiser class and the pixel multiple its sizes must respect."""

    module: ModuleType
    denoiser: type[DiffusersDenoiser]
    cfg_scale_name: str = "guidance_scale"  # the argument scaling CFG


FAMILIES: dict[str, Family] = {
    "flux2": Family(flux2, flux2.Flux2Denoiser),
    "qwenimage": Family(qwenimage, qwenimage.QwenImageDenoiser, "true_cfg_scale"),
    "sana": Family(sana, sana.SanaDenoiser),
    "wan": Family(wan, wan.WanDenoiser),
}


def call_default(pipe: Any, name: str) -> Any:
    """The default of ``name`` in the pipeline's ``__call__`` (inspect.Parameter.empty if none)."""
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    return inspect.Parameter.empty if param is None else param.default


def option_names(family: str) -> tuple[str, ...]:
    mod = FAMILIES[family].module
    return tuple(getattr(mod, "ENCODE_OPTIONS", ())) + tuple(getattr(mod, "MODEL_OPTIONS", ()))


def _size(pipe: Any, fam: Family, height: int | None, width: int | None) -> tuple[int, int]:
    """Height and width (default: the pipeline's ``__call__`` defaults, else its default sample
    size), checked against the family's pixel multiple."""
    mult = int(fam.module.size_multiple(pipe))
    vsf = int(getattr(pipe, "vae_scale_factor", 8))
    fallback = int(getattr(pipe, "default_sample_size", 128)) * vsf
    h = int(height or call_default(pipe, "height") or fallback)
    w = int(width or call_default(pipe, "width") or fallback)
    if h % mult or w % mult or h <= 0 or w <= 0:
        raise InvalidInputError(
            f"height and width must be positive multiples of {mult} for {type(pipe).__name__}, "
            f"got height={h}, width={w}"
        )
    return h, w


def _options(pipe: Any, names: Sequence[str], given: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = given.pop(name, call_default(pipe, name))
        if value is not inspect.Parameter.empty:
            out[name] = value
    return out


def build(
    family: str,
    pipe: Any,
    prompt: str | Sequence[str] | None,
    *,
    negative_prompt: str | Sequence[str] | None = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    true_cfg_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    max_batch: int | None = None,
    requires_grad: bool = False,
    encode_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> DiffusersDenoiser:
    """The denoiser of ``family`` for ``pipe`` and its encoded prompts (see ``from_pipeline``).

    Raises
    ------
    InvalidInputError
        An option the family does not take, sizes off the pipeline's multiple, or inconsistent
        prompts / embeddings.
    """
    fam = FAMILIES[family]
    mod = fam.module
    unknown = sorted(set(options) - set(option_names(family)))
    if unknown:
        raise InvalidInputError(
            f"{', '.join(unknown)}: not a call option of {type(pipe).__name__} that steer "
            f"passes through (it takes {', '.join(option_names(family)) or 'none'})"
        )
    h, w = _size(pipe, fam, height, width)
    kw = {**_options(pipe, getattr(mod, "ENCODE_OPTIONS", ()), options), **(encode_kwargs or {})}
    model_kw = _options(pipe, getattr(mod, "MODEL_OPTIONS", ()), options)
    g = mod.default_guidance(pipe) if guidance_scale is None else float(guidance_scale)
    true_cfg = call_default(pipe, "true_cfg_scale") if true_cfg_scale is None else true_cfg_scale
    cfg_scale = float(true_cfg) if fam.cfg_scale_name == "true_cfg_scale" else g
    has_neg = negative_prompt is not None or negative_prompt_embeds is not None
    do_cfg = bool(mod.does_cfg(pipe, cfg_scale, has_neg))
    prompts, negs, batch = check_prompts(prompt, negative_prompt, prompt_embeds)
    embeds = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
    device = module_device(pipe.transformer)
    with torch.no_grad():
        cond, uncond = mod.encode(pipe, prompts, negs, embeds, do_cfg, device, kw)
    conditioning = Conditioning(num_groups=batch, cond=cond, uncond=uncond, prompts=prompts)
    if fam.cfg_scale_name == "true_cfg_scale":
        model_kw["true_cfg_scale"] = float(true_cfg)
    return fam.denoiser(  # type: ignore[call-arg]
        pipe,
        conditioning,
        guidance_scale=g,
        height=h,
        width=w,
        max_batch=max_batch,
        requires_grad=requires_grad,
        **model_kw,
    )
