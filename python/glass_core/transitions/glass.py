"""GLASS Flows transition (docs/math.md §3): sample p(x_t' | x_t) with an inner flow of K steps.

The inner state is y_s = xbar_s - gamma x_t (= abar_s z + sbar_s eps given z), which starts at
sigma0 * eps and follows dy/ds = w1(s) y + w2(s) zhat(s), zhat(s) = D_{t*(s)}(alpha*(s) S(s)),
S = c_x x_t + c_y y. The output is gamma x_t + y_1. All per-transition scalars (one float64 table
over the inner s-grid) come from the native core's `glass_coefficients`.

Solvers: "euler" (the paper's Algorithm 1), "midpoint" and "heun" (2 evaluations per step) and
"multistep", a second-order multistep exponential integrator in the inner log-SNR
lambda_s = log(a_s / s_s) (DPM-Solver++(2M)-type, docs/math.md §3.4) with 1 evaluation per step. It
integrates the linear part exactly, y' = (s'/s) y + (a' - s' a/s) D, with D a linear extrapolation
of the last two denoised estimates. Where the path ends at s_1 = 0 (t'=1 or |rho|=1) lambda_1 is
infinite; the last step then extrapolates in kappa = s_s / a_s to kappa = 0 instead, which is finite
and keeps second order without evaluating s = 1 (heun uses the same last step).
"pc" (the default) is a predictor-corrector of the same cost (UniPC-type, docs/math.md §3.5): the
same exact linear part, D linear in phi = r / sqrt(c^2 + r^2) (r = a_s/s_s) instead of lambda, and
each step redone with the estimate the next step evaluates anyway. phi is the variable in which
D is exactly linear along the inner flow when p(z | x_t) is Gaussian with precision c^2, and it
is finite at both ends, so only the very first prediction is first order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from glass_core import _random
from glass_core._checks import finite_float
from glass_core._core import glass_coefficients
from glass_core.errors import InvalidInputError
from glass_core.models.base import Denoiser, working_dtype
from glass_core.schedules import Schedule, check_rho, resolve_rho
from glass_core.transitions import compiled
from glass_core.transitions.base import CheckedModel, Transition, check_choice, check_int
from glass_core.transitions.solvers import (
    PC_SPREAD,
    Evaluator,
    InnerSolver,
    Table,
    inner_scale,
    multistep_coefficients,
    multistep_grid,
    pc_coefficients,
    snr_of,
)
from glass_core.transitions.solvers import (
    SOLVERS as SOLVER_CLASSES,
)

__all__ = [
    "PC_SPREAD",
    "SOLVERS",
    "Glass",
    "inner_scale",
    "multistep_coefficients",
    "multistep_grid",
    "pc_coefficients",
    "snr_of",
]


Coefficients = Table  # the native GlassCoefficients table, or the dict `Glass.coefficients` builds


SOLVERS = tuple(SOLVER_CLASSES)
# Below this sbar (relative to sigma0) the inner velocity at s=1 is numerically singular
# (w1 ~ -sigma0/sbar); the last Heun step is then a multistep step, which never evaluates s=1.
SINGULAR_SBAR = 1e-4


# Each inner step is a model evaluation; far beyond any useful count, and it bounds the
# coefficient table (80 bytes per step).
MAX_INNER_STEPS = 10**6


class Glass(Transition):
    """GLASS transition with correlation `rho` (float in [-1, 1] or "ddpm") and K inner steps.

    solver "euler", "multistep" and "pc" cost K model evaluations, "heun" and "midpoint" 2K
    (Heun: 2K-1 when the inner path is singular at s=1, i.e. t'=1 or |rho|=1: its last step then
    reuses the previous estimate instead of evaluating s=1). All but "euler" are second order in
    K; a precomputed `denoised` = D_t(x_t) saves one evaluation for all. The default is "pc": at
    the same cost as the paper's Euler its worst error against the exact kernel over the mixture
    benchmark's transitions is the smallest of all solvers at 2-16 evaluations per transition
    (docs/benchmarks/glass_solvers.md). The solvers live in `glass_core.transitions.solvers`.
    rho=1 with K=1 (Euler) is deterministic DDIM; rho=1 with K>1 is still stochastic
    (docs/math.md §3).

    Parameters
    ----------
    rho : float or "ddpm"
        Correlation of the transition's noise with x_t's.
    inner_steps : int
        K, the inner solver's steps.
    solver : str
        One of `SOLVERS`.
    sigma0 : float
        Initial scale of the inner path (> 0).
    compile : bool
        Run the inner loop, the network included, as one `torch.compile(fullgraph=True)`
        graph (docs/gpu.md): per-transition coefficients go in as tensors, so (t, t') pairs and
        grid steps reuse the graph; the noise and the s = 0 evaluation stay eager. Needs a
        `DenoiserBase` model (a `predict(x, t)` on tensor times); its micro-batching is not
        applied inside the graph.

    Raises
    ------
    InvalidInputError
        For a bad rho, inner_steps, solver or sigma0 (naming it).

    Examples
    --------
    >>> import torch
    >>> from glass_core.models import from_callable
    >>> from glass_core.schedules import Schedule
    >>> from glass_core.transitions import Glass
    >>> rf = Schedule.rectified_flow()
    >>> model = from_callable(lambda x, t: 0 * x + 2, schedule=rf, prediction="x1")
    >>> g = torch.Generator().manual_seed(0)
    >>> x1 = Glass(inner_steps=4)(model, torch.ones(2, 2), 0.5, 1.0, g)  # ends on D = 2
    >>> torch.allclose(x1, torch.full((2, 2), 2.0))
    True
    """

    def __init__(
        self,
        rho: float | str = "ddpm",
        inner_steps: int = 10,
        solver: str = "pc",
        sigma0: float = 1.0,
        compile: bool = False,
    ):
        check_rho(rho)
        self.rho = rho
        self.inner_steps = check_int(inner_steps, "inner_steps", maximum=MAX_INNER_STEPS)
        self.solver = check_choice(solver, "solver", SOLVERS)
        self.inner: InnerSolver = SOLVER_CLASSES[solver]()
        s0 = finite_float(sigma0, "sigma0")  # a real number: no bool, str or NaN
        if s0 <= 0:
            raise InvalidInputError(f"sigma0 must be a finite float > 0, got {sigma0!r}")
        self.sigma0 = s0
        if not isinstance(compile, bool):
            raise InvalidInputError(f"compile must be True or False, got {compile!r}")
        self.compile = compile
        self._compiled: Any = None

    def __repr__(self) -> str:
        """Return the constructor call that rebuilds this transition."""
        return (
            f"Glass(rho={self.rho!r}, inner_steps={self.inner_steps}, solver={self.solver!r}, "
            f"sigma0={self.sigma0})"
        )

    @property
    def nfe_per_call(self) -> int:
        """Model evaluations of one call without `denoised` reuse."""
        return self.inner_steps * self.inner.evals_per_step

    def _singular(self, coeffs: Coefficients) -> bool:
        return float(coeffs["sbar"]) <= SINGULAR_SBAR * self.sigma0

    def _head(self, schedule: Schedule, t: float, t_next: float) -> tuple[float, Coefficients]:
        rho = resolve_rho(schedule, self.rho, t, t_next)
        return rho, glass_coefficients(schedule, t, t_next, rho, np.zeros(1), self.sigma0)

    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        """Count the model evaluations of one call (see `Transition.nfe`)."""
        n = self.inner.nfe(self.inner_steps, self._singular(self._head(schedule, t, t_next)[1]))
        return n - 1 if reuse else n

    def s_grid(self, head: Coefficients, singular: bool) -> np.ndarray:
        """Return the inner times where the velocity is evaluated (the solver's points).

        Parameters
        ----------
        head : Coefficients
            The transition's coefficient table at s = 0.
        singular : bool
            The inner path ends singular (sbar ~ 0).

        Returns
        -------
        numpy.ndarray
            Float64 inner times in [0, 1), the first 0.
        """
        return self.inner.points(
            self.inner_steps,
            snr_of(head),
            float(head["abar"]),
            float(head["sbar"]),
            self.sigma0,
            singular,
        )

    def coefficients(self, schedule: Schedule, t: float, t_next: float) -> dict:
        """Build the native float64 coefficient table of the transition t -> t_next over `s_grid`.

        Parameters
        ----------
        schedule : Schedule
            The model's schedule.
        t, t_next : float
            The step.

        Returns
        -------
        dict
            The native table's columns plus "s" (the inner times), "singular", "rho" and
            "snr_t".
        """
        rho, head = self._head(schedule, t, t_next)
        singular = self._singular(head)
        s = self.s_grid(head, singular)
        table = dict(glass_coefficients(schedule, t, t_next, rho, s, self.sigma0))
        table.update(s=s, singular=singular, rho=rho, snr_t=snr_of(head))
        return table

    def _step(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: _random.Generator,
        denoised: torch.Tensor | None,
    ) -> torch.Tensor:
        c = self.coefficients(model.schedule, t, t_next)
        plan = self.inner.plan(c, self.inner_steps)
        if self.compile and not isinstance(model, CheckedModel):  # a failure re-runs eagerly
            return self._compiled_step(model, x, t, c, plan, generator, denoised)
        wd = working_dtype(x)
        xw = x.to(wd)
        a_star = np.asarray(c["alpha_star"])
        t_star = np.asarray(c["t_star"]).tolist()

        def start() -> torch.Tensor:  # s=0: x_bar carries no information, zhat = D_t(x_t)
            return (denoised if denoised is not None else model.denoise(x, t)).to(wd)

        def call(j: int, inp: torch.Tensor) -> torch.Tensor:
            return model.denoise(inp.to(x.dtype), t_star[j]).to(wd)

        ev = Evaluator(
            start, call, xw, (a_star * np.asarray(c["c_x"])).tolist(),
            (a_star * np.asarray(c["c_y"])).tolist(),
        )  # fmt: skip
        y = _random.randn_like(xw, generator)
        if self.sigma0 != 1.0:
            y.mul_(self.sigma0)
        y = self.inner.integrate(y, ev, plan)
        return y.add_(xw, alpha=float(c["gamma"])).to(x.dtype)

    def _compiled_step(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        c: dict,
        plan: Any,
        generator: _random.Generator,
        denoised: torch.Tensor | None,
    ) -> torch.Tensor:
        """`_step` with the inner loop in one compiled graph (see `compile`)."""
        net = compiled.network(model)
        wd = working_dtype(x)
        xw = x.to(wd)
        d0 = (denoised if denoised is not None else model.denoise(x, t)).to(wd)
        a_star = np.asarray(c["alpha_star"])
        tables = compiled.point_tables(
            model.schedule, net, a_star * np.asarray(c["c_x"]), a_star * np.asarray(c["c_y"]),
            np.asarray(c["t_star"]), xw,
        )  # fmt: skip
        y = _random.randn_like(xw, generator)
        if self.sigma0 != 1.0:
            y.mul_(self.sigma0)
        if self._compiled is None:
            self._compiled = compiled.compile_integrate()
        y = self._compiled(self.inner, net.predict, xw, y, d0, tables, compiled.tensors(plan, xw))
        # every evaluation but the eager one at s = 0 (made above, or given as `denoised`)
        compiled.count_calls(model, self.inner.nfe(self.inner_steps, c["singular"]) - 1)
        return y.add_(xw, alpha=float(c["gamma"])).to(x.dtype)
