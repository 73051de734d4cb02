"""Property-based tests of every public function of the native core (glass_core._core):
arbitrary arguments (NaN, inf, huge, negative, wrong types) either give a result satisfying the
function's invariants or raise a GlassError subclass — never another exception, a panic or an
abort. (resample / normalize_log_weights / ess have their own property tests in
test_resample.py and test_weights.py; here they are fuzzed with hostile arguments.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from glass_core import _core
from glass_core.errors import GlassError
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 1e-300, 1e300, -0.0, 0.5, math.nextafter(1.0, 0.0)]),
)
unit_float = st.floats(0.0, 1.0)
size_like = st.one_of(
    st.integers(-3, 2000),
    st.integers(2**60, 2**70),
    st.sampled_from([True, 2.0, "3", None, np.int64(4)]),
)
hostile_arrays = arrays(
    np.float64,
    st.integers(0, 30),
    elements=st.floats(allow_nan=True, allow_infinity=True),
)
SCHEDULES = [
    _core.Schedule.rectified_flow(),
    _core.Schedule.cosine(),
    _core.Schedule.shifted(_core.Schedule.rectified_flow(), 3.0),
    _core.Schedule.vp_from_betas(1e-4, 0.02, 50),
]
schedules = st.sampled_from(SCHEDULES)


def typed(call):
    """Run `call`; a GlassError is an answer, anything else fails the test."""
    try:
        return call(), None
    except GlassError as e:
        return None, e


@settings(derandomize=True, max_examples=150, deadline=None)
@given(schedule=schedules, t=st.one_of(any_float, hostile_arrays))
def test_schedule_functions(schedule, t) -> None:
    for name in ("alpha", "sigma", "d_alpha", "d_sigma", "log_snr"):
        out, err = typed(lambda n=name: getattr(schedule, n)(t))
        if err is None:
            assert np.all(~np.isnan(out)), name
    alpha, err = typed(lambda: schedule.alpha(t))
    if err is None:
        assert np.all((np.asarray(alpha) >= 0) & (np.asarray(alpha) <= 1))
        sigma = np.asarray(schedule.sigma(t))
        assert np.all((sigma >= 0) & (sigma <= 1))


@settings(derandomize=True, max_examples=150, deadline=None)
@given(schedule=schedules, t=unit_float)
def test_snr_round_trips(schedule, t) -> None:
    lsnr = schedule.log_snr(t)
    back = schedule.t_from_log_snr(lsnr)
    if math.isfinite(lsnr) and 1e-6 < t < 1 - 1e-6:
        assert abs(schedule.log_snr(back) - lsnr) < 1e-6 * max(1.0, abs(lsnr))
    out, err = typed(lambda: schedule.t_from_snr(math.exp(lsnr) if lsnr < 700 else math.inf))
    assert err is None and 0.0 <= out <= 1.0


@settings(derandomize=True, max_examples=150, deadline=None)
@given(schedule=schedules, t=any_float, t_next=any_float)
def test_rho_ddpm(schedule, t, t_next) -> None:
    for call in (lambda: schedule.rho_ddpm(t, t_next), lambda: _core.rho_ddpm(schedule, t, t_next)):
        out, err = typed(call)
        if err is None:
            assert 0.0 <= out <= 1.0


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    schedule=schedules,
    t=any_float,
    t_next=any_float,
    rho=st.one_of(any_float, st.floats(-1, 1)),
    s=st.one_of(any_float, hostile_arrays, arrays(np.float64, 4, elements=unit_float)),
    sigma0=any_float,
)
def test_glass_coefficients(schedule, t, t_next, rho, s, sigma0) -> None:
    out, err = typed(lambda: _core.glass_coefficients(schedule, t, t_next, rho, s, sigma0))
    if err is None:
        for key in ("gamma", "abar", "sbar", "alpha_t", "sigma_t"):
            assert math.isfinite(out[key]), key
        assert np.all(np.asarray(out["t_star"]) >= 0) and np.all(np.asarray(out["t_star"]) <= 1)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(num_steps=size_like, a=any_float, b=any_float, shift=any_float)
def test_grids(num_steps, a, b, shift) -> None:
    for call in (
        lambda: _core.uniform_grid(num_steps, a, b),
        lambda: _core.shifted_grid(num_steps, shift),
    ):
        out, err = typed(call)
        if err is None:
            assert len(out) == num_steps + 1 and np.all(np.diff(out) > 0)
            assert np.array_equal(_core.validate_time_grid(out), out)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(grid=st.one_of(hostile_arrays, st.lists(any_float, max_size=8)))
def test_validate_time_grid(grid) -> None:
    out, err = typed(lambda: _core.validate_time_grid(grid))
    if err is None:
        assert len(out) >= 2 and np.all(np.diff(out) > 0) and out[0] >= 0 and out[-1] <= 1


@settings(derandomize=True, max_examples=150, deadline=None)
@given(args=st.tuples(any_float, any_float, any_float, any_float, any_float))
def test_dynamic_shift_mu(args) -> None:
    out, err = typed(lambda: _core.dynamic_shift_mu(*args))
    if err is None:
        assert math.isfinite(out)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    num_groups=size_like,
    num_particles=size_like,
    seeds=st.one_of(st.integers(-1, 2**65), st.lists(st.integers(0, 9), max_size=3), st.just(b"1")),
    threshold=st.one_of(st.none(), any_float),
    scheme=st.sampled_from(["systematic", "residual", "bogus"]),
)
def test_smcstate_construction(num_groups, num_particles, seeds, threshold, scheme) -> None:
    state, err = typed(
        lambda: _core.SMCState(
            num_groups, num_particles, seeds=seeds, ess_threshold=threshold, scheme=scheme
        )
    )
    if err is None:
        assert state.log_weights.shape == (num_groups, num_particles)
        assert np.allclose(np.exp(state.log_weights).sum(axis=1), 1.0, atol=1e-12)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    g=arrays(np.float64, (2, 5), elements=st.floats(allow_nan=True, allow_infinity=True)),
    resample=st.sampled_from([None, True, False]),
)
def test_smcstate_step_any_potentials(g, resample) -> None:
    state = _core.SMCState(2, 5, seeds=1, ess_threshold=0.5)
    state.step(np.zeros((2, 5)))
    before = (state.log_weights.copy(), state.log_evidence.copy(), state.num_steps)
    out, err = typed(lambda: state.step(g, resample=resample))
    if err is None:
        assert np.all((out.ancestors >= 0) & (out.ancestors < 5))
        assert np.allclose(np.exp(state.log_weights).sum(axis=1), 1.0, atol=1e-12)
    else:
        assert np.array_equal(state.log_weights, before[0])
        assert np.array_equal(state.log_evidence, before[1]) and state.num_steps == before[2]


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    lw=st.one_of(hostile_arrays, st.lists(any_float, max_size=5), st.just("x"), st.just(None)),
    scheme=st.sampled_from(["systematic", "multinomial", "nope"]),
    seed=st.one_of(st.integers(-5, 2**66), st.just(True), st.just(b"1"), st.just([1, 2])),
    num_samples=st.one_of(st.none(), size_like),
)
def test_weight_functions_with_hostile_arguments(lw, scheme, seed, num_samples) -> None:
    typed(lambda: _core.normalize_log_weights(lw))
    typed(lambda: _core.ess(lw))
    out, err = typed(lambda: _core.resample(lw, scheme, seed=seed, num_samples=num_samples))
    if err is None:
        w = np.asarray(lw, dtype=np.float64)
        assert np.all(np.isfinite(w[out]))


@pytest.mark.parametrize("t", [1e-300, 1.1125369292536007e-308, 5e-324])
def test_vp_table_d_alpha_keeps_its_limit_at_tiny_times(t: float) -> None:
    """Found by test_schedule_functions when it drew examples at random: at t = 1.1e-308 (below
    the smallest normal double) d_alpha was NaN (alpha underflowed to 0 while l' = 2/t overflowed),
    at 1e-300 it was 0. Below the table alpha / sigma = exp(l_0 / 2) t / t_0 (l_0 the noisiest
    node's log-SNR), so near 0 d_alpha tends to exp(l_0 / 2) / t_0."""
    s = _core.Schedule.vp_from_betas(1e-4, 0.02, 50)
    abar0 = s.alphas_cumprod()[-1]  # diffusers order: the noisiest entry last
    t0 = 1.0 / 51
    assert s.d_alpha(t) == pytest.approx(np.sqrt(abar0 / (1 - abar0)) / t0, rel=1e-12)
