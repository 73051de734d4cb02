"""One meter for what a run spends, and one helper for micro-batching.

:class:`Meter` counts network evaluations (one per batched denoiser call), forward rows (network
rows processed, classifier-free-guidance rows included) and decodes, and - only when asked for
timings (``timed=True``) - the seconds spent in the model and in the reward, synchronising the
device around each timed section so the seconds are the kernels' and not their launches'. The
same counts mean the same thing for every model kind and algorithm.

:func:`chunked` is the one micro-batching loop: a function applied to slices of at most
``max_batch`` rows, the results concatenated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Meter", "chunked", "sync"]


def sync(t: Any) -> None:
    """Wait for the device's kernels (CUDA only: CPU work is already done when it returns).

    Parameters
    ----------
    t : Any
        A value; for a CUDA tensor, its device is waited for (anything else returns at once).
    """
    if isinstance(t, torch.Tensor) and t.is_cuda:
        torch.cuda.synchronize(t.device)


def chunked(
    fn: Callable[..., torch.Tensor],
    max_batch: int | None,
    *rows: Any,
    per_row: tuple[bool, ...] | None = None,
) -> torch.Tensor:
    """``fn(*rows)`` computed on slices of at most ``max_batch`` rows and concatenated.

    Parameters
    ----------
    fn : callable
        Takes the (sliced) arguments, returns a tensor with one row per input row.
    max_batch : int or None
        Rows per call; None (or a batch that fits) calls ``fn`` once on everything.
    *rows
        The arguments; those marked in ``per_row`` are sliced along dim 0, the others passed
        whole (default: every tensor whose first dim is the batch is sliced).
    per_row : tuple of bool, optional
        Which arguments are per row.

    Returns
    -------
    torch.Tensor
        ``fn``'s outputs concatenated along dim 0.
    """
    m = rows[0].shape[0]
    if max_batch is None or m <= max_batch:
        return fn(*rows)
    if per_row is None:
        per_row = tuple(
            isinstance(a, torch.Tensor) and a.ndim >= 1 and a.shape[0] == m for a in rows
        )
    outs = [
        fn(*(a[i : i + max_batch] if cut else a for a, cut in zip(rows, per_row, strict=True)))
        for i in range(0, m, max_batch)
    ]
    return torch.cat(outs, dim=0)


@dataclass
class Meter:
    """Counts and (when ``timed``) seconds of a run.

    Attributes
    ----------
    timed : bool
        Measure seconds (syncing the device around each section); counts are always kept.
    evaluations : int
        Denoiser calls (one per batched call, whatever the micro-batching).
    forward_rows : int
        Network rows processed (CFG rows included).
    decodes : int
        VAE decode calls.
    model_seconds, reward_seconds : float
        Seconds inside the network and inside decoding + reward models (0.0 unless timed).
    """

    timed: bool = False
    evaluations: int = 0
    forward_rows: int = 0
    decodes: int = 0
    model_seconds: float = 0.0
    reward_seconds: float = 0.0

    def reset(self) -> None:
        """Zero every count and time (keeps ``timed``)."""
        self.evaluations = self.forward_rows = self.decodes = 0
        self.model_seconds = self.reward_seconds = 0.0

    @contextmanager
    def _section(self, field: str, like: Any) -> Iterator[list[Any]]:
        if not self.timed:
            yield []
            return
        sync(like)
        start = time.perf_counter()
        out: list[Any] = []
        try:
            yield out
        finally:
            sync(out[0] if out else like)
            setattr(self, field, getattr(self, field) + time.perf_counter() - start)

    def model(self, fn: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any) -> torch.Tensor:
        """``fn(x, *args)`` as one network forward pass over ``x``'s rows (counted, timed)."""
        with self._section("model_seconds", x) as result:
            out = fn(x, *args)
            result.append(out)
        self.forward_rows += int(x.shape[0])
        return out

    def reward(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as reward work (decoding, scoring), timed when ``timed``."""
        like = args[0] if args else None
        with self._section("reward_seconds", like) as result:
            out = fn(*args)
            result.append(out)
        return out
