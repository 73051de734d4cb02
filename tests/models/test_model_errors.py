"""Errors blame the right party: NaN/inf from the model is a ModelError naming the time and the
rows; NaN/inf made by the transition from finite model outputs is an InvalidInputError."""

from __future__ import annotations

import glass_core as gc
import pytest
import torch
from glass_core.errors import InvalidInputError, ModelError
from glass_core.models import from_callable
from glass_core.schedules import Schedule
from glass_core.transitions import ODE, SDE, Glass

TRANSITIONS = [Glass(), Glass(inner_steps=3, solver="heun"), ODE(), SDE()]


def nan_in_row(row: int):
    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = 0.5 * x
        out[row] = float("nan")
        return out

    return from_callable(fn, schedule=Schedule.rectified_flow(), prediction="x1")


@pytest.mark.parametrize("transition", TRANSITIONS, ids=repr)
def test_model_nan_is_a_model_error_naming_time_and_rows(transition) -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelError, match=r"t=0\.2 for rows \[3\]"):
        transition(nan_in_row(3), x, 0.2, 0.5, torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("fn", "got"), [(lambda x, t: x.tolist(), "list"), (lambda x, t: x[:1], r"\(1, 2\)")]
)
def test_model_output_of_the_wrong_kind_or_shape_is_named(fn, got: str) -> None:
    model = from_callable(fn, schedule=Schedule.rectified_flow(), prediction="x1")
    with pytest.raises(InvalidInputError, match=rf"input's shape \(2, 2\), got {got}"):
        model.denoise(torch.randn(2, 2), 0.5)


def test_integer_model_output_is_a_model_error() -> None:
    model = from_callable(
        lambda x, t: x.to(torch.int64), schedule=Schedule.rectified_flow(), prediction="x1"
    )
    with pytest.raises(ModelError, match="floating-point"):
        ODE()(model, torch.randn(2, 2), 0.2, 0.5)


@pytest.mark.parametrize("kwargs", [{"sigma0": 1e300}])
def test_transition_overflow_blames_the_transition(kwargs: dict) -> None:
    model = from_callable(lambda x, t: x, schedule=Schedule.rectified_flow(), prediction="x1")
    with pytest.raises(InvalidInputError, match="numerically out of range"):
        Glass(**kwargs)(model, torch.randn(4, 2), 0.2, 0.5, torch.Generator().manual_seed(0))


def test_model_nan_reaches_fk_steering_as_model_error() -> None:
    from glass_core.align import fk_steering

    with pytest.raises(ModelError, match="rows"):
        fk_steering(
            nan_in_row(0),
            lambda z: z.sum(dim=1),
            shape=(2,),
            progress=False,
            num_particles=4,
            time_grid=[0.0, 0.5, 1.0],
            transition=ODE(),
            generator=torch.Generator().manual_seed(0),
        )


def test_errors_form_one_hierarchy_and_old_paths_still_work() -> None:
    from glass_core.align import RankFailedError as FromAlign
    from glass_core.align.distributed import DistributedTimeoutError as FromDistributed
    from glass_core.errors import DistributedTimeoutError, RankFailedError

    assert FromAlign is RankFailedError and FromDistributed is DistributedTimeoutError
    for cls in (RankFailedError, DistributedTimeoutError, ModelError, gc.RewardError):
        assert issubclass(cls, gc.GlassError)
    assert gc.ModelError is ModelError
