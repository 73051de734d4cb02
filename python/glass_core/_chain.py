"""The plain chain x_t0 -> x_t1 -> ... -> x_tK: one transition per step of the grid, no weights.

Sampling and the unweighted algorithms (best-of-N, reward guidance) run this one loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from glass_core.errors import InvalidInputError

# callback(step, t, t_next, x_next) -> replacement for x_next or None
StepCallback = Callable[[int, float, float, torch.Tensor], "torch.Tensor | None"]


def chain(
    transition: Callable[..., torch.Tensor],
    model: Any,
    x: torch.Tensor,
    grid: Sequence[float],
    generator: Any,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run `transition` over every step of `grid`, starting from x at grid[0].

    Parameters
    ----------
    transition : callable
        ``transition(model, x, t, t_next, generator)`` returning the state at ``t_next``.
    model : Any
        The model handed to each transition.
    x : torch.Tensor
        The state at ``grid[0]``.
    grid : sequence of float
        The times t_0, ..., t_K; one transition runs per consecutive pair.
    generator : Any
        Handed to each transition as given.
    callback : callable, optional
        ``callback(step, t, t_next, x)`` called after each step; a returned tensor replaces x.

    Returns
    -------
    torch.Tensor
        The state at ``grid[-1]``.

    Raises
    ------
    InvalidInputError
        If `callback` returns something other than None or a tensor shaped like x.
    """
    for step, (t, t_next) in enumerate(itertools.pairwise(grid)):
        x = transition(model, x, t, t_next, generator)
        if callback is not None:
            out = callback(step, t, t_next, x)
            if out is not None:
                if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                    raise InvalidInputError("callback must return None or a tensor shaped like x")
                x = out
    return x
