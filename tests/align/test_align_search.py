"""value_decoding and beam_search against closed forms on the exact Gaussian mixture.

With a one-step grid [0, 1] and the exact kernel, the candidates are iid data samples z ~ p, so
the reward r = a.z of the kept candidate is the maximum of M iid draws of the mixture of normals
r ~ sum_k w_k N(a.m_k, v_k |a|^2) (value decoding at temperature 0), and beam search keeps the
top B of B x M draws: both have closed-form expectations as order statistics of that law.
"""

import math
import re
import time

import numpy as np
import pytest
import torch
from align_fixtures import GRID, ExactKernel, gen, gmm
from glass_core.align import beam_search, best_of_n, value_decoding
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward
from glass_core.transitions import SDE, Glass
from scipy import integrate, stats
from scipy.special import gammaln

A = torch.tensor([1.0, 0.5], dtype=torch.float64)
LIN = LinearReward(A)
ONE_STEP = [0.0, 1.0]


def reward_law(model):
    """(weights, means, stds) of r = a.z under the mixture."""
    a = A.numpy()
    return (
        model.weights.numpy(),
        model.means.numpy() @ a,
        model.stds.numpy() * float(np.linalg.norm(a)),
    )


def order_stat_means(model, n: int, ranks: list[int]) -> list[float]:
    """E[X_(j)] of the j-th smallest of n iid reward draws, by quadrature on a fine grid:
    density of X_(j) = n!/((j-1)!(n-j)!) F^{j-1} (1-F)^{n-j} f."""
    w, mu, sd = reward_law(model)
    x = np.linspace(mu.min() - 8 * sd.max(), mu.max() + 8 * sd.max(), 40001)
    f = (w[:, None] * stats.norm.pdf(x[None], mu[:, None], sd[:, None])).sum(0)
    cdf = (w[:, None] * stats.norm.cdf(x[None], mu[:, None], sd[:, None])).sum(0)
    cdf = np.clip(cdf, 1e-300, 1 - 1e-16)
    out = []
    for j in ranks:
        log_c = gammaln(n + 1) - gammaln(j) - gammaln(n - j + 1)
        dens = np.exp(log_c + (j - 1) * np.log(cdf) + (n - j) * np.log1p(-cdf)) * f
        out.append(float(integrate.trapezoid(x * dens, x)))
    return out


def test_value_decoding_argmax_is_the_max_of_m_draws():
    model, m, n = gmm(), 8, 4000
    res = value_decoding(
        model, LIN, transition=ExactKernel(), num_particles=n, time_grid=ONE_STEP, shape=(2,),
        num_candidates=m, generator=gen(0), progress=False,
    )  # fmt: skip
    (expected,) = order_stat_means(model, m, [m])
    se = float(res.rewards.std()) / math.sqrt(n)
    assert abs(float(res.rewards.mean()) - expected) < 4 * se, (res.rewards.mean(), expected)
    assert torch.allclose(res.rewards.double(), LIN(res.samples).double())


def test_beam_search_keeps_the_top_b_of_b_times_m():
    model, b, m, groups = gmm(), 4, 3, 3000
    res = beam_search(
        model, LIN, transition=ExactKernel(), beam_width=b, num_candidates=m,
        time_grid=ONE_STEP, shape=(2,), num_groups=groups, generator=gen(1), progress=False,
    )  # fmt: skip
    assert res.rewards.shape == (groups, b) and res.samples.shape == (groups, b, 2)
    assert bool((res.rewards[:, :-1] >= res.rewards[:, 1:]).all())  # best first
    expected = order_stat_means(model, b * m, [b * m - i for i in range(b)])
    for i in range(b):
        col = res.rewards[:, i].double()
        se = float(col.std()) / math.sqrt(groups)
        assert abs(float(col.mean()) - expected[i]) < 4 * se, (i, col.mean(), expected[i])


def test_beam_search_one_step_selects_exactly_from_the_same_draws():
    model, b, m = gmm(), 3, 5
    res = beam_search(
        model, LIN, transition=ExactKernel(), beam_width=b, num_candidates=m,
        time_grid=ONE_STEP, shape=(2,), generator=gen(7), progress=False,
    )  # fmt: skip
    g = gen(7)
    x = torch.randn(b, 2, generator=g)  # the same start and candidates, drawn by hand
    cand = model.sample_transition(x.repeat_interleave(m, 0), 0.0, 1.0, "ddpm", g)
    top = LIN(cand).sort(descending=True, stable=True).indices[:b]
    assert torch.equal(res.samples, cand[top])


@pytest.mark.parametrize("transition", [Glass(), SDE()], ids=["glass", "sde"])
def test_value_decoding_raises_mean_reward_above_unsteered(transition):
    model, n = gmm(), 2000
    kw = dict(transition=transition, num_particles=n, time_grid=GRID, shape=(2,), progress=False)
    plain = best_of_n(model, LIN, generator=gen(2), **kw).rewards.double()
    vd = value_decoding(model, LIN, num_candidates=4, generator=gen(3), **kw).rewards.double()
    gap = float(vd.mean() - plain.mean())
    se = math.sqrt(float(vd.var() + plain.var()) / n)
    assert gap > 10 * se and gap > 1.0, (gap, se)


def test_one_candidate_is_the_plain_chain():
    model = gmm()
    kw = dict(transition=Glass(), num_particles=64, time_grid=GRID, shape=(2,), progress=False)
    plain = best_of_n(model, LIN, generator=gen(4), **kw)
    vd = value_decoding(model, LIN, num_candidates=1, generator=gen(4), **kw)
    assert torch.allclose(vd.samples, plain.samples, atol=1e-5)


def test_huge_temperature_is_unsteered():
    model, n = gmm(), 4000
    kw = dict(transition=ExactKernel(), num_particles=n, time_grid=ONE_STEP, shape=(2,))
    res = value_decoding(model, LIN, num_candidates=8, temperature=1e9, generator=gen(5), **kw)
    w, mu, sd = reward_law(model)
    mean = float(w @ mu)
    var = float(w @ (sd**2 + mu**2)) - mean**2
    assert abs(float(res.rewards.mean()) - mean) < 4 * math.sqrt(var / n)


class RowCounter:
    """Forwards to a model and counts every row it evaluates."""

    def __init__(self, model):
        self.model, self.schedule, self.rows = model, model.schedule, 0

    def denoise(self, x, t):
        self.rows += x.shape[0]
        return self.model.denoise(x, t)

    def velocity(self, x, t):
        self.rows += x.shape[0]
        return self.model.velocity(x, t)


@pytest.mark.parametrize("value", ["denoised", "posterior"])
@pytest.mark.parametrize("transition", [Glass(inner_steps=3), SDE()], ids=["glass", "sde"])
def test_nfe_counts_every_model_evaluation(value, transition):
    counter = RowCounter(gmm())
    res = value_decoding(
        counter, LIN, transition=transition, num_particles=6, time_grid=GRID, shape=(2,),
        num_candidates=3, value=value, value_samples=2, num_groups=2, generator=gen(6),
        max_batch=5, progress=False,
    )  # fmt: skip
    assert res.total_nfe == counter.rows == res.nfe * 12
    beams = RowCounter(gmm())
    res = beam_search(
        beams, LIN, transition=transition, beam_width=3, num_candidates=2, time_grid=GRID,
        shape=(2,), value=value, value_samples=2, generator=gen(6), progress=False,
    )  # fmt: skip
    assert res.total_nfe == beams.rows


class TimeCounter:
    """Forwards to a model and counts its calls at each time."""

    def __init__(self, model):
        self.model, self.schedule, self.times = model, model.schedule, {}

    def _count(self, t):
        key = round(float(t), 12)
        self.times[key] = self.times.get(key, 0) + 1

    def denoise(self, x, t):
        self._count(t)
        return self.model.denoise(x, t)

    def velocity(self, x, t):
        self._count(t)
        return self.model.velocity(x, t)


@pytest.mark.parametrize("search", [value_decoding, beam_search])
def test_the_posterior_value_reuses_the_candidates_denoised(search):
    """value='posterior': D_t of the candidates is computed once per grid time and reused by the
    posterior draws (their first step) and by the next transition, so the model is called once
    at each grid time below 1."""
    counter = TimeCounter(gmm())
    size = {"num_particles": 4} if search is value_decoding else {"beam_width": 4}
    search(
        counter, LIN, transition=Glass(inner_steps=3), time_grid=GRID, shape=(2,),
        num_candidates=2, value="posterior", value_samples=2, generator=gen(6), progress=False,
        **size,
    )  # fmt: skip
    assert [counter.times[round(float(t), 12)] for t in GRID[:-1]] == [1] * (len(GRID) - 1)


@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
@pytest.mark.parametrize(
    "transition", [Glass(inner_steps=3), SDE(substeps=2)], ids=["glass", "sde"]
)
def test_kept_candidates_denoised_value_starts_the_next_transition(search, transition):
    """With value="denoised" the kept candidates' D_t(x), computed to score them, is the next
    transition's first model output: one model call per interior grid time, not two."""
    counter = TimeCounter(gmm())
    kw = dict(transition=transition, time_grid=GRID, shape=(2,), num_candidates=3)
    kw.update(value="denoised", generator=gen(1), progress=False)
    if search == "value_decoding":
        value_decoding(counter, LIN, num_particles=4, **kw)
    else:
        beam_search(counter, LIN, beam_width=2, **kw)
    assert [counter.times[round(float(t), 12)] for t in GRID[1:-1]] == [1] * (len(GRID) - 2)


@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_groups_equal_separate_runs(search):
    model = gmm()
    kw = dict(transition=Glass(inner_steps=3), time_grid=GRID, shape=(2,), progress=False)
    kw["num_particles" if search == "value_decoding" else "beam_width"] = 5
    fn = value_decoding if search == "value_decoding" else beam_search
    extra = {"temperature": 0.5} if search == "value_decoding" else {}
    both = fn(model, LIN, generator=[gen(8), gen(9)], value="posterior", **kw, **extra)
    for b, seed in enumerate((8, 9)):
        one = fn(model, LIN, generator=gen(seed), value="posterior", **kw, **extra)
        assert torch.allclose(both.samples[b], one.samples, atol=1e-5)
        assert torch.allclose(both.value_history[:, b], one.value_history, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name", "msg"),
    [
        ({"num_candidates": 0}, "num_candidates", "must be an integer >= 1, got 0"),
        ({"temperature": -1.0}, "temperature", "must be >= 0 (0: argmax), got -1.0"),
        ({"temperature": math.nan}, "temperature", "must be a finite number, got nan"),
        ({"value": "mean"}, "value", "must be one of ('denoised', 'posterior'), got 'mean'"),
        (
            {"value_samples": 0, "value": "posterior"},
            "value_samples",
            "must be an integer >= 1, got 0",
        ),
        ({"value_transition": SDE()}, "value_transition", "needs value='posterior'"),
        (
            {"value_transition": 3, "value": "posterior"},
            "value_transition",
            "must be callable, got int",
        ),
        (
            {"process_group": object()},
            "process_group",
            "is not supported by value_decoding / beam_search",
        ),
        ({"num_particles": 0}, "num_particles", "must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name, msg):
    args = dict(transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,), progress=False)
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=f"^{re.escape(f'`{name}` {msg}')}$") as info:
        value_decoding(gmm(), LIN, **args)
    assert info.value.arg == name  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "name", "msg"),
    [
        ({"beam_width": 0}, "beam_width", "must be an integer >= 1, got 0"),
        ({"num_candidates": 0}, "num_candidates", "must be an integer >= 1, got 0"),
        (
            {"process_group": object()},
            "process_group",
            "is not supported by value_decoding / beam_search",
        ),
    ],
)
def test_beam_search_names_a_bad_argument(kwargs, name, msg):
    args = dict(transition=SDE(), beam_width=2, time_grid=GRID, shape=(2,), progress=False)
    with pytest.raises(InvalidInputError, match=f"^{re.escape(f'`{name}` {msg}')}$") as info:
        beam_search(gmm(), LIN, **(args | kwargs))
    assert info.value.arg == name  # type: ignore[attr-defined]


def test_nonfinite_value_is_a_reward_error():
    def bad(z):
        return torch.full((z.shape[0],), float("nan"))

    with pytest.raises(RewardError, match="NaN"):
        value_decoding(
            gmm(), bad, transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,),
            progress=False,
        )  # fmt: skip


@pytest.mark.parametrize(("grid", "where"), [(GRID, "step 1 (t=0.2)"), (ONE_STEP, "step 1 (t=1)")])
def test_nonfinite_value_names_the_step_and_the_candidates(grid, where):
    """A NaN value at t < 1 (r of the denoised candidates) or at t = 1 (r of the candidates) is
    reported by the search with its step and time, listing the candidate rows (2 particles x 3
    candidates: rows 0..5)."""

    def bad(z):
        r = z.sum(1)
        r[[1, 4]] = float("nan")
        return r

    msg = rf"reward returned NaN/inf at {re.escape(where)} for particle indices \[1, 4\]$"
    with pytest.raises(RewardError, match=msg):
        value_decoding(
            gmm(), bad, transition=ExactKernel(), num_particles=2, num_candidates=3,
            time_grid=grid, shape=(2,), generator=gen(0), progress=False,
        )  # fmt: skip


@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_searches_start_from_x0_at_t0(search):
    """From given particles at t0 = 0.4 (no `shape`: read from x0), one step with one candidate
    per particle draws what best_of_n draws from x0 with the same generator (beam search
    returns them best first). x0 is checked against the run like every start."""
    model, n, grid = gmm(), 5, [0.4, 1.0]
    x0 = model.sample_marginal(n, 0.4, gen(1))
    kw = dict(transition=ExactKernel(), time_grid=grid, num_candidates=1, progress=False)
    fn = value_decoding if search == "value_decoding" else beam_search
    size = {"num_particles" if search == "value_decoding" else "beam_width": n}
    res = fn(model, LIN, x0=x0, generator=gen(2), **size, **kw)
    plain = best_of_n(
        model, LIN, transition=ExactKernel(), num_particles=n, time_grid=grid, x0=x0,
        generator=gen(2), progress=False,
    )  # fmt: skip
    order = slice(None) if search == "value_decoding" else plain.rewards.argsort(descending=True)
    torch.testing.assert_close(res.samples, plain.samples[order], rtol=0, atol=0)
    msg = r"^`x0` holds 4 particles per group \(read as"
    with pytest.raises(InvalidInputError, match=msg):
        fn(model, LIN, x0=x0[:4], generator=gen(2), **size, **kw)


@pytest.mark.parametrize("select", ["beam", "value_decoding", "value_decoding_soft"])
def test_selectors_index_on_the_scores_device(select: str) -> None:
    """The kept candidates' flat indices are built on the scores' device (the meta device stands
    for an accelerator): no host tensor enters the gather of an SMC step. At a positive
    temperature the Gumbel noise is drawn there too (from a CPU generator or none)."""
    from glass_core.align.beam import top_per_group
    from glass_core.align.value_decoding import per_particle_selector

    fn = {
        "beam": top_per_group,
        "value_decoding": per_particle_selector(0.0),
        "value_decoding_soft": per_particle_selector(1.0),
    }[select]
    for noise in (None, gen(0)):
        idx = fn(torch.zeros(2, 3, 4, device="meta"), noise)
        assert idx.device.type == "meta" and idx.shape == (6,)


def test_beam_ties_go_to_the_lowest_candidate_index():
    """Equal values keep the lowest candidate index first, however wide the group (torch's
    unstable sort reorders ties from 17 elements on): with a constant reward beam search keeps
    the first B candidates, those of particles 0..B/M-1, in order."""
    from glass_core.align.beam import top_per_group

    scores = torch.tensor([[1.0, 2.0, 1.0, 2.0, 0.0] * 6]).reshape(1, 5, 6)  # 30 per group
    want = [i for i in range(30) if i % 5 in (1, 3)][:5]
    assert top_per_group(torch.cat([scores, scores]), None).tolist() == want + [
        30 + i for i in want
    ]
    model, b, m = gmm(), 6, 4
    res = beam_search(
        model, lambda z: torch.zeros(z.shape[0]), transition=ExactKernel(), beam_width=b,
        num_candidates=m, time_grid=ONE_STEP, shape=(2,), generator=gen(7), progress=False,
    )  # fmt: skip
    g = gen(7)
    x = torch.randn(b, 2, generator=g)  # the same start and candidates, drawn by hand
    cand = model.sample_transition(x.repeat_interleave(m, 0), 0.0, 1.0, "ddpm", g)
    assert torch.equal(res.samples, cand[:b])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_value_decoding_selects_with_softmax_probabilities(temperature):
    """A positive temperature keeps candidate m with probability softmax(value / temperature)_m
    (a Gumbel-max draw); every row has the values (0, 1, 2), so the kept indices' frequencies
    over 20000 rows are binomial around it (4 standard errors)."""
    from glass_core.align.value_decoding import per_particle_selector

    n, values = 20000, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    scores = values.expand(2, n // 2, 3)  # two groups, drawn from two generators
    idx = per_particle_selector(temperature)(scores, [gen(1), gen(2)])
    assert idx.shape == (n,)
    choice = idx - torch.arange(n) * 3
    freq = torch.bincount(choice, minlength=3).double() / n
    p = torch.softmax(values / temperature, 0)
    assert bool(((freq - p).abs() < 4 * (p * (1 - p) / n).sqrt()).all()), (freq, p)
    assert per_particle_selector(0.0)(scores, None).tolist() == (torch.arange(n) * 3 + 2).tolist()


def test_denoised_value_is_the_reward_of_the_denoised_candidate():
    """value="denoised" (the default) scores a candidate x' at t < 1 by r(D_t(x')): with one
    candidate per particle and the exact kernel the kept particles are the hand-drawn chain, so
    the value history at t = 0.5 is r(D_0.5) of those draws. The posterior value's default
    sampler is Glass(inner_steps=4)."""
    from glass_core.align._search import CandidateValue

    model, n = gmm(), 6
    res = value_decoding(
        model, LIN, transition=ExactKernel(), num_particles=n, num_candidates=1,
        time_grid=[0.0, 0.5, 1.0], shape=(2,), generator=gen(3), progress=False,
    )  # fmt: skip
    g = gen(3)
    x = model.sample_transition(torch.randn(n, 2, generator=g), 0.0, 0.5, "ddpm", g)
    torch.testing.assert_close(res.value_history[0], LIN(model.denoise(x, 0.5)).double())
    assert repr(CandidateValue("posterior", 2, None).transition) == repr(Glass(inner_steps=4))


class SlowCounter:
    """Forwards to a model; every call sleeps 2 ms and is counted."""

    def __init__(self, model):
        self.model, self.schedule, self.calls = model, model.schedule, 0

    def denoise(self, x, t):
        self.calls += 1
        time.sleep(0.002)
        return self.model.denoise(x, t)

    def velocity(self, x, t):
        self.calls += 1
        time.sleep(0.002)
        return self.model.velocity(x, t)


@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_search_times_every_model_call_only_when_profiled(search):
    """profile=True: `model_time` holds the seconds of every model call (each sleeps 2 ms), the
    candidates' and the posterior value's draws, inside the run's `wall_time`; the searches
    do not time the reward (`reward_time` NaN). Without profile the model time is NaN too."""
    fn = value_decoding if search == "value_decoding" else beam_search
    size = {"num_particles" if search == "value_decoding" else "beam_width": 3}
    kw = dict(transition=SDE(), time_grid=GRID, shape=(2,), num_candidates=2, progress=False)
    kw.update(value="posterior", value_samples=2, value_transition=SDE(substeps=2), **size)
    slow = SlowCounter(gmm())
    start = time.perf_counter()
    res = fn(slow, LIN, generator=gen(0), profile=True, **kw)
    elapsed = time.perf_counter() - start
    assert slow.calls > len(GRID)  # the candidates' calls and the value draws'
    assert 0.002 * slow.calls <= res.model_time <= res.wall_time <= elapsed
    assert math.isnan(res.reward_time)
    start = time.perf_counter()
    plain = fn(gmm(), LIN, generator=gen(0), **kw)
    elapsed = time.perf_counter() - start
    assert math.isnan(plain.model_time) and math.isnan(plain.reward_time)
    assert 0 < plain.wall_time <= elapsed


class RowRecorder(ExactKernel):
    """The exact kernel, recording the rows of every call."""

    def __init__(self):
        super().__init__()
        self.rows: list[int] = []

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        self.rows.append(x.shape[0])
        return super().__call__(model, x, t, t_next, generator, denoised=denoised)


@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_search_defaults_to_four_candidates_and_four_value_samples(search):
    """By default each of the 3 particles (beams) is expanded into 4 candidates per step, and
    value="posterior" scores each candidate with 4 posterior draws (one batch of 3 x 4 x 4) of
    the given `value_transition`."""
    fn = value_decoding if search == "value_decoding" else beam_search
    size = {"num_particles" if search == "value_decoding" else "beam_width": 3}
    expand, draws = RowRecorder(), RowRecorder()
    fn(
        gmm(), LIN, transition=expand, time_grid=[0.0, 0.5, 1.0], shape=(2,), value="posterior",
        value_transition=draws, generator=gen(0), progress=False, **size,
    )  # fmt: skip
    assert expand.rows == [12, 12] and draws.rows == [48]


def test_soft_selection_is_gumbel_max_with_float64_uniforms_of_the_generator():
    """At temperature tau > 0 the kept candidate of each row is argmax(value / tau + G) with
    G = -log(-log U), one float64 uniform U per candidate drawn from the run's generator (row
    by row, a list of generators splitting the rows by group): recomputed by hand here."""
    from glass_core.align.value_decoding import per_particle_selector

    scores = torch.randn(2, 500, 3, generator=gen(4), dtype=torch.float64)
    idx = per_particle_selector(0.7)(scores, [gen(5), gen(6)])
    u = torch.cat([torch.rand(500, 3, generator=gen(s), dtype=torch.float64) for s in (5, 6)])
    want = (scores.reshape(1000, 3) / 0.7 - torch.log(-torch.log(u))).argmax(dim=1)
    assert torch.equal(idx, torch.arange(1000) * 3 + want)


@pytest.mark.parametrize("dtype", [None, torch.float64])
@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_search_rewards_come_in_the_particles_dtype(search, dtype):
    """The result's rewards are r(z) of the kept samples in the particles' dtype (float32 by
    default), and the value history is float64 whatever it."""
    fn = value_decoding if search == "value_decoding" else beam_search
    size = {"num_particles" if search == "value_decoding" else "beam_width": 3}
    res = fn(
        gmm(), LIN, transition=ExactKernel(), time_grid=[0.0, 0.5, 1.0], shape=(2,),
        num_candidates=2, dtype=dtype, generator=gen(0), progress=False, **size,
    )  # fmt: skip
    assert res.samples.dtype == res.rewards.dtype == (dtype or torch.float32)
    assert res.value_history.dtype == torch.float64
    torch.testing.assert_close(res.rewards, LIN(res.samples).to(res.rewards.dtype))


@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_search_scores_a_bfloat16_reward_in_float64(search):
    """A reward returning bfloat16 (NumPy has no such dtype) is scored in float64 at every
    step, the denoised value's too: the history holds its values exactly."""
    fn = value_decoding if search == "value_decoding" else beam_search
    size = {"num_particles" if search == "value_decoding" else "beam_width": 3}

    def low(z):
        return LIN(z).to(torch.bfloat16)

    res = fn(
        gmm(), low, transition=ExactKernel(), time_grid=[0.0, 0.5, 1.0], shape=(2,),
        num_candidates=2, generator=gen(0), progress=False, **size,
    )  # fmt: skip
    assert res.value_history.dtype == torch.float64
    torch.testing.assert_close(res.value_history[-1], low(res.samples).double(), rtol=0, atol=0)


@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("search", ["value_decoding", "beam_search"])
def test_search_results_are_unweighted_with_a_group_axis_only_for_groups(search, groups):
    """The kept particles carry uniform log-weights -log N, shaped like the rewards: [N] for one
    group, [B, N] when groups are asked for (as every other field)."""
    fn = value_decoding if search == "value_decoding" else beam_search
    size = {"num_particles" if search == "value_decoding" else "beam_width": 3}
    res = fn(
        gmm(), LIN, transition=ExactKernel(), time_grid=ONE_STEP, shape=(2,), num_candidates=2,
        num_groups=groups, generator=gen(0), progress=False, **size,
    )  # fmt: skip
    lead = (3,) if groups is None else (groups, 3)
    assert res.samples.shape == (*lead, 2) and res.rewards.shape == lead
    assert res.value_history.shape == (1, *lead) and res.ancestors is None
    want = torch.full(lead, -math.log(3), dtype=torch.float64)
    torch.testing.assert_close(res.log_weights, want, rtol=0, atol=1e-15)
    assert res.total_nfe == res.nfe * 3 * (groups or 1)
