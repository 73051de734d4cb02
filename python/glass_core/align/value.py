"""Monte-Carlo value function V_t(x) = log E[exp r(z) | x_t = x] (docs/math.md §6.3).

z_j ~ p(z | x_t) are drawn by any transition from (x, t) straight to t' = 1 (for GLASS a
posterior sample, its s = 0 call D_t(x) shared by all J draws of a row), and
V-hat = log (1/J) sum_j exp r(z_j). By Jensen V-hat is biased low; the bias is
Var[exp r] / (2 J E[exp r]^2) + O(1/J^2), so it vanishes like 1/J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from glass_core._checks import optional_positive_int, positive_int
from glass_core.align._common import (
    CountedModel,
    Generator,
    as_generator_arg,
    check_callable,
    check_model,
    fail,
)
from glass_core.models.base import check_batch, scalar_time
from glass_core.rewards.base import Reward, check_rewards
from glass_core.transitions.glass import Glass


@dataclass(frozen=True)
class ValueEstimate:
    """Hold V-hat per row of x.

    ``values`` [B] (or [B_groups, N]) float64, with the posterior samples'
    rewards [B, J] (or [B_groups, N, J]) for diagnostics.
    """

    values: torch.Tensor
    rewards: torch.Tensor
    nfe: int  # model evaluations per posterior sample (each batched call counts once)
    total_nfe: int  # nfe * J * rows: model evaluations over all rows and samples


def posterior_rewards(
    counted: CountedModel,
    reward: Reward,
    transition: Any,
    x: torch.Tensor,
    t: float,
    num_samples: int,
    generator: Any,
    denoised: torch.Tensor | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Return the [rows, J] rewards r(z_j) of J posterior samples per row of x ([rows, ...]).

    They are drawn by `transition` from (x, t) to 1 in one batch of rows * J (row-major: row i's
    draws are consecutive, so a list of generators splits by groups of rows). `denoised`: D_t(x)
    if the caller has it (saves the transition's first model call when it can reuse it).
    `finite=False` leaves the NaN/inf check (a device sync) to the caller's host copy.
    """
    rows = x.shape[0]
    rep = x.repeat_interleave(num_samples, dim=0)
    d_rep = None if denoised is None else denoised.repeat_interleave(num_samples, dim=0)
    z = transition(counted, rep, t, 1.0, generator, denoised=d_rep)
    r = check_rewards(reward(z), rows * num_samples, finite=finite)
    return r.reshape(rows, num_samples)


def log_mean_exp(r: torch.Tensor) -> torch.Tensor:
    """Log (1/J) sum_j exp r_j over the last axis, in float64."""
    r64 = r.to(torch.float64)
    return torch.logsumexp(r64, dim=-1) - math.log(r64.shape[-1])


def value_estimate(
    model: Any,
    reward: Reward,
    x: torch.Tensor,
    t: Any,
    *,
    num_samples: int,
    transition: Any = None,
    generator: Generator = None,
    max_batch: int | None = None,
) -> ValueEstimate:
    """Estimate V_t(x) = log E[exp r(z) | x_t = x] for every row of x ([B, ...]).

    Draws `num_samples` posterior samples per row with `transition` (default
    ``Glass(inner_steps=10)``; any transition that can step to t' = 1) and returns their
    log-mean-exp reward (biased low by O(1/num_samples), see the module doc). `generator` may be a
    list of B_groups torch.Generators: x is then [B_groups, N, ...] and group b's samples come
    from generator b, so the values are [B_groups, N]. `max_batch` splits model calls into
    chunks of that many rows (the batch is rows * num_samples).

    Parameters
    ----------
    model : Denoiser
        The flow/diffusion model.
    reward : callable
        [rows, ...] samples -> [rows] rewards.
    x : torch.Tensor
        [B, ...] particles at `t` ([B_groups, N, ...] with a list of generators).
    t : float
        The time, 0 <= t < 1.
    num_samples : int
        J, posterior samples per row.
    transition : callable, optional
        Draws the posterior samples.
    generator : torch.Generator or list of them, optional
        The randomness.
    max_batch : int, optional
        Rows per model call.

    Returns
    -------
    ValueEstimate

    Raises
    ------
    InvalidInputError
        Naming the first invalid argument.
    ModelError, RewardError
        If the model or the reward returns NaN/inf or a badly shaped output.
    """
    check_model(model)
    check_callable(reward, "reward")
    check_batch(x)
    tt = scalar_time(t, "t")
    if tt >= 1.0:
        raise fail("t", f"must be < 1 (at t = 1 the value is r(x) itself), got {tt}")
    j = positive_int(num_samples, "num_samples")
    mb = optional_positive_int(max_batch, "max_batch")
    transition = Glass(inner_steps=10) if transition is None else transition
    check_callable(transition, "transition")
    grouped = isinstance(generator, (list, tuple))
    lead: tuple[int, ...] = (x.shape[0],)
    if grouped:
        if x.ndim < 3 or x.shape[0] != len(generator):  # type: ignore[arg-type]
            raise fail(
                "x",
                f"with a list of {len(generator)} generators must be [B_groups="  # type: ignore[arg-type]
                f"{len(generator)}, N, ...], got shape {tuple(x.shape)}",  # type: ignore[arg-type]
            )
        lead = (x.shape[0], x.shape[1])
        x = x.reshape(-1, *x.shape[2:])
    counted = CountedModel(model, mb)
    with torch.no_grad():
        r = posterior_rewards(counted, reward, transition, x, tt, j, as_generator_arg(generator))
    return ValueEstimate(
        values=log_mean_exp(r).reshape(lead),
        rewards=r.reshape(*lead, j),
        nfe=counted.nfe,
        total_nfe=counted.nfe * j * x.shape[0],
    )
