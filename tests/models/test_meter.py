"""glass_core.meter: one chunking loop and one meter, with the same meaning for every user."""

from __future__ import annotations

import pytest
import torch
from glass_core.meter import Meter, chunked


def test_chunked_equals_one_call_and_respects_max_batch() -> None:
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0, 1, 7)
    sizes: list[int] = []

    def fn(xs: torch.Tensor, ts: torch.Tensor, scale: float) -> torch.Tensor:
        sizes.append(xs.shape[0])
        return xs * ts[:, None] * scale

    whole = chunked(fn, None, x, t, 2.0)
    assert sizes == [7]
    for mb in (1, 2, 3, 7, 100):
        sizes.clear()
        assert torch.equal(chunked(fn, mb, x, t, 2.0), whole)
        assert max(sizes) <= mb and sum(sizes) == 7
    rows = ["a", "b", "c", "d", "e", "f", "g"]
    seen: list[list[str]] = []

    def with_prompts(xs: torch.Tensor, ps: list[str]) -> torch.Tensor:
        seen.append(ps)
        return xs.sum(dim=1)

    chunked(with_prompts, 3, x, rows, per_row=(True, True))
    assert seen == [rows[0:3], rows[3:6], rows[6:7]]


def test_meter_counts_always_and_times_only_when_asked() -> None:
    x = torch.ones(5, 2)
    for timed in (False, True):
        meter = Meter(timed=timed)
        meter.model(lambda a: a * 2, x)
        meter.model(lambda a: a * 2, x[:3])
        meter.reward(lambda a: a.sum(dim=1), x)
        assert meter.forward_rows == 8
        assert (meter.model_seconds > 0) == timed and (meter.reward_seconds > 0) == timed
        meter.reset()
        assert meter.forward_rows == 0 and meter.model_seconds == 0.0 and meter.timed == timed


def test_diffusers_adapter_counts_on_its_meter() -> None:
    pytest.importorskip("diffusers")
    import tiny_pipelines as tp
    from glass_core.models.diffusers import from_pipeline

    model = from_pipeline(
        tp.sd3_pipeline(), ["a cat", "a dog"], height=tp.HEIGHT, width=tp.WIDTH, max_batch=2
    )
    x = torch.randn(4, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    model.velocity(x, 0.3)
    model.decode(x, max_batch=3)
    m = model.meter
    assert (m.evaluations, m.forward_rows, m.decodes) == (1, 8, 1)  # CFG: 2 rows per particle
    assert m.model_seconds == 0.0  # not timed unless asked
    model.meter.timed = True
    model.velocity(x, 0.5)
    assert m.model_seconds > 0.0 and model.num_evaluations == 2
