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


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: _core.resample(np.zeros(3), "bogus", seed=0), "scheme"),  # type: ignore[arg-type]
        (lambda: _core.resample(np.zeros(3), seed=-1), "seed"),
        (lambda: _core.resample(np.zeros(3), seed=0, num_samples=0), "num_samples"),
        (lambda: _core.ess(np.array([0.0, np.inf])), "log_weights"),
        (lambda: _core.uniform_grid(0), "num_steps"),
        (lambda: _core.SMCState(1, 2, seeds=[1, 2]), "seeds"),
        (lambda: _core.SMCState(1, 2, seeds=0, ess_threshold=2.0), "ess_threshold"),
        (lambda: _core.SMCState(1, 2, seeds=0).step(np.zeros(3)), "log_potentials"),
        (lambda: _core.Schedule.cosine().alpha(2.0), "t"),
        (lambda: _core.Schedule.cosine().t_from_snr(-1.0), "snr"),
        (lambda: _core.Schedule.cosine().timestep_from_t(0.5), "schedule"),
        (lambda: _core.validate_time_grid([0.5, 0.2]), "time_grid"),
        (lambda: _core.glass_coefficients(_core.Schedule.cosine(), 0.1, 0.2, 2.0, 0.5), "rho"),
        (lambda: _core.glass_coefficients(_core.Schedule.cosine(), 0.1, 0.2, 0.5, 1.5), "s"),
    ],
)
def test_rust_raised_invalid_input_carries_the_argument_name(call: object, arg: str) -> None:
    with pytest.raises(errors.InvalidInputError) as info:
        call()  # type: ignore[operator]
    assert info.value.arg == arg, str(info.value)


def test_invalid_input_error_takes_arg_from_python_and_pickles_with_it() -> None:
    import pickle

    made = errors.InvalidInputError("lambda_ must be finite", arg="lambda_")
    again = pickle.loads(pickle.dumps(made))
    assert (again.arg, again.args, type(again)) == ("lambda_", made.args, errors.InvalidInputError)
    assert errors.InvalidInputError("no arg").arg is None
    assert errors.RewardError("bad reward", arg="reward").arg == "reward"
    assert isinstance(made, ValueError) and isinstance(made, errors.GlassError)
