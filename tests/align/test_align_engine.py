"""FKSampler, the init/step engine under fk_steering: stepped by hand it equals fk_steering bit for
bit, and a state saved with torch.save mid-run resumes to the same bits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from align_fixtures import GRID, ExactKernel, gen, gmm
from glass_core.align import FKSampler, FKState, Lookahead, fk_steering
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward, QuadraticReward
from glass_core.transitions import SDE, Glass

LIN = LinearReward([1.0, 0.5])
QUAD = QuadraticReward([1.0, -1.0], 1.0)

# (sampler options, init options without the generator, generator seeds: int or list)
CASES = {
    "diff-every": ({}, {}, 0),
    "max-quad": ({"potential": "max", "reward": QUAD}, {}, 1),
    "sum-every2": ({"potential": "sum", "resample_every": 2}, {}, 2),
    "ess-final-residual": (
        {"ess_threshold": 0.5, "final_resample": True, "resampling": "residual"},
        {},
        3,
    ),
    "groups": ({}, {}, [4, 5, 6]),
    "glass-window": (
        {"transition": Glass(inner_steps=2), "resample_window": (0.3, 0.7), "max_batch": 5},
        {},
        8,
    ),
    "sde-no-genealogy": ({"transition": SDE(), "lambda_": 3.0, "track_genealogy": False}, {}, 9),
    "lookahead": ({"potential": Lookahead(3, ExactKernel())}, {}, 12),
    "lookahead-glass": ({"potential": Lookahead(2, Glass(inner_steps=2))}, {"num_groups": 2}, 13),
}
FIELDS = (
    "samples",
    "rewards",
    "log_weights",
    "ancestors",
    "nfe",
    "total_nfe",
    "log_evidence",
    "ess_history",
    "resampled",
    "step_times",
)


def _generator(seeds):
    return [gen(s) for s in seeds] if isinstance(seeds, list) else gen(seeds)


def _sampler(opts: dict) -> FKSampler:
    opts = dict(opts)
    reward = opts.pop("reward", LIN)
    opts.setdefault("transition", ExactKernel())
    return FKSampler(gmm(), reward, time_grid=GRID, **opts)


def _init(fk: FKSampler, init: dict, seeds) -> FKState:
    return fk.init(16, shape=(2,), dtype=torch.float64, generator=_generator(seeds), **init)


def assert_same(a, b) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), name
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        else:
            assert x == y, name


@pytest.mark.parametrize("case", list(CASES))
def test_stepped_by_hand_equals_fk_steering(case):
    opts, init, seeds = CASES[case]
    fk = _sampler(opts)
    state = _init(fk, init, seeds)
    times = [state.time]
    while not state.done:
        state = fk.step(state)
        times.append(state.time)
    assert times == list(GRID)
    by_hand = fk.result(state)
    kw = {k: v for k, v in opts.items() if k != "reward"}
    kw.setdefault("transition", ExactKernel())
    ref = fk_steering(
        gmm(), opts.get("reward", LIN), time_grid=GRID, num_particles=16, shape=(2,),
        dtype=torch.float64, generator=_generator(seeds), progress=False, **kw, **init,
    )  # fmt: skip
    assert_same(by_hand, ref)


@pytest.mark.parametrize("case", ["diff-every", "groups", "ess-final-residual", "lookahead"])
@pytest.mark.parametrize("stop", [0, 2, 4, 5])  # 5: a finished run (its final step replayed)
def test_saved_state_resumes_to_the_same_bits(case, stop):
    opts, init, seeds = CASES[case]
    fk = _sampler(opts)
    state = _init(fk, init, seeds)
    for _ in range(stop):
        state = fk.step(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    while not state.done:  # the original run continues...
        state = fk.step(state)
    straight = fk.result(state)
    buf.seek(0)
    resumed = torch.load(buf, weights_only=False)  # ...and so does its saved copy
    assert resumed.step == stop
    while not resumed.done:
        resumed = fk.step(resumed)
    assert_same(fk.result(resumed), straight)


def test_state_exposes_particles_weights_ess_ancestors_and_time():
    fk = _sampler({"ess_threshold": 0.3})
    state = _init(fk, {"num_groups": 2}, 0)
    assert state.particles.shape == (32, 2) and state.time == 0.0 and not state.done
    torch.testing.assert_close(state.log_weights, torch.full((2, 16), -np.log(16.0)).double())
    np.testing.assert_allclose(state.ess, [16.0, 16.0])
    np.testing.assert_array_equal(state.ancestors, np.tile(np.arange(16), (2, 1)))
    state = fk.step(fk.step(state))
    assert state.time == GRID[2] and state.ess_history.shape == (2, 2)
    lw = state.log_weights
    torch.testing.assert_close(torch.logsumexp(lw, dim=1), torch.zeros(2, dtype=torch.float64))
    w = lw.exp()
    np.testing.assert_allclose(state.ess, (1.0 / (w**2).sum(dim=1)).numpy(), rtol=1e-12)
    assert state.ancestors.shape == (2, 16)
    assert ((state.ancestors >= 0) & (state.ancestors < 16)).all()


def test_changed_particles_are_continued_from():
    fk = _sampler({})
    a = fk.step(_init(fk, {}, 0))
    b = fk.step(_init(fk, {}, 0))
    b.particles = b.particles + 1.0  # an edit between steps is what the next step moves
    a, b = fk.step(a), fk.step(b)
    assert not torch.equal(a.particles, b.particles)


def test_step_and_result_refuse_the_wrong_state():
    fk = _sampler({})
    state = _init(fk, {}, 0)
    with pytest.raises(InvalidInputError, match=r"^`state` is at step 0 of 5: not done$") as e:
        fk.result(state)
    assert e.value.arg == "state"  # type: ignore[attr-defined]
    state = fk.step(state)
    with pytest.raises(InvalidInputError, match=r"^`state` is at step 1 of 5: not done$"):
        fk.result(state)
    while not state.done:
        state = fk.step(state)
    done = r"^`state` is done \(every transition has run\): call result\(state\)$"
    with pytest.raises(InvalidInputError, match=done) as e:
        fk.step(state)
    assert e.value.arg == "state"  # type: ignore[attr-defined]


def _fk_result(ancestors, ess, times, n):
    from glass_core.align import FKResult

    grouped = np.asarray(ess).ndim == 2
    lw = torch.zeros((np.asarray(ess).shape[1], n) if grouped else (n,), dtype=torch.float64)
    return FKResult(
        samples=torch.zeros((*lw.shape, 2)), rewards=torch.zeros(lw.shape), log_weights=lw,
        ancestors=ancestors, nfe=1, total_nfe=n, model_time=0.0, reward_time=0.0,
        wall_time=0.0, log_evidence=0.0, ess_history=np.asarray(ess),
        resampled=np.ones(np.asarray(ess).shape, dtype=bool), step_times=np.asarray(times),
    )  # fmt: skip


def test_diagnostics_on_known_genealogies():
    # 4 particles, 3 steps: after step 2 every particle descends from particle 1 of step 0
    gen_ = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [0, 1, 2, 3]])
    res = _fk_result(gen_, [3.0, 1.2, 1.0], [0.2, 0.6, 1.0], 4)
    assert res.lineage_roots() == 1
    assert _fk_result(gen_[:2], [3.0, 1.2], [0.2, 0.6], 4).lineage_roots() == 1
    assert _fk_result(gen_[:1], [3.0], [0.2], 4).lineage_roots() == 2
    assert _fk_result(gen_[2:], [3.0], [0.2], 4).lineage_roots() == 4
    assert res.early_collapse() == []  # collapsed only at t = 0.6 >= 0.5
    assert res.early_collapse(before=0.7) == [(0, 0.6, 1.2)]
    grouped = _fk_result(
        np.stack([gen_, np.tile(np.arange(4), (3, 1))], axis=1),
        [[3.0, 1.1], [1.2, 1.4], [1.0, 4.0]],
        [0.2, 0.4, 1.0],
        4,
    )
    np.testing.assert_array_equal(grouped.lineage_roots(), [1, 4])
    assert grouped.early_collapse() == [(0, 0.4, 1.2), (1, 0.2, 1.1)]
    # two particles can collapse onto one; a single particle has nothing to collapse
    pair = _fk_result(np.array([[0, 0], [0, 1]]), [1.1, 2.0], [0.2, 1.0], 2)
    assert pair.early_collapse() == [(0, 0.2, 1.1)]
    assert _fk_result(np.array([[0], [0]]), [1.0, 1.0], [0.2, 1.0], 1).early_collapse() == []
    msg = r"^lineage_roots needs the genealogy: run with track_genealogy=True$"
    with pytest.raises(InvalidInputError, match=msg):
        _fk_result(None, [3.0], [0.2], 4).lineage_roots()


def test_diagnostics_bounds_defaults_and_types():
    """early_collapse counts t strictly before `before` and ESS strictly below `ess_below`
    (default 1.5), compared in float64 whatever the history's dtype; lineage_roots is a Python
    int for one group and int64 [B] for groups (none too)."""
    gen_ = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [0, 1, 2, 3]])
    res = _fk_result(gen_, [3.0, 1.2, 1.0], [0.2, 0.6, 1.0], 4)
    assert res.early_collapse(before=0.6) == []  # t = 0.6 is not before 0.6
    assert res.early_collapse(before=0.6 + 1e-12) == [(0, 0.6, 1.2)]
    assert res.early_collapse(ess_below=1.2, before=0.7) == []  # ESS 1.2 is not below 1.2
    assert _fk_result(gen_, [2.0, 1.6, 1.0], [0.2, 0.4, 1.0], 4).early_collapse() == []
    # ESS stored in float32: 1.1f is below a threshold a hair above it (not in float32)
    e = np.float32(1.1)
    f32 = _fk_result(gen_, np.array([3.0, e, 1.0], dtype=np.float32), [0.2, 0.4, 1.0], 4)
    assert f32.early_collapse(ess_below=float(e) + 1e-12) == [(0, 0.4, float(e))]
    assert type(res.lineage_roots()) is int
    grouped = _fk_result(np.stack([gen_, gen_], axis=1), [[3.0, 3.0]] * 3, [0.2, 0.4, 1.0], 4)
    assert grouped.lineage_roots().dtype == np.int64
    empty = _fk_result(np.zeros((3, 0, 4), dtype=np.int64), np.zeros((3, 0)), [0.2, 0.4, 1.0], 4)
    roots = empty.lineage_roots()
    assert roots.shape == (0,) and roots.dtype == np.int64


def test_best_of_a_grouped_result_is_each_groups_best():
    from glass_core.align import SamplingResult

    rewards = torch.tensor([[0.0, 5.0, 1.0], [2.0, -1.0, 0.5]])  # B = 2 groups of N = 3
    samples = torch.arange(12.0).reshape(2, 3, 2)
    res = SamplingResult(
        samples=samples, rewards=rewards, log_weights=torch.zeros(2, 3, dtype=torch.float64),
        ancestors=None, nfe=1, total_nfe=6, model_time=0.0, reward_time=0.0, wall_time=0.0,
    )  # fmt: skip
    assert torch.equal(res.best(), torch.stack([samples[0, 1], samples[1, 0]]))
    one = SamplingResult(
        samples=samples[1], rewards=rewards[1], log_weights=torch.zeros(3, dtype=torch.float64),
        ancestors=None, nfe=1, total_nfe=3, model_time=0.0, reward_time=0.0, wall_time=0.0,
    )  # fmt: skip
    assert torch.equal(one.best(), samples[1, 0])


def test_lineage_roots_equals_the_native_trace():
    fk = _sampler({"resampling": "multinomial"})
    state = _init(fk, {"num_groups": 3}, 7)
    while not state.done:
        state = fk.step(state)
    roots = [np.unique(row).size for row in np.asarray(state.smc.native.trace())[0]]
    np.testing.assert_array_equal(fk.result(state).lineage_roots(), roots)


def test_nonfinite_rows_are_listed_up_to_ten_then_counted():
    """The one row-listing rule of both blame paths (the transitions' and the engine's)."""
    from glass_core.align._finite import _rows
    from glass_core.transitions.base import finite_rows, listed_rows

    v = torch.zeros(16, 2)
    v[[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15], 1] = float("nan")
    assert _rows(v) == "[0, 2, 3, 4, 5, 6, 7, 8, 9, 10] and 3 more"
    assert _rows(v[:3]) == "[0, 2]"
    assert (
        listed_rows(finite_rows(v), limit=12)
        == "[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13] and 1 more"
    )


def test_a_state_saved_after_a_failed_step_leaves_out_the_replay_aid():
    """A step that raised keeps its start (to replay it) on the live state; a saved copy does
    not carry it (nor the particles and generator states it holds)."""
    ok = _sampler({})
    state = ok.step(_init(ok, {}, 0))
    assert state.proposed_from is None  # a step that succeeded keeps nothing
    fk = FKSampler(gmm(), lambda z: z[:, 0] / 0.0 * 0.0, transition=ExactKernel(), time_grid=GRID)
    state = fk.init(8, shape=(2,), dtype=torch.float64, generator=gen(0))
    with pytest.raises(RewardError):
        fk.step(state)
    assert state.proposed_from is not None and state.step == 0
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    assert saved.proposed_from is None and state.proposed_from is not None
    assert torch.equal(saved.particles, state.particles) and saved.step == 0


def test_sampler_defaults_and_single_group_result_types():
    """FKSampler does not profile unless asked; a single group's log-evidence is a float and its
    total NFE an int; a state rewound to before its last step is not done, rewards or not."""
    fk = FKSampler(gmm(), LIN, transition=ExactKernel(), time_grid=GRID)
    state = _init(fk, {}, 0)
    while not state.done:
        state = fk.step(state)
    res = fk.result(state)
    assert np.isnan(res.model_time) and np.isnan(res.reward_time)
    assert type(res.log_evidence) is float and type(res.total_nfe) is int
    assert res.total_nfe == res.nfe * 16
    state.step -= 1
    with pytest.raises(InvalidInputError, match=r"^`state` is at step 4 of 5: not done$"):
        fk.result(state)


def test_the_resampling_scheme_reaches_the_native_bookkeeping():
    """Same seeds, another scheme: other ancestors (the scheme is not left at its default)."""
    runs = {}
    for scheme in ("systematic", "multinomial"):
        fk = _sampler({"resampling": scheme})
        state = _init(fk, {}, 3)
        while not state.done:
            state = fk.step(state)
        runs[scheme] = fk.result(state).ancestors
    assert not np.array_equal(runs["systematic"], runs["multinomial"])


def test_fresh_particles_refuse_a_device_without_data():
    fk = _sampler({})
    with pytest.raises(InvalidInputError) as err:
        fk.init(4, shape=(2,), generator=gen(0), device="meta")
    assert err.value.arg == "device"  # type: ignore[attr-defined]


def test_shape_and_generator_checks_say_what_they_got():
    from glass_core.align._common import check_shape, resolve_groups

    assert check_shape(3) == (3,)
    msg = r"^`shape` must be a tuple of positive ints \(one sample's shape\), got 2\.5$"
    with pytest.raises(InvalidInputError, match=msg) as err:
        check_shape(2.5)
    assert err.value.arg == "shape"  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match=r"a list of them, got str$"):
        resolve_groups("seed", None)


def test_a_sharded_runs_state_is_not_saved():
    """Only a single-process run's state pickles; a sharded run's says what to do instead."""
    from types import SimpleNamespace

    fk = _sampler({})
    state = _init(fk, {}, 0)
    state.storage = SimpleNamespace()  # any strategy but the single-process one
    with pytest.raises(InvalidInputError) as err:
        torch.save(state, io.BytesIO())
    assert str(err.value) == (
        "the state of a sharded FK run (process_group=...) cannot be saved: save each rank's "
        "particles instead"
    )
