"""The hand-written stub glass_core/_core.pyi must match the compiled module (mypy.stubtest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_stubtest_native_module(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "glass_core._core"],
        cwd=ROOT,
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy_cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
