"""The common interface of ODE, SDE and GLASS transitions: (model, x_t, t, t', gen) -> x_t'."""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod

import numpy as np
import torch

from glass_core import _random
from glass_core._checks import model_output, positive_int
from glass_core.errors import InvalidInputError, ModelError
from glass_core.models.base import Denoiser, TimeLike, check_batch
from glass_core.models.gmm import kernel_scalars
from glass_core.schedules import Schedule

check_int = positive_int  # the name the transitions use


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInputError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def check_times(t: object, t_next: object) -> tuple[float, float]:
    """Validated float64 (t, t_next) with 0 <= t < t_next <= 1."""
    out = []
    for name, v in (("t", t), ("t_next", t_next)):
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise InvalidInputError(f"{name} must be a scalar time, got shape {tuple(v.shape)}")
            v = v.item()
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a float in [0, 1], got {v!r}") from None
        if not (math.isfinite(f) and 0.0 <= f <= 1.0):
            raise InvalidInputError(f"{name} must be a finite float in [0, 1], got {v!r}")
        out.append(f)
    if not out[1] > out[0]:
        raise InvalidInputError(f"t_next must be > t, got t={out[0]}, t_next={out[1]}")
    return out[0], out[1]


def substep_intervals(t: float, t_next: float, substeps: int) -> list[tuple[float, float]]:
    """`substeps` uniform intervals (t0, t1) from t to t_next; the last ends exactly at t_next."""
    grid = np.linspace(t, t_next, substeps + 1)
    grid[-1] = t_next
    return [(float(a), float(b)) for a, b in itertools.pairwise(grid)]


def leaves_noise_end(schedule: Schedule, t: float) -> bool:
    """True for a step starting at pure noise (alpha_t = 0) or below the model's time range (a VP
    table's noisiest node): the samplers take it in closed form, `frozen_denoiser_step`, because
    there the schedule's derivatives are singular or steep and the model is not asked at t itself
    (docs/noise_end.md)."""
    return t < schedule.model_time_range[0] or schedule.alpha(t) == 0.0


def frozen_denoiser_step(
    schedule: Schedule,
    x: torch.Tensor,
    t: float,
    t_next: float,
    rho: float,
    denoised: torch.Tensor,
    generator: _random.Generator,
) -> torch.Tensor:
    """x' = gamma x + abar D + sbar xi: the exact solution from t to t' of the probability-flow ODE
    (rho = 1, DDIM) or of the reverse SDE (rho = rho_ddpm ** kappa, DDPM-ancestral for kappa = 1)
    with the denoiser held at D = `denoised` (GLASS with one inner step, docs/math.md §3.3). No
    schedule derivative enters, so it is finite from alpha_t = 0."""
    gamma, abar, sbar = kernel_scalars(schedule, t, t_next, rho)
    out = gamma * x + abar * denoised.to(x.dtype)
    if sbar > 0.0:
        out = out + sbar * _random.randn_like(x, generator)
    return out


def _rows(ok: torch.Tensor, limit: int = 10) -> str:
    bad = (~ok).nonzero().flatten().tolist()
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{bad[:limit]}{more}"


def _finite_rows(v: torch.Tensor) -> torch.Tensor:
    """Whether each row is all finite: v * 0 is 0 exactly where v is finite (NaN at NaN/inf), so
    a row sums to 0 iff it is finite (no overflow is possible). Same answer as
    isfinite(v).all(dim=1), several times faster on CPU (this runs twice per model call)."""
    return torch.mul(v.reshape(v.shape[0], -1), 0).sum(dim=1) == 0


class CheckedModel:
    """Forwards to a Denoiser and records, on the device, which rows of each model input and
    output are finite: no host synchronisation per model call. `raise_if_bad` synchronises once
    per transition and blames the right party: the transition (InvalidInputError: its parameters
    or times are numerically out of range) when it fed the model or returned NaN/inf, the model
    (ModelError naming the time and rows) when its output was the first NaN/inf. Other
    attributes are forwarded, so transitions see the original model."""

    def __init__(self, model: Denoiser) -> None:
        self._model = model
        self.schedule = model.schedule
        # (time, finite rows of the input or None, finite rows of the output)
        self._calls: list[tuple[object, torch.Tensor | None, torch.Tensor]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        return self.record(self._model.denoise(x, t), t, x)

    def velocity(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        return self.record(self._model.velocity(x, t), t, x)

    def record(self, out: torch.Tensor, t: object, x: torch.Tensor | None) -> torch.Tensor:
        if isinstance(out, torch.Tensor) and out.ndim >= 1:
            if not out.is_floating_point():
                raise ModelError(
                    f"the model's output at t={t} must be a floating-point tensor, got {out.dtype}"
                )
            if x is not None:
                model_output(out, x, t)
            self._calls.append((t, None if x is None else _finite_rows(x), _finite_rows(out)))
        return out

    def raise_if_bad(self, result: torch.Tensor, transition: Transition, t: float, t_next: float):
        result_ok = _finite_rows(result)
        flags = [f for _, fin, fout in self._calls for f in (fin, fout) if f is not None]
        if bool(torch.stack([f.all() for f in [*flags, result_ok]]).all()):  # the one sync
            return
        where = f"(during the transition t={t} -> t_next={t_next})"
        fin = None
        for tk, fin, fout in self._calls:
            if fin is not None and not bool(fin.all()):
                break  # the transition fed the model NaN/inf: not the model's fault
            if not bool(fout.all()):
                raise ModelError(
                    f"the model returned NaN/inf at t={tk} for rows {_rows(fout)} {where}"
                )
        bad = result_ok if fin is None or bool(fin.all()) else fin
        raise InvalidInputError(
            f"{transition!r} produced NaN/inf in rows {_rows(bad)} {where} from finite model "
            "outputs: its parameters or the times are numerically out of range"
        )


class Transition(ABC):
    """x_t -> x_t' for a Denoiser. Subclasses implement `_step` and `nfe`."""

    @property
    @abstractmethod
    def nfe_per_call(self) -> int:
        """Model evaluations of one call without `denoised` reuse (upper bound; see `nfe`)."""

    @abstractmethod
    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        """Exact model evaluations of one call from t to t_next (reuse: `denoised` was given)."""

    @abstractmethod
    def _step(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: _random.Generator,
        denoised: torch.Tensor | None,
    ) -> torch.Tensor: ...

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: _random.Generator = None,
        *,
        denoised: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One transition. `denoised`: a precomputed D_t(x) (saves the first model call)."""
        if not (hasattr(model, "schedule") and hasattr(model, "denoise")):
            raise InvalidInputError(
                "model must be a Denoiser (schedule, denoise, velocity), "
                f"got {type(model).__name__}"
            )
        check_batch(x)
        tt, tn = check_times(t, t_next)
        if tt >= 1.0:
            raise InvalidInputError(f"t must be < 1, got {tt}")
        if denoised is not None and (
            not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape
        ):
            got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else denoised
            raise InvalidInputError(
                f"denoised must have the shape of x {tuple(x.shape)}, got {got}"
            )
        checked = CheckedModel(model)
        if denoised is not None:
            checked.record(denoised, tt, x)
        try:
            out = self._step(checked, x, tt, tn, generator, denoised)
        except (ZeroDivisionError, OverflowError) as e:  # float64 scalar coefficient math
            raise InvalidInputError(
                f"{self!r}: the transition t={tt} -> t_next={tn} is numerically out of range ({e})"
            ) from e
        checked.raise_if_bad(out, self, tt, tn)
        return out
