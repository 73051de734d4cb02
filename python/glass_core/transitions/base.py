"""The common interface of ODE, SDE and GLASS transitions: (model, x_t, t, t', gen) -> x_t'."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from typing import NoReturn

import numpy as np
import torch

from glass_core import _random
from glass_core._checks import model_output, positive_int
from glass_core.errors import InvalidInputError, ModelError
from glass_core.models.base import Denoiser, TimeLike, check_batch, scalar_time
from glass_core.schedules import Schedule

check_int = positive_int  # the name the transitions use


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices`.

    Raises
    ------
    InvalidInputError
        Naming `name` and the choices otherwise.
    """
    if value not in choices:
        raise InvalidInputError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def check_times(t: object, t_next: object) -> tuple[float, float]:
    """Validate a step's times as floats with 0 <= t < t_next <= 1.

    Parameters
    ----------
    t, t_next : float or one-element tensor
        The step's start and end.

    Returns
    -------
    tuple of float
        (t, t_next) as Python floats.

    Raises
    ------
    InvalidInputError
        Naming the time that is not a finite number in [0, 1], or when t_next <= t.
    """
    start, end = scalar_time(t, "t"), scalar_time(t_next, "t_next")  # type: ignore[arg-type]
    if not end > start:
        raise InvalidInputError(f"t_next must be > t, got t={start}, t_next={end}")
    return start, end


def substep_intervals(t: float, t_next: float, substeps: int) -> list[tuple[float, float]]:
    """Split [t, t_next] into `substeps` uniform intervals (t0, t1); the last ends at t_next.

    Parameters
    ----------
    t, t_next : float
        The call's step.
    substeps : int
        The number of intervals.

    Returns
    -------
    list of tuple of float
        The intervals in order.

    Examples
    --------
    >>> substep_intervals(0.0, 1.0, 2)
    [(0.0, 0.5), (0.5, 1.0)]
    """
    grid = np.linspace(t, t_next, substeps + 1)
    grid[-1] = t_next
    return [(float(a), float(b)) for a, b in itertools.pairwise(grid)]


def leaves_noise_end(schedule: Schedule, t: float) -> bool:
    """Tell whether a step from t leaves the noise end.

    That is a start at pure noise (alpha_t = 0) or below the model's time range (a VP table's
    noisiest node): the samplers take it in closed form (the frozen-denoiser step), because
    there the schedule's derivatives are singular or steep and the model is not asked at t
    itself (docs/noise_end.md).

    Parameters
    ----------
    schedule : Schedule
        The model's schedule.
    t : float
        The step's start.

    Returns
    -------
    bool
        Whether the step from t is taken in closed form.
    """
    return t < schedule.model_time_range[0] or schedule.alpha(t) == 0.0


def listed_rows(ok: torch.Tensor, limit: int = 10) -> str:
    """List the rows where `ok` is False, for an error message: the first `limit`, then a count."""
    bad = (~ok).nonzero().flatten().tolist()
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{bad[:limit]}{more}"


def finite_rows(v: torch.Tensor) -> torch.Tensor:
    """Flag, per row of v, whether the row is all finite.

    v * 0 is 0 exactly where v is finite (NaN at NaN/inf), so a row sums to 0 iff it is finite
    (no overflow is possible). Same answer as isfinite(v).all(dim=1), several times faster on
    CPU (this runs twice per model call).
    """
    return torch.mul(v.reshape(v.shape[0], -1), 0).sum(dim=1) == 0


class CheckedModel:
    """A Denoiser wrapper that records which rows of each model input and output are finite.

    Used only to explain a failed transition (`Transition.raise_nonfinite` re-runs it with this
    wrapper): `raise_if_bad` blames the right party: the transition (InvalidInputError: its
    parameters or times are numerically out of range) when it fed the model or returned NaN/inf,
    the model (ModelError naming the time and rows) when its output was the first NaN/inf. Other
    attributes are forwarded, so transitions see the original model.

    Parameters
    ----------
    model : Denoiser
        The model to forward to.
    """

    def __init__(self, model: Denoiser) -> None:
        self._model = model
        self.schedule = model.schedule
        # (time, finite rows of the input, finite rows of the output)
        self._calls: list[tuple[object, torch.Tensor, torch.Tensor]] = []

    def __getattr__(self, name: str) -> object:
        """Forward other attributes to the model."""
        return getattr(self._model, name)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the model's D_t(x), recorded."""
        return self.record(self._model.denoise(x, t), t, x)

    def velocity(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Return the model's u_t(x), recorded."""
        return self.record(self._model.velocity(x, t), t, x)

    def record(self, out: torch.Tensor, t: object, x: torch.Tensor) -> torch.Tensor:
        """Check one model output and record which rows of its input and output are finite.

        Parameters
        ----------
        out : torch.Tensor
            The model's output at (x, t).
        t : float or array
            The time it was asked at (for messages).
        x : torch.Tensor
            The model's input.

        Returns
        -------
        torch.Tensor
            `out`, unchanged.

        Raises
        ------
        ModelError
            `out` is not floating point or not on x's device.
        """
        _floating(out, x, t)
        if isinstance(out, torch.Tensor) and out.ndim >= 1:
            self._calls.append((t, finite_rows(x), finite_rows(out)))
        return out

    def raise_if_bad(self, result: torch.Tensor, transition: Transition, t: float, t_next: float):
        """Return if every recorded row and `result` are finite, else raise blaming the culprit.

        Raises
        ------
        ModelError
            The first NaN/inf was a model output from a finite input (naming time and rows).
        InvalidInputError
            The transition fed the model or returned NaN/inf from finite model outputs.
        """
        result_ok = finite_rows(result)
        flags = [f for _, fin, fout in self._calls for f in (fin, fout)]
        if bool(torch.stack([f.all() for f in [*flags, result_ok]]).all()):  # the one sync
            return
        where = f"(during the transition t={t} -> t_next={t_next})"
        fin = None
        for tk, fin, fout in self._calls:
            if not bool(fin.all()):
                break  # the transition fed the model NaN/inf: not the model's fault
            if not bool(fout.all()):
                raise ModelError(
                    f"the model returned NaN/inf at t={tk} for rows {listed_rows(fout)} {where}"
                )
        bad = result_ok if fin is None or bool(fin.all()) else fin
        raise InvalidInputError(
            f"{transition!r} produced NaN/inf in rows {listed_rows(bad)} {where} from finite model "
            "outputs: its parameters or the times are numerically out of range"
        )


class _FloatOutputs:
    """A Denoiser wrapper that checks each output with `_floating`.

    Tensor metadata only: no kernel, no host read. Other attributes are forwarded.
    """

    def __init__(self, model: Denoiser) -> None:
        self._model = model
        self.schedule = model.schedule

    def __getattr__(self, name: str) -> object:
        """Forward other attributes to the model."""
        return getattr(self._model, name)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        return _floating(self._model.denoise(x, t), x, t)

    def velocity(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        return _floating(self._model.velocity(x, t), x, t)


def _floating(out: torch.Tensor, x: torch.Tensor, t: object) -> torch.Tensor:
    """Check that a model output is a floating-point tensor on its input's device.

    Raises
    ------
    ModelError
        Naming the time and the dtype or the two devices.
    """
    if isinstance(out, torch.Tensor) and out.ndim >= 1:
        if not out.is_floating_point():
            raise ModelError(
                f"the model's output at t={t} must be a floating-point tensor, got {out.dtype}"
            )
        model_output(out, x, t)
    return out


def check_finite(x: torch.Tensor) -> torch.Tensor:
    """Flag, on x's device, whether every entry of x is finite (no host read).

    Parameters
    ----------
    x : torch.Tensor
        Any floating-point tensor.

    Returns
    -------
    torch.Tensor
        0-d bool, True iff x has no NaN/inf; read it on the host once per step, with the
        step's other flags.

    Examples
    --------
    >>> import torch
    >>> from glass_core.transitions import check_finite
    >>> bool(check_finite(torch.tensor([1.0, float("nan")])))
    False
    """
    return torch.isfinite(x).all()


class Transition(ABC):
    """A step x_t -> x_t' of a Denoiser's sampler; ODE, SDE and Glass implement it.

    Subclasses implement `_step`, `nfe_per_call` and `nfe`; a call validates its arguments,
    runs `_step` and leaves the finite flag in `last_finite` (see `__call__`).

    Attributes
    ----------
    last_finite : torch.Tensor or None
        0-d bool on the particles' device: whether the last call's output is all finite.

    Examples
    --------
    >>> import torch
    >>> from glass_core.models import from_callable
    >>> from glass_core.schedules import Schedule
    >>> from glass_core.transitions import ODE
    >>> rf = Schedule.rectified_flow()
    >>> model = from_callable(lambda x, t: 0 * x + 2, schedule=rf, prediction="x1")
    >>> ODE()(model, torch.ones(2, 3), 0.5, 1.0)
    tensor([[2., 2., 2.],
            [2., 2., 2.]])
    """

    @property
    @abstractmethod
    def nfe_per_call(self) -> int:
        """Model evaluations of one call without `denoised` reuse (upper bound; see `nfe`)."""

    @abstractmethod
    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        """Count the model evaluations of one call from t to t_next.

        Parameters
        ----------
        schedule : Schedule
            The model's schedule.
        t, t_next : float
            The step.
        reuse : bool
            `denoised` is given (saves one evaluation).

        Returns
        -------
        int
            Exact evaluations of that call.
        """

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

    # the device flag of the last call (see __call__), and what re-running it needs
    last_finite: torch.Tensor | None = None
    _replay: tuple | None = None

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: _random.Generator = None,
        *,
        denoised: torch.Tensor | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        """Take one transition x_t -> x_t'.

        Parameters
        ----------
        model : Denoiser
            The pretrained model (schedule, denoise, velocity).
        x : torch.Tensor
            Particles at t, [B, ...].
        t, t_next : float
            0 <= t < t_next <= 1, t < 1.
        generator : torch.Generator, list of them, or None
            The noise source (a list: one generator per equal row group).
        denoised : torch.Tensor, optional
            A precomputed D_t(x) (saves the first model call).
        check : bool
            True: read the device flag `last_finite` once at the end and raise on NaN/inf
            (the transition's only host read). False: no host read at all; the caller reads
            `transition.last_finite` (a 0-d bool tensor, a new one per call: keep the
            reference) in its own per-step transfer and, if it is False, calls
            `raise_nonfinite()`, which re-runs the call with per-call checks to blame the
            model or the transition. Until the next call the transition then keeps references
            to x and denoised for that re-run.

        Returns
        -------
        torch.Tensor
            Particles at t_next, shaped like x.

        Raises
        ------
        InvalidInputError
            Bad arguments, or (check=True) NaN/inf made by the transition from finite model
            outputs.
        ModelError
            (check=True) the model returned NaN/inf or a non-floating tensor.
        """
        tt, tn = self._validate(model, x, t, t_next, denoised)
        states = _random.snapshot(generator)
        out = self._run(_FloatOutputs(model), x, tt, tn, generator, denoised)
        self.last_finite = check_finite(out)
        self._replay = (model, x, tt, tn, generator, states, denoised)
        if check:
            if not bool(self.last_finite):  # the one host read
                self.raise_nonfinite()
            self._replay = None
        return out

    def raise_nonfinite(self) -> NoReturn:
        """Explain a call whose `last_finite` is False: raise the error blaming its culprit.

        The call is re-run (same noise when the generator is a torch.Generator or a list of
        them) with every model input and output checked.

        Raises
        ------
        ModelError
            The model returned NaN/inf from a finite input (naming the time and rows).
        InvalidInputError
            The transition made NaN/inf from finite model outputs, or no call is recorded.
        """
        if self._replay is None:
            raise InvalidInputError(f"{self!r}: raise_nonfinite needs a call with check=False")
        model, x, t, t_next, generator, states, denoised = self._replay
        self._replay = None
        checked = CheckedModel(model)
        if denoised is not None:
            checked.record(denoised, t, x)
        out = self._run(checked, x, t, t_next, _random.replayed(generator, states), denoised)
        checked.raise_if_bad(out, self, t, t_next)
        raise InvalidInputError(
            f"{self!r} produced NaN/inf during the transition t={t} -> t_next={t_next}; a re-run "
            "with per-call checks did not reproduce it (its noise could not be replayed)"
        )

    def _run(self, model, x, t, t_next, generator, denoised) -> torch.Tensor:  # type: ignore[no-untyped-def]
        try:
            return self._step(model, x, t, t_next, generator, denoised)
        except (ZeroDivisionError, OverflowError) as e:  # float64 scalar coefficient math
            raise InvalidInputError(
                f"{self!r}: the transition t={t} -> t_next={t_next} is numerically out of range "
                f"({e})"
            ) from e

    @staticmethod
    def _validate(model, x, t, t_next, denoised) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        if not (hasattr(model, "schedule") and hasattr(model, "denoise")):
            raise InvalidInputError(
                "model must be a Denoiser (schedule, denoise, velocity), "
                f"got {type(model).__name__}"
            )
        check_batch(x)
        tt, tn = check_times(t, t_next)  # 0 <= t < t_next <= 1
        if denoised is not None and (
            not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape
        ):
            got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else denoised
            raise InvalidInputError(
                f"denoised must have the shape of x {tuple(x.shape)}, got {got}"
            )
        return tt, tn
