"""Issue 23, Python API: absurd sizes, a user's model/reward on the wrong device or requiring grad,
unusable devices/dtypes and loose types all end in a typed error naming the culprit, before any
compute is lost; InvalidInputError carries the argument at fault as ``.arg``."""

from __future__ import annotations

import glass_core as gc
import numpy as np
import pytest
import torch
from glass_core.align import best_of_n, fk_steering, reward_guidance
from glass_core.errors import InvalidInputError, ModelError, RewardError
from glass_core.models import from_callable
from glass_core.models.base import DenoiserBase
from glass_core.schedules import Schedule
from glass_core.transitions import ODE

RF = Schedule.rectified_flow()
IDENTITY = from_callable(lambda x, t: 0.5 * x, schedule=RF, prediction="x1")
SUM = lambda z: z.sum(dim=1)  # noqa: E731


def run(algorithm=fk_steering, model=IDENTITY, reward=SUM, **kwargs):
    args = dict(
        shape=(2,),
        num_particles=4,
        time_grid=[0.0, 0.5, 1.0],
        transition=ODE(),
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    if algorithm is reward_guidance:
        args["scale"] = 0.1
    return algorithm(model, reward, **(args | kwargs))


# item 10: sizes beyond any memory are InvalidInputError before anything is allocated
@pytest.mark.parametrize("algorithm", [fk_steering, best_of_n, reward_guidance])
@pytest.mark.parametrize("n", [10**23, 2**62, 2**64])
def test_absurd_particle_counts_are_invalid_input(algorithm, n: int) -> None:
    with pytest.raises(InvalidInputError, match="num_particles") as info:
        run(algorithm, num_particles=n)
    assert info.value.arg == "num_particles"  # type: ignore[attr-defined]


def test_steer_checks_the_particle_count_before_anything_else() -> None:
    """steer's size check comes before the pipeline is even looked at (a bare object here)."""
    from glass_core.steering import steer

    for n in (2**62, 10**23):
        with pytest.raises(InvalidInputError, match=r"num_particles.*too large"):
            steer(object(), reward=SUM, num_particles=n)


# item 11: a reward whose output requires grad
class GradReward:
    @torch.enable_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        w = torch.ones(z.shape[1], requires_grad=True)
        return z @ w


@pytest.mark.parametrize("algorithm", [fk_steering, best_of_n])
def test_reward_requiring_grad_is_accepted_and_equals_the_plain_one(algorithm) -> None:
    got, want = run(algorithm, reward=GradReward()), run(algorithm)
    assert torch.equal(got.samples, want.samples)
    assert torch.equal(got.rewards, want.rewards) and not got.rewards.requires_grad


# item 12: outputs on another device (meta stands for "another device" on a CPU-only machine)
class MetaOutputModel(DenoiserBase):
    def __init__(self) -> None:
        super().__init__(RF, prediction="x1")

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x, device="meta")


def test_model_output_on_another_device_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="meta"):
        run(model=MetaOutputModel())


@pytest.mark.parametrize("algorithm", [fk_steering, best_of_n])
def test_reward_output_on_another_device_is_a_reward_error(algorithm) -> None:
    with pytest.raises(RewardError, match="meta"):
        run(algorithm, reward=lambda z: torch.empty(z.shape[0], device="meta"))


# item 13: devices and dtypes that cannot hold or draw particles
@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"device": "meta"}, "device"),
        ({"dtype": torch.float8_e4m3fn}, "dtype"),
        ({"dtype": torch.complex64}, "dtype"),
        ({"x0": torch.empty(4, 2, device="meta"), "shape": None}, "x0"),
    ],
)
@pytest.mark.parametrize("algorithm", [fk_steering, best_of_n])
def test_unusable_device_dtype_or_start_is_invalid_input(algorithm, kwargs, arg: str) -> None:
    with pytest.raises(InvalidInputError, match=arg) as info:
        run(algorithm, **kwargs)
    assert info.value.arg == arg  # type: ignore[attr-defined]


# item 14: loose types
@pytest.mark.parametrize("value", [True, np.True_, "2", b"2", None, [1.0]])
def test_lambda_must_be_a_real_number(value) -> None:
    with pytest.raises(InvalidInputError, match="lambda_") as info:
        run(lambda_=value)
    assert info.value.arg == "lambda_"  # type: ignore[attr-defined]


def test_number_likes_are_accepted_for_lambda() -> None:
    want = run(lambda_=2.0)
    for value in (2, np.float32(2.0), np.int64(2), torch.tensor(2.0)):
        assert torch.equal(run(lambda_=value).samples, want.samples)


MASKED = np.ma.masked_array([0.0, 1.0, 2.0], mask=[False, True, False])


@pytest.mark.parametrize(
    "call",
    [
        lambda: gc.ess(MASKED),
        lambda: gc.normalize_log_weights(MASKED),
        lambda: gc.resample(MASKED, seed=0),
    ],
)
def test_masked_arrays_are_refused(call) -> None:
    with pytest.raises(InvalidInputError, match="masked"):
        call()


def test_plain_arrays_still_work_through_the_checks() -> None:
    lw = np.array([0.0, -np.inf, 0.0])
    assert gc.ess(lw) == pytest.approx(2.0)
    assert gc.resample(lw, seed=0).tolist().count(1) == 0
