"""Result containers. Single-group calls drop the group axis; grouped calls (``num_groups`` given
or a list of generators) keep a leading ``B`` axis on every per-group field."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BestOfNResult:
    best: torch.Tensor  # [...] or [B, ...]: the highest-reward sample
    best_reward: torch.Tensor  # [] or [B]
    best_index: torch.Tensor  # [] or [B] int64, index into `samples`
    samples: torch.Tensor  # [N, ...] or [B, N, ...]
    rewards: torch.Tensor  # [N] or [B, N]
    nfe: int  # model evaluations per sample (sequential cost)
    total_nfe: int  # nfe * N * B


@dataclass(frozen=True)
class GuidanceResult:
    samples: torch.Tensor  # [N, ...] or [B, N, ...]
    rewards: torch.Tensor  # [N] or [B, N]
    nfe: int  # model evaluations per sample (gradients of the reward not counted)
    total_nfe: int


@dataclass(frozen=True)
class FKResult:
    """Weighted particles targeting p(z) exp(lambda_ r(z)) / Z.

    ``log_weights`` are normalised (logsumexp = 0 per group); estimate E[f] as
    ``(log_weights.exp() * f(samples)).sum()``. ``log_evidence`` estimates log Z with
    Z = E_p[exp(lambda_ r(z))] (exp of it is unbiased for Z)."""

    samples: torch.Tensor  # [N, ...] or [B, N, ...]
    log_weights: torch.Tensor  # [N] or [B, N], float64
    rewards: torch.Tensor  # [N] or [B, N]: final reward r(z) of each particle
    log_evidence: float | np.ndarray  # float or [B]
    ess_history: np.ndarray  # [S] or [S, B]: ESS after reweighting at each potential step
    resampled: np.ndarray  # [S] or [S, B] bool
    step_times: np.ndarray  # [S]: time t_k at which each potential step happened
    ancestors: np.ndarray | None  # [S, N] or [S, B, N] row-local ancestor indices per step
    nfe: int  # model evaluations per particle (the intermediate reward reuses its call)
    total_nfe: int  # nfe * N * B
    model_time: float  # seconds inside model calls (NaN unless profile=True)
    reward_time: float  # seconds inside reward calls (NaN unless profile=True)
    wall_time: float  # seconds for the whole call

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def best(self) -> torch.Tensor:
        """Highest-reward particle ([...] or [B, ...]), the FKS 'best_of_n_samples' convention."""
        idx = self.rewards.argmax(dim=-1)
        if self.rewards.ndim == 1:
            return self.samples[idx]
        return self.samples[torch.arange(self.samples.shape[0]), idx]
