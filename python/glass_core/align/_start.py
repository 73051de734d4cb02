"""Where a run starts.

N(0, I) noise at t = 0, or given particles `x0` at the first time of the
grid (which may then be t0 > 0: posterior sampling from x_t0, SDEdit, resuming a run).

x0 is [N, ...] for one group or [B, N, ...] for B groups (rows group-major once flattened). With
x0 the target of every algorithm is p(x1 | x_t0) (each particle's own x_t0) tilted by the reward.
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core import _checks
from glass_core.align._common import (
    Generator,
    check_shape,
    fail,
    initial_noise,
    resolve_groups,
)


def resolve_start(
    x0: Any,
    shape: Any,
    num_particles: Any,
    num_groups: Any,
    generator: Generator,
    time_grid: Any,
    process_group: Any = None,
) -> tuple[Any, Any]:
    """Check `x0` against the other arguments and return (shape, num_groups).

    The configuration validates them: from x0 when it is given (`shape` may then be None). Without
    x0 the grid must start at 0 (noise).
    """
    first = _first_time(time_grid)
    if x0 is None:
        if first is not None and first != 0.0:
            raise fail(
                "time_grid",
                f"starts at t = {first}; a run from t0 > 0 needs the particles there as x0=",
            )
        return shape, num_groups
    if process_group is not None:
        raise fail("x0", "is not supported with process_group (sharded runs start from noise)")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        got = x0.dtype if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise fail("x0", f"must be a floating-point tensor [N, ...] or [B, N, ...], got {got}")
    _checks.tensor_with_data(x0, "x0")
    if not bool(torch.isfinite(x0).all()):
        raise fail("x0", "must be finite")
    _, grouped = resolve_groups(generator, num_groups)
    if shape is not None:
        dims = check_shape(shape)
        if x0.ndim not in (len(dims) + 1, len(dims) + 2):
            raise fail(
                "x0",
                f"must be [N, *shape] or [B, N, *shape] with shape {dims}, got {tuple(x0.shape)}",
            )
        grouped = x0.ndim == len(dims) + 2
        if tuple(x0.shape[-len(dims) :]) != dims:
            raise fail("x0", f"samples must have shape {dims}, got x0 {tuple(x0.shape)}")
    lead = 2 if grouped else 1
    if x0.ndim <= lead:
        want = "[B, N, ...] (groups are given)" if grouped else "[N, ...]"
        raise fail("x0", f"must be {want}, got shape {tuple(x0.shape)}")
    n = x0.shape[lead - 1]
    if n != num_particles:
        how = "" if grouped else " (read as [N, ...]: give shape= or groups for [B, N, ...])"
        raise fail(
            "x0", f"holds {n} particles per group{how}, but num_particles is {num_particles!r}"
        )
    if not grouped:
        if num_groups is not None or isinstance(generator, list | tuple):
            raise fail("x0", f"is one group [N, ...] {tuple(x0.shape)}, but groups are given")
        return tuple(x0.shape[1:]), None
    b = x0.shape[0]
    if isinstance(generator, list | tuple):
        if len(generator) != b:
            raise fail("x0", f"holds {b} groups, but `generator` lists {len(generator)}")
        return tuple(x0.shape[2:]), num_groups
    if num_groups is not None and num_groups != b:
        raise fail("x0", f"holds {b} groups, but num_groups is {num_groups!r}")
    return tuple(x0.shape[2:]), b


def start_particles(
    x0: torch.Tensor | None,
    rows: int,
    shape: tuple[int, ...],
    noise: Any,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    """Return the [rows, *shape] particles at the grid's first time.

    x0 flattened (cast to `dtype` /
    moved to `device` if given) or fresh N(0, I) noise from `noise`.
    """
    if x0 is None:
        return initial_noise(rows, shape, noise, dtype, device)
    return x0.reshape(rows, *shape).to(dtype=dtype or x0.dtype, device=device or x0.device)


def _first_time(time_grid: Any) -> float | None:
    try:
        values = time_grid.tolist() if hasattr(time_grid, "tolist") else list(time_grid)
        return float(values[0])
    except (TypeError, ValueError, IndexError):
        return None  # the config's grid check names the problem
