"""Run glass_core's own transitions one model evaluation at a time.

This needs no second copy of their math: a transition is re-run against a stand-in model
that answers its calls from the outputs stored so far and stops at the first call it cannot
answer. That call's input is where the transition wants the network evaluated next (the
pipeline's next "latents").

Evaluation times do not depend on the data, so they are listed up front by one probe run.
Re-running costs O(K^2) cheap array operations per transition of K evaluations (no network
call), and the transition's noise is redrawn identically each time from a restored generator
state.
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.models.base import DenoiserBase
from glass_core.schedules import RectifiedFlow


class Unanswered(Exception):
    """Raised by `StoredOutputs` at the first call it has no output for."""

    def __init__(self, x: torch.Tensor, t: torch.Tensor) -> None:
        super().__init__("the stand-in model has no stored output for this call")
        self.x = x
        self.t = t


class StoredOutputs(DenoiserBase):
    """Answer the j-th model call with the j-th stored output.

    A flow-matching Denoiser (glass_core time, velocity prediction u = dx/dt) that raises
    `Unanswered` at the first call past the stored outputs.

    Parameters
    ----------
    outputs : list of torch.Tensor
        Velocities u (glass_core convention) of the calls answered so far, in call order.
    """

    def __init__(self, outputs: list[torch.Tensor]) -> None:
        super().__init__(RectifiedFlow(), prediction="velocity")
        self.outputs = outputs
        self.calls = 0
        self.times: list[float] = []

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return the next stored velocity, recording the call time.

        Parameters
        ----------
        x : torch.Tensor
            The state the transition evaluates the model at.
        t : torch.Tensor
            Per-sample glass_core times; ``t[0]`` is recorded in ``times``.

        Returns
        -------
        torch.Tensor
            The stored output for this call, cast to ``x.dtype``.

        Raises
        ------
        Unanswered
            If every stored output has already been used; it carries ``x`` and ``t``.
        """
        j = self.calls
        self.calls += 1
        self.times.append(float(t[0]))
        if j >= len(self.outputs):
            raise Unanswered(x, t)
        return self.outputs[j].to(x.dtype)


class _Probe(StoredOutputs):
    """Answers every call with zeros (only the call times matter)."""

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.times.append(float(t[0]))
        return torch.zeros_like(x)


def evaluation_times(transition: Any, t: float, t_next: float) -> list[float]:
    """List the glass_core times at which `transition` evaluates the model, in order.

    One probe run from `t` to `t_next` on a 1-element float64 state with a throwaway generator;
    the probe model answers every call with zeros.

    Parameters
    ----------
    transition : callable
        A glass_core transition ``transition(model, x, t, t_next, generator)``.
    t, t_next : float
        Start and end times (glass_core convention).

    Returns
    -------
    list of float
        The time of each model call, in call order.
    """
    probe = _Probe([])
    x = torch.zeros(1, 1, dtype=torch.float64)
    transition(probe, x, t, t_next, torch.Generator().manual_seed(0))
    return probe.times


def run_to_first_unanswered(
    transition: Any,
    x: torch.Tensor,
    t: float,
    t_next: float,
    outputs: list[torch.Tensor],
    generator: torch.Generator,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Re-run `transition` from `x` against the stored outputs until a call goes unanswered.

    The caller restores `generator`'s state first, so the transition's noise is redrawn
    identically on each re-run.

    Parameters
    ----------
    transition : callable
        A glass_core transition ``transition(model, x, t, t_next, generator)``.
    x : torch.Tensor
        State at time `t`.
    t, t_next : float
        Start and end times (glass_core convention).
    outputs : list of torch.Tensor
        Velocities of the calls answered so far, in call order.
    generator : torch.Generator
        The transition's generator, already restored to the step's starting state.

    Returns
    -------
    tuple of (torch.Tensor or None, torch.Tensor or None)
        ``(x_t_next, None)`` if `outputs` answer every call, else ``(None, x_call)`` with
        ``x_call`` the input of the first unanswered call.
    """
    model = StoredOutputs(outputs)
    try:
        return transition(model, x, t, t_next, generator), None
    except Unanswered as stop:
        return None, stop.x


def denoised_from(velocity: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """Convert a stored velocity at (x, t) to the denoised estimate D_t(x).

    This is the conversion every glass_core adapter makes.

    Parameters
    ----------
    velocity : torch.Tensor
        Velocity u = dx/dt at (x, t) (glass_core convention).
    x : torch.Tensor
        State at time `t`.
    t : float
        glass_core time.

    Returns
    -------
    torch.Tensor
        D_t(x), shaped like `x`.
    """
    return StoredOutputs([velocity]).denoise(x, t)
