"""The README's Python example runs as written (so the documented API stays true)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "fk_steering(" in b and "GaussianMixture(" in b)
    namespace: dict[str, object] = {}
    exec(compile(example, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.samples.shape == (1024, 2)  # type: ignore[attr-defined]
    assert result.nfe > 0  # type: ignore[attr-defined]
