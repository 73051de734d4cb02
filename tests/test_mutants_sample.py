"""scripts/mutants_sample.py's score arithmetic (the mutmut-facing parts need mutmut and a run)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():  # the script, loaded from its path (scripts/ is not a package)
    spec = importlib.util.spec_from_file_location(
        "mutants_sample", ROOT / "scripts/mutants_sample.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("k", "n"), [(155, 187), (229, 230), (3, 40), (1, 2)])
def test_wilson_bounds_solve_the_score_equation(k: int, n: int) -> None:
    """Each bound p solves |k/n - p| = z sqrt(p (1 - p) / n), the Wilson interval's definition."""
    lo, hi = _script().wilson_interval(k, n)
    z = 1.96
    for p in (lo, hi):
        assert abs(k / n - p) == pytest.approx(z * math.sqrt(p * (1 - p) / n), abs=1e-12)
    assert lo < k / n < hi


def test_wilson_ends_and_empty_sample() -> None:
    wilson = _script().wilson_interval
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    lo, hi = wilson(7, 10)
    lo2, hi2 = wilson(3, 10)
    assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2))


def test_equivalent_names_are_the_first_field_of_each_listed_line(monkeypatch, tmp_path) -> None:
    module = _script()
    listed = tmp_path / "equivalent.txt"
    listed.write_text(
        "# a comment\n\nglass_core.a.x__f__mutmut_1 — a reason\nrust/x.rs:1:2: swap — why\n"
    )
    monkeypatch.setattr(module, "EQUIVALENT_LIST", listed)
    assert module.equivalent_names() == {"glass_core.a.x__f__mutmut_1", "rust/x.rs:1:2: swap"}
    monkeypatch.setattr(module, "EQUIVALENT_LIST", tmp_path / "absent.txt")
    assert module.equivalent_names() == set()


def test_rust_score_leaves_out_listed_equivalents_and_names_the_rest(
    monkeypatch, tmp_path, capsys
) -> None:
    module = _script()
    listed = tmp_path / "equivalent.txt"
    listed.write_text("rust/a.rs:1:1: swap — same bits\nrust/a.rs:3:3: stale — was equivalent\n")
    monkeypatch.setattr(module, "EQUIVALENT_LIST", listed)
    out = tmp_path / "mutants.out"
    out.mkdir()
    (out / "caught.txt").write_text("rust/a.rs:2:2: other\nrust/a.rs:3:3: stale\n")
    (out / "missed.txt").write_text("rust/a.rs:1:1: swap\nrust/a.rs:1:1: swap more\n")
    (out / "timeout.txt").write_text("rust/a.rs:4:4: loop\n")
    module.main(["rust", str(out)])
    printed = capsys.readouterr().out
    assert "caught 2, timeout 1, missed 2 (1 listed equivalent), unviable 0" in printed
    assert "score 3/4 = 75.0%" in printed
    assert "  missed: rust/a.rs:1:1: swap more" in printed
    assert "  listed equivalent but caught: rust/a.rs:3:3: stale" in printed


def test_mutation_lines_are_what_the_mutant_changes() -> None:
    original = ["def f(x):", "    y = x + 1", "    return y"]
    mutant = ["def f(x):", "    y = x - 1", "    return y"]
    assert _script().mutation_lines(original, mutant) == ["- y = x + 1", "+ y = x - 1"]
    assert _script().mutation_lines(original, original) == []


def test_every_listed_python_equivalent_still_names_a_mutant(monkeypatch, capsys) -> None:
    """The names in docs/mutants_equivalent.txt exist in today's code (mutmut renumbers a
    function's mutants when it is edited: a name past the end is gone)."""
    pytest.importorskip("mutmut")
    monkeypatch.chdir(ROOT)
    assert _script().print_equivalents() == 0, capsys.readouterr().out
