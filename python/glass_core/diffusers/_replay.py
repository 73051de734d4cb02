"""Run glass_core's own transitions one model evaluation at a time, without a second copy of
their math: a transition is re-run against a stand-in model that answers its calls from the
outputs stored so far and stops at the first call it cannot answer. That call's input is where
the transition wants the network evaluated next (the pipeline's next "latents").

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
    """A flow-matching Denoiser (glass_core time, velocity prediction u = dx/dt) answering the
    j-th call with the j-th stored output; `Unanswered` at the first call past them.

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
    """The glass_core times at which `transition` evaluates the model from t to t_next, in order
    (float64; one probe run on a 1-element state with a throwaway generator)."""
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
    """(x_t_next, None) if `outputs` answer every call of the transition from x at t, else
    (None, the input of the first unanswered call). The caller restores `generator` first."""
    model = StoredOutputs(outputs)
    try:
        return transition(model, x, t, t_next, generator), None
    except Unanswered as stop:
        return None, stop.x


def denoised_from(velocity: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """D_t(x) from a stored velocity at (x, t): the conversion every glass_core adapter makes."""
    return StoredOutputs([velocity]).denoise(x, t)
