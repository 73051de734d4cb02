"""benches/bench_gpu.py (issue 21): its CPU proxy runs and counts what it says it counts; its
output files appear only with --out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benches" / "bench_gpu.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kernel_counter_counts_launches_not_views_and_reads(bench: ModuleType) -> None:
    x = torch.ones(8, 4)
    counter = bench.KernelCounter()
    with counter:
        y = x * 2  # 1 kernel
        z = y.view(32)  # view: none
        z.add_(1)  # 1 kernel
        bool(z.sum() > 0)  # sum, gt: 2 kernels; bool: 1 host read
        counter.paused = True
        _ = x * 3  # paused: not counted
        counter.paused = False
    assert (counter.kernels, counter.reads) == (4, 1)


def test_cpu_proxy_table_runs_and_writes_only_with_out(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: object
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    bench.main(["--device", "cpu", "--quick"])
    printed = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written without --out
    for kind in bench.KINDS:
        assert f"| {kind} |" in printed
    bench.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "o")])
    rows = json.loads((tmp_path / "o" / "gpu.json").read_text())["rows"]
    assert (tmp_path / "o" / "gpu.md").is_file()
    for r in rows:
        # every transition launches kernels of its own per NFE and reads nothing per NFE
        # (host reads happen per outer step, not inside the transition's inner loop)
        assert r["kernels_per_nfe"] >= 1
        assert r["reads_per_nfe"] == 0
        assert r["reads_per_outer_step"] >= 1  # FK needs its rewards on the host
