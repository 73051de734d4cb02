"""Transitions x_t -> x_t' (ODE, SDE, GLASS) behind one interface, and whole-trajectory sampling."""

import sys

from glass_core._deprecation import ModuleAlias
from glass_core.transitions.base import Transition
from glass_core.transitions.glass import Glass
from glass_core.transitions.ode import ODE
from glass_core.transitions.sampling import SampleResult, sample
from glass_core.transitions.sde import SDE, sde_coefficients

__all__ = ["ODE", "SDE", "Glass", "SampleResult", "Transition", "sample", "sde_coefficients"]

# The module behind `sample` was called glass_core.transitions.sample, shadowed by the function.
sys.modules.setdefault(
    "glass_core.transitions.sample",
    ModuleAlias("glass_core.transitions.sample", "glass_core.transitions.sampling"),
)
