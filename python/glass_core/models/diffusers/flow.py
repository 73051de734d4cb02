"""Rectified-flow families: FLUX.1 (dev/schnell) and SD3/SD3.5.

Diffusers runs time backwards, sigma = 1 - t (sigma = 1 is noise), with
x = (1 - sigma) z + sigma eps, and predicts v = eps - z. In glass_core's convention
(RectifiedFlow schedule: alpha = t, sigma = 1 - t) the marginal velocity is
u_t(x) = -v(x, sigma = 1 - t), the adapter's native prediction ("velocity"). The static or dynamic
(mu from the image sequence length) time shift of these pipelines is a property of the *time
grid*, not of the model (see ``default_time_grid``).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.diffusers import flux1, sd3
from glass_core.models.diffusers._conditioning import Conditioning, Tensors
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.models.diffusers.grids import flux_sigmas, scheduler_mu
from glass_core.schedules import RectifiedFlow


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """[M, C, h, w] -> FLUX tokens [M, (h/2)(w/2), 4C] (FluxPipeline._pack_latents layout).

    Parameters
    ----------
    x : torch.Tensor
        Latents [M, C, h, w].

    Returns
    -------
    torch.Tensor
        Tokens [M, (h/2)(w/2), 4C].
    """
    m, c, h, w = x.shape
    x = x.view(m, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(m, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """FLUX tokens [M, (h/2)(w/2), 4C] -> [M, C, h, w] (inverse of `pack_latents`).

    Parameters
    ----------
    x : torch.Tensor
        Tokens [M, (h/2)(w/2), 4C].
    h, w : int
        The latent height and width.

    Returns
    -------
    torch.Tensor
        Latents [M, C, h, w].
    """
    m, _, ch = x.shape
    x = x.view(m, h // 2, w // 2, ch // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(m, ch // 4, h, w)


def train_timesteps(scheduler: Any) -> int:
    """Return a scheduler's number of training timesteps T.

    1000, the default of every diffusers scheduler, when its config does not say.
    """
    return int(scheduler.config.get("num_train_timesteps", 1000))


def flow_timestep(t: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Return the network timestep of a flow-matching model at glass_core time t.

    T * sigma with the diffusers sigma = 1 - t (docs/math.md §1).

    Parameters
    ----------
    t : torch.Tensor
        glass_core times (float64).
    num_train_timesteps : int
        The scheduler's T.

    Returns
    -------
    torch.Tensor
        The network timesteps.
    """
    return (1.0 - t) * num_train_timesteps


class FluxDenoiser(DiffusersDenoiser):
    """FLUX.1 adapter.

    Particles live unpacked, ``[M, C, h, w]`` with C = in_channels / 4; they are packed into 2x2
    patches (and given FLUX's image ids) only at the network call.

    ``guidance_scale`` is FLUX-dev's distilled guidance *input* (ignored by schnell, whose
    transformer has no guidance embedding); ``true_cfg_scale`` > 1 with a negative prompt runs true
    CFG (2 forward passes per evaluation), as ``FluxPipeline`` does.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The family's pipeline (its network, scheduler and VAE are used).
    conditioning : Conditioning
        The encoded prompts (``families.build`` makes them).
    guidance_scale : float
        The distilled guidance input.
    height, width : int
        Image size in pixels.
    true_cfg_scale : float
        True CFG scale (runs with negatives in ``conditioning``).
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    """

    family = "flux"

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        guidance_scale: float = flux1.DEFAULT_GUIDANCE,
        true_cfg_scale: float = 1.0,
        height: int,
        width: int,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        tr = pipe.transformer
        vsf = int(pipe.vae_scale_factor)
        h = 2 * (int(height) // (vsf * 2))
        w = 2 * (int(width) // (vsf * 2))
        c = int(tr.config.in_channels) // 4
        super().__init__(
            pipe,
            tr,
            conditioning,
            schedule=RectifiedFlow(),
            prediction="velocity",
            guidance_scale=true_cfg_scale,
            latent_shape=(c, h, w),
            height=height,
            width=width,
            max_batch=max_batch,
            requires_grad=requires_grad,
        )
        self.distilled_guidance = float(guidance_scale)
        self.has_guidance_embeds = bool(getattr(tr.config, "guidance_embeds", False))
        dev, dt = self.device, self.dtype
        self.img_ids = type(pipe)._prepare_latent_image_ids(1, h // 2, w // 2, dev, dt)
        seq = conditioning.cond["encoder_hidden_states"].shape[1]
        self.txt_ids = torch.zeros(seq, 3, device=dev, dtype=dt)

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        m, _, h, w = x.shape
        guidance = None
        if self.has_guidance_embeds:
            guidance = torch.full(
                (m,), self.distilled_guidance, device=x.device, dtype=torch.float32
            )
        v = self.network(
            hidden_states=pack_latents(x),
            timestep=(1.0 - t).to(device=x.device, dtype=x.dtype),
            guidance=guidance,
            pooled_projections=cond["pooled_projections"],
            encoder_hidden_states=cond["encoder_hidden_states"],
            txt_ids=self.txt_ids,
            img_ids=self.img_ids,
            return_dict=False,
        )[0]
        return unpack_latents(v, h, w)

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -out  # u = -v

    @property
    def image_seq_len(self) -> int:
        """Return the number of image tokens the transformer sees."""
        _, h, w = self.latent_shape
        return (h // 2) * (w // 2)

    def scheduler_kwargs(self, num_steps: int) -> dict[str, Any]:
        """``set_timesteps`` arguments FluxPipeline passes: linear sigmas, dynamic-shift mu.

        Parameters
        ----------
        num_steps : int
            The number of steps K.

        Returns
        -------
        dict
            Keyword arguments of ``scheduler.set_timesteps``.
        """
        use_mu = self.pipe.scheduler.config.get("use_dynamic_shifting", False)
        mu = {"mu": scheduler_mu(self, 1.15)} if use_mu else {}
        return {"sigmas": flux_sigmas(self, num_steps), **mu}


class SD3Denoiser(DiffusersDenoiser):
    """SD3 / SD3.5 adapter.

    Network timestep = 1000 * sigma, true CFG with ``guidance_scale`` (2 forward passes per
    evaluation when guidance_scale > 1).

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
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    """

    family = "sd3"

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        guidance_scale: float = sd3.DEFAULT_GUIDANCE,
        height: int,
        width: int,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
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

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        timestep = flow_timestep(t, self.num_train_timesteps).to(x.device, torch.float32)
        return self.network(
            hidden_states=x,
            timestep=timestep,
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            return_dict=False,
        )[0]

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -out

    @property
    def image_seq_len(self) -> int:
        """Return the number of image tokens the transformer sees."""
        p = int(self.network.config.patch_size)
        _, h, w = self.latent_shape
        return (h // p) * (w // p)

    def scheduler_kwargs(self, num_steps: int) -> dict[str, Any]:
        """``set_timesteps`` arguments SD3's pipeline passes: default sigmas, mu if dynamic.

        Parameters
        ----------
        num_steps : int
            The number of steps K.

        Returns
        -------
        dict
            Keyword arguments of ``scheduler.set_timesteps``.
        """
        use_mu = self.pipe.scheduler.config.get("use_dynamic_shifting", False)
        return {"mu": scheduler_mu(self, 1.16)} if use_mu else {}
