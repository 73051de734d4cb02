"""Each FK potential's per-step log-potential against its definition (docs/math.md §6.2): the
final target hides a wrong intermediate potential (the final correction keeps it exact), so the
log-G of every step is checked directly, on the Potential objects and inside a run."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from align_fixtures import GRID, ExactKernel, gen, gmm
from glass_core.align import Diff, FKSampler, Lookahead, Max, Sum, fk_steering
from glass_core.align.potentials import POTENTIALS, as_potential
from glass_core.errors import InvalidInputError
from glass_core.rewards import LinearReward
from glass_core.transitions import SDE

A = torch.tensor([1.0, 0.5], dtype=torch.float64)
LIN = LinearReward(A)
LAM = 0.7


def definition(kind: str, r: torch.Tensor) -> torch.Tensor:
    """[K, n] intermediate log-G of rewards r [K, n] by the formulas of the module doc."""
    if kind == "diff":
        prev = torch.cat([torch.zeros_like(r[:1]), r[:-1]])
        return LAM * (r - prev)
    if kind == "max":
        return LAM * torch.cummax(r, dim=0).values
    return LAM * torch.cumsum(r, dim=0)


@pytest.mark.parametrize("kind", ["diff", "max", "sum"])
def test_reward_potentials_step_by_definition(kind):
    r = torch.randn(4, 9, generator=gen(0), dtype=torch.float64) - 1.0  # negative rewards too
    pot = as_potential(kind)
    state = pot.init(9, torch.device("cpu"))
    got = torch.stack([pot.step(state, r[k], LAM, final=False) for k in range(4)])
    torch.testing.assert_close(got, definition(kind, r), rtol=0, atol=1e-14)
    r_final = torch.randn(9, generator=gen(1), dtype=torch.float64)
    last = pot.step(state, r_final, LAM, final=True)
    # the final correction makes every lineage's product exactly exp(lambda r(z))
    torch.testing.assert_close(last, LAM * r_final - got.sum(dim=0), rtol=0, atol=1e-13)
    torch.testing.assert_close(state.applied, LAM * r_final, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", POTENTIALS)
def test_potential_initial_state_is_float64(kind):
    """Before the first potential step: the running statistic at the potential's start value
    (-inf for the running max) and nothing applied, both float64 [B*N]."""
    pot = as_potential(kind)
    state = pot.init(3, torch.device("cpu"))
    assert state.running.dtype == state.applied.dtype == torch.float64
    assert torch.equal(state.running, torch.full((3,), pot.start, dtype=torch.float64))
    assert torch.equal(state.applied, torch.zeros(3, dtype=torch.float64))


def test_potential_state_follows_the_ancestors():
    pot = Max()
    state = pot.init(4, torch.device("cpu"))
    pot.step(state, torch.tensor([3.0, -1.0, 2.0, 0.0], dtype=torch.float64), LAM, final=False)
    state.gather(torch.tensor([2, 2, 0, 1]))
    g = pot.step(state, torch.zeros(4, dtype=torch.float64), LAM, final=False)
    torch.testing.assert_close(g, LAM * torch.tensor([2.0, 2.0, 3.0, 0.0], dtype=torch.float64))


def test_names_are_shorthands_for_the_objects():
    assert POTENTIALS == ("diff", "max", "sum", "lookahead")
    for name, cls in zip(POTENTIALS, (Diff, Max, Sum, Lookahead), strict=True):
        assert type(as_potential(name)) is cls and cls.name == name
    pot = Sum()
    assert as_potential(pot) is pot
    # the repr is the constructor call that rebuilds the potential
    assert [repr(p) for p in (Diff(), Max(), Sum())] == ["Diff()", "Max()", "Sum()"]
    with pytest.raises(InvalidInputError, match="potential"):
        as_potential("lookahed")


class Recording(FKSampler):
    """Records the particles and the host log-potentials of every potential step."""

    def weight(self, state, local, k, final):
        log_g, scores = super().weight(state, local, k, final)
        self.seen.append((state.particles.clone(), log_g.copy(), final))
        return log_g, scores


def recorded_run(potential, n: int, seed: int, reward=LIN) -> tuple[FKSampler, list]:
    """A run without resampling (ESS never below 1e-12 N), so particle i keeps its lineage."""
    fk = Recording(
        gmm(),
        reward,
        transition=ExactKernel(),
        time_grid=GRID,
        potential=potential,
        lambda_=LAM,
        ess_threshold=1e-12,
    )
    fk.seen = []
    state = fk.init(n, shape=(2,), generator=gen(seed), dtype=torch.float64)
    while not state.done:
        state = fk.step(state)
    assert not np.asarray(fk.result(state).resampled).any()
    return fk, fk.seen


@pytest.mark.parametrize("kind", ["diff", "max", "sum"])
def test_reward_potentials_in_a_run_score_the_denoiser_output(kind):
    model = gmm()
    _, seen = recorded_run(kind, 8, 3)
    times = GRID[1:-1]
    inter = [(x, g) for x, g, final in seen if not final]
    r = torch.stack(
        [LIN(model.denoise(x, float(t))) for (x, _), t in zip(inter, times, strict=True)]
    )
    got = torch.from_numpy(np.stack([g for _, g in inter]))
    torch.testing.assert_close(got, definition(kind, r), rtol=0, atol=1e-12)
    x_final, g_final, _ = seen[-1]
    torch.testing.assert_close(
        torch.from_numpy(g_final), LAM * LIN(x_final) - got.sum(dim=0), rtol=0, atol=1e-12
    )


class Spread:
    """A deterministic stand-in for J posterior draws: copy j of row i is x_i + c_j s(x_i) e_0,
    so r(z_j) = a.x + c_j s(x) and V-hat = lambda a.x + log mean_j exp(lambda c_j s(x))."""

    C = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0], dtype=torch.float64)

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        j = self.C.repeat(x.shape[0] // len(self.C))
        return x + (j * self.scale(x))[:, None] * torch.tensor([1.0, 0.0], dtype=x.dtype)

    @staticmethod
    def scale(x):
        return 1.0 + x[:, 1] ** 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lookahead_log_g_is_the_log_mean_exp_difference(dtype):
    # exact: V-hat_k - V-hat_{k-1} with V-hat the log-mean-exp (a plain mean of lambda r differs
    # by the Jensen gap of the spread, > 0.5 here); a float32 reward's values are combined in
    # float64 all the same
    _, seen = recorded_run(Lookahead(len(Spread.C), Spread()), 6, 4, lambda z: LIN(z).to(dtype))
    prev = torch.zeros(6, dtype=torch.float64)
    for x, g, _ in seen[:-1]:
        r = LIN(x)[:, None] + Spread.C[None, :] * Spread.scale(x)[:, None]  # [n, J]
        r = r.to(dtype).double()
        v = torch.logsumexp(LAM * r, dim=1) - np.log(len(Spread.C))
        assert float((v - LAM * r.mean(dim=1)).min()) > 0.5
        torch.testing.assert_close(torch.from_numpy(g), v - prev, rtol=0, atol=1e-12)
        prev = v
    x, g, _ = seen[-1]
    final = LAM * LIN(x).to(dtype).double() - prev
    torch.testing.assert_close(torch.from_numpy(g), final, rtol=0, atol=1e-12)


def exact_value(model, x, t):
    """log E[exp(lambda a.z) | x_t = x] for the GMM posterior sum_k w_k N(m_k, v_k I)."""
    log_w, mean, var = model.posterior(x, t)
    a = LAM * A
    return torch.logsumexp(log_w + mean @ a + 0.5 * var * (a @ a), dim=1)


def test_lookahead_log_g_against_the_closed_form_value():
    # Without resampling the log-G of steps 1..k sum to V-hat_k, compared with the closed form.
    # J = 16384 exact posterior samples: the Monte-Carlo sd of V-hat is below 0.014 at every step
    # (checked), so 0.07 is 5 sd; a plain mean lambda E[r] is off by the Jensen gap, > 0.5 at
    # t = 0.2 where the posterior is broad (checked).
    model, j = gmm(), 16384
    _, seen = recorded_run(Lookahead(j, ExactKernel()), 5, 5)
    v_hat = torch.zeros(5, dtype=torch.float64)
    for (x, g, _), t in zip(seen[:-1], GRID[1:], strict=False):
        v_hat = v_hat + torch.from_numpy(g)
        v = exact_value(model, x, float(t))
        log_w, mean, var = model.posterior(x, float(t))
        e2 = torch.logsumexp(log_w + mean @ (2 * LAM * A) + 2 * var * LAM**2 * (A @ A), dim=1)
        assert float(((torch.exp(e2 - 2 * v) - 1) / j).sqrt().max()) < 0.014
        if t == GRID[1]:
            assert float((v - LAM * (log_w.exp() * (mean @ A)).sum(dim=1)).min()) > 0.5
        torch.testing.assert_close(v_hat, v, rtol=0, atol=0.07)


@pytest.mark.parametrize("kind", ["diff", "max", "sum"])
def test_overflowing_potential_is_named_on_the_host_copy(kind):
    fk = FKSampler(
        gmm(), LinearReward([1e300, 1e300]), transition=ExactKernel(), time_grid=GRID,
        potential=kind, lambda_=1e300,
    )  # fmt: skip
    state = fk.init(4, shape=(2,), generator=gen(0), dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=r"lambda_ = 1e\+300 is too large"):
        fk.step(state)


@pytest.mark.parametrize("value", [250.0, -250.0])
def test_an_overflowing_temperature_is_named_with_the_largest_reward(value):
    """lambda_ r = 1e307 * 250 overflows float64 (max ~1.8e308) although both are finite: the
    error names lambda_ and the largest |reward|, not the reward."""
    from glass_core.align import fk_steering

    def reward(z):
        return torch.full((z.shape[0],), value, dtype=torch.float64)

    msg = (
        r"^lambda_ = 1e\+307 is too large: lambda_ \* reward overflows float64 "
        r"\(largest \|reward\| 250\)$"
    )
    with pytest.raises(InvalidInputError, match=msg):
        fk_steering(
            gmm(), reward, transition=ExactKernel(), num_particles=4, time_grid=GRID,
            shape=(2,), lambda_=1e307, generator=gen(0), progress=False,
        )  # fmt: skip


def test_lookahead_defaults_and_refusals():
    """16 posterior samples drawn by Glass(inner_steps=4) unless given; a bad count or a
    non-callable transition is named with what was given."""
    from glass_core.transitions import Glass

    default = Lookahead()
    assert default.num_samples == 16 and repr(default.transition) == repr(Glass(inner_steps=4))
    for kw, arg, msg in [
        ({"num_samples": 0}, "num_samples", "`num_samples` must be an integer >= 1, got 0"),
        ({"num_samples": True}, "num_samples", "`num_samples` must be an integer >= 1, got True"),
        ({"transition": "glass"}, "transition", "`transition` must be callable, got str"),
    ]:
        with pytest.raises(InvalidInputError, match=f"^{re.escape(msg)}$") as e:
            Lookahead(**kw)
        assert e.value.arg == arg  # type: ignore[attr-defined]


def test_profile_times_the_lookahead_model_calls_too():
    """profile=True: the model seconds include the lookahead's posterior draws (every call sleeps
    2 ms, so the measured time is at least 2 ms per call, however fast the machine, and at least
    the time spent inside every call); the draws are micro-batched by max_batch too."""
    import time

    class Slow:
        def __init__(self, model):
            self.model, self.schedule, self.calls = model, model.schedule, 0
            self.seconds, self.rows = 0.0, []

        def denoise(self, x, t):
            start = time.perf_counter()
            self.calls += 1
            self.rows.append(x.shape[0])
            time.sleep(0.002)
            out = self.model.denoise(x, t)
            self.seconds += time.perf_counter() - start
            return out

    slow = Slow(gmm())
    res = fk_steering(
        slow, LIN, transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,),
        potential=Lookahead(2, SDE(substeps=2)), generator=gen(0), profile=True, progress=False,
        max_batch=3,
    )  # fmt: skip
    assert slow.calls > len(GRID)  # the steps' calls and the draws'
    assert res.model_time >= 0.002 * slow.calls and res.model_time >= slow.seconds
    assert max(slow.rows) == 3  # the draws' 2 x 4 rows too
