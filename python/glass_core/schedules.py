"""Noise schedules, GLASS coefficients and time grids (native, float64).

Convention: t = 0 noise, t = 1 data, x_t = alpha_t z + sigma_t eps. Every :class:`Schedule` method
(``alpha``, ``sigma``, ``d_alpha``, ``d_sigma``, ``log_snr``, ``t_from_snr``, ``t_from_log_snr``)
takes a float (returns a float) or an array of times (returns a float64 ndarray of the same shape).

Factories: :func:`RectifiedFlow`, :func:`Cosine`, :meth:`VP.from_alphas_cumprod`,
:meth:`VP.from_betas`, :func:`shifted`; :func:`dynamic_shift_mu` gives diffusers' FLUX ``mu``
(the equivalent static shift is ``exp(mu)``).

VP tables: with T = len(alphas_cumprod) and diffusers index k = 0 the least noisy, node k sits at
t_k = 1 - (k+1)/(T+1); log-SNR is piecewise linear in t between nodes and closes as alpha ∝ t near
t = 0 and sigma ∝ (1-t) near t = 1. ``timestep_from_t`` / ``t_from_timestep`` convert.

``Schedule.model_time_range`` is (t_lo, t_hi), the times at which a model carries information (a VP
table's noisiest and least noisy node, else (0, 1)); models are asked at t clamped to it (the
noise-end convention, docs/noise_end.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from glass_core._core import (
    Schedule,
    dynamic_shift_mu,
    glass_coefficients,
    rho_ddpm,
    shifted_grid,
    uniform_grid,
    validate_time_grid,
)
from glass_core.errors import InvalidInputError

__all__ = [
    "VP",
    "Cosine",
    "RectifiedFlow",
    "Schedule",
    "dynamic_shift",
    "dynamic_shift_mu",
    "glass_coefficients",
    "resolve_rho",
    "rho_ddpm",
    "shifted",
    "shifted_grid",
    "uniform_grid",
    "validate_time_grid",
]


def RectifiedFlow() -> Schedule:
    """alpha = t, sigma = 1 - t (FLUX, SD3, SiT "linear")."""
    return Schedule.rectified_flow()


def Cosine() -> Schedule:
    """alpha = sin(pi t / 2), sigma = cos(pi t / 2)."""
    return Schedule.cosine()


class VP:
    """Variance-preserving schedules from discrete DDPM tables (SD 1.x, SDXL)."""

    @staticmethod
    def from_alphas_cumprod(table: Sequence[float] | np.ndarray | object) -> Schedule:
        """From ``alphas_cumprod`` (diffusers order: strictly decreasing, entries in (0, 1)).

        Accepts numpy arrays, torch tensors (e.g. ``scheduler.alphas_cumprod``) or sequences.
        """
        return Schedule.vp_from_alphas_cumprod(table)

    @staticmethod
    def from_betas(
        beta_start: float,
        beta_end: float,
        num_train_timesteps: int = 1000,
        kind: Literal["linear", "scaled_linear"] = "linear",
    ) -> Schedule:
        """DDPM betas: "linear" or "scaled_linear" (SD 1.x/SDXL: 0.00085, 0.012), in float64."""
        return Schedule.vp_from_betas(beta_start, beta_end, num_train_timesteps, kind)


def shifted(schedule: Schedule, shift: float) -> Schedule:
    """SD3/FLUX static time shift: alpha'(t) = alpha(m(t)), m(t) = 1 - s(1-t)/(1+(s-1)(1-t))."""
    return Schedule.shifted(schedule, float(shift))


def dynamic_shift(
    schedule: Schedule,
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> Schedule:
    """``shifted(schedule, exp(mu))`` with diffusers' resolution-dependent FLUX ``mu``."""
    mu = dynamic_shift_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    try:
        shift = math.exp(mu)
    except OverflowError:
        shift = math.inf
    try:
        return shifted(schedule, shift)
    except InvalidInputError as e:
        raise InvalidInputError(f"image_seq_len = {image_seq_len!r} gives {e}") from None


def resolve_rho(schedule: Schedule, rho: float | str, t: float, t_next: float) -> float:
    """rho as a float; "ddpm" -> alpha_t sigma_t' / (sigma_t alpha_t') from the native core."""
    if isinstance(rho, str):
        if rho != "ddpm":
            raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}")
        return float(schedule.rho_ddpm(float(t), float(t_next)))
    try:
        r = float(rho)
    except (TypeError, ValueError):
        raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}") from None
    if not (math.isfinite(r) and -1.0 <= r <= 1.0):
        raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}")
    return r
