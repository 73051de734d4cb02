"""Reward guidance as a denoiser wrapper.

D^r_t(x) = D_t(x) + scale * (sigma_t^2 / alpha_t) * grad_z r(z) |_{z = D_t(x)}, with D detached
(no backprop through the network, App. D.4), applied only when t lies in `window`.
Velocity-based transitions get u^r = u + c_t grad r with c_t = scale * nu_t^2 / 2 (eq. 43), since
u is affine in D. Inside GLASS the inner velocity is w1 xbar + w2 zhat + w3 x_t with
zhat = D_{t*}(alpha_{t*} S), so wrapping D gives exactly eq. (50) evaluated at t* (window on t*).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from glass_core.align._common import (
    CountedModel,
    Generator,
    Timer,
    check_callable,
    check_finite_float,
    check_model,
    check_window,
    propagate,
    ungroup,
)
from glass_core.align._config import sampling_validator
from glass_core.align._start import start_particles
from glass_core.align.results import GuidanceResult, uniform_log_weights
from glass_core.errors import InvalidInputError
from glass_core.models.base import time_values
from glass_core.rewards.base import Reward, check_rewards, evaluate_reward


class GuidedDenoiser:
    """A Denoiser whose prediction is nudged up the reward gradient.

    Build with :func:`guided`, whose arguments it takes.
    """

    def __init__(
        self,
        model: Any,
        reward: Reward,
        scale: float,
        window: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        check_model(model)
        check_callable(reward, "reward")
        self.model = model
        self.reward = reward
        self.scale = check_finite_float(scale, "scale")
        self.window = check_window(window, "window") or (0.0, 1.0)  # None: all of [0, 1]
        self.schedule = model.schedule

    def __getattr__(self, name: str) -> Any:
        """Forward other attributes to the wrapped model."""
        return getattr(self.model, name)

    def _coefficient(self, t: Any, x: torch.Tensor) -> float | torch.Tensor:
        """Scale * sigma^2/alpha where t is inside the window and alpha > 0, else 0."""
        tv = time_values(t, x.shape[0])  # float, or float64 [rows]
        per_row = isinstance(tv, np.ndarray)
        lo, hi = self.window
        sch = self.schedule
        if not per_row:
            a = float(sch.alpha(tv))
            if not (lo <= tv <= hi) or a <= 0.0:
                return 0.0
            return self.scale * float(sch.sigma(tv)) ** 2 / a
        tr = tv  # per-row times: a float64 array, as are the schedule's values at them
        av, sv = sch.alpha(tr), sch.sigma(tr)
        inside = (tr >= lo) & (tr <= hi) & (av > 0.0)
        c = np.where(inside, self.scale * sv**2 / np.where(av > 0.0, av, 1.0), 0.0)
        return torch.as_tensor(c, dtype=x.dtype, device=x.device).reshape(-1, *[1] * (x.ndim - 1))

    def reward_gradient(self, z: torch.Tensor) -> torch.Tensor:
        """Return grad_z r(z).

        Parameters
        ----------
        z : torch.Tensor
            [rows, ...] samples.

        Returns
        -------
        torch.Tensor
            Shaped like `z`.

        Raises
        ------
        RewardError
            If the rewards are badly shaped or not finite.
        InvalidInputError
            If the reward is not differentiable in z.
        """
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            r = self.reward(zz)
            check_rewards(r, z.shape[0])  # shape/finite check before the backward
            try:
                (grad,) = torch.autograd.grad(r.sum(), zz)
            except RuntimeError as e:
                raise InvalidInputError(
                    f"reward must be differentiable in z for guidance (torch.autograd: {e})"
                ) from None
        return grad

    def denoise(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Return the guided D_t(x) = D + scale sigma^2 / alpha grad r(D) inside the window.

        Parameters
        ----------
        x : torch.Tensor
            [rows, ...] particles at t.
        t : float or torch.Tensor
            The time (scalar or per row).

        Returns
        -------
        torch.Tensor
        """
        with torch.no_grad():
            d = self.model.denoise(x, t)
        c = self._coefficient(t, x)
        if isinstance(c, float) and (c == 0.0 or self.scale == 0.0):
            return d
        return d + c * self.reward_gradient(d)

    def velocity(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Return U from the guided D via eq. (26); defined for t < 1.

        Parameters
        ----------
        x : torch.Tensor
            [rows, ...] particles at t.
        t : float or torch.Tensor
            The time (scalar or per row).

        Returns
        -------
        torch.Tensor
        """
        tv = time_values(t, x.shape[0])  # float, or float64 [rows]
        per_row = isinstance(tv, np.ndarray)
        sch = self.schedule
        a, s = sch.alpha(tv), sch.sigma(tv)
        da, ds = sch.d_alpha(tv), sch.d_sigma(tv)
        cx, cd = ds / s, da - a * ds / s
        if per_row:
            shape = (-1, *[1] * (x.ndim - 1))
            cx = torch.as_tensor(cx, dtype=x.dtype, device=x.device).reshape(shape)
            cd = torch.as_tensor(cd, dtype=x.dtype, device=x.device).reshape(shape)
        return cx * x + cd * self.denoise(x, t)

    def __repr__(self) -> str:
        """Return the guided(...) call that builds this wrapper."""
        return f"guided({self.model!r}, scale={self.scale}, window={self.window})"


def guided(
    model: Any, reward: Reward, scale: float, window: tuple[float, float] | None = (0.0, 1.0)
) -> GuidedDenoiser:
    """Wrap `model` so every denoiser call is reward-guided.

    Usable with any transition and inside
    `fk_steering`; note that FK weights then no longer correct for the guidance, as in the paper's
    FKS-GLASS+grad).

    Parameters
    ----------
    model : Denoiser
        The model to guide.
    reward : callable
        A differentiable [rows, ...] -> [rows] reward.
    scale : float
        The guidance strength (D + scale sigma^2 / alpha grad r(D)).
    window : tuple of float, optional
        Guide only at times inside it (None: everywhere).

    Returns
    -------
    GuidedDenoiser

    Raises
    ------
    InvalidInputError
        For a bad model, reward, scale or window.
    """
    return GuidedDenoiser(model, reward, scale, window)


def reward_guidance(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    time_grid: Any,
    scale: float,
    window: tuple[float, float] | None = (0.0, 1.0),
    num_particles: int = 1,
    shape: Any = None,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    profile: bool = False,
    x0: torch.Tensor | None = None,
) -> GuidanceResult:
    """Sample `num_particles` per group with the reward-guided denoiser and score the results.

    `profile=True` measures model and reward time (NaN otherwise; the reward gradients inside
    the guided denoiser count as model time). `x0`: the samples at the grid's first time
    ([N, ...] or [B, N, ...]; `shape` may then be None), which may be t0 > 0.

    Parameters
    ----------
    model, reward, transition, num_particles, time_grid, shape, generator, num_groups, dtype,
    device, max_batch, progress, profile, x0
        As for :func:`~glass_core.align.fk_steering`.
    scale : float
        The guidance strength.
    window : tuple of float, optional
        Guide only at times inside it (None: everywhere).

    Returns
    -------
    GuidanceResult

    Raises
    ------
    InvalidInputError
        Naming the first invalid argument.
    ModelError, RewardError
        If the model or the reward returns NaN/inf or a badly shaped output.
    """
    wall_start = time.perf_counter()
    cfg = sampling_validator(
        model, reward, transition, time_grid, num_particles, shape, generator, num_groups,
        max_batch, x0,
    )(1)  # fmt: skip
    n, num_b, grouped = cfg.num_particles, cfg.num_groups, cfg.grouped
    gmodel = CountedModel(guided(model, reward, scale, window), cfg.max_batch, timed=profile)
    reward_timer = Timer(profile)
    x = start_particles(x0, num_b * n, cfg.shape, generator, dtype, device)
    with torch.no_grad():
        x = propagate(gmodel, transition, x, cfg.grid, generator, progress, "reward guidance")
        r = reward_timer(evaluate_reward, reward, x)
    rewards = r.reshape(num_b, n)
    return GuidanceResult(
        samples=ungroup(x.reshape(num_b, n, *cfg.shape), grouped),
        rewards=ungroup(rewards, grouped),
        log_weights=ungroup(uniform_log_weights(rewards), grouped),
        ancestors=None,
        nfe=gmodel.nfe,
        total_nfe=gmodel.nfe * n * num_b,
        model_time=gmodel.model_time if profile else float("nan"),
        reward_time=reward_timer.total if profile else float("nan"),
        wall_time=time.perf_counter() - wall_start,
    )
