"""best_of_n and reward guidance."""

import math
import warnings

import numpy as np
import pytest
import torch
from align_fixtures import GRID, gen, gmm
from glass_core.align import best_of_n, guided, reward_guidance
from glass_core.errors import InvalidInputError, RankFailedError, RewardError
from glass_core.rewards import LinearReward, QuadraticReward
from glass_core.schedules import Cosine
from glass_core.transitions import ODE, SDE, Glass

LIN = LinearReward([1.0, 0.5])


def bon(**kw):
    args = dict(
        transition=Glass(inner_steps=3),
        num_particles=32,
        time_grid=GRID,
        shape=(2,),
        generator=gen(0),
        dtype=torch.float64,
        progress=False,
    )
    args.update(kw)
    return fk_free_best(args)


def fk_free_best(args):
    return best_of_n(gmm(), args.pop("reward", LIN), **args)


def test_best_of_n_picks_the_max():
    res = bon()
    assert res.samples.shape == (32, 2) and res.rewards.shape == (32,)
    assert float(res.best_reward) == float(res.rewards.max())
    assert torch.equal(res.best(), res.samples[res.best_index])
    assert float(LIN(res.best()[None])[0]) == pytest.approx(float(res.best_reward))
    torch.testing.assert_close(LIN(res.samples), res.rewards)
    assert res.nfe == 5 * 3 and res.total_nfe == 5 * 3 * 32
    assert res.ancestors is None  # unweighted: uniform log-weights -log N
    want = torch.full((32,), -math.log(32), dtype=res.log_weights.dtype)
    torch.testing.assert_close(res.log_weights, want)
    profiled = bon(profile=True)
    assert 0 < profiled.reward_time < profiled.wall_time and math.isnan(res.reward_time)


def test_best_of_n_keeps_a_bfloat16_reward_in_its_dtype():
    """A reward returning bfloat16 (NumPy has no such dtype) is checked and ranked as given:
    the rewards and the best reward stay bfloat16, the best is their maximum."""

    def low(z):
        return LIN(z).to(torch.bfloat16)

    res = bon(reward=low)
    assert res.rewards.dtype == res.best_reward.dtype == torch.bfloat16
    assert torch.equal(res.rewards, low(res.samples))
    assert float(res.best_reward) == float(res.rewards.max())


def test_best_of_n_groups_equal_separate_runs_and_seeds():
    grouped = bon(generator=[gen(1), gen(2)])
    assert grouped.samples.shape == (2, 32, 2) and grouped.best().shape == (2, 2)
    assert grouped.rewards.shape == grouped.log_weights.shape == (2, 32)
    assert grouped.best_reward.shape == grouped.best_index.shape == (2,)
    assert grouped.total_nfe == grouped.nfe * 32 * 2
    for b, s in enumerate((1, 2)):
        single = bon(generator=gen(s))
        torch.testing.assert_close(grouped.samples[b], single.samples, rtol=1e-12, atol=1e-12)
        assert int(grouped.best_index[b]) == int(single.best_index)
    assert torch.equal(bon(generator=gen(1)).samples, bon(generator=gen(1)).samples)
    assert not torch.equal(bon(generator=gen(1)).samples, bon(generator=gen(2)).samples)


def test_best_of_n_ode_is_deterministic_given_noise():
    a = bon(transition=ODE(), generator=gen(3))
    b = bon(transition=ODE(), generator=gen(3))
    assert torch.equal(a.best(), b.best())


def test_best_of_n_nan_reward_raises():
    def bad(z):
        r = z[:, 0].clone()
        r[7] = float("nan")
        return r

    # the deferred check after the gather (naming the step), not a per-rank check before it
    msg = r"^reward returned NaN/inf at step 5 \(t=1\) for particle indices \[7\]$"
    with pytest.raises(RewardError, match=msg):
        bon(reward=bad)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"num_particles": 0}, "num_particles"),
        ({"time_grid": [0.0, 1.2]}, "time_grid"),
        ({"shape": "x"}, "shape"),
        ({"transition": None}, "transition"),
    ],
)
def test_best_of_n_bad_arguments(kw, name):
    with pytest.raises(InvalidInputError, match=f"`{name}`"):
        bon(**kw)


# -- guidance -------------------------------------------------------------------------------------


def test_guided_denoiser_formula_and_window():
    model = gmm()
    g = guided(model, LIN, scale=0.7, window=(0.2, 0.7))
    x = torch.randn(6, 2, dtype=torch.float64, generator=gen(0))
    sch = model.schedule
    for t in (0.3, 0.7):
        want = model.denoise(x, t) + 0.7 * sch.sigma(t) ** 2 / sch.alpha(t) * LIN.a
        torch.testing.assert_close(g.denoise(x, t), want)
    for t in (0.1, 0.75, 0.0):
        torch.testing.assert_close(g.denoise(x, t), model.denoise(x, t))
    # per-row times: rows inside and outside the window
    tt = torch.tensor([0.1, 0.3, 0.5, 0.8, 0.2, 0.7], dtype=torch.float64)
    got = g.denoise(x, tt)
    for i, t in enumerate(tt.tolist()):
        torch.testing.assert_close(got[i : i + 1], g.denoise(x[i : i + 1], t))


def test_guided_per_row_time_zero_is_not_guided():
    """alpha(0) = 0 for the rectified flow: a row at t = 0 gets no guidance, inside the window,
    with no division by zero (no warning)."""
    model = gmm()
    g = guided(model, LIN, scale=0.7)
    x = torch.randn(2, 2, dtype=torch.float64, generator=gen(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = g.denoise(x, torch.tensor([0.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(got[:1], model.denoise(x[:1], 0.0))
    torch.testing.assert_close(got[1:], g.denoise(x[1:], 0.5))


def test_guided_outside_the_window_does_not_evaluate_the_reward():
    """Outside the window (or with scale 0) the guided denoiser is the model's: the reward and
    its gradient are not computed at all."""
    calls = []

    def counted(z):
        calls.append(z.shape[0])
        return LIN(z)

    model = gmm()
    x = torch.randn(3, 2, dtype=torch.float64, generator=gen(0))
    g = guided(model, counted, scale=2.0, window=(0.4, 0.6))
    for t in (0.1, 0.8):
        torch.testing.assert_close(g.denoise(x, t), model.denoise(x, t))
    torch.testing.assert_close(guided(model, counted, 0.0).denoise(x, 0.5), model.denoise(x, 0.5))
    assert calls == []
    g.denoise(x, 0.5)  # inside: c = 2 * 0.25 / 0.5 = 1
    assert calls == [3]


def test_guided_per_row_times_as_numpy_equal_tensor_times():
    model = gmm()
    g = guided(model, LIN, scale=0.7, window=(0.2, 0.7))
    x = torch.randn(6, 2, dtype=torch.float64, generator=gen(0))
    tt = torch.tensor([0.1, 0.3, 0.5, 0.8, 0.2, 0.7], dtype=torch.float64)
    torch.testing.assert_close(g.denoise(x, tt.numpy()), g.denoise(x, tt))
    torch.testing.assert_close(g.velocity(x, tt.numpy()), g.velocity(x, tt))


def test_guided_0d_tensor_time_is_one_time_for_all_rows():
    """A 0-d tensor time is a single time, as the float: same coefficient on every row, inside
    the window (0.3) and outside it (0.1)."""
    g = guided(gmm(), LIN, scale=0.7, window=(0.2, 0.7))
    x = torch.randn(6, 2, dtype=torch.float64, generator=gen(0))
    for t in (0.3, 0.1):
        tt = torch.tensor(t, dtype=torch.float64)
        torch.testing.assert_close(g.denoise(x, tt), g.denoise(x, t))
        torch.testing.assert_close(g.velocity(x, tt), g.velocity(x, t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guided_per_row_times_keep_the_particles_dtype(dtype):
    """Per-row coefficients are made in the particles' dtype: float32 rows stay float32 (not
    promoted by float64 schedule values) and equal the scalar-time call row by row."""
    g = guided(gmm(), LIN, scale=0.7, window=(0.2, 0.7))
    x = torch.randn(4, 2, generator=gen(0)).to(dtype)
    tt = torch.tensor([0.1, 0.3, 0.5, 0.8], dtype=torch.float64)
    for call in (g.denoise, g.velocity):
        got = call(x, tt)
        assert got.dtype == dtype
        want = torch.cat([call(x[i : i + 1], t) for i, t in enumerate(tt.tolist())])
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_guided_per_row_times_of_any_float_dtype(dtype):
    """Per-row times in float32 or bfloat16 (NumPy has no bfloat16) give what their values in
    float64 give: the guided wrapper reads times as the models do."""
    g = guided(gmm(), LIN, scale=0.7, window=(0.2, 0.7))
    x = torch.randn(4, 2, dtype=torch.float64, generator=gen(0))
    tt = torch.tensor([0.1, 0.3, 0.5, 0.8], dtype=dtype)
    for call in (g.denoise, g.velocity):
        torch.testing.assert_close(call(x, tt), call(x, tt.double()), rtol=0, atol=0)


@pytest.mark.parametrize("schedule", [None, Cosine()], ids=["rf", "cosine"])
def test_guided_velocity_is_eq43(schedule):
    """Eq. (43) at one time and at per-row times; the cosine schedule has d_sigma != -1, where
    the rectified flow's d_sigma = -1 would hide a wrong power of it."""
    model = gmm(schedule)
    g = guided(model, LIN, scale=1.3)
    x = torch.randn(5, 2, dtype=torch.float64, generator=gen(1))
    sch = model.schedule

    def c_t(t):  # scale * nu_t^2 / 2
        a, s, da, ds = sch.alpha(t), sch.sigma(t), sch.d_alpha(t), sch.d_sigma(t)
        return 1.3 * (da * s**2 / a - ds * s)

    t = 0.4
    torch.testing.assert_close(g.velocity(x, t), model.velocity(x, t) + c_t(t) * LIN.a)
    tt = np.array([0.2, 0.4, 0.5, 0.7, 0.9])
    want = model.velocity(x, tt) + torch.as_tensor(c_t(tt))[:, None] * LIN.a
    torch.testing.assert_close(g.velocity(x, tt), want)


def test_guided_gradient_is_detached_and_nonlinear_reward():
    model = gmm()
    quad = QuadraticReward([1.0, -1.0], 0.5)
    g = guided(model, quad, scale=0.2)
    x = torch.randn(4, 2, dtype=torch.float64, generator=gen(2))
    d = model.denoise(x, 0.5)
    want = d + 0.2 * (0.5**2 / 0.5) * (-(d - quad.center) / 0.25)
    torch.testing.assert_close(g.denoise(x, 0.5), want)


@pytest.mark.parametrize(
    "transition", [Glass(inner_steps=4), SDE(), ODE()], ids=["glass", "sde", "ode"]
)
def test_reward_guidance_raises_reward(transition):
    kw = dict(
        transition=transition,
        time_grid=np.linspace(0, 1, 11),
        num_particles=2000,
        shape=(2,),
        dtype=torch.float64,
        progress=False,
    )
    base = reward_guidance(gmm(), LIN, scale=0.0, generator=gen(5), **kw)
    up = reward_guidance(gmm(), LIN, scale=1.0, window=(0.2, 0.9), generator=gen(5), **kw)
    assert float(up.rewards.mean()) > float(base.rewards.mean()) + 0.3
    assert up.nfe == base.nfe  # reward gradients are not model evaluations


def test_reward_guidance_reproducible_and_grouped():
    kw = dict(
        transition=Glass(inner_steps=2),
        time_grid=GRID,
        scale=0.5,
        num_particles=8,
        shape=(2,),
        dtype=torch.float64,
        progress=False,
    )
    a = reward_guidance(gmm(), LIN, generator=gen(9), **kw)
    b = reward_guidance(gmm(), LIN, generator=gen(9), **kw)
    assert torch.equal(a.samples, b.samples)
    grouped = reward_guidance(gmm(), LIN, generator=[gen(9), gen(10)], **kw)
    torch.testing.assert_close(grouped.samples[0], a.samples, rtol=1e-12, atol=1e-12)
    assert grouped.rewards.shape == grouped.log_weights.shape == (2, 8)
    assert grouped.total_nfe == grouped.nfe * 16 and a.total_nfe == a.nfe * 8
    kw.pop("num_particles")
    assert reward_guidance(gmm(), LIN, generator=gen(9), **kw).samples.shape == (1, 2)


def test_reward_guidance_honours_the_window_and_checks_the_rewards():
    """A window holding none of the model's evaluation times (the SDE evaluates at the grid's
    times before 1) guides nothing: the run equals the unguided one. The final rewards are
    checked (with scale 0 the reward is evaluated only there)."""
    kw = dict(transition=SDE(), time_grid=GRID, num_particles=8, shape=(2,), progress=False)
    kw.update(dtype=torch.float64)
    base = reward_guidance(gmm(), LIN, scale=0.0, generator=gen(3), **kw)
    off = reward_guidance(gmm(), LIN, scale=1.0, window=(0.9, 1.0), generator=gen(3), **kw)
    assert torch.equal(off.samples, base.samples)

    def nan_reward(z):
        return z.sum(1) * math.nan

    with pytest.raises(RewardError, match="NaN"):
        reward_guidance(gmm(), nan_reward, scale=0.0, generator=gen(3), **kw)


def test_reward_guidance_times_model_and_reward_only_when_profiled():
    """profile=True measures the model and reward seconds (inside the wall time); without it
    both are NaN, as for best_of_n."""
    kw = dict(transition=Glass(inner_steps=2), time_grid=GRID, scale=0.5, num_particles=8)
    kw.update(shape=(2,), dtype=torch.float64, progress=False)
    res = reward_guidance(gmm(), LIN, generator=gen(9), **kw)
    assert math.isnan(res.model_time) and math.isnan(res.reward_time)
    prof = reward_guidance(gmm(), LIN, generator=gen(9), profile=True, **kw)
    assert 0 < prof.model_time < prof.wall_time and 0 < prof.reward_time < prof.wall_time


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"scale": math.nan}, "scale"),
        ({"window": (0.5, 0.1)}, "window"),
        ({"window": (0.0, 2.0)}, "window"),
    ],
)
def test_guided_bad_arguments(kw, name):
    args = dict(scale=1.0, window=(0.0, 1.0))
    args.update(kw)
    with pytest.raises(InvalidInputError, match=f"`{name}`"):
        guided(gmm(), LIN, **args)
    with pytest.raises(InvalidInputError, match="`reward`"):
        guided(gmm(), 3, 1.0)


def test_guided_nan_gradient_reward_raises():
    def bad(z):
        return z.sum(1) * float("nan")

    with pytest.raises(RewardError):
        guided(gmm(), bad, 1.0).denoise(torch.zeros(3, 2, dtype=torch.float64), 0.5)


def test_guidance_without_a_window_guides_every_time():
    """window=None is the whole of [0, 1] (shown as such), not an empty window."""
    model = gmm()
    g = guided(model, LIN, scale=0.7, window=None)
    assert g.window == (0.0, 1.0)
    assert repr(g) == f"guided({model!r}, scale=0.7, window=(0.0, 1.0))"
    x = torch.randn(3, 2, dtype=torch.float64, generator=gen(0))
    sch = model.schedule
    for t in (0.01, 0.5, 0.99):
        want = model.denoise(x, t) + 0.7 * sch.sigma(t) ** 2 / sch.alpha(t) * LIN.a
        torch.testing.assert_close(g.denoise(x, t), want)


def test_uniform_log_weights_of_one_group_and_of_several():
    """-log N for every particle, for [N] rewards as for [B, N] ones (N the last dimension)."""
    from glass_core.align.results import uniform_log_weights

    one = uniform_log_weights(torch.zeros(5))
    several = uniform_log_weights(torch.zeros(2, 3))
    assert one.shape == (5,) and one.dtype == torch.float64
    assert torch.equal(one, torch.full((5,), -math.log(5), dtype=torch.float64))
    assert torch.equal(several, torch.full((2, 3), -math.log(3), dtype=torch.float64))


def test_one_rank_sharded_best_of_n_names_the_rank_and_the_step():
    """With torch.distributed up (one gloo rank in this process), a sharded best_of_n holds every
    sample on its rank (`local_samples`), names the rank holding NaN rewards, and reports a
    failing reward with the step it failed at."""
    import socket

    import torch.distributed as dist
    from glass_core.align.distributed import Sharding

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    kw = dict(transition=SDE(), num_particles=8, time_grid=GRID, shape=(2,), progress=False)

    def run(reward):
        return best_of_n(
            gmm(), reward, process_group=Sharding(timeout=30.0), generator=gen(0), **kw
        )

    def nan_at_3(z):
        r = LIN(z).clone()
        r[3] = math.nan
        return r

    def boom(z):
        raise ValueError("boom")

    try:
        res = run(LIN)
        assert (res.rank, res.world_size) == (0, 1)
        assert torch.equal(res.local_samples, res.samples)
        assert float(res.best_reward) == float(res.rewards.max())
        msg = (
            r"^reward returned NaN/inf at step 5 \(t=1\) for particle indices \[3\] \(held by rank"
        )
        with pytest.raises(RewardError, match=msg):
            run(nan_at_3)
        with pytest.raises(
            RankFailedError, match=r"^rank 0 of 1 failed at step 5: ValueError: boom$"
        ):
            run(boom)
    finally:
        dist.destroy_process_group()
