"""Transitions x_t -> x_t' (ODE, SDE, GLASS) behind one interface, and whole-trajectory sampling."""

from glass_core.transitions.base import Transition, check_finite
from glass_core.transitions.glass import Glass
from glass_core.transitions.ode import ODE
from glass_core.transitions.sampling import SampleResult, sample
from glass_core.transitions.sde import SDE, sde_coefficients

__all__ = [
    "ODE",
    "SDE",
    "Glass",
    "SampleResult",
    "Transition",
    "check_finite",
    "sample",
    "sde_coefficients",
]
