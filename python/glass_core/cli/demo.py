"""``glass-core demo``: GLASS vs baselines at equal NFE.

``glass-core demo``: GLASS vs baselines at equal NFE on the embedded digits model (pictures, a
table and JSON). Its settings and their rules are ``glass_core.digits.config.DemoConfig``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from glass_core.cli._common import CLIError, Formatter, add_common_options, logger, rho_type

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Add the ``demo`` command (its defaults: DemoConfig's) to `subparsers`.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``glass-core`` parser's subparsers.
    """
    from glass_core.digits.config import REWARD_KINDS, DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="GLASS vs baselines on the embedded digits model (pictures, table, JSON)",
        description="Best-of-N (ODE), FK steering (SDE) and FK steering (GLASS) at the same NFE "
        "budgets on the embedded 8x8-digits flow model, steered toward log p(digit = target), "
        "each scored by the optimised reward, a held-out classifier and realism.",
        formatter_class=Formatter,
    )
    add = p.add_argument
    add("--out", type=Path, default=Path("glass_out/demo"), help="output directory")
    add("--target", type=int, default=d.target, help="digit class the reward favours")
    add("--particles", type=int, default=d.particles, help="particles N per group")
    add("--groups", type=int, default=d.groups, help="independent groups (runs) averaged")
    add("--nfe", type=int, default=d.nfe, help="network evaluations per particle in the grid")
    add(
        "--glass-transitions",
        type=int,
        default=d.glass_transitions,
        help="GLASS transitions (inner steps = nfe / transitions); also FK resampling times",
    )
    add(
        "--glass-rho",
        type=rho_type,
        default=d.glass_rho,
        help="GLASS correlation rho: 'ddpm' or a float in [-1, 1]",
    )
    add("--potential", default=d.potential, choices=["diff", "max", "sum"], help="FK potential")
    add("--lambda", dest="lambda_", metavar="LAMBDA", type=float, default=d.lambda_,
        help="FK temperature")  # fmt: skip
    add(
        "--budgets",
        type=int,
        nargs="+",
        default=d.budgets,
        help="NFE per particle swept for the table and plot (plus --nfe)",
    )
    add("--seed", type=int, default=d.seed, help="random seed, in [0, 2**64 - 1]")
    add("--threads", type=int, default=d.threads, help="torch CPU threads (at most the cores)")
    add("--max-batch", type=int, default=d.max_batch, help="model micro-batch size")
    add("--model", default=d.model, help="model directory; unset = the embedded one")
    add("--reward", default=d.reward, help="reward directory; unset = the embedded one")
    add(
        "--reward-kind",
        default=d.reward_kind,
        choices=list(REWARD_KINDS),
        help="classifier: log p(digit = target | image); template: closed-form quadratic "
        "-|z - mean image of the target digit|^2 / 8",
    )
    add(
        "--quick",
        action="store_true",
        help="reduced budget for tests: particles 4, groups 4, nfe 10, 5 GLASS transitions, "
        "budgets 10 (explicit flags still win)",
    )
    add_common_options(p)


def _config(args: argparse.Namespace) -> Any:
    """DemoConfig from the flags: with --quick, the reduced values unless a flag/config set one."""
    from glass_core.digits.config import DemoConfig

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    parser_defaults = DemoConfig()
    for f in fields(DemoConfig):
        value = getattr(args, f.name)
        if not args.quick or f.name in args._explicit or value != getattr(parser_defaults, f.name):
            setattr(cfg, f.name, value)
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run the demo into --out (staged); returns the exit code.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.

    Returns
    -------
    int
        The exit code.
    """
    from glass_core import _deps
    from glass_core._outdir import check_output_dir, staged_output_dir

    cfg = _config(args)
    for name in ("model", "reward"):
        value = getattr(cfg, name)
        if value is not None and not Path(value).is_dir():
            raise CLIError(f"--{name}: directory not found: {value!r}")
    cfg.validate()  # every size, seed and thread count before importing torch
    check_output_dir(args.out, args.overwrite)
    _deps.require("demo")
    from glass_core.digits.demo import run_demo

    with staged_output_dir(args.out, args.overwrite) as folder:
        results = run_demo(cfg, folder, progress=not args.quiet, log=logger(args))
    print((args.out / "table.md").read_text(encoding="utf-8"))
    for name in ("results.json", "demo_grid.png", "reward_vs_nfe.png", "table.md"):
        print(f"wrote {args.out / name}")
    print(f"total wall time {results['total_wall_s']:.1f} s")
    return 0
