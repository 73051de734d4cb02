"""The expand-score-select loop shared by value decoding (SVDD) and beam search.

Per step t_{k-1} -> t_k every particle is expanded into M candidates by the transition, each
candidate is scored by a value estimate at t_k, and a selection rule keeps as many candidates as
there were particles: per particle (value decoding) or per group (beam search). The value of a
candidate x' at t_k < 1 is r(D_{t_k}(x')) ("denoised") or the Monte-Carlo soft value
log mean_j exp r(z_j) over J posterior samples z_j ~ p(z | x') ("posterior", as
glass_core.align.value_estimate); at t_k = 1 it is r(x'). The kept candidates' D_{t_k} is handed
to the next transition (no extra NFE). NFE is counted per particle honestly: a batched call over
M candidates per particle counts M, over J posterior samples of each candidate M * J.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from glass_core._checks import positive_int
from glass_core.align._common import (
    CountedModel,
    as_generator_arg,
    check_callable,
    check_finite_float,
    fail,
    nonfinite_reward_error,
    progress_bar,
    ungroup,
)
from glass_core.align._config import SamplingConfig
from glass_core.align._start import start_particles
from glass_core.align.results import SamplingResult, uniform_log_weights
from glass_core.align.value import log_mean_exp, posterior_rewards
from glass_core.rewards.base import Reward, check_rewards
from glass_core.transitions.glass import Glass

VALUES = ("denoised", "posterior")

# (scores [groups, rows_per_group, M] float64, generator) -> flat indices [rows] into the
# candidate batch (rows * M, candidate m of row i at i * M + m)
Selector = Callable[[torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class SearchResult(SamplingResult):
    """Particles kept by a search (value decoding or beam search).

    They are unweighted (uniform ``log_weights``), with ``value_history`` [S, N] or [S, B, N]
    float64: the value of each kept candidate at every step (the last row is the reward r(z),
    as ``rewards``).
    """

    value_history: torch.Tensor


class CandidateValue:
    """Scores candidates: r(D_t(x')) or the J-sample posterior soft value (see module doc).

    Parameters
    ----------
    value : {"denoised", "posterior"}
        The kind of value.
    value_samples : int
        J, the posterior samples per candidate (positive).
    value_transition : callable or None
        The transition drawing the posterior samples (default ``Glass(inner_steps=4)``); only
        with ``value="posterior"``.

    Raises
    ------
    InvalidInputError
        If `value` is unknown, `value_transition` is given with ``value="denoised"``,
        `value_samples` is not a positive int or `value_transition` is not callable.
    """

    def __init__(self, value: Any, value_samples: Any, value_transition: Any) -> None:
        if value not in VALUES:
            raise fail("value", f"must be one of {VALUES}, got {value!r}")
        if value == "denoised" and value_transition is not None:
            raise fail("value_transition", "needs value='posterior'")
        self.kind = value
        self.samples = positive_int(value_samples, "value_samples")
        self.transition = Glass(inner_steps=4) if value_transition is None else value_transition
        check_callable(self.transition, "value_transition")

    def __call__(
        self,
        counted: CountedModel,
        reward: Reward,
        cand: torch.Tensor,
        t: float,
        copies: int,
        noise: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Score the candidates `cand` at time `t`.

        Parameters
        ----------
        counted : CountedModel
            The counted model; its calls are counted `copies` times (J * copies for the
            posterior samples).
        reward : Reward
            The reward r.
        cand : torch.Tensor
            [rows, ...] candidates, `copies` per particle.
        t : float
            The candidates' time; at t >= 1 the value is the reward itself.
        copies : int
            The candidates per particle.
        noise : Any
            The run's generator argument.

        Returns
        -------
        tuple of torch.Tensor and (torch.Tensor or None)
            The values [rows] float64, and D_t(cand) (None at t >= 1).

        Raises
        ------
        RewardError
            If the reward returns the wrong shape (non-finite values are checked by the caller).
        """
        if t >= 1.0:
            return check_rewards(reward(cand), cand.shape[0], finite=False).double(), None
        denoised = _counted_call(counted, copies, lambda m: m.denoise(cand, t))
        if self.kind == "denoised":
            r = check_rewards(reward(denoised), cand.shape[0], finite=False)
            return r.to(torch.float64), denoised

        def draws(m: CountedModel) -> torch.Tensor:
            return posterior_rewards(
                m, reward, self.transition, cand, t, self.samples, noise, denoised
            )

        r = _counted_call(counted, copies * self.samples, draws)
        return log_mean_exp(r), denoised


def _counted_call(
    counted: CountedModel, copies: int, fn: Callable[[CountedModel], torch.Tensor]
) -> torch.Tensor:
    """Call fn on a fresh counter over the same model.

    Its batched calls count `copies` model evaluations per particle each (the batch holds that
    many rows per particle).
    """
    inner = CountedModel(counted._model, counted.max_batch, counted.timed)
    out = fn(inner)
    counted.nfe += inner.nfe * copies
    counted.model_time += inner.model_time
    return out


def _expand(
    transition: Callable[..., torch.Tensor],
    rep: torch.Tensor,
    t: float,
    t_next: float,
    noise: Any,
    d_rep: torch.Tensor | None,
    model: CountedModel,
) -> torch.Tensor:
    return transition(model, rep, t, t_next, noise, denoised=d_rep)


def check_search_args(
    num_candidates: Any, temperature: Any, process_group: Any
) -> tuple[int, float]:
    """Check the search arguments shared by value decoding and beam search.

    Parameters
    ----------
    num_candidates : Any
        M, must be a positive int.
    temperature : Any
        Must be a finite float >= 0.
    process_group : Any
        Must be None: searches are not sharded (their selection is global per group).

    Returns
    -------
    tuple of (int, float)
        (M, temperature).

    Raises
    ------
    InvalidInputError
        If an argument is invalid (the message names it).
    """
    if process_group is not None:
        raise fail("process_group", "is not supported by value_decoding / beam_search")
    m = positive_int(num_candidates, "num_candidates")
    temp = check_finite_float(temperature, "temperature")
    if temp < 0.0:
        raise fail("temperature", f"must be >= 0 (0: argmax), got {temp}")
    return m, temp


def run_search(
    *,
    model: Any,
    reward: Reward,
    transition: Callable[..., torch.Tensor],
    value: CandidateValue,
    select: Selector,
    num_candidates: int,
    validate: Callable[[int], SamplingConfig],
    generator: Any,
    x0: torch.Tensor | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    progress: bool,
    profile: bool,
    desc: str,
) -> SearchResult:
    """Expand, score and select through the grid (see module doc).

    Parameters
    ----------
    model, reward, transition, generator, x0, dtype, device, progress, profile
        As in :func:`glass_core.align.fk_steering`.
    value : CandidateValue
        Scores the candidates.
    select : callable
        ``select(scores [groups, N, M], noise)`` returning flat indices of kept candidates.
    num_candidates : int
        M, the candidates per particle and step.
    validate : callable
        align._config.sampling_validator's result for the run's arguments.
    desc : str
        The progress-bar label.

    Returns
    -------
    SearchResult
        The kept particles with uniform weights and the per-step values.

    Raises
    ------
    InvalidInputError
        Bad arguments (from `validate`).
    RewardError
        The reward returned NaN/inf or the wrong shape.
    """
    wall_start = time.perf_counter()
    cfg = validate(1)
    noise = as_generator_arg(generator)
    counted = CountedModel(model, cfg.max_batch, timed=profile)
    m, b, n = num_candidates, cfg.num_groups, cfg.num_particles
    x = start_particles(x0, b * n, cfg.shape, noise, dtype, device)
    denoised: torch.Tensor | None = None
    history: list[torch.Tensor] = []
    with torch.no_grad(), progress_bar(cfg.num_steps, progress, desc) as bar:
        for k in range(1, cfg.num_steps + 1):
            t, t_next = cfg.grid[k - 1], cfg.grid[k]
            rep = x.repeat_interleave(m, dim=0)
            d_rep = None if denoised is None else denoised.repeat_interleave(m, dim=0)
            expand = functools.partial(_expand, transition, rep, t, t_next, noise, d_rep)
            cand = _counted_call(counted, m, expand)
            scores, cand_d = value(counted, reward, cand, t_next, m, noise)
            host = scores.cpu().numpy()  # the one sync per step
            if not np.isfinite(host).all():
                raise nonfinite_reward_error(host, k, t_next)
            idx = select(scores.reshape(b, n, m), noise)
            x = cand.index_select(0, idx)
            denoised = None if cand_d is None else cand_d.index_select(0, idx)
            history.append(scores.index_select(0, idx).reshape(b, n))
            bar.update(1)
    rewards = history[-1].to(x.dtype)
    g = cfg.grouped
    hist = torch.stack(history)
    return SearchResult(
        samples=ungroup(x.reshape(b, n, *cfg.shape), g),
        rewards=ungroup(rewards, g),
        log_weights=ungroup(uniform_log_weights(rewards), g),
        ancestors=None,
        nfe=counted.nfe,
        total_nfe=counted.nfe * n * b,
        model_time=counted.model_time if counted.timed else float("nan"),
        reward_time=float("nan"),
        wall_time=time.perf_counter() - wall_start,
        value_history=hist if g else hist[:, 0],
    )
