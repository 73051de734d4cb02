"""Shared machinery of the diffusers adapters.

Conditioning per particle row, classifier-free guidance, micro-batching, timing/counters and VAE
decoding.

Rows of a particle batch are group-major: with B prompts and a batch of M = B * n rows, row i
belongs to prompt i // n. The adapters micro-batch network calls themselves (``max_batch`` rows per
forward pass, CFG rows included), so callers should hand them whole batches (do not also
micro-batch from outside: a slice of rows loses the row -> prompt mapping; a batch size that is
not a multiple of B raises).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from glass_core._checks import optional_positive_int
from glass_core.errors import InvalidInputError
from glass_core.meter import Meter, chunked
from glass_core.models.base import DenoiserBase
from glass_core.models.diffusers._conditioning import Conditioning, Tensors
from glass_core.schedules import Schedule


def module_device(module: torch.nn.Module) -> torch.device:
    """Return the device a module's inputs must be on.

    Diffusers' own helper when available; otherwise an accelerate offload hook's execution device,
    else the parameters' device.

    Parameters
    ----------
    module : torch.nn.Module
        A pipeline component.

    Returns
    -------
    torch.device
        The device.
    """
    try:
        from diffusers.utils.torch_utils import get_module_execution_device
    except ImportError:  # diffusers < 0.42
        for sub in module.modules():
            dev = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
            if dev is not None:
                return torch.device(dev)
        return next(module.parameters()).device
    return get_module_execution_device(module)


class VideoFrames(list):  # type: ignore[type-arg]
    """One video as its list of PIL frames that also saves like an image.

    As diffusers' video pipelines return them; ``save(path)`` writes an animated file (APNG for
    .png, GIF, WebP).
    """

    def save(self, fp: Any, format: str | None = None, **params: Any) -> None:
        """Save the frames as an animated image (PIL's ``save_all`` with the other frames).

        Parameters
        ----------
        fp : str, PathLike or file
            Where to write.
        format : str, optional
            PIL's format name (default: from the file name).
        **params
            Further PIL save options (``loop`` defaults to 0: forever).
        """
        params.setdefault("loop", 0)
        self[0].save(fp, format, save_all=True, append_images=list(self[1:]), **params)


def images_to_output(images: torch.Tensor, output_type: str) -> Any:
    """Images ``[M, C, H, W]`` (or videos ``[M, F, C, H, W]``) in [0, 1] as ``output_type``.

    "pt" as they are, "np" channels-last ndarrays, "pil" a list of PIL images (videos: a list of
    :class:`VideoFrames`, frame lists as diffusers' video pipelines give, which save as animated
    files).

    Parameters
    ----------
    images : torch.Tensor
        Images or videos in [0, 1].
    output_type : str
        "pt" | "np" | "pil".

    Returns
    -------
    torch.Tensor, ndarray or list
        The images in that type.

    Raises
    ------
    InvalidInputError
        Another output_type.
    """
    if output_type == "pt":
        return images
    if output_type == "np":
        return images.detach().movedim(-3, -1).cpu().float().numpy()
    if output_type != "pil":
        raise InvalidInputError(f"output_type must be 'pt', 'np' or 'pil', got {output_type!r}")
    from PIL import Image

    u8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = u8.movedim(-3, -1).cpu().numpy()
    if arr.ndim == 5:
        return [VideoFrames(Image.fromarray(f) for f in v) for v in arr]
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


class DiffusersDenoiser(DenoiserBase):
    """A glass_core Denoiser around a diffusers pipeline's network (t=0 noise, t=1 data).

    Attributes: ``pipe``, ``family``, ``network`` (``pipe.transformer`` or ``pipe.unet``),
    ``conditioning``, ``guidance_scale``, ``latent_shape`` (one particle, in the unpacked scaled
    latent space the VAE decodes), ``passes_per_eval`` (2 with true CFG), counters
    ``num_evaluations`` (denoiser calls), ``num_forward_rows`` (network rows processed),
    ``num_forward_passes`` (network rows per particle: evaluations x CFG passes), and
    ``model_time`` (seconds inside network forward passes, device-synchronised; 0 unless
    ``meter.timed``), all read from ``meter`` (:class:`glass_core.meter.Meter`).

    Parameters
    ----------
    pipe : DiffusionPipeline
        The pipeline.
    network : torch.nn.Module
        Its denoising network.
    conditioning : Conditioning
        The encoded prompts.
    schedule : Schedule
        The noise schedule in glass_core time.
    prediction : str
        What the network's output converts to (``PREDICTIONS``).
    guidance_scale : float
        The CFG scale (CFG runs when the conditioning has negatives).
    latent_shape : tuple of int
        One particle's shape.
    height, width : int
        Image size in pixels.
    max_batch : int, optional
        Network rows per forward pass (None: all at once).
    requires_grad : bool
        Run the network with autograd enabled.
    """

    family: str = ""

    def __init__(
        self,
        pipe: Any,
        network: Any,
        conditioning: Conditioning,
        *,
        schedule: Schedule,
        prediction: str,
        guidance_scale: float,
        latent_shape: tuple[int, ...],
        height: int,
        width: int,
        max_batch: int | None = None,
        requires_grad: bool = False,
    ) -> None:
        super().__init__(schedule, prediction=prediction, max_batch=None)
        optional_positive_int(max_batch, "max_batch")
        self.pipe = pipe
        self.network = network
        self.conditioning = conditioning
        self.guidance_scale = float(guidance_scale)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.height = int(height)
        self.width = int(width)
        self.network_max_batch = max_batch
        self.requires_grad = requires_grad
        self.meter = Meter()

    # -- properties ------------------------------------------------------------------------
    @property
    def num_groups(self) -> int:
        """Return the number of prompt groups B."""
        return self.conditioning.num_groups

    @property
    def cfg(self) -> bool:
        """Return whether classifier-free guidance runs (two rows per evaluation)."""
        return self.conditioning.uncond is not None

    @property
    def passes_per_eval(self) -> int:
        """Return the network rows per particle per evaluation (2 with CFG)."""
        return 2 if self.cfg else 1

    @property
    def device(self) -> torch.device:
        """Where the network's inputs must live (the offload hook's device under CPU offload)."""
        return module_device(self.network)

    @property
    def dtype(self) -> torch.dtype:
        """Return the network's dtype."""
        return next(self.network.parameters()).dtype

    @property
    def num_forward_passes(self) -> int:
        """Forward passes per particle so far (evaluations x CFG passes)."""
        return self.num_evaluations * self.passes_per_eval

    @property
    def num_evaluations(self) -> int:
        """Denoiser calls so far (``meter.evaluations``)."""
        return self.meter.evaluations

    @property
    def num_forward_rows(self) -> int:
        """Network rows processed so far, CFG rows included (``meter.forward_rows``)."""
        return self.meter.forward_rows

    @property
    def model_time(self) -> float:
        """Return the seconds inside network forward passes (``meter.model_seconds``).

        0 unless the meter is ``timed``.
        """
        return self.meter.model_seconds

    def reset_counters(self) -> None:
        """Reset the evaluation counters of the meter."""
        self.meter.reset()

    # -- the model call --------------------------------------------------------------------
    def _groups_for(self, m: int) -> torch.Tensor:
        b = self.num_groups
        if m % b != 0:
            raise InvalidInputError(
                f"x: batch of {m} rows is not a multiple of the {b} prompts (rows are group-major: "
                f"row i belongs to prompt i // (batch / {b})); pass whole particle batches and let "
                "the adapter micro-batch (max_batch)"
            )
        return torch.arange(m, device=self.device) // (m // b)

    def _network_call(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        """One forward pass in the family's convention; returns the raw network output."""
        raise NotImplementedError

    def _to_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Raw (guided) network output -> this denoiser's `prediction` in glass_core convention."""
        raise NotImplementedError

    def _timed(self, x: torch.Tensor, t: torch.Tensor, cond: Tensors) -> torch.Tensor:
        return self.meter.model(self._network_call, x, t, cond)

    def _guided(self, x: torch.Tensor, t: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        c = self.conditioning
        cond = c.select(c.cond, groups)
        if c.uncond is None:
            return self._timed(x, t, cond)
        unc = c.select(c.uncond, groups)
        both = {k: torch.cat([unc[k], cond[k]], dim=0) for k in cond}
        out = self._timed(torch.cat([x, x], dim=0), torch.cat([t, t], dim=0), both)
        out_u, out_c = out.chunk(2)
        return out_u + self.guidance_scale * (out_c - out_u)

    def _predict(self, x: torch.Tensor, tv: Any) -> torch.Tensor:
        # Keep the time in float64 up to the network boundary (DenoiserBase would hand `predict`
        # x's working dtype): timestep k = (1 - t)(T + 1) - 1 needs more than float32 near t = 0.
        t64 = torch.as_tensor(tv, dtype=torch.float64, device=x.device)
        if t64.ndim == 0:
            t64 = t64.expand(x.shape[0])
        return self.predict(x, t64)

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Prediction (of kind ``self.prediction``) for rows ``x`` at times ``t`` ([M]).

        Parameters
        ----------
        x : torch.Tensor
            Inputs [M, ...].
        t : torch.Tensor
            Times [M] in [0, 1].

        Returns
        -------
        torch.Tensor
            The prediction, shaped like x.
        """
        if tuple(x.shape[1:]) != self.latent_shape:
            raise InvalidInputError(
                f"x must have shape [M, {', '.join(map(str, self.latent_shape))}] (latent_shape), "
                f"got {tuple(x.shape)}"
            )
        groups = self._groups_for(x.shape[0])
        self.meter.evaluations += 1
        step = None
        if self.network_max_batch is not None:
            step = max(1, self.network_max_batch // self.passes_per_eval)

        def rows(xs: torch.Tensor, ts: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
            raw = self._guided(xs.to(self.dtype), ts, gs)
            return self._to_prediction(raw.to(x.dtype), xs, ts)

        with nullcontext() if self.requires_grad else torch.no_grad():
            return chunked(rows, step, x, t, groups)

    # -- latents <-> images ----------------------------------------------------------------
    def _latent_affine(self, like: torch.Tensor) -> tuple[Any, Any]:
        """(scale, offset) with VAE latents = network latents * scale + offset.

        Per channel from the VAE config's latents_mean/std where it has them (divided by a
        scaling_factor only where the config has one: Qwen-Image's and Wan's have none), else its
        scaling and shift factors.
        """
        cfg = self.pipe.vae.config
        mean = getattr(cfg, "latents_mean", None)
        std = getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, like.shape[1]) + (1,) * (like.ndim - 2)
            mean_t = torch.tensor(mean, device=like.device, dtype=like.dtype).view(shape)
            std_t = torch.tensor(std, device=like.device, dtype=like.dtype).view(shape)
            return std_t / (getattr(cfg, "scaling_factor", None) or 1.0), mean_t
        return 1.0 / cfg.scaling_factor, getattr(cfg, "shift_factor", None) or 0.0

    def _vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled (network-space) latents -> the VAE's own latent space."""
        scale, offset = self._latent_affine(z)
        return z * scale + offset

    def _network_latents(self, lat: torch.Tensor) -> torch.Tensor:
        """Map VAE latents to scaled (network-space) latents (inverse of ``_vae_latents``)."""
        scale, offset = self._latent_affine(lat)
        return (lat - offset) / scale

    def encode(self, image: Any, *, max_batch: int | None = None) -> torch.Tensor:
        """Images -> latents ``[M, *latent_shape]`` (float32, on the network's device).

        The mean of the VAE's latent distribution, in the scaled space ``decode`` reads.

        ``image``: anything the pipeline's image processor takes (a PIL image, a list of them, an
        ndarray, or a float tensor ``[M, 3, H, W]`` in [0, 1]); it is resized to the adapter's
        height x width.

        Parameters
        ----------
        image : PIL image, list, ndarray or torch.Tensor
            One image or one per row (tensors in [0, 1]).
        max_batch : int, optional
            Images per VAE call (default: the adapter's).

        Returns
        -------
        torch.Tensor
            Latents [M, *latent_shape].
        """
        pixels = self.pipe.image_processor.preprocess(image, height=self.height, width=self.width)
        vae = self.pipe.vae
        vdtype = next(vae.parameters()).dtype
        vdev = module_device(vae)
        upcast = vdtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:  # as in decode: SDXL's fp16 VAE overflows
            vae.to(torch.float32)

        def rows(px: torch.Tensor) -> torch.Tensor:
            lat = self._vae_encode(px.to(vdev, torch.float32 if upcast else vdtype))
            return self._network_latents(lat.float())

        try:
            with torch.no_grad():
                out = chunked(rows, max_batch or self.network_max_batch, pixels)
        finally:
            if upcast:
                vae.to(vdtype)
        return out.to(self.device)

    def _vae_decode(self, lat: torch.Tensor) -> torch.Tensor:
        """Return the VAE's decode of its own latents.

        Images [m, 3, H, W] in [-1, 1] (families whose VAE works on another layout, e.g. video,
        override this).
        """
        out: torch.Tensor = self.pipe.vae.decode(lat, return_dict=False)[0]
        return out

    def _vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return the mean of the VAE's latent distribution for images [m, 3, H, W] in [-1, 1]."""
        out: torch.Tensor = self.pipe.vae.encode(pixels, return_dict=False)[0].mode()
        return out

    def decode(self, z: torch.Tensor, *, max_batch: int | None = None) -> torch.Tensor:
        """Decode latents ``[M, *latent_shape]`` to images ``[M, 3, H, W]`` in [0, 1].

        Float32; videos: ``[M, F, 3, H, W]``.

        Differentiable when called with gradients enabled (reward guidance); micro-batched by
        ``max_batch`` (default: the adapter's ``max_batch``).

        Parameters
        ----------
        z : torch.Tensor
            Latents [M, *latent_shape].
        max_batch : int, optional
            Latents per VAE call (default: the adapter's).

        Returns
        -------
        torch.Tensor
            Images (or videos) in [0, 1], float32.

        Raises
        ------
        InvalidInputError
            ``z`` of the wrong shape.
        """
        if tuple(z.shape[1:]) != self.latent_shape:
            raise InvalidInputError(
                f"z must have shape [M, {', '.join(map(str, self.latent_shape))}], "
                f"got {tuple(z.shape)}"
            )
        vae = self.pipe.vae
        vdtype = next(vae.parameters()).dtype
        vdev = module_device(vae)
        # SDXL's fp16 VAE overflows: decode in float32 like the pipeline does (force_upcast)
        upcast = vdtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:
            vae.to(torch.float32)

        def rows(zs: torch.Tensor) -> torch.Tensor:
            lat = self._vae_latents(zs.to(device=vdev, dtype=torch.float32))
            img = self._vae_decode(lat.to(torch.float32 if upcast else vdtype))
            return (img.float() / 2 + 0.5).clamp(0, 1)

        self.meter.decodes += 1
        try:
            return chunked(rows, max_batch or self.network_max_batch, z)
        finally:
            if upcast:
                vae.to(vdtype)

    media = "image"

    @property
    def prompts(self) -> list[str] | None:
        """Return the prompts, one per group (None when embeddings were given)."""
        return self.conditioning.prompts

    def time_grid(self, num_steps: int) -> Any:
        """Return the pipeline's own step grid for ``num_steps`` transitions.

        See ``grids.default_time_grid``.

        Parameters
        ----------
        num_steps : int
            The number of transitions K.

        Returns
        -------
        ndarray
            K + 1 increasing times from 0 to 1, float64.
        """
        from glass_core.models.diffusers.grids import default_time_grid

        return default_time_grid(self, num_steps)

    def to_output(self, images: torch.Tensor, output_type: str) -> Any:
        """Convert images in [0, 1] to the pipeline's ``output_type`` ("pt" | "np" | "pil").

        Parameters
        ----------
        images : torch.Tensor
            Images (or videos) in [0, 1].
        output_type : str
            "pt" | "np" | "pil".

        Returns
        -------
        torch.Tensor, ndarray or list
            The images in that type.
        """
        return images_to_output(images, output_type)

    def to_pil(self, images: torch.Tensor) -> list[Any]:
        """[M, 3, H, W] images in [0, 1] -> list of PIL images.

        Parameters
        ----------
        images : torch.Tensor
            Images [M, C, H, W] in [0, 1].

        Returns
        -------
        list of PIL.Image.Image
            One image per row.
        """
        return self.to_output(images, "pil")  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        """Return a short description of the object."""
        return (
            f"{type(self).__name__}(family={self.family!r}, groups={self.num_groups}, "
            f"latent_shape={self.latent_shape}, guidance_scale={self.guidance_scale}, "
            f"cfg={self.cfg}, schedule={getattr(self.schedule, 'name', self.schedule)!r})"
        )
