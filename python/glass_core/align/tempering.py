"""Adaptive tempering: the next reward exponent of tempered SMC, chosen by bisection on the ESS.

The intermediate target at potential step k is p_{t_k}(x) exp(lambda_k r(D_{t_k}(x))) with
0 <= lambda_1 <= ... <= lambda_K = lambda: the log-potential of a particle is
lambda_k r_k - lambda_{k-1} r_{k-1} (what its lineage received so far is lambda_{k-1} r_{k-1}).
lambda_k is the largest value in [lambda_{k-1}, lambda] whose reweighted ESS (with the carried
weights) is at least ess_target * N, found per group by vectorised bisection, as adaptive tempered
SMC libraries do; the final step takes lambda, so the weights are exact for it. Everything is
torch on the particles' device: no host synchronisation (the engine's weight part makes the one
transfer of the step).
"""

from __future__ import annotations

import torch

BISECTION_STEPS = 60  # halves [lambda_{k-1}, lambda] to 2^-60 of its width


def relative_ess(log_w: torch.Tensor) -> torch.Tensor:
    """Compute the relative effective sample size ESS / N of each row of log-weights.

    Parameters
    ----------
    log_w : torch.Tensor
        [B, N] unnormalised log-weights.

    Returns
    -------
    torch.Tensor
        [B]: 1 for equal weights, 0 for a row that is all -inf.
    """
    top = log_w.max(dim=1, keepdim=True).values
    w = torch.exp(log_w - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    s1, s2 = w.sum(dim=1), (w * w).sum(dim=1)
    return torch.nan_to_num(s1 * s1 / (s2 * log_w.shape[1]), nan=0.0)


def next_exponent(
    log_weights: torch.Tensor,
    scores: torch.Tensor,
    applied: torch.Tensor,
    previous: torch.Tensor,
    lambda_: float,
    ess_target: float,
) -> torch.Tensor:
    """Choose the next exponents lambda_k [B] by bisection on the reweighted ESS.

    Parameters
    ----------
    log_weights : torch.Tensor
        [B, N] float64 carried normalised log-weights (before this step).
    scores : torch.Tensor
        [B, N] float64 this step's rewards r_k.
    applied : torch.Tensor
        [B, N] float64 log-potentials applied along each lineage so far (lambda_{k-1} r_{k-1}).
    previous : torch.Tensor
        [B] float64 lambda_{k-1}.
    lambda_ : float
        The final exponent (the upper bound).
    ess_target : float
        In (0, 1]: the ESS / N to keep after reweighting.

    Returns
    -------
    torch.Tensor
        [B] float64: lambda when its ESS reaches the target, lambda_{k-1} when even that misses
        it (the exponent never decreases), else the bisection's largest exponent meeting it.
    """

    def ess_at(lam: torch.Tensor) -> torch.Tensor:
        return relative_ess(log_weights + lam[:, None] * scores - applied)

    top = torch.full_like(previous, lambda_)
    lo, hi = previous, top
    done = ess_at(hi) >= ess_target
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        ok = ess_at(mid) >= ess_target
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return torch.where(done, top, lo)
