"""One builder for every text-conditioned family, each a module behind one contract.

FLUX.1, SD3, SD, SDXL, FLUX.2, Qwen-Image, SANA and Wan 2.x: each family module provides
``encode``, ``DEFAULT_GUIDANCE``, ``does_cfg``, ``size_multiple`` and the names of the call
options it takes (``ENCODE_OPTIONS`` go to the pipeline's ``encode_prompt``, ``MODEL_OPTIONS``
to the denoiser), spelled as the pipeline's ``__call__`` spells them and defaulting to that
``__call__``'s defaults; ``FAMILIES`` pairs it with its denoiser. A module with a ``POOLED``
flag takes pooled embeddings (required with ``prompt_embeds`` when True); a module with
``default_size`` gives the default image size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from glass_core._checks import invalid
from glass_core.errors import InvalidInputError
from glass_core.models.diffusers import flux1, flux2, qwenimage, sana, sd, sd3, sdxl, wan
from glass_core.models.diffusers._conditioning import Conditioning, check_prompts
from glass_core.models.diffusers.base import DiffusersDenoiser, module_device
from glass_core.models.diffusers.flow import FluxDenoiser, SD3Denoiser


@dataclass(frozen=True)
class Family:
    """A family module, the builder of its denoiser and the argument scaling its CFG.

    Parameters
    ----------
    module : module
        The family module (``encode``, ``DEFAULT_GUIDANCE``, ``does_cfg``, ``size_multiple``).
    denoiser : callable
        ``denoiser(pipe, conditioning, guidance_scale=, height=, width=, max_batch=,
        requires_grad=, **model_options)``: a ``DiffusersDenoiser`` class or factory.
    cfg_scale_name : str
        The call argument scaling classifier-free guidance.
    """

    module: ModuleType
    denoiser: Callable[..., DiffusersDenoiser]
    cfg_scale_name: str = "guidance_scale"  # the argument scaling CFG


FAMILIES: dict[str, Family] = {
    "flux": Family(flux1, FluxDenoiser, "true_cfg_scale"),
    "sd3": Family(sd3, SD3Denoiser),
    "sd": Family(sd, sd.make_denoiser),
    "sdxl": Family(sdxl, sdxl.make_denoiser),
    "flux2": Family(flux2, flux2.Flux2Denoiser),
    "qwenimage": Family(qwenimage, qwenimage.QwenImageDenoiser, "true_cfg_scale"),
    "sana": Family(sana, sana.SanaDenoiser),
    "wan": Family(wan, wan.WanDenoiser),
}


def call_default(pipe: Any, name: str) -> Any:
    """Return the default of ``name`` in the pipeline's ``__call__``.

    ``inspect.Parameter.empty`` if it has no such argument.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The pipeline.
    name : str
        An argument of its ``__call__``.

    Returns
    -------
    Any
        Its default.
    """
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    return inspect.Parameter.empty if param is None else param.default


def option_names(family: str) -> tuple[str, ...]:
    """Return the call options the family passes through (encode, then model options).

    Parameters
    ----------
    family : str
        A key of ``FAMILIES``.

    Returns
    -------
    tuple of str
        The names, as the pipeline's ``__call__`` spells them.
    """
    mod = FAMILIES[family].module
    return tuple(getattr(mod, "ENCODE_OPTIONS", ())) + tuple(getattr(mod, "MODEL_OPTIONS", ()))


def _size(pipe: Any, fam: Family, height: int | None, width: int | None) -> tuple[int, int]:
    """Return height and width, checked against the family's pixel multiple.

    Defaults (for None): the pipeline's ``__call__`` defaults, else its default sample size.
    """
    mult = int(fam.module.size_multiple(pipe))
    if hasattr(fam.module, "default_size"):
        fallback = int(fam.module.default_size(pipe))
    else:
        vsf = int(getattr(pipe, "vae_scale_factor", 8))
        fallback = int(getattr(pipe, "default_sample_size", 128)) * vsf
    # None (not 0) asks for the default: an explicit 0 is refused below
    h = int(height if height is not None else (call_default(pipe, "height") or fallback))
    w = int(width if width is not None else (call_default(pipe, "width") or fallback))
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


def execution_device(pipe: Any) -> torch.device:
    """Return the device the pipeline's ``__call__`` encodes prompts on.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The pipeline.

    Returns
    -------
    torch.device
        ``pipe._execution_device`` where the pipeline has one, else its network's device.
    """
    dev = getattr(pipe, "_execution_device", None)
    if isinstance(dev, torch.device):
        return dev
    net = getattr(pipe, "transformer", None) or pipe.unet
    return module_device(net)


def _check_options(family: str, pipe: Any, options: Mapping[str, Any], true_cfg: Any) -> None:
    unknown = sorted(set(options) - set(option_names(family)))
    if unknown:  # .arg: the option at fault when there is one (the command line's flag)
        raise invalid(
            unknown[0] if len(unknown) == 1 else None,
            f"{', '.join(unknown)}: not a call option of {type(pipe).__name__} that steer "
            f"passes through (it takes {', '.join(option_names(family)) or 'none'})",
        )
    if true_cfg is not None and FAMILIES[family].cfg_scale_name != "true_cfg_scale":
        raise invalid(
            "true_cfg_scale",
            f"true_cfg_scale: {type(pipe).__name__} has no true_cfg_scale (its classifier-free "
            "guidance is scaled by guidance_scale)",
        )


def _embeds(family: str, given: dict[str, torch.Tensor | None]) -> dict[str, Any]:
    """Return the given embeddings the family takes (pooled ones only where it has a ``POOLED``)."""
    if hasattr(FAMILIES[family].module, "POOLED"):
        return given
    pooled = sorted(k for k, v in given.items() if "pooled" in k and v is not None)
    if pooled:
        raise InvalidInputError(f"{', '.join(pooled)}: {family} pipelines take no pooled embeds")
    return {k: v for k, v in given.items() if "pooled" not in k}


def build(
    family: str,
    pipe: Any,
    prompt: str | Sequence[str] | None,
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
    **options: Any,
) -> DiffusersDenoiser:
    """Build the denoiser of ``family`` for ``pipe`` and its encoded prompts.

    Parameters
    ----------
    family : str
        A key of ``FAMILIES`` (``detect_family(pipe)``).
    pipe, prompt, negative_prompt, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds,
    negative_pooled_prompt_embeds, guidance_scale, true_cfg_scale, height, width, max_batch,
    requires_grad, encode_kwargs, **options
        As in ``glass_core.models.diffusers.from_pipeline``.

    Returns
    -------
    DiffusersDenoiser
        The family's denoiser.

    Raises
    ------
    InvalidInputError
        An option the family does not take, sizes off the pipeline's multiple, or inconsistent
        prompts / embeddings.
    """
    fam = FAMILIES[family]
    mod = fam.module
    _check_options(family, pipe, options, true_cfg_scale)
    given = {
        "prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds,
        "negative_prompt_embeds": negative_prompt_embeds,
        "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds,
    }  # fmt: skip
    embeds = _embeds(family, given)
    h, w = _size(pipe, fam, height, width)
    kw = {**_options(pipe, getattr(mod, "ENCODE_OPTIONS", ()), options), **(encode_kwargs or {})}
    model_kw = _options(pipe, getattr(mod, "MODEL_OPTIONS", ()), options)
    g = mod.DEFAULT_GUIDANCE if guidance_scale is None else float(guidance_scale)
    true_cfg = call_default(pipe, "true_cfg_scale") if true_cfg_scale is None else true_cfg_scale
    cfg_scale = float(true_cfg) if fam.cfg_scale_name == "true_cfg_scale" else g
    has_neg = negative_prompt is not None or negative_prompt_embeds is not None
    do_cfg = bool(mod.does_cfg(pipe, cfg_scale, has_neg))
    prompts, negs, batch = check_prompts(prompt, negative_prompt, prompt_embeds)
    device = execution_device(pipe)
    with torch.no_grad():
        cond, uncond = mod.encode(pipe, prompts, negs, embeds, do_cfg, device, kw)
    # some encode_prompts leave given embeddings where the caller made them (SDXL's pooled
    # ones, SD3's, Qwen-Image's, ...); the network reads every input on the execution device
    cond = {k: v.to(device) for k, v in cond.items()}
    uncond = None if uncond is None else {k: v.to(device) for k, v in uncond.items()}
    conditioning = Conditioning(num_groups=batch, cond=cond, uncond=uncond, prompts=prompts)
    if fam.cfg_scale_name == "true_cfg_scale":
        model_kw["true_cfg_scale"] = float(true_cfg)
    return fam.denoiser(
        pipe,
        conditioning,
        guidance_scale=g,
        height=h,
        width=w,
        max_batch=max_batch,
        requires_grad=requires_grad,
        **model_kw,
    )
