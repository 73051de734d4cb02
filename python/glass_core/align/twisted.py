"""Twisted proposals with exact weights (TDS, Wu et al. 2023) for Gaussian-kernel transitions.

A transition whose every substep s -> s' is Gaussian given D_s, x' = gamma x + abar D_s(x) +
sigma xi = m(x) + sigma xi (the SDE, whose ``scalars(schedule, t, t')`` lists (s, gamma, abar,
sigma) per substep), is twisted by the gradient of the twist log psi_s(x) = lambda r(D_s(x)):

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

from dataclasses import dataclass
from typing import Any

import torch

from glass_core import _random
from glass_core.align._common import CountedModel, fail
from glass_core.align.fk import PROPOSALS, FKSampler
from glass_core.align.fk_state import FKState
from glass_core.align.potentials import Diff, PotentialState, ScoreContext
from glass_core.rewards.base import Reward, check_rewards


def check_twistable(transition: Any) -> None:
    """Raise unless `transition` exposes a Gaussian kernel per substep (the SDE does).

    Parameters
    ----------
    transition : Any
        The transition; it needs a callable ``scalars(schedule, t, t_next)`` and must not be
        a GLASS transition.

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
    if not callable(getattr(transition, "scalars", None)):
        raise fail(
            "transition",
            f"{transition!r} has no Gaussian kernel (needs `scalars(schedule, t, t_next)`, the "
            "per-substep (t0, gamma, abar, sbar) SDE has) for proposal='twisted'",
        )


def twist_gradient(
    model: CountedModel, reward: Reward, x: torch.Tensor, t: float, lambda_: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute the denoised state, its reward and the twist gradient at `x`.

    One forward and backward pass through the model (one NFE; the backward pass is not counted).

    Parameters
    ----------
    model : CountedModel
        The counted model.
    reward : Reward
        The reward r.
    x : torch.Tensor
        [rows, ...] particles at time `t`.
    t : float
        The particles' time.
    lambda_ : float
        The reward exponent scaling the gradient.

    Returns
    -------
    tuple of torch.Tensor
        (D_t(x), r(D_t(x)), g = grad_x lambda_ r(D_t(x))), all detached.

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

    Each stochastic substep draws x' = mean + std^2 g + std xi, the kernel N(mean, std^2)
    shifted by the twist gradient g.

    Parameters
    ----------
    transition : Any
        A transition with a Gaussian kernel: ``scalars(schedule, t, t_next)`` yields the
        substeps' (t0, gamma, abar, std).
    model : CountedModel
        The counted model.
    reward : Reward
        The reward r.
    x : torch.Tensor
        [rows, ...] particles at `t`.
    t, t_next : float
        The move's times.
    noise : Any
        The run's generator argument.
    lambda_ : float
        The reward exponent.
    start : tuple of (torch.Tensor, torch.Tensor) or None
        (D_t(x), g at x) from the last potential step, or None to compute them here.

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor)
        The moved particles and the [rows] float64 log density ratio untwisted / twisted of the
        whole move (to add to the log-potential of the step).

    Raises
    ------
    InvalidInputError
        If the model or the reward is not differentiable (from :func:`twist_gradient`).
    """
    ratio = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for k, (t0, gamma, abar, std) in enumerate(transition.scalars(model.schedule, t, t_next)):
        if k == 0 and start is not None:
            d, g = start
        else:
            d, _, g = twist_gradient(model, reward, x, t0, lambda_)
        mean = gamma * x + abar * d.to(x.dtype)
        if std <= 0.0:  # a deterministic substep (the last one, to t = 1): nothing to twist
            x = mean
            continue
        xi = _random.randn_like(mean, noise)
        g = g.to(mean.dtype)
        x = mean + std * std * g + std * xi
        g64, xi64 = g.reshape(g.shape[0], -1).double(), xi.reshape(xi.shape[0], -1).double()
        ratio = ratio - 0.5 * std * std * (g64 * g64).sum(1) - std * (g64 * xi64).sum(1)
    return x, ratio


@dataclass
class TwistState(PotentialState):
    """The difference potential's state plus the twist gradient and the move's density ratio.

    Per particle: the twist gradient g at the last potential step and the log density ratio of
    the move since (added to the next log-potential).
    """

    grad: torch.Tensor | None = None
    ratio: torch.Tensor | None = None

    def gather(self, index: torch.Tensor) -> None:
        """Follow the flat ancestors `index` after a resampling, twist gradient included."""
        super().gather(index)
        if self.grad is not None:
            self.grad = self.grad.index_select(0, index.to(self.grad.device))


class TwistedDiff(Diff):
    """The difference potential times the twisted proposal's density ratio.

    lambda (r_k - r_{k-1}) plus the log density ratio (module doc): exact weights for
    proposal='twisted'.
    """

    def init(self, n: int, device: torch.device) -> TwistState:
        """Return the state of `n` particles before the first potential step.

        Parameters
        ----------
        n : int
            Number of particles (all groups, B*N).
        device : torch.device
            The particles' device.

        Returns
        -------
        TwistState
            The difference potential's initial state, with no gradient or ratio yet.
        """
        base = super().init(n, device)
        return TwistState(base.running, base.applied)

    def step(
        self, state: PotentialState, scores: torch.Tensor, lambda_: float, *, final: bool
    ) -> torch.Tensor:
        """Return the difference log-potentials plus the pending move's log density ratio.

        Parameters
        ----------
        state, scores, lambda_, final
            As for :meth:`Potential.step`; a pending ``state.ratio`` is added and cleared.

        Returns
        -------
        torch.Tensor
            [B*N] float64 log-potentials of this step.
        """
        log_g = super().step(state, scores, lambda_, final=final)
        if isinstance(state, TwistState) and state.ratio is not None:
            log_g = log_g + state.ratio.to(log_g.device)
            state.ratio = None
        return log_g


class TwistedFKSampler(FKSampler):
    """FK steering with the twisted proposal (TDS): fk_steering(..., proposal="twisted").

    Every transition is a potential step (the twist gradient is taken there, in the same model
    call as the score r(D_t(x))); the potential is the difference potential. Same arguments as
    :class:`FKSampler`.

    Raises
    ------
    InvalidInputError
        For a transition without a Gaussian kernel (GLASS: use guide=True), another potential,
        `resample_every` / `resample_window`, or `process_group`.
    """

    def __init__(self, model: Any, reward: Reward, **kwargs: Any) -> None:
        check_twistable(kwargs.get("transition"))
        for name in ("resample_every", "resample_window", "process_group"):
            if kwargs.get(name) is not None:
                raise fail(name, "is not supported with proposal='twisted'")
        potential = kwargs.pop("potential", "diff")
        if not (potential == "diff" or type(potential) is Diff):
            raise fail("potential", f"must be 'diff' with proposal='twisted', got {potential!r}")
        super().__init__(model, reward, potential=TwistedDiff(), **kwargs)

    def score(self, ctx: ScoreContext, state: FKState, t: float, final: bool) -> torch.Tensor:
        """Score the particles and take the twist gradient in the same model call.

        Parameters
        ----------
        ctx, state, t, final
            As for :meth:`FKSampler.score`; at the final step it is that method unchanged.

        Returns
        -------
        torch.Tensor
            The rewards r(D_t(x)) of the particles.

        Raises
        ------
        InvalidInputError
            If the model or the reward is not differentiable.
        """
        if final:
            return super().score(ctx, state, t, final)
        d, r, g = twist_gradient(ctx.model, ctx.reward, state.particles, t, ctx.lambda_)
        state.denoised = d
        if isinstance(state.potential, TwistState):
            state.potential.grad = g
        return r

    def propose(self, ctx: ScoreContext, state: FKState, t: float, t_next: float) -> None:
        """Move the particles from t to t_next with the twisted kernel (see :func:`twisted_move`).

        Parameters
        ----------
        ctx, state, t, t_next
            As for :meth:`FKSampler.propose`; the move's log density ratio is stored on the
            potential state for the next log-potential.
        """
        pot = state.potential
        assert isinstance(pot, TwistState)  # made by TwistedDiff.init
        start = None if state.denoised is None or pot.grad is None else (state.denoised, pot.grad)
        state.particles, pot.ratio = twisted_move(
            self.transition, ctx.model, ctx.reward, state.particles, t, t_next, ctx.noise,
            ctx.lambda_, start,
        )  # fmt: skip
        state.denoised = None


PROPOSALS["twisted"] = TwistedFKSampler
