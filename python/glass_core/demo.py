"""Deprecated path of :mod:`glass_core.digits.demo` (kept for one release; every use warns)."""

from glass_core._deprecation import moved_module

__getattr__ = moved_module(__name__, "glass_core.digits.demo")
