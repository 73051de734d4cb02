"""FLUX.2.

``Flux2Pipeline`` ([dev], Mistral-3 text encoder, guidance embedding) and ``Flux2KleinPipeline``
([klein], Qwen3 text encoder, true CFG against "" unless distilled).

Particles are the pipeline's own noise layout, ``[M, in_channels, h/2, w/2]`` (2x2-patchified VAE
latents, batch-normalised by the VAE's ``bn`` statistics); they become tokens ``[M, hw, C]`` only
at the network call. The network timestep is sigma = 1 - t (the pipeline passes t_diffusers/1000);
the step grid is ``linspace(1, 1/n, n)`` shifted with FLUX.2's empirical ``mu`` (a function of the
sequence length and of n).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers._conditioning import Conditioning, Tensors
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.models.diffusers.grids import flux_sigmas
from glass_core.schedules import RectifiedFlow

#: the pipeline's default guidance_scale ([dev]: distilled guidance input; [klein]: true CFG)
DEFAULT_GUIDANCE: float = 4.0

#: steer/from_pipeline options passed to ``encode_prompt`` under the pipeline's own names
ENCODE_OPTIONS = ("max_sequence_length", "text_encoder_out_layers")


def is_klein(pipe: Any) -> bool:
    """Return whether ``pipe`` is a FLUX.2 [klein] pipeline.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.

    Returns
    -------
    bool
        True for ``Flux2KleinPipeline`` (or a subclass).
    """
    return any(c.__name__ == "Flux2KleinPipeline" for c in type(pipe).__mro__)


def encode(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    embeds: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
    """Prompt embeddings through ``pipe.encode_prompt``.

    The negative ("" unless given) only with true CFG ([klein]).

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
    pe, _ = pipe.encode_prompt(
        prompt=prompts, device=device, prompt_embeds=embeds.get("prompt_embeds"), **kw
    )
    if not do_cfg:
        return {"encoder_hidden_states": pe}, None
    npe_given = embeds.get("negative_prompt_embeds")
    negs = None if npe_given is not None else (negs or [""] * pe.shape[0])
    npe, _ = pipe.encode_prompt(prompt=negs, device=device, prompt_embeds=npe_given, **kw)
    return {"encoder_hidden_states": pe}, {"encoder_hidden_states": npe}


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
    return 2 * int(pipe.vae_scale_factor)


def does_cfg(pipe: Any, guidance_scale: float, has_negative: bool) -> bool:
    """[klein] runs true CFG when guidance_scale > 1 and it is not distilled; [dev] never.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.
    guidance_scale : float
        The scale of the family's classifier-free guidance.
    has_negative : bool
        Whether a negative prompt or negative embeddings were given.

    Returns
    -------
    bool
        True when each evaluation runs the negative rows too.
    """
    distilled = bool(getattr(pipe.config, "is_distilled", False))
    return is_klein(pipe) and guidance_scale > 1.0 and not distilled


def patchify(lat: torch.Tensor) -> torch.Tensor:
    """[M, C, H, W] -> [M, 4C, H/2, W/2] (``Flux2Pipeline._patchify_latents``).

    Parameters
    ----------
    lat : torch.Tensor
        VAE latents [M, C, H, W].

    Returns
    -------
    torch.Tensor
        Patched latents [M, 4C, H/2, W/2].
    """
    m, c, h, w = lat.shape
    lat = lat.view(m, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return lat.reshape(m, c * 4, h // 2, w // 2)


def unpatchify(z: torch.Tensor) -> torch.Tensor:
    """[M, 4C, h, w] -> [M, C, 2h, 2w] (``Flux2Pipeline._unpatchify_latents``).

    Parameters
    ----------
    z : torch.Tensor
        Patched latents [M, 4C, h, w].

    Returns
    -------
    torch.Tensor
        VAE latents [M, C, 2h, 2w].
    """
    m, c, h, w = z.shape
    z = z.reshape(m, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return z.reshape(m, c // 4, h * 2, w * 2)


class Flux2Denoiser(DiffusersDenoiser):
    """FLUX.2 [dev] / [klein] adapter (velocity u = -v, one pass, two with [klein]'s CFG).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline (its network, scheduler and VAE are used).
    conditioning : Conditioning
        The encoded prompts (``families.build`` makes them).
    guidance_scale : float
        The guidance embedding ([dev]) or CFG scale ([klein]).
    height, width : int
        Image size in pixels.
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    """

    family = "flux2"

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        guidance_scale: float = DEFAULT_GUIDANCE,
        height: int,
        width: int,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        tr = pipe.transformer
        vsf = int(pipe.vae_scale_factor)
        h, w = int(height) // (vsf * 2), int(width) // (vsf * 2)
        super().__init__(
            pipe,
            tr,
            conditioning,
            schedule=RectifiedFlow(),
            prediction="velocity",
            guidance_scale=guidance_scale,
            latent_shape=(int(tr.config.in_channels), h, w),
            height=height,
            width=width,
            max_batch=max_batch,
            requires_grad=requires_grad,
        )
        self.family = "flux2_klein" if is_klein(pipe) else "flux2"
        self.has_guidance_embeds = bool(getattr(tr.config, "guidance_embeds", False))
        cls = type(pipe)
        dev = self.device
        self.img_ids = cls._prepare_latent_ids(torch.zeros(1, 1, h, w))[0].to(dev)
        self.txt_ids = cls._prepare_text_ids(conditioning.cond["encoder_hidden_states"][:1])
        self.txt_ids = self.txt_ids[0].to(dev)

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        m, c, h, w = x.shape
        guidance = None
        if self.has_guidance_embeds and self.family == "flux2":
            guidance = torch.full((m,), self.guidance_scale, device=x.device, dtype=torch.float32)
        v = self.network(
            hidden_states=x.reshape(m, c, h * w).permute(0, 2, 1),
            timestep=(1.0 - t).to(device=x.device, dtype=x.dtype),
            guidance=guidance,
            encoder_hidden_states=cond["encoder_hidden_states"],
            txt_ids=self.txt_ids,
            img_ids=self.img_ids,
            return_dict=False,
        )[0]
        return v[:, : h * w].permute(0, 2, 1).reshape(m, c, h, w)

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -out

    @property
    def image_seq_len(self) -> int:
        """Return the number of image tokens the transformer sees."""
        _, h, w = self.latent_shape
        return h * w

    def scheduler_kwargs(self, num_steps: int) -> dict[str, Any]:
        """Linear sigmas shifted with FLUX.2's empirical mu (the pipeline's own function).

        Parameters
        ----------
        num_steps : int
            The number of steps K.

        Returns
        -------
        dict
            Keyword arguments of ``scheduler.set_timesteps``.
        """
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        mu = compute_empirical_mu(image_seq_len=self.image_seq_len, num_steps=num_steps)
        return {"sigmas": flux_sigmas(self, num_steps), "mu": mu}

    def _bn(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn, eps = self.pipe.vae.bn, self.pipe.vae.config.batch_norm_eps
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps).to(like.device, like.dtype)
        return mean, std

    def _vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn(z)
        return unpatchify(z * std + mean)

    def _network_latents(self, lat: torch.Tensor) -> torch.Tensor:
        z = patchify(lat)
        mean, std = self._bn(z)
        return (z - mean) / std
