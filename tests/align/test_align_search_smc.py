"""tempered_smc and fk_steering(proposal="twisted") against the exact tilted Gaussian mixture.

With r(z) = a.z the tilted target p(z) exp(lambda r(z)) / Z is again a Gaussian mixture
(GaussianMixture.tilted): its mean reward and log Z are the closed-form answers.
"""

import math
import re

import numpy as np
import pytest
import torch
from align_fixtures import GRID, ExactKernel, gen, gmm, nan_above_half, weighted_mean_and_se
from glass_core.align import TemperedSMCSampler, fk_steering, tempered_smc
from glass_core.align.potentials import Diff
from glass_core.align.tempered import Tempered
from glass_core.align.tempering import next_exponent, relative_ess
from glass_core.align.twisted import TwistedDiff, twisted_move
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward
from glass_core.transitions import ODE, SDE, Glass

A = torch.tensor([1.0, 0.5], dtype=torch.float64)
LIN = LinearReward(A)


def exact(lam: float) -> tuple[float, float]:
    target = gmm().tilted(LIN.kind, LIN.params, lam)
    return float(target.mean() @ A), target.log_normalizer


# -- the done-when: 20000 particles, 5 outer steps ----------------------------------------


def test_tempered_glass_meets_target():
    res = tempered_smc(
        gmm(), LIN, transition=Glass(), num_particles=20000, time_grid=GRID, shape=(2,),
        generator=gen(0), progress=False,
    )  # fmt: skip
    mean, log_z = exact(1.0)
    est, se = weighted_mean_and_se(res.rewards, res.log_weights)
    assert se < 0.01  # so 0.04 is a statement about the bias, not the noise
    assert abs(est - mean) < 0.04, (est, mean)
    assert abs(res.log_evidence - log_z) < 0.05, (res.log_evidence, log_z)
    assert res.exponents[-1] == 1.0 and res.nfe == 50


def test_twisted_sde_meets_target():
    # 16 substeps per outer step: the SDE chain's own bias (it ends on D at t = 1) is -0.09 in
    # mean reward at 4 substeps, -0.05 at 8, -0.03 at 16 (plain FK the same; the weights are
    # exact for the chain, so no proposal can remove it)
    res = fk_steering(
        gmm(), LIN, transition=SDE(substeps=16), num_particles=20000, time_grid=GRID,
        shape=(2,), generator=gen(0), proposal="twisted", progress=False,
    )  # fmt: skip
    mean, log_z = exact(1.0)
    est, se = weighted_mean_and_se(res.rewards, res.log_weights)
    assert se < 0.01
    assert abs(est - mean) < 0.04, (est, mean)
    assert abs(res.log_evidence - log_z) < 0.05, (res.log_evidence, log_z)


# -- tempering -----------------------------------------------------------------------------------


def test_tempering_keeps_ess_at_target_and_ends_at_lambda():
    lam, target, n = 6.0, 0.5, 2000
    res = tempered_smc(
        gmm(), LIN, transition=ExactKernel(), num_particles=n, time_grid=GRID, shape=(2,),
        lambda_=lam, ess_target=target, generator=gen(1), progress=False,
    )  # fmt: skip
    exps = res.exponents
    assert exps[-1] == lam and bool(np.all(np.diff(exps) >= 0))
    before = np.concatenate([[0.0], exps[:-1]])
    cut = (exps < lam) & (exps > before)
    stuck = exps == before
    assert cut.any()  # the test exercises the bisection
    ess = res.ess_history / n
    # where the exponent was cut, the ESS after reweighting is the target (bisection to 2^-60);
    # where even the previous exponent missed it, the exponent stays and the ESS is below it
    np.testing.assert_allclose(ess[cut], target, atol=1e-6)
    assert bool(np.all(ess[stuck] < target))


def test_tempered_evidence_and_mean_with_exact_kernel():
    """Exact kernels: the only error left is Monte Carlo; 200 groups give its spread."""
    lam, groups = 3.0, 200
    res = tempered_smc(
        gmm(), LIN, transition=ExactKernel(), num_particles=500, time_grid=GRID, shape=(2,),
        lambda_=lam, num_groups=groups, generator=gen(2), progress=False,
    )  # fmt: skip
    mean, log_z = exact(lam)
    est = (res.log_weights.exp() * res.rewards.double()).sum(1)
    se_mean = float(est.std()) / math.sqrt(groups)
    assert abs(float(est.mean()) - mean) < 4 * se_mean + 0.01, (est.mean(), mean, se_mean)
    # exp(log Z-hat) is unbiased: its mean over groups against Z
    z_hat = np.exp(res.log_evidence - log_z)
    assert abs(z_hat.mean() - 1.0) < 4 * z_hat.std() / math.sqrt(groups), z_hat.mean()


def test_tempered_ess_threshold_decides_resampling():
    """ess_threshold reaches the sampler: 1.0 resamples at every step but the last, 1e-9 at none."""
    kw = dict(transition=ExactKernel(), num_particles=64, time_grid=GRID, shape=(2,), lambda_=3.0)
    resampled = {
        thr: tempered_smc(
            gmm(), LIN, ess_threshold=thr, generator=gen(1), progress=False, **kw
        ).resampled
        for thr in (1.0, 1e-9)
    }
    assert bool(np.all(resampled[1.0][:-1])) and not bool(np.any(resampled[1e-9]))


def test_tempered_forwards_the_engine_options():
    """resampling, final_resample, track_genealogy, x0 and lambda_ reach the FK engine: the run
    equals FKSampler-style stepping of TemperedSMCSampler with the same options, and each
    option shows in the result."""
    from glass_core.align.fk import run_to_end

    opts = dict(resampling="multinomial", final_resample=True, track_genealogy=False)
    kw = dict(transition=ExactKernel(), time_grid=GRID, lambda_=2.0, ess_target=0.7)
    x0 = torch.randn(16, 2, generator=gen(5))
    res = tempered_smc(gmm(), LIN, num_particles=16, x0=x0, generator=gen(3), progress=False,
                       **kw, **opts)  # fmt: skip
    sampler = TemperedSMCSampler(gmm(), LIN, **kw, **opts)
    state = sampler.init(16, x0=x0, generator=gen(3))
    ref = run_to_end(sampler, state, False, "")
    assert torch.equal(res.samples, ref.samples) and res.log_evidence == ref.log_evidence
    assert res.ancestors is None and bool(res.resampled[-1]) and res.exponents[-1] == 2.0
    torch.testing.assert_close(
        res.log_weights, torch.full((16,), -math.log(16.0), dtype=torch.float64)
    )
    default = tempered_smc(
        gmm(), LIN, num_particles=16, x0=x0, generator=gen(3), progress=False, **kw
    )
    assert default.ancestors is not None and not bool(default.resampled[-1])
    assert not torch.equal(default.samples, res.samples)  # another scheme, a final resampling


def test_next_exponent_edges():
    f64 = torch.float64
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=f64)
    flat = torch.full((1, 4), -math.log(4), dtype=f64)
    zero, ones = torch.zeros((1, 4), dtype=f64), torch.ones(1, dtype=f64)
    # equal scores: any exponent keeps ESS = N, so the full lambda is taken
    assert float(next_exponent(flat, zero + 1, zero, ones * 0, 5.0, 0.9)[0]) == 5.0
    # from lambda_{k-1} = 1 with nothing applied yet the ESS is already 0.52 N < 0.9 N: the
    # exponent stays (it never decreases)
    assert float(relative_ess(flat + scores)[0]) < 0.9
    assert float(next_exponent(flat, scores, zero, ones, 5.0, 0.9)[0]) == 1.0
    lam = next_exponent(flat, scores, zero, ones * 0, 50.0, 0.5)
    assert 0.0 < float(lam[0]) < 50.0
    assert abs(float(relative_ess(flat + lam[:, None] * scores)[0]) - 0.5) < 1e-9


def test_relative_ess_closed_forms():
    """ESS / N = (sum w)^2 / (N sum w^2) per row, with zero weights, log-weights far from 0
    (+-1000: no overflow, no underflow) and a row of zero weights (ESS 0)."""
    k = torch.arange(1.0, 6.0, dtype=torch.float64).log()
    inf = math.inf
    log_w = torch.stack(
        [torch.tensor([0.0, 0.0, 0.0, -inf, -inf], dtype=torch.float64), 1000 + k, k - 1000,
         torch.full((5,), -inf, dtype=torch.float64)]
    )  # fmt: skip
    expected = torch.tensor([9 / 15, 225 / 275, 225 / 275, 0.0], dtype=torch.float64)
    torch.testing.assert_close(relative_ess(log_w), expected, rtol=1e-13, atol=0.0)


def test_next_exponent_takes_an_ess_exactly_at_the_target():
    """The ESS must be at least the target: met exactly at lambda, lambda is taken (also when the
    ESS dips below the target in between); met exactly at the first bisection point, nothing
    below it is returned."""
    f64 = torch.float64
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=f64)
    flat = torch.full((1, 4), -math.log(4), dtype=f64)
    zero, start = torch.zeros((1, 4), dtype=f64), torch.zeros(1, dtype=f64)
    at = [float(relative_ess(flat + lam * scores)[0]) for lam in (5.0, 2.5)]
    assert float(next_exponent(flat, scores, zero, start, 5.0, at[0])[0]) == 5.0
    assert float(next_exponent(flat, scores, zero, start, 5.0, at[1])[0]) >= 2.5
    # carried weights that favour low scores: the ESS peaks at 4.5 and is lower at 2.5 than at
    # lambda = 5, which still meets a target equal to its ESS
    carried = torch.log_softmax(-4.5 * scores, dim=1)
    at_end = float(relative_ess(carried + 5.0 * scores)[0])
    assert float(relative_ess(carried + 2.5 * scores)[0]) < at_end
    assert float(next_exponent(carried, scores, zero, start, 5.0, at_end)[0]) == 5.0


def test_tempered_groups_equal_separate_runs_and_max_batch():
    kw = dict(transition=Glass(inner_steps=3), num_particles=64, time_grid=GRID, shape=(2,))
    kw.update(lambda_=4.0, progress=False)
    both = tempered_smc(gmm(), LIN, generator=[gen(3), gen(4)], **kw)
    for b, seed in enumerate((3, 4)):
        one = tempered_smc(gmm(), LIN, generator=gen(seed), max_batch=7, **kw)
        assert torch.allclose(both.samples[b], one.samples, atol=1e-5)
        np.testing.assert_allclose(both.exponents[:, b], one.exponents, rtol=1e-6)
        assert abs(both.log_evidence[b] - one.log_evidence) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "name", "msg"),
    [
        ({"ess_target": 0.0}, "ess_target", "must be in (0, 1] (a fraction of N), got 0.0"),
        ({"ess_target": 1.5}, "ess_target", "must be in (0, 1] (a fraction of N), got 1.5"),
        ({"ess_target": "a"}, "ess_target", "must be a finite number, got 'a'"),
        ({"process_group": object()}, "process_group", "is not supported by tempered_smc"),
    ],
)
def test_tempered_bad_arguments(kwargs, name, msg):
    with pytest.raises(InvalidInputError, match=f"^{re.escape(f'`{name}` {msg}')}$") as e:
        tempered_smc(
            gmm(), LIN, transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,), **kwargs
        )
    assert e.value.arg == name  # type: ignore[attr-defined]


def test_tempered_ess_target_one_and_a_single_particle():
    """ess_target=1 (the top of (0, 1]) is allowed: no intermediate exponent may cost ESS, so
    they stay ~0 and the final one is lambda_; a single particle keeps ESS = N at any exponent,
    so every exponent is lambda_."""
    kw = dict(transition=SDE(), time_grid=GRID, shape=(2,), lambda_=2.0, progress=False)
    full = tempered_smc(gmm(), LIN, num_particles=16, ess_target=1.0, generator=gen(0), **kw)
    assert full.exponents[-1] == 2.0 and (full.exponents[:-1] < 1e-6).all()
    one = tempered_smc(gmm(), LIN, num_particles=1, generator=gen(0), **kw)
    assert (one.exponents == 2.0).all() and torch.equal(one.log_weights, torch.zeros(1))


def test_tempered_nan_rewards_are_named_with_their_step():
    """NaN rewards at an intermediate tempered step are reported with the step and its time, as
    for fk_steering."""

    msg = r"^reward returned NaN/inf at step 1 \(t=0\.2\) for particle indices \["
    with pytest.raises(RewardError, match=msg):
        tempered_smc(
            gmm(), nan_above_half, transition=SDE(), num_particles=8, time_grid=GRID, shape=(2,),
            generator=gen(0), progress=False, dtype=torch.float64,
        )  # fmt: skip


def test_tempered_potential_state_and_step():
    """Tempered() targets ESS/N = 0.5 and starts from the difference potential's state; a step
    needs the carried log-weights (TemperedSMCSampler.weight hands them over and does not keep
    them), keeps its running rewards in float64 and, at the final step, applies lambda_."""
    cpu = torch.device("cpu")
    pot = Tempered()
    assert pot.ess_target == 0.5 and repr(pot) == "Tempered(ess_target=0.5)"
    state, ref = pot.init(4, cpu), Diff().init(4, cpu)
    assert torch.equal(state.running, ref.running) and torch.equal(state.applied, ref.applied)
    scores = torch.tensor([0.5, -1.0, 2.0, 0.25])
    with pytest.raises(AssertionError):
        pot.step(state, scores, 1.5, final=True)
    state.carried = torch.zeros(2, 2, dtype=torch.float64)  # B = 2 groups of N = 2
    log_g = pot.step(state, scores, 1.5, final=True)
    assert torch.equal(log_g, 1.5 * scores.double())
    assert state.running.dtype == torch.float64 and torch.equal(state.running, scores.double())
    sampler = TemperedSMCSampler(gmm(), LIN, transition=SDE(), time_grid=GRID)
    run = sampler.step(sampler.init(8, shape=(2,), generator=gen(0)))
    assert run.potential.carried is None


def test_tempered_sampler_takes_none_as_not_given():
    """potential=None and process_group=None mean "not given" (as for FKSampler): accepted, the
    sampler then uses its own tempered potential."""
    sampler = TemperedSMCSampler(
        gmm(), LIN, transition=SDE(), time_grid=GRID, potential=None, process_group=None
    )
    state = sampler.init(4, shape=(2,), generator=gen(0))
    assert isinstance(state.config.potential, Tempered)


@pytest.mark.parametrize("name", ["potential", "process_group"])
def test_tempered_sampler_refuses_a_potential_and_a_process_group(name):
    """The sampler fixes its own (tempered) potential: one given is refused by name, not
    silently replaced; sharded runs are not supported."""
    with pytest.raises(
        InvalidInputError, match=rf"^`{name}` is not supported by tempered_smc$"
    ) as e:
        TemperedSMCSampler(gmm(), LIN, transition=SDE(), time_grid=GRID, **{name: "max"})
    assert e.value.arg == name  # type: ignore[attr-defined]


# -- twisted proposals ---------------------------------------------------------------------------


def test_twisted_move_weights_recover_the_untwisted_kernel():
    """E_q[exp(log p/q) f(x')] = E_p[f(x')]: the weighted twisted draws have the kernel's mean,
    while the unweighted ones are shifted by sigma^2 g (so a wrong ratio fails)."""
    model, sde, n, t, t_next = gmm(), SDE(), 200000, 0.4, 0.6
    x = model.sample_marginal(1, t, gen(5)).float().expand(n, 2).contiguous()
    d = model.denoise(x, t)
    g = torch.tensor([[1.5, -1.0]]).expand(n, 2)
    ((_, gamma, abar, std),) = sde.scalars(model.schedule, t, t_next)
    mean = gamma * x[:1] + abar * d[:1]
    x_new, ratio = twisted_move(sde, model, LIN, x, t, t_next, gen(6), 1.0, (d, g))
    w = torch.softmax(ratio, 0).unsqueeze(1)
    weighted = (w * x_new.double()).sum(0)
    ess = float(1.0 / (w**2).sum())
    tol = 5 * std / math.sqrt(ess)
    assert float((weighted - mean[0].double()).abs().max()) < tol, (weighted, mean)
    shift = x_new.double().mean(0) - mean[0].double()
    expected_shift = std**2 * torch.tensor([1.5, -1.0], dtype=torch.float64)
    assert float((shift - expected_shift).abs().max()) < 5 * std / math.sqrt(n)


class Float64Answers:
    """A model answering in float64 whatever the particles' dtype."""

    def __init__(self, model):
        self.model, self.schedule = model, model.schedule

    def denoise(self, x, t):
        return self.model.denoise(x.double(), t)


def test_twisted_move_of_a_deterministic_kernel_is_the_plain_move():
    """With kappa = 0 (DDIM) every substep is deterministic: nothing is twisted, so the move is
    the plain SDE step (every substep run, no noise drawn), the log ratio is 0 in float64 and
    the particles keep their dtype even when the model answers in float64."""
    model, sde = Float64Answers(gmm()), SDE(substeps=2, kappa=0.0)
    x = torch.randn(5, 2, generator=gen(4))
    noise = gen(5)
    before = noise.get_state()
    x_new, ratio = twisted_move(sde, model, LIN, x, 0.2, 0.6, noise, 1.0, None)
    assert torch.equal(noise.get_state(), before)
    assert ratio.dtype == torch.float64 and torch.equal(ratio, torch.zeros(5, dtype=torch.float64))
    assert x_new.dtype == torch.float32
    torch.testing.assert_close(x_new, sde(model, x, 0.2, 0.6, gen(5)))


def test_twisted_diff_adds_each_pending_ratio_once():
    """TwistedDiff is the difference potential plus the pending move's log density ratio, which
    is then cleared: without one a step is Diff's; the final step is lambda r minus what the
    lineage received from the potential (the ratios are not part of it)."""
    cpu, lam = torch.device("cpu"), 0.3
    pot, ref = TwistedDiff(), Diff()
    state, ref_state = pot.init(3, cpu), ref.init(3, cpu)
    r1, r2, r3 = (torch.randn(3, generator=gen(s), dtype=torch.float64) for s in (4, 5, 6))
    assert torch.equal(
        pot.step(state, r1, lam, final=False), ref.step(ref_state, r1, lam, final=False)
    )
    ratio = torch.tensor([0.25, -0.5, 1.0], dtype=torch.float64)
    state.ratio = ratio
    got = pot.step(state, r2, lam, final=False)
    assert torch.equal(got, ref.step(ref_state, r2, lam, final=False) + ratio)
    assert state.ratio is None and torch.equal(state.applied, ref_state.applied)
    state.ratio = ratio
    applied = state.applied.clone()
    assert torch.equal(pot.step(state, r3, lam, final=True), lam * r3 - applied + ratio)
    assert state.ratio is None


def test_twist_state_gradient_follows_the_ancestors():
    """After a resampling the twist gradient of each slot is its ancestor's (no gradient yet:
    nothing to move)."""
    state = TwistedDiff().init(4, torch.device("cpu"))
    state.gather(torch.tensor([1, 1, 0, 3]))
    assert state.grad is None
    state.grad = torch.arange(8.0).reshape(4, 2)
    state.gather(torch.tensor([2, 2, 0, 1]))
    assert torch.equal(state.grad, torch.tensor([[4.0, 5.0], [4.0, 5.0], [0.0, 1.0], [2.0, 3.0]]))


def test_twisted_accepts_a_difference_potential_object():
    """potential=Diff() is the difference potential the twisted proposal needs, as "diff"."""
    kw = dict(transition=SDE(), num_particles=8, time_grid=GRID, shape=(2,), progress=False)
    kw.update(proposal="twisted")
    ref = fk_steering(gmm(), LIN, generator=gen(3), **kw)
    got = fk_steering(gmm(), LIN, generator=gen(3), potential=Diff(), **kw)
    assert torch.equal(got.samples, ref.samples) and got.log_evidence == ref.log_evidence


TWIST_REFUSALS = {
    "ode": (
        lambda: {"transition": ODE()},
        "transition",
        "`transition` ODE(solver='euler', substeps=1) has no Gaussian kernel (needs "
        "`scalars(schedule, t, t_next)`, the per-substep (t0, gamma, abar, sbar) SDE has) for "
        "proposal='twisted'",
    ),
    "glass": (
        lambda: {"transition": Glass(inner_steps=2)},
        "transition",
        "`transition` Glass(rho='ddpm', inner_steps=2, solver='pc', sigma0=1.0) has no tractable "
        "kernel density, so a twisted proposal cannot be weighted exactly: use "
        "proposal='twisted' with an SDE transition, or guide=True for the reward-guided GLASS "
        "proposal (uncorrected guidance)",
    ),
    "non-differentiable": (
        lambda: {"transition": SDE(), "reward": lambda z: z.detach().sum(1)},
        "reward",
        "`reward` and the model must be differentiable for proposal='twisted' (autograd: ",
    ),
}


@pytest.mark.parametrize("case", list(TWIST_REFUSALS))
def test_twisted_refusals_say_why(case):
    """A twisted proposal needs a Gaussian kernel (GLASS gets a pointer to guidance) and the
    gradient of r(D_t(x)); the message names the transition or the reward and says why."""
    make, arg, msg = TWIST_REFUSALS[case]
    kw = make()
    with pytest.raises(InvalidInputError, match=f"^{re.escape(msg)}") as e:
        fk_steering(
            gmm(), kw.pop("reward", LIN), num_particles=4, time_grid=GRID, shape=(2,),
            proposal="twisted", progress=False, **kw,
        )  # fmt: skip
    assert e.value.arg == arg  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"proposal": "tilted"}, "proposal"),
        ({"proposal": "twisted", "potential": "max"}, "potential"),
        ({"proposal": "twisted", "resample_every": 2}, "resample_every"),
        ({"proposal": "twisted", "process_group": object()}, "process_group"),
    ],
)
def test_twisted_bad_arguments(kwargs, name):
    with pytest.raises(InvalidInputError, match=name):
        fk_steering(
            gmm(), LIN, transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,), **kwargs
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [("resample_every", 2), ("resample_window", (0.2, 0.8)), ("process_group", object())],
)
def test_twisted_refuses_resampling_schedules_and_sharding_by_name(name, value):
    """Every step of a twisted run is a potential step and it is not sharded: the message says
    which argument is not supported and with what."""
    msg = rf"^`{name}` is not supported with proposal='twisted'$"
    with pytest.raises(InvalidInputError, match=msg) as e:
        fk_steering(
            gmm(), LIN, transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,),
            proposal="twisted", **{name: value},
        )  # fmt: skip
    assert e.value.arg == name  # type: ignore[attr-defined]


def test_twisted_sampler_built_directly_defaults_to_the_difference_potential():
    """TwistedFKSampler without a potential is fk_steering(proposal="twisted")'s engine, whose
    potential defaults to "diff": same particles and evidence from the same seed."""
    from glass_core.align import TwistedFKSampler
    from glass_core.align.fk import run_to_end

    kw = dict(transition=SDE(substeps=2), time_grid=GRID, lambda_=2.0)
    ref = fk_steering(
        gmm(), LIN, num_particles=16, shape=(2,), generator=gen(3), proposal="twisted",
        progress=False, **kw,
    )  # fmt: skip
    fk = TwistedFKSampler(gmm(), LIN, **kw)
    got = run_to_end(fk, fk.init(16, shape=(2,), generator=gen(3)), False, "")
    assert torch.equal(got.samples, ref.samples)
    assert got.log_evidence == ref.log_evidence


def test_twisted_groups_equal_separate_runs():
    kw = dict(transition=SDE(substeps=2), num_particles=32, time_grid=GRID, shape=(2,))
    kw.update(proposal="twisted", lambda_=2.0, progress=False)
    both = fk_steering(gmm(), LIN, generator=[gen(7), gen(8)], **kw)
    for b, seed in enumerate((7, 8)):
        one = fk_steering(gmm(), LIN, generator=gen(seed), **kw)
        assert torch.allclose(both.samples[b], one.samples, atol=1e-5)
        assert abs(both.log_evidence[b] - one.log_evidence) < 1e-5


def test_twisting_raises_the_ess_over_plain_fk():
    """The point of the twist: proposals already lean toward the target, so fewer particles are
    lost at each reweighting (same transition, same N)."""
    kw = dict(transition=SDE(substeps=4), num_particles=2000, time_grid=GRID, shape=(2,))
    kw.update(lambda_=2.0, generator=gen(9), progress=False)
    plain = fk_steering(gmm(), LIN, **kw)
    twisted = fk_steering(gmm(), LIN, proposal="twisted", **kw)
    assert twisted.ess_history[:-1].mean() > 1.2 * plain.ess_history[:-1].mean()


def test_twisted_steps_reuse_the_potential_steps_denoiser_and_gradient():
    """D_t(x) and the twist gradient at each step's start come from the potential step just
    before (one model call per grid time, not two): the proposal's first substep reuses them."""
    from collections import Counter

    inner = gmm()

    class Counted:
        schedule = inner.schedule

        def __init__(self):
            self.times = Counter()

        def denoise(self, x, t):
            self.times[round(float(t), 12)] += 1
            return inner.denoise(x, t)

        def velocity(self, x, t):
            self.times[round(float(t), 12)] += 1
            return inner.velocity(x, t)

    model = Counted()
    fk_steering(
        model, LIN, transition=SDE(substeps=2), num_particles=64, time_grid=GRID, shape=(2,),
        generator=gen(2), proposal="twisted", progress=False,
    )  # fmt: skip
    assert [model.times[round(float(t), 12)] for t in GRID[1:-1]] == [1] * (len(GRID) - 2)
    assert 1.0 not in model.times  # the final step scores r(x_1) itself: no model call at t = 1
