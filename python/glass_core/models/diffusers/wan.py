"""Wan 2.x text-to-video.

``WanPipeline`` with one transformer (Wan 2.1-style; the two-expert Wan 2.2 A14B checkpoints,
``transformer_2``, are not supported).

Particles are video latents ``[M, C, F', h, w]`` with F' = (num_frames - 1) / 4 + 1 (the
pipeline's noise layout), normalised by the VAE's ``latents_mean`` / ``latents_std`` (no scaling
factor). The network timestep is ``T * sigma``; CFG (guidance_scale > 1, negative prompt "" by
default) batches the negative and conditional rows. Decoded videos are ``[M, F, 3, H, W]`` in
[0, 1]; an image reward scores every frame and averages (``rewards.adapters``), a
``video_reward`` gets the whole videos.
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core._warnings import warn_caller
from glass_core.models.diffusers._conditioning import Conditioning, Tensors, cfg_above_one
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.models.diffusers.flow import flow_timestep, train_timesteps
from glass_core.schedules import RectifiedFlow

#: the pipeline's default CFG scale (guidance_scale), used when none is given
DEFAULT_GUIDANCE: float = 5.0

ENCODE_OPTIONS = ("max_sequence_length",)
MODEL_OPTIONS = ("num_frames",)


def encode(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    embeds: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
    """T5 embeddings of the prompts and (with CFG) the negatives, via encode_prompt.

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
        Further keyword arguments of ``encode_prompt``.

    Returns
    -------
    tuple of dict
        The conditional and (with CFG, else None) unconditional network inputs, ``[B, ...]``.
    """
    pe, npe = pipe.encode_prompt(
        prompt=prompts,
        negative_prompt=negs,
        do_classifier_free_guidance=do_cfg,
        prompt_embeds=embeds.get("prompt_embeds"),
        negative_prompt_embeds=embeds.get("negative_prompt_embeds"),
        device=device,
        **kw,
    )
    cond = {"encoder_hidden_states": pe}
    return cond, ({"encoder_hidden_states": npe} if do_cfg else None)


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
    return 16  # WanPipeline.check_inputs


does_cfg = cfg_above_one


def latent_frames(pipe: Any, num_frames: int) -> int:
    """Return the latent frames for ``num_frames``.

    Rounded as the pipeline does when num_frames - 1 is not a multiple of the VAE's temporal
    factor.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.
    num_frames : int
        Video frames.

    Returns
    -------
    int
        Latent frames.
    """
    k = int(pipe.vae_scale_factor_temporal)
    if num_frames % k != 1:
        warn_caller(f"num_frames - 1 has to be divisible by {k}; rounding as WanPipeline does")
        num_frames = num_frames // k * k + 1
    return (num_frames - 1) // k + 1


class WanDenoiser(DiffusersDenoiser):
    """Wan 2.x text-to-video adapter (velocity u = -v; 2 passes per evaluation with CFG).

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
    num_frames : int
        Video frames.
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    """

    family = "wan"
    media = "video"

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        guidance_scale: float = DEFAULT_GUIDANCE,
        height: int,
        width: int,
        num_frames: int = 81,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        tr = pipe.transformer
        vsf = int(pipe.vae_scale_factor_spatial)
        shape = (
            int(tr.config.in_channels),
            latent_frames(pipe, int(num_frames)),
            int(height) // vsf,
            int(width) // vsf,
        )
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

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        return self.network(  # type: ignore[no-any-return]
            hidden_states=x,
            timestep=flow_timestep(t, self.num_train_timesteps).to(x.device, torch.float32),
            encoder_hidden_states=cond["encoder_hidden_states"],
            return_dict=False,
        )[0]

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
        return {}  # WanPipeline: set_timesteps(num_inference_steps), the scheduler's own shift

    def _vae_decode(self, lat: torch.Tensor) -> torch.Tensor:
        video: torch.Tensor = self.pipe.vae.decode(lat, return_dict=False)[0]
        return video.transpose(1, 2)  # [m, 3, F, H, W] -> frames first: [m, F, 3, H, W]

    def encode(self, image: Any, *, max_batch: int | None = None) -> torch.Tensor:
        """Refuse: editing an existing video (``steer(image=...)``) is not supported for Wan.

        Raises
        ------
        InvalidInputError
            Always.
        """
        from glass_core.errors import InvalidInputError

        raise InvalidInputError("image: editing an existing video is not supported for Wan")
