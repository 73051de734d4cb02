"""Loose inputs get a typed error naming the argument (never a bare TypeError / OverflowError /
RuntimeError, never a silently reinterpreted value)."""

from __future__ import annotations

import glass_core as gc
import numpy as np
import pytest
import torch
from glass_core._core import shifted_grid, uniform_grid
from glass_core.align import best_of_n, fk_steering, reward_guidance
from glass_core.errors import InvalidInputError
from glass_core.models import from_callable
from glass_core.schedules import Schedule, dynamic_shift, shifted
from glass_core.transitions import ODE, Glass

RF = Schedule.rectified_flow()
IDENTITY = from_callable(lambda x, t: 0.5 * x, schedule=RF, prediction="x1")


def fk(reward=lambda z: z.sum(dim=1), **kwargs):
    args = dict(
        shape=(2,),
        num_particles=4,
        time_grid=[0.0, 0.5, 1.0],
        transition=ODE(),
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return fk_steering(IDENTITY, reward, **(args | kwargs))


CASES = [
    (lambda: gc.resample(np.zeros(3), seed=b"1"), "seed"),
    (lambda: gc.resample(np.zeros(3), seed=True), "seed"),
    (lambda: gc.SMCState(1, 3, seeds=True), "seeds"),
    (lambda: gc.resample(np.zeros((1, 3)), seed=[True]), "seed"),
    (lambda: gc.resample(np.zeros((1, 3)), seed=[np.True_]), "seed"),
    (lambda: gc.resample(np.zeros((1, 3)), seed=np.array([True])), "seed"),
    (lambda: gc.SMCState(2, 3, seeds=(False, 1)), "seeds"),
    (lambda: Glass(rho=True), "rho"),
    (lambda: Glass(inner_steps=3 * 10**8), "inner_steps"),
    (lambda: Glass(inner_steps=2.0), "inner_steps"),
    (lambda: Glass()(IDENTITY, torch.randn(2, 2), 0.2, 0.5, 5), "generator"),
    (lambda: shifted(RF, 1e-300), "shift"),
    (lambda: shifted_grid(5, 1e300), "shift"),
    (lambda: uniform_grid(10, 0.5, float(np.nextafter(0.5, 1.0))), "num_steps"),
    (lambda: dynamic_shift(RF, 10**7), "image_seq_len"),
    (lambda: fk(final_resample="yes"), "final_resample"),
    (lambda: fk(dtype=torch.int64), "dtype"),
    (lambda: fk(device="bogus"), "device"),
    (lambda: fk(generator=5), "generator"),
    (lambda: fk(num_particles=10**12), "num_particles` = 1000000000000 is too large"),
    (lambda: fk(shape=(10**6, 10**6)), "do not fit in memory"),
    (lambda: fk(reward=lambda z: 100.0 + z.sum(dim=1), lambda_=1e308), "lambda_"),
]


@pytest.mark.parametrize(("call", "name"), CASES)
def test_loose_inputs_raise_invalid_input_naming_the_argument(call, name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        call()


def test_integer_likes_are_accepted() -> None:
    assert Glass(inner_steps=np.int64(3)).inner_steps == 3
    assert best_of_n(
        IDENTITY,
        lambda z: z.sum(dim=1),
        shape=(2,),
        num_particles=np.int64(2),
        time_grid=[0.0, 1.0],
        transition=ODE(),
        generator=torch.Generator().manual_seed(0),
        progress=False,
    ).samples.shape == (2, 2)


def test_non_differentiable_reward_under_guidance_is_named() -> None:
    def reward(z: torch.Tensor) -> torch.Tensor:
        return z.detach().sum(dim=1)  # cuts the graph

    msg = r"^reward must be differentiable in z for guidance \(torch\.autograd: .+\)$"
    with pytest.raises(InvalidInputError, match=msg):
        reward_guidance(
            IDENTITY,
            reward,
            shape=(2,),
            num_particles=2,
            scale=1.0,
            time_grid=[0.0, 0.5, 1.0],
            transition=ODE(),
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )


def test_real_number_reads_numbers_and_nothing_else() -> None:
    """The one rule behind every "a real number" argument (times, rho, shift, finite floats)."""
    import math

    from glass_core._checks import real_number

    for value, want in [(2, 2.0), (0.5, 0.5), (np.float32(0.25), 0.25), (torch.tensor([3.0]), 3.0)]:
        assert real_number(value) == want
    assert math.isnan(real_number(float("nan")))  # type: ignore[arg-type]
    for value in (True, np.bool_(False), "0.5", b"1", None, [1.0], torch.zeros(2), object()):
        assert real_number(value) is None, value


def test_an_allocator_failure_is_named_with_its_first_line_cut_to_200_characters(monkeypatch):
    """Particles that do not fit: InvalidInputError with the sizes, the device and the first line
    of the allocator's message, at most 200 characters of it (CUDA's can run long)."""
    from glass_core.align._common import initial_noise

    def fail(*args, **kwargs):
        raise RuntimeError("x" * 300 + "\nsecond line")

    monkeypatch.setattr(torch, "empty", fail)
    with pytest.raises(InvalidInputError) as err:
        initial_noise(4, (3,), None, torch.float32, None)
    assert str(err.value) == (
        "the particles [4, *shape=[3]] (num_groups x num_particles rows) do not fit in memory on "
        "cpu: " + "x" * 200
    )
