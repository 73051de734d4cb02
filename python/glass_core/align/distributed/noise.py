"""Noise of a sharded run: every particle gets the noise of its slot in the single-process run.

:class:`ShardedNoise` asks the user's generator for exactly what the single process would draw
(all B*N rows) and keeps this rank's rows. Cost: each rank generates the full noise tensor of one
transition call (B*N x sample size, transiently, on the generator's device) and O(B*N*sample) RNG
work; for FLUX latents (16 x 128 x 128 float32 = 1 MiB per particle) and N=1024 that is 1 GiB of
transient memory per draw, so for very large N x latent products prefer several runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from glass_core import _random
from glass_core.align._common import Generator
from glass_core.errors import InvalidInputError


class ShardedNoise:
    """Give a rank's view of a generator (None, one, or a list of B).

    It draws exactly what the single
    process would draw for all B*N rows and keeps this rank's rows (``rows``: global flat row of
    each local row). Used through the ``glass_randn``/``glass_rand`` hook of glass_core._random.
    """

    def __init__(self, generator: Generator, total_rows: int, rows: torch.Tensor) -> None:
        self.generator = generator
        self.total_rows = total_rows
        self.rows = rows

    def _draw_device(self, device: torch.device) -> torch.device:
        """Draw where the generator lives; the global RNG (None) draws on `device`.

        A CPU generator keeps the full draw in host memory; only this rank's rows go to
        `device`.
        """
        gen = self.generator
        gens = [gen] if isinstance(gen, torch.Generator) else list(gen or [])
        devices = {g.device for g in gens if isinstance(g, torch.Generator)}
        return devices.pop() if gens and len(devices) == 1 else device

    def _take(self, full: torch.Tensor, device: torch.device) -> torch.Tensor:
        return full.index_select(0, self.rows.to(full.device)).to(device)

    def _check(self, shape: tuple[int, ...]) -> None:
        if not shape or shape[0] != self.rows.numel():
            raise InvalidInputError(
                f"generator: a sharded run draws noise for this rank's {self.rows.numel()} rows, "
                f"got a request of shape {shape} (transitions must draw for the whole batch)"
            )

    def _draw(
        self,
        fn: Callable[..., torch.Tensor],
        shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        self._check(shape)
        full_shape = (self.total_rows, *shape[1:])
        full = fn(full_shape, self.generator, device=self._draw_device(device), dtype=dtype)
        return self._take(full, device)

    def glass_randn(
        self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Draw this rank's rows of one full-batch standard normal tensor."""
        return self._draw(_random.randn, shape, device, dtype)

    def glass_rand(
        self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Draw this rank's rows of one full-batch uniform [0, 1) tensor."""
        return self._draw(_random.rand, shape, device, dtype)
