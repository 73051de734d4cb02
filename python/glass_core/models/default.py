"""Deprecated path of :mod:`glass_core.digits.assets` (kept for one release; every use warns).
``from_unconditional_pipeline`` and ``CallStats`` forward to
``glass_core.models.diffusers.unconditional``."""

from typing import Any

from glass_core._deprecation import moved_module

_digits = moved_module(__name__, "glass_core.digits.assets")
_adapter = moved_module(__name__, "glass_core.models.diffusers.unconditional")


def __getattr__(name: str) -> Any:
    return (_adapter if name in ("CallStats", "from_unconditional_pipeline") else _digits)(name)
