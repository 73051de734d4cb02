"""The compiled inner loop of `Glass(compile=True)`.

One `torch.compile(fullgraph=True)` graph from the start of the inner flow to its end, the
network included (docs/gpu.md). Everything that changes from one transition to the next enters
as a tensor (the solver's plan, the model input weights, the model's query times and the
conversion of its prediction to D), so one graph serves every (t, t') pair and grid step of a
run; the graph has no host read, draws no noise (the noise comes in) and has static shapes,
which also makes it CUDA-graph capturable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from glass_core.errors import InvalidInputError
from glass_core.models.base import conversion_coefficients, query_time
from glass_core.schedules import Schedule
from glass_core.transitions.solvers import Evaluator, InnerSolver


def _integrate(
    inner: InnerSolver,
    predict: Any,
    xw: torch.Tensor,
    y: torch.Tensor,
    d0: torch.Tensor,
    tables: torch.Tensor,
    plan: Any,
) -> torch.Tensor:
    """Run the solver's integration with D_j = A_j inp + B_j predict(inp, tq_j) at point j > 0."""
    in_x, in_y, tq, a, b = tables.unbind(0)
    batch = xw.shape[0]

    def call(j: int, inp: torch.Tensor) -> torch.Tensor:
        pred = predict(inp, tq[j].expand(batch))
        return a[j] * inp + b[j] * pred.to(inp.dtype)

    return inner.integrate(y, Evaluator(lambda: d0, call, xw, in_x, in_y), plan)


def compile_integrate() -> Any:
    """Compile `_integrate` with fullgraph=True and static shapes (one graph per Glass).

    Returns
    -------
    callable
        The compiled `_integrate` (compiles on its first call).
    """
    return torch.compile(_integrate, fullgraph=True, dynamic=False)


def network(model: Any) -> Any:
    """Find the model of a wrapper chain that predicts on tensor times.

    Wrappers keep their model as `_model`; the innermost one with `predict(x, t)` and
    `prediction` (a `DenoiserBase`) is returned.

    Parameters
    ----------
    model : Any
        The model handed to the transition, possibly wrapped.

    Returns
    -------
    Any
        The `DenoiserBase` inside.

    Raises
    ------
    InvalidInputError
        No model of the chain predicts on tensor times.
    """
    m, innermost = model, model
    while m is not None:
        if "prediction" in vars(m) and callable(getattr(type(m), "predict", None)):
            return m
        innermost, m = m, vars(m).get("_model")
    # the innermost model is the user's: the outer ones are the transition's own wrappers
    raise InvalidInputError(
        f"compile=True needs a DenoiserBase model (predict(x, t) on tensor times, e.g. "
        f"glass_core.models.from_callable), got {type(innermost).__name__}"
    )


def count_calls(model: Any, n: int) -> None:
    """Add the graph's `n` network calls to the counters (`nfe`) of the wrappers around it.

    Parameters
    ----------
    model : Any
        The model handed to the transition, possibly wrapped.
    n : int
        Network calls made inside the graph.
    """
    m, seen = model, set()
    while m is not None:
        own = vars(m)
        meter = own.get("meter")  # glass_core.meter.Meter: the counters of every wrapper kind
        if meter is not None and id(meter) not in seen:
            seen.add(id(meter))
            meter.evaluations += n
        elif isinstance(own.get("nfe"), int):  # a user's wrapper with a plain counter
            m.nfe += n
        m = own.get("_model")


def point_tables(
    schedule: Schedule,
    net: Any,
    in_x: np.ndarray,
    in_y: np.ndarray,
    times: np.ndarray,
    like: torch.Tensor,
) -> torch.Tensor:
    """Tabulate (in_x, in_y, query time, A, B) per point as a [5, M] tensor like `like`.

    D = A inp + B predict(inp, tq), the model asked at query_time (docs/math.md §4). Computed
    in float64 on the host, one copy to the device.

    Parameters
    ----------
    schedule : Schedule
        The model's schedule.
    net : Any
        The `DenoiserBase` (its `prediction` fixes A, B and the query times).
    in_x, in_y : numpy.ndarray
        Per-point model input weights.
    times : numpy.ndarray
        Per-point times t* the estimate is wanted at.
    like : torch.Tensor
        Gives the dtype and device.

    Returns
    -------
    torch.Tensor
        [5, M].
    """
    tq = np.asarray(query_time(schedule, times, net.prediction), dtype=np.float64)
    a, b = conversion_coefficients(schedule, tq, net.prediction, "x1")
    rows = [in_x, in_y, tq, np.broadcast_to(a, tq.shape), np.broadcast_to(b, tq.shape)]
    return torch.as_tensor(np.stack(rows), dtype=like.dtype).to(like.device)


def tensors(plan: Any, like: torch.Tensor) -> Any:
    """Turn every list of floats in the plan into a tensor (like's dtype and device).

    Numbers, booleans and None stay Python values (they fix the graph's structure, not its
    values).

    Parameters
    ----------
    plan : Any
        A solver's plan (nested tuples of lists and scalars).
    like : torch.Tensor
        Gives the dtype and device.

    Returns
    -------
    Any
        The plan with tensors for lists.
    """
    if isinstance(plan, tuple):
        return tuple(tensors(p, like) for p in plan)
    if isinstance(plan, list):
        return torch.as_tensor(plan, dtype=like.dtype).to(like.device)
    return plan
