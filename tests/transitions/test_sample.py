"""Whole trajectories: GLASS, ODE and SDE from N(0, I) reproduce the GMM at fine grids; sample()."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from align_fixtures import gmm as gmm2
from glass_core.errors import InvalidInputError
from glass_core.schedules import Cosine, RectifiedFlow
from glass_core.transitions import ODE, SDE, Glass, sample
from stat_checks import Z, assert_moments, energy_pvalue

F64 = torch.float64
N = 20_000


TRAJECTORIES = [
    ("glass-ddpm-heun", Glass("ddpm", inner_steps=10, solver="heun"), 10),
    ("glass-0.4-euler", Glass(0.4, inner_steps=40, solver="euler"), 5),
    ("ode-heun", ODE("heun"), 100),
    ("sde", SDE(), 500),
]


@pytest.mark.parametrize("sched", [RectifiedFlow(), Cosine()], ids=["rf", "cosine"])
@pytest.mark.parametrize("name,tr,steps", TRAJECTORIES, ids=[c[0] for c in TRAJECTORIES])
def test_trajectories_reproduce_the_data(sched, name, tr, steps):
    model = gmm2(sched)
    g = torch.Generator().manual_seed(20)
    res = sample(model, tr, np.linspace(0.0, 1.0, steps + 1), shape=(N, 2), generator=g, dtype=F64)
    out = res.samples
    assert out.shape == (N, 2) and torch.isfinite(out).all()
    assert_moments(out, model.mean(), model.covariance(), what=name)
    k = model.posterior(out, 1.0)[0].argmax(1)  # component occupancy
    freq = torch.bincount(k, minlength=3).double() / N
    assert torch.all((freq - model.weights).abs() < Z * (model.weights / N).sqrt()), freq
    assert energy_pvalue(out, model.sample(N, g)) > 0.01


def test_coarse_sde_is_detectably_wrong():
    """Power check for the trajectory test: a 5-step SDE does not reproduce the data."""
    model = gmm2()
    g = torch.Generator().manual_seed(21)
    out = sample(
        model, SDE(), np.linspace(0.0, 1.0, 6), shape=(N, 2), generator=g, dtype=F64
    ).samples
    assert energy_pvalue(out, model.sample(N, g)) < 0.01


def test_sample_counts_nfe_and_runs_callbacks():
    model = gmm2()
    grid = [0.0, 0.25, 0.5, 1.0]
    seen = []

    def cb(step, t, t_next, x):
        seen.append((step, t, t_next))
        return x.flip(0) if step == 1 else None

    tr = Glass("ddpm", inner_steps=3, solver="heun")
    res = sample(
        model, tr, grid, shape=(4, 2), generator=torch.Generator().manual_seed(0), callback=cb
    )
    assert seen == [(0, 0.0, 0.25), (1, 0.25, 0.5), (2, 0.5, 1.0)]
    assert res.nfe == 6 + 6 + 5  # Heun 2K, last transition singular at s=1 -> 2K-1
    assert res.samples.dtype == torch.float32
    assert sample(model, ODE("euler", 2), grid, x0=torch.zeros(3, 2)).nfe == 6
    assert sample(model, SDE(4), torch.tensor(grid), x0=torch.zeros(3, 2)).nfe == 12


def test_sample_is_seed_reproducible_per_generator_group():
    model = gmm2()
    grid = np.linspace(0, 1, 4)
    tr = Glass(0.4, inner_steps=2)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    both = sample(model, tr, grid, shape=(6, 2), generator=gens, dtype=F64).samples
    for b, s in enumerate((1, 2)):
        one = sample(
            model, tr, grid, shape=(3, 2), generator=torch.Generator().manual_seed(s), dtype=F64
        ).samples
        torch.testing.assert_close(both[3 * b : 3 * b + 3], one, rtol=1e-12, atol=1e-12)


def test_sample_bad_inputs():
    model = gmm2()
    tr = ODE()
    with pytest.raises(InvalidInputError, match="x0"):
        sample(model, tr, [0.0, 1.0])
    with pytest.raises(InvalidInputError, match="x0"):
        sample(model, tr, [0.0, 1.0], x0=torch.zeros(2, 2), shape=(2, 2))
    with pytest.raises(InvalidInputError, match="time_grid"):
        sample(model, tr, [0.0, 0.5, 0.5], shape=(2, 2))
    with pytest.raises(InvalidInputError, match="time_grid"):
        sample(model, tr, [0.0, 1.5], shape=(2, 2))
    with pytest.raises(InvalidInputError, match="time_grid"):
        sample(model, tr, [0.5], shape=(2, 2))
    with pytest.raises(InvalidInputError, match="callback"):
        sample(model, tr, [0.0, 1.0], shape=(2, 2), callback=lambda *a: torch.zeros(3))


GROUPS = "x0 must have shape [B=2, N, ...] with "
SAMPLE_ERRORS = [
    ({}, "give exactly one of x0 and shape"),
    ({"x0": torch.zeros(2, 2), "shape": (2, 2)}, "give exactly one of x0 and shape"),
    (
        {"shape": (2, 2), "time_grid": [0.3, 1.0]},
        "time_grid starts at t = 0.3; noise is only the state at t = 0, so a run from t0 > 0 "
        "needs the particles there as x0=",
    ),
    ({"shape": (2, 2), "num_groups": 2}, GROUPS + "num_groups=2, got None"),
    ({"x0": torch.zeros(4, 2), "num_groups": 2}, GROUPS + "num_groups=2, got (4, 2)"),
    ({"x0": torch.zeros(2, 4), "num_groups": 2}, GROUPS + "num_groups=2, got (2, 4)"),  # no N
    ({"x0": torch.zeros(3, 2, 2), "num_groups": 2}, GROUPS + "num_groups=2, got (3, 2, 2)"),
    (
        {"x0": torch.zeros(3, 2, 2), "generator": [torch.Generator(), torch.Generator()]},
        GROUPS + "a list of 2 generators, got (3, 2, 2)",
    ),
]


@pytest.mark.parametrize(("kw", "msg"), SAMPLE_ERRORS)
def test_sample_names_what_was_given(kw, msg):
    args = {"time_grid": [0.0, 1.0]} | kw
    with pytest.raises(InvalidInputError, match=f"^{re.escape(msg)}$"):
        sample(gmm2(), ODE(), args.pop("time_grid"), **args)


class _Drift:
    """x -> x + (t_next - t): no model call, runs on any device."""

    def __call__(self, model, x, t, t_next, generator=None):
        return x + (t_next - t)

    def nfe(self, schedule, t, t_next):
        return 0


def test_the_start_noise_is_drawn_with_the_given_generator_device_and_dtype():
    """N(0, I) of `shape` from the generator (float32 on the CPU by default), then the chain;
    the meta device stands for "another device" on a CPU-only machine."""
    res = sample(
        gmm2(), _Drift(), [0.0, 0.5, 1.0], shape=(3, 2), generator=torch.Generator().manual_seed(4)
    )
    want = torch.randn(3, 2, generator=torch.Generator().manual_seed(4)) + 0.5 + 0.5
    assert res.samples.dtype == torch.float32 and res.nfe == 0
    assert torch.equal(res.samples, want)
    res = sample(gmm2(), _Drift(), [0.0, 1.0], shape=(3, 2), device="meta", dtype=torch.float64)
    assert res.samples.device.type == "meta" and res.samples.dtype == torch.float64
