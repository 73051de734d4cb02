"""Whole trajectories: apply one transition over a time grid, with a per-step hook."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from glass_core import _random
from glass_core._chain import StepCallback, chain
from glass_core.errors import InvalidInputError
from glass_core.models.base import Denoiser
from glass_core.schedules import validate_time_grid
from glass_core.transitions.base import Transition


@dataclass
class SampleResult:
    """What `sample` returns.

    Parameters
    ----------
    samples : torch.Tensor
        The particles at the grid's last time, shaped like x0 (or `shape`).
    nfe : int
        Model evaluations per sample (batch rows share each call).
    """

    samples: torch.Tensor
    nfe: int


def _grid(time_grid: Sequence[float] | np.ndarray | torch.Tensor) -> list[float]:
    """Validate the grid (native rule: 1-D, >= 2 points, finite, inside [0, 1], increasing)."""
    return [float(v) for v in validate_time_grid(time_grid)]


def sample(
    model: Denoiser,
    transition: Transition,
    time_grid: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: _random.Generator = None,
    callback: StepCallback | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    num_groups: int | None = None,
) -> SampleResult:
    """Run `transition` over consecutive pairs of `time_grid`.

    The run starts from x0, or from N(0, I) noise of `shape` drawn from `generator` on
    `device`/`dtype`. After each transition `callback(step, t, t_next, x)` may return a tensor
    that replaces x (the steering algorithms resample there).

    Parameters
    ----------
    model : Denoiser
        The pretrained model.
    transition : Transition
        The step taken between consecutive grid times (ODE, SDE, Glass).
    time_grid : sequence of float, array or tensor
        Increasing times in [0, 1], at least two.
    x0 : torch.Tensor, optional
        The particles at the grid's first time, which may be t0 > 0 (then x0 is required):
        [N, ...] (rows along dim 0), or [B, N, ...] (the samples are then [B, N, ...]) when
        `generator` is a list of B generators (group b's noise from generator b) or
        `num_groups` = B.
    shape : sequence of int, optional
        The noise's shape when x0 is not given (exactly one of x0 and shape).
    generator : torch.Generator, list of them, or None
        The noise source.
    callback : callable, optional
        `callback(step, t, t_next, x)` after each transition; a returned tensor replaces x.
    device, dtype
        Of the initial noise.
    num_groups : int, optional
        B for an x0 of shape [B, N, ...] with a single generator.

    Returns
    -------
    SampleResult
        The final samples and the NFE spent per sample.

    Raises
    ------
    InvalidInputError
        For a bad grid, both or neither of x0 and shape, noise asked from t0 > 0, or an x0 that
        does not have the grouped shape.

    Examples
    --------
    >>> import torch
    >>> from glass_core.models import from_callable
    >>> from glass_core.schedules import Schedule
    >>> from glass_core.transitions import ODE, sample
    >>> rf = Schedule.rectified_flow()
    >>> model = from_callable(lambda x, t: 0 * x + 2, schedule=rf, prediction="x1")
    >>> out = sample(model, ODE(), [0.0, 0.5, 1.0], shape=(4, 2))
    >>> out.samples.shape, out.nfe
    (torch.Size([4, 2]), 2)
    """
    grid = _grid(time_grid)
    if (x0 is None) == (shape is None):
        raise InvalidInputError("give exactly one of x0 and shape")
    if x0 is None:
        assert shape is not None  # checked above; narrows the type
        if grid[0] != 0.0:
            raise InvalidInputError(
                f"time_grid starts at t = {grid[0]}; noise is only the state at t = 0, so a run "
                "from t0 > 0 needs the particles there as x0="
            )
        x = _random.randn(shape, generator, device=device, dtype=dtype)
    else:
        x = x0
    lead: tuple[int, ...] | None = None
    grouped_by = f"num_groups={num_groups!r}"
    if num_groups is None and x0 is not None and isinstance(generator, list | tuple):
        num_groups, grouped_by = len(generator), f"a list of {len(generator)} generators"
    if num_groups is not None:
        if x0 is None or x0.ndim < 3 or x0.shape[0] != num_groups:
            got = None if x0 is None else tuple(x0.shape)
            raise InvalidInputError(
                f"x0 must have shape [B={num_groups}, N, ...] with {grouped_by}, got {got}"
            )
        lead = tuple(x0.shape[:2])
        x = x0.flatten(0, 1)
    x = chain(transition, model, x, grid, generator, callback)
    nfe = sum(transition.nfe(model.schedule, t, t_next) for t, t_next in itertools.pairwise(grid))
    return SampleResult(samples=x if lead is None else x.reshape(*lead, *x.shape[1:]), nfe=nfe)
