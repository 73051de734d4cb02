"""What README promises about the package itself (its code blocks run in test_docs_examples.py)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_glass_core_steer_is_callable_whatever_was_imported_first() -> None:
    """`import glass_core; glass_core.steer(pipe, ...)` as the README calls it, also after the
    module behind it was imported (it is `glass_core.steering`: no module and function share a
    name)."""
    import subprocess
    import sys

    code = (
        "import glass_core.steering, glass_core\n"
        "from glass_core.errors import InvalidInputError\n"
        "try:\n"
        "    glass_core.steer(object(), 'a', method='nope')\n"
        "except InvalidInputError as exc:\n"
        "    assert 'method must be one of' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "from glass_core import steer\n"
        "import glass_core.steering\n"
        "assert steer is glass_core.steer is glass_core.steering.steer\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_example_needs_no_extra(tmp_path: Path) -> None:
    """The README's table: without any extra (no diffusers, transformers, safetensors, matplotlib,
    pillow) the library runs the Python example; the demo stops naming its extra."""
    import subprocess
    import sys

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'diffusers', 'transformers', 'safetensors',\n"
        "                                  'matplotlib', 'PIL', 'accelerate', 'open_clip'}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "fk_steering(" in b and "GaussianMixture(" in b)
    code = blocker + example.replace("num_particles=1024", "num_particles=64")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "demo"
    demo = (
        blocker
        + "from glass_core.cli import main\n"
        + f"raise SystemExit(main(['demo', '--out', {str(out)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", demo], capture_output=True, text=True)
    assert proc.returncode == 2 and 'pip install "glass-core[demo]"' in proc.stderr, proc.stderr
    assert not out.exists()
