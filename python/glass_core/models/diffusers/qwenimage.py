"""Qwen-Image: ``QwenImagePipeline`` (Qwen2.5-VL text encoder, MMDiT over 2x2-packed latents).

Particles are the unpacked latents ``[M, C, h, w]`` (the pipeline draws its noise as
``[B, 1, C, h, w]``: the same numbers); they are packed into 2x2 patches at the network call
(FLUX.1's layout). The network timestep is sigma = 1 - t. The step grid is ``linspace(1, 1/n, n)``
with the scheduler's own shift (Qwen-Image: exponential, dynamic ``mu`` from the sequence length,
``shift_terminal``). True CFG (``true_cfg_scale`` > 1 with a negative prompt) runs the two
branches as separate calls (their text lengths differ) and rescales the guided prediction to the
conditional one's norm per token, as the pipeline does. The VAE is a (one-frame) video VAE
normalised by ``latents_mean`` / ``latents_std`` (no scaling factor).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers._conditioning import Conditioning, Tensors
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.models.diffusers.flow import pack_latents, unpack_latents
from glass_core.models.diffusers.grids import linear_sigmas, scheduler_mu
from glass_core.schedules import RectifiedFlow

#: no distilled guidance input by default (only guidance-distilled transformers take one)
DEFAULT_GUIDANCE: float | None = None

ENCODE_OPTIONS = ("max_sequence_length",)


def _embeds(pe: torch.Tensor, mask: torch.Tensor | None) -> Tensors:
    out = {"encoder_hidden_states": pe}
    if mask is not None:
        out["encoder_hidden_states_mask"] = mask
    return out


def encode(
    pipe: Any,
    prompts: list[str] | None,
    negs: list[str] | None,
    embeds: dict[str, Any],
    do_cfg: bool,
    device: torch.device,
    kw: dict[str, Any],
) -> tuple[Tensors, Tensors | None]:
    """Prompt (and, with true CFG, negative prompt) embeddings and masks via encode_prompt.

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
    pe, mask = pipe.encode_prompt(
        prompt=prompts, device=device, prompt_embeds=embeds.get("prompt_embeds"), **kw
    )
    if not do_cfg:
        return _embeds(pe, mask), None
    npe, nmask = pipe.encode_prompt(
        prompt=negs, device=device, prompt_embeds=embeds.get("negative_prompt_embeds"), **kw
    )
    return _embeds(pe, mask), _embeds(npe, nmask)


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


def does_cfg(pipe: Any, true_cfg_scale: float, has_negative: bool) -> bool:
    """Return whether classifier-free guidance runs for this scale and negative prompt.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline.
    true_cfg_scale : float
        The scale of the family's classifier-free guidance.
    has_negative : bool
        Whether a negative prompt or negative embeddings were given.

    Returns
    -------
    bool
        True when each evaluation runs the negative rows too.
    """
    return true_cfg_scale > 1.0 and has_negative


class QwenImageDenoiser(DiffusersDenoiser):
    """Qwen-Image adapter (velocity u = -v; 2 passes per evaluation with true CFG).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline (its network, scheduler and VAE are used).
    conditioning : Conditioning
        The encoded prompts (``families.build`` makes them).
    guidance_scale : float
        The guidance embedding where the transformer has one (else unused).
    height, width : int
        Image size in pixels.
    true_cfg_scale : float
        True CFG scale (runs with negatives in ``conditioning``).
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    """

    family = "qwenimage"

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        guidance_scale: float | None = None,
        true_cfg_scale: float = 4.0,
        height: int,
        width: int,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        tr = pipe.transformer
        vsf = int(pipe.vae_scale_factor)
        h, w = 2 * (int(height) // (vsf * 2)), 2 * (int(width) // (vsf * 2))
        super().__init__(
            pipe,
            tr,
            conditioning,
            schedule=RectifiedFlow(),
            prediction="velocity",
            guidance_scale=true_cfg_scale,
            latent_shape=(int(tr.config.in_channels) // 4, h, w),
            height=height,
            width=width,
            max_batch=max_batch,
            requires_grad=requires_grad,
        )
        embeds = bool(getattr(tr.config, "guidance_embeds", False))
        if embeds and guidance_scale is None:
            from glass_core.errors import InvalidInputError

            raise InvalidInputError("guidance_scale is required for a guidance-distilled model")
        self.distilled_guidance = guidance_scale if embeds else None

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        m, _, h, w = x.shape
        guidance = None
        if self.distilled_guidance is not None:
            guidance = torch.full((m,), self.distilled_guidance, device=x.device)
        return self.network(  # type: ignore[no-any-return]
            hidden_states=pack_latents(x),
            timestep=(1.0 - t).to(device=x.device, dtype=x.dtype),
            guidance=guidance,
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_hidden_states_mask=cond.get("encoder_hidden_states_mask"),
            img_shapes=[[(1, h // 2, w // 2)]] * m,
            return_dict=False,
        )[0]

    def _guided(self, x: torch.Tensor, t: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        c = self.conditioning
        out = self._timed(x, t, c.select(c.cond, groups))
        if c.uncond is None:
            return out
        neg = self._timed(x, t, c.select(c.uncond, groups))
        comb = neg + self.guidance_scale * (out - neg)
        scale = torch.norm(out, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True)
        return comb * scale

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -unpack_latents(out, x.shape[-2], x.shape[-1])

    @property
    def image_seq_len(self) -> int:
        """Return the number of image tokens the transformer sees."""
        _, h, w = self.latent_shape
        return (h // 2) * (w // 2)

    def scheduler_kwargs(self, num_steps: int) -> dict[str, Any]:
        """Linear sigmas and the dynamic-shift mu, which QwenImagePipeline always passes.

        Parameters
        ----------
        num_steps : int
            The number of steps K.

        Returns
        -------
        dict
            Keyword arguments of ``scheduler.set_timesteps``.
        """
        return {"sigmas": linear_sigmas(num_steps), "mu": scheduler_mu(self, 1.15)}

    def _vae_decode(self, lat: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pipe.vae.decode(lat.unsqueeze(2), return_dict=False)[0]
        return out[:, :, 0]

    def _vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pipe.vae.encode(pixels.unsqueeze(2), return_dict=False)[0].mode()
        return out[:, :, 0]
