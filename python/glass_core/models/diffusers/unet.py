"""Discrete-time VP families: SD 1.x / 2.x (eps- or v-prediction) and SDXL.

The schedule is glass_core's native ``VP.from_alphas_cumprod(scheduler.alphas_cumprod)``: diffusers
timestep k (k = 0 least noisy, T = len(table)) sits at t_k = 1 - (k + 1) / (T + 1), where
alpha_t^2 = alphas_cumprod[k]; between nodes log-SNR is piecewise linear. The network is queried at
the *continuous-time equivalent* timestep k(t) = (1 - t)(T + 1) - 1 (fractional between nodes; the
sinusoidal time embedding accepts it; docs/math.md §2). Input scale is 1 (the VP x_t is the
network input).

The adapter's prediction is the scheduler's (epsilon, v or x1); outside the trained nodes (below
the noisiest, including pure noise t = 0, and above the least noisy) the shared noise-end
convention of ``glass_core.models.base.query_time`` asks the network at the nearest node and
converts with the schedule there, so network time and conversion always agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from glass_core.errors import UnsupportedModelError
from glass_core.models.diffusers._conditioning import Conditioning, Tensors
from glass_core.models.diffusers.base import DiffusersDenoiser
from glass_core.schedules import VP

# diffusers' prediction_type -> glass_core's prediction
PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x1"}


def vp_schedule_from_scheduler(scheduler: Any) -> Any:
    """``VP.from_alphas_cumprod`` of a diffusers scheduler's ``alphas_cumprod`` (float64).

    Parameters
    ----------
    scheduler : SchedulerMixin
        A DDPM-like diffusers scheduler.

    Returns
    -------
    VP
        The schedule.
    """
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise UnsupportedModelError(
            f"pipe.scheduler: {type(scheduler).__name__} has no alphas_cumprod; SD/SDXL adapters "
            "need a discrete VP scheduler (DDIM, DDPM, Euler, DPM-Solver, ...)"
        )
    arr = torch.as_tensor(table).detach().to("cpu", torch.float64).numpy()
    return VP.from_alphas_cumprod(np.ascontiguousarray(arr))


class UNetDenoiser(DiffusersDenoiser):
    """SD 1.x/2.x and SDXL adapter around ``pipe.unet`` with classifier-free guidance.

    For SDXL pass ``add_time_ids`` ([6]: original size, crop top-left, target size), which the
    pipeline would build from (height, width); the pooled text embeddings come from the
    conditioning (``text_embeds``).

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
    family : str
        "sd" or "sdxl".
    add_time_ids : torch.Tensor, optional
        SDXL's added time ids [6] (given: the UNet gets them as ``time_ids``).
    max_batch : int, optional
        Network rows per forward pass, CFG rows included (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled (default: under no_grad).
    prediction_type : str, optional
        Overrides the scheduler's ``prediction_type``.

    Raises
    ------
    UnsupportedModelError
        A prediction type other than epsilon, v_prediction or sample.
    """

    def __init__(
        self,
        pipe: Any,
        conditioning: Conditioning,
        *,
        family: str,
        guidance_scale: float,
        height: int,
        width: int,
        add_time_ids: torch.Tensor | None = None,
        max_batch: int | None = None,
        requires_grad: bool = False,
        prediction_type: str | None = None,
    ) -> None:
        unet = pipe.unet
        sched = pipe.scheduler
        ptype = prediction_type or sched.config.get("prediction_type", "epsilon")
        if ptype not in PREDICTIONS:
            raise UnsupportedModelError(
                f"pipe.scheduler.config.prediction_type={ptype!r} is not one of "
                f"{tuple(PREDICTIONS)}"
            )
        vsf = int(pipe.vae_scale_factor)
        shape = (int(unet.config.in_channels), int(height) // vsf, int(width) // vsf)
        schedule = vp_schedule_from_scheduler(sched)
        if add_time_ids is not None:  # SDXL's added conditioning (sdxl.make_denoiser)
            ids = add_time_ids.reshape(1, -1).to(conditioning.cond["encoder_hidden_states"])
            b = conditioning.num_groups
            conditioning.cond["time_ids"] = ids.repeat(b, 1)
            if conditioning.uncond is not None:
                conditioning.uncond["time_ids"] = ids.repeat(b, 1)
        super().__init__(
            pipe,
            unet,
            conditioning,
            schedule=schedule,
            prediction=PREDICTIONS[ptype],
            guidance_scale=guidance_scale,
            latent_shape=shape,
            height=height,
            width=width,
            max_batch=max_batch,
            requires_grad=requires_grad,
        )
        self.family = family
        self.prediction_type = ptype
        self.num_train_timesteps = len(sched.alphas_cumprod)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Return the continuous-time equivalent diffusers timestep k(t).

        Snapped to the integer node when within 1e-6 of it (so grid times reproduce the
        pipeline's timesteps). The model layer asks only inside [t_{T-1}, t_0]; the clamp to
        [0, T-1] only absorbs rounding.

        Parameters
        ----------
        t : torch.Tensor
            glass_core times (float64).

        Returns
        -------
        torch.Tensor
            Diffusers timesteps.
        """
        times = np.ascontiguousarray(t.detach().to("cpu", torch.float64).numpy())
        k = torch.as_tensor(self.schedule.timestep_from_t(times)).reshape(t.shape)  # native
        k = k.clamp(0.0, self.num_train_timesteps - 1.0)
        r = k.round()
        return torch.where((k - r).abs() < 1e-6, r, k)

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        k = self.timestep(t).to(device=x.device, dtype=torch.float32)
        added = None
        if "time_ids" in cond:
            added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return self.network(
            x,
            k,
            encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=added,
            return_dict=False,
        )[0]

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return out  # already this adapter's prediction (CFG is linear, so it commutes with it)


def sdxl_add_time_ids(
    pipe: Any,
    height: int,
    width: int,
    *,
    original_size: tuple[int, int] | None = None,
    crops_coords_top_left: tuple[int, int] = (0, 0),
    target_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """SDXL's added time ids [6] as ``StableDiffusionXLPipeline`` builds them by default.

    Parameters
    ----------
    pipe : StableDiffusionXLPipeline
        The pipeline.
    height, width : int
        Image size in pixels.
    original_size, crops_coords_top_left, target_size : tuple of int
        The micro-conditioning (defaults: the image size, (0, 0)).

    Returns
    -------
    torch.Tensor
        The ids [6].
    """
    original_size = original_size or (height, width)
    target_size = target_size or (height, width)
    ids = list(original_size) + list(crops_coords_top_left) + list(target_size)
    expected = pipe.unet.add_embedding.linear_1.in_features
    te2 = getattr(pipe, "text_encoder_2", None)
    proj = te2.config.projection_dim if te2 is not None else None
    if proj is not None:
        passed = pipe.unet.config.addition_time_embed_dim * len(ids) + proj
        if passed != expected:
            raise UnsupportedModelError(
                f"pipe.unet expects an added embedding of {expected}, SDXL time ids give {passed}"
            )
    return torch.tensor(ids, dtype=torch.float32)
