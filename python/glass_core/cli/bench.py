"""``glass-core bench``: run the benchmark scripts.

``glass-core bench``: run the benches/*.py scripts with this Python, write each one's printed
table to OUT/<name>.md and a summary to OUT/bench.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from glass_core.cli._common import CLIError, Formatter, add_common_options, logger

__all__ = ["add_parser", "run"]

#: the source checkout's benches/ (the scripts ship with the source, not the wheel)
SOURCE_BENCHES = Path(__file__).resolve().parents[3] / "benches"


def add_parser(subparsers: Any) -> None:
    """Add the ``bench`` command to `subparsers`.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``glass-core`` parser's subparsers.
    """
    p = subparsers.add_parser(
        "bench",
        help="run the benches/*.py scripts and write their tables",
        description="Run every benches/*.py script (or those named by --only) with this Python, "
        "write each one's printed table to OUT/<name>.md and a summary to OUT/bench.json.",
        formatter_class=Formatter,
    )
    p.add_argument(
        "--benches",
        type=Path,
        default=None,
        help="benches directory; unset = ./benches or the source checkout's",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="script names to run (with or without bench_ and .py, e.g. paper)",
    )
    p.add_argument("--list", action="store_true", help="list the scripts and exit")
    p.add_argument(
        "--script-args",
        default="",
        help='extra arguments passed to every script, e.g. --script-args="--quick" (scripts run '
        "from the repository root and only print unless given their own --out)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per script")
    p.add_argument("--out", type=Path, default=Path("glass_out/bench"), help="output directory")
    add_common_options(p)


def _bench_dir(given: Path | None) -> Path:
    if given is not None:
        if not given.is_dir():
            raise CLIError(f"--benches: directory not found: {str(given)!r}")
        return given
    found = next((c for c in (Path("benches"), SOURCE_BENCHES) if c.is_dir()), None)
    if found is None:
        raise CLIError(
            "--benches: no benches/ directory here or in the source checkout (the benchmark "
            "scripts ship with the source, not the wheel: run from a clone of the "
            "repository, or pass --benches DIR)"
        )
    return found


def _scripts(bench_dir: Path, only: list[str] | None) -> list[Path]:
    """Return the scripts to run: all (not _private.py) or those --only names.

    ("paper" stands for bench_paper.)
    """
    scripts = sorted(p for p in bench_dir.glob("*.py") if not p.name.startswith("_"))
    if not only:
        return scripts
    names = {p.name for p in scripts}
    wanted = {n if n.endswith(".py") else n + ".py" for n in only}
    wanted = {w if w in names or f"bench_{w}" not in names else f"bench_{w}" for w in wanted}
    missing = wanted - names
    if missing:
        raise CLIError(
            f"--only: no such bench script(s) {sorted(missing)} in {str(bench_dir)!r}; "
            f"available: {[p.name for p in scripts]}"
        )
    return [p for p in scripts if p.name in wanted]


def run(args: argparse.Namespace) -> int:
    """Run the scripts into --out (staged); returns the exit code (a failed script raises).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.

    Returns
    -------
    int
        The exit code.

    Raises
    ------
    CLIError
        No benches folder or an unknown --only name.
    """
    import json

    from glass_core._outdir import staged_output_dir

    bench_dir = _bench_dir(args.benches)
    scripts = _scripts(bench_dir, args.only)
    if args.list:
        for p in scripts:
            print(p.name)
        return 0
    if not scripts:
        raise CLIError(f"--benches: no *.py scripts in {str(bench_dir)!r}")
    log = logger(args)
    with staged_output_dir(args.out, args.overwrite) as folder:
        summary = [_run_bench(script, bench_dir, folder, args, log) for script in scripts]
        (folder / "bench.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(summary)} table(s) and bench.json to {args.out}")
    failed = sum(1 for s in summary if s["exit_code"] != 0)
    if failed:
        raise RuntimeError(f"{failed} of {len(summary)} bench script(s) failed; see {args.out}")
    return 0


def _run_bench(
    script: Path, bench_dir: Path, folder: Path, args: argparse.Namespace, log: Any
) -> dict[str, Any]:
    """Run one bench script, write its printed table to folder/<name>.md, return its summary."""
    import shlex
    import subprocess
    import time

    log(f"running {script.name} ...")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *shlex.split(args.script_args)],
            capture_output=True,
            text=True,
            timeout=args.timeout,
            cwd=bench_dir.parent,
        )
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = -1, str(exc.stdout or ""), f"timeout after {args.timeout} s"
    wall = time.perf_counter() - start
    table = folder / f"{script.stem}.md"
    table.write_text(f"# {script.name}\n\n{stdout}", encoding="utf-8")
    if code != 0:
        log(f"{script.name} failed (exit {code}): {stderr.strip().splitlines()[-1:]}")
    else:
        print(stdout, end="" if stdout.endswith("\n") else "\n")
    return {
        "script": script.name,
        "exit_code": code,
        "wall_s": round(wall, 2),
        "table": table.name,
        "stderr_tail": stderr.strip().splitlines()[-5:],
    }
