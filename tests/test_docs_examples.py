"""Every Python code block of README.md and docs/ runs as written, so a changed signature breaks a
test, not a reader. A block that needs a GPU, downloaded weights or several processes is marked
with an HTML comment line ``<!-- not-run: reason -->`` right above its fence; it is still
compiled, so its syntax stays true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not-run: (?P<why>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[str, str, str | None]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start("code")].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", m.group("code"), m.group("why")))
    return found


BLOCKS = _blocks()


def test_the_pages_have_runnable_examples() -> None:
    runnable = [b for b in BLOCKS if b[2] is None]
    assert len(runnable) >= 5, [b[0] for b in BLOCKS]


@pytest.mark.parametrize(("where", "code", "why"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_code_block(where: str, code: str, why: str | None, monkeypatch, tmp_path) -> None:
    compiled = compile(code, where, "exec")
    if why is not None:
        assert why.strip(), f"{where}: say why the block is not run"
        return
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    exec(compiled, {"__name__": "__docs_example__"})
