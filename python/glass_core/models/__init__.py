"""Denoisers: the protocol, parameterisation conversions, adapters and the exact GMM model."""

from glass_core.models.base import (
    PREDICTIONS,
    Denoiser,
    DenoiserBase,
    conversion_coefficients,
    convert,
)
from glass_core.models.callable import CallableDenoiser, from_callable
from glass_core.models.gmm import GaussianMixture

__all__ = [
    "PREDICTIONS",
    "CallableDenoiser",
    "Denoiser",
    "DenoiserBase",
    "GaussianMixture",
    "conversion_coefficients",
    "convert",
    "from_callable",
]
