"""Shared plumbing for the alignment algorithms.

Argument checks, generators, the model wrapper
that counts NFE / micro-batches / times model calls, and the plain propagation loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from glass_core import _checks
from glass_core._chain import chain
from glass_core._checks import finite_float as check_finite_float  # noqa: F401 (re-exported)
from glass_core._checks import optional_positive_int
from glass_core._progress import progress_bar
from glass_core._random import Generator as Generator  # re-exported for the algorithms
from glass_core.errors import InvalidInputError, RewardError
from glass_core.meter import Meter, chunked
from glass_core.rewards.base import _listing
from glass_core.schedules import validate_time_grid


def fail(name: str, msg: str) -> InvalidInputError:
    return _checks.invalid(name, f"`{name}` {msg}")


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, f"must be True or False, got {value!r}")
    return bool(value)


def check_window(window: Any, name: str) -> tuple[float, float] | None:
    if window is None:
        return None
    try:
        a, b = (float(w) for w in window)
    except (TypeError, ValueError):
        raise fail(
            name, f"must be a pair (start, end) of times in [0, 1], got {window!r}"
        ) from None
    if not (0.0 <= a <= b <= 1.0):
        raise fail(name, f"must satisfy 0 <= start <= end <= 1, got {window!r}")
    return a, b


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise fail(
            name, f"must be a tuple of positive ints (one sample's shape), got {shape!r}"
        ) from None
    if not dims or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in dims
    ):
        raise fail(name, f"must be a non-empty tuple of positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def check_time_grid(time_grid: Any) -> list[float]:
    """Validate a time grid.

    Strictly increasing floats from t0 in [0, 1) (0: pure noise; t0 > 0 needs given
    particles, see align._start) to 1 (data): the native time-grid rule plus the end at 1.
    """
    try:
        grid = [float(t) for t in validate_time_grid(time_grid)]
    except InvalidInputError as exc:  # the algorithms quote the argument's name
        raise fail("time_grid", f"is not a valid time grid: {exc}") from None
    if grid[-1] != 1.0:  # the native rule already keeps every time in [0, 1], increasing
        raise fail(
            "time_grid",
            f"must start in [0, 1) (0: noise) and end at 1 (data), got [{grid[0]}, ..., "
            f"{grid[-1]}]",
        )
    return grid


def check_model(model: Any) -> None:
    for attr in ("schedule", "denoise"):
        if not hasattr(model, attr):
            raise fail("model", f"must be a Denoiser (needs `{attr}`), got {type(model).__name__}")


def check_callable(obj: Any, name: str) -> None:
    if not callable(obj):
        raise fail(name, f"must be callable, got {type(obj).__name__}")


def resolve_groups(generator: Generator, num_groups: int | None) -> tuple[int, bool]:
    """(B, grouped): a list of B generators means B groups; `grouped` keeps the [B, N] layout."""
    num_groups = optional_positive_int(num_groups, "num_groups")
    if isinstance(generator, (list, tuple)):
        if not generator or not all(isinstance(g, torch.Generator) for g in generator):
            raise fail("generator", "as a list must hold one torch.Generator per group")
        if num_groups is not None and num_groups != len(generator):
            raise fail("num_groups", f"is {num_groups} but `generator` lists {len(generator)}")
        return len(generator), True
    if generator is not None and not isinstance(generator, torch.Generator):
        raise fail(
            "generator",
            f"must be None, a torch.Generator or a list of them, got {type(generator).__name__}",
        )
    return (num_groups or 1), num_groups is not None


def draw_seeds(generator: Generator, num_groups: int) -> list[int]:
    """Draw one resampling seed per group.

    Each is drawn from that group's generator (so B groups with B
    generators reproduce B separate runs).
    """
    hi = 2**62
    if isinstance(generator, (list, tuple)):  # drawn where each generator lives
        return [int(torch.randint(hi, (1,), generator=g, device=g.device)) for g in generator]
    single = generator if isinstance(generator, torch.Generator) else None
    where = single.device if single is not None else torch.device("cpu")
    return [int(v) for v in torch.randint(hi, (num_groups,), generator=single, device=where)]


def initial_noise(
    batch: int,
    shape: tuple[int, ...],
    generator: Generator,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    from glass_core._random import randn_like

    _checks.float_dtype(dtype), _checks.device(device)
    try:
        empty = torch.empty((batch, *shape), dtype=dtype or torch.float32, device=device)
    except RuntimeError as e:  # torch's allocators raise (CPU and CUDA out of memory)
        raise InvalidInputError(
            f"the particles [{batch}, *shape={list(shape)}] (num_groups x num_particles rows) "
            f"do not fit in memory on {device or 'cpu'}: {str(e).splitlines()[0][:200]}"
        ) from None
    return randn_like(empty, generator)


def as_generator_arg(generator: Generator) -> Any:
    return list(generator) if isinstance(generator, (list, tuple)) else generator


class CountedModel:
    """Wrap a Denoiser to count and time its calls.

    It counts NFE (one per batched call), micro-batches along dim 0 and, when
    `timed`, times the model calls (with a device sync on CUDA, so only when profiling), all on
    one :class:`glass_core.meter.Meter`. Unknown attributes are forwarded, so transitions see the
    original model.
    """

    def __init__(self, model: Any, max_batch: int | None = None, timed: bool = False) -> None:
        self._model = model
        self.schedule = model.schedule
        self.max_batch = max_batch
        self.meter = Meter(timed=timed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def timed(self) -> bool:
        return self.meter.timed

    @property
    def nfe(self) -> int:
        return self.meter.evaluations

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.meter.evaluations = value

    @property
    def model_time(self) -> float:
        return self.meter.model_seconds

    @model_time.setter
    def model_time(self, value: float) -> None:
        self.meter.model_seconds = value

    def denoise(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self._call(self._model.denoise, x, t)

    def velocity(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self._call(self._model.velocity, x, t)

    def _call(self, fn: Callable[..., torch.Tensor], x: torch.Tensor, t: Any) -> torch.Tensor:
        self.meter.evaluations += 1
        return self.meter.model(lambda xs, ts: chunked(fn, self.max_batch, xs, ts), x, t)


class Timer:
    """Accumulates the wall time of reward sections when enabled (a Meter's reward seconds)."""

    def __init__(self, enabled: bool) -> None:
        self.meter = Meter(timed=enabled)

    @property
    def enabled(self) -> bool:
        return self.meter.timed

    @property
    def total(self) -> float:
        return self.meter.reward_seconds

    def __call__(self, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        return self.meter.reward(fn, *args)  # type: ignore[no-any-return]


def propagate(
    model: CountedModel,
    transition: Callable[..., torch.Tensor],
    x: torch.Tensor,
    grid: list[float],
    generator: Generator,
    progress: bool,
    desc: str,
) -> torch.Tensor:
    """Run the plain chain through every transition of the grid, with a progress bar."""
    with progress_bar(len(grid) - 1, progress, desc) as bar:

        def advance(*_: Any) -> None:
            bar.update(1)

        return chain(transition, model, x, grid, as_generator_arg(generator), advance)


def nonfinite_reward_error(
    values: np.ndarray,
    step: int,
    t: float,
    held_by: Callable[[np.ndarray], list[int] | None] | None = None,
) -> RewardError:
    """Return the error for host rewards holding NaN/inf.

    `values` are all particles' rewards, flat; `held_by` maps the bad
    indices to the ranks holding them (sharded runs; None when there is one process).
    """
    bad = np.flatnonzero(~np.isfinite(values))
    ranks = None if held_by is None else held_by(bad)
    where = "" if ranks is None else f" (held by rank(s) {', '.join(map(str, ranks))})"
    return RewardError(
        f"reward returned NaN/inf at step {step} (t={t:.4g}) for particle indices "
        f"[{_listing(torch.from_numpy(bad))}]{where}"
    )


def ungroup(value: Any, grouped: bool) -> Any:
    """Drop the leading group axis for single-group calls that did not ask for groups."""
    if grouped:
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value[0]
    return value
