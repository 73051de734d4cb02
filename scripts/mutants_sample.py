"""A fixed-seed uniform sample of mutmut's mutants, and the score of the ones that were run.

The full Python run is about ten thousand mutants (hours on two cores), so ``make mutants`` runs a
uniform random sample by default (docs/testing.md). Run from the repository root, where mutmut
reads ``[tool.mutmut]``:

    python scripts/mutants_sample.py names --size 300 --seed 28 > .make/mutants-sample.txt
    mutmut run $(cat .make/mutants-sample.txt)
    python scripts/mutants_sample.py score .make/mutants-sample.txt

``names`` first writes the mutants into ``mutants/`` (what ``mutmut run`` does before testing);
``score`` prints killed / total with a 95% Wilson interval and lists the mutants that were not
killed, marking those listed in docs/mutants_equivalent.txt. ``equivalents`` shows what each listed
Python name mutates in today's code (editing a function renumbers its mutants).

This uses mutmut 3.8's internal functions (``mutmut.__main__``), pinned by the ``mutation`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import random
import sys
from collections import Counter
from pathlib import Path

EQUIVALENT_LIST = Path("docs/mutants_equivalent.txt")


def all_mutant_names() -> list[str]:
    """Generate the mutants (cached by mutmut per file) and return every mutant's name, sorted.

    Returns
    -------
    list[str]
        Names such as ``glass_core.schedules.x_resolve_rho__mutmut_3``.
    """
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, walk_mutatable_files

    Path("mutants").mkdir(exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # mutmut's progress lines: stdout is the names
        copy_src_dir()
        copy_also_copy_files()
        create_mutants(1)
    names: list[str] = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        names.extend(data.exit_code_by_key)
    return sorted(names)


def statuses() -> dict[str, str]:
    """The status mutmut recorded for each mutant ("killed", "survived", "no tests", ...)."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    found: dict[str, str] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        found.update({k: status_by_exit_code[v] for k, v in data.exit_code_by_key.items()})
    return found


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k / n (95% for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def equivalent_names() -> set[str]:
    """The mutants listed in docs/mutants_equivalent.txt: the text before " — " on each line.

    mutmut's mutant name for Python; cargo-mutants' "file:line:col: mutation" for Rust.
    """
    if not EQUIVALENT_LIST.exists():
        return set()
    lines = EQUIVALENT_LIST.read_text().splitlines()
    return {line.split(" — ")[0].strip() for line in lines if line.strip() and line[0] != "#"}


def print_score(sample: list[str]) -> None:
    """Print the counts by status, the score over non-equivalent mutants and the survivors."""
    status = statuses()
    equivalent = equivalent_names()
    counts = Counter(status.get(name, "not generated") for name in sample)
    print("by status:", dict(sorted(counts.items())))
    checked = [n for n in sample if status.get(n) not in (None, "not checked")]
    scored = [n for n in checked if n not in equivalent]
    killed = sum(status[n] in ("killed", "timeout", "caught by type check") for n in scored)
    lo, hi = wilson_interval(killed, len(scored))
    print(f"checked {len(checked)} of {len(sample)}; equivalent {len(checked) - len(scored)}")
    rate = killed / max(len(scored), 1)
    print(f"score {killed}/{len(scored)} = {rate:.1%} (95% CI {lo:.1%}-{hi:.1%})")
    for name in scored:
        if status[name] not in ("killed", "timeout", "caught by type check"):
            print(f"  {status[name]}: {name}")


def mutation_lines(original: list[str], mutant: list[str]) -> list[str]:
    """The lines a mutant removes ("-") and adds ("+"), stripped, from the two function bodies."""
    diff = difflib.unified_diff(original, mutant, lineterm="", n=0)
    return [
        d[0] + " " + d[1:].strip() for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---")
    ]


def print_equivalents() -> int:
    """Show each listed Python equivalent as the code generates it now; 1 if any name is gone.

    mutmut numbers a function's mutants in order, so editing the function renumbers them and a
    listed name can come to mean another mutation: read each diff against its reason.
    """
    from mutmut.mutation.diff_apply import generated_function_names
    from mutmut.mutation.file_mutation import mutate_file_contents

    listed = [line.split(" — ", 1) for line in EQUIVALENT_LIST.read_text().splitlines()]
    by_module: dict[str, list[tuple[str, str]]] = {}
    for name, reason in (pair for pair in listed if pair[0].startswith("glass_core.")):
        module = name.split(".x", 1)[0]  # glass_core.pkg.mod.x_fn__mutmut_3 / .xǁClassǁ...
        by_module.setdefault(module, []).append((name.strip(), reason))
    gone = 0
    for module, entries in by_module.items():
        path = Path("python", *module.split(".")).with_suffix(".py")
        mutated = mutate_file_contents(str(path), path.read_text())
        lines = mutated.code.splitlines()

        def body(function: str, lines: list[str] = lines, spans=mutated) -> list[str]:
            # mutmut's copies of the function are named ..__mutmut_orig and ..__mutmut_N
            span = spans.line_span_by_function_name[function]
            return [line.replace(function, "f") for line in lines[span.start - 1 : span.end]]

        for name, reason in entries:
            short = name[len(module) + 1 :]
            if short not in mutated.mutant_names:
                gone += 1
                print(f"GONE {name}\n    listed as: {reason}")
                continue
            changed = mutation_lines(*(body(f) for f in generated_function_names(short)))
            print(f"{name}\n    " + "\n    ".join(changed) + f"\n    listed as: {reason}")
    return 1 if gone else 0


def print_rust_score(out_dir: Path) -> None:
    """Score a cargo-mutants run from its ``mutants.out`` folder against the equivalent list.

    Timeouts count as caught (the suite would hang, so CI fails), as mutmut's do in ``score``.
    Also lists equivalent-listed mutants that were caught: the list is then stale.
    """

    def outcome(name: str) -> list[str]:
        path = out_dir / f"{name}.txt"
        return [line for line in path.read_text().splitlines() if line] if path.exists() else []

    caught, missed, timeout = outcome("caught"), outcome("missed"), outcome("timeout")
    equivalent = equivalent_names()
    survivors = [m for m in missed if m not in equivalent]
    killed, scored = len(caught) + len(timeout), len(caught) + len(timeout) + len(survivors)
    print(
        f"caught {len(caught)}, timeout {len(timeout)}, missed {len(missed)} "
        f"({len(missed) - len(survivors)} listed equivalent), unviable {len(outcome('unviable'))}"
    )
    lo, hi = wilson_interval(killed, scored)
    rate = killed / max(scored, 1)
    print(f"score {killed}/{scored} = {rate:.1%} (95% CI as a sample {lo:.1%}-{hi:.1%})")
    for name in survivors:
        print(f"  missed: {name}")
    for name in sorted(equivalent.intersection(caught)):
        print(f"  listed equivalent but caught: {name}")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``names`` (a sample), ``score`` (its results), ``rust``, ``equivalents``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    names = sub.add_parser("names", help="print a fixed-seed uniform sample of mutant names")
    names.add_argument("--size", type=int, default=300, help="sample size (0: all mutants)")
    names.add_argument("--seed", type=int, default=28)
    score = sub.add_parser("score", help="score of the mutants named in a file")
    score.add_argument("file", type=Path)
    rust = sub.add_parser("rust", help="score of a cargo-mutants run (its mutants.out folder)")
    rust.add_argument("out_dir", type=Path)
    sub.add_parser("equivalents", help="each listed Python equivalent's mutation as of now")
    args = parser.parse_args(argv)
    if args.command == "names":
        population = all_mutant_names()
        size = len(population) if args.size <= 0 else min(args.size, len(population))
        print(f"{size} of {len(population)} mutants (seed {args.seed})", file=sys.stderr)
        # in draw order: a larger size with the same seed extends a smaller sample
        print("\n".join(random.Random(args.seed).sample(population, size)))
    elif args.command == "rust":
        print_rust_score(args.out_dir)
    elif args.command == "equivalents":
        sys.exit(print_equivalents())
    else:
        print_score(args.file.read_text().split())


if __name__ == "__main__":
    main()
