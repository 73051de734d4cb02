"""glass_core: inference-time reward alignment for flow and diffusion models with GLASS transitions.

Layers (GLASS_MATH convention everywhere: t=0 noise, t=1 data, x_t = alpha_t z + sigma_t eps):
``schedules`` and the weight/resampling functions come from the native core; ``models`` turn any
network into a denoiser; ``transitions`` (ODE, SDE, GLASS) move particles; ``align`` steers them
toward a reward; ``steer`` does it all for a diffusers pipeline in one call.
"""

from glass_core import align, models, rewards, schedules, transitions
from glass_core._core import StepResult
from glass_core.errors import (
    DegenerateWeightsError,
    GlassError,
    InvalidInputError,
    RewardError,
    UnsupportedModelError,
)
from glass_core.schedules import Schedule
from glass_core.steer import SteerResult, steer
from glass_core.weights import SMCState, ess, normalize_log_weights, resample

__version__ = "0.1.0"

__all__ = [
    "DegenerateWeightsError",
    "GlassError",
    "InvalidInputError",
    "RewardError",
    "SMCState",
    "Schedule",
    "SteerResult",
    "StepResult",
    "UnsupportedModelError",
    "__version__",
    "align",
    "ess",
    "models",
    "normalize_log_weights",
    "resample",
    "rewards",
    "schedules",
    "steer",
    "transitions",
]
