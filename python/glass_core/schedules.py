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

from glass_core._checks import real_number
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
    """Rectified-flow schedule: alpha = t, sigma = 1 - t (FLUX, SD3, SiT "linear").

    Returns
    -------
    Schedule
        The native, immutable schedule.

    Examples
    --------
    >>> RectifiedFlow().alpha(0.25)
    0.25
    """
    return Schedule.rectified_flow()


def Cosine() -> Schedule:
    """Cosine schedule: alpha = sin(pi t / 2), sigma = cos(pi t / 2).

    Returns
    -------
    Schedule
        The native, immutable schedule.
    """
    return Schedule.cosine()


class VP:
    """Variance-preserving schedules from discrete DDPM tables (SD 1.x, SDXL)."""

    @staticmethod
    def from_alphas_cumprod(table: Sequence[float] | np.ndarray | object) -> Schedule:
        """Build a VP schedule from a diffusers ``alphas_cumprod`` table.

        Parameters
        ----------
        table
            Strictly decreasing entries in (0, 1), diffusers order (index 0 least noisy): a
            numpy array, a torch tensor (e.g. ``scheduler.alphas_cumprod``) or a sequence.

        Returns
        -------
        Schedule
            Node k sits at t_k = 1 - (k + 1) / (T + 1); log-SNR is piecewise linear between nodes.

        Raises
        ------
        InvalidInputError
            If the table is empty, not strictly decreasing or has entries outside (0, 1).
        """
        return Schedule.vp_from_alphas_cumprod(table)

    @staticmethod
    def from_betas(
        beta_start: float,
        beta_end: float,
        num_train_timesteps: int = 1000,
        kind: Literal["linear", "scaled_linear"] = "linear",
    ) -> Schedule:
        """Build a VP schedule from DDPM betas, in float64.

        Parameters
        ----------
        beta_start, beta_end
            First and last beta (SD 1.x / SDXL: 0.00085 and 0.012 with "scaled_linear").
        num_train_timesteps
            Number of table entries T.
        kind
            "linear" (betas linear in the step) or "scaled_linear" (square roots linear).

        Returns
        -------
        Schedule
            The VP schedule of ``alphas_cumprod = cumprod(1 - betas)``.
        """
        return Schedule.vp_from_betas(beta_start, beta_end, num_train_timesteps, kind)


def shifted(schedule: Schedule, shift: float) -> Schedule:
    """Apply the SD3/FLUX static time shift to a schedule.

    Parameters
    ----------
    schedule
        The schedule to shift.
    shift
        The shift s in [1e-6, 1e6]; alpha'(t) = alpha(m(t)) with
        m(t) = 1 - s (1 - t) / (1 + (s - 1)(1 - t)).

    Returns
    -------
    Schedule
        The shifted schedule.

    Raises
    ------
    InvalidInputError
        If `shift` is not a real number in that range (a string or a boolean is not read as one).
    """
    value = real_number(shift)
    if value is None:
        raise InvalidInputError(f"shift must be a real number, got {shift!r}", arg="shift")
    return Schedule.shifted(schedule, value)


def dynamic_shift(
    schedule: Schedule,
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> Schedule:
    """Shift a schedule by diffusers' resolution-dependent FLUX ``mu``.

    Parameters
    ----------
    schedule
        The schedule to shift.
    image_seq_len
        The image's token count L (latent pixels / 4 for FLUX's 2x2 packing).
    base_seq_len, max_seq_len, base_shift, max_shift
        The scheduler config's values; ``mu`` is linear in L between them.

    Returns
    -------
    Schedule
        ``shifted(schedule, exp(mu))``.

    Raises
    ------
    InvalidInputError
        If the resulting shift is out of range, naming ``image_seq_len``.
    """
    mu = dynamic_shift_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    try:
        shift = math.exp(mu)
    except OverflowError:
        shift = math.inf
    try:
        return shifted(schedule, shift)
    except InvalidInputError as e:
        raise InvalidInputError(
            f"image_seq_len = {image_seq_len!r} gives {e}", arg="image_seq_len"
        ) from None


def resolve_rho(schedule: Schedule, rho: float | str, t: float, t_next: float) -> float:
    """Resolve a GLASS correlation to a float for the transition t -> t_next.

    Parameters
    ----------
    schedule
        The model's schedule.
    rho
        A float in [-1, 1], or "ddpm" for alpha_t sigma_t' / (sigma_t alpha_t') (the SDE's kernel).
    t, t_next
        The transition's start and end times.

    Returns
    -------
    float
        The correlation.

    Raises
    ------
    InvalidInputError
        If ``rho`` is neither "ddpm" nor a finite float in [-1, 1] (see :func:`check_rho`).
    """
    r = check_rho(rho)
    if isinstance(r, str):
        return float(schedule.rho_ddpm(float(t), float(t_next)))
    return r


def check_rho(rho: object) -> float | str:
    """Check a GLASS correlation specification.

    Parameters
    ----------
    rho : object
        A real number in [-1, 1] or the string "ddpm".

    Returns
    -------
    float or str
        The number as a float, or "ddpm".

    Raises
    ------
    InvalidInputError
        For anything else (booleans included: True is not read as 1.0).
    """
    if rho == "ddpm":
        return "ddpm"
    r = real_number(rho)
    if r is not None and math.isfinite(r) and -1.0 <= r <= 1.0:
        return r
    raise InvalidInputError(f"rho must be a float in [-1, 1] or 'ddpm', got {rho!r}")
