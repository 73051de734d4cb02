"""SANA: ``SanaPipeline`` (Gemma-2 text encoder, linear-attention DiT, DC-AE).

Particles are the latents ``[M, C, H/f, W/f]`` scaled by the DC-AE's ``scaling_factor`` (no
shift); the network timestep is ``T * sigma * timestep_scale``; CFG batches the negative
(default "") and conditional rows as the pipeline does. The step grid is the scheduler's
default (static shift). With ``use_resolution_binning`` (the pipeline's default) the image is
generated at the aspect-ratio bin nearest to height x width and resized back after decoding.
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core._checks import invalid
from glass_core.errors import InvalidInputError
from glass_core.models.diffusers._conditioning import Conditioning, Tensors, cfg_above_one
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.models.diffusers.flow import flow_timestep, train_timesteps
from glass_core.schedules import RectifiedFlow

#: the pipeline's default CFG scale (guidance_scale), used when none is given
DEFAULT_GUIDANCE: float = 4.5

#: steer/from_pipeline options passed to ``encode_prompt`` (the attention masks go with given
#: embeddings, as in SanaPipeline.__call__)
ENCODE_OPTIONS = (
    "max_sequence_length", "complex_human_instruction", "clean_caption",
    "prompt_attention_mask", "negative_prompt_attention_mask",
)  # fmt: skip
MODEL_OPTIONS = ("use_resolution_binning",)


def encode(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    embeds: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
    """Embeddings and attention masks of the prompts and (with CFG) the negatives.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.
    prompts, negs : list of str or None
        One prompt (negative prompt) per group, or None when embeddings are given.
    embeds : dict
        Given embeddings (``prompt_embeds``, ``negative_prompt_embeds``, ...) or None.
    do_cfg : bool
        Whether the negative rows are needed.
    device : torch.device
        Where the embeddings go.
    kw : dict
        Further keyword arguments of ``encode_prompt`` (with given embeddings, their
        ``prompt_attention_mask`` / ``negative_prompt_attention_mask``).

    Returns
    -------
    tuple of dict
        The conditional and (with CFG, else None) unconditional network inputs, ``[B, ...]``.

    Raises
    ------
    InvalidInputError
        Given embeddings without their attention mask.
    """
    for name in ("prompt_embeds", "negative_prompt_embeds"):
        mask_name = name.replace("embeds", "attention_mask")
        if embeds.get(name) is not None and kw.get(mask_name) is None:
            raise invalid(mask_name, f"{mask_name}: SANA needs it with {name} (as its pipeline)")
    pe, mask, npe, nmask = pipe.encode_prompt(
        prompts,
        do_cfg,
        negative_prompt=negs if negs is not None else "",
        device=device,
        prompt_embeds=embeds.get("prompt_embeds"),
        negative_prompt_embeds=embeds.get("negative_prompt_embeds"),
        **kw,
    )
    cond = {"encoder_hidden_states": pe, "encoder_attention_mask": mask}
    if not do_cfg:
        return cond, None
    return cond, {"encoder_hidden_states": npe, "encoder_attention_mask": nmask}


def size_multiple(pipe: Any) -> int:
    """Height and width must be multiples of this many pixels.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.

    Returns
    -------
    int
        Height and width must be multiples of this many pixels.
    """
    return 32  # SanaPipeline.check_inputs


does_cfg = cfg_above_one


def _bins(pipe: Any) -> dict[str, list[float]]:
    """Return the aspect-ratio bins SanaPipeline picks by the transformer's sample size."""
    from diffusers.pipelines.sana import pipeline_sana as ps

    bins = {
        128: ps.ASPECT_RATIO_4096_BIN,
        64: ps.ASPECT_RATIO_2048_BIN,
        32: ps.ASPECT_RATIO_1024_BIN,
        16: ps.ASPECT_RATIO_512_BIN,
    }
    size = int(pipe.transformer.config.sample_size)
    if size not in bins:
        raise InvalidInputError(
            f"use_resolution_binning: no aspect-ratio bins for transformer sample_size {size}; "
            "pass use_resolution_binning=False"
        )
    return bins[size]


class SanaDenoiser(DiffusersDenoiser):
    """SANA adapter (velocity u = -v; 2 passes per evaluation with CFG).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline (its network, scheduler and VAE are used).
    conditioning : Conditioning
        The encoded prompts (``families.build`` makes them).
    guidance_scale : float
        The CFG scale.
    height, width : int
        Image size in pixels.
    use_resolution_binning : bool
        Generate at the nearest aspect-ratio bin and resize back, as the pipeline does.
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    """

    family = "sana"

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        guidance_scale: float = DEFAULT_GUIDANCE,
        height: int,
        width: int,
        use_resolution_binning: bool = True,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        self.output_size: tuple[int, int] | None = None
        if use_resolution_binning:
            self.output_size = (int(height), int(width))
            proc = pipe.image_processor
            height, width = proc.classify_height_width_bin(height, width, ratios=_bins(pipe))
        tr = pipe.transformer
        vsf = int(pipe.vae_scale_factor)
        shape = (int(tr.config.in_channels), int(height) // vsf, int(width) // vsf)
        super().__init__(
            pipe,
            tr,
            conditioning,
            schedule=RectifiedFlow(),
            prediction="velocity",
            guidance_scale=guidance_scale,
            latent_shape=shape,
            height=height,
            width=width,
            max_batch=max_batch,
            requires_grad=requires_grad,
        )
        self.num_train_timesteps = train_timesteps(pipe.scheduler)
        self.timestep_scale = float(getattr(tr.config, "timestep_scale", 1.0))

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        timestep = flow_timestep(t, self.num_train_timesteps).to(x.device, torch.float32)
        out = self.network(
            x,
            encoder_hidden_states=cond["encoder_hidden_states"].to(x.dtype),
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=timestep * self.timestep_scale,
            return_dict=False,
        )[0].float()
        if int(self.network.config.out_channels) // 2 == x.shape[1]:  # learned sigma
            out = out.chunk(2, dim=1)[0]
        return out  # type: ignore[no-any-return]

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -out

    def scheduler_kwargs(self, num_steps: int) -> dict[str, Any]:
        """Return the keyword arguments the pipeline passes to ``set_timesteps``.

        Parameters
        ----------
        num_steps : int
            The number of steps K.

        Returns
        -------
        dict
            Keyword arguments of ``scheduler.set_timesteps``.
        """
        return {}  # the scheduler's default sigmas, static shift

    def _vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        # AutoencoderDC encodes deterministically: a tensor, not a distribution with a mode
        out: torch.Tensor = self.pipe.vae.encode(pixels, return_dict=False)[0]
        return out

    def _vae_decode(self, lat: torch.Tensor) -> torch.Tensor:
        image: torch.Tensor = self.pipe.vae.decode(lat, return_dict=False)[0]
        if self.output_size is not None:
            h, w = self.output_size
            image = self.pipe.image_processor.resize_and_crop_tensor(image, w, h)
        return image
