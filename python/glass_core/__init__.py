"""glass_core: inference-time reward alignment for flow and diffusion models with GLASS transitions.

Layers (one convention everywhere, docs/math.md §1: t=0 noise, t=1 data,
x_t = alpha_t z + sigma_t eps):
``schedules`` and the weight/resampling functions come from the native core; ``models`` turn any
network into a denoiser; ``transitions`` (ODE, SDE, GLASS) move particles; ``align`` steers them
toward a reward; ``steer`` (module ``steering``) does it all for a diffusers pipeline in one call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names are imported on first use (PEP 562), so `import glass_core` (and the CLI's --help and
# argument errors) does not pay for torch; the subpackages that need torch import it themselves.
_LAZY: dict[str, str] = {
    "align": "glass_core.align",
    "models": "glass_core.models",
    "rewards": "glass_core.rewards",
    "schedules": "glass_core.schedules",
    "transitions": "glass_core.transitions",
    "StepResult": "glass_core._core",
    "DegenerateWeightsError": "glass_core.errors",
    "GlassError": "glass_core.errors",
    "InvalidInputError": "glass_core.errors",
    "ModelError": "glass_core.errors",
    "RewardError": "glass_core.errors",
    "UnsupportedModelError": "glass_core.errors",
    "Schedule": "glass_core.schedules",
    "SteerResult": "glass_core.steering",
    "steer": "glass_core.steering",
    "SMCState": "glass_core.weights",
    "ess": "glass_core.weights",
    "normalize_log_weights": "glass_core.weights",
    "resample": "glass_core.weights",
}

__all__ = [
    "DegenerateWeightsError",
    "GlassError",
    "InvalidInputError",
    "ModelError",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        try:  # any other submodule (glass_core._core, glass_core.digits.demo, ...) on first access
            value = importlib.import_module(f"glass_core.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'glass_core' has no attribute {name!r}") from None
        globals()[name] = value
        return value
    mod = importlib.import_module(module)
    # a subpackage is the module itself; anything else is an attribute of its module
    value = mod if module == f"glass_core.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
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
    from glass_core.steering import SteerResult, steer
    from glass_core.weights import SMCState, ess, normalize_log_weights, resample
