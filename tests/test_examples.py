"""The examples run as shipped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_steer_tiny_pipelines_example(tmp_path: Path) -> None:
    """Tiny random FLUX and SD pipelines, saved and steered offline: glass_core.steer on the
    pipeline in memory and `glass-core steer` on the saved folder give the same rewards (eval
    mode everywhere, same seed), and every file the example names is written."""
    spec = importlib.util.spec_from_file_location(
        "steer_tiny_pipelines", EXAMPLES / "steer_tiny_pipelines.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--out", str(tmp_path), "--particles", "2"])
    assert set(summary) == {"flux", "sd"}
    for name, runs in summary.items():
        assert runs["nfe"] == 6
        assert len(runs["python"][0]) == 2
        assert runs["command"][0] == pytest.approx(runs["python"][0], abs=1e-6), name
        assert (tmp_path / f"tiny-{name}" / "model_index.json").is_file()
        assert (tmp_path / f"{name}-best.png").is_file()
        assert (tmp_path / f"{name}-steered" / "best_000.png").is_file()
    # the pipelines were built in eval mode: no module of the saved FLUX pipeline is training
    pipe = example.eval_mode(example.flux_pipeline())
    modules = [c for c in pipe.components.values() if hasattr(c, "training")]
    assert modules and not any(m.training for m in modules)
