"""Adaptive tempering: the next reward exponent of tempered SMC, chosen by bisection on the ESS.

The intermediate target at potential step k is p_{t_k}(x) exp(lambda_k r(D_{t_k}(x))) with
0 <= lambda_1 <= ... <= lambda_K = lambda: the log-potential of a particle is
lambda_k r_k - lambda_{k-1} r_{k-1} (what its lineage received so far is lambda_{k-1} r_{k-1}).
lambda_k is the largest value in [lambda_{k-1}, lambda] whose reweighted ESS (with the carried
weights) is at least ess_target * N, found per group by vectorised bisection, as adaptive tempered
SMC libraries do; the final step takes lambda, so the weights are exact for it.
"""

from __future__ import annotations

import numpy as np

BISECTION_STEPS = 60  # halves [lambda_{k-1}, lambda] to 2^-60 of its width


def relative_ess(log_w: np.ndarray) -> np.ndarray:
    """ESS / N of unnormalised log-weights [B, N] per row (1 for equal weights)."""
    top = log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w - np.where(np.isfinite(top), top, 0.0))
    s1, s2 = w.sum(axis=1), (w * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s1 * s1 / (s2 * log_w.shape[1])
    return np.nan_to_num(out, nan=0.0)


def next_exponent(
    log_weights: np.ndarray,
    scores: np.ndarray,
    applied: np.ndarray,
    previous: np.ndarray,
    lambda_: float,
    ess_target: float,
) -> np.ndarray:
    """The next exponents lambda_k [B].

    Parameters
    ----------
    log_weights : np.ndarray
        [B, N] carried normalised log-weights (before this step).
    scores : np.ndarray
        [B, N] this step's rewards r_k.
    applied : np.ndarray
        [B, N] log-potentials applied along each lineage so far (lambda_{k-1} r_{k-1}).
    previous : np.ndarray
        [B] lambda_{k-1}.
    lambda_ : float
        The final exponent (the upper bound).
    ess_target : float
        In (0, 1]: the ESS / N to keep after reweighting.

    Returns
    -------
    np.ndarray
        [B] float64: lambda when its ESS reaches the target, lambda_{k-1} when even that misses
        it (the exponent never decreases), else the bisection's largest exponent meeting it.
    """

    def ess_at(lam: np.ndarray) -> np.ndarray:
        return relative_ess(log_weights + lam[:, None] * scores - applied)

    top = np.full_like(previous, lambda_)
    lo, hi = previous.copy(), top.copy()
    done = ess_at(hi) >= ess_target
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        ok = ess_at(mid) >= ess_target
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return np.where(done, top, lo)
