"""The public vocabulary: `num_particles` for the particle count of every algorithm,
`resampling=` for the scheme, one result base with `best()`; the draft names of the unreleased
0.1.0 are gone."""

from __future__ import annotations

import pytest
import torch
from align_fixtures import GRID, gen, gmm
from glass_core.align import (
    BestOfNResult,
    FKResult,
    GuidanceResult,
    SamplingResult,
    best_of_n,
    fk_steering,
    reward_guidance,
)
from glass_core.rewards import LinearReward
from glass_core.transitions import SDE, Glass

LIN = LinearReward([1.0, 0.5])
COMMON = dict(time_grid=GRID, shape=(2,), dtype=torch.float64, progress=False)


def _bon(**kw):
    return best_of_n(gmm(), LIN, transition=SDE(), generator=gen(0), **COMMON, **kw)


def _fk(**kw):
    return fk_steering(
        gmm(), LIN, transition=Glass(inner_steps=2), generator=gen(0), **COMMON, **kw
    )


def _guidance(**kw):
    return reward_guidance(
        gmm(), LIN, transition=SDE(), scale=0.5, generator=gen(0), **COMMON, **kw
    )


@pytest.mark.parametrize(
    ("run", "old"),
    [(_bon, {"n": 8}), (_guidance, {"num_samples": 8}), (_fk, {"resample": "residual"})],
    ids=["best_of_n-n", "reward_guidance-num_samples", "fk_steering-resample"],
)
def test_names_never_released_are_not_accepted(run, old):
    """0.1.0 was never released: its draft keyword names are plain errors, not aliases."""
    with pytest.raises(TypeError, match="unexpected keyword"):
        run(num_particles=8, **old)


def test_every_result_shares_the_base_fields_and_best():
    results = [_bon(num_particles=8), _fk(num_particles=8), _guidance(num_particles=8)]
    for res, cls in zip(results, (BestOfNResult, FKResult, GuidanceResult), strict=True):
        assert isinstance(res, cls) and isinstance(res, SamplingResult)
        assert res.samples.shape == (8, 2) and res.rewards.shape == (8,)
        assert res.log_weights.shape == (8,) and res.log_weights.dtype == torch.float64
        assert float(torch.logsumexp(res.log_weights, 0)) == pytest.approx(0.0, abs=1e-12)
        assert res.total_nfe == res.nfe * 8 and res.wall_time > 0
        best = res.best()
        assert torch.equal(best, res.samples[res.rewards.argmax()])
    assert results[1].ancestors is not None and results[0].ancestors is None


def test_profile_measures_model_and_reward_time_in_every_algorithm():
    for run in (_bon, _fk, _guidance):
        res = run(num_particles=4)
        assert res.model_time != res.model_time  # NaN unless profiling
        res = run(num_particles=4, profile=True)
        assert 0 < res.model_time <= res.wall_time and 0 < res.reward_time <= res.wall_time


def test_best_of_n_best_is_the_base_method():
    res = _bon(num_particles=8)
    assert type(res.best()) is torch.Tensor and torch.equal(res.best(), res.best_sample)


@pytest.mark.parametrize(
    "old",
    [
        "glass_core.steer",
        "glass_core.transitions.sample",
        "glass_core.models.default",
        "glass_core.demo",
        "glass_core.demo_config",
        "glass_core.evidence",
        "glass_core._deprecation",
    ],
)
def test_draft_module_paths_are_gone(old: str) -> None:
    import importlib

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
