"""steer(method=...) runs tempered SMC, twisted FK, value decoding and beam search on the
embedded default model and gives what the glass_core.align functions give on its adapter."""

import pytest
import torch
from glass_core import steer
from glass_core.align import beam_search, fk_steering, tempered_smc, value_decoding
from glass_core.errors import InvalidInputError
from glass_core.schedules import uniform_grid
from glass_core.transitions import SDE, Glass

K = 2  # transitions


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe_and_reward():
    from glass_core.digits.assets import load_default_reward, load_pipeline

    return load_pipeline(), load_default_reward(5)


CASES = [
    ("tempered", Glass(inner_steps=2), tempered_smc, {"lambda_": 4.0}, {}),
    ("twisted", SDE(), fk_steering, {"lambda_": 4.0, "proposal": "twisted"}, {}),
    ("value_decoding", Glass(inner_steps=2), value_decoding, {}, {"num_candidates": 3}),
    ("beam_search", SDE(substeps=2), beam_search, {}, {"num_candidates": 2}),
]


@pytest.mark.parametrize(("method", "transition", "fn", "fixed", "extra"), CASES)
def test_steer_method_equals_the_align_function(pipe_and_reward, method, transition, fn, fixed,
                                                extra):  # fmt: skip
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    pipe, reward = pipe_and_reward
    n = 3
    res = steer(
        pipe, reward=reward, method=method, transition=transition, num_particles=n,
        num_transitions=K, generator=_gen(1), lambda_=4.0, output_type="latent",
        progress=False, **extra,
    )  # fmt: skip
    assert res.method == method and res.rewards.shape == (1, n)
    size = {"beam_width": n} if fn is beam_search else {"num_particles": n}
    ref = fn(
        from_unconditional_pipeline(pipe), reward, transition=transition,
        time_grid=uniform_grid(K), shape=(1, 8, 8), generator=_gen(1), num_groups=1,
        progress=False, **size, **fixed, **extra,
    )  # fmt: skip
    torch.testing.assert_close(res.samples, ref.samples.reshape(res.samples.shape))
    assert res.nfe == ref.nfe


def test_steer_twisted_glass_points_to_guide(pipe_and_reward):
    pipe, reward = pipe_and_reward
    with pytest.raises(InvalidInputError, match="guide=True"):
        steer(pipe, reward=reward, method="twisted", num_particles=2, progress=False)
