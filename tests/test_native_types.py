"""Typed results of the native core: GlassCoefficients fields, its item access, and the cached
exception types (the classes exported by glass_core.errors)."""

from __future__ import annotations

import numpy as np
import pytest
from glass_core import _core, errors
from glass_core.schedules import RectifiedFlow, glass_coefficients


def test_glass_coefficients_is_typed_and_item_access_reads_the_same_fields() -> None:
    s = np.array([0.0, 0.5])
    c = glass_coefficients(RectifiedFlow(), 0.2, 0.6, 0.4, s)
    assert isinstance(c, _core.GlassCoefficients)
    assert isinstance(c.gamma, float) and c.w1.shape == (2,) and c.w1.dtype == np.float64
    assert dict(c).keys() == set(c.keys())
    for key in list(c.keys()):
        np.testing.assert_array_equal(c[key], getattr(c, key))
    # rectified flow, closed forms of the scalar fields
    assert c.alpha_t == pytest.approx(0.2) and c.sigma_t == pytest.approx(0.8)
    with pytest.raises(KeyError):
        c["nope"]
    scalar = glass_coefficients(RectifiedFlow(), 0.2, 0.6, 0.4, 0.5)
    assert isinstance(scalar.w1, float) and scalar.w1 == pytest.approx(float(c.w1[1]))


def test_errors_are_the_exported_classes_every_time() -> None:
    for _ in range(2):
        with pytest.raises(errors.InvalidInputError) as info:
            _core.ess(np.array([1 + 2j]))
        assert type(info.value) is errors.InvalidInputError and isinstance(info.value, ValueError)
        with pytest.raises(errors.DegenerateWeightsError):
            _core.ess(np.array([np.nan, 0.0]))
