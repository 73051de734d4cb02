"""Unconditional ``UNet2DModel`` pipelines (DDPMPipeline, the embedded digits model).

The adapter ``from_pipeline`` does not cover (it wraps text-conditioned FLUX/SD3/SD/SDXL pipelines).

Uses only ``pipe.unet`` and ``pipe.scheduler``'s config and converts at this boundary, with the
same conversions as the text-conditioned adapters (docs/math.md §1 and §2): flow-matching
schedulers are rectified flow with network timestep ``T * sigma`` and velocity ``u = -v``;
schedulers with ``alphas_cumprod`` use the native VP table schedule, its timestep mapping and the
scheduler's ``prediction_type`` as the denoiser's prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from glass_core.errors import UnsupportedModelError
from glass_core.meter import Meter
from glass_core.models.callable import from_callable
from glass_core.models.diffusers.base import images_to_output, module_device
from glass_core.models.diffusers.flow import flow_timestep, train_timesteps
from glass_core.models.diffusers.grids import default_time_grid
from glass_core.models.diffusers.unet import PREDICTIONS, vp_schedule_from_scheduler
from glass_core.schedules import RectifiedFlow, shifted_grid, uniform_grid

__all__ = [
    "UnconditionalPipelineModel",
    "from_unconditional_pipeline",
    "is_unconditional",
]


def from_unconditional_pipeline(pipe: Any, *, max_batch: int | None = None) -> Any:
    """Return a glass_core ``Denoiser`` for an unconditional ``UNet2DModel`` pipeline.

    The adapter ``glass_core.models.diffusers.from_pipeline`` does not cover (it wraps
    text-conditioned FLUX/SD3/SD/SDXL pipelines). Uses only ``pipe.unet`` and ``pipe.scheduler``'s
    config, converting at this boundary (docs/math.md §1 and §2):

    * flow-matching schedulers (``FlowMatchEulerDiscreteScheduler``): rectified flow, t = 1 - sigma,
      network timestep ``T * sigma``, velocity ``u = -v``. A static ``shift`` only moves the
      sampling grid (the network is queried at the shifted sigma itself), so it is accepted;
      use ``glass_core.schedules.shifted_grid`` for the pipeline's own grid.
    * schedulers with ``alphas_cumprod`` (DDPM, DDIM, ...): the native VP table schedule, network
      queried at the continuous-time equivalent (fractional) timestep; ``prediction_type``
      epsilon / v_prediction / sample is the denoiser's prediction (outside the table's nodes,
      e.g. at pure noise t = 0, the model layer asks at the nearest node: ``query_time``).

    The network runs in its own dtype (inputs cast, outputs cast back to the particles' dtype).
    The result carries ``.unet``, ``.sample_shape`` and ``.stats`` (:class:`CallStats`).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The unconditional pipeline (``pipe.unet``, ``pipe.scheduler``).
    max_batch : int, optional
        Network rows per forward pass (None: all at once).

    Returns
    -------
    DenoiserBase
        The denoiser.

    Raises
    ------
    UnsupportedModelError
        An unsupported scheduler or prediction type.
    """
    unet, sched = getattr(pipe, "unet", None), getattr(pipe, "scheduler", None)
    if unet is None or sched is None or type(unet).__name__ != "UNet2DModel":
        raise UnsupportedModelError(
            f"pipe: {type(pipe).__name__} is not an unconditional UNet2DModel pipeline (needs "
            f"pipe.unet: UNet2DModel and pipe.scheduler); text-conditioned pipelines go through "
            f"glass_core.models.diffusers"
        )
    cfg = sched.config
    num_t = train_timesteps(sched)
    vp_schedule = None
    if "FlowMatch" in type(sched).__name__:
        if cfg.get("use_dynamic_shifting", False):
            raise UnsupportedModelError("pipe.scheduler: dynamic shifting needs an image size")
        schedule = RectifiedFlow()
        prediction = "velocity"  # u = -v_diffusers, network timestep T * sigma = T (1 - t)

    elif getattr(sched, "alphas_cumprod", None) is not None:
        schedule = vp_schedule = vp_schedule_from_scheduler(sched)
        ptype = cfg.get("prediction_type", "epsilon")
        if ptype not in PREDICTIONS:
            raise UnsupportedModelError(f"pipe.scheduler: prediction_type {ptype!r} unsupported")
        prediction = PREDICTIONS[ptype]
    else:
        raise UnsupportedModelError(
            f"pipe.scheduler: {type(sched).__name__} is neither a flow-matching scheduler nor "
            f"one with alphas_cumprod"
        )
    meter = Meter()

    def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # t: one time per row in at least float32 (from_callable's contract), so timesteps are
        # not rounded to bf16/fp16 particles' dtype; a bf16/fp16 network sees its own dtype and
        # the particles stay in x's
        if vp_schedule is not None:
            k = vp_schedule.timestep_from_t(t.detach().to("cpu", torch.float64).numpy())
            k_t = torch.as_tensor(k, dtype=t.dtype, device=x.device)
            out = unet(x.to(unet.dtype), k_t).sample.to(x.dtype)
        else:
            out = -unet(x.to(unet.dtype), flow_timestep(t, num_t)).sample.to(x.dtype)
        return out

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return meter.model(network, x, t)

    model: Any = from_callable(fn, prediction=prediction, schedule=schedule, max_batch=max_batch)
    size = unet.config.sample_size
    hw = (size, size) if isinstance(size, int) else tuple(size)
    model.unet = unet
    model.sample_shape = (int(unet.config.in_channels), *hw)
    model.meter = meter
    return model


def is_unconditional(pipe: Any) -> bool:
    """Return whether ``pipe`` is an unconditional ``UNet2DModel`` pipeline.

    E.g. ``DDPMPipeline``, the embedded default model, which :func:`glass_core.steer` wraps with
    :class:`UnconditionalPipelineModel`.

    Parameters
    ----------
    pipe : Any
        The object passed as a pipeline.

    Returns
    -------
    bool
        True for an unconditional ``UNet2DModel`` pipeline.
    """
    unet = getattr(pipe, "unet", None)
    return unet is not None and any(c.__name__ == "UNet2DModel" for c in type(unet).__mro__)


class UnconditionalPipelineModel:
    """An unconditional UNet2DModel pipeline as :func:`glass_core.steer` uses a diffusers adapter.

    The Denoiser of :func:`from_unconditional_pipeline` plus counters, the pipeline's step grid
    and the DDPMPipeline post-processing (samples in [-1, 1] -> images in [0, 1]). Latents are
    the samples themselves; there are no prompts, so B groups come only from a list of
    generators.

    Parameters
    ----------
    pipe : DiffusionPipeline
        The unconditional pipeline.
    num_groups : int
        B (one per generator).
    max_batch : int, optional
        Network rows per forward pass (None: all at once).
    """

    family = "unconditional"
    passes_per_eval = 1
    media = "image"
    prompts = None

    def __init__(self, pipe: Any, num_groups: int, max_batch: int | None) -> None:
        self.pipe = pipe
        self.inner = from_unconditional_pipeline(pipe, max_batch=max_batch)
        self.schedule = self.inner.schedule
        self.latent_shape = tuple(self.inner.sample_shape)
        self.num_groups = num_groups
        self.num_train_timesteps = train_timesteps(pipe.scheduler)
        self.meter: Meter = self.inner.meter

    def denoise(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Return the denoised estimate D_t(x) of the data.

        Parameters
        ----------
        x : torch.Tensor
            Inputs [M, ...].
        t : float or tensor
            One time in [0, 1], or one per row.

        Returns
        -------
        torch.Tensor
            Shaped like x.
        """
        self.meter.evaluations += 1
        out: torch.Tensor = self.inner.denoise(x, t)
        return out

    def velocity(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Return the velocity of the probability-flow ODE at (x, t).

        Parameters
        ----------
        x : torch.Tensor
            Inputs [M, ...].
        t : float or tensor
            One time in [0, 1], or one per row.

        Returns
        -------
        torch.Tensor
            Shaped like x.
        """
        self.meter.evaluations += 1
        out: torch.Tensor = self.inner.velocity(x, t)
        return out

    @property
    def num_evaluations(self) -> int:
        """Return the denoiser evaluations so far."""
        return self.meter.evaluations

    @property
    def device(self) -> torch.device:
        """Return the device the model runs on."""
        return module_device(self.pipe.unet)

    @property
    def model_time(self) -> float:
        """Return the seconds spent in the network (when timed)."""
        return self.meter.model_seconds

    @property
    def num_forward_rows(self) -> int:
        """Return the network rows run so far (CFG rows included)."""
        return self.meter.forward_rows

    def time_grid(self, num_steps: int) -> np.ndarray:
        """Return the step grid for ``num_steps`` transitions.

        Flow matching: uniform in t = 1 - sigma, or ``shifted_grid`` for a static shift;
        DDPM/DDIM-like schedulers: the scheduler's own timesteps, as for SD pipelines.

        Parameters
        ----------
        num_steps : int
            The number of transitions K.

        Returns
        -------
        ndarray
            K + 1 increasing times from 0 to 1, float64.
        """
        if "FlowMatch" not in type(self.pipe.scheduler).__name__:
            return default_time_grid(self, num_steps)  # family is not flux/sd3: the VP grid
        shift = float(self.pipe.scheduler.config.get("shift", 1.0))
        grid = uniform_grid(num_steps) if shift == 1.0 else shifted_grid(num_steps, shift)
        return np.asarray(grid, dtype=np.float64)

    def decode(self, z: torch.Tensor, *, max_batch: int | None = None) -> torch.Tensor:
        """Decode latents to images in [0, 1].

        Parameters
        ----------
        z : torch.Tensor
            Samples [M, C, H, W] in [-1, 1].
        max_batch : int, optional
            Unused (no VAE); kept for the interface.

        Returns
        -------
        torch.Tensor
            Images in [0, 1].
        """
        self.meter.decodes += 1
        return (z.float() / 2 + 0.5).clamp(0, 1)

    def encode(self, image: Any, *, max_batch: int | None = None) -> torch.Tensor:
        """Encode images as samples in [-1, 1] (the inverse of ``decode``).

        Images: PIL, list, ndarray, or a tensor [M, C, H, W] in [0, 1]; resized to the sample size.

        Parameters
        ----------
        image : PIL image, list, ndarray or torch.Tensor
            One image or one per row.
        max_batch : int, optional
            Unused (no VAE); kept for the interface.

        Returns
        -------
        torch.Tensor
            Samples [M, C, H, W].
        """
        from diffusers.image_processor import VaeImageProcessor

        c, h, w = self.latent_shape
        proc = VaeImageProcessor(vae_scale_factor=1, do_convert_grayscale=c == 1)
        return proc.preprocess(image, height=h, width=w).to(self.device, torch.float32)

    def to_output(self, images: torch.Tensor, output_type: str) -> Any:
        """Images in [0, 1] as "pt" | "np" | "pil" (grey-scale PIL images for one channel).

        Parameters
        ----------
        images : torch.Tensor
            Images in [0, 1].
        output_type : str
            "pt" | "np" | "pil".

        Returns
        -------
        torch.Tensor, ndarray or list
            The images in that type.
        """
        return images_to_output(images, output_type)
