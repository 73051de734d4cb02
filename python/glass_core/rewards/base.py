"""Reward protocol and validation shared by every alignment algorithm."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from glass_core._checks import reward_output
from glass_core.errors import RewardError

__all__ = ["Reward", "check_rewards", "evaluate_reward"]

_MAX_LISTED = 10  # indices quoted in an error message; the count is always exact


@runtime_checkable
class Reward(Protocol):
    """A reward: maps a batch of clean samples ``z[B, ...]`` to a ``[B]`` float tensor.

    Rows are in group-major order when several groups (prompts) are steered at once:
    row ``i`` belongs to group ``i // num_particles``. Rewards used for gradient guidance
    must be differentiable with torch autograd.
    """

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Score a batch as a tensor [M]."""


def _listing(idx: torch.Tensor) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:_MAX_LISTED])
    more = f", ... ({idx.numel()} in total)" if idx.numel() > _MAX_LISTED else ""
    return shown + more


def check_rewards(
    values: object,
    batch: int,
    *,
    name: str = "reward",
    finite: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Validate a reward output: a float tensor of shape ``[batch]`` with only finite values.

    Raises RewardError naming the shape or the offending particle indices. Returns the values
    unchanged (same device and dtype) so that callers keep one device tensor. `finite=False`
    skips the value check (it costs a device sync); the caller must then check on the host.

    Parameters
    ----------
    values : object
        The reward's output.
    batch : int
        Expected rows.
    name : str
        The reward's name in error messages.
    finite : bool
        Check the values too.
    device : torch.device or None
        The particles' device, which the values must be on.

    Returns
    -------
    torch.Tensor
        ``values``.

    Raises
    ------
    RewardError
        A wrong type, shape or non-finite values.
    """
    if not isinstance(values, torch.Tensor):
        raise RewardError(
            f"{name} must return a torch.Tensor of shape [{batch}], got {type(values).__name__}"
        )
    if values.shape != (batch,):
        raise RewardError(
            f"{name} must return shape [{batch}] (one value per particle), got {list(values.shape)}"
        )
    if not (values.is_floating_point()):
        raise RewardError(f"{name} must return a floating-point tensor, got {values.dtype}")
    reward_output(values, device, name)
    if not finite:
        return values
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().cpu()
        kinds = "NaN" if bool(torch.isnan(values).any()) else "inf"
        if kinds == "NaN" and bool(torch.isinf(values).any()):
            kinds = "NaN/inf"
        raise RewardError(f"{name} returned {kinds} for particle indices [{_listing(idx)}]")
    return values


def evaluate_reward(
    reward: Reward, z: torch.Tensor, *, max_batch: int | None = None, validate: bool = True
) -> torch.Tensor:
    """Evaluate ``reward`` on ``z`` in micro-batches of ``max_batch`` rows (all at once if None).

    Parameters
    ----------
    reward : Reward
        The reward.
    z : torch.Tensor
        Latents [M, ...].
    max_batch : int, optional
        Rows per call.
    validate : bool
        Check the output with ``check_rewards``.

    Returns
    -------
    torch.Tensor
        Rewards [M].

    Raises
    ------
    RewardError
        A bad reward output.
    """
    n = z.shape[0]
    if max_batch is None or max_batch >= n:
        out = reward(z)
    else:
        out = torch.cat(
            [
                torch.as_tensor(reward(z[i : i + max_batch])).reshape(-1)
                for i in range(0, n, max_batch)
            ]
        )
    return check_rewards(out, n) if validate else out
