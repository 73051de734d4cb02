"""fk_steering against the exact tilted Gaussian-mixture target."""

import math
import re
import time

import numpy as np
import pytest
import torch
from align_fixtures import (
    GRID,
    ExactKernel,
    gen,
    gmm,
    nan_above_half,
    responsibilities,
    weighted_mean_and_se,
)
from glass_core.align import fk_steering
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward, QuadraticReward
from glass_core.transitions import SDE, Glass

LIN = LinearReward([1.0, 0.5])
QUAD = QuadraticReward([1.0, -1.0], 1.0)


def run(reward=LIN, **kw):
    args = dict(
        transition=ExactKernel(),
        num_particles=16,
        time_grid=GRID,
        shape=(2,),
        lambda_=1.0,
        generator=gen(0),
        dtype=torch.float64,
        progress=False,
    )
    args.update(kw)
    return fk_steering(gmm(), reward, **args)


# Unbiasedness of the evidence: E[exp(log Z_hat)] = Z for every potential and resampling schedule
# when the transitions are exact. 600 independent replicates (groups) of 16 particles; the
# tolerance is 4 standard errors of the replicate mean, and the test requires that standard error
# to be below 4% of Z so a biased estimator (weights dropped on non-resampling steps, a wrong final
# correction) cannot hide inside it.
@pytest.mark.parametrize("potential", ["diff", "max"])
@pytest.mark.parametrize(
    "schedule",
    [{}, {"resample_every": 2}, {"ess_threshold": 0.5}, {"resample_window": (0.3, 0.7)}],
    ids=["every", "every2", "ess", "window"],
)
@pytest.mark.parametrize("reward", [LIN, QUAD], ids=["linear", "quadratic"])
def test_evidence_unbiased(potential, schedule, reward):
    _check_evidence(reward, 1.0, potential=potential, **schedule)


# The sum potential over-tilts early (lambda * cumulative reward), so Z_hat is heavy-tailed with
# every-step resampling (replicate standard error up to 200% of Z at lambda = 1); it is still
# unbiased, checked where its variance is finite enough to test.
@pytest.mark.parametrize("reward", [LIN, QUAD], ids=["linear", "quadratic"])
def test_evidence_unbiased_sum_potential(reward):
    _check_evidence(reward, 0.5, potential="sum", resample_every=2)


def _check_evidence(reward, lam, **kw):
    target = gmm().tilted(reward.kind, reward.params, lam)
    res = run(reward, lambda_=lam, num_groups=600, generator=gen(7), **kw)
    z_hat = np.exp(res.log_evidence)
    z = math.exp(target.log_normalizer)
    se = z_hat.std(ddof=1) / math.sqrt(z_hat.size)
    assert se < 0.04 * z
    assert abs(z_hat.mean() - z) < 4 * se, (z_hat.mean(), z, se)


def test_ess_threshold_one_is_the_largest_accepted():
    """(0, 1] is closed at 1: resample whenever the ESS is below N, i.e. unless the weights are
    uniform (those of the first potential step are not: r varies over particles)."""
    res = run(ess_threshold=1.0)
    assert bool(res.resampled[:-1].all()) and not bool(res.resampled[-1])


@pytest.mark.parametrize(
    ("kw", "steps"),
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"resample_every": 2}, [2, 4, 5]),
        ({"resample_window": (float(GRID[2]), float(GRID[3]))}, [2, 3, 5]),  # closed ends
        ({"resample_every": 2, "resample_window": (0.3, 1.0)}, [2, 4, 5]),
        ({"resample_window": (0.5, 0.5)}, [5]),  # no grid time inside: the final step only
    ],
)
def test_potential_steps_follow_resample_every_and_window(kw, steps):
    """Potential steps are the t_k with k % resample_every == 0 and t_k in the closed window,
    plus always the final one; the result's step_times lists them (GRID = 0, 0.2, ..., 1)."""
    res = run(**kw)
    np.testing.assert_allclose(res.step_times, GRID[steps], rtol=0, atol=1e-15)
    assert res.ess_history.shape == (len(steps),)


def test_weights_are_carried_between_resampling_steps():
    res = run(resample_every=2, num_particles=64)
    # steps at t = 0.4, 0.8 resample, the final step (t = 1) does not
    np.testing.assert_allclose(res.step_times, [0.4, 0.8, 1.0])
    assert res.resampled.tolist() == [True, True, False]
    assert float(res.log_weights.exp().sum()) == pytest.approx(1.0)
    assert res.log_weights.std() > 0  # final correction kept as weights
    res = run(resample_every=2, num_particles=64, final_resample=True)
    assert res.resampled.tolist() == [True, True, True]
    assert torch.allclose(res.log_weights, torch.full((64,), -math.log(64), dtype=torch.float64))


def test_resample_window_includes_both_ends():
    """resample_window=(lo, hi) makes every grid time lo <= t_k <= hi a potential step, the ends
    included (here the grid's own 0.4 and 0.8), plus the final step."""
    res = run(resample_window=(float(GRID[2]), float(GRID[4])))
    np.testing.assert_allclose(res.step_times, GRID[2:])
    assert res.resampled.tolist() == [True, True, True, False]


def test_grouped_runs_report_resampling_and_ess_per_group():
    """With groups, each step's resampling flags and ESS come per group ([steps, groups])."""
    res = run(resample_every=2, num_particles=16, num_groups=3)
    assert res.resampled.tolist() == [[True] * 3, [True] * 3, [False] * 3]
    assert res.ess_history.shape == (3, 3) and np.all(res.ess_history <= 16)


def test_ess_threshold_skips_resampling_when_ess_high():
    res = run(lambda_=0.01, ess_threshold=0.5, num_particles=64)
    assert not res.resampled.any()
    assert np.all(res.ess_history > 0.5 * 64)


def _check_target(res, target, reward):
    mean_r, se_r = weighted_mean_and_se(reward(res.samples), res.log_weights)
    exact_r = float(reward(target.sample(400_000, generator=gen(99))).mean())
    resp = responsibilities(target, res.samples)
    for k in range(resp.shape[1]):
        occ, se_k = weighted_mean_and_se(resp[:, k], res.log_weights)
        assert abs(occ - float(target.weights[k])) < 4 * se_k + 0.01, (k, occ, target.weights)
    assert abs(mean_r - exact_r) < 4 * se_r + 0.02, (mean_r, exact_r, se_r)


# GLASS transitions (Euler, M = 10, rho_DDPM: the paper's 5 x 10 setting). The tolerance is the
# 4-sigma sampling error plus a small allowance for the inner-solver bias of M = 10.
@pytest.mark.parametrize("potential", ["diff", "max"])
def test_fk_glass_matches_tilted_target(potential):
    target = gmm().tilted(LIN.kind, LIN.params, 1.0)
    res = run(
        transition=Glass(rho="ddpm", inner_steps=10),
        num_particles=4000,
        potential=potential,
        generator=gen(3),
    )
    _check_target(res, target, LIN)
    # without steering the component occupancy is far from the tilted target (the test can fail)
    assert abs(float(target.weights[1]) - 0.5) > 0.3


# The quadratic tilt concentrates between components, where Euler M = 10 (covariance error ~0.1,
# docs/math.md §7) visibly biases the occupancy (0.57 vs 0.45), so this check uses M = 40.
def test_fk_glass_quadratic_target_and_log_z():
    target = gmm().tilted(QUAD.kind, QUAD.params, 2.0)
    res = run(
        QUAD,
        transition=Glass(rho=0.4, inner_steps=40),
        num_particles=4000,
        lambda_=2.0,
        generator=gen(4),
    )
    _check_target(res, target, QUAD)
    assert abs(res.log_evidence - target.log_normalizer) < 0.1


def test_nfe_counts_free_intermediate_reward():
    res = run(transition=Glass(inner_steps=4))
    assert res.nfe == 5 * 4 and res.total_nfe == 5 * 4 * 16
    res = run(transition=SDE(), resample_every=2)
    assert res.nfe == 5 * SDE().nfe_per_call


def test_seed_reproducible_and_seed_sensitive():
    a = run(transition=Glass(inner_steps=3), generator=gen(5))
    b = run(transition=Glass(inner_steps=3), generator=gen(5))
    c = run(transition=Glass(inner_steps=3), generator=gen(6))
    assert torch.equal(a.samples, b.samples) and torch.equal(a.log_weights, b.log_weights)
    assert np.array_equal(a.ancestors, b.ancestors) and a.log_evidence == b.log_evidence
    assert not torch.equal(a.samples, c.samples)


@pytest.mark.parametrize("transition", [Glass(inner_steps=3), SDE()], ids=["glass", "sde"])
def test_groups_equal_separate_runs(transition):
    seeds = [11, 12, 13]
    grouped = run(transition=transition, generator=[gen(s) for s in seeds], ess_threshold=0.9)
    assert grouped.samples.shape == (3, 16, 2) and grouped.log_evidence.shape == (3,)
    for b, s in enumerate(seeds):
        single = run(transition=transition, generator=gen(s), ess_threshold=0.9)
        torch.testing.assert_close(grouped.samples[b], single.samples, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grouped.log_weights[b], single.log_weights)
        assert grouped.log_evidence[b] == pytest.approx(single.log_evidence, rel=1e-12)
        np.testing.assert_array_equal(grouped.ancestors[:, b], single.ancestors)
        np.testing.assert_allclose(grouped.ess_history[:, b], single.ess_history)


def test_max_batch_bounds_model_calls_and_keeps_result():
    sizes = []
    model = gmm()
    inner = model.denoise

    class Spy:
        schedule = model.schedule

        def denoise(self, x, t):
            sizes.append(x.shape[0])
            return inner(x, t)

        def __getattr__(self, name):
            return getattr(model, name)

    kw = dict(
        transition=Glass(inner_steps=2),
        num_particles=20,
        time_grid=GRID,
        shape=(2,),
        dtype=torch.float64,
        progress=False,
    )
    a = fk_steering(Spy(), LIN, generator=gen(1), max_batch=7, **kw)
    assert max(sizes) <= 7
    b = fk_steering(model, LIN, generator=gen(1), **kw)
    torch.testing.assert_close(a.samples, b.samples)


def test_nan_reward_raises_with_indices():
    def bad(z):
        r = z.sum(1)
        r[[2, 5]] = float("nan")
        return r

    with pytest.raises(RewardError, match=r"indices \[2, 5\]"):
        run(bad)
    with pytest.raises(RewardError, match="shape"):
        run(lambda z: z.sum(1, keepdim=True))


def test_nan_reward_error_names_the_ranks_holding_the_bad_particles():
    """A sharded run's storage maps the bad particle indices to the ranks holding them; the
    error names both (one process: no ranks)."""
    from glass_core.align._common import nonfinite_reward_error

    values = np.array([0.5, np.nan, 1.0, np.inf, 2.0, -np.inf])
    seen = []

    def held_by(bad):  # two particles per rank
        seen.append(bad.tolist())
        return sorted({int(i) // 2 for i in bad})

    head = "reward returned NaN/inf at step 3 (t=0.25) for particle indices [1, 3, 5]"
    err = nonfinite_reward_error(values, 3, 0.25, held_by)
    assert isinstance(err, RewardError)
    assert str(err) == head + " (held by rank(s) 0, 1, 2)"
    assert seen == [[1, 3, 5]]
    assert str(nonfinite_reward_error(values, 3, 0.25, lambda bad: None)) == head
    assert str(nonfinite_reward_error(values, 3, 0.25)) == head


def _labelled_runs(progress: bool | None = True):
    from glass_core.align import (
        beam_search,
        best_of_n,
        reward_guidance,
        tempered_smc,
        value_decoding,
    )

    kw = dict(transition=SDE(), time_grid=GRID, shape=(2,), generator=gen(0))
    if progress is not None:  # None: the algorithm's default
        kw["progress"] = progress
    return {
        "FK steering": lambda: fk_steering(gmm(), LIN, num_particles=4, **kw),
        "best-of-N": lambda: best_of_n(gmm(), LIN, num_particles=4, **kw),
        "reward guidance": lambda: reward_guidance(gmm(), LIN, num_particles=4, scale=0.5, **kw),
        "value decoding": lambda: value_decoding(gmm(), LIN, num_particles=4, **kw),
        "beam search": lambda: beam_search(gmm(), LIN, beam_width=2, **kw),
        "tempered SMC": lambda: tempered_smc(gmm(), LIN, num_particles=4, **kw),
    }


@pytest.mark.parametrize("progress", [True, None], ids=["on", "default"])
@pytest.mark.parametrize("label", list(_labelled_runs()))
def test_progress_lines_name_the_algorithm(label, progress, capsys, monkeypatch):
    """Off a terminal, progress=True (the default) writes "<algorithm>: k/K steps" lines (one
    per interval, here every step, and a last one)."""
    from glass_core import _progress

    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    _labelled_runs(progress)[label]()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" steps")[0] for line in lines] == [f"{label}: {k}/5" for k in range(1, 6)]


@pytest.mark.parametrize("label", list(_labelled_runs()))
def test_progress_can_be_silenced(label, capsys, monkeypatch):
    """progress=False writes nothing, even where progress lines would come every step."""
    from glass_core import _progress

    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    _labelled_runs(progress=False)[label]()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


class BatchRecorder:
    """Forwards to a model, recording the rows and dtype of every call."""

    def __init__(self, model):
        self.model, self.schedule, self.calls = model, model.schedule, []

    def denoise(self, x, t):
        self.calls.append((x.shape[0], x.dtype))
        return self.model.denoise(x, t)

    def velocity(self, x, t):
        self.calls.append((x.shape[0], x.dtype))
        return self.model.velocity(x, t)


def _forwarding_runs():
    from glass_core.align import (
        beam_search,
        best_of_n,
        reward_guidance,
        tempered_smc,
        value_decoding,
    )

    return {
        "fk_steering": lambda m, **kw: fk_steering(m, LIN, num_particles=8, **kw),
        "best_of_n": lambda m, **kw: best_of_n(m, LIN, num_particles=8, **kw),
        "reward_guidance": lambda m, **kw: reward_guidance(
            m, LIN, num_particles=8, scale=0.5, **kw
        ),
        "value_decoding": lambda m, **kw: value_decoding(
            m, LIN, num_particles=4, num_candidates=2, **kw
        ),
        "beam_search": lambda m, **kw: beam_search(m, LIN, beam_width=4, num_candidates=2, **kw),
        "tempered_smc": lambda m, **kw: tempered_smc(m, LIN, num_particles=8, **kw),
    }


@pytest.mark.parametrize("algorithm", list(_forwarding_runs()))
def test_every_algorithm_honours_dtype_max_batch_and_profile(algorithm):
    """dtype sets the particles' (and the model inputs') dtype, max_batch bounds every model
    call's rows, profile=True measures the model time (NaN without it)."""
    kw = dict(transition=SDE(), time_grid=GRID, shape=(2,), generator=gen(0), progress=False)
    model = BatchRecorder(gmm())
    start = time.perf_counter()
    res = _forwarding_runs()[algorithm](model, dtype=torch.float64, max_batch=3, profile=True, **kw)
    elapsed = time.perf_counter() - start
    assert res.samples.dtype == torch.float64
    assert {d for _, d in model.calls} == {torch.float64}
    assert max(rows for rows, _ in model.calls) == 3
    assert 0 < res.model_time < res.wall_time <= elapsed
    plain = _forwarding_runs()[algorithm](gmm(), **kw)
    assert plain.samples.dtype == torch.float32 and math.isnan(plain.model_time)


FK_ERRORS = [
    ({"potential": "bogus"}, "potential", "must be a Potential or one of ('diff', 'max', 'sum', "),
    ({"potential": 3}, "potential", "must be a Potential or one of ('diff', 'max', 'sum', "),
    ({"lambda_": math.inf}, "lambda_", "must be a finite number, got inf"),
    ({"resampling": "nope"}, "resampling", "must be one of ('systematic', 'stratified', "),
    ({"ess_threshold": math.nan}, "ess_threshold", "must be a finite number, got nan"),
    ({"ess_threshold": "high"}, "ess_threshold", "must be a finite number, got 'high'"),
    ({"ess_threshold": 1.5}, "ess_threshold", "must be in (0, 1] (a fraction of N), got 1.5"),
    ({"ess_threshold": 0.0}, "ess_threshold", "must be in (0, 1] (a fraction of N), got 0.0"),
    ({"ess_threshold": "a"}, "ess_threshold", "must be a finite number, got 'a'"),
    ({"resample_every": 0}, "resample_every", "must be an integer >= 1, got 0"),
    (
        {"resample_window": (0.8, 0.2)},
        "resample_window",
        "must satisfy 0 <= start <= end <= 1, got (0.8, 0.2)",
    ),
    (
        {"resample_window": (0.2, 1.5)},
        "resample_window",
        "must satisfy 0 <= start <= end <= 1, got (0.2, 1.5)",
    ),
    (
        {"resample_window": 3},
        "resample_window",
        "must be a pair (start, end) of times in [0, 1], got 3",
    ),
    ({"final_resample": "yes"}, "final_resample", "must be True or False, got 'yes'"),
    (
        {"time_grid": [0.0, 0.6, 0.4, 1.0]},
        "time_grid",
        "is not a valid time grid: time_grid must be strictly increasing: time_grid[1] = 0.6 >= ",
    ),
    ({"generator": []}, "generator", "as a list must hold one torch.Generator per group"),
    ({"generator": [gen(0), 3]}, "generator", "as a list must hold one torch.Generator per group"),
    ({"proposal": "tilted"}, "proposal", "must be one of ('plain', 'twisted'), got 'tilted'"),
    (
        {"proposal": "twisted", "potential": "max"},
        "potential",
        "must be 'diff' with proposal='twisted', got 'max'",
    ),
]


@pytest.mark.parametrize(("kw", "name", "msg"), FK_ERRORS)
def test_bad_arguments_name_the_argument(kw, name, msg):
    """fk_steering's own checks (FKConfig) and the shared ones it reaches first through the
    public call: ``arg`` and the message's start name the argument and what was given."""
    with pytest.raises(InvalidInputError, match=f"^{re.escape(f'`{name}` {msg}')}") as info:
        run(**(kw | ({"transition": SDE()} if "proposal" in kw else {})))
    assert info.value.arg == name  # type: ignore[attr-defined]


SAMPLING_ERRORS = [
    ({"model": object()}, "model", "`model` must be a Denoiser (needs `schedule`), got object"),
    ({"reward": 3}, "reward", "`reward` must be callable, got int"),
    ({"transition": "sde"}, "transition", "`transition` must be callable, got str"),
    ({"num_particles": 0}, "num_particles", "`num_particles` must be an integer >= 1, got 0"),
    (
        {"world_size": 4},
        "num_particles",
        "`num_particles` (6) must be a multiple of the world size (4)",
    ),
    ({"generator": 5}, "generator", "`generator` must be None, a torch.Generator or a list"),
    ({"num_groups": 0}, "num_groups", "`num_groups` must be an integer >= 1, got 0"),
    (
        {"generator": [gen(1), gen(2)], "num_groups": 3},
        "num_groups",
        "`num_groups` is 3 but `generator` lists 2",
    ),
    (
        {"time_grid": [0.0, 0.5, 0.9]},
        "time_grid",
        "`time_grid` must start in [0, 1) (0: noise) and end at 1 (data), got [0.0, ..., 0.9]",
    ),
    ({"shape": (0,)}, "shape", "`shape` must be a non-empty tuple of positive ints, got (0,)"),
    ({"max_batch": 0}, "max_batch", "`max_batch` must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize(("kw", "arg", "msg"), SAMPLING_ERRORS)
def test_sampling_config_errors_name_the_argument_and_the_value(kw, arg, msg):
    """The checks every algorithm shares (SamplingConfig.validate, called by the storage with
    its world size): the error's ``arg`` and message name the argument and what was given."""
    from glass_core.align._config import SamplingConfig

    args = dict(
        model=gmm(), reward=LIN, transition=ExactKernel(), num_particles=6, time_grid=GRID,
        shape=(2,), max_batch=None, generator=None, num_groups=None,
    )  # fmt: skip
    shared = SamplingConfig.validate(**args, world_size=3)
    assert shared.local_particles == 2 and type(shared.local_particles) is int
    with pytest.raises(InvalidInputError, match=re.escape(msg)) as info:
        SamplingConfig.validate(**({"world_size": 1} | args | kw))
    assert info.value.arg == arg  # type: ignore[attr-defined]


class SeenGenerators(ExactKernel):
    """The exact kernel, recording the type of every generator argument it is handed."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        self.seen.add(type(generator))
        return super().__call__(model, x, t, t_next, list(generator), denoised=denoised)


def _tuple_runs():
    from glass_core.align import best_of_n, reward_guidance, value_decoding, value_estimate

    kw = dict(num_particles=3, time_grid=GRID, shape=(2,), progress=False)
    return {
        "fk_steering": lambda tr, g: fk_steering(gmm(), LIN, transition=tr, generator=g, **kw),
        "best_of_n": lambda tr, g: best_of_n(gmm(), LIN, transition=tr, generator=g, **kw),
        "reward_guidance": lambda tr, g: reward_guidance(
            gmm(), LIN, scale=0.5, transition=tr, generator=g, **kw
        ),
        "value_decoding": lambda tr, g: value_decoding(
            gmm(), LIN, transition=tr, num_candidates=2, generator=g, **kw
        ),
        "value_estimate": lambda tr, g: value_estimate(
            gmm(), LIN, torch.zeros(2, 3, 2), 0.5, num_samples=2, transition=tr, generator=g
        ),
    }


@pytest.mark.parametrize("algorithm", list(_tuple_runs()))
def test_a_tuple_of_generators_reaches_the_transition_as_a_list(algorithm):
    """A transition is called with a torch.Generator, a list of them or None (its documented
    signature): groups given as a tuple of generators are handed on as a list."""
    tr = SeenGenerators()
    _tuple_runs()[algorithm](tr, (gen(1), gen(2)))
    assert tr.seen == {list}


def test_profiled_times_add_up_over_every_step():
    """model_time and reward_time sum the calls of every step (each model call sleeps 2 ms here,
    each reward call 40 ms), and the wall time, which covers init and every step, holds both."""
    calls = {"model": 0, "reward": 0}

    class Slow:
        def __init__(self):
            self.inner = gmm()
            self.schedule = self.inner.schedule

        def denoise(self, x, t):
            calls["model"] += 1
            time.sleep(0.002)
            return self.inner.denoise(x, t)

        def velocity(self, x, t):
            calls["model"] += 1
            time.sleep(0.002)
            return self.inner.velocity(x, t)

    def slow_reward(z):
        calls["reward"] += 1
        time.sleep(0.04)
        return LIN(z)

    start = time.perf_counter()
    res = fk_steering(
        Slow(), slow_reward, transition=SDE(), num_particles=4, time_grid=GRID,
        shape=(2,), generator=gen(0), profile=True, progress=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert calls["model"] >= len(GRID) - 1 and calls["reward"] >= len(GRID) - 1
    assert res.model_time >= 0.002 * calls["model"]
    assert res.reward_time >= 0.04 * calls["reward"]
    assert res.model_time + res.reward_time <= res.wall_time <= elapsed


def test_profile_fields_and_guided_model_inside_fk():
    res = run(transition=Glass(inner_steps=2))
    assert math.isnan(res.model_time) and math.isnan(res.reward_time) and res.wall_time > 0
    res = run(transition=Glass(inner_steps=2), profile=True)
    assert 0 < res.model_time < res.wall_time and 0 < res.reward_time < res.wall_time
    # FKS-GLASS+grad: the guided denoiser drops into fk_steering unchanged (same NFE)
    from glass_core.align import guided

    g = fk_steering(
        guided(gmm(), LIN, 0.5, (0.2, 0.7)),
        LIN,
        transition=Glass(inner_steps=2),
        num_particles=16,
        time_grid=GRID,
        shape=(2,),
        generator=gen(0),
        dtype=torch.float64,
        progress=False,
    )
    assert g.nfe == res.nfe and float(g.rewards.mean()) > float(res.rewards.mean())


def test_twisted_nan_rewards_are_named_on_the_steps_host_copy():
    """The twist's gradient pass leaves NaN rewards to the step's one host check (no extra sync
    inside it), which names the step and time as for the plain proposal."""

    msg = r"^reward returned NaN/inf at step 1 \(t=0\.2\) for particle indices \[2, 6\]$"
    with pytest.raises(RewardError, match=msg):
        fk_steering(
            gmm(), nan_above_half, transition=SDE(), num_particles=8, time_grid=GRID, shape=(2,),
            proposal="twisted", generator=gen(0), progress=False, dtype=torch.float64,
        )  # fmt: skip


ALGORITHMS = [
    "fk_steering", "best_of_n", "reward_guidance", "value_decoding", "beam_search", "tempered_smc",
]  # fmt: skip


@pytest.mark.parametrize("name", ALGORITHMS)
def test_progress_is_on_by_default(name):
    """Every algorithm shows progress unless asked not to (progress=True by default)."""
    import inspect

    from glass_core import align

    assert inspect.signature(getattr(align, name)).parameters["progress"].default is True


def test_one_rank_sharded_fk_refuses_lookahead_and_checks_the_sharding():
    """With torch.distributed up (one gloo rank in this process): the lookahead potential is
    refused with a process_group (every rank raises RankFailedError from the InvalidInputError
    naming `potential`), and the Sharding given is the one checked (a non-positive timeout is
    refused, naming `process_group.timeout`)."""
    import socket

    import torch.distributed as dist
    from glass_core.align.distributed import RankFailedError, Sharding

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        msg = "`potential` 'lookahead' is not supported with process_group"
        with pytest.raises(RankFailedError) as err:
            run(potential="lookahead", process_group=Sharding(timeout=30.0))
        assert str(err.value) == f"rank 0 of 1 failed at step 0: InvalidInputError: {msg}"
        cause = err.value.__cause__
        assert isinstance(cause, InvalidInputError) and str(cause) == msg
        assert cause.arg == "potential"
        with pytest.raises(InvalidInputError) as err:
            run(process_group=Sharding(timeout=-1.0))
        assert str(err.value) == "`process_group.timeout` must be > 0 seconds, got -1.0"
        assert err.value.arg == "process_group.timeout"
    finally:
        dist.destroy_process_group()
