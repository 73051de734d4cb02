"""Log-weight normalisation, ESS and the native SMCState bookkeeping."""

from __future__ import annotations

import math

import glass_core as gc
import numpy as np
import pytest
import torch
from glass_core import DegenerateWeightsError, GlassError, InvalidInputError, SMCState
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp

finite_rows = arrays(np.float64, st.integers(1, 50), elements=st.floats(-700, 700, allow_nan=False))


@settings(max_examples=100, deadline=None)
@given(lw=finite_rows, shift=st.floats(-1e3, 1e3))
def test_normalize_matches_logsumexp_and_is_shift_invariant(lw: np.ndarray, shift: float) -> None:
    out, lm = gc.normalize_log_weights(lw)
    assert out.dtype == np.float64 and out.shape == lw.shape
    np.testing.assert_allclose(out, lw - logsumexp(lw), atol=1e-9)
    assert lm == pytest.approx(logsumexp(lw) - math.log(len(lw)), abs=1e-9)
    assert logsumexp(out) == pytest.approx(0.0, abs=1e-12)
    out2, lm2 = gc.normalize_log_weights(lw + shift)
    np.testing.assert_allclose(out2, out, atol=1e-9)
    assert lm2 == pytest.approx(lm + shift, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(lw=finite_rows)
def test_ess_formula_and_range(lw: np.ndarray) -> None:
    w = np.exp(lw - lw.max())
    e = gc.ess(lw)
    assert isinstance(e, float)
    assert e == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-12)
    assert 1 - 1e-12 <= e <= len(lw) * (1 + 1e-12)


@pytest.mark.parametrize("magnitude", [1e16, 1e300, -1e300, 1.7e308])
def test_normalisation_keeps_precision_at_any_magnitude(magnitude: float) -> None:
    lw = np.full(4, magnitude)
    lw[1] = np.nextafter(magnitude, 0.0)
    out, log_mean = gc.normalize_log_weights(lw)
    assert abs(np.exp(out).sum() - 1.0) < 1e-12
    assert lw.max() - math.log(4) <= log_mean <= lw.max()  # between the max and max - log N
    state = gc.SMCState(1, 4, ess_threshold=0.0, seeds=0)
    state.step(lw, resample=False)
    assert abs(np.exp(state.log_weights).sum() - 1.0) < 1e-12


def test_batched_and_special_values() -> None:
    lw = np.array([[0.0, 1.0, -math.inf], [5.0, 5.0, 5.0]])
    out, lm = gc.normalize_log_weights(lw)
    assert out.shape == (2, 3) and lm.shape == (2,)
    assert out[0, 2] == -math.inf
    np.testing.assert_allclose(lm, [math.log((1 + math.e) / 3), 5.0], rtol=1e-14)
    np.testing.assert_allclose(gc.ess(lw), [(1 + math.e) ** 2 / (1 + math.e**2), 3.0])
    assert gc.ess(np.array([0.0, -math.inf, -math.inf])) == pytest.approx(1.0)
    # large magnitudes stay finite (log-space)
    assert gc.ess(np.array([1e4, 1e4])) == pytest.approx(2.0)
    # torch inputs, incl. half precision and GPU-less devices
    t = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.bfloat16)
    np.testing.assert_allclose(gc.ess(t), gc.ess(np.array([[0.0, 1.0, 2.0]])), rtol=1e-12)
    o32, _ = gc.normalize_log_weights(np.array([0.0, 1.0], np.float32))
    assert o32.dtype == np.float64


@pytest.mark.parametrize("fn", [gc.normalize_log_weights, gc.ess])
@pytest.mark.parametrize(
    ("lw", "exc", "match"),
    [
        ([0.0, 1.0, math.nan], DegenerateWeightsError, "NaN at index 2"),
        ([[0.0, 1.0], [math.nan, 0.0]], DegenerateWeightsError, r"index 0 \(row 1\)"),
        ([-math.inf, -math.inf], DegenerateWeightsError, "all log_weights are -inf"),
        ([[0.0, 0.0], [-math.inf, -math.inf]], DegenerateWeightsError, "row 1"),
        ([0.0, math.inf], InvalidInputError, r"log_weights contains \+inf"),
        ([], InvalidInputError, "log_weights"),
        (np.zeros((2, 0)), InvalidInputError, "log_weights"),
        (np.zeros((1, 2, 3)), InvalidInputError, "log_weights"),
        (5.0, InvalidInputError, "log_weights"),
    ],
)
def test_weight_errors(fn, lw, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        fn(lw)


# ---------------------------------------------------------------------------------------------
# SMCState


def test_carries_weights_when_not_resampling() -> None:
    s = SMCState(2, 5, seeds=0, ess_threshold=0.0)
    g = np.log(np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0]]))
    r1 = s.step(g)
    assert not r1.any_resampled and not r1.resampled.any()
    np.testing.assert_array_equal(r1.ancestors, np.tile(np.arange(5), (2, 1)))
    r2 = s.step(g, resample=None)
    assert not r2.any_resampled
    # weights after two steps without resampling are proportional to exp(2 g)
    np.testing.assert_allclose(s.log_weights, 2 * g - logsumexp(2 * g, axis=1, keepdims=True))
    # evidence = log mean exp(sum of potentials)
    np.testing.assert_allclose(s.log_evidence, np.log(np.mean(np.exp(2 * g), axis=1)))
    # an explicit resample=True now resamples with the *carried* weights (exp(3 g))
    r3 = s.step(np.zeros((2, 5)), resample=True)
    assert r3.resampled.all()
    np.testing.assert_allclose(s.log_weights, -math.log(5))
    c = np.bincount(r3.ancestors[0], minlength=5)
    e = 5 * np.exp(2 * g[0]) / np.exp(2 * g[0]).sum()
    assert np.all(c >= np.floor(e)) and np.all(c <= np.ceil(e))


def test_adaptive_threshold_and_results() -> None:
    n = 100
    s = SMCState(3, n, seeds=[1, 2, 3], ess_threshold=0.5)
    g = np.zeros((3, n))
    g[0, :5] = 10.0  # ESS ~ 5 -> resample
    g[1, :] = np.linspace(0, 0.1, n)  # ESS ~ N -> carry
    g[2, ::2] = -math.inf  # ESS = N/2 exactly: not < 0.5 N -> carry
    r = s.step(g)
    np.testing.assert_array_equal(r.resampled, [True, False, False])
    assert r.any_resampled
    assert r.ess[0] < 6 and r.ess[1] > 99 and r.ess[2] == pytest.approx(50.0)
    assert r.ancestors.dtype == np.int64 and r.flat_ancestors.dtype == np.int64
    np.testing.assert_array_equal(
        r.flat_ancestors, (r.ancestors + n * np.arange(3)[:, None]).reshape(-1)
    )
    assert set(np.unique(r.ancestors[0])) <= set(range(5))
    np.testing.assert_array_equal(r.ancestors[1], np.arange(n))
    assert s.ess_history.shape == (1, 3)
    np.testing.assert_allclose(s.ess_history[0], r.ess)
    assert s.num_steps == 1
    # resample=False never resamples even at ESS ~ 1
    g2 = np.full((3, n), -math.inf)
    g2[:, 1] = 0.0  # (particle 0 of group 2 already has weight 0)
    r2 = s.step(g2, resample=False)
    assert not r2.any_resampled
    assert s.ess_history.shape == (2, 3)


def test_no_threshold_means_always() -> None:
    s = SMCState(1, 8, seeds=5)
    r = s.step(np.zeros(8))  # [N] accepted when B == 1
    assert r.resampled.all()


def test_evidence_known_answer_gaussian() -> None:
    """x_i ~ N(0,1), G = log N(y; x, 1): the evidence estimates log N(y; 0, 2)."""
    n, y = 200_000, 0.7
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    g = -0.5 * (y - x) ** 2 - 0.5 * math.log(2 * math.pi)
    s = SMCState(1, n, seeds=0, track_genealogy=False)
    s.step(g)
    exact = -0.25 * y**2 - 0.5 * math.log(4 * math.pi)
    w = np.exp(g)
    se = w.std() / math.sqrt(n) / w.mean()  # delta-method sd of the log of the mean
    assert abs(s.log_evidence[0] - exact) < 5 * se
    # a second step with a constant potential adds exactly that constant
    s.step(np.full(n, -1.25))
    assert s.log_evidence[0] == pytest.approx(math.log(w.mean()) - 1.25, abs=1e-12)


def test_evidence_is_unbiased_over_seeds_with_resampling() -> None:
    """Two steps with resampling between: exp(log Z) averages to the exact evidence."""
    n, reps = 4, 4000
    g1 = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    g2 = np.log(np.array([1.0, 2.0, 3.0, 4.0]))
    exact = np.mean(np.exp(g1)) * np.sum(np.exp(g1) / np.exp(g1).sum() * np.exp(g2))
    s = SMCState(reps, n, seeds=11, scheme="multinomial")
    s.step(np.tile(g1, (reps, 1)), resample=True)
    # potentials follow the particles: index g2 by ancestor
    anc = s.genealogy()[0]
    s.step(g2[anc], resample=True)
    z = np.exp(s.log_evidence)
    assert abs(z.mean() - exact) < 5 * z.std() / math.sqrt(reps)


def test_genealogy_and_trace() -> None:
    b, n, steps = 2, 6, 5
    s = SMCState(b, n, seeds=[3, 4])
    rng = np.random.default_rng(1)
    for _ in range(steps):
        s.step(rng.normal(scale=2.0, size=(b, n)), resample=True)
    gen = s.genealogy()
    tr = s.trace()
    assert gen.shape == (steps, b, n) and tr.shape == (steps + 1, b, n)
    assert gen.dtype == np.int64 and tr.dtype == np.int64
    np.testing.assert_array_equal(tr[-1], np.tile(np.arange(n), (b, 1)))
    for k in range(steps - 1, -1, -1):
        for r in range(b):
            np.testing.assert_array_equal(tr[k, r], gen[k, r][tr[k + 1, r]])
    no = SMCState(1, 3, seeds=0, track_genealogy=False)
    no.step(np.zeros(3))
    with pytest.raises(GlassError, match="track_genealogy"):
        no.genealogy()
    with pytest.raises(GlassError, match="track_genealogy"):
        no.trace()


def test_same_seeds_same_results_and_torch_potentials() -> None:
    rng = np.random.default_rng(5)
    gs = rng.normal(size=(4, 2, 30))
    a, b = SMCState(2, 30, seeds=9), SMCState(2, 30, seeds=9)
    for g in gs:
        ra, rb = a.step(g), b.step(torch.from_numpy(g).to(torch.float32))
        assert ra.ancestors.shape == rb.ancestors.shape
    a2 = SMCState(2, 30, seeds=9)
    for g in gs:
        a2.step(g)
    np.testing.assert_array_equal(a.genealogy(), a2.genealogy())
    # seeds list: group b behaves like a single-group state seeded with seeds[b]
    pair = SMCState(2, 30, seeds=[5, 6])
    solo = SMCState(1, 30, seeds=[6])
    for g in gs:
        pr = pair.step(g)
        sr = solo.step(g[1:2])
        np.testing.assert_array_equal(pr.ancestors[1], sr.ancestors[0])


def test_step_errors_leave_state_unchanged() -> None:
    s = SMCState(2, 3, seeds=0, ess_threshold=0.0)
    s.step(np.log([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]))
    before = (s.log_weights.copy(), s.log_evidence.copy(), s.num_steps)
    bad = [
        (
            np.array([[0.0, math.nan, 0.0], [0.0] * 3]),
            DegenerateWeightsError,
            r"NaN at index \[0, 1\]",
        ),
        (np.array([[0.0] * 3, [0.0, 0.0, math.inf]]), InvalidInputError, r"\+inf"),
        (np.array([[0.0] * 3, [-math.inf] * 3]), DegenerateWeightsError, "row 1"),
        (np.zeros((3, 2)), InvalidInputError, "log_potentials"),
        (np.zeros(3), InvalidInputError, "log_potentials"),
        ("x", InvalidInputError, "log_potentials"),
    ]
    for g, exc, match in bad:
        with pytest.raises(exc, match=match):
            s.step(g)
    np.testing.assert_array_equal(s.log_weights, before[0])
    np.testing.assert_array_equal(s.log_evidence, before[1])
    assert s.num_steps == before[2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_groups": 0}, "num_groups"),
        ({"num_particles": 0}, "num_particles"),
        ({"scheme": "bogus"}, "scheme"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"ess_threshold": math.nan}, "ess_threshold"),
        ({"seeds": [1, 2, 3]}, "seeds"),
        ({"seeds": -4}, "seeds"),
        ({"seeds": None}, "seeds"),
    ],
)
def test_smcstate_constructor_errors(kwargs: dict, match: str) -> None:
    args = {"num_groups": 2, "num_particles": 4, "seeds": 0} | kwargs
    ng, npart = args.pop("num_groups"), args.pop("num_particles")
    with pytest.raises(InvalidInputError, match=match):
        SMCState(ng, npart, **args)


def test_properties_and_repr() -> None:
    s = SMCState(2, 4, scheme="residual", ess_threshold=0.25, seeds=[1, 2])
    assert s.num_groups == 2 and s.num_particles == 4 and s.scheme == "residual"
    assert s.ess_threshold == 0.25 and s.track_genealogy
    np.testing.assert_allclose(s.log_weights, -math.log(4))
    assert s.log_evidence.tolist() == [0.0, 0.0] and s.ess_history.shape == (0, 2)
    assert "SMCState" in repr(s)
    r = s.step(np.zeros((2, 4)))
    assert "StepResult" in repr(r)
    with pytest.raises(AttributeError):
        r.any_resampled = True  # type: ignore[misc]


def test_shared_state_across_threads_is_serialised() -> None:
    """Steps from several threads on one SMCState wait for each other (no 'Already borrowed');
    with the same potentials every step, the result equals the same number of steps in a row."""
    import threading

    n, steps_per_thread, threads = 50_000, 3, 4
    g = np.random.default_rng(1).normal(size=(2, n))
    shared = SMCState(2, n, seeds=5, ess_threshold=0.5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(steps_per_thread):
                shared.step(g)
                _ = shared.log_weights, shared.num_steps, repr(shared)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    alone = SMCState(2, n, seeds=5, ess_threshold=0.5)
    for _ in range(steps_per_thread * threads):
        alone.step(g)
    assert shared.num_steps == alone.num_steps
    assert np.array_equal(shared.log_weights, alone.log_weights)
    assert np.array_equal(shared.log_evidence, alone.log_evidence)
    assert np.array_equal(shared.trace(), alone.trace())
