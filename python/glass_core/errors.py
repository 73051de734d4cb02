"""Exception hierarchy of glass_core.

``GlassError``, ``InvalidInputError`` and ``DegenerateWeightsError`` are created by the native core
(``glass_core._core``) and raised from Rust; the reward/model errors below are Python-only.

* ``GlassError(Exception)``: base class of every glass_core error.
* ``InvalidInputError(GlassError, ValueError)``: bad shape / dtype / value / range; the message
  names the argument.
* ``DegenerateWeightsError(GlassError, ValueError)``: a NaN log-weight (the message gives the first
  bad index) or a row whose log-weights are all -inf (the message gives the row).
* ``RewardError(InvalidInputError)``: a reward returned NaN/inf or the wrong shape; the message
  lists the offending particle indices.
* ``UnsupportedModelError(GlassError, ValueError)``: a model/pipeline glass_core cannot drive.
"""

from __future__ import annotations

from glass_core._core import DegenerateWeightsError, GlassError, InvalidInputError

__all__ = [
    "DegenerateWeightsError",
    "GlassError",
    "InvalidInputError",
    "RewardError",
    "UnsupportedModelError",
]


class RewardError(InvalidInputError):
    """A reward was NaN/inf or had the wrong shape; the message lists offending particle indices."""


class UnsupportedModelError(GlassError, ValueError):
    """A model or pipeline that glass_core cannot drive."""
