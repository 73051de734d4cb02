"""No two modules of glass_core depend on each other, directly or through others: the import
graph (every `import`, including those inside functions and under TYPE_CHECKING) is acyclic.
A package's own `__init__` re-exports are edges from the package to its modules; the implicit
import of a parent package when a submodule is imported is not an edge."""

from __future__ import annotations

import ast
from pathlib import Path

import glass_core

ROOT = Path(glass_core.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import obj` imports mod
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import glass_core.x.y` -> the module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {name: _imports(name, path, known) for name, path in mods.items()}
    for name in graph:  # a module importing its own parent package is the implicit import
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_detects_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "glass_core._core" not in graph or graph["glass_core._core"] == set()
    assert "glass_core.align.fk" in graph["glass_core.align"]  # package re-export
    assert "glass_core.align.storage" in graph["glass_core.align.fk"]
    # a lazy import inside a function counts
    assert "glass_core.align.distributed.strategy" in graph["glass_core.align.storage"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


NATIVE_LEAF_SCRIPT = """
import sys, torch, numpy as np
import glass_core._core as core
lw = torch.randn(2, 64, dtype=torch.bfloat16)
core.normalize_log_weights(lw)
core.resample(lw[0].float().t(), "systematic", seed=0)
core.ess([0.0, 1.0, 2.0])
sch = core.Schedule.vp_from_alphas_cumprod(np.linspace(0.99, 0.01, 50))
sch.timestep_from_t(torch.linspace(0.1, 0.9, 5))
core.glass_coefficients(sch, 0.2, 0.5, 0.3, torch.zeros(3))
try:
    core.ess(np.array([1 + 2j]))
except core.InvalidInputError:
    pass
loaded = sorted(m for m in sys.modules if m.startswith("glass_core"))
print(" ".join(loaded))
"""


def test_native_core_imports_no_glass_core_module() -> None:
    """`_core` is the leaf: converting torch tensors, lists and complex input, raising its errors
    and mapping timesteps loads no Python module of the package."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", NATIVE_LEAF_SCRIPT], capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    # the package itself (lazy: it loads nothing else) and the native module
    assert loaded <= {"glass_core", "glass_core._core"}


CORE = ("align", "transitions", "models", "rewards", "schedules", "steering")


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_library_core_does_not_depend_on_the_digits_demo() -> None:
    graph = import_graph()
    assert "glass_core.digits.assets" in graph["glass_core.digits.evidence"]  # the graph sees it
    core = [name for name in graph if name.split(".")[1:2] and name.split(".")[1] in CORE]
    assert "glass_core.steering" in core and "glass_core.align.fk" in core
    for name in core:
        bad = {m for m in _reachable(graph, name) if m.startswith("glass_core.digits")}
        assert not bad, f"{name} imports the digits demo: {sorted(bad)}"
    # and at run time: loading the core loads no digits module
    import subprocess
    import sys

    script = (
        "import sys, glass_core.align, glass_core.transitions, glass_core.models, "
        "glass_core.rewards, glass_core.schedules, glass_core.steering\n"
        "print(' '.join(m for m in sys.modules if m.startswith('glass_core.digits')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
