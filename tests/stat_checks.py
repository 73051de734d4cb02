"""Statistical checks shared by the sampler tests: moment z-scores and an energy test, against
closed-form answers (their power and level are tested in transitions/test_sample_stats.py)."""

from __future__ import annotations

import torch

Z = 5.0  # z-score threshold per entry; with <= a few hundred entries a false alarm is < 1e-4


def moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """(z-scores of the sample mean, z-scores of the sample covariance) against exact moments.

    Standard errors come from the samples themselves: sqrt(cov_ii / N) for the mean and
    std((x_i - m_i)(x_j - m_j)) / sqrt(N) for covariance entries (valid for any finite 4th moment).
    """
    x = x.reshape(x.shape[0], -1).double()
    n = x.shape[0]
    mean, cov = mean.reshape(-1).double(), cov.double()
    m_hat = x.mean(0)
    z_mean = (m_hat - mean) / (torch.diagonal(cov) / n).sqrt()
    xc = x - m_hat
    prods = xc.unsqueeze(2) * xc.unsqueeze(1)  # [N, d, d]
    c_hat = prods.mean(0) * n / (n - 1)
    se = prods.std(0) / n**0.5
    z_cov = (c_hat - cov) / se
    return z_mean, z_cov


def assert_moments(x, mean, cov, z: float = Z, what: str = ""):
    zm, zc = moment_errors(x, mean, cov)
    assert zm.abs().max() < z, f"{what}: mean off by {zm.abs().max():.2f} standard errors"
    assert zc.abs().max() < z, f"{what}: covariance off by {zc.abs().max():.2f} standard errors"


def energy_pvalue(
    x: torch.Tensor, y: torch.Tensor, *, n: int = 1000, permutations: int = 300, seed: int = 0
) -> float:
    """Permutation p-value of the energy distance between subsamples (n each) of x and y."""
    g = torch.Generator().manual_seed(seed)
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    xs = x[torch.randperm(x.shape[0], generator=g)[:n]]
    ys = y[torch.randperm(y.shape[0], generator=g)[:n]]
    pooled = torch.cat([xs, ys])
    dist = torch.cdist(pooled, pooled)
    labels = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    perms = torch.stack(
        [labels] + [labels[torch.randperm(2 * n, generator=g)] for _ in range(permutations)]
    )  # [P+1, 2n]
    a, b = perms, 1 - perms
    da, db = dist @ a.T, dist @ b.T  # [2n, P+1]
    sxy = (b * da.T).sum(1)
    sxx = (a * da.T).sum(1)
    syy = (b * db.T).sum(1)
    stat = (2 * sxy - sxx - syy) / n**2
    return float(((stat[1:] >= stat[0]).sum() + 1) / (permutations + 1))
