"""The Denoiser protocol, conversions between parameterisations, and the DenoiserBase adapter.

Convention (docs/math.md §1): t=0 noise, t=1 data, x_t = alpha_t z + sigma_t eps. A denoiser
returns D_t(x) = E[z | x_t = x]. Scalar coefficient math is float64 (numpy, schedule values from
the native core); tensors only see the final per-sample coefficients, cast to the working dtype.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from glass_core._checks import invalid, optional_positive_int, real_number
from glass_core.errors import InvalidInputError, ModelError
from glass_core.meter import chunked
from glass_core.schedules import Schedule

Prediction = Literal["x1", "velocity", "epsilon", "v", "score"]
# a shared time, a 0-d tensor, or per-row times ([B] tensor or float64 ndarray)
TimeLike = float | torch.Tensor | np.ndarray
PREDICTIONS: tuple[str, ...] = ("x1", "velocity", "epsilon", "v", "score")


@runtime_checkable
class Denoiser(Protocol):
    """Anything with a schedule that returns E[z | x_t = x] and the marginal velocity u_t(x)."""

    schedule: Schedule

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the denoised estimate D_t(x) of the data."""

    def velocity(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the velocity of the probability-flow ODE at (x, t)."""


# ---------------------------------------------------------------------------------------------
# time handling


def check_batch(x: torch.Tensor, name: str = "x") -> None:
    """Raise InvalidInputError unless ``x`` is a batch tensor [M, ...] (naming ``name``).

    Parameters
    ----------
    x : torch.Tensor
        The batch.
    name : str
        Its name in the error message.

    Raises
    ------
    InvalidInputError
        ``x`` is not a floating-point tensor [B, ...] with B >= 1.
    """
    if not isinstance(x, torch.Tensor):
        raise invalid(name, f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise invalid(name, f"{name} must have shape [B, ...] with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise invalid(name, f"{name} must be a floating-point tensor, got {x.dtype}")


def time_values(t: TimeLike, batch: int, name: str = "t") -> float | np.ndarray:
    """float64 time(s): a python float for a shared time, else an ndarray [batch]. Validated.

    Parameters
    ----------
    t : float, ndarray or torch.Tensor
        One time or one per row.
    batch : int
        The number of rows.
    name : str
        Its name in error messages.

    Returns
    -------
    float or ndarray
        The time(s) in float64.

    Raises
    ------
    InvalidInputError
        Times outside [0, 1], non-finite, or of the wrong length.
    """
    if type(t) is float:  # the common case, checked without numpy (runs once per model call)
        if not 0.0 <= t <= 1.0:  # also rejects NaN
            raise invalid(name, f"{name} must be finite and inside [0, 1], got {t}")
        return t
    if isinstance(t, torch.Tensor):
        if t.ndim == 0:
            val: float | np.ndarray = float(t.item())
        elif t.ndim == 1 and t.shape[0] == batch:
            val = t.detach().to("cpu", torch.float64).numpy()
        else:
            raise invalid(
                name,
                f"{name} must be a float, a 0-d tensor or a [B]={batch} tensor, "
                f"got shape {tuple(t.shape)}",
            )
    elif isinstance(t, np.ndarray) and t.ndim == 1:
        if t.shape[0] != batch:
            raise invalid(name, f"{name} must have shape [{batch}], got {t.shape}")
        val = t.astype(np.float64)
    else:
        number = real_number(t)
        if number is None:
            raise invalid(name, f"{name} must be a float or tensor, got {type(t).__name__}")
        val = number
    arr = np.asarray(val)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0):
        raise invalid(name, f"{name} must be finite and inside [0, 1], got {val}")
    return val


def scalar_time(t: TimeLike, name: str) -> float:
    """Return ``t`` as a Python float, raising InvalidInputError if it is not a scalar.

    Parameters
    ----------
    t : float or tensor
        The time.
    name : str
        Its name in the error message.

    Returns
    -------
    float
        The time.

    Raises
    ------
    InvalidInputError
        ``t`` is not a scalar.
    """
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise invalid(name, f"{name} must be a scalar time, got shape {tuple(t.shape)}")
        t = float(t.item())
    v = real_number(t)
    if v is None:
        raise invalid(name, f"{name} must be a float in [0, 1], got {t!r}")
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise invalid(name, f"{name} must be a finite float in [0, 1], got {t!r}")
    return v


def working_dtype(x: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype for combining tensors: at least float32 (bf16/fp16 models are upcast).

    Parameters
    ----------
    x : torch.Tensor
        A model input or output.

    Returns
    -------
    torch.dtype
        ``x.dtype`` if at least float32, else float32.
    """
    return torch.promote_types(x.dtype, torch.float32)


def bcast(c: float | np.ndarray, x: torch.Tensor, dtype: torch.dtype):
    """Return a float64 coefficient (scalar or [B]) shaped to multiply x ([B, ...]) row-wise.

    Parameters
    ----------
    c : float or ndarray
        The coefficient.
    x : torch.Tensor
        The batch it multiplies.
    dtype : torch.dtype
        The tensor's dtype (``working_dtype(x)`` in ``convert``).

    Returns
    -------
    float or torch.Tensor
        A float for a scalar, else a tensor [B, 1, ...] on x's device.
    """
    if np.ndim(c) == 0:
        return float(c)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return torch.as_tensor(np.asarray(c), dtype=dtype, device=x.device).reshape(shape)


def schedule_values(schedule: Schedule, t: float | np.ndarray):
    """(alpha, sigma, d_alpha, d_sigma) at t, float64 (scalar or ndarray), from the native core.

    Parameters
    ----------
    schedule : Schedule
        The noise schedule.
    t : float or ndarray
        The time(s).

    Returns
    -------
    tuple
        (alpha, sigma, d_alpha, d_sigma).
    """
    if np.ndim(t) == 0:
        tt = float(t)
        return schedule.alpha(tt), schedule.sigma(tt), schedule.d_alpha(tt), schedule.d_sigma(tt)
    arr = np.ascontiguousarray(t, dtype=np.float64)
    return (
        np.asarray(schedule.alpha(arr)),
        np.asarray(schedule.sigma(arr)),
        np.asarray(schedule.d_alpha(arr)),
        np.asarray(schedule.d_sigma(arr)),
    )


# ---------------------------------------------------------------------------------------------
# the noise end (docs/noise_end.md)

# Where alpha = 0 these predictions carry no information about z (D = (x - sigma eps) / alpha).
_BLIND_AT_NOISE = ("epsilon", "score")
# Such a model is asked no nearer to pure noise than alpha / sigma = 1e-3: its float32 rounding,
# amplified by sigma / alpha, stays near 1e-4 in D, and D there differs from D_0 by O(1e-3).
NOISE_FLOOR_LOG_SNR = 2.0 * math.log(1e-3)


def query_time(schedule: Schedule, t: float | np.ndarray, prediction: str) -> float | np.ndarray:
    """Return the time at which a model returning `prediction` is asked for D_t.

    t clamped to ``schedule.model_time_range`` (and, for epsilon/score models, to the noise floor
    from below).

    The convention shared by every model: D_t(x) := D_{query_time(t)}(x). For a VP table this is
    the noisiest node below it (what diffusers pipelines assume of pure noise) and the least noisy
    node above it; analytic schedules are asked at t itself except an epsilon/score model at
    alpha = 0, which cannot tell anything about the data there.

    Parameters
    ----------
    schedule : Schedule
        The noise schedule.
    t : float or ndarray
        The time(s) D_t is wanted at.
    prediction : str
        What the model returns (``PREDICTIONS``).

    Returns
    -------
    float or ndarray
        The time(s) the model is evaluated at.
    """
    lo, hi = schedule.model_time_range
    if prediction in _BLIND_AT_NOISE:
        lo = max(lo, float(schedule.t_from_log_snr(NOISE_FLOOR_LOG_SNR)))
    if np.ndim(t) == 0:
        return min(max(float(t), lo), hi)
    return np.clip(np.asarray(t, dtype=np.float64), lo, hi)


# ---------------------------------------------------------------------------------------------
# conversions (docs/math.md §1)


def _loadings(kind: str, a, s, da, ds):
    """(c_z, c_eps) such that prediction = c_z z + c_eps eps, given the schedule at t."""
    if kind == "x1":
        return 1.0, 0.0
    if kind == "epsilon":
        return 0.0, 1.0
    if kind == "velocity":  # u = alpha' z + sigma' eps (conditional velocity, eq. 23)
        return da, ds
    if kind == "v":  # v = alpha eps - sigma z (diffusers' v-prediction, any schedule)
        return -s, a
    if kind == "score":  # grad log p_t = -eps / sigma
        with np.errstate(divide="ignore"):  # np.divide: a scalar sigma = 0 gives -inf too
            return 0.0 * a, np.divide(-1.0, s)
    raise InvalidInputError(f"prediction must be one of {PREDICTIONS}, got {kind!r}")


def conversion_coefficients(schedule: Schedule, t: float | np.ndarray, source: str, target: str):
    """float64 (A, B) with target = A x + B * source_prediction at time t.

    Solves ``[x; p] = [[alpha, sigma], [c_z, c_eps]] [z; eps]`` for (z, eps), then forms the
    target's loadings. Raises where the source does not determine the target (det = 0: x1 at
    sigma=0, epsilon at alpha=0).

    Parameters
    ----------
    schedule : Schedule
        The noise schedule.
    t : float or ndarray
        The time(s).
    source, target : str
        The parameterisations (``PREDICTIONS``).

    Returns
    -------
    tuple
        (A, B), floats or ndarrays.

    Raises
    ------
    InvalidInputError
        Where the source does not determine the target.
    """
    a, s, da, ds = schedule_values(schedule, t)
    cz, ce = _loadings(source, a, s, da, ds)
    dz, de = _loadings(target, a, s, da, ds)
    det = a * ce - s * cz
    if np.any(det == 0) or not np.all(np.isfinite(det)):
        raise InvalidInputError(
            f"t: cannot convert a {source!r} prediction to {target!r} at t={t} "
            f"(alpha_t={a}, sigma_t={s}: the prediction does not determine it there)"
        )
    with np.errstate(all="ignore"):
        A = (dz * ce - de * cz) / det
        B = (de * a - dz * s) / det
    return A, B


def convert(
    pred: torch.Tensor,
    x: torch.Tensor,
    t: TimeLike,
    schedule: Schedule,
    *,
    source: str,
    target: str,
) -> torch.Tensor:
    """Convert a model output `pred` at (x, t) from one parameterisation to another.

    Parameters
    ----------
    pred : torch.Tensor
        The model output in the ``source`` parameterisation.
    x : torch.Tensor
        The model input.
    t : float or tensor
        The time(s).
    schedule : Schedule
        The noise schedule.
    source, target : str
        The parameterisations (``PREDICTIONS``).

    Returns
    -------
    torch.Tensor
        The output in the ``target`` parameterisation.

    Raises
    ------
    InvalidInputError
        Where the source does not determine the target.
    """
    if source not in PREDICTIONS:
        raise InvalidInputError(f"source must be one of {PREDICTIONS}, got {source!r}")
    if target not in PREDICTIONS:
        raise InvalidInputError(f"target must be one of {PREDICTIONS}, got {target!r}")
    if source == target:
        return pred
    tv = time_values(t, x.shape[0])
    A, B = conversion_coefficients(schedule, tv, source, target)
    wd = working_dtype(x)
    out = bcast(A, x, wd) * x.to(wd) + bcast(B, x, wd) * pred.to(wd)
    return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# base adapter


class DenoiserBase:
    """Implements `denoise`, `velocity`, `epsilon`, `v`, `score` from one `predict(x, t)`.

    Subclasses set `prediction` (what `predict` returns) and implement `predict(x, t)` where t is a
    [B] tensor on x's device (dtype: x's, at least float32). Batches larger than `max_batch` are
    split into micro-batches transparently.

    Parameters
    ----------
    schedule : Schedule
        The noise schedule the model was trained with.
    prediction : str
        What ``predict`` returns (``PREDICTIONS``).
    max_batch : int, optional
        Rows per ``predict`` call (None: all at once).

    Raises
    ------
    InvalidInputError
        An unknown ``prediction`` or a bad ``max_batch``.
    """

    def __init__(self, schedule: Schedule, *, prediction: str = "x1", max_batch: int | None = None):
        if prediction not in PREDICTIONS:
            raise InvalidInputError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        optional_positive_int(max_batch, "max_batch")
        self.schedule = schedule
        self.prediction = prediction
        self.max_batch = max_batch

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return the network's prediction at (x, t) on a tensor of times.

        Parameters
        ----------
        x : torch.Tensor
            Inputs [M, ...].
        t : torch.Tensor
            Times [M] in [0, 1].

        Returns
        -------
        torch.Tensor
            The prediction, shaped like x.
        """
        raise NotImplementedError

    def _predict(self, x: torch.Tensor, tv: float | np.ndarray) -> torch.Tensor:
        b = x.shape[0]
        if isinstance(tv, float):
            t_tensor = torch.full((b,), tv, device=x.device, dtype=working_dtype(x))
        else:
            t_tensor = torch.as_tensor(np.asarray(tv), device=x.device, dtype=working_dtype(x))

        def rows(xs: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
            return self._checked(self.predict(xs, ts), xs)

        return chunked(rows, self.max_batch, x, t_tensor)

    @staticmethod
    def _checked(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidInputError(
                f"model output must have the input's shape {tuple(x.shape)}, got {got}"
            )
        if not out.is_floating_point():
            raise ModelError(f"model output must be a floating-point tensor, got {out.dtype}")
        return out

    def as_prediction(self, x: torch.Tensor, t: TimeLike, target: str) -> torch.Tensor:
        """`target` at (x, t): the model is asked at `query_time` (D_t := D_{query_time(t)}).

        Parameters
        ----------
        x : torch.Tensor
            Inputs [B, ...].
        t : float or tensor
            One time in [0, 1], or one per row.
        target : str
            The parameterisation wanted (``PREDICTIONS``).

        Returns
        -------
        torch.Tensor
            Shaped like x.

        Raises
        ------
        InvalidInputError
            Bad inputs or times, or a target the model's prediction does not determine.
        """
        check_batch(x)
        tv = time_values(t, x.shape[0])
        tq = query_time(self.schedule, tv, self.prediction)
        if np.array_equal(tq, tv):
            if target != self.prediction:
                # fail before the (possibly expensive) model call
                conversion_coefficients(self.schedule, tv, self.prediction, target)
            pred = self._predict(x, tv)
            return convert(pred, x, tv, self.schedule, source=self.prediction, target=target)
        if target != "x1":
            conversion_coefficients(self.schedule, tv, "x1", target)
        pred = self._predict(x, tq)
        d = convert(pred, x, tq, self.schedule, source=self.prediction, target="x1")
        return convert(d, x, tv, self.schedule, source="x1", target=target)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """D_t(x) = E[z | x_t = x].

        Parameters
        ----------
        x : torch.Tensor
            Inputs [B, ...].
        t : float or tensor
            One time in [0, 1], or one per row.

        Returns
        -------
        torch.Tensor
            Shaped like x.
        """
        return self.as_prediction(x, t, "x1")

    __call__ = denoise

    def velocity(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Marginal velocity u_t(x) (eq. 26).

        Parameters
        ----------
        x : torch.Tensor
            Inputs [B, ...].
        t : float or tensor
            One time in [0, 1], or one per row.

        Returns
        -------
        torch.Tensor
            Shaped like x.
        """
        return self.as_prediction(x, t, "velocity")

    def epsilon(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the noise prediction at (x, t)."""
        return self.as_prediction(x, t, "epsilon")

    def v(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the v-prediction at (x, t)."""
        return self.as_prediction(x, t, "v")

    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the score (gradient of the log-density) at (x, t)."""
        return self.as_prediction(x, t, "score")
