"""Latent layouts: the pipeline's (what its network and ``step`` see) versus the one the
transitions run in. The transitions' noise is drawn in the latter, so a run equals the adapter
route (``glass_core.steer``) bit for bit only where both draw in the same layout; FLUX packs
2x2 patches into tokens but draws its initial noise unpacked, as glass_core's adapter does.
In any layout the draws are equal in distribution (i.i.d. Gaussians)."""

from __future__ import annotations

from typing import Any

import torch

from glass_core.errors import InvalidInputError
from glass_core.models.diffusers.flow import pack_latents, unpack_latents


class Layout:
    """The identity: transitions run in the pipeline's own layout."""

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Pipeline layout -> the layout the transitions (and latent rewards) see."""
        return x

    def to_pipeline(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_model`."""
        return x

    def __repr__(self) -> str:
        return "Layout()"


class PackedLayout(Layout):
    """FLUX-style tokens [M, (h/2)(w/2), 4C] <-> unpacked latents [M, C, h, w].

    Parameters
    ----------
    height, width : int
        Latent height and width h, w (even).
    """

    def __init__(self, height: int, width: int) -> None:
        if height <= 0 or width <= 0 or height % 2 or width % 2:
            raise InvalidInputError(
                f"height and width must be positive even latent sizes, got {height}x{width}"
            )
        self.height = int(height)
        self.width = int(width)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        seq = (self.height // 2) * (self.width // 2)
        if x.ndim != 3 or x.shape[1] != seq:
            raise InvalidInputError(
                f"latents: expected packed tokens [M, {seq}, 4C] for a {self.height}x{self.width} "
                f"latent (the layout's height/width), got {tuple(x.shape)}"
            )
        return unpack_latents(x, self.height, self.width)

    def to_pipeline(self, x: torch.Tensor) -> torch.Tensor:
        return pack_latents(x)

    def __repr__(self) -> str:
        return f"PackedLayout(height={self.height}, width={self.width})"


def flux_layout(pipe: Any, height: int, width: int) -> PackedLayout:
    """The unpacked layout FluxPipeline draws its initial noise in, for images of
    `height` x `width` pixels (the sizes passed to the pipeline call).

    Parameters
    ----------
    pipe : FluxPipeline (or any pipeline with ``vae_scale_factor`` that packs 2x2 patches)
    height, width : int
        Image size in pixels.

    Returns
    -------
    PackedLayout
    """
    vsf = int(pipe.vae_scale_factor)
    return PackedLayout(2 * (int(height) // (vsf * 2)), 2 * (int(width) // (vsf * 2)))
