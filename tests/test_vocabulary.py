"""The public vocabulary: `num_particles` for the particle count of every algorithm,
`resampling=` for the scheme, one result base with `best()`; the old names still work for one
release and warn."""

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
from glass_core.errors import InvalidInputError
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
    ("run", "old", "new"),
    [
        (_bon, {"n": 8}, {"num_particles": 8}),
        (_guidance, {"num_samples": 8}, {"num_particles": 8}),
        (
            _fk,
            {"num_particles": 8, "resample": "residual"},
            {"num_particles": 8, "resampling": "residual"},
        ),
    ],
    ids=["best_of_n-n", "reward_guidance-num_samples", "fk_steering-resample"],
)
def test_old_argument_names_warn_and_give_the_same_result(run, old, new):
    with pytest.warns(DeprecationWarning, match="deprecated"):
        a = run(**old)
    b = run(**new)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.rewards, b.rewards)
    with pytest.raises(InvalidInputError, match="pass only"):
        run(**{**old, **new})


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


def test_best_of_n_best_attribute_still_works_as_a_tensor_with_a_warning():
    res = _bon(num_particles=8)
    with pytest.warns(DeprecationWarning, match=r"best\(\)"):
        assert torch.equal(res.best + 0, res.best_sample)
    assert type(res.best()) is torch.Tensor


def test_old_module_paths_warn_and_forward():
    import glass_core
    from glass_core.steering import steer as steer_fn
    from glass_core.transitions.sampling import sample as sample_fn

    assert glass_core.steer is steer_fn  # the function, not a module
    import glass_core.transitions as tr

    assert tr.sample is sample_fn
    with pytest.warns(DeprecationWarning, match="glass_core.steering"):
        from glass_core.steer import steer as old_steer
    assert old_steer is steer_fn
    with pytest.warns(DeprecationWarning, match="glass_core.transitions.sampling"):
        from glass_core.transitions.sample import sample as old_sample
    assert old_sample is sample_fn


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("glass_core.models.default", "glass_core.digits.assets", "load_default_reward"),
        ("glass_core.demo", "glass_core.digits.demo", "run_demo"),
        ("glass_core.demo_config", "glass_core.digits.config", "DemoConfig"),
        ("glass_core.evidence", "glass_core.digits.evidence", "run_cell"),
    ],
)
def test_moved_digits_modules_warn_and_forward(old: str, new: str, name: str) -> None:
    import importlib

    obj = getattr(importlib.import_module(new), name)
    with pytest.warns(DeprecationWarning, match=f"use {new}.{name}"):
        old_obj = getattr(importlib.import_module(old), name)
    assert old_obj is obj
    with pytest.raises(AttributeError):
        _ = importlib.import_module(old).no_such_name


def test_old_default_path_forwards_the_adapter_to_its_own_module() -> None:
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    with pytest.warns(DeprecationWarning, match="glass_core.models.diffusers.unconditional"):
        from glass_core.models.default import from_unconditional_pipeline as old
    assert old is from_unconditional_pipeline


def test_package_paths_to_the_digits_demo_do_not_warn() -> None:
    """The CLI, the benches and the package itself use the new paths: loading and using them
    with every warning an error raises nothing."""
    import subprocess
    import sys

    script = (
        "import warnings\n"
        "warnings.filterwarnings('error', '.*deprecated.*use glass_core', DeprecationWarning)\n"
        "import glass_core.cli, glass_core._cli_steer\n"
        "from glass_core.digits import assets, config, demo, evidence\n"
        "evidence.steering_methods(); config.DemoConfig()\n"
        "assets.load_default_reward(target=3)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
