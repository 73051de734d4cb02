"""Result containers of the alignment algorithms.

Single-group calls drop the group axis; grouped calls (``num_groups`` given or a list of
generators) keep a leading ``B`` axis on every per-group field.

Every algorithm returns a :class:`SamplingResult`: ``samples``, ``rewards``, ``log_weights``,
``ancestors``, ``nfe`` / ``total_nfe``, the timings and :meth:`SamplingResult.best`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glass_core.errors import InvalidInputError


@dataclass(frozen=True, kw_only=True)
class SamplingResult:
    """Weighted particles with their rewards.

    ``log_weights`` are normalised (logsumexp = 0 per group; uniform -log N for unweighted
    algorithms); estimate E[f] as ``(log_weights.exp() * f(samples)).sum(-1)``.
    Timings are seconds; ``model_time`` and ``reward_time`` are NaN unless ``profile=True``.
    """

    samples: torch.Tensor  # [N, ...] or [B, N, ...]
    rewards: torch.Tensor  # [N] or [B, N]: final reward r(z) of each particle
    log_weights: torch.Tensor  # [N] or [B, N], float64
    ancestors: np.ndarray | None  # [S, N] or [S, B, N] row-local ancestors per step (or None)
    nfe: int  # model evaluations per particle (the sequential cost)
    total_nfe: int  # nfe * N * B
    model_time: float  # seconds inside model calls (NaN unless profile=True)
    reward_time: float  # seconds inside reward calls (NaN unless profile=True)
    wall_time: float  # seconds for the whole call

    @property
    def weights(self) -> torch.Tensor:
        """Return the normalised weights, exp(log_weights)."""
        return self.log_weights.exp()

    def best(self) -> torch.Tensor:
        """Return the highest-reward sample ([...] or [B, ...]); ties go to the lowest index.

        Returns
        -------
        torch.Tensor
        """
        idx = self.rewards.argmax(dim=-1)
        if self.rewards.ndim == 1:
            return self.samples[idx]
        return self.samples[torch.arange(self.samples.shape[0]), idx]


def uniform_log_weights(rewards: torch.Tensor) -> torch.Tensor:
    """-log N for every particle, shaped like the [N] or [B, N] rewards."""
    n = rewards.shape[-1]
    return torch.full(rewards.shape, -float(np.log(n)), dtype=torch.float64)


@dataclass(frozen=True, kw_only=True)
class BestOfNResult(SamplingResult):
    """Best-of-N samples with the best one per group kept."""

    best_sample: torch.Tensor  # [...] or [B, ...]: the highest-reward sample
    best_reward: torch.Tensor  # [] or [B]
    best_index: torch.Tensor  # [] or [B] int64, index into the group's samples

    def best(self) -> torch.Tensor:
        """Return the highest-reward sample ([...] or [B, ...]), kept when the run ended.

        A sharded run that did not gather every sample still has it.

        Returns
        -------
        torch.Tensor
        """
        return self.best_sample


@dataclass(frozen=True, kw_only=True)
class GuidanceResult(SamplingResult):
    """Samples of the reward-guided denoiser (nfe does not count the reward gradients)."""


@dataclass(frozen=True, kw_only=True)
class FKResult(SamplingResult):
    """Weighted particles targeting p(z) exp(lambda_ r(z)) / Z.

    ``log_evidence`` estimates log Z with Z = E_p[exp(lambda_ r(z))] (exp of it is unbiased for Z).
    """

    log_evidence: float | np.ndarray  # float or [B]
    ess_history: np.ndarray  # [S] or [S, B]: ESS after reweighting at each potential step
    resampled: np.ndarray  # [S] or [S, B] bool
    step_times: np.ndarray  # [S]: time t_k at which each potential step happened

    def _grouped(self) -> bool:
        return self.log_weights.ndim == 2

    def lineage_roots(self) -> int | np.ndarray:
        """Count the initial particles the final ones descend from.

        Returns
        -------
        int or numpy.ndarray
            An int, or [B] int64 for a grouped run (N when nothing was resampled, 1 when every
            lineage merged into one).

        Raises
        ------
        InvalidInputError
            If the run did not track the genealogy (``track_genealogy=False``).
        """
        if self.ancestors is None:
            raise InvalidInputError(
                "lineage_roots needs the genealogy: run with track_genealogy=True"
            )
        gen = np.asarray(self.ancestors)
        gen = gen if self._grouped() else gen[:, None, :]  # [S, B, N]
        idx = np.tile(np.arange(gen.shape[2]), (gen.shape[1], 1))
        for parents in gen[::-1]:  # walk every lineage back one step at a time
            idx = np.take_along_axis(parents, idx, axis=1)
        roots = np.array([np.unique(row).size for row in idx], dtype=np.int64)
        return roots if self._grouped() else int(roots[0])

    def early_collapse(
        self, *, ess_below: float = 1.5, before: float = 0.5
    ) -> list[tuple[int, float, float]]:
        """Find the groups whose weights collapsed onto about one particle early.

        (group, t, ESS) of the first potential step with t < `before` and ESS < `ess_below`, per
        such group. From there on the group is close to a single trajectory (lower lambda_ or
        raise N).

        Parameters
        ----------
        ess_below : float
            ESS under which the weights count as collapsed.
        before : float
            Only potential steps at t < before count as early.

        Returns
        -------
        list of (int, float, float)
            Group 0 for a single-group run.
        """
        ess = np.asarray(self.ess_history, dtype=np.float64).reshape(len(self.step_times), -1)
        if self.log_weights.shape[-1] < 2:
            return []
        found = []
        for b in range(ess.shape[1]):
            low = (np.asarray(self.step_times) < before) & (ess[:, b] < ess_below)
            if low.any():
                s = int(np.argmax(low))
                found.append((b, float(self.step_times[s]), float(ess[s, b])))
        return found
