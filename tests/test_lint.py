"""The code standards CI enforces: ruff lint and format, and mypy over the package (its
configuration is pyproject.toml's [tool.mypy])."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["python", "tests", "benches", "scripts", "examples"]


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy_cache")},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str], tmp_path: Path) -> None:
    pytest.importorskip("ruff")
    proc = run(["ruff", *command, "--no-cache", *PATHS], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_package(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    proc = run(["mypy"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
