"""The state of a Feynman-Kac run (:class:`FKState`).

Stepped by :class:`glass_core.align.FKSampler`, it holds particles, weights, ancestors, potential
state, history and cost, everything needed to continue. It pickles (``torch.save`` /
``torch.load(..., weights_only=False)``) with its generators, so a saved run resumes to the same
bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glass_core.align._config import FKConfig
from glass_core.align.potentials import PotentialState
from glass_core.errors import InvalidInputError


class SMCBook:
    """Keep the native :class:`~glass_core.weights.SMCState` and the inputs it was stepped with.

    So it pickles: the native state (its PCG-64 streams included) is rebuilt on load by replaying
    those steps, which reproduces it exactly. Costs one float64 per particle and step.

    Parameters
    ----------
    num_groups, num_particles, scheme, ess_threshold, seeds, track_genealogy
        As for :class:`~glass_core.weights.SMCState`.
    """

    def __init__(
        self,
        num_groups: int,
        num_particles: int,
        *,
        scheme: str,
        ess_threshold: float | None,
        seeds: list[int],
        track_genealogy: bool,
    ) -> None:
        self._args: dict[str, Any] = dict(
            num_groups=num_groups,
            num_particles=num_particles,
            scheme=scheme,
            ess_threshold=ess_threshold,
            seeds=list(seeds),
            track_genealogy=track_genealogy,
        )
        self._inputs: list[tuple[np.ndarray, bool | None]] = []
        self.native = self._fresh()

    def _fresh(self) -> Any:
        from glass_core.weights import SMCState  # native core

        return SMCState(**self._args)

    def step(self, log_potentials: np.ndarray, resample: bool | None) -> Any:
        """``SMCState.step(log_potentials [B, N], resample=resample)``, recorded for replay."""
        res = self.native.step(log_potentials, resample=resample)
        self._inputs.append((np.array(log_potentials, dtype=np.float64), resample))
        return res

    def __getstate__(self) -> dict[str, Any]:
        """Return the constructor arguments and the step inputs (the native state is rebuilt)."""
        return {"args": self._args, "inputs": self._inputs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the native state by replaying the recorded steps."""
        self._args, self._inputs = state["args"], state["inputs"]
        self.native = self._fresh()
        for log_g, resample in self._inputs:
            self.native.step(log_g, resample=resample)


@dataclass(eq=False)
class FKState:
    """Where an FK run stands after ``step`` potential/plain transitions (0: just initialised).

    Attributes of interest: :attr:`particles` ([B*N_local, ...] this process's rows, group-major;
    assigning a tensor of the same shape continues from it), :attr:`log_weights`, :attr:`ess`,
    :attr:`ancestors`, :attr:`time`, :attr:`done`. The remaining fields are the engine's
    bookkeeping.
    """

    config: FKConfig
    storage: Any  # the ParticleStorage strategy (LocalStorage unless sharded)
    smc: SMCBook
    potential: PotentialState
    particles: torch.Tensor
    denoised: torch.Tensor | None = None  # D_t(x) from the last potential step, for reuse
    step: int = 0
    rewards: torch.Tensor | None = None  # [B*N] final rewards (set by the last step)
    reward_dtype: torch.dtype | None = None  # the reward's own dtype (rewards are float64)
    last_ancestors: np.ndarray | None = None  # [B, N] of the latest potential step
    resampled: list[np.ndarray] = field(default_factory=list)  # per potential step, [B] bool
    step_times: list[float] = field(default_factory=list)  # t of each potential step
    nfe: int = 0  # model evaluations per particle so far
    model_time: float = 0.0
    reward_time: float = 0.0
    seconds: float = 0.0  # wall time spent in init and step
    # (x, denoised, noise snapshot) at the start of the running step, to replay it on NaN/inf
    proposed_from: tuple[Any, ...] | None = None

    @property
    def done(self) -> bool:
        """Whether every transition of the grid has run."""
        return self.step >= self.config.num_steps

    @property
    def time(self) -> float:
        """The time t of the particles."""
        return self.config.grid[self.step]

    @property
    def log_weights(self) -> torch.Tensor:
        """[B, N] float64 normalised log-weights (logsumexp 0 per group)."""
        return torch.as_tensor(np.asarray(self.smc.native.log_weights), dtype=torch.float64)

    @property
    def ess(self) -> np.ndarray:
        """[B] effective sample size of the current weights."""
        from glass_core.weights import ess

        return np.asarray(ess(np.asarray(self.smc.native.log_weights)), dtype=np.float64)

    @property
    def ess_history(self) -> np.ndarray:
        """[S, B] ESS after reweighting at each potential step so far."""
        return self.smc.native.ess_history  # a fresh float64 array

    @property
    def ancestors(self) -> np.ndarray:
        """[B, N] row-local ancestors of the latest potential step (identity before any)."""
        if self.last_ancestors is not None:
            return self.last_ancestors
        cfg = self.config
        return np.tile(np.arange(cfg.num_particles), (cfg.num_groups, 1))

    @property
    def log_evidence(self) -> np.ndarray:
        """[B] log-evidence estimate accumulated so far."""
        return self.smc.native.log_evidence  # a fresh float64 array

    def __getstate__(self) -> dict[str, Any]:
        """Return the picklable fields (local runs only).

        Raises
        ------
        InvalidInputError
            For the state of a sharded run.
        """
        from glass_core.align.storage import LocalStorage

        if not isinstance(self.storage, LocalStorage):
            raise InvalidInputError(
                "the state of a sharded FK run (process_group=...) cannot be saved: save each "
                "rank's particles instead"
            )
        return dict(self.__dict__, proposed_from=None)  # a replay aid, not part of the state
