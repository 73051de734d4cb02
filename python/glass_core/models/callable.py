"""Wrap any function fn(x[B, ...], t[B]) -> Tensor like x as a Denoiser."""

from __future__ import annotations

from collections.abc import Callable

import torch

from glass_core.errors import InvalidInputError
from glass_core.models.base import DenoiserBase
from glass_core.schedules import Schedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CallableDenoiser(DenoiserBase):
    """A DenoiserBase whose `predict` is a user function returning `prediction`."""

    def __init__(
        self, fn: ModelFn, *, prediction: str, schedule: Schedule, max_batch: int | None = None
    ):
        if not callable(fn):
            raise InvalidInputError(f"fn must be callable, got {type(fn).__name__}")
        super().__init__(schedule, prediction=prediction, max_batch=max_batch)
        self.fn = fn

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return the network's prediction at (x, t) on a tensor of times."""
        return self.fn(x, t)

    def __repr__(self) -> str:
        """Return a short description of the object."""
        return f"CallableDenoiser({self.fn!r}, prediction={self.prediction!r})"


def from_callable(
    fn: ModelFn, *, prediction: str = "x1", schedule: Schedule, max_batch: int | None = None
) -> CallableDenoiser:
    """Denoiser from fn(x: Tensor[B, ...], t: Tensor[B]) -> Tensor like x.

    prediction: what fn returns: "x1" (E[z|x_t]), "velocity" (u_t), "epsilon" (E[eps|x_t]),
    "v" (alpha eps - sigma z) or "score". t is passed as a [B] tensor on x's device.

    Parameters
    ----------
    fn : callable
        ``fn(x, t) -> prediction``.
    prediction : str
        What ``fn`` returns (see above).
    schedule : Schedule
        The noise schedule ``fn`` was trained with.
    max_batch : int, optional
        Rows per call of ``fn`` (None: all at once).

    Returns
    -------
    CallableDenoiser
        The denoiser.

    Raises
    ------
    InvalidInputError
        ``fn`` not callable, or an unknown ``prediction``.
    """
    return CallableDenoiser(fn, prediction=prediction, schedule=schedule, max_batch=max_batch)
