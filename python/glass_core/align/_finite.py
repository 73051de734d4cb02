"""NaN/inf particles in an FK step without a device sync of their own.

The step computes one
device flag (:func:`finite_flag`) that travels to the host in the step's single transfer; only
when it says "not finite" is the transition re-run from a snapshot of its input and noise with a
model that checks every call (:func:`blame`), so the error still names the party at fault: the
model (ModelError with the time and rows) or the transition (InvalidInputError).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core import _random
from glass_core.errors import GlassError, InvalidInputError, ModelError
from glass_core.transitions.base import Transition, finite_rows, listed_rows


def finite_flag(*tensors: torch.Tensor | None) -> torch.Tensor:
    """0-d float64 on the first tensor's device: 1 if every value of every tensor is finite."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    return torch.stack(flags).all().to(torch.float64)


def unchecked_step(
    transition: Any,
    model: Any,
    x: torch.Tensor,
    t: float,
    t_next: float,
    noise: Any,
    denoised: torch.Tensor | None,
) -> torch.Tensor:
    """Run one transition without a host read of its own.

    A glass_core :class:`~glass_core.transitions.base.Transition` is called with
    ``check=False`` (its finite flag is covered by :func:`finite_flag` of the particles in the
    step's one transfer, and :func:`blame` explains a failure); a plain callable is called as is.

    Parameters
    ----------
    transition : callable
        The proposal x_t -> x_t'.
    model : Denoiser
        The (counted) model.
    x : torch.Tensor
        The particles at `t`.
    t, t_next : float
        The transition's times.
    noise : torch.Generator, list of them, or None
        The transition's randomness.
    denoised : torch.Tensor or None
        D_t(x) from the last potential step, if any.

    Returns
    -------
    torch.Tensor
        The particles at `t_next`.
    """
    if not isinstance(transition, Transition):
        return transition(model, x, t, t_next, noise, denoised=denoised)
    out = transition(model, x, t, t_next, noise, denoised=denoised, check=False)
    # FK blames from its own snapshot: do not keep the step's input alive in the transition
    transition._replay = None
    return out


def _rows(v: torch.Tensor) -> str:
    return listed_rows(finite_rows(v))


class _Strict:
    """A model proxy that checks each call's input and output on the host (failure path only)."""

    def __init__(self, model: Any, where: str) -> None:
        self._model, self.schedule, self._where = model, model.schedule, where

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def denoise(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self._check(self._model.denoise, x, t)

    def velocity(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self._check(self._model.velocity, x, t)

    def _check(self, fn: Any, x: torch.Tensor, t: Any) -> torch.Tensor:
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError(
                f"the transition fed the model NaN/inf in rows {_rows(x)} at t={t} "
                f"{self._where}: its parameters or the times are numerically out of range"
            )
        out = fn(x, t)
        if not bool(torch.isfinite(out).all()):
            raise ModelError(
                f"the model returned NaN/inf at t={t} for rows {_rows(out)} {self._where}"
            )
        return out


def blame(
    transition: Any,
    model: Any,
    before: tuple[Any, ...] | None,
    noise: Any,
    after: tuple[torch.Tensor, torch.Tensor | None],
    times: tuple[float, float],
) -> GlassError:
    """Return the error for an FK step whose particles `after` = (x, D_t'(x) or None) are bad.

    They hold NaN/inf.

    `before` = (x, denoised, noise snapshot) at the step's start; the transition is re-run from
    there with every model call checked, which raises the specific error if it reproduces.
    """
    t, t_next = times
    where = f"(during the transition t={t} -> t_next={t_next})"
    x, denoised = after
    if bool(torch.isfinite(x).all()) and denoised is not None:
        return ModelError(
            f"the model returned NaN/inf at t={t_next} for rows {_rows(denoised)} (the "
            "denoiser output scored at that potential step)"
        )
    if before is None:  # a step that did not record its start
        return ModelError(f"the particles hold NaN/inf in rows {_rows(x)} {where}")
    x0, d0, snapshot = before
    if not bool(torch.isfinite(x0).all()):  # an earlier transition (no potential step since)
        return ModelError(f"the particles hold NaN/inf in rows {_rows(x0)} at t={t} already")
    if snapshot is not None:  # the step's noise again, from fresh generators
        replay = _random.replayed(noise, snapshot)
        try:
            with torch.no_grad():
                again = transition(_Strict(model, where), x0, t, t_next, replay, denoised=d0)
        except GlassError as exc:
            return exc
        if not bool(torch.isfinite(again).all()):
            return InvalidInputError(
                f"{transition!r} produced NaN/inf in rows {_rows(again)} {where} from finite "
                "model outputs: its parameters or the times are numerically out of range"
            )
    return ModelError(f"the particles hold NaN/inf in rows {_rows(x)} {where}")
