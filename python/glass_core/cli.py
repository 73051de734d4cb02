"""The ``glass-core`` command (also ``python -m glass_core``).

Subcommands: ``demo`` (embedded model and reward, GLASS vs baselines at equal NFE), ``steer`` (any
local diffusers pipeline and reward, through ``glass_core.steer``), ``bench`` (runs benches/*.py).
Every option can also come from a TOML file (``--config FILE``) with the same keys (dashes or
underscores; flat, or under a ``[demo]`` / ``[steer]`` / ``[bench]`` table); flags win over
the file.

Exit codes: 0 success, 1 runtime failure, 2 bad arguments / configuration / paths.
Errors print one line ``glass-core: error: ...`` and no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["CLIError", "build_parser", "main"]

PROG = "glass-core"


class CLIError(Exception):
    """A user-facing error: bad argument, bad config or missing path (exit code 2)."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# ---------------------------------------------------------------------------------------------
# parser


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument(
        "--config", type=Path, default=None, help="TOML file with the same keys as the flags"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    g.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _demo_parser(sub: Any) -> None:
    from glass_core.demo_config import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="GLASS vs baselines on the embedded digits model (pictures, table, JSON)",
        description="Best-of-N (ODE), FK steering (SDE) and FK steering (GLASS) at the same NFE "
        "budget on the embedded 8x8-digits flow model, steered toward log p(digit = target).",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", type=Path, default=Path("glass_out/demo"), help="output directory")
    p.add_argument("--target", type=int, default=d.target, help="digit class the reward favours")
    p.add_argument("--particles", type=int, default=d.particles, help="particles N per group")
    p.add_argument(
        "--groups", type=int, default=d.groups, help="independent groups (runs) averaged"
    )
    p.add_argument("--nfe", type=int, default=d.nfe, help="network evaluations per particle")
    p.add_argument(
        "--glass-transitions",
        type=int,
        default=d.glass_transitions,
        help="GLASS transitions (inner steps = nfe / transitions); also FK resampling times",
    )
    p.add_argument(
        "--glass-rho", default=d.glass_rho, help="GLASS correlation rho: 'ddpm' or a float"
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
        help="particle counts for the reward-vs-NFE plot",
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
        help="reduced budget for tests: particles 4, groups 4, nfe 10, 2 GLASS transitions, "
        "budgets 2 4 (explicit flags still win)",
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
        help="KIND:PATH, e.g. clip:/models/clip, pickscore:DIR, hps:FILE, aesthetic:DIR, "
        "image_reward:FILE; python:FILE.py:FUNC for your own FUNC(images [M,C,H,W] in [0,1]) "
        "-> [M]; digits[:TARGET] for the embedded classifier (with --pipeline default)",
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
    p.add_argument("--transitions", type=int, default=5, help="outer transitions (time-grid steps)")
    p.add_argument("--inner-steps", type=int, default=10, help="GLASS inner steps per transition")
    p.add_argument("--rho", default="ddpm", help="GLASS rho: 'ddpm' or a float in [-1, 1]")
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
        "--guidance-scale",
        type=float,
        default=0.4,
        help="reward-guidance scale for --method guidance (GLASS_MATH 5.4)",
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
        "--only", nargs="+", default=None, help="script names to run (with or without .py)"
    )
    p.add_argument("--list", action="store_true", help="list the scripts and exit")
    p.add_argument(
        "--script-args",
        default="",
        help='extra arguments passed to every script, e.g. --script-args="--quick" (scripts run '
        "from the repository root, so their default output paths such as docs/benchmarks apply)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per script")
    p.add_argument("--out", type=Path, default=Path("glass_out/bench"), help="output directory")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    from glass_core import __doc__ as pkg_doc

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(pkg_doc or "").strip() + "\n\nExit codes: 0 ok, 1 runtime failure, "
        "2 bad arguments/config/paths.",
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
    def one(v: Any) -> Any:
        if action.type is not None and not isinstance(v, bool):
            try:
                v = action.type(v)  # type: ignore[operator]
            except (TypeError, ValueError) as exc:
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
    if isinstance(value, (list, dict)):
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
    except tomllib.TOMLDecodeError as exc:
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


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _log(args: argparse.Namespace) -> Any:
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from glass_core.demo_config import DemoConfig

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
    from glass_core.demo import run_demo

    results = run_demo(cfg, args.out, progress=_progress(args), log=_log(args))
    print((args.out / "table.md").read_text(encoding="utf-8"))
    for name in ("results.json", "demo_grid.png", "reward_vs_nfe.png", "table.md"):
        print(f"wrote {args.out / name}")
    print(f"total wall time {results['total_wall_s']:.1f} s")
    return 0


def _transition(args: argparse.Namespace) -> Any:
    if args.transition == "ode":
        from glass_core.transitions import ODE

        return ODE(solver="euler")
    if args.transition == "sde":
        from glass_core.transitions import SDE

        return SDE()
    rho: float | str = args.rho
    if rho != "ddpm":
        try:
            rho = float(rho)
        except ValueError:
            raise CLIError(
                f"--rho must be 'ddpm' or a float in [-1, 1], got {args.rho!r}"
            ) from None
        if not -1.0 <= rho <= 1.0:
            raise CLIError(f"--rho must be in [-1, 1], got {rho}")
    from glass_core.transitions import Glass  # after the checks: usage errors stay fast

    return Glass(rho=rho, inner_steps=args.inner_steps)


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def cmd_steer(args: argparse.Namespace) -> int:
    """One path for every pipeline: load it with DiffusionPipeline.from_pretrained (the embedded
    model for 'default') and call glass_core.steer, sharded with --distributed."""
    import json

    for name in ("pipeline", "reward"):
        if getattr(args, name) is None:
            raise CLIError(f"--{name} is required for 'steer'")
    _check_positive(args, "particles", "transitions", "inner_steps", "max_batch")
    transition = _transition(args)  # checks --rho before importing torch
    import torch  # after the argument checks: usage errors stay fast

    if args.distributed:
        _check_distributed(args)
    pipe_dir = _pipeline_dir(args.pipeline)
    reward = _steer_reward(args.reward, args.device)
    group, rank, world = None, 0, 1
    if args.distributed:
        from glass_core.align.distributed import init

        group = init()
    try:
        if group is not None:
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if rank == 0:
            args.out.mkdir(parents=True, exist_ok=True)
        else:
            args.quiet = True  # one rank prints, writes and shows progress
        record = _steer_run(args, pipe_dir, reward, transition, group, rank)
    finally:
        if group is not None:
            torch.distributed.destroy_process_group()
    if rank != 0:
        return 0
    record["args"] = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if not k.startswith("_")
    }
    record["torch"] = torch.__version__
    record["world_size"] = world
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"method {args.method}, transition {args.transition}, N={args.particles}"
        + (f" over {world} ranks" if group is not None else "")
        + f": rewards mean {record['mean_reward']:.4f} max {record['max_reward']:.4f}, "
        f"NFE/particle {record['nfe']}"
    )
    print(f"wrote {args.out / 'results.json'} and {len(record['images'])} image(s) to {args.out}")
    return 0


def _check_distributed(args: argparse.Namespace) -> None:
    """--distributed: a sharded method, launched by torchrun, N divisible by the world size."""
    import os

    from glass_core.steer import SHARDED_METHODS

    if args.method not in SHARDED_METHODS:
        raise CLIError(
            f"--distributed shards --method {' or '.join(SHARDED_METHODS)} only, "
            f"not {args.method!r}"
        )
    missing = [v for v in ("RANK", "WORLD_SIZE") if v not in os.environ]
    if missing:
        raise CLIError(
            f"--distributed: not launched under torchrun ({'/'.join(missing)} not set); run "
            f"`torchrun --nproc-per-node K --no-python glass-core steer --distributed ...` or "
            f"`python -m torch.distributed.run --nproc-per-node K -m glass_core steer "
            f"--distributed ...`"
        )
    world = int(os.environ["WORLD_SIZE"])
    if args.particles % world:
        raise CLIError(
            f"--particles ({args.particles}) must be a multiple of the number of ranks ({world}) "
            f"with --distributed"
        )


def _pipeline_dir(spec: str) -> Path:
    from glass_core.models.default import DEFAULT_MODEL_DIR

    if spec == "default":
        return DEFAULT_MODEL_DIR
    pipe_dir = Path(spec)
    if not pipe_dir.is_dir():
        raise CLIError(f"--pipeline: directory not found: {spec!r}")
    if not (pipe_dir / "model_index.json").is_file():
        raise CLIError(
            f"--pipeline: {spec!r} is not a diffusers pipeline directory (no model_index.json)"
        )
    return pipe_dir


def _default_reward_spec(spec: str) -> tuple[str | None, int]:
    """digits | digits:TARGET | digits:DIR:TARGET -> (dir or None, target)."""
    parts = spec.split(":")
    if parts[0] != "digits" or len(parts) > 3:
        raise CLIError(f"--reward must be digits[:TARGET] or digits:DIR:TARGET, got {spec!r}")
    target_s = parts[-1] if len(parts) > 1 else "3"
    path = parts[1] if len(parts) == 3 else None
    if not target_s.isdigit() or not 0 <= int(target_s) <= 9:
        raise CLIError(f"--reward digit target must be 0..9, got {target_s!r}")
    if path is not None and not Path(path).is_dir():
        raise CLIError(f"--reward: directory not found: {path!r}")
    return path, int(target_s)


def _steer_reward(spec: str, device: str) -> Any:
    """digits[:...] (the embedded classifier, on 1x8x8 samples), python:FILE.py:FUNC (an image
    reward) or KIND:PATH (glass_core.rewards.loading)."""
    kind, sep, rest = spec.partition(":")
    if kind == "digits":
        from glass_core.models.default import load_default_reward

        path, target = _default_reward_spec(spec)
        return load_default_reward(target, path, device=device)
    if not sep or not rest:
        raise CLIError(f"--reward must be KIND:PATH, got {spec!r}")
    from glass_core.rewards.loading import image_reward, load_reward

    if kind == "python":
        path, _, func = rest.rpartition(":")
        if not path or not func:
            raise CLIError(f"--reward python:FILE.py:FUNC, got {spec!r}")
        if not Path(path).is_file():
            raise CLIError(f"--reward: file not found: {path!r}")
        return image_reward(_load_function(Path(path), func))
    if not Path(rest).exists():
        raise CLIError(f"--reward: path not found: {rest!r}")
    return load_reward(kind, rest, device=device)


def _steer_run(
    args: argparse.Namespace, pipe_dir: Path, reward: Any, transition: Any, group: Any, rank: int
) -> dict[str, Any]:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    from glass_core.models.default import IMAGE_SHAPE, DigitReward
    from glass_core.steer import is_unconditional, steer

    if not _progress(args):
        _quiet_loading()
    kwargs: dict[str, Any] = {"local_files_only": True}
    if args.dtype != "float32":
        kwargs["torch_dtype"] = getattr(torch, args.dtype)
    pipe = DiffusionPipeline.from_pretrained(str(pipe_dir), **kwargs).to(args.device)
    pipe.set_progress_bar_config(disable=not _progress(args))
    prompts: str | list[str] | None = None
    if is_unconditional(pipe):
        if args.prompt is not None:
            raise CLIError(f"--prompt: {args.pipeline!r} is an unconditional pipeline, no prompts")
        cfg = pipe.unet.config
        size = cfg.sample_size
        shape = (cfg.in_channels, *((size, size) if isinstance(size, int) else size))
        if isinstance(reward, DigitReward) and tuple(shape) != IMAGE_SHAPE:
            raise CLIError(f"--reward digits needs 1x8x8 samples, the pipeline makes {shape}")
    else:
        if args.prompt is None:
            raise CLIError("--prompt is required for a text-conditioned diffusers pipeline")
        if isinstance(reward, DigitReward):
            raise CLIError(
                "--reward digits needs an unconditional 1x8x8 pipeline (--pipeline default)"
            )
        prompts = args.prompt if len(args.prompt) > 1 else args.prompt[0]
    res = steer(
        pipe,
        prompts,
        reward=reward,
        method=args.method,
        transition=transition,
        num_particles=args.particles,
        num_transitions=args.transitions,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        output_type="pil" if rank == 0 else "latent",  # only rank 0 decodes and writes
        max_batch=args.max_batch,
        progress=_progress(args),
        lambda_=args.lambda_,
        potential=args.potential,
        reward_scale=args.guidance_scale,
        process_group=group,
    )
    if rank != 0:
        return {}
    names = []
    for i, im in enumerate(res.images):
        name = f"image_{i:03d}.png"
        im.save(args.out / name)
        names.append(name)
    r = res.rewards.detach().double()
    record: dict[str, Any] = {
        "pipeline": args.pipeline,
        "reward": args.reward,
        "method": args.method,
        "nfe": int(res.nfe),
        "rewards": r.tolist(),  # [B][N]
        "mean_reward": float(r.mean()),
        "max_reward": float(r.max()),
        "best_index": res.best_index.tolist(),  # [B]
        "images": names,  # B * N, group-major
    }
    if args.method == "fk":
        record["log_weights"] = res.log_weights.tolist()  # [B][N]
        record["log_evidence"] = np.asarray(res.log_evidence).tolist()  # [B]
    for attr in ("wall_time", "model_time", "reward_time", "bookkeeping_time"):
        record[attr] = float(getattr(res, attr))
    return record


def _quiet_loading() -> None:
    """No diffusers/transformers loading bars when progress is off."""
    import diffusers

    diffusers.utils.logging.disable_progress_bar()
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def _load_function(path: Path, name: str) -> Any:
    """FUNC from a Python file (for --reward python:FILE.py:FUNC)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_glass_core_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise CLIError(f"--reward: cannot import {str(path)!r} as Python")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CLIError(f"--reward: {str(path)!r} has no callable {name!r}")
    return fn


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    import shlex
    import subprocess
    import time

    bench_dir = args.benches
    if bench_dir is None:
        candidates = [Path("benches"), Path(__file__).resolve().parents[2] / "benches"]
        bench_dir = next((c for c in candidates if c.is_dir()), None)
        if bench_dir is None:
            raise CLIError(
                "--benches: no benches/ directory here or in the source checkout; "
                "pass --benches DIR"
            )
    elif not bench_dir.is_dir():
        raise CLIError(f"--benches: directory not found: {str(bench_dir)!r}")
    scripts = sorted(p for p in bench_dir.glob("*.py") if not p.name.startswith("_"))
    if args.only:
        wanted = {n if n.endswith(".py") else n + ".py" for n in args.only}
        missing = wanted - {p.name for p in scripts}
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
    log = _log(args)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = []
    failed = 0
    for script in scripts:
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
        table = args.out / f"{script.stem}.md"
        table.write_text(f"# {script.name}\n\n{stdout}", encoding="utf-8")
        if code != 0:
            failed += 1
            log(f"{script.name} failed (exit {code}): {stderr.strip().splitlines()[-1:]}")
        else:
            print(stdout, end="" if stdout.endswith("\n") else "\n")
        summary.append(
            {
                "script": script.name,
                "exit_code": code,
                "wall_s": round(wall, 2),
                "table": table.name,
                "stderr_tail": stderr.strip().splitlines()[-5:],
            }
        )
    (args.out / "bench.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(summary)} table(s) and bench.json to {args.out}")
    if failed:
        raise RuntimeError(f"{failed} of {len(summary)} bench script(s) failed; see {args.out}")
    return 0


COMMANDS = {"demo": cmd_demo, "steer": cmd_steer, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``glass-core``; returns the exit code (0 ok, 1 failure, 2 usage)."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in argv
    try:
        args = parse_args(argv)
        code = COMMANDS[args.command](args)
        if getattr(args, "distributed", False):
            _exit_now(code)
        return code
    except SystemExit as exc:  # argparse (its own message already printed)
        code = exc.code
        return code if isinstance(code, int) else 2
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
    from glass_core.errors import GlassError

    if isinstance(exc, (CLIError, FileNotFoundError, NotADirectoryError)):
        return 2
    if isinstance(exc, GlassError) and isinstance(exc, ValueError):
        return 2  # InvalidInputError, UnsupportedModelError: the caller passed something bad
    return 1


def _describe(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, (CLIError,)):
        return msg
    return f"{type(exc).__name__}: {msg}"


if __name__ == "__main__":
    raise SystemExit(main())
