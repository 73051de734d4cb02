"""Deterministic probability-flow ODE steps dx/dt = u_t(x) (Euler or Heun, uniform substeps)."""

from __future__ import annotations

import torch

from glass_core import _random
from glass_core.models.base import Denoiser, convert, working_dtype
from glass_core.schedules import Schedule
from glass_core.transitions.base import (
    Transition,
    check_choice,
    check_int,
    frozen_denoiser_step,
    leaves_noise_end,
    substep_intervals,
)


class ODE(Transition):
    """`substeps` uniform steps of the probability-flow ODE from t to t_next.

    Heun costs 2 evaluations per substep, except a substep ending where sigma=0 (t'=1 for the usual
    schedules): the velocity of an x1-predictor is singular there, so that substep is Euler.
    A substep leaving the noise end (alpha_t = 0, or below a VP table's noisiest node) is taken in
    the data-prediction form x' = (sigma'/sigma) x + (alpha' - sigma' alpha/sigma) D (DDIM; Heun
    averages D at both ends), which needs no schedule derivative there (docs/noise_end.md).
    """

    def __init__(self, solver: str = "euler", substeps: int = 1):
        self.solver = check_choice(solver, "solver", ("euler", "heun"))
        self.substeps = check_int(substeps, "substeps")

    def __repr__(self) -> str:
        return f"ODE(solver={self.solver!r}, substeps={self.substeps})"

    @property
    def nfe_per_call(self) -> int:
        return self.substeps * (2 if self.solver == "heun" else 1)

    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        n = self.nfe_per_call
        if self.solver == "heun" and schedule.sigma(float(t_next)) == 0.0:
            n -= 1
        return n - 1 if reuse else n

    def _step(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: _random.Generator,
        denoised: torch.Tensor | None,
    ) -> torch.Tensor:
        wd = working_dtype(x)

        def u(y: torch.Tensor, tk: float, first: bool) -> torch.Tensor:
            if first and denoised is not None:
                return convert(
                    denoised, y.to(x.dtype), tk, model.schedule, source="x1", target="velocity"
                ).to(wd)
            return model.velocity(y.to(x.dtype), tk).to(wd)

        y = x.to(wd)
        sched = model.schedule
        for k, (t0, t1) in enumerate(substep_intervals(t, t_next, self.substeps)):
            if leaves_noise_end(sched, t0):
                y = self._noise_end_step(model, y, t0, t1, denoised if k == 0 else None, x.dtype)
                continue
            h = t1 - t0
            u1 = u(y, t0, k == 0)
            if self.solver == "euler" or model.schedule.sigma(t1) == 0.0:
                y = y + h * u1
            else:
                u2 = u(y + h * u1, t1, False)
                y = y + (0.5 * h) * (u1 + u2)
        return y.to(x.dtype)

    def _noise_end_step(
        self,
        model: Denoiser,
        y: torch.Tensor,
        t0: float,
        t1: float,
        denoised: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """DDIM from t0 (Euler), or its trapezoid in the data prediction (Heun: second order in
        alpha/sigma, as EDM's Heun)."""
        sched = model.schedule
        d0 = (denoised if denoised is not None else model.denoise(y.to(dtype), t0)).to(y.dtype)
        y1 = frozen_denoiser_step(sched, y, t0, t1, 1.0, d0, None)
        if self.solver == "euler" or sched.sigma(t1) == 0.0:
            return y1
        d1 = model.denoise(y1.to(dtype), t1).to(y.dtype)
        return frozen_denoiser_step(sched, y, t0, t1, 1.0, 0.5 * (d0 + d1), None)
