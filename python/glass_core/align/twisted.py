"""Twisted proposals with exact weights (TDS, Wu et al. 2023) for Gaussian-kernel transitions.

A transition whose every substep s -> s' is Gaussian given D_s, x' = m(x) + sigma xi (the SDE:
``gaussian_kernel`` and ``substeps_of``), is twisted by the gradient of the twist
log psi_s(x) = lambda r(D_s(x)):

    q(x' | x) = N(m(x) + sigma^2 g, sigma^2 I),  g = grad_x lambda r(D_s(x)),

and the importance weight multiplies by the ratio of the untwisted to the twisted density,

    log N(x'; m, sigma^2) - log N(x'; m + sigma^2 g, sigma^2) = -sigma^2 |g|^2 / 2 - sigma g . xi

(x' = m + sigma^2 g + sigma xi), so the FK target p(z) exp(lambda r(z)) / Z stays exact whatever
g is. With the difference potential lambda (r(D_{t_k}(x_k)) - r(D_{t_{k-1}}(x_{k-1}))) the
twists telescope over the substeps of a step, so only the kernel ratios are added per substep.
GLASS kernels have no tractable density: a twisted GLASS proposal is refused (use ``guide=True``,
the paper's uncorrected reward guidance).
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core import _random
from glass_core.align._common import CountedModel, fail
from glass_core.rewards.base import Reward, check_rewards


def check_twistable(transition: Any) -> None:
    """Raise unless `transition` exposes a Gaussian kernel per substep (the SDE does).

    Raises
    ------
    InvalidInputError
        Naming `transition`; for GLASS it says why and points to ``guide=True``.
    """
    from glass_core.transitions.glass import Glass

    if isinstance(transition, Glass):
        raise fail(
            "transition",
            f"{transition!r} has no tractable kernel density, so a twisted proposal cannot be "
            "weighted exactly: use proposal='twisted' with an SDE transition, or guide=True "
            "for the reward-guided GLASS proposal (uncorrected guidance)",
        )
    if not (hasattr(transition, "gaussian_kernel") and hasattr(transition, "substeps_of")):
        raise fail(
            "transition",
            f"{transition!r} has no Gaussian kernel (needs `gaussian_kernel` and `substeps_of`, "
            "as SDE has) for proposal='twisted'",
        )


def twist_gradient(
    model: CountedModel, reward: Reward, x: torch.Tensor, t: float, lambda_: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(D_t(x), r(D_t(x)), g = grad_x lambda_ r(D_t(x))) in one forward and backward pass
    through the model (one NFE; the backward pass is not counted).

    Raises
    ------
    InvalidInputError
        If the model or the reward is not differentiable.
    """
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        d = model.denoise(xx, t)
        r = check_rewards(reward(d), x.shape[0], finite=False)
        try:
            (g,) = torch.autograd.grad(r.sum(), xx)
        except RuntimeError as e:
            raise fail(
                "reward",
                f"and the model must be differentiable for proposal='twisted' (autograd: {e})",
            ) from None
    return d.detach(), r.detach(), lambda_ * g


def twisted_move(
    transition: Any,
    model: CountedModel,
    reward: Reward,
    x: torch.Tensor,
    t: float,
    t_next: float,
    noise: Any,
    lambda_: float,
    start: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move `x` from t to t_next with the twisted kernel of every substep of `transition`.

    Parameters
    ----------
    start
        (D_t(x), g at x) from the last potential step, or None to compute them here.

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor)
        The moved particles and the [rows] float64 log density ratio untwisted / twisted of the
        whole move (to add to the log-potential of the step).
    """
    ratio = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for k, (t0, t1) in enumerate(transition.substeps_of(t, t_next)):
        if k == 0 and start is not None:
            d, g = start
        else:
            d, _, g = twist_gradient(model, reward, x, t0, lambda_)
        mean, std = transition.gaussian_kernel(model.schedule, x, d.to(x.dtype), t0, t1)
        if std <= 0.0:  # a deterministic substep: nothing to twist
            x = mean
            continue
        xi = _random.randn_like(mean, noise)
        g = g.to(mean.dtype)
        x = mean + std * std * g + std * xi
        g64, xi64 = g.reshape(g.shape[0], -1).double(), xi.reshape(xi.shape[0], -1).double()
        ratio = ratio - 0.5 * std * std * (g64 * g64).sum(1) - std * (g64 * xi64).sum(1)
    return x, ratio
