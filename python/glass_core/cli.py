"""The ``glass-core`` command (also ``python -m glass_core``).

Subcommands: ``demo`` (embedded model and reward, GLASS vs baselines at equal NFE), ``steer`` (any
local diffusers pipeline and reward, through ``glass_core.steer``), ``bench`` (runs benches/*.py).
Every option can also come from a TOML file (``--config FILE``) with the same keys (dashes or
underscores; flat, or under a ``[demo]`` / ``[steer]`` / ``[bench]`` table); flags win over
the file. A config file can name Python files that the command runs (``python:`` / ``latent:``
rewards, ``--benches``): treat it as code.

Output folders: a command writes into a temporary folder beside ``--out`` and moves it into
place when it is complete; a non-empty ``--out`` is refused unless ``--overwrite``.

Exit codes: 0 success, 1 runtime failure, 2 bad arguments / configuration / paths / pipelines
that do not load / a missing optional dependency (the message names the pip extra).
Errors print one line ``glass-core: error: ...`` and no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from glass_core._cli_error import CLIError

__all__ = ["CLIError", "build_parser", "main"]

PROG = "glass-core"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors reported like every other bad input (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------------------------
# parser


def _rho(value: str | float) -> str | float:
    """GLASS rho from a flag or a TOML value: 'ddpm' or a float in [-1, 1]."""
    if value == "ddpm":
        return value
    try:
        rho = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"must be 'ddpm' or a float in [-1, 1], got {value!r}"
        ) from None
    if not -1.0 <= rho <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [-1, 1], got {rho}")
    return rho


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument(
        "--config", type=Path, default=None, help="TOML file with the same keys as the flags"
    )
    g.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (by default: bars on a terminal, a log line every few seconds "
        "otherwise) and no library warnings below errors",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out folder (by default it is refused)",
    )
    g.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _demo_parser(sub: Any) -> None:
    from glass_core.digits.config import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="GLASS vs baselines on the embedded digits model (pictures, table, JSON)",
        description="Best-of-N (ODE), FK steering (SDE) and FK steering (GLASS) at the same NFE "
        "budgets on the embedded 8x8-digits flow model, steered toward log p(digit = target), "
        "each scored by the optimised reward, a held-out classifier and realism.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", type=Path, default=Path("glass_out/demo"), help="output directory")
    p.add_argument("--target", type=int, default=d.target, help="digit class the reward favours")
    p.add_argument("--particles", type=int, default=d.particles, help="particles N per group")
    p.add_argument(
        "--groups", type=int, default=d.groups, help="independent groups (runs) averaged"
    )
    p.add_argument(
        "--nfe", type=int, default=d.nfe, help="network evaluations per particle in the grid"
    )
    p.add_argument(
        "--glass-transitions",
        type=int,
        default=d.glass_transitions,
        help="GLASS transitions (inner steps = nfe / transitions); also FK resampling times",
    )
    p.add_argument(
        "--glass-rho",
        type=_rho,
        default=d.glass_rho,
        help="GLASS correlation rho: 'ddpm' or a float in [-1, 1]",
    )
    p.add_argument(
        "--potential", default=d.potential, choices=["diff", "max", "sum"], help="FK potential"
    )
    p.add_argument(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=float,
        default=d.lambda_,
        help="FK temperature",
    )
    p.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=d.budgets,
        help="NFE per particle swept for the table and plot (plus --nfe)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="model micro-batch size")
    p.add_argument("--model", default=d.model, help="model directory; unset = the embedded one")
    p.add_argument("--reward", default=d.reward, help="reward directory; unset = the embedded one")
    p.add_argument(
        "--reward-kind",
        default=d.reward_kind,
        choices=["classifier", "template"],
        help="classifier: log p(digit = target | image); template: closed-form quadratic "
        "-|z - mean image of the target digit|^2 / 8",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="reduced budget for tests: particles 4, groups 4, nfe 10, 5 GLASS transitions, "
        "budgets 10 (explicit flags still win)",
    )
    _common(p)


def _steer_parser(sub: Any) -> None:
    p = sub.add_parser(
        "steer",
        help="steer a local diffusers pipeline toward a reward (glass_core.steer)",
        description="Steer any local diffusers pipeline toward a reward through "
        "glass_core.steer. --pipeline 'default' uses the embedded digits model (then --reward "
        "digits[:TARGET] or digits:DIR:TARGET).\n\n"
        "Many processes/GPUs (--distributed, --method fk or best_of_n): launch under torchrun,\n"
        "  torchrun --nproc-per-node K --no-python glass-core steer --distributed ...\n"
        "  python -m torch.distributed.run --nproc-per-node K -m glass_core steer --distributed "
        "...\n"
        "(torchrun needs --no-python to run the glass-core command). Each of the K ranks holds "
        "--particles / K particles (gloo on CPU, NCCL on GPUs); results equal one process with "
        "the same --seed; rank 0 prints and writes --out.",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--pipeline",
        default=None,
        help="diffusers pipeline directory (FLUX/SD3/SD/SDXL via glass_core.steer, or an "
        "unconditional UNet2DModel pipeline such as DDPMPipeline), or 'default' for the "
        "embedded digits model",
    )
    p.add_argument("--prompt", nargs="+", default=None, help="prompt(s); several prompts = groups")
    p.add_argument(
        "--reward",
        default=None,
        help="KIND:PATH, e.g. clip:/models/clip, pickscore:DIR, hps:FILE, aesthetic:HEAD:CLIP_DIR, "
        "image_reward:FILE; python:FILE.py:FUNC for your own FUNC(images [M,C,H,W] in [0,1]) "
        "-> [M] on decoded images; latent:FILE.py:FUNC for FUNC(latents [M,...]) -> [M] on the "
        "latents (no decode); digits[:TARGET] for the embedded classifier (with --pipeline "
        "default). Not needed for --method sample",
    )
    p.add_argument(
        "--method",
        default="fk",
        choices=["fk", "best_of_n", "guidance", "sample"],
        help="alignment method",
    )
    p.add_argument(
        "--transition", default="glass", choices=["glass", "sde", "ode"], help="transition kernel"
    )
    p.add_argument("--particles", type=int, default=4, help="particles N per prompt")
    p.add_argument(
        "--transitions",
        type=int,
        default=None,
        help="outer transitions (time-grid steps); unset = 50 NFE per particle whatever the "
        "kernel: 50 / --inner-steps for glass, 50 / --substeps for ode and sde",
    )
    p.add_argument("--inner-steps", type=int, default=10, help="GLASS inner steps per transition")
    p.add_argument(
        "--solver",
        default=argparse.SUPPRESS,  # unset: the library's default
        help="GLASS inner solver: pc (the default), multistep, euler, heun or midpoint",
    )
    p.add_argument("--substeps", type=int, default=1, help="ODE/SDE Euler substeps per transition")
    p.add_argument(
        "--rho", type=_rho, default="ddpm", help="GLASS rho: 'ddpm' or a float in [-1, 1]"
    )
    p.add_argument(
        "--potential", default="diff", choices=["diff", "max", "sum"], help="FK potential"
    )
    p.add_argument(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=float,
        default=10.0,
        help="FK temperature",
    )
    p.add_argument(
        "--reward-scale",
        type=float,
        default=0.4,
        help="reward-guidance scale for --method guidance (docs/math.md §6.4)",
    )
    g = p.add_argument_group(
        "pipeline options (as in the diffusers pipeline's __call__; text-conditioned pipelines)"
    )
    g.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance scale (SD/SDXL/SD3), or FLUX-dev's distilled guidance "
        "input; unset = the pipeline family's default",
    )
    g.add_argument("--negative-prompt", nargs="+", default=None, help="negative prompt(s)")
    g.add_argument(
        "--true-cfg-scale",
        type=float,
        default=None,
        help="FLUX true classifier-free guidance with --negative-prompt (> 1 turns it on)",
    )
    g.add_argument("--height", type=int, default=None, help="image height in pixels")
    g.add_argument("--width", type=int, default=None, help="image width in pixels")
    g.add_argument(
        "--max-sequence-length",
        type=int,
        default=None,
        help="T5 prompt tokens (FLUX, SD3); unset = the pipeline's default (512 for FLUX)",
    )
    p.add_argument(
        "--image",
        type=Path,
        default=None,
        help="edit this image file (SDEdit): VAE-encode it, noise it to t0 = 1 - --strength and "
        "steer from there",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="with --image: 0 keeps the image, 1 ignores it (starts from noise)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--max-batch", type=int, default=None, help="model micro-batch size")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="model dtype"
    )
    p.add_argument("--out", type=Path, default=Path("glass_out/steer"), help="output directory")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="shard the particles over torch.distributed ranks (--method fk or best_of_n, "
        "--particles a multiple of the rank count); run under `torchrun --nproc-per-node K "
        "--no-python glass-core steer --distributed ...` or `python -m torch.distributed.run "
        "--nproc-per-node K -m glass_core steer --distributed ...`; only rank 0 writes --out",
    )
    _common(p)


def _bench_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benches/*.py scripts and write their tables",
        description="Run every benches/*.py script (or those named by --only) with this Python, "
        "write each one's printed table to OUT/<name>.md and a summary to OUT/bench.json.",
        formatter_class=_Formatter,
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
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    from glass_core import __doc__ as pkg_doc

    parser = _Parser(
        prog=PROG,
        description=(pkg_doc or "").strip() + "\n\nExit codes: 0 ok, 1 runtime failure, "
        "2 bad input (arguments, config, paths, pipelines) or a missing optional dependency.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{demo,steer,bench}")
    _demo_parser(sub)
    _steer_parser(sub)
    _bench_parser(sub)
    return parser


# ---------------------------------------------------------------------------------------------
# TOML config


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sp: argparse.ArgumentParser = action.choices[name]
            return sp
    raise KeyError(name)


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """A TOML value for `action`, of exactly the type the flag takes (3.7 is no integer, true no
    number): a config file is checked as strictly as the command line."""

    def one(v: Any) -> Any:
        want = action.type
        if isinstance(v, bool):  # TOML true/false only for on/off flags
            raise CLIError(f"config key {key!r} takes a value, not {str(v).lower()}")
        if want is int and not isinstance(v, int):
            raise CLIError(f"config key {key!r} must be an integer, got {v!r}")
        if want is float and not isinstance(v, int | float):
            raise CLIError(f"config key {key!r} must be a number, got {v!r}")
        if want in (None, str, Path) and not isinstance(v, str):
            raise CLIError(f"config key {key!r} must be a string, got {v!r}")
        if want is not None:
            try:
                v = want(v)  # type: ignore[operator]
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                raise CLIError(f"config key {key!r}: {exc}") from None
        if action.choices is not None and v not in action.choices:
            raise CLIError(f"config key {key!r} must be one of {list(action.choices)}, got {v!r}")
        return v

    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise CLIError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*"):
        if not isinstance(value, list):
            value = [value]
        return [one(v) for v in value]
    if isinstance(value, list | dict):
        raise CLIError(f"config key {key!r} must be a single value, got {value!r}")
    return one(value)


def load_config(path: Path, sub: argparse.ArgumentParser, command: str) -> dict[str, Any]:
    """TOML keys -> argparse defaults for `sub`; unknown keys and bad values raise CLIError."""
    if not path.is_file():
        raise CLIError(f"--config: file not found: {str(path)!r}")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise CLIError(
                "--config needs Python >= 3.11 (tomllib) or `pip install tomli`"
            ) from None
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"--config {str(path)!r}: invalid TOML: {exc}") from None
    section = data.get(command, {})
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    merged = {**flat, **(section if isinstance(section, dict) else {})}
    by_key: dict[str, argparse.Action] = {}
    for action in sub._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                by_key[opt[2:].replace("-", "_")] = action
    out: dict[str, Any] = {}
    for key, value in merged.items():
        norm = key.replace("-", "_")
        found = by_key.get(norm)
        if found is None or norm in ("config", "help"):
            known = ", ".join(sorted(k for k in by_key if k not in ("config", "help")))
            raise CLIError(
                f"--config {str(path)!r}: unknown key {key!r} for '{command}' (known: {known})"
            )
        out[found.dest] = _convert(found, key, value)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(2)
    if args.config is not None:
        sub = _subparser(parser, args.command)
        sub.set_defaults(**load_config(args.config, sub, args.command))
        args = parser.parse_args(argv)
    args._explicit = {  # options given on the command line (so --quick does not override them)
        a.dest
        for a in _subparser(parser, args.command)._actions
        for opt in a.option_strings
        for tok in (argv if argv is not None else sys.argv[1:])
        if tok == opt or tok.startswith(opt + "=")
    }
    return args


# ---------------------------------------------------------------------------------------------
# commands


def _log(args: argparse.Namespace) -> Any:
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from glass_core import _deps
    from glass_core._outdir import staged_output_dir
    from glass_core.digits.config import DemoConfig

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    parser_defaults = DemoConfig()
    for f in fields(DemoConfig):
        value = getattr(args, f.name)
        # with --quick, keep the reduced value unless the flag/config set something else
        if not args.quick or f.name in args._explicit or value != getattr(parser_defaults, f.name):
            setattr(cfg, f.name, value)
    for name in ("model", "reward"):
        value = getattr(cfg, name)
        if value is not None and not Path(value).is_dir():
            raise CLIError(f"--{name}: directory not found: {value!r}")
    cfg.validate()  # argument errors before importing torch
    _deps.require("demo")
    from glass_core.digits.demo import run_demo

    with staged_output_dir(args.out, args.overwrite) as folder:
        results = run_demo(cfg, folder, progress=not args.quiet, log=_log(args))
    print((args.out / "table.md").read_text(encoding="utf-8"))
    for name in ("results.json", "demo_grid.png", "reward_vs_nfe.png", "table.md"):
        print(f"wrote {args.out / name}")
    print(f"total wall time {results['total_wall_s']:.1f} s")
    return 0


def cmd_steer(args: argparse.Namespace) -> int:
    from glass_core._cli_steer import cmd_steer as run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    bench_dir = args.benches
    if bench_dir is None:
        candidates = [Path("benches"), Path(__file__).resolve().parents[2] / "benches"]
        bench_dir = next((c for c in candidates if c.is_dir()), None)
        if bench_dir is None:
            raise CLIError(
                "--benches: no benches/ directory here or in the source checkout (the benchmark "
                "scripts ship with the source, not the wheel: run from a clone of the "
                "repository, or pass --benches DIR)"
            )
    elif not bench_dir.is_dir():
        raise CLIError(f"--benches: directory not found: {str(bench_dir)!r}")
    scripts = sorted(p for p in bench_dir.glob("*.py") if not p.name.startswith("_"))
    if args.only:
        names = {p.name for p in scripts}
        wanted = {n if n.endswith(".py") else n + ".py" for n in args.only}
        # "paper" names benches/bench_paper.py
        wanted = {w if w in names or f"bench_{w}" not in names else f"bench_{w}" for w in wanted}
        missing = wanted - names
        if missing:
            raise CLIError(
                f"--only: no such bench script(s) {sorted(missing)} in {str(bench_dir)!r}; "
                f"available: {[p.name for p in scripts]}"
            )
        scripts = [p for p in scripts if p.name in wanted]
    if args.list:
        for p in scripts:
            print(p.name)
        return 0
    if not scripts:
        raise CLIError(f"--benches: no *.py scripts in {str(bench_dir)!r}")
    from glass_core._outdir import staged_output_dir

    log = _log(args)
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


COMMANDS = {"demo": cmd_demo, "steer": cmd_steer, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``glass-core``; returns the exit code (0 ok, 1 failure, 2 bad input or a
    missing optional dependency)."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in argv
    try:
        args = parse_args(argv)
        code = COMMANDS[args.command](args)
        if getattr(args, "distributed", False):
            _exit_now(code)
        return code
    except SystemExit as exc:  # argparse (its own message already printed)
        exit_code = exc.code
        return exit_code if isinstance(exit_code, int) else 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        code = _exit_code(exc)
        print(f"{PROG}: error: {_describe(exc)}", file=sys.stderr)
        if code == 1:
            print(f"{PROG}: run again with --debug for the traceback", file=sys.stderr)
        return code


def _exit_now(code: int) -> NoReturn:
    """End a --distributed run without interpreter finalisation: the process group is already
    destroyed and every file written, but gloo's C++ threads can still abort (SIGABRT,
    "terminate called without an active exception") during finalisation, which torchrun would
    report as a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_code(exc: BaseException) -> int:
    from glass_core._deps import MissingExtraError, describe_missing
    from glass_core.errors import GlassError

    if isinstance(exc, CLIError | MissingExtraError | FileNotFoundError | NotADirectoryError):
        return 2
    if isinstance(exc, FileExistsError):
        return 2  # a path the user named is in the way (e.g. a file where a folder must go)
    if isinstance(exc, ModuleNotFoundError) and describe_missing(exc) is not None:
        return 2  # an optional dependency: the message names the extra to install
    if isinstance(exc, GlassError) and isinstance(exc, ValueError):
        return 2  # InvalidInputError, UnsupportedModelError: the caller passed something bad
    return 1


def _describe(exc: BaseException) -> str:
    from glass_core._deps import MissingExtraError, describe_missing

    msg = str(exc) or type(exc).__name__
    if isinstance(exc, CLIError | MissingExtraError):
        return msg
    if isinstance(exc, ModuleNotFoundError):
        return describe_missing(exc) or f"{type(exc).__name__}: {msg}"
    return f"{type(exc).__name__}: {msg}"


if __name__ == "__main__":
    raise SystemExit(main())
