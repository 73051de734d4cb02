"""Which diffusers pipeline family an object belongs to (by class names, no version pinning)."""

from __future__ import annotations

from typing import Any

from glass_core.errors import UnsupportedModelError

#: Families this adapter supports, with what it reads from each pipeline.
SUPPORTED_FAMILIES: dict[str, str] = {
    "flux": "FLUX.1 dev/schnell (FluxPipeline: pipe.transformer is a FluxTransformer2DModel)",
    "sd3": "SD3 / SD3.5 (StableDiffusion3Pipeline: pipe.transformer is an SD3Transformer2DModel)",
    "sd": "SD 1.x / 2.x (StableDiffusionPipeline: pipe.unet, eps- or v-prediction)",
    "sdxl": "SDXL (StableDiffusionXLPipeline: pipe.unet with text_time added conditioning)",
    "flux2": "FLUX.2 [dev] and [klein] (Flux2Pipeline, Flux2KleinPipeline)",
    "qwenimage": "Qwen-Image (QwenImagePipeline)",
    "sana": "SANA (SanaPipeline)",
    "wan": "Wan 2.x text-to-video with one transformer (WanPipeline)",
}

#: text-to-image/video pipeline classes of the families with a module of their own (their
#: edit/inpaint/control siblings share the transformer but take other inputs)
_PIPELINES = {
    "Flux2Pipeline": "flux2",
    "Flux2KleinPipeline": "flux2",
    "QwenImagePipeline": "qwenimage",
    "SanaPipeline": "sana",
    "WanPipeline": "wan",
}

_TRANSFORMERS = {"FluxTransformer2DModel": "flux", "SD3Transformer2DModel": "sd3"}


def _class_names(obj: Any) -> list[str]:
    return [c.__name__ for c in type(obj).__mro__]


def supported_message() -> str:
    return "supported families: " + "; ".join(SUPPORTED_FAMILIES.values())


def _check_plain(pipe: Any, net: Any, family: str) -> str:
    """Reject variants whose network needs extra inputs this adapter would silently drop."""
    for extra in ("controlnet", "adapter"):
        if getattr(pipe, extra, None) is not None:
            raise UnsupportedModelError(
                f"pipe: {type(pipe).__name__} has a {extra}; conditioning through a {extra} is "
                f"not supported (text-to-image only); {supported_message()}"
            )
    cfg = net.config
    in_ch = int(cfg.in_channels)
    out_ch = int(getattr(cfg, "out_channels", None) or in_ch)
    if in_ch != out_ch:
        raise UnsupportedModelError(
            f"pipe: {type(pipe).__name__}'s network takes {in_ch} input channels for {out_ch} "
            "output channels (an inpainting/fill/control variant with extra conditioning "
            f"channels); only text-to-image {family} networks are supported; "
            f"{supported_message()}"
        )
    return family


def detect_family(pipe: Any) -> str:
    """Return the key of ``SUPPORTED_FAMILIES`` for a supported pipeline.

    Detection looks at the denoising network (``pipe.transformer`` / ``pipe.unet``) and, for UNets,
    at whether the UNet takes SDXL's added text/time conditioning. Subclasses of the supported
    pipelines (custom pipelines built on the same components) are accepted.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The pipeline.

    Returns
    -------
    str
        The family's key.

    Raises
    ------
    UnsupportedModelError
        An unsupported pipeline or variant (the message lists the supported families).
    """
    for name in _class_names(pipe):
        if name in _PIPELINES:
            if getattr(pipe, "transformer_2", None) is not None:
                raise UnsupportedModelError(
                    f"pipe: {type(pipe).__name__} with two transformers (Wan 2.2 A14B experts) is "
                    f"not supported; {supported_message()}"
                )
            return _PIPELINES[name]
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        for name in _class_names(transformer):
            if name in _TRANSFORMERS:
                return _check_plain(pipe, transformer, _TRANSFORMERS[name])
        raise UnsupportedModelError(
            f"pipe: unsupported denoising transformer {type(transformer).__name__} in "
            f"{type(pipe).__name__}; {supported_message()}"
        )
    unet = getattr(pipe, "unet", None)
    if unet is not None and "UNet2DConditionModel" in _class_names(unet):
        names = _class_names(pipe)
        if any(n.startswith("StableDiffusionXL") for n in names):
            return _check_plain(pipe, unet, "sdxl")
        if getattr(unet.config, "addition_embed_type", None) == "text_time":
            return _check_plain(pipe, unet, "sdxl")
        if any(n.startswith("StableDiffusion") for n in names) or hasattr(pipe, "encode_prompt"):
            return _check_plain(pipe, unet, "sd")
    what = type(getattr(pipe, "unet", None) or pipe).__name__
    raise UnsupportedModelError(
        f"pipe: unsupported pipeline {type(pipe).__name__} (network {what}); {supported_message()}"
    )
