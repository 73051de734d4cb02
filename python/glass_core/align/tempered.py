"""Tempered SMC (as in DAS, Kim et al. 2025) on the FK engine, over any transition.

The intermediate targets p_{t_k}(x) exp(lambda_k r(D_{t_k}(x))) raise the reward exponent from 0
to `lambda_` along the path; each lambda_k is chosen adaptively (align.tempering: bisection so
the ESS after reweighting stays near `ess_target`), so resampling does not collapse early. The
final step takes lambda_, so the weights and the log-evidence are exact for
p(z) exp(lambda_ r(z)) / Z. It is FKSampler with the Tempered potential: propose, weight and
resample are the engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from glass_core.align._common import Generator, check_finite_float, fail
from glass_core.align.fk import FKSampler, run_to_end
from glass_core.align.fk_state import FKState
from glass_core.align.potentials import Diff, PotentialState
from glass_core.align.results import FKResult
from glass_core.align.tempering import next_exponent
from glass_core.rewards.base import Reward


@dataclass
class TemperedState(PotentialState):
    """The potential state of tempered SMC.

    It holds the lineage sums (``applied`` = lambda_{k-1} r_{k-1}), the carried log-weights
    [B, N] of the step being weighted (set by TemperedSMCSampler.weight) and the exponents so far.
    """

    carried: torch.Tensor | None = None
    exponents: list[torch.Tensor] = field(default_factory=list)  # [B] per potential step


class Tempered(Diff):
    """The difference potential with a per-step, per-group exponent lambda_k.

    The exponent is chosen on the device by align.tempering.next_exponent (the last step takes
    lambda_).

    Parameters
    ----------
    ess_target : float
        In (0, 1]: the ESS / N each increment keeps after reweighting.
    """

    name = "tempered"

    def __init__(self, ess_target: float = 0.5) -> None:
        self.ess_target = ess_target

    def init(self, n: int, device: torch.device) -> TemperedState:
        """Return the state of `n` particles before the first potential step.

        Parameters
        ----------
        n : int
            Number of particles (all groups, B*N).
        device : torch.device
            The particles' device.

        Returns
        -------
        TemperedState
            The difference potential's initial state, with no exponents yet.
        """
        base = super().init(n, device)
        return TemperedState(base.running, base.applied)

    def step(
        self, state: PotentialState, scores: torch.Tensor, lambda_: float, *, final: bool
    ) -> torch.Tensor:
        """Return the [B*N] float64 log-potentials lambda_k r_k - applied and update `state`.

        Parameters
        ----------
        state : PotentialState
            A TemperedState whose ``carried`` log-weights are set.
        scores : torch.Tensor
            [B*N] this step's rewards r_k.
        lambda_ : float
            The final exponent.
        final : bool
            True at the last potential step, which takes lambda_ instead of bisecting.

        Returns
        -------
        torch.Tensor
            [B*N] float64 log-potentials of this step.
        """
        assert isinstance(state, TemperedState) and state.carried is not None
        carried = state.carried
        r = scores.to(torch.float64).reshape(carried.shape)
        applied = state.applied.reshape(carried.shape)
        lam = torch.full_like(carried[:, 0], lambda_)
        if not final:
            prev = state.exponents[-1] if state.exponents else torch.zeros_like(lam)
            lam = next_exponent(carried, r, applied, prev, lambda_, self.ess_target)
        log_g = (lam[:, None] * r - applied).reshape(-1)
        state.exponents.append(lam)
        state.applied = state.applied + log_g
        state.running = r.reshape(-1)
        return log_g

    def __repr__(self) -> str:
        """Return ``Tempered(ess_target=...)``."""
        return f"Tempered(ess_target={self.ess_target})"


@dataclass(frozen=True, kw_only=True)
class TemperedResult(FKResult):
    """FKResult plus ``exponents`` [S] or [S, B].

    ``exponents`` holds lambda_k at each potential step (the last is lambda_).
    """

    exponents: np.ndarray


class TemperedSMCSampler(FKSampler):
    """FKSampler with the :class:`Tempered` potential.

    The weight part hands the potential the carried log-weights (already on the host, no sync)
    and is otherwise the engine's.

    Parameters
    ----------
    ess_target : float
        In (0, 1]: the ESS / N each increment keeps after reweighting.
    **kwargs
        As for :class:`FKSampler` (the potential is fixed; `process_group` is not supported).

    Raises
    ------
    InvalidInputError
        For a bad `ess_target`, a `potential` or a `process_group`.
    """

    def __init__(self, model: Any, reward: Reward, *, ess_target: float = 0.5, **kwargs: Any):
        target = check_finite_float(ess_target, "ess_target")
        if not 0.0 < target <= 1.0:
            raise fail("ess_target", f"must be in (0, 1] (a fraction of N), got {target}")
        for name in ("potential", "process_group"):
            if kwargs.get(name) is not None:
                raise fail(name, "is not supported by tempered_smc")
        kwargs.pop("potential", None)
        super().__init__(model, reward, potential=Tempered(target), **kwargs)

    def weight(
        self, state: FKState, local: torch.Tensor, k: int, final: bool
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Weight as :meth:`FKSampler.weight`, with the carried log-weights handed to the potential.

        Parameters
        ----------
        state, local, k, final
            As for :meth:`FKSampler.weight`.

        Returns
        -------
        tuple of (np.ndarray, torch.Tensor)
            As :meth:`FKSampler.weight`.
        """
        pot = state.potential
        assert isinstance(pot, TemperedState)  # made by Tempered.init
        pot.carried = state.log_weights.to(pot.applied.device)
        try:
            return super().weight(state, local, k, final)
        finally:
            pot.carried = None

    def result(self, state: FKState) -> TemperedResult:
        """Return the weighted particles of a finished run with the exponents used.

        Parameters
        ----------
        state : FKState
            A state whose ``done`` is True.

        Returns
        -------
        TemperedResult
            :meth:`FKSampler.result`'s fields plus ``exponents`` ([S] ungrouped, [S, B] grouped).
        """
        base = super().result(state)
        pot = state.potential
        assert isinstance(pot, TemperedState)
        exps = torch.stack(pot.exponents).cpu().numpy()  # [S, B]
        return TemperedResult(
            **{f.name: getattr(base, f.name) for f in fields(FKResult)},
            exponents=exps if state.config.grouped else exps[:, 0],
        )


def tempered_smc(
    model: Any,
    reward: Reward,
    *,
    transition: Callable[..., torch.Tensor],
    num_particles: int,
    time_grid: Any,
    lambda_: float = 1.0,
    ess_target: float = 0.5,
    shape: Any = None,
    resampling: str = "systematic",
    ess_threshold: float | None = None,
    final_resample: bool = False,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    track_genealogy: bool = True,
    progress: bool = True,
    profile: bool = False,
    process_group: Any = None,
    x0: torch.Tensor | None = None,
) -> TemperedResult:
    """Adaptive tempered SMC toward p(z) exp(lambda_ r(z)) / Z.

    Parameters
    ----------
    lambda_ : float
        The final reward exponent.
    ess_target : float
        In (0, 1]: each intermediate exponent lambda_k is the one closest to lambda_ whose
        reweighting keeps ESS >= ess_target * N (never below lambda_{k-1}).
    model, reward, transition, num_particles, time_grid, shape, resampling, ess_threshold,
    final_resample, generator, num_groups, dtype, device, max_batch, track_genealogy, progress,
    profile, x0
        As for :func:`glass_core.align.fk_steering` (every transition is a potential step;
        a list of B generators gives B groups, each with its own exponents).
    process_group
        Not supported (raises InvalidInputError).

    Returns
    -------
    TemperedResult
        The FK result (weights exact for lambda_, log-evidence) with the exponents used.

    Raises
    ------
    InvalidInputError
        Bad arguments (the message names the argument) or lambda_ * reward overflowing.
    RewardError
        The reward returned NaN/inf.
    """
    sampler = TemperedSMCSampler(
        model, reward, transition=transition, time_grid=time_grid, lambda_=lambda_,
        ess_target=ess_target, resampling=resampling, ess_threshold=ess_threshold,
        final_resample=final_resample, max_batch=max_batch, track_genealogy=track_genealogy,
        profile=profile, process_group=process_group,
    )  # fmt: skip
    state = sampler.init(
        num_particles, shape=shape, generator=generator, num_groups=num_groups, dtype=dtype,
        device=device, x0=x0,
    )  # fmt: skip
    result = run_to_end(sampler, state, progress, "tempered SMC")
    assert isinstance(result, TemperedResult)
    return result
