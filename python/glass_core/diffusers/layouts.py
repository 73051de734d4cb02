"""Map latents between the pipeline's layout and the one the transitions run in.

The pipeline's layout is what its network and ``step`` see. The transitions' noise is drawn
in the latter, so a run equals the adapter route (``glass_core.steer``) bit for bit only where
both draw in the same layout; FLUX packs 2x2 patches into tokens but draws its initial noise
unpacked, as glass_core's adapter does.
In any layout the draws are equal in distribution (i.i.d. Gaussians).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.errors import InvalidInputError
from glass_core.models.diffusers.flow import pack_latents, unpack_latents


class Layout:
    """Keep the pipeline's own layout: the identity map, both ways."""

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Map pipeline-layout latents to the layout the transitions (and latent rewards) see.

        Parameters
        ----------
        x : torch.Tensor
            Latents in the pipeline's layout.

        Returns
        -------
        torch.Tensor
            `x` itself (the identity).
        """
        return x

    def to_pipeline(self, x: torch.Tensor) -> torch.Tensor:
        """Map transition-layout latents back to the pipeline's layout (inverse of `to_model`).

        Parameters
        ----------
        x : torch.Tensor
            Latents in the transitions' layout.

        Returns
        -------
        torch.Tensor
            `x` itself (the identity).
        """
        return x

    def __repr__(self) -> str:
        """Return ``"Layout()"``."""
        return "Layout()"


class PackedLayout(Layout):
    """Map FLUX-style tokens [M, (h/2)(w/2), 4C] to unpacked latents [M, C, h, w] and back.

    Parameters
    ----------
    height, width : int
        Latent height and width h, w (positive, even).

    Raises
    ------
    InvalidInputError
        If `height` or `width` is not a positive even number.
    """

    def __init__(self, height: int, width: int) -> None:
        if height <= 0 or width <= 0 or height % 2 or width % 2:
            raise InvalidInputError(
                f"height and width must be positive even latent sizes, got {height}x{width}"
            )
        self.height = int(height)
        self.width = int(width)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Unpack the pipeline's tokens into latents [M, C, h, w].

        Parameters
        ----------
        x : torch.Tensor
            Packed tokens [M, (h/2)(w/2), 4C].

        Returns
        -------
        torch.Tensor
            Unpacked latents [M, C, h, w].

        Raises
        ------
        InvalidInputError
            If `x` is not 3-D with (h/2)(w/2) tokens for this layout's height and width.
        """
        seq = (self.height // 2) * (self.width // 2)
        if x.ndim != 3 or x.shape[1] != seq:
            raise InvalidInputError(
                f"latents: expected packed tokens [M, {seq}, 4C] for a {self.height}x{self.width} "
                f"latent (the layout's height/width), got {tuple(x.shape)}"
            )
        return unpack_latents(x, self.height, self.width)

    def to_pipeline(self, x: torch.Tensor) -> torch.Tensor:
        """Pack latents [M, C, h, w] into the pipeline's 2x2-patch tokens.

        Parameters
        ----------
        x : torch.Tensor
            Unpacked latents [M, C, h, w].

        Returns
        -------
        torch.Tensor
            Packed tokens [M, (h/2)(w/2), 4C].
        """
        return pack_latents(x)

    def __repr__(self) -> str:
        """Return ``PackedLayout(height=..., width=...)``."""
        return f"PackedLayout(height={self.height}, width={self.width})"


def flux_layout(pipe: Any, height: int, width: int) -> PackedLayout:
    """Build the unpacked layout FluxPipeline draws its initial noise in.

    The latent size is ``2 * (pixels // (2 * vae_scale_factor))`` per side, for images of
    `height` x `width` pixels (the sizes passed to the pipeline call).

    Parameters
    ----------
    pipe : FluxPipeline
        Or any pipeline with ``vae_scale_factor`` that packs 2x2 patches.
    height, width : int
        Image size in pixels.

    Returns
    -------
    PackedLayout
        The layout for those latent sizes.

    Raises
    ------
    InvalidInputError
        If the resulting latent size is not positive (image smaller than 2x the VAE factor).
    """
    vsf = int(pipe.vae_scale_factor)
    return PackedLayout(2 * (int(height) // (vsf * 2)), 2 * (int(width) // (vsf * 2)))
