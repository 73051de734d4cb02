"""Feynman-Kac potentials (docs/math.md §6.2, FKS conventions) in log space, as strategies.

Intermediate log-potentials, with r_k the reward of D_{t_k}(x_{t_k}) and lambda the temperature:
  Diff:  lambda (r_k - r_{k-1}), r_{-1} = 0
  Max:   lambda max(r_1..r_k)
  Sum:   lambda (r_1 + ... + r_k)
  Lookahead: V_k - V_{k-1}, V_{-1} = 0, with V_k = V-hat_{t_k}(x) = log mean_j exp(lambda r(z_j))
        over J posterior samples z_j ~ p(z | x_{t_k}) (glass_core.align.value), scored in place of
        the reward: the twisted SMC potential, optimal (constant weights) when V-hat = V
The final step always applies lambda r(z) minus the log-potentials already applied along the
particle's lineage, so the product over a lineage is exp(lambda r(z)) and the weighted particles
target p(z) exp(lambda r(z)) / Z whatever the intermediate choice (it only changes variance).
The per-particle state (:class:`PotentialState`) follows the ancestors at every resampling.

A potential is a :class:`Potential` object; the strings "diff", "max", "sum" and "lookahead" are
shorthands for the default objects (:func:`as_potential`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from glass_core._checks import positive_int
from glass_core.align._common import CountedModel, Timer, check_callable, fail
from glass_core.align.value import log_mean_exp, posterior_rewards
from glass_core.errors import InvalidInputError
from glass_core.rewards.base import Reward, check_rewards


@dataclass(frozen=True)
class ScoreContext:
    """Hold what a potential may call at a potential step.

    The counted model, the reward (timed), the transitions' noise and the temperature.
    """

    model: CountedModel
    reward: Reward
    reward_timer: Timer
    noise: Any
    lambda_: float


@dataclass
class PotentialState:
    """Hold the per-particle potential state over all B*N slots (float64).

    `running` is the intermediate potential's running statistic, `applied` the sum of the
    log-potentials applied along each lineage.
    """

    running: torch.Tensor
    applied: torch.Tensor

    def gather(self, index: torch.Tensor) -> None:
        """Follow the flat ancestors `index` after a resampling."""
        self.running = self.running.index_select(0, index)
        self.applied = self.applied.index_select(0, index)


class Potential(ABC):
    """Define a Feynman-Kac potential.

    What is scored at an intermediate potential step (:meth:`score`) and how the scores become a
    log-potential (:meth:`increment`). The final step is the same for all (:meth:`step`):
    lambda r(z) minus what the lineage already received.

    Subclasses set ``name`` (the string shorthand) and ``start`` (the running statistic's initial
    value); ``shardable = False`` marks potentials that cannot run with ``process_group``.
    """

    name: ClassVar[str]
    start: ClassVar[float] = 0.0
    shardable: ClassVar[bool] = True

    def init(self, n: int, device: torch.device) -> PotentialState:
        """Return the state of `n` particles before the first potential step.

        Parameters
        ----------
        n : int
            Number of particles (all groups, B*N).
        device : torch.device
            Where the state lives (with the gathered rewards).

        Returns
        -------
        PotentialState
        """
        running = torch.full((n,), self.start, dtype=torch.float64, device=device)
        return PotentialState(running, torch.zeros(n, dtype=torch.float64, device=device))

    def score(
        self, ctx: ScoreContext, x: torch.Tensor, t: float, final: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(denoised, scores) of the [rows, ...] particles `x` at time `t`.

        Parameters
        ----------
        ctx : ScoreContext
            Model, reward, noise and temperature of the run.
        x : torch.Tensor
            The particles after the transition to `t`.
        t : float
            The potential step's time.
        final : bool
            Whether t = 1 (the score is then the reward r(x) for every potential).

        Returns
        -------
        tuple of (torch.Tensor or None, torch.Tensor)
            D_t(x), handed to the next transition as ``denoised=`` (None at the final step), and
            the [rows] scores. Shape/dtype are checked here; finiteness by the caller on its host
            copy (no extra device sync).
        """
        denoised = None if final else ctx.model.denoise(x, t)
        r_raw = ctx.reward_timer(ctx.reward, x if final else denoised)
        return denoised, check_rewards(r_raw, x.shape[0], finite=False, device=x.device).detach()

    @abstractmethod
    def increment(
        self, scores: torch.Tensor, running: torch.Tensor, lambda_: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(intermediate log-potential, new running statistic) from float64 `scores`."""

    def step(
        self, state: PotentialState, scores: torch.Tensor, lambda_: float, *, final: bool
    ) -> torch.Tensor:
        """Return the [B*N] float64 log-potentials of one potential step and update `state`.

        Parameters
        ----------
        state : PotentialState
            The particles' potential state (updated in place).
        scores : torch.Tensor
            [B*N] scores of all slots (rewards at the final step).
        lambda_ : float
            The temperature.
        final : bool
            Whether this is the last step (applies lambda r minus what was applied before).

        Returns
        -------
        torch.Tensor
            [B*N] float64 log-potentials (possibly non-finite where lambda_ * r overflows: the
            caller checks on its host copy, see :func:`overflow_error`).
        """
        r = scores.to(torch.float64)
        if final:
            log_g = lambda_ * r - state.applied
        else:
            log_g, state.running = self.increment(r, state.running, lambda_)
        state.applied = state.applied + log_g
        return log_g

    def __repr__(self) -> str:
        """Return the constructor call."""
        return f"{type(self).__name__}()"


class Diff(Potential):
    """lambda (r_k - r_{k-1}): the telescoping difference potential (FKS's default)."""

    name = "diff"

    def increment(
        self, scores: torch.Tensor, running: torch.Tensor, lambda_: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (log-potentials, new running statistic); see :meth:`Potential.increment`."""
        return lambda_ * (scores - running), scores


class Max(Potential):
    """lambda max(r_1..r_k), the running-max potential.

    The running max starts at -inf (not FKS's 0) so negative rewards still steer.
    """

    name = "max"
    start = float("-inf")

    def increment(
        self, scores: torch.Tensor, running: torch.Tensor, lambda_: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (log-potentials, new running statistic); see :meth:`Potential.increment`."""
        running = torch.maximum(running, scores)
        return lambda_ * running, running


class Sum(Potential):
    """lambda (r_1 + ... + r_k)."""

    name = "sum"

    def increment(
        self, scores: torch.Tensor, running: torch.Tensor, lambda_: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (log-potentials, new running statistic); see :meth:`Potential.increment`."""
        running = running + scores
        return lambda_ * running, running


class Lookahead(Potential):
    """V-hat_k - V-hat_{k-1}, the lookahead potential.

    V-hat_t(x) = log mean_j exp(lambda r(z_j)) over `num_samples` posterior samples z_j drawn by
    `transition` from (x, t) to 1.

    Parameters
    ----------
    num_samples : int
        J, posterior samples per particle (their model evaluations count J per particle per
        batched call in ``nfe``).
    transition : callable, optional
        Draws the posterior samples; default ``Glass(inner_steps=4)``.

    Raises
    ------
    InvalidInputError
        If `num_samples` is not a positive int or `transition` is not callable.
    """

    name = "lookahead"
    shardable = False

    def __init__(self, num_samples: int = 16, transition: Any = None) -> None:
        from glass_core.transitions.glass import Glass

        self.num_samples = positive_int(num_samples, "num_samples")
        self.transition = Glass(inner_steps=4) if transition is None else transition
        check_callable(self.transition, "transition")

    def score(
        self, ctx: ScoreContext, x: torch.Tensor, t: float, final: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Score V-hat_t(x) at an intermediate step, the reward at the final one.

        Parameters
        ----------
        ctx : ScoreContext
            The step's model, reward, noise and temperature.
        x : torch.Tensor
            The particles at `t`.
        t : float
            The potential step's time.
        final : bool
            Whether `t` is the grid's last time.

        Returns
        -------
        tuple of (torch.Tensor or None, torch.Tensor)
            D_t(x) (None at the final step) and the [rows] scores.
        """
        if final:
            return super().score(ctx, x, t, final)
        denoised = ctx.model.denoise(x, t)
        return denoised, self.values(ctx, x, t, denoised)

    def values(
        self, ctx: ScoreContext, x: torch.Tensor, t: float, denoised: torch.Tensor
    ) -> torch.Tensor:
        """Return the [rows] float64 V-hat = log mean_j exp(lambda_ r(z_j)).

        The model calls run on a separate counter and are added to ``ctx.model`` as J
        evaluations per particle each (the batch holds J copies of every particle).

        Parameters
        ----------
        ctx : ScoreContext
            The step's model, reward, noise and temperature.
        x : torch.Tensor
            The particles at `t`.
        t : float
            The potential step's time.
        denoised : torch.Tensor
            D_t(x).

        Returns
        -------
        torch.Tensor
            [rows] float64 lambda-scaled log-values.
        """
        counted = ctx.model
        inner = CountedModel(counted._model, counted.max_batch, counted.timed)
        r = posterior_rewards(
            inner, ctx.reward, self.transition, x, t, self.num_samples, ctx.noise, denoised,
            finite=False,  # NaN/inf values are caught on the step's host copy
        )  # fmt: skip
        counted.nfe += inner.nfe * self.num_samples
        counted.model_time += inner.model_time
        return log_mean_exp(ctx.lambda_ * r.to(torch.float64))

    def increment(
        self, scores: torch.Tensor, running: torch.Tensor, lambda_: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (log-potentials, new running statistic); see :meth:`Potential.increment`."""
        return scores - running, scores  # scores are already lambda-scaled log-values

    def __repr__(self) -> str:
        """Return the constructor call."""
        return f"Lookahead(num_samples={self.num_samples}, transition={self.transition!r})"


_SHORTHANDS: dict[str, type[Potential]] = {cls.name: cls for cls in (Diff, Max, Sum, Lookahead)}
POTENTIALS: tuple[str, ...] = tuple(_SHORTHANDS)


def as_potential(potential: Any) -> Potential:
    """Return the :class:`Potential` for `potential`.

    Parameters
    ----------
    potential : Potential or str
        An instance (returned as is) or a name of :data:`POTENTIALS` (its default object).

    Returns
    -------
    Potential

    Raises
    ------
    InvalidInputError
        If `potential` is neither a Potential nor one of :data:`POTENTIALS`.
    """
    if isinstance(potential, Potential):
        return potential
    if isinstance(potential, str) and potential in _SHORTHANDS:
        return _SHORTHANDS[potential]()
    raise fail("potential", f"must be a Potential or one of {POTENTIALS}, got {potential!r}")


def overflow_error(
    scores: np.ndarray, log_g: np.ndarray, lambda_: float
) -> InvalidInputError | None:
    """Return the error for finite scores whose log-potentials overflowed, or None.

    lambda_ * r overflowed float64. NaN/inf scores are the reward check's to report.

    Parameters
    ----------
    scores, log_g : numpy.ndarray
        The host copies of one potential step's scores and log-potentials.
    lambda_ : float
        The temperature (named in the message).

    Returns
    -------
    InvalidInputError or None
    """
    bad = np.isfinite(scores) & ~np.isfinite(log_g)
    if not bad.any():
        return None
    return InvalidInputError(
        f"lambda_ = {lambda_!r} is too large: lambda_ * reward overflows float64 "
        f"(largest |reward| {float(np.abs(scores).max()):.3g})"
    )
