"""Exact Gaussian-mixture data model: the ground truth every sampler is tested against.

Data z ~ sum_k pi_k N(m_k, v_k I) in R^d. Everything below is closed form (docs/math.md §7):
denoiser, velocity, marginals p_t, posterior p(z|x_t), the GLASS transition kernel p(x_t'|x_t) for
any rho, and reward-tilted mixtures p(z) exp(lambda r(z)) / Z. Computed in float64; results are cast
back to the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from glass_core import _random
from glass_core._core import glass_coefficients
from glass_core.errors import InvalidInputError
from glass_core.models.base import (
    DenoiserBase,
    TimeLike,
    check_batch,
    scalar_time,
    schedule_values,
    time_values,
)
from glass_core.schedules import RectifiedFlow, Schedule, resolve_rho

_F64 = torch.float64
_LOG2PI = math.log(2.0 * math.pi)


def _col(c: float | np.ndarray, device: torch.device) -> torch.Tensor:
    """float64 scalar or [B] coefficient as a [B or 1, 1] tensor for [B, K] arithmetic."""
    arr = np.asarray(c, dtype=np.float64)
    return torch.as_tensor(arr, dtype=_F64, device=device).reshape(-1, 1)


def kernel_scalars(
    schedule: Schedule,
    t: TimeLike,
    t_next: TimeLike,
    rho: float | str,
) -> tuple[float, float, float]:
    """Return (gamma, abar, sbar) of the z-conditional kernel (docs/math.md §3).

    The kernel is N(abar z + gamma x_t, sbar^2 I).

    Parameters
    ----------
    schedule : Schedule
        The noise schedule.
    t, t_next : float
        The transition's times.
    rho : float or str
        The noise correlation (or "ddpm").

    Returns
    -------
    tuple of float
        (gamma, abar, sbar).
    """
    tt, tn = scalar_time(t, "t"), scalar_time(t_next, "t_next")
    if not tn > tt:
        raise InvalidInputError(f"t_next must be > t, got t={tt}, t_next={tn}")
    r = resolve_rho(schedule, rho, tt, tn)
    c = glass_coefficients(schedule, tt, tn, r, np.zeros(1))
    return c.gamma, c.abar, c.sbar


class GaussianMixture(DenoiserBase):
    """sum_k weights_k N(means_k, stds_k^2 I) in R^d with an exact denoiser (prediction "x1").

    Inputs x may be [B, d] or [B, *shape] with prod(shape) == d.

    Parameters
    ----------
    means : torch.Tensor
        Component means [K, d].
    stds : torch.Tensor
        Component standard deviations [K].
    weights : torch.Tensor
        Component weights [K] (normalised here).
    schedule : Schedule, optional
        The noise schedule (default: rectified flow).

    Raises
    ------
    InvalidInputError
        Inconsistent shapes, non-finite values, stds <= 0, or weights negative or all zero.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor,
        weights: torch.Tensor,
        schedule: Schedule | None = None,
    ):
        means = torch.as_tensor(means)
        stds = torch.as_tensor(stds)
        weights = torch.as_tensor(weights)
        if means.ndim != 2 or means.shape[0] < 1:
            raise InvalidInputError(f"means must have shape [K, d], got {tuple(means.shape)}")
        k = means.shape[0]
        if stds.shape != (k,):
            raise InvalidInputError(f"stds must have shape [{k}], got {tuple(stds.shape)}")
        if weights.shape != (k,):
            raise InvalidInputError(f"weights must have shape [{k}], got {tuple(weights.shape)}")
        if not torch.all(torch.isfinite(means)):
            raise InvalidInputError("means must be finite")
        if not (torch.all(torch.isfinite(stds)) and torch.all(stds > 0)):
            raise InvalidInputError("stds must be finite and > 0")
        finite = torch.all(torch.isfinite(weights))
        if not (finite and torch.all(weights >= 0) and weights.sum() > 0):
            raise InvalidInputError("weights must be finite, >= 0 and not all zero")
        super().__init__(schedule if schedule is not None else RectifiedFlow(), prediction="x1")
        self.means = means.to(_F64)
        self.stds = stds.to(_F64)
        self.weights = weights.to(_F64) / weights.to(_F64).sum()
        # Set by `tilted`: log Z of p(z) exp(lambda r(z)) and the reward r itself.
        self.log_normalizer: float = 0.0
        self.reward: Callable[[torch.Tensor], torch.Tensor] | None = None

    # -- basics -------------------------------------------------------------------------------

    @property
    def num_components(self) -> int:
        """Return the number of mixture components."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """Return the data dimension."""
        return self.means.shape[1]

    def _params(self, device: torch.device):
        return (
            self.means.to(device),
            self.stds.to(device) ** 2,
            torch.log(self.weights.to(device)),
        )

    def _flat(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        check_batch(x, name)
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise InvalidInputError(
                f"{name} must have shape [B, {self.dim}] (or [B, ...] with {self.dim} elements per "
                f"row), got {tuple(x.shape)}"
            )
        return flat.to(_F64)

    def mean(self) -> torch.Tensor:
        """E[z], [d] float64."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Cov[z], [d, d] float64."""
        mu = self.mean()
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        second = second + torch.diag(
            torch.full((self.dim,), float(self.weights @ self.stds**2), dtype=_F64)
        )
        return second - torch.outer(mu, mu)

    def _mixture_sample(
        self,
        log_w: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        generator: _random.Generator,
    ) -> torch.Tensor:
        """Row-wise draw from sum_k exp(log_w[b,k]) N(mean[b,k], var[b,k] I); [B, d] float64."""
        b = log_w.shape[0]
        cdf = torch.cumsum(torch.softmax(log_w, dim=1), dim=1)
        u = _random.rand((b, 1), generator, device=log_w.device, dtype=_F64)
        # Clamp so rounding in the last CDF entry can never index past K-1.
        k = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_(max=log_w.shape[1] - 1).squeeze(1)
        rows = torch.arange(b, device=log_w.device)
        eps = _random.randn((b, mean.shape[-1]), generator, device=log_w.device, dtype=_F64)
        return mean[rows, k] + var[rows, k].sqrt().unsqueeze(1) * eps

    @staticmethod
    def _mixture_log_prob(
        y: torch.Tensor, log_w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """Log sum_k w_k N(y; mean_k, var_k I); y [B, d], mean [B|1, K, d], var [B|1, K]."""
        d = y.shape[1]
        sq = ((y.unsqueeze(1) - mean) ** 2).sum(-1)
        comp = -0.5 * (d * (_LOG2PI + torch.log(var)) + sq / var)
        return torch.logsumexp(log_w + comp, dim=1)

    def sample(
        self, n: int, generator: _random.Generator = None, *, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """N exact data samples, [n, d] float64.

        Parameters
        ----------
        n : int
            Samples.
        generator : torch.Generator, optional
            The randomness.
        device : optional
            Where to draw them.

        Returns
        -------
        torch.Tensor
            [n, d] float64.
        """
        m, v, lw = self._params(torch.device(device))
        return self._mixture_sample(
            lw.expand(n, -1), m.unsqueeze(0).expand(n, -1, -1), v.expand(n, -1), generator
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log p_data(z), [B] float64.

        Parameters
        ----------
        z : torch.Tensor
            Points [B, d].

        Returns
        -------
        torch.Tensor
            [B] float64.
        """
        zf = self._flat(z, "z")
        m, v, lw = self._params(zf.device)
        return self._mixture_log_prob(zf, lw.unsqueeze(0), m.unsqueeze(0), v.unsqueeze(0))

    # -- marginals and posterior ----------------------------------------------------------------

    def _marginal_pieces(self, t: float | np.ndarray, device: torch.device):
        a, s, _, _ = schedule_values(self.schedule, t)
        m, v, lw = self._params(device)
        a_, s_ = _col(a, device), _col(s, device)
        return a_, s_, m, v, lw

    def marginal_log_prob(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Log p_t(x) with p_t the law of alpha_t z + sigma_t eps, [B] float64.

        Parameters
        ----------
        x : torch.Tensor
            Points [B, d].
        t : float
            The time.

        Returns
        -------
        torch.Tensor
            [B] float64.
        """
        xf = self._flat(x)
        a, s, m, v, lw = self._marginal_pieces(time_values(t, xf.shape[0]), xf.device)
        mean = a.unsqueeze(-1) * m.unsqueeze(0)
        var = a**2 * v + s**2
        return self._mixture_log_prob(xf, lw.unsqueeze(0), mean, var)

    def sample_marginal(
        self,
        n: int,
        t: TimeLike,
        generator: _random.Generator = None,
        *,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """N exact samples of p_t, [n, d] float64.

        Parameters
        ----------
        n : int
            Samples.
        t : float
            The time.
        generator : torch.Generator, optional
            The randomness.
        device : optional
            Where to draw them.

        Returns
        -------
        torch.Tensor
            [n, d] float64.
        """
        a, s, m, v, lw = self._marginal_pieces(scalar_time(t, "t"), torch.device(device))
        mean = (a * m).unsqueeze(0).expand(n, -1, -1)
        var = (a**2 * v + s**2).expand(n, -1)
        return self._mixture_sample(lw.expand(n, -1), mean, var, generator)

    def _responsibilities(self, xf: torch.Tensor, t: float | np.ndarray):
        """Log w_k(x) [B, K] (normalised), tot_k = a^2 v_k + s^2 [B|1, K], and a, s, m, v."""
        a, s, m, v, lw = self._marginal_pieces(t, xf.device)
        tot = a**2 * v + s**2  # variance of x_t given component k
        # |x - a m_k|^2 expanded so the [B, K, d] tensor is never built (this is the hot path)
        sq = (xf * xf).sum(1, keepdim=True) - 2 * a * (xf @ m.T) + a**2 * (m * m).sum(1)
        log_w = lw - 0.5 * (self.dim * torch.log(tot) + sq.clamp_min(0) / tot)
        return log_w - torch.logsumexp(log_w, dim=1, keepdim=True), tot, a, s, m, v

    def posterior(self, x: torch.Tensor, t: TimeLike):
        """p(z | x_t = x) = sum_k w_k N(mean_k, var_k I).

        Returns (log_w [B, K] normalised, mean [B, K, d], var [B, K]), all float64.

        Parameters
        ----------
        x : torch.Tensor
            Points [B, d].
        t : float
            The time.

        Returns
        -------
        tuple of torch.Tensor
            (log w [B, K], mean [B, K, d], var [B, K]), float64.
        """
        xf = self._flat(x)
        log_w, tot, a, s, m, v = self._responsibilities(xf, time_values(t, xf.shape[0]))
        # (s^2 m_k + a v_k x) / (s^2 + a^2 v_k): finite at t=1 (s=0) and t=0 (a=0).
        mean = (s**2).unsqueeze(-1) * m.unsqueeze(0) + (a * v).unsqueeze(-1) * xf.unsqueeze(1)
        mean = mean / tot.unsqueeze(-1)
        var = v * s**2 / tot
        return log_w, mean, var.expand_as(log_w)

    def sample_posterior(
        self, x: torch.Tensor, t: TimeLike, generator: _random.Generator = None
    ) -> torch.Tensor:
        """Exact z ~ p(z | x_t = x), shaped like x.

        Parameters
        ----------
        x : torch.Tensor
            Points [B, ...].
        t : float
            The time.
        generator : torch.Generator, optional
            The randomness.

        Returns
        -------
        torch.Tensor
            Shaped like x.
        """
        log_w, mean, var = self.posterior(x, t)
        return self._mixture_sample(log_w, mean, var, generator).reshape(x.shape).to(x.dtype)

    def _denoise64(self, x: torch.Tensor, tv: float | np.ndarray) -> torch.Tensor:
        xf = self._flat(x)
        log_w, tot, a, s, m, v = self._responsibilities(xf, tv)
        r = torch.exp(log_w) / tot  # D = s^2 sum_k r_k m_k + a x sum_k r_k v_k
        d = s**2 * (r @ m) + (a * (r @ v).unsqueeze(1)) * xf
        return d.reshape(x.shape).to(x.dtype)

    def _predict(self, x: torch.Tensor, tv: float | np.ndarray) -> torch.Tensor:
        # Exact denoiser with float64 times (skips the tensor-time path of DenoiserBase).
        return self._denoise64(x, tv)

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return the network's prediction at (x, t) on a tensor of times.

        Parameters
        ----------
        x : torch.Tensor
            Inputs [M, ...].
        t : torch.Tensor
            Times [M] in [0, 1].

        Returns
        -------
        torch.Tensor
            The prediction, shaped like x.
        """
        return self._denoise64(x, time_values(t, x.shape[0]))

    # -- the GLASS transition kernel (docs/math.md §3, §7) --------------------------------------

    def transition(self, x: torch.Tensor, t: TimeLike, t_next: TimeLike, rho: float | str):
        """Exact p(x_t' | x_t = x) = sum_k w_k N(mean_k, var_k I) for correlation rho (or "ddpm").

        Returns (log_w [B, K], mean [B, K, d], var [B, K]), float64.

        Parameters
        ----------
        x : torch.Tensor
            Points [B, d].
        t, t_next : float
            The transition's times.
        rho : float or str
            The noise correlation (or "ddpm").

        Returns
        -------
        tuple of torch.Tensor
            (log w [B, K], mean [B, K, d], var [B, K]), float64.
        """
        gamma, abar, sbar = kernel_scalars(self.schedule, t, t_next, rho)
        log_w, pm, pv = self.posterior(x, scalar_time(t, "t"))
        xf = self._flat(x)
        mean = abar * pm + gamma * xf.unsqueeze(1)
        var = abar**2 * pv + sbar**2
        return log_w, mean, var

    def sample_transition(
        self,
        x: torch.Tensor,
        t: TimeLike,
        t_next: TimeLike,
        rho: float | str = "ddpm",
        generator: _random.Generator = None,
    ) -> torch.Tensor:
        """Exact x_t' ~ p(x_t' | x_t = x), shaped like x (x's dtype).

        Parameters
        ----------
        x : torch.Tensor
            Points [B, ...].
        t, t_next : float
            The transition's times.
        rho : float or str
            The noise correlation (or "ddpm").
        generator : torch.Generator, optional
            The randomness.

        Returns
        -------
        torch.Tensor
            Shaped like x.
        """
        log_w, mean, var = self.transition(x, t, t_next, rho)
        return self._mixture_sample(log_w, mean, var, generator).reshape(x.shape).to(x.dtype)

    def transition_log_prob(
        self,
        x_next: torch.Tensor,
        x: torch.Tensor,
        t: TimeLike,
        t_next: TimeLike,
        rho: float | str = "ddpm",
    ) -> torch.Tensor:
        """Log p(x_t' = x_next | x_t = x), [B] float64.

        Parameters
        ----------
        x_next, x : torch.Tensor
            Points [B, d].
        t, t_next : float
            The transition's times.
        rho : float or str
            The noise correlation (or "ddpm").

        Returns
        -------
        torch.Tensor
            [B] float64.
        """
        yf = self._flat(x_next, "x_next")
        if x_next.shape != x.shape:
            raise InvalidInputError(
                f"x_next must have the shape of x {tuple(x.shape)}, got {tuple(x_next.shape)}"
            )
        log_w, mean, var = self.transition(x, t, t_next, rho)
        return self._mixture_log_prob(yf, log_w, mean, var)

    def transition_moments(
        self, x: torch.Tensor, t: TimeLike, t_next: TimeLike, rho: float | str = "ddpm"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [B, d] and covariance [B, d, d] of the exact kernel, float64.

        Parameters
        ----------
        x : torch.Tensor
            Points [B, d].
        t, t_next : float
            The transition's times.
        rho : float or str
            The noise correlation (or "ddpm").

        Returns
        -------
        tuple of torch.Tensor
            (mean [B, d], covariance [B, d, d]).
        """
        log_w, mean, var = self.transition(x, t, t_next, rho)
        w = torch.softmax(log_w, dim=1)
        mu = torch.einsum("bk,bki->bi", w, mean)
        second = torch.einsum("bk,bki,bkj->bij", w, mean, mean)
        eye = torch.eye(self.dim, dtype=_F64, device=mu.device)
        second = second + (w * var).sum(1)[:, None, None] * eye
        return mu, second - mu.unsqueeze(2) * mu.unsqueeze(1)

    # -- reward tilting (exact targets for alignment) -------------------------------------------

    def tilted(self, reward_kind: str, params: Any, lambda_: float) -> GaussianMixture:
        """Return the exact tilted target p(z) exp(lambda_ r(z)) / Z as a GaussianMixture.

        reward_kind "linear": r(z) = a.z, params = a ([d]) or {"a": a}.
        reward_kind "quadratic": r(z) = -|z - c|^2 / (2 s^2), params = {"c": c, "s": s} or (c, s);
        needs lambda_ >= 0. The result has `.log_normalizer` = log Z (relative to this mixture,
        plus this mixture's own log_normalizer) and `.reward(z)` -> [B].

        Parameters
        ----------
        reward_kind : str
            "linear" or "quadratic" (see above).
        params : Any
            The reward's parameters.
        lambda_ : float
            The tilt's strength.

        Returns
        -------
        GaussianMixture
            The tilted mixture (its ``log_normalizer`` holds log Z).

        Raises
        ------
        InvalidInputError
            An unknown kind or bad parameters.
        """
        lam = float(lambda_)
        if not math.isfinite(lam):
            raise InvalidInputError(f"lambda_ must be finite, got {lambda_!r}")
        m, v, lw = self._params(self.means.device)
        d = self.dim
        if reward_kind == "linear":
            a = params["a"] if isinstance(params, Mapping) else params
            a = torch.as_tensor(a, dtype=_F64).reshape(-1)
            if a.shape != (d,) or not torch.all(torch.isfinite(a)):
                raise InvalidInputError(f"params: linear reward needs a finite a of shape [{d}]")
            new_m = m + lam * v.unsqueeze(1) * a
            new_v = v
            log_c = lam * (m @ a) + 0.5 * lam**2 * v * (a @ a)

            def reward(z: torch.Tensor) -> torch.Tensor:
                zf = self._flat(z, "z")
                return (zf @ a.to(zf.device)).to(z.dtype)
        elif reward_kind == "quadratic":
            if isinstance(params, Mapping):
                c, s = params["c"], params["s"]
            else:
                c, s = params
            c = torch.as_tensor(c, dtype=_F64).reshape(-1)
            s = float(s)
            if c.shape != (d,) or not torch.all(torch.isfinite(c)):
                raise InvalidInputError(f"params: quadratic reward needs a finite c of shape [{d}]")
            if not (math.isfinite(s) and s > 0):
                raise InvalidInputError(f"params: quadratic reward needs s > 0, got {s}")
            if lam < 0:
                raise InvalidInputError(f"lambda_ must be >= 0 for a quadratic reward, got {lam}")

            def reward(z: torch.Tensor) -> torch.Tensor:
                zf = self._flat(z, "z")
                return (-((zf - c.to(zf.device)) ** 2).sum(1) / (2 * s * s)).to(z.dtype)

            if lam == 0:
                new_m, new_v, log_c = m, v, torch.zeros_like(v)
            else:
                tau = s * s / lam  # exp(lam r) = (2 pi tau)^{d/2} N(z; c, tau I)
                new_v = v * tau / (v + tau)
                new_m = (tau * m + v.unsqueeze(1) * c) / (v + tau).unsqueeze(1)
                log_c = 0.5 * d * torch.log(tau / (v + tau)) - ((c - m) ** 2).sum(1) / (
                    2 * (v + tau)
                )
        else:
            raise InvalidInputError(
                f"reward_kind must be 'linear' or 'quadratic', got {reward_kind!r}"
            )
        new_lw = lw + log_c
        log_z = torch.logsumexp(new_lw, dim=0)
        out = GaussianMixture(new_m, new_v.sqrt(), torch.softmax(new_lw, dim=0), self.schedule)
        out.log_normalizer = float(log_z) + self.log_normalizer
        out.reward = reward
        return out

    def __repr__(self) -> str:
        """Return a short description of the object."""
        return (
            f"GaussianMixture(K={self.num_components}, d={self.dim}, "
            f"schedule={getattr(self.schedule, 'name', self.schedule)!r})"
        )
