"""Exception hierarchy of glass_core.

``GlassError``, ``InvalidInputError`` and ``DegenerateWeightsError`` are created by the native core
(``glass_core._core``) and raised from Rust; the reward/model errors below are Python-only.

* ``GlassError(Exception)``: base class of every glass_core error.
* ``InvalidInputError(GlassError, ValueError)``: bad shape / dtype / value / range; the message
  names the argument and ``arg`` holds its name (``InvalidInputError(msg, arg="seed")``; None when
  not given), so a caller can map it to its own flag without reading the message.
* ``DegenerateWeightsError(GlassError, ValueError)``: a NaN log-weight (the message gives the first
  bad index) or a row whose log-weights are all -inf (the message gives the row).
* ``RewardError(InvalidInputError)``: a reward returned NaN/inf or the wrong shape; the message
  lists the offending particle indices.
* ``UnsupportedModelError(GlassError, ValueError)``: a model/pipeline glass_core cannot drive.
* ``ModelError(GlassError, RuntimeError)``: the model (denoiser) returned NaN/inf or a
  non-floating-point output; the message names the time and the rows.
* ``RankFailedError(GlassError, RuntimeError)``: a rank of a sharded run raised; raised on every
  rank with ``ranks`` and ``step``.
* ``DistributedTimeoutError(GlassError, TimeoutError)``: a collective of a sharded run did not
  complete in time (a rank died, hangs or left).

A Rust panic in the native core (a bug) surfaces as ``GlassError``; Ctrl-C during a long native
call as ``KeyboardInterrupt``. Nothing else leaves glass_core's public functions for bad input.
"""

from __future__ import annotations

from glass_core._core import DegenerateWeightsError, GlassError, InvalidInputError

__all__ = [
    "DegenerateWeightsError",
    "DistributedTimeoutError",
    "GlassError",
    "InvalidInputError",
    "ModelError",
    "RankFailedError",
    "RewardError",
    "UnsupportedModelError",
]


class RewardError(InvalidInputError):
    """A reward was NaN/inf or had the wrong shape; the message lists offending particle indices."""


class UnsupportedModelError(GlassError, ValueError):
    """A model or pipeline that glass_core cannot drive."""


class ModelError(GlassError, RuntimeError):
    """The model returned NaN/inf or a non-floating-point tensor.

    The model returned NaN/inf (or a non-floating-point tensor); the message names the time and
    the rows, so the model (or its inputs) is blamed rather than the reward downstream.
    """


class RankFailedError(GlassError, RuntimeError):
    """A rank raised during a sharded run.

    A rank raised during a sharded run; raised on every rank. ``ranks`` and ``step`` say where
    (step k is the transition t_{k-1} -> t_k; 0 is argument checking before the first one).
    """

    def __init__(self, message: str, ranks: list[int], step: int) -> None:
        super().__init__(message)
        self.ranks = ranks
        self.step = step


class DistributedTimeoutError(GlassError, TimeoutError):
    """A collective did not complete within ``Sharding.timeout`` (a rank died, hangs or left)."""
