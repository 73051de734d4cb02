"""Argument checks shared by every layer (one rule each); errors name the argument."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from glass_core.errors import InvalidInputError


def positive_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum] (integer-likes such as numpy.int64 accepted, bools
    and floats refused)."""
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if isinstance(value, bool | np.bool_) or v is None or v < minimum:
        raise InvalidInputError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and v > maximum:
        raise InvalidInputError(f"`{name}` must be an integer <= {maximum}, got {value!r}")
    return v


def optional_positive_int(value: Any, name: str) -> int | None:
    """None, or `value` as a positive int."""
    return None if value is None else positive_int(value, name)
