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

import math
from typing import Any, Protocol

import numpy as np
import torch

from glass_core import _random
from glass_core._core import glass_coefficients
from glass_core.errors import InvalidInputError
from glass_core.models.base import Denoiser, working_dtype
from glass_core.schedules import Schedule, resolve_rho
from glass_core.transitions.base import Transition, check_choice, check_int


class Coefficients(Protocol):
    """The native GlassCoefficients table, or the dict `Glass.coefficients` builds from it."""

    def __getitem__(self, key: str, /) -> Any: ...


SOLVERS = ("euler", "heun", "midpoint", "multistep", "pc")
# One-evaluation-per-step solvers (the others evaluate twice per step).
SINGLE_EVAL = ("euler", "multistep", "pc")
# "pc"'s scale c = PC_SPREAD * sqrt(SNR(t) + 1): SNR(t) + 1 is the precision of z given x_t
# for unit-variance data, and real posteriors are tighter (the mixture benchmark's error is
# flat for 1.25-1.75 and rises outside; docs/benchmarks/glass_solvers.md).
PC_SPREAD = 1.5
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
    (docs/benchmarks/glass_solvers.md).
    rho=1 with K=1 (Euler) is deterministic DDIM; rho=1 with K>1 is still stochastic
    (docs/math.md §3).
    """

    def __init__(
        self,
        rho: float | str = "ddpm",
        inner_steps: int = 10,
        solver: str = "pc",
        sigma0: float = 1.0,
    ):
        resolve_rho_spec(rho)
        self.rho = rho
        self.inner_steps = check_int(inner_steps, "inner_steps", maximum=MAX_INNER_STEPS)
        self.solver = check_choice(solver, "solver", SOLVERS)
        s0 = float(sigma0)
        if not (math.isfinite(s0) and s0 > 0):
            raise InvalidInputError(f"sigma0 must be a finite float > 0, got {sigma0!r}")
        self.sigma0 = s0

    def __repr__(self) -> str:
        return (
            f"Glass(rho={self.rho!r}, inner_steps={self.inner_steps}, solver={self.solver!r}, "
            f"sigma0={self.sigma0})"
        )

    @property
    def nfe_per_call(self) -> int:
        return self.inner_steps * (1 if self.solver in SINGLE_EVAL else 2)

    def _singular(self, coeffs: Coefficients) -> bool:
        return float(coeffs["sbar"]) <= SINGULAR_SBAR * self.sigma0

    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        n = self.nfe_per_call
        if self.solver == "heun":
            rho = resolve_rho(schedule, self.rho, t, t_next)
            if self._singular(
                glass_coefficients(schedule, t, t_next, rho, np.zeros(1), self.sigma0)
            ):
                n -= 1
        return n - 1 if reuse else n

    def s_grid(self, head: Coefficients, singular: bool) -> np.ndarray:
        """Inner times where the velocity is evaluated (index j used by `_step`); `head` is the
        coefficient table at s=0."""
        k = self.inner_steps
        if self.solver in ("multistep", "pc"):
            spread = PC_SPREAD if self.solver == "pc" else 1.0
            return multistep_grid(
                k, snr_of(head), float(head["abar"]), float(head["sbar"]), self.sigma0, spread
            )
        if self.solver == "euler":
            return np.arange(k, dtype=np.float64) / k
        if self.solver == "midpoint":
            return np.arange(2 * k, dtype=np.float64) / (2 * k)
        return np.arange(k + (0 if singular else 1), dtype=np.float64) / k

    def coefficients(self, schedule: Schedule, t: float, t_next: float) -> dict:
        """The native float64 table for this transition over `s_grid` (plus "s", "singular")."""
        rho = resolve_rho(schedule, self.rho, t, t_next)
        head = glass_coefficients(schedule, t, t_next, rho, np.zeros(1), self.sigma0)
        singular = self._singular(head)
        s = self.s_grid(head, singular)
        table = dict(glass_coefficients(schedule, t, t_next, rho, s, self.sigma0))
        table["s"] = s
        table["singular"] = singular
        table["rho"] = rho
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
        wd = working_dtype(x)
        xw = x.to(wd)
        k = self.inner_steps
        h = 1.0 / k
        # Every per-step scalar as a Python float, once per transition (float64 products, one
        # rounding each); the tensor arithmetic below is one fresh result per update, the rest
        # in place (no temporaries of the particles' size, no host syncs).
        a_star = np.asarray(c["alpha_star"])
        in_x = (a_star * np.asarray(c["c_x"])).tolist()
        in_y = (a_star * np.asarray(c["c_y"])).tolist()
        w1, w2 = np.asarray(c["w1"]).tolist(), np.asarray(c["w2"]).tolist()
        t_star, s = np.asarray(c["t_star"]).tolist(), np.asarray(c["s"]).tolist()
        # exponential-integrator steps between the K step starts and the end s=1 (abar, sbar)
        keep, gain, beta = multistep_coefficients(
            np.append(np.asarray(c["a_s"])[:k], float(c["abar"])),
            np.append(np.asarray(c["s_s"])[:k], float(c["sbar"])),
            c["singular"],
        )
        keep, gain, beta = keep.tolist(), gain.tolist(), beta.tolist()
        if self.solver == "pc":
            pred, corr = pc_coefficients(
                np.append(np.asarray(c["a_s"]), float(c["abar"])),
                np.append(np.asarray(c["s_s"]), float(c["sbar"])),
                inner_scale(snr_of(c), PC_SPREAD),
            )
            pred, corr = pred.tolist(), corr.tolist()

        def zhat(j: int, y: torch.Tensor) -> torch.Tensor:
            if s[j] == 0.0:  # s=0: x_bar carries no information, zhat = D_t(x_t) (App. B.3)
                d0 = denoised if denoised is not None else model.denoise(x, t)
                return d0.to(wd)
            inp = torch.mul(xw, in_x[j]).add_(y, alpha=in_y[j])
            return model.denoise(inp.to(x.dtype), t_star[j]).to(wd)

        def vel(j: int, y: torch.Tensor) -> torch.Tensor:
            return torch.mul(y, w1[j]).add_(zhat(j, y), alpha=w2[j])

        def euler(j: int, y: torch.Tensor, h: float) -> torch.Tensor:
            # y + h (w1 y + w2 zhat) with (1 + h w1) formed in float64: for rho=1, K=1 it is
            # exactly 0, so the initial noise drops out bit-exactly (deterministic DDIM).
            z = zhat(j, y)
            return torch.mul(y, 1.0 + h * w1[j]).add_(z, alpha=h * w2[j])

        def multistep(j: int, y: torch.Tensor, z: torch.Tensor, z_prev: torch.Tensor | None):
            y = torch.mul(y, keep[j]).add_(z, alpha=gain[j] * (1.0 + beta[j]))
            if beta[j] == 0.0:
                return y
            assert z_prev is not None  # beta = 0 on the first step
            return y.sub_(z_prev, alpha=gain[j] * beta[j])

        y = _random.randn_like(xw, generator)
        if self.sigma0 != 1.0:
            y.mul_(self.sigma0)
        z_prev: torch.Tensor | None = None
        y_prev: torch.Tensor | None = None
        for m in range(k):
            if self.solver == "pc":
                z = zhat(m, y)  # at the predicted y_m
                if z_prev is not None and y_prev is not None:
                    # corrector: redo step m-1 with z linear between z_{m-1} and z_m
                    y = torch.mul(y_prev, keep[m - 1]).add_(z_prev, alpha=corr[m - 1][0])
                    y.add_(z, alpha=corr[m - 1][1])
                y_prev = y
                y = torch.mul(y, keep[m]).add_(z, alpha=pred[m][0])
                if z_prev is not None:  # predictor: z extrapolated linearly through z_{m-1}, z_m
                    y.sub_(z_prev, alpha=pred[m][1])
                z_prev = z
            elif self.solver == "euler":
                y = euler(m, y, h)
            elif self.solver == "midpoint":
                y = torch.add(y, vel(2 * m + 1, euler(2 * m, y, 0.5 * h)), alpha=h)
            elif self.solver == "multistep" or (m == k - 1 and c["singular"]):
                # heun into a singular s=1 takes the multistep last step: it extrapolates the
                # estimates at s_{K-2} (the previous step's first stage) and s_{K-1}.
                z = zhat(m, y)
                y, z_prev = multistep(m, y, z, z_prev), z
            else:  # heun
                z_prev = zhat(m, y)
                k1 = torch.mul(y, w1[m]).add_(z_prev, alpha=w2[m])
                k2 = vel(m + 1, torch.add(y, k1, alpha=h))
                y = torch.add(y, k1.add_(k2), alpha=0.5 * h)
        return torch.add(y, xw, alpha=float(c["gamma"])).to(x.dtype)


def snr_of(table: Coefficients) -> float:
    """SNR(t) = (alpha_t / sigma_t)^2 of a transition's coefficient table."""
    return (float(table["alpha_t"]) / float(table["sigma_t"])) ** 2


def inner_scale(snr_t: float, spread: float = 1.0) -> float:
    """c = spread * sqrt(SNR(t) + 1): c^2 is the precision of z given x_t for unit-variance data,
    the inner measurement's r = a_s/s_s at which it starts to add information."""
    return spread * math.sqrt(snr_t + 1.0)


def multistep_grid(
    k: int, snr_t: float, abar: float, sbar: float, sigma0: float, spread: float = 1.0
) -> np.ndarray:
    """The K step starts of "multistep" and "pc": uniform in u = r/(r + c), r = a_s/s_s = e^lambda.

    c^2 = SNR(t) + 1 is the precision of z given x_t for unit-variance data (times spread^2): the
    inner measurement starts to add information when r^2 reaches it, so the steps go there instead
    of being spent at small r where the estimate barely moves (uniform s is c = abar/sigma0 when
    sbar = 0). u ends at r_end/(r_end + c), r_end = abar/sbar (u = 1 when sbar = 0).
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

    a, s: the inner path a_s, s_s at the K+1 grid points s_0 = 0 < ... < s_K = 1. Given z_j the
    exact step is keep = s_{j+1}/s_j, gain = a_{j+1} - s_{j+1} a_j/s_j (data-prediction / DDIM
    form). beta makes z linear in lambda = log(a/s) between the last two points and averages it
    exactly over the step (weight d e^lambda): beta = (h/(1 - e^-h) - 1)/h_prev. lambda_0 = -inf,
    so the first two steps are first order. The last step of a singular path (`singular`: s_K ~ 0)
    is linear in kappa = s/a instead, averaged the same way; at s_K = 0 it is the value at kappa=0.
    """
    k = len(a) - 1
    ratio = a / np.where(s > 0, s, 1.0)  # e^lambda, unused where s = 0
    keep = np.where(s[1:] > 0, s[1:] / s[:-1], 0.0)
    gain = np.where(s[1:] > 0, a[1:] - s[1:] * ratio[:-1], a[1:])
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

    a, s: the inner path a_s, s_s at the K+1 grid points s_0 = 0 < ... < s_K = 1. Along the
    inner flow d(y/s_s) = D dr with r = a_s/s_s, so with D = z_j + slope (phi - phi_j),
    phi = r/sqrt(c^2 + r^2), one step is exactly (keep_j = s_{j+1}/s_j, multistep_coefficients)
      y_{j+1} = keep_j y_j + i0_j z_j + slope m_j,
      i0_j = s_{j+1} (r_{j+1} - r_j),  m_j = s_{j+1} int_{r_j}^{r_{j+1}} (phi - phi_j) dr,
    both finite where s_{j+1} = 0 (r = inf, phi = 1). Predictor: slope through z_{j-1}, z_j,
      y_{j+1} = keep y_j + pred[j,0] z_j - pred[j,1] z_{j-1}  (j = 0: first order, pred[0,1] = 0);
    corrector (once z_{j+1} is known, j < K-1): slope through z_j, z_{j+1},
      y_{j+1} = keep y_j + corr[j,0] z_j + corr[j,1] z_{j+1}.
    """
    k = len(a) - 1
    pos = s > 0
    r = np.divide(a, s, out=np.full_like(a, np.inf), where=pos)
    hyp = np.hypot(c, r)  # inf at r = inf
    phi = np.divide(r, hyp, out=np.ones_like(r), where=pos)
    i0 = a[1:] - s[1:] * r[:-1]  # = s_{j+1} (r_{j+1} - r_j), = a_K where s_K = 0
    # s_{j+1} int phi dr = s_{j+1} (hyp_{j+1} - hyp_j), with s hyp = hypot(c s, a) finite at s = 0
    i1 = np.hypot(c * s[1:], a[1:]) - s[1:] * hyp[:-1]
    m = i1 - phi[:-1] * i0
    pred = np.zeros((k, 2))
    corr = np.zeros((k, 2))
    slope_prev = m[1:] / (phi[1:-1] - phi[:-2])  # steps 1..K-1, slope through (j-1, j)
    pred[0, 0] = i0[0]
    pred[1:, 0] = i0[1:] + slope_prev
    pred[1:, 1] = slope_prev
    slope_next = m[:-1] / (phi[1:-1] - phi[:-2])  # steps 0..K-2, slope through (j, j+1)
    corr[:-1, 0] = i0[:-1] - slope_next
    corr[:-1, 1] = slope_next
    return pred, corr


def resolve_rho_spec(rho: object) -> None:
    """Validate a rho specification at construction time."""
    if isinstance(rho, bool):
        raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}")
    if isinstance(rho, str):
        if rho != "ddpm":
            raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}")
        return
    try:
        r = float(rho)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}") from None
    if not (math.isfinite(r) and -1.0 <= r <= 1.0):
        raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}")
