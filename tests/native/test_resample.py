"""Resampling: invariants, unbiasedness with sample-size tolerances, seeding, inputs and errors."""

from __future__ import annotations

import math

import glass_core as gc
import numpy as np
import pytest
import torch
from glass_core import DegenerateWeightsError, InvalidInputError
from glass_core import weights as weights_module
from glass_core._core import RESAMPLING_SCHEMES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

SCHEMES = RESAMPLING_SCHEMES
# draws exactly one ancestor per particle (M = N)
ONE_PER_PARTICLE = ("killing",)

log_weight_arrays = arrays(
    np.float64,
    st.integers(1, 60),
    elements=st.one_of(
        st.floats(-30, 30, allow_nan=False), st.just(-math.inf), st.just(0.0), st.just(5.0)
    ),
).filter(lambda a: np.isfinite(a).any())


def weights_of(lw: np.ndarray) -> np.ndarray:
    w = np.exp(lw - lw.max())
    return w / w.sum()


def counts(idx: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(idx, minlength=n)


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=80, deadline=None)
@given(lw=log_weight_arrays, seed=st.integers(0, 2**64 - 1), extra=st.integers(-5, 5))
def test_invariants(scheme: str, lw: np.ndarray, seed: int, extra: int) -> None:
    n = len(lw)
    m = n if scheme in ONE_PER_PARTICLE else max(1, n + extra)
    idx = gc.resample(lw, scheme, seed=seed, num_samples=m)
    assert idx.dtype == np.int64 and idx.shape == (m,)
    assert idx.min() >= 0 and idx.max() < n
    c = counts(idx, n)
    assert c.sum() == m
    w = weights_of(lw)
    assert np.all(c[w == 0] == 0), "a zero-weight particle was selected"
    e = m * w
    if scheme in ("systematic", "ssp"):
        assert np.all(c >= np.floor(e - 1e-9)) and np.all(c <= np.ceil(e + 1e-9))
    elif scheme == "stratified":
        assert np.all(c >= np.floor(e - 1e-9) - 1) and np.all(c <= np.ceil(e + 1e-9) + 1)
    elif scheme == "residual":
        assert np.all(c >= np.floor(e - 1e-9))
    if scheme not in ("residual", "killing"):
        assert np.all(np.diff(idx) >= 0)  # sorted uniforms + merge walk -> sorted ancestors
    if scheme == "killing":  # a particle either keeps its own slot or is replaced
        kept = idx == np.arange(n)
        assert np.all(w[idx[~kept]] > 0)


def mean_count_deviation(idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """z-scores of the mean offspring counts over R replicate rows (idx [R, M]).

    The sd bound sqrt(max(M w (1 - w), 1/4) / R) dominates the per-count variance of the classic
    schemes (multinomial: M w (1-w); the others: at most that, or frac (1 - frac) <= 1/4);
    killing's can exceed it, so the sample variance is used where larger (R = 4000: it is within
    a few percent of the true variance, and a deterministic biased resampler has none).
    """
    r, m = idx.shape
    n = len(w)
    c = np.stack([np.bincount(row, minlength=n) for row in idx])
    var = np.maximum(np.maximum(m * w * (1 - w), 0.25), c.var(0))
    sd = np.sqrt(var / r)
    return (c.mean(0) - m * w) / sd


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("m", [10, 7, 23])
def test_unbiased(scheme: str, m: int) -> None:
    if scheme in ONE_PER_PARTICLE and m != 10:
        pytest.skip("this scheme draws exactly one ancestor per particle")
    rng = np.random.default_rng(4)
    lw = rng.normal(scale=1.5, size=10)
    lw[3] = -math.inf
    w = weights_of(lw)
    reps = 4000
    batch = np.tile(lw, (reps, 1))
    idx = gc.resample(batch, scheme, seed=123, num_samples=m)  # rows use independent streams
    z = mean_count_deviation(idx, w)
    assert np.all(np.abs(z) < 5.0), (scheme, z)


def test_unbiasedness_check_has_power() -> None:
    """The test above must catch a biased resampler: deterministic rounding of M w."""
    rng = np.random.default_rng(4)
    lw = rng.normal(scale=1.5, size=10)
    w = weights_of(lw)
    m, reps = 10, 4000
    c = np.round(m * w).astype(int)
    row = np.repeat(np.arange(10), c)[:m]
    row = np.pad(row, (0, m - len(row)), mode="edge")
    z = mean_count_deviation(np.tile(row, (reps, 1)), w)
    assert np.any(np.abs(z) >= 5.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_seeding(scheme: str) -> None:
    rng = np.random.default_rng(0)
    lw = rng.normal(size=50)
    a = gc.resample(lw, scheme, seed=7)
    np.testing.assert_array_equal(a, gc.resample(lw, scheme, seed=7))
    b = np.stack([lw, lw, lw])
    per_row = gc.resample(b, scheme, seed=[7, 8, 9])
    for r, s in enumerate((7, 8, 9)):
        np.testing.assert_array_equal(per_row[r], gc.resample(lw, scheme, seed=s))
    streams = gc.resample(b, scheme, seed=7)
    np.testing.assert_array_equal(streams[0], a)  # int seed: row 0 is stream 0 == 1-D call
    draws = {tuple(gc.resample(lw, scheme, seed=s)) for s in range(20)}
    assert len(draws) > 1
    assert not all(np.array_equal(streams[0], streams[r]) for r in (1, 2))
    # numpy integer seeds work
    np.testing.assert_array_equal(gc.resample(lw, scheme, seed=np.int64(7)), a)


def test_batched_rows_are_row_local() -> None:
    rng = np.random.default_rng(1)
    lw = rng.normal(size=(6, 40))
    lw[2, :] = -math.inf
    lw[2, 5] = 0.0
    idx = gc.resample(lw, "systematic", seed=3, num_samples=17)
    assert idx.shape == (6, 17) and idx.dtype == np.int64
    assert np.all(idx[2] == 5)
    assert idx.min() >= 0 and idx.max() < 40


def test_extreme_and_tiny_cases() -> None:
    lw = np.zeros(1000)
    lw[417] = 800.0  # exp overflow territory without log-space handling
    for s in SCHEMES:
        assert np.all(gc.resample(lw, s, seed=0) == 417)
        assert np.all(gc.resample([0.0], s, seed=1) == 0)
    # uniform weights: systematic/residual give every particle exactly one child
    u = np.full(64, -3.0)
    np.testing.assert_array_equal(gc.resample(u, "systematic", seed=5), np.arange(64))
    np.testing.assert_array_equal(np.sort(gc.resample(u, "residual", seed=5)), np.arange(64))
    np.testing.assert_array_equal(gc.resample(u, "ssp", seed=5), np.arange(64))
    np.testing.assert_array_equal(gc.resample(u, "killing", seed=5), np.arange(64))
    # a CDF that rounds below 1: the last positive-weight particle is the ceiling
    lw = np.array([0.0, -1e-300, -745.0, -math.inf])
    for s in SCHEMES:
        for seed in range(50):
            assert gc.resample(lw, s, seed=seed).max() <= 2


def test_inputs_numpy_and_torch() -> None:
    rng = np.random.default_rng(2)
    lw = rng.normal(size=33)
    ref = gc.resample(lw, "multinomial", seed=9)
    f32 = lw.astype(np.float32)
    ref32 = gc.resample(f32.astype(np.float64), "multinomial", seed=9)
    np.testing.assert_array_equal(gc.resample(f32, "multinomial", seed=9), ref32)
    np.testing.assert_array_equal(gc.resample(torch.from_numpy(lw), "multinomial", seed=9), ref)
    np.testing.assert_array_equal(gc.resample(lw.tolist(), "multinomial", seed=9), ref)
    t = torch.from_numpy(lw).requires_grad_(True)
    np.testing.assert_array_equal(gc.resample(t, "multinomial", seed=9), ref)
    # non-contiguous numpy and torch
    two = np.stack([lw, lw], axis=1)  # [33, 2]; column is strided
    np.testing.assert_array_equal(gc.resample(two[:, 0], "multinomial", seed=9), ref)
    np.testing.assert_array_equal(gc.resample(two.T, "multinomial", seed=[9, 9])[1], ref)
    tt = torch.from_numpy(two)[:, 1]
    assert not tt.is_contiguous()
    np.testing.assert_array_equal(gc.resample(tt, "multinomial", seed=9), ref)
    # half precision is cast (to float32, then float64)
    for dt in (torch.bfloat16, torch.float16):
        th = torch.from_numpy(lw).to(dt)
        expect = gc.resample(th.float().numpy().astype(np.float64), "multinomial", seed=9)
        np.testing.assert_array_equal(gc.resample(th, "multinomial", seed=9), expect)
    # big-endian and integer arrays are converted
    np.testing.assert_array_equal(gc.resample(lw.astype(">f8"), "multinomial", seed=9), ref)
    gc.resample(np.arange(5), seed=0)
    # the output feeds torch.index_select directly
    x = torch.arange(33.0)
    out = torch.index_select(x, 0, torch.from_numpy(ref))
    assert out.shape == (33,)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"log_weights": [0.0, math.nan]}, DegenerateWeightsError, "index 1"),
        ({"log_weights": [[0.0, 0.0], [-math.inf, -math.inf]]}, DegenerateWeightsError, "row 1"),
        ({"log_weights": [-math.inf] * 3}, DegenerateWeightsError, "-inf"),
        ({"log_weights": [0.0, math.inf]}, InvalidInputError, r"\+inf"),
        ({"log_weights": []}, InvalidInputError, "log_weights"),
        ({"log_weights": np.zeros((2, 2, 2))}, InvalidInputError, "log_weights"),
        ({"log_weights": np.zeros((0, 3))}, InvalidInputError, "log_weights"),
        ({"log_weights": np.zeros(3, complex)}, InvalidInputError, "log_weights"),
        ({"log_weights": "abc"}, InvalidInputError, "log_weights"),
        ({"log_weights": torch.zeros(3, device="meta")}, InvalidInputError, "log_weights"),
        ({"log_weights": torch.zeros(3, dtype=torch.complex64)}, InvalidInputError, "real"),
        ({"log_weights": [0.0, 1.0], "scheme": "bogus"}, InvalidInputError, "scheme"),
        ({"log_weights": [0.0, 1.0], "seed": -1}, InvalidInputError, "seed"),
        ({"log_weights": [0.0, 1.0], "seed": 2**64}, InvalidInputError, "seed"),
        ({"log_weights": [0.0, 1.0], "seed": 1.5}, InvalidInputError, "seed"),
        ({"log_weights": [0.0, 1.0], "seed": "7"}, InvalidInputError, "seed"),
        ({"log_weights": [0.0, 1.0], "seed": None}, InvalidInputError, "seed"),
        ({"log_weights": np.zeros((3, 2)), "seed": [1, 2]}, InvalidInputError, "seed"),
        ({"log_weights": [0.0, 1.0], "num_samples": 0}, InvalidInputError, "num_samples"),
        ({"log_weights": [0.0, 1.0], "num_samples": -3}, InvalidInputError, "num_samples"),
        ({"log_weights": [0.0, 1.0], "num_samples": True}, InvalidInputError, "num_samples"),
        ({"log_weights": [0.0, 1.0], "num_samples": 2.5}, InvalidInputError, "num_samples"),
    ],
)
def test_bad_inputs(kwargs: dict, exc: type, match: str) -> None:
    args = {"scheme": "systematic", "seed": 0} | kwargs
    lw = args.pop("log_weights")
    scheme = args.pop("scheme")
    with pytest.raises(exc, match=match):
        gc.resample(lw, scheme, **args)


def test_error_classes() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidInputError, gc.GlassError)
    assert issubclass(DegenerateWeightsError, ValueError)
    assert issubclass(DegenerateWeightsError, gc.GlassError)
    from glass_core.errors import RewardError, UnsupportedModelError

    assert issubclass(RewardError, InvalidInputError)
    assert issubclass(UnsupportedModelError, gc.GlassError)
    assert issubclass(UnsupportedModelError, ValueError)


def test_large_n_releases_gil_and_is_correct() -> None:
    import threading

    lw = np.random.default_rng(0).normal(size=200_000)
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(gc.resample(lw, seed=1))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(results[0], results[1])
    c = counts(results[0], len(lw))
    e = len(lw) * weights_of(lw)
    assert np.all(c >= np.floor(e - 1e-9)) and np.all(c <= np.ceil(e + 1e-9))


def crafted_boundary_weights(n: int) -> np.ndarray:
    """One heavy particle, then particles so light that adding one to a running sum near the heavy
    weight changes nothing (weight ratio e^-36.75 < half an ulp of 1), with zero weights (-inf)
    at the ends of the four blocks the merge interleaves. A CDF restarted per block from
    separately summed offsets leaves gaps at those ends that the -inf particles would own."""
    lw = np.full(n, -36.75)
    lw[0] = 0.0
    b = n // 4
    lw[[b - 1, 2 * b - 1, 3 * b - 1]] = -np.inf
    return lw


# seeds for which the earlier per-block CDF selected particle 1999999 (a -inf) at n = 4e6
@pytest.mark.parametrize(("scheme", "seed"), [("systematic", 885), ("stratified", 864)])
def test_crafted_block_boundary_never_selects_zero_weight(scheme: str, seed: int) -> None:
    lw = crafted_boundary_weights(4_000_000)
    idx = gc.resample(lw, scheme, seed=seed)
    assert not np.isinf(lw[idx]).any()
    # the light particles' total mass (3/4 of N e^-36.75 ~ 3e-10) still gets its share
    assert counts(idx, len(lw))[0] >= len(lw) - 1


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["systematic", "stratified"])
def test_crafted_block_boundary_1e8(scheme: str) -> None:
    lw = crafted_boundary_weights(10**8)
    for seed in (1, 2):  # systematic with seed 1 selected particle 49999999 before
        idx = gc.resample(lw, scheme, seed=seed)
        assert not np.isinf(lw[idx]).any(), (scheme, seed)


@pytest.mark.parametrize("scheme", ["systematic", "stratified"])
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(8, 3000),
    heavy=st.floats(0.0, 40.0),
    zero_frac=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_zero_weights_never_selected_at_any_boundary(
    scheme: str, n: int, heavy: float, zero_frac: float, seed: int, data: st.DataObject
) -> None:
    """Random -inf particles (always including the ends of the merge's blocks) among light
    particles next to heavy ones: no -inf is ever selected."""
    rng = np.random.default_rng(seed % 2**32)
    lw = rng.uniform(-40.0, 0.0, n)
    lw[rng.integers(0, n, max(1, n // 50))] = heavy
    lw[rng.random(n) < zero_frac] = -np.inf
    block = -(-n // 4)
    lw[[min(n - 1, k * block - 1) for k in (1, 2, 3)]] = -np.inf
    lw[0] = heavy
    m = data.draw(st.integers(1, 3 * n))
    idx = gc.resample(lw, scheme, seed=seed, num_samples=m)
    assert not np.isinf(lw[idx]).any()


def test_scheme_registry_is_the_native_one_and_killing_needs_m_equal_n() -> None:
    assert set(RESAMPLING_SCHEMES) >= {"systematic", "ssp", "killing"}
    assert weights_module.SCHEMES == RESAMPLING_SCHEMES
    with pytest.raises(InvalidInputError) as info:
        gc.resample(np.zeros(4), "nope", seed=0)
    assert info.value.arg == "scheme" and all(s in str(info.value) for s in RESAMPLING_SCHEMES)
    with pytest.raises(InvalidInputError) as info:
        gc.resample(np.zeros(4), "killing", seed=0, num_samples=5)
    assert info.value.arg == "num_samples"
    for scheme in RESAMPLING_SCHEMES:  # SMCState takes every registered scheme
        st = gc.SMCState(2, 6, scheme=scheme, seeds=0)
        st.step(np.random.default_rng(0).normal(size=(2, 6)), resample=True)
        assert st.scheme == scheme
