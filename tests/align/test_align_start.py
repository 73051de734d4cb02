"""Runs from given particles x0 at t0 > 0, and FK with the lookahead (value) potential, against
the exact tilted posterior of the Gaussian mixture.

From a fixed x_t0 the target is p(z | x_t0) exp(lambda r(z)) / Z(x_t0). The posterior is the
mixture sum_k w_k N(m_k, v_k I) (docs/math.md §7); for r(z) = a.z its tilt shifts component k by
lambda v_k a and scales its weight by exp(lambda a.m_k + lambda^2 v_k |a|^2 / 2), and
log Z(x_t0) = V_t0(x_t0) for the reward lambda r: `GaussianMixture.tilted` computes both.
"""

import math
import re

import numpy as np
import pytest
import torch
from align_fixtures import ExactKernel, gen, gmm, weighted_mean_and_se
from glass_core.align import Lookahead, best_of_n, fk_steering, reward_guidance
from glass_core.errors import InvalidInputError
from glass_core.models import GaussianMixture
from glass_core.rewards import LinearReward
from glass_core.transitions import Glass, sample

LIN = LinearReward([1.0, 0.5])
X_T0 = torch.tensor([0.3, -0.4], dtype=torch.float64)
T0 = 0.4
GRID = np.array([T0, 0.55, 0.7, 0.85, 1.0])


def tilted_posterior(lam: float) -> GaussianMixture:
    log_w, mean, var = gmm().posterior(X_T0[None], T0)
    post = GaussianMixture(mean[0], var[0].sqrt(), log_w[0].exp())
    return post.tilted(LIN.kind, LIN.params, lam)


def fixed_start(groups: int, n: int) -> torch.Tensor:
    return X_T0.expand(groups, n, 2).clone()


def run(x0, **kw):
    args = dict(
        transition=ExactKernel(),
        num_particles=x0.shape[-2],
        time_grid=GRID,
        shape=(2,),
        lambda_=1.0,
        generator=gen(0),
        progress=False,
        x0=x0,
    )
    args.update(kw)
    return fk_steering(gmm(), LIN, **args)


def check_evidence(res, target):
    z_hat = np.exp(res.log_evidence)
    z = math.exp(target.log_normalizer)
    se = z_hat.std(ddof=1) / math.sqrt(z_hat.size)
    assert se < 0.04 * z
    assert abs(z_hat.mean() - z) < 4 * se, (z_hat.mean(), z, se)


def check_mean_reward(res, target):
    mean_r, se_r = weighted_mean_and_se(LIN(res.samples), res.log_weights)
    exact_r = float(LIN(target.sample(400_000, generator=gen(99))).mean())
    assert abs(mean_r - exact_r) < 4 * se_r + 0.02, (mean_r, exact_r, se_r)


# Unbiased evidence with exact transitions: E[Z-hat] = Z(x_t0), 600 replicate groups of 16
# particles (4 standard errors of the replicate mean; the standard error itself is required to
# be below 4% of Z so that a biased estimator cannot hide in it). The tilt is strong enough that
# an unsteered run would miss it: the target's mean reward differs from the posterior's by >0.3.
@pytest.mark.parametrize("potential", ["diff", "lookahead"])
def test_fk_from_fixed_x_t0_evidence(potential):
    target = tilted_posterior(1.0)
    pot = Lookahead(4, ExactKernel()) if potential == "lookahead" else potential
    res = run(fixed_start(600, 16), potential=pot, generator=gen(7))
    assert res.samples.shape == (600, 16, 2)
    check_evidence(res, target)


@pytest.mark.parametrize(
    "potential, lookahead",
    [("diff", None), ("lookahead", ExactKernel()), ("lookahead", Glass(inner_steps=2))],
    ids=["diff", "lookahead-exact", "lookahead-glass2"],
)
def test_fk_from_fixed_x_t0_hits_tilted_posterior(potential, lookahead):
    target = tilted_posterior(1.0)
    untilted = tilted_posterior(0.0)
    pot = potential if lookahead is None else Lookahead(4, lookahead)
    res = run(fixed_start(1, 4000)[0], potential=pot, generator=gen(3))
    check_mean_reward(res, target)
    exact = float(LIN(target.sample(100_000, generator=gen(5))).mean())
    base = float(LIN(untilted.sample(100_000, generator=gen(5))).mean())
    assert abs(exact - base) > 0.3  # the check above can fail for an unsteered sampler


# GLASS transitions from x_t0 (Euler, M = 10) reach the same target within the 4-sigma sampling
# error plus a 0.02 allowance for the inner solver (as the t0 = 0 tests do).
def test_fk_glass_from_x_t0_and_lookahead_nfe():
    target = tilted_posterior(1.0)
    tr, look = Glass(inner_steps=10), Glass(inner_steps=3)
    res = run(fixed_start(1, 4000)[0], transition=tr, generator=gen(4))
    check_mean_reward(res, target)
    res_la = run(
        fixed_start(1, 4000)[0],
        transition=tr,
        potential=Lookahead(5, look),
        generator=gen(4),
    )
    check_mean_reward(res_la, target)
    # 4 transitions x 10 (each intermediate denoiser call is the next transition's s = 0 call);
    # each of the 3 intermediate potential steps adds J x (M - 1) evaluations per particle, the
    # lookahead's own s = 0 call being that same shared denoiser call
    assert res.nfe == 4 * 10
    assert res_la.nfe == res.nfe + 3 * 5 * (3 - 1)
    assert res_la.total_nfe == res_la.nfe * 4000


# Lookahead from t = 0 (the usual start) keeps the exact target too.
def test_lookahead_from_noise_evidence():
    target = gmm().tilted(LIN.kind, LIN.params, 1.0)
    res = fk_steering(
        gmm(),
        LIN,
        transition=ExactKernel(),
        num_particles=16,
        time_grid=np.linspace(0, 1, 6),
        shape=(2,),
        potential=Lookahead(4, ExactKernel()),
        num_groups=600,
        generator=gen(11),
        progress=False,
    )
    check_evidence(res, target)


def test_best_of_n_and_guidance_from_x_t0_sample_the_posterior():
    post = tilted_posterior(0.0)
    exact = post.sample(200_000, generator=gen(6)).mean(0)
    x0 = fixed_start(1, 3000)[0]
    common = dict(
        transition=ExactKernel(),
        time_grid=GRID,
        shape=(2,),
        generator=gen(8),
        progress=False,
        x0=x0,
    )
    bon = best_of_n(gmm(), LIN, num_particles=3000, **common)
    gd = reward_guidance(gmm(), LIN, scale=0.0, num_particles=3000, **common)
    for s in (bon.samples, gd.samples):
        se = s.std(0) / math.sqrt(s.shape[0])
        assert bool(((s.mean(0) - exact).abs() < 4 * se).all()), (s.mean(0), exact)
    assert float(bon.best_reward) == float(LIN(bon.samples).max())


def test_grouped_x0_equals_separate_runs():
    x0 = gmm().sample_marginal(6, T0, gen(1)).reshape(2, 3, 2)
    tr = Glass(inner_steps=2)
    kw = dict(transition=tr, time_grid=GRID, lambda_=1.0, progress=False)
    grouped = fk_steering(gmm(), LIN, num_particles=3, x0=x0, generator=[gen(1), gen(2)], **kw)
    for b, seed in enumerate((1, 2)):
        one = fk_steering(gmm(), LIN, num_particles=3, x0=x0[b], generator=gen(seed), **kw)
        torch.testing.assert_close(grouped.samples[b], one.samples)


@pytest.mark.parametrize(
    "how", [{"num_groups": 2}, {"shape": (2,)}, {"num_groups": 2, "shape": (2,)}]
)
def test_grouped_x0_with_one_generator(how):
    """x0 [B, N, ...] is read as B groups from num_groups = B or from a `shape` one dimension
    shorter (either alone, or both): the run keeps the [B, N, ...] layout, the samples' shape
    comes from x0, and it is the same run whichever says it."""
    x0 = gmm().sample_marginal(6, T0, gen(1)).reshape(2, 3, 2)
    kw = dict(transition=Glass(inner_steps=2), time_grid=GRID, progress=False)
    res = fk_steering(gmm(), LIN, num_particles=3, x0=x0, generator=gen(3), **kw, **how)
    ref = fk_steering(gmm(), LIN, num_particles=3, x0=x0, generator=gen(3), num_groups=2, **kw)
    assert res.samples.shape == (2, 3, 2) and res.log_weights.shape == (2, 3)
    assert torch.equal(res.samples, ref.samples)


def test_bad_start_arguments():
    with pytest.raises(InvalidInputError, match="time_grid"):
        fk_steering(
            gmm(),
            LIN,
            transition=ExactKernel(),
            num_particles=4,
            time_grid=GRID,
            shape=(2,),
            progress=False,
        )
    with pytest.raises(InvalidInputError, match="x0"):
        run(fixed_start(1, 4)[0], num_particles=5)
    with pytest.raises(InvalidInputError, match="x0"):
        run(fixed_start(1, 4)[0], shape=(3,))
    with pytest.raises(InvalidInputError, match="read as"):
        run(fixed_start(2, 4), shape=None)
    with pytest.raises(InvalidInputError, match="x0"):
        run(fixed_start(2, 4), generator=[gen(0), gen(1), gen(2)])
    with pytest.raises(InvalidInputError, match="x0"):
        run(torch.full((4, 2), float("nan"), dtype=torch.float64))
    with pytest.raises(InvalidInputError, match="x0"):
        run(fixed_start(1, 4)[0], process_group=object())
    with pytest.raises(InvalidInputError, match="num_samples"):
        run(fixed_start(1, 4)[0], potential=Lookahead(0))
    with pytest.raises(InvalidInputError, match="transition"):
        run(fixed_start(1, 4)[0], potential=Lookahead(2, transition="glass"))
    with pytest.raises(InvalidInputError, match="potential"):
        run(fixed_start(1, 4)[0], potential="bogus")
    with pytest.raises(InvalidInputError, match="x0"):
        sample(gmm(), ExactKernel(), GRID, shape=(4, 2))


def test_transitions_sample_from_x_t0():
    """transitions.sample from x0 at t0 > 0: [N, ...] rows, or [B, N, ...] with num_groups or a
    list of B generators (equal to separate runs with one generator per group); noise at t0 > 0
    is refused."""
    tr = Glass(inner_steps=2)
    x0 = gmm().sample_marginal(6, T0, gen(2)).reshape(2, 3, 2)
    grouped = sample(gmm(), tr, GRID, x0=x0, num_groups=2, generator=[gen(1), gen(2)])
    assert grouped.samples.shape == (2, 3, 2)
    for b, seed in enumerate((1, 2)):
        one = sample(gmm(), tr, GRID, x0=x0[b], generator=gen(seed))
        torch.testing.assert_close(grouped.samples[b], one.samples)
    with pytest.raises(InvalidInputError, match="num_groups"):
        sample(gmm(), tr, GRID, x0=x0[0], num_groups=2)
    # a list of B generators says the same: x0 is [B, N, ...], no num_groups needed
    inferred = sample(gmm(), tr, GRID, x0=x0, generator=[gen(1), gen(2)])
    torch.testing.assert_close(inferred.samples, grouped.samples)
    with pytest.raises(InvalidInputError, match="x0"):
        sample(gmm(), tr, GRID, x0=x0[0], generator=[gen(1), gen(2)])
    with pytest.raises(InvalidInputError, match="x0"):
        sample(gmm(), tr, GRID, x0=x0.reshape(3, 2, 2), generator=[gen(1), gen(2)])


def test_start_shape_errors_spell_out_what_was_read():
    lin = LinearReward([1.0, 0.5])
    run = dict(transition=Glass(inner_steps=2), time_grid=[0.3, 0.6, 1.0], progress=False)
    with pytest.raises(InvalidInputError, match=r"`x0` must be \[N, \.\.\.\], got shape \(3,\)"):
        best_of_n(gmm(), lin, num_particles=4, x0=torch.zeros(3), **run)
    with pytest.raises(
        InvalidInputError, match=r"`x0` must be \[N, \*shape\] or \[B, N, \*shape\]"
    ):
        best_of_n(gmm(), lin, num_particles=4, shape=(2,), x0=torch.zeros(4), **run)
    how = r"\(read as \[N, \.\.\.\]: give shape= or groups for \[B, N, \.\.\.\]\)"
    with pytest.raises(InvalidInputError, match=rf"`x0` holds 3 particles per group {how}, but"):
        best_of_n(gmm(), lin, num_particles=4, x0=torch.zeros(3, 2), **run)
    run["time_grid"] = [0.0, 0.5, 1.0]
    with pytest.raises(InvalidInputError, match=r"`num_groups` is 3 but `generator` lists 2"):
        best_of_n(
            gmm(), lin, num_particles=4, shape=(2,), num_groups=3, generator=[gen(1)] * 2, **run
        )


_TWO = [gen(0), gen(1)]
START_ERRORS = [
    (
        {"x0": None, "shape": (2,)},
        "time_grid",
        "`time_grid` starts at t = 0.4; a run from t0 > 0 needs the particles there as x0=",
    ),
    (  # a [1, 1] grid is not read as starting at 0.4: the grid check names its shape
        {"x0": None, "shape": (2,), "time_grid": np.array([[0.4]])},
        "time_grid",
        "`time_grid` is not a valid time grid: time_grid must be 1-D, got shape [1, 1]",
    ),
    (
        {"x0": None, "shape": (2,), "time_grid": torch.tensor([[0.4]])},
        "time_grid",
        "`time_grid` is not a valid time grid: time_grid must be 1-D, got shape [1, 1]",
    ),
    (  # no first time to read: the grid check names the problem, not the start
        {"x0": None, "shape": (2,), "time_grid": []},
        "time_grid",
        "`time_grid` is not a valid time grid: time_grid must have at least 2 points, got 0",
    ),
    (
        {"process_group": object()},
        "x0",
        "`x0` is not supported with process_group (sharded runs start from noise)",
    ),
    (
        {"x0": [[0.0]]},
        "x0",
        "`x0` must be a floating-point tensor [N, ...] or [B, N, ...], got list",
    ),
    (
        {"x0": torch.zeros(4, 2, dtype=torch.int64)},
        "x0",
        "`x0` must be a floating-point tensor [N, ...] or [B, N, ...], got torch.int64",
    ),
    (
        {"x0": torch.zeros(4, 2, device="meta")},
        "x0",
        "`x0` is on the meta device (no data); pass a real tensor",
    ),
    ({"x0": torch.full((4, 2), math.inf)}, "x0", "`x0` must be finite"),
    (
        {"x0": torch.zeros(4), "shape": (2,)},
        "x0",
        "`x0` must be [N, *shape] or [B, N, *shape] with shape (2,), got (4,)",
    ),
    (
        {"x0": torch.zeros(4, 3), "shape": (2,)},
        "x0",
        "`x0` samples must have shape (2,), got x0 (4, 3)",
    ),
    ({"x0": torch.zeros(3)}, "x0", "`x0` must be [N, ...], got shape (3,)"),
    (
        {"x0": torch.zeros(2, 4), "num_groups": 2},
        "x0",
        "`x0` must be [B, N, ...] (groups are given), got shape (2, 4)",
    ),
    (
        {"x0": torch.zeros(2, 3, 2), "shape": (2,)},
        "x0",
        "`x0` holds 3 particles per group, but num_particles is 4",
    ),
    (
        {"x0": torch.zeros(4, 2), "shape": (2,), "num_groups": 2},
        "x0",
        "`x0` is one group [N, ...] (4, 2), but groups are given",
    ),
    (
        {"x0": torch.zeros(4, 2), "shape": (2,), "generator": _TWO},
        "x0",
        "`x0` is one group [N, ...] (4, 2), but groups are given",
    ),
    (
        {"x0": torch.zeros(2, 4, 2), "shape": (2,), "generator": [*_TWO, gen(2)]},
        "x0",
        "`x0` holds 2 groups, but `generator` lists 3",
    ),
    (
        {"x0": torch.zeros(2, 4, 2), "shape": (2,), "num_groups": 3},
        "x0",
        "`x0` holds 2 groups, but num_groups is 3",
    ),
]


@pytest.mark.parametrize(("kw", "arg", "msg"), START_ERRORS)
def test_start_errors_name_the_argument_and_what_was_given(kw, arg, msg):
    """Every refusal of a start: the error's ``arg`` and its whole message, with the shapes and
    counts that were given (the run asks for 4 particles from t0 = 0.4)."""
    args = dict(
        transition=Glass(inner_steps=2), time_grid=[0.4, 0.7, 1.0], num_particles=4,
        x0=torch.zeros(4, 2), progress=False,
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match=f"^{re.escape(msg)}$") as info:
        best_of_n(gmm(), LIN, **(args | kw))
    assert info.value.arg == arg  # type: ignore[attr-defined]


def test_start_particles_flattens_x0_and_casts_or_moves_it_only_when_asked():
    """Given x0 [B, N, ...], the start is its [B * N, ...] rows, cast to `dtype` and moved to
    `device` when they are given (the meta device stands for an accelerator), as given
    otherwise."""
    from glass_core.align._start import start_particles

    x0 = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    same = start_particles(x0, 6, (2,), None, None, None)
    assert same.dtype == torch.float32 and torch.equal(same, x0.reshape(6, 2))
    cast = start_particles(x0, 6, (2,), None, torch.float64, None)
    assert cast.dtype == torch.float64 and torch.equal(cast, x0.reshape(6, 2).double())
    moved = start_particles(x0, 6, (2,), None, None, "meta")
    assert moved.device.type == "meta" and moved.dtype == torch.float32 and moved.shape == (6, 2)
    # without x0: N(0, I) noise from the generator, in the dtype asked for
    noise = start_particles(None, 6, (2,), gen(0), torch.float64, None)
    assert torch.equal(noise, torch.randn(6, 2, generator=gen(0), dtype=torch.float64))
