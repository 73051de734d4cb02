"""Log-space importance weights, resampling and SMC bookkeeping (native, float64).

All functions accept numpy arrays (C-contiguous float64 is read in place), torch tensors (detached;
moved to the CPU, which synchronises the device; bf16/fp16 cast to float32; non-contiguous
copied), sequences and scalars, and return numpy arrays; indices are int64, usable directly with
``torch.index_select`` after ``torch.from_numpy``.

* :func:`normalize_log_weights` -- ``(lw - logsumexp(lw), log mean weight)`` per row.
* :func:`ess` -- effective sample size per row.
* :func:`resample` -- ancestor indices, schemes :data:`SCHEMES` ("systematic" | "stratified" |
  "multinomial" | "residual" | "ssp" | "killing"; killing needs M = N), all O(N), seeded
  (``seed`` int: row b uses PCG-64 stream b; sequence of ints: row b uses ``seeds[b]``, identical
  to a 1-D call with that seed).
* :class:`SMCState` -- carried weights, log-evidence, adaptive resampling and genealogy for B groups
  of N particles; :meth:`SMCState.step` returns a :class:`StepResult`.

Errors: NaN log-weights and all -inf rows raise :class:`~glass_core.errors.DegenerateWeightsError`;
+inf, bad shapes, bad schemes/seeds raise :class:`~glass_core.errors.InvalidInputError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from glass_core import _core
from glass_core._checks import plain_array
from glass_core._core import RESAMPLING_SCHEMES, SMCState, StepResult

_F = TypeVar("_F", bound=Callable[..., Any])


def _unmasked(native: _F) -> _F:
    """`native` refusing numpy masked arrays (whose mask it would ignore) as its first argument."""

    @functools.wraps(native)
    def checked(log_weights: Any, *args: Any, **kwargs: Any) -> Any:
        plain_array(log_weights, "log_weights")
        return native(log_weights, *args, **kwargs)

    return checked  # type: ignore[return-value]


ess = _unmasked(_core.ess)
normalize_log_weights = _unmasked(_core.normalize_log_weights)
resample = _unmasked(_core.resample)

#: Names of the resampling schemes, from the native registry (the one place they are listed).
SCHEMES: tuple[str, ...] = RESAMPLING_SCHEMES

__all__ = ["SCHEMES", "SMCState", "StepResult", "ess", "normalize_log_weights", "resample"]
