"""Reward protocol, validation errors and closed-form rewards."""

import math

import pytest
import torch
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward, QuadraticReward, Reward, check_rewards, evaluate_reward


def test_linear_and_quadratic_values():
    z = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    lin = LinearReward([0.5, -1.0])
    assert torch.allclose(lin(z), torch.tensor([-1.5, -1.0], dtype=torch.float64))
    quad = QuadraticReward([1.0, 0.0], 2.0)
    want = -torch.tensor([4.0, 4.0 + 0.25], dtype=torch.float64) / 8.0
    assert torch.allclose(quad(z), want)
    assert isinstance(lin, Reward) and isinstance(quad, Reward)


def test_rewards_flatten_samples_and_keep_dtype():
    z = torch.ones(3, 2, 2, dtype=torch.float32)
    r = LinearReward([1.0, 1.0, 1.0, 1.0])(z)
    assert r.shape == (3,) and r.dtype == torch.float32 and torch.all(r == 4.0)


def test_closed_form_params_match_gmm_tilted():
    gmm_mod = pytest.importorskip("glass_core.models")
    gmm = gmm_mod.GaussianMixture(
        torch.tensor([[0.0, 0.0]]), torch.tensor([1.0]), torch.tensor([1.0])
    )
    lam = 0.7
    lin = LinearReward([1.0, 2.0])
    t = gmm.tilted(lin.kind, lin.params, lam)  # N(lam a, I), log Z = lam^2 |a|^2 / 2
    assert math.isclose(t.log_normalizer, 0.5 * lam**2 * 5.0, rel_tol=1e-12)
    quad = QuadraticReward([1.0, -1.0], 0.5)
    tq = gmm.tilted(quad.kind, quad.params, lam)
    z = torch.randn(5, 2, dtype=torch.float64)
    assert torch.allclose(tq.reward(z), quad(z))


@pytest.mark.parametrize(
    ("ctor", "name"),
    [
        (lambda: LinearReward([]), "a"),
        (lambda: LinearReward([[1.0]]), "a"),
        (lambda: QuadraticReward([0.0], 0.0), "scale"),
        (lambda: QuadraticReward([math.nan], 1), "center"),
    ],
)
def test_closed_form_bad_arguments(ctor, name):
    with pytest.raises(InvalidInputError, match=name):
        ctor()


def test_wrong_dimension_raises():
    with pytest.raises(InvalidInputError, match="dimension 3"):
        LinearReward([1.0, 2.0, 3.0])(torch.zeros(4, 2))


def test_check_rewards_lists_offending_indices():
    v = torch.zeros(30)
    v[[3, 17]] = float("nan")
    v[20] = float("inf")
    with pytest.raises(RewardError, match=r"NaN/inf for particle indices \[3, 17, 20\]"):
        check_rewards(v, 30)
    v = torch.zeros(30)
    v[list(range(0, 30, 2))] = float("-inf")
    with pytest.raises(RewardError, match=r"inf .*\(15 in total\)"):
        check_rewards(v, 30)


@pytest.mark.parametrize(
    "bad", [torch.zeros(4, 1), torch.zeros(3), [0.0] * 4, torch.zeros(4, dtype=torch.int64)]
)
def test_check_rewards_shape_and_type(bad):
    with pytest.raises(RewardError):
        check_rewards(bad, 4)


def test_reward_error_is_invalid_input():
    assert issubclass(RewardError, InvalidInputError) and issubclass(RewardError, ValueError)


def test_evaluate_reward_micro_batches():
    seen = []

    def reward(z):
        seen.append(z.shape[0])
        return z.sum(1)

    z = torch.arange(20.0).reshape(10, 2)
    out = evaluate_reward(reward, z, max_batch=4)
    assert seen == [4, 4, 2] and torch.equal(out, z.sum(1))
