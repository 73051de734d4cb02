"""Deterministic probability-flow ODE steps dx/dt = u_t(x).

Euler or Heun on uniform substeps, or the data-prediction solvers "multistep" and "pc" of
glass_core.transitions.solvers.
"""

from __future__ import annotations

import numpy as np
import torch

from glass_core import _random
from glass_core.models.base import Denoiser, conversion_coefficients, working_dtype
from glass_core.models.gmm import kernel_scalars
from glass_core.schedules import Schedule
from glass_core.transitions.base import (
    Transition,
    check_choice,
    check_int,
    leaves_noise_end,
    substep_intervals,
)
from glass_core.transitions.solvers import (
    SOLVERS,
    Evaluator,
    InnerSolver,
    inner_scale,
    lincomb,
)

ODE_SOLVERS = ("euler", "heun", "multistep", "pc")
# Below this sigma at t' the path's end is treated as singular (as Glass does with sbar).
SINGULAR_SIGMA = 1e-4


def _blend(y: torch.Tensor, keep: float, d: torch.Tensor, gain: float) -> torch.Tensor:
    """Return keep y + gain d as a fresh tensor; one lerp where keep + gain = 1 (rectified flow)."""
    if abs(keep + gain - 1.0) <= 1e-12:
        return torch.lerp(y, d, gain)
    return lincomb([(keep, y), (gain, d)])


class ODE(Transition):
    """`substeps` steps of the probability-flow ODE from t to t_next (1 evaluation each; Heun 2).

    "euler" and "heun" take uniform substeps in t, in data-prediction form
    y' = (1 + h A) y + h B D with u = A y + B D (eq. 26). A Heun substep ending where sigma=0 (t'=1
    for the usual schedules) is Euler: the velocity of an x1-predictor is singular there. A
    substep leaving the noise end (alpha_t = 0, or below a VP table's noisiest node) is the exact
    frozen-denoiser step y' = (sigma'/sigma) y + (alpha' - sigma' alpha/sigma) D (DDIM; Heun
    averages D at both ends), which needs no schedule derivative there (docs/noise_end.md).

    "multistep" and "pc" are the GLASS inner solvers run on the outer path a = alpha_t,
    s = sigma_t (docs/math.md §3.4-3.5): second order, one evaluation per step, exact at a
    data end (sigma' = 0: the last step returns alpha' times the extrapolated estimate). Their
    substeps are uniform in u = r/(r + c), r = alpha/sigma, c = spread (the precision of
    unit-variance data, times the solver's spread), so a 0 -> 1 ODE with K "pc" steps is the
    GLASS pc transition 0 -> 1 with K inner steps on rectified flow.

    Parameters
    ----------
    solver : str
        One of "euler", "heun", "multistep", "pc".
    substeps : int
        Steps per call.

    Raises
    ------
    InvalidInputError
        For an unknown solver or a bad substeps (naming it).

    Examples
    --------
    >>> import torch
    >>> from glass_core.models import from_callable
    >>> from glass_core.schedules import Schedule
    >>> from glass_core.transitions import ODE
    >>> rf = Schedule.rectified_flow()
    >>> model = from_callable(lambda x, t: 0 * x + 2, schedule=rf, prediction="x1")
    >>> ODE("heun", substeps=2)(model, torch.ones(2, 2), 0.5, 1.0)
    tensor([[2., 2.],
            [2., 2.]])
    """

    def __init__(self, solver: str = "euler", substeps: int = 1):
        self.solver = check_choice(solver, "solver", ODE_SOLVERS)
        self.substeps = check_int(substeps, "substeps")

    def __repr__(self) -> str:
        """Return the constructor call that rebuilds this transition."""
        return f"ODE(solver={self.solver!r}, substeps={self.substeps})"

    @property
    def nfe_per_call(self) -> int:
        """Model evaluations of one call without `denoised` reuse."""
        return self.substeps * (2 if self.solver == "heun" else 1)

    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        """Count the model evaluations of one call (see `Transition.nfe`)."""
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
        if self.solver in ("multistep", "pc"):
            return self._data_prediction_step(model, x, t, t_next, denoised)
        wd = working_dtype(x)
        y = x.to(wd)
        sched = model.schedule
        for k, (t0, t1) in enumerate(substep_intervals(t, t_next, self.substeps)):
            d0 = denoised if (k == 0 and denoised is not None) else model.denoise(y.to(x.dtype), t0)
            keep, gain, second = self._substep_coefficients(sched, t0, t1)
            ahead = _blend(y, keep, d0.to(wd), gain)
            if second is None:
                y = ahead
                continue
            d1 = model.denoise(ahead.to(x.dtype), t1).to(wd)
            c_y, c_0, c_ahead, c_1 = second
            y = lincomb([(c_y, y), (c_0, d0.to(wd)), (c_ahead, ahead), (c_1, d1)])
        return y.to(x.dtype)

    def _substep_coefficients(self, sched: Schedule, t0: float, t1: float):
        """Return a substep's float64 coefficients (keep, gain, second).

        The Euler (or frozen-denoiser) substep is keep y + gain D_0; Heun's is
        second = (c_y, c_0, c_ahead, c_1) applied to (y, D_0, the Euler result, D_1), or None.
        """
        heun = self.solver == "heun" and sched.sigma(t1) != 0.0
        if leaves_noise_end(sched, t0):  # DDIM; Heun: trapezoid in D (second order, as EDM's)
            keep, gain, _ = kernel_scalars(sched, t0, t1, 1.0)
            return keep, gain, ((keep, 0.5 * gain, 0.0, 0.5 * gain) if heun else None)
        h = t1 - t0
        a0, b0 = conversion_coefficients(sched, t0, "x1", "velocity")  # u = a y + b D
        if not heun:
            return 1.0 + h * a0, h * b0, None
        a1, b1 = conversion_coefficients(sched, t1, "x1", "velocity")
        return 1.0 + h * a0, h * b0, (1.0 + 0.5 * h * a0, 0.5 * h * b0, 0.5 * h * a1, 0.5 * h * b1)

    def points(self, sched: Schedule, t: float, t_next: float) -> np.ndarray:
        """Place the K step starts of "multistep"/"pc" in [t, t_next), uniform in u = r/(r + c).

        Parameters
        ----------
        sched : Schedule
            The model's schedule.
        t, t_next : float
            The call's step.

        Returns
        -------
        numpy.ndarray
            K float64 times, the first t.
        """
        spread = float(getattr(SOLVERS[self.solver], "spread", 1.0))
        c = inner_scale(0.0, spread)

        def u_of(tt: float) -> float:
            s = sched.sigma(tt)
            if s == 0.0:
                return 1.0
            r = sched.alpha(tt) / s
            return r / (r + c)

        u = u_of(t) + (u_of(t_next) - u_of(t)) * np.arange(self.substeps) / self.substeps
        r = c * u[1:] / (1.0 - u[1:])
        return np.concatenate([[t], sched.t_from_snr(r * r)])  # the schedule's float64 times

    def _data_prediction_step(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        denoised: torch.Tensor | None,
    ) -> torch.Tensor:
        sched = model.schedule
        ts = self.points(sched, t, t_next)
        sigma_end = sched.sigma(t_next)
        table = {
            "a_s": np.asarray(sched.alpha(ts)),
            "s_s": np.asarray(sched.sigma(ts)),
            "abar": sched.alpha(t_next),
            "sbar": sigma_end,
            "singular": sigma_end <= SINGULAR_SIGMA,
            "snr_t": 0.0,  # the prior of the outer path is the data (unit variance)
        }
        inner: InnerSolver = SOLVERS[self.solver]()
        plan = inner.plan(table, self.substeps)
        wd = working_dtype(x)
        t_points = ts.tolist()

        def start() -> torch.Tensor:
            return (denoised if denoised is not None else model.denoise(x, t)).to(wd)

        def call(j: int, inp: torch.Tensor) -> torch.Tensor:
            return model.denoise(inp.to(x.dtype), t_points[j]).to(wd)

        k = self.substeps
        ev = Evaluator(start, call, x.to(wd), [0.0] * k, [1.0] * k)
        return inner.integrate(x.to(wd, copy=True), ev, plan).to(x.dtype)
