"""Size contract: absurd sizes are InvalidInputError naming the argument, before any allocation
(no abort, no panic, no bare OverflowError)."""

from __future__ import annotations

import glass_core as gc
import numpy as np
import pytest
from glass_core import InvalidInputError
from glass_core._core import Schedule, shifted_grid, uniform_grid

CASES = [
    (lambda: gc.resample(np.zeros(3), seed=0, num_samples=2**40), "num_samples"),
    (lambda: gc.resample(np.zeros(3), seed=0, num_samples=2**61), "num_samples"),
    (lambda: gc.resample(np.zeros((4, 3)), seed=0, num_samples=2**62), "num_samples"),
    (lambda: gc.resample(np.zeros(3), seed=0, num_samples=2**70), "num_samples"),
    (lambda: gc.resample(np.zeros(3), seed=0, num_samples=True), "num_samples"),
    (lambda: gc.SMCState(10**12, 1, seeds=0), "num_groups x num_particles"),
    (lambda: gc.SMCState(1, 2**32 - 1, seeds=0), "num_groups x num_particles"),
    (lambda: gc.SMCState(2**63, 1, seeds=0), "num_groups x num_particles"),
    (lambda: gc.SMCState(2**64, 1, seeds=0), "num_groups"),
    (lambda: gc.SMCState(True, 1, seeds=0), "num_groups"),
    (lambda: gc.SMCState(1, 2.0, seeds=0), "num_particles"),
    (lambda: uniform_grid(10**12), "num_steps"),
    (lambda: uniform_grid(2**62), "num_steps"),
    (lambda: shifted_grid(2**62, 3.0), "num_steps"),
    (lambda: Schedule.vp_from_betas(1e-4, 0.02, 10**12), "num_train_timesteps"),
]


@pytest.mark.parametrize(("call", "name"), CASES)
def test_absurd_sizes_raise_invalid_input_naming_the_argument(call, name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        call()


def test_integer_like_sizes_are_accepted() -> None:
    assert gc.resample(np.zeros(3), seed=0, num_samples=np.int64(5)).shape == (5,)
    assert gc.SMCState(np.int64(2), np.int32(3), seeds=0).num_particles == 3
    assert len(uniform_grid(np.int64(4))) == 5
