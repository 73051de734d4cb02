"""Solvers of the flows inside the transitions, as small classes behind one interface.

Both flows have the same structure (docs/math.md §3.1, §5): a state y on a path a z + s eps
moves with dy = (w1 y + w2 D) ds, D a denoised estimate. GLASS's inner flow has a_s = s abar,
s_s = (1 - s) sigma0 + s sbar and D the GLASS denoiser; the probability-flow ODE has a = alpha_t,
s = sigma_t and D = D_t. A solver needs from the flow only a host-side float64 `table` and an
`Evaluator` (the denoised estimate at its j-th point), and returns the state at the end:

- "euler", "midpoint", "heun": velocity form, uniform steps h = 1/K in s (table: w1, w2 at the
  points; heun's singular last step also a_s, s_s, abar, sbar);
- "multistep" (docs/math.md §3.4) and "pc" (§3.5): data-prediction (exponential-integrator)
  form on the path (table: a_s, s_s at the K step starts, abar, sbar at the end, snr_t for pc's
  scale), one evaluation per step.

The tensor work is a few fused updates per evaluation, in place where the autograd graph allows
(no temporaries of the particles' size beyond the solver's state, no host reads); all
coefficients are Python floats computed once per transition. Adding a solver is one class here
and one entry in `SOLVERS`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch


class Table(Protocol):
    """A float64 coefficient table: the native GlassCoefficients, or a dict with its keys."""

    def __getitem__(self, key: str, /) -> Any:
        """Return the column (or scalar) named `key`."""


# "pc"'s scale c = PC_SPREAD * sqrt(SNR(t) + 1): SNR(t) + 1 is the precision of z given x_t
# for unit-variance data, and real posteriors are tighter (the mixture benchmark's error is
# flat for 1.25-1.75 and rises outside; docs/benchmarks/glass_solvers.md).
PC_SPREAD = 1.5


Coef = float | torch.Tensor  # a Python float (eager) or a 0-d tensor (compiled: no constants)


def _is(c: Coef, value: float) -> bool:
    """Whether c is the Python number `value` (a tensor coefficient is never skipped)."""
    return isinstance(c, float | int) and c == value


def _axpy_(out: torch.Tensor, v: torch.Tensor, c: Coef) -> torch.Tensor:
    return out.add_(v, alpha=c) if isinstance(c, float | int) else out.addcmul_(v, c)


def lincomb(terms: Sequence[tuple[Coef, torch.Tensor]]) -> torch.Tensor:
    """Return a fresh tensor sum_i c_i v_i, one kernel per term (terms with c = 0.0 skipped).

    Parameters
    ----------
    terms : sequence of (coefficient, tensor)
        Python floats or 0-d tensors, and same-shaped tensors (at least one term).

    Returns
    -------
    torch.Tensor
        The sum (zeros like the first tensor when every coefficient is 0.0).

    Examples
    --------
    >>> import torch
    >>> lincomb([(2.0, torch.ones(2)), (0.5, torch.ones(2))])
    tensor([2.5000, 2.5000])
    """
    live = [(c, v) for c, v in terms if not _is(c, 0.0)]
    if not live:
        return torch.zeros_like(terms[0][1])
    (c0, v0), rest = live[0], live[1:]
    if _is(c0, 1.0) and rest and isinstance(rest[0][0], float | int):
        out = torch.add(v0, rest[0][1], alpha=rest[0][0])
        rest = rest[1:]
    else:
        out = torch.mul(v0, c0)
    for c, v in rest:
        _axpy_(out, v, c)
    return out


def update_(y: torch.Tensor, keep: Coef, terms: Sequence[tuple[Coef, torch.Tensor | None]]):
    """Set y <- keep y + sum_i c_i v_i in place (y is the solver's own state) and return it.

    Parameters
    ----------
    y : torch.Tensor
        Updated in place.
    keep : float or 0-d tensor
        The weight of y.
    terms : sequence of (coefficient, tensor or None)
        Terms with a None tensor or a coefficient 0.0 are skipped.

    Returns
    -------
    torch.Tensor
        y.
    """
    if not _is(keep, 1.0):
        y.mul_(keep)
    for c, v in terms:
        if v is not None and not _is(c, 0.0):
            _axpy_(y, v, c)
    return y


class Evaluator:
    """The denoised estimate at a solver's points.

    Point 0 is the flow's start, where the estimate is `start()` (D_t(x), or the caller's
    precomputed value); point j > 0 asks `call(j, inp)` at the model input
    inp = in_x[j] x + in_y[j] y_j, formed in one pass from the terms of y_j (so a solver never
    materialises y_j only to feed the model).

    Parameters
    ----------
    start : callable
        () -> the estimate at point 0, in the working dtype.
    call : callable
        (j, input) -> the estimate at point j, in the working dtype.
    x : torch.Tensor
        The transition's start x_t (working dtype); enters the input with weight in_x.
    in_x, in_y : sequence of float, or 1-D tensors (compiled)
        Per-point input weights (GLASS: alpha* c_x, alpha* c_y; the ODE: 0, 1).
    """

    def __init__(
        self,
        start: Callable[[], torch.Tensor],
        call: Callable[[int, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        in_x: Sequence[Coef] | torch.Tensor,
        in_y: Sequence[Coef] | torch.Tensor,
    ) -> None:
        self.start, self.call, self.x = start, call, x
        self.in_x: list[Coef] = list(in_x)
        self.in_y: list[Coef] = list(in_y)

    def input(self, j: int, state: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor:
        """Form the model input at point j for the state y_j = sum_i c_i v_i (given as terms)."""
        return lincomb([(self.in_x[j], self.x), *((self.in_y[j] * c, v) for c, v in state)])

    def __call__(self, j: int, state: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor:
        """Return the estimate at point j for the state y_j = sum_i c_i v_i (given as terms)."""
        if j == 0:
            return self.start()
        return self.call(j, self.input(j, state))


class InnerSolver(ABC):
    """One GLASS inner solver: where it evaluates, what it precomputes, how it integrates.

    Subclasses are registered in `SOLVERS` under their `name`; `evals_per_step` is the model
    evaluations per step.
    """

    name: ClassVar[str]
    evals_per_step: ClassVar[int] = 1

    def nfe(self, k: int, singular: bool) -> int:
        """Count the model evaluations of K steps (`singular`: the path ends at s_s = 0)."""
        return self.evals_per_step * k

    @abstractmethod
    def points(self, k: int, snr_t: float, abar: float, sbar: float, sigma0: float, singular: bool):
        """Place the evaluations at inner times s in [0, 1).

        Parameters
        ----------
        k : int
            K, the steps.
        snr_t : float
            SNR(t) of the transition's start.
        abar, sbar : float
            The inner path's end, a_s and s_s at s = 1.
        sigma0 : float
            The inner path's initial scale.
        singular : bool
            The path ends at s_s = 0.

        Returns
        -------
        numpy.ndarray
            Float64 inner times, point 0 at s = 0.
        """

    @abstractmethod
    def plan(self, table: Table, k: int) -> Any:
        """See `InnerSolver.plan`."""
        """Precompute the per-step Python-float coefficients from the flow's float64 `table`.

        Parameters
        ----------
        table : Table
            The coefficient table at the solver's points.
        k : int
            K, the steps.

        Returns
        -------
        Any
            The solver's plan, handed to `integrate`.
        """

    @abstractmethod
    def integrate(self, y: torch.Tensor, ev: Evaluator, plan: Any) -> torch.Tensor:
        """Integrate the inner flow from y to its end.

        Parameters
        ----------
        y : torch.Tensor
            The start state, owned by the solver (updated in place).
        ev : Evaluator
            The denoised estimate at the solver's points.
        plan : Any
            What `plan` returned.

        Returns
        -------
        torch.Tensor
            The state at the end.
        """


class Euler(InnerSolver):
    """The paper's Euler (Algorithm 1): y <- (1 + h w1) y + h w2 D.

    (1 + h w1) is formed in float64 so that for rho = 1, K = 1 the noise drops out exactly
    (deterministic DDIM).
    """

    name = "euler"

    def points(self, k, snr_t, abar, sbar, sigma0, singular):
        """See `InnerSolver.points`."""
        return np.arange(k, dtype=np.float64) / k

    def plan(self, table: Table, k: int) -> Any:
        """See `InnerSolver.plan`."""
        h = 1.0 / k
        w1, w2 = np.asarray(table["w1"])[:k], np.asarray(table["w2"])[:k]
        return (1.0 + h * w1).tolist(), (h * w2).tolist()

    def integrate(self, y, ev, plan):
        """See `InnerSolver.integrate`."""
        keep, gain = plan
        for j in range(len(keep)):
            update_(y, keep[j], [(gain[j], ev(j, [(1.0, y)]))])
        return y


class Midpoint(InnerSolver):
    """Explicit midpoint: an Euler half step, then the full step with the midpoint velocity."""

    name = "midpoint"
    evals_per_step = 2

    def points(self, k, snr_t, abar, sbar, sigma0, singular):
        """See `InnerSolver.points`."""
        return np.arange(2 * k, dtype=np.float64) / (2 * k)

    def plan(self, table: Table, k: int) -> Any:
        """See `InnerSolver.plan`."""
        h = 1.0 / k
        w1, w2 = np.asarray(table["w1"]), np.asarray(table["w2"])
        half = (1.0 + 0.5 * h * w1).tolist(), (0.5 * h * w2).tolist()
        return (*half, (h * w1).tolist(), (h * w2).tolist())

    def integrate(self, y, ev, plan):
        """See `InnerSolver.integrate`."""
        keep_half, gain_half, hw1, hw2 = plan
        for m in range(len(keep_half) // 2):
            j = 2 * m
            half = lincomb([(keep_half[j], y), (gain_half[j], ev(j, [(1.0, y)]))])
            update_(y, 1.0, [(hw1[j + 1], half), (hw2[j + 1], ev(j + 1, [(1.0, half)]))])
        return y


class Multistep(InnerSolver):
    """Second-order multistep exponential integrator in the inner log-SNR (docs/math.md §3.4).

    y <- keep y + gain ((1 + beta) z_j - beta z_{j-1}); one evaluation per step.
    """

    name = "multistep"
    spread: ClassVar[float] = 1.0

    def points(self, k, snr_t, abar, sbar, sigma0, singular):
        """See `InnerSolver.points`."""
        return multistep_grid(k, snr_t, abar, sbar, sigma0, self.spread)

    def plan(self, table: Table, k: int) -> Any:
        """See `InnerSolver.plan`."""
        keep, gain, beta = multistep_coefficients(*path_ends(table, k), bool(table["singular"]))
        return keep.tolist(), (gain * (1.0 + beta)).tolist(), (-gain * beta).tolist()

    def integrate(self, y, ev, plan):
        """See `InnerSolver.integrate`."""
        return multistep_steps(y, ev, plan, range(len(plan[0])), None)


def multistep_steps(y, ev: Evaluator, plan, steps, z_prev):
    """Apply the multistep update over `steps` (heun's singular last step is one of them).

    Parameters
    ----------
    y : torch.Tensor
        The state, updated in place.
    ev : Evaluator
        The estimates at the solver's points.
    plan : tuple
        `Multistep.plan`'s (keep, now, before) per step.
    steps : iterable of int
        The step indices to take.
    z_prev : torch.Tensor or None
        The estimate before the first of them (None at step 0).

    Returns
    -------
    torch.Tensor
        The state after the steps.
    """
    keep, now, before = plan
    for j in steps:
        z = ev(j, [(1.0, y)])
        update_(y, keep[j], [(now[j], z), (before[j], z_prev)])
        z_prev = z
    return y


class Heun(InnerSolver):
    """Heun (trapezoid) in s, 2 evaluations per step.

    On a singular path its last step is the multistep last step (extrapolating the estimates at
    s_{K-2} and s_{K-1}), never s = 1.
    """

    name = "heun"
    evals_per_step = 2

    def nfe(self, k: int, singular: bool) -> int:
        """See `InnerSolver.nfe`."""
        return 2 * k - (1 if singular else 0)

    def points(self, k, snr_t, abar, sbar, sigma0, singular):
        """See `InnerSolver.points`."""
        return np.arange(k + (0 if singular else 1), dtype=np.float64) / k

    def plan(self, table: Table, k: int) -> Any:
        """See `InnerSolver.plan`."""
        h = 1.0 / k
        w1, w2 = np.asarray(table["w1"]), np.asarray(table["w2"])
        singular = bool(table["singular"])
        last = Multistep().plan(table, k) if singular else None
        return h, w1.tolist(), w2.tolist(), last, singular

    def integrate(self, y, ev, plan):
        """See `InnerSolver.integrate`."""
        h, w1, w2, last, singular = plan
        k = round(1.0 / h)
        z_prev = None
        for m in range(k - 1 if singular else k):
            z_prev = ev(m, [(1.0, y)])
            k1 = lincomb([(w1[m], y), (w2[m], z_prev)])
            ahead = torch.add(y, k1, alpha=h)
            update_(k1, 1.0, [(w1[m + 1], ahead), (w2[m + 1], ev(m + 1, [(1.0, ahead)]))])
            y.add_(k1, alpha=0.5 * h)
        if singular:
            y = multistep_steps(y, ev, last, [k - 1], z_prev)
        return y


class PC(InnerSolver):
    """The phi-linear predictor-corrector (docs/math.md §3.5), one evaluation per step.

    Only the corrected state y^c is kept: step m corrects y^c in place with z_{m-1}, z_m, and the
    next model input is formed directly from y^c, z_m, z_{m-1} (the predicted state is never
    materialised), so the live particle tensors are y^c, z_m and the model input.
    """

    name = "pc"
    spread: ClassVar[float] = PC_SPREAD

    def points(self, k, snr_t, abar, sbar, sigma0, singular):
        """See `InnerSolver.points`."""
        return multistep_grid(k, snr_t, abar, sbar, sigma0, self.spread)

    def plan(self, table: Table, k: int) -> Any:
        """See `InnerSolver.plan`."""
        a, s = path_ends(table, k)
        pred, corr = pc_coefficients(a, s, inner_scale(float(table["snr_t"]), self.spread))
        keep = np.where(s[1:] > 0, s[1:] / s[:-1], 0.0)
        return keep.tolist(), pred.tolist(), corr.tolist()

    def integrate(self, y, ev, plan):
        """See `InnerSolver.integrate`."""
        keep, pred, corr = plan
        z_prev, z = None, ev(0, [(1.0, y)])

        def corrected_ahead(m):
            """Correct y^c (step m - 1) in place; return the terms of step m's prediction."""
            if m > 0:  # corrector: redo step m-1 with z linear between z_{m-1} and z_m
                update_(y, keep[m - 1], [(corr[m - 1][0], z_prev), (corr[m - 1][1], z)])
            # predictor: z extrapolated linearly through z_{m-1}, z_m (first order at m = 0)
            ahead = [(keep[m], y), (pred[m][0], z)]
            if m > 0:
                ahead.append((-pred[m][1], z_prev))
            return ahead

        for m in range(len(keep) - 1):
            inp = ev.input(m + 1, corrected_ahead(m))
            z_prev = z  # drops z_{m-1} before the model runs
            z = ev.call(m + 1, inp)
            del inp
        return lincomb(corrected_ahead(len(keep) - 1))


SOLVERS: dict[str, type[InnerSolver]] = {
    cls.name: cls for cls in (Euler, Heun, Midpoint, Multistep, PC)
}


def path_ends(table: Table, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (a, s) at the K step starts followed by the path's end (abar, sbar).

    Parameters
    ----------
    table : Table
        The coefficient table ("a_s", "s_s", "abar", "sbar").
    k : int
        K, the steps.

    Returns
    -------
    tuple of numpy.ndarray
        Float64 a and s, K + 1 values each.
    """
    a = np.append(np.asarray(table["a_s"], dtype=np.float64)[:k], float(table["abar"]))
    s = np.append(np.asarray(table["s_s"], dtype=np.float64)[:k], float(table["sbar"]))
    return a, s


def snr_of(table: Table) -> float:
    """Return SNR(t) = (alpha_t / sigma_t)^2 of a transition's coefficient table.

    Parameters
    ----------
    table : Table
        The table ("alpha_t", "sigma_t").

    Returns
    -------
    float
        SNR(t).
    """
    return (float(table["alpha_t"]) / float(table["sigma_t"])) ** 2


def inner_scale(snr_t: float, spread: float = 1.0) -> float:
    """Return c = spread * sqrt(SNR(t) + 1).

    c^2 is the precision of z given x_t for unit-variance data: the inner measurement's
    r = a_s/s_s at which it starts to add information.

    Parameters
    ----------
    snr_t : float
        SNR(t) of the transition's start.
    spread : float
        The solver's spread (PC_SPREAD for "pc").

    Returns
    -------
    float
        c.

    Examples
    --------
    >>> inner_scale(3.0, spread=1.5)
    3.0
    """
    return spread * math.sqrt(snr_t + 1.0)


def multistep_grid(
    k: int, snr_t: float, abar: float, sbar: float, sigma0: float, spread: float = 1.0
) -> np.ndarray:
    """Place the K step starts of "multistep" and "pc" uniform in u = r/(r + c), r = a_s/s_s.

    c^2 = SNR(t) + 1 is the precision of z given x_t for unit-variance data (times spread^2): the
    inner measurement starts to add information when r^2 reaches it, so the steps go there instead
    of being spent at small r where the estimate barely moves (uniform s is c = abar/sigma0 when
    sbar = 0). u ends at r_end/(r_end + c), r_end = abar/sbar (u = 1 when sbar = 0).

    Parameters
    ----------
    k : int
        K, the steps.
    snr_t : float
        SNR(t) of the transition's start.
    abar, sbar : float
        The inner path's end.
    sigma0 : float
        The inner path's initial scale.
    spread : float
        The solver's spread.

    Returns
    -------
    numpy.ndarray
        K float64 inner times s in [0, 1), the first 0.
    """
    c = inner_scale(snr_t, spread)
    u_end = 1.0 if sbar == 0.0 else (abar / sbar) / (abar / sbar + c)
    u = np.arange(k, dtype=np.float64) / k * u_end
    r = c * u / (1.0 - u)
    return r * sigma0 / (abar + r * (sigma0 - sbar))  # the s with a_s/s_s = r


def multistep_coefficients(
    a: np.ndarray, s: np.ndarray, singular: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step float64 (keep, gain, beta): y_{j+1} = keep y_j + gain ((1+beta) z_j - beta z_{j-1}).

    a, s: the path a_s, s_s at the K+1 grid points s_0 < ... < s_K (the end). Given z_j the
    exact step is keep = s_{j+1}/s_j, gain = a_{j+1} - s_{j+1} a_j/s_j (data-prediction / DDIM
    form). beta makes z linear in lambda = log(a/s) between the last two points and averages it
    exactly over the step (weight d e^lambda): beta = (h/(1 - e^-h) - 1)/h_prev. lambda_0 = -inf
    where a_0 = 0, so the first two steps are first order. The last step of a singular path
    (`singular`: s_K ~ 0) is linear in kappa = s/a instead, averaged the same way; at s_K = 0 it
    is the value at kappa=0.

    Parameters
    ----------
    a, s : numpy.ndarray
        The path at the K + 1 grid points.
    singular : bool
        The path ends at s_K ~ 0.

    Returns
    -------
    tuple of numpy.ndarray
        (keep, gain, beta), K float64 values each.
    """
    k = len(a) - 1
    ratio = a / np.where(s > 0, s, 1.0)  # e^lambda, unused where s = 0
    # s > 0 at every point but the end, so both are exact where s_{j+1} = 0 too (keep 0, gain a)
    keep = s[1:] / s[:-1]
    gain = a[1:] - s[1:] * ratio[:-1]
    beta = np.zeros(k)
    for j in range(1, k):
        if a[j - 1] == 0.0:  # previous point is s=0 (lambda = -inf)
            continue
        if singular and j == k - 1:
            kp, kj, ke = s[j - 1] / a[j - 1], s[j] / a[j], s[j + 1] / a[j + 1]
            # mean of kappa over e^lambda in [1/kj, 1/ke]; 0 in the limit ke -> 0
            mean = ke * kj * math.log(kj / ke) / (kj - ke) if ke > 0 else 0.0
            beta[j] = (mean - kj) / (kj - kp)
        else:
            h = math.log(ratio[j + 1] / ratio[j])
            beta[j] = (h / -math.expm1(-h) - 1.0) / math.log(ratio[j] / ratio[j - 1])
    return keep, gain, beta


def pc_coefficients(a: np.ndarray, s: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-step float64 (predictor, corrector) weights of "pc", each of shape [K, 2].

    a, s: the path a_s, s_s at the K+1 grid points s_0 < ... < s_K (the end). Along the
    flow d(y/s_s) = D dr with r = a_s/s_s, so with D = z_j + slope (phi - phi_j),
    phi = r/sqrt(c^2 + r^2), one step is exactly (keep_j = s_{j+1}/s_j, multistep_coefficients)
      y_{j+1} = keep_j y_j + i0_j z_j + slope m_j,
      i0_j = s_{j+1} (r_{j+1} - r_j),  m_j = s_{j+1} int_{r_j}^{r_{j+1}} (phi - phi_j) dr,
    both finite where s_{j+1} = 0 (r = inf, phi = 1). Predictor: slope through z_{j-1}, z_j,
      y_{j+1} = keep y_j + pred[j,0] z_j - pred[j,1] z_{j-1}  (j = 0: first order, pred[0,1] = 0);
    corrector (once z_{j+1} is known, j < K-1): slope through z_j, z_{j+1},
      y_{j+1} = keep y_j + corr[j,0] z_j + corr[j,1] z_{j+1}.

    Parameters
    ----------
    a, s : numpy.ndarray
        The path at the K + 1 grid points.
    c : float
        The scale in phi (`inner_scale`).

    Returns
    -------
    tuple of numpy.ndarray
        (pred, corr), each [K, 2] float64.
    """
    k = len(a) - 1
    pos = s > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(pos, a / np.where(pos, s, 1.0), np.inf)
        hyp = np.hypot(c, r)  # inf at r = inf
        phi = np.where(pos, r / hyp, 1.0)
    i0 = a[1:] - s[1:] * r[:-1]  # = s_{j+1} (r_{j+1} - r_j), = a_K where s_K = 0
    # s_{j+1} int phi dr = s_{j+1} (hyp_{j+1} - hyp_j), with s hyp = hypot(c s, a) finite at s = 0
    i1 = np.hypot(c * s[1:], a[1:]) - s[1:] * hyp[:-1]
    m = i1 - phi[:-1] * i0
    pred = np.zeros((k, 2))
    corr = np.zeros((k, 2))
    # where two points' phi coincide in float64 (a path below its resolution, e.g. a subnormal
    # step) no slope goes through them: m / inf = 0, that step falls back to first order
    dphi = phi[1:-1] - phi[:-2]
    dphi = np.where(dphi != 0, dphi, np.inf)
    slope_prev = m[1:] / dphi  # steps 1..K-1, slope through (j-1, j)
    pred[0, 0] = i0[0]
    pred[1:, 0] = i0[1:] + slope_prev
    pred[1:, 1] = slope_prev
    slope_next = m[:-1] / dphi  # steps 0..K-2, slope through (j, j+1)
    corr[:-1, 0] = i0[:-1] - slope_next
    corr[:-1, 1] = slope_next
    return pred, corr
