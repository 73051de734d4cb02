"""glass_core: inference-time reward alignment for flow and diffusion models with GLASS transitions."""

from glass_core import schedules
from glass_core.errors import DegenerateWeightsError, GlassError, InvalidInputError
from glass_core.weights import SMCState, ess, normalize_log_weights, resample

__all__ = [
    "DegenerateWeightsError",
    "GlassError",
    "InvalidInputError",
    "SMCState",
    "ess",
    "normalize_log_weights",
    "resample",
    "schedules",
]
