"""``glass-core steer``: load a local diffusers pipeline and a reward, call ``glass_core.steer``,
write the images, the best image of each prompt and ``results.json`` (rewards, weights, ESS
history, genealogy) into a folder that appears only when the run is complete."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from glass_core._cli_error import CLIError

#: an FK run whose ESS falls below this before EARLY_T has in effect one particle left
ESS_COLLAPSE = 1.5
EARLY_T = 0.5

#: options that only text-conditioned pipelines take (argparse dests = steer() keywords, except
#: max_sequence_length, which goes to encode_prompt)
PIPELINE_FLAGS = (
    "prompt",
    "negative_prompt",
    "guidance_scale",
    "true_cfg_scale",
    "height",
    "width",
    "max_sequence_length",
)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def transition_of(args: argparse.Namespace) -> Any:
    from glass_core.transitions import ODE, SDE, Glass

    if args.transition == "ode":
        return ODE(solver="euler", substeps=args.substeps)
    if args.transition == "sde":
        return SDE(substeps=args.substeps)
    solver: dict[str, Any] = {"solver": args.solver} if "solver" in args else {}  # unset: default
    return Glass(rho=args.rho, inner_steps=args.inner_steps, **solver)


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"{_flag(name)} must be >= 1, got {value}")


def _check_transitions(args: argparse.Namespace) -> None:
    """--transitions within what a time grid of that many steps can hold: the grid's own rule,
    asked before any model loads and reported under the flag the user typed."""
    if args.transitions is None:
        return
    from glass_core.errors import InvalidInputError
    from glass_core.schedules import uniform_grid

    try:
        uniform_grid(args.transitions)
    except InvalidInputError as exc:
        raise CLIError(str(exc).replace("num_steps", "--transitions", 1)) from None


def check_device(spec: str) -> None:
    """--device names a torch device that exists here (else exit 2 before anything loads)."""
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise CLIError(f"--device: {spec!r} is not a torch device ({exc})") from None
    if dev.type == "cpu":
        return
    if dev.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        backend = getattr(torch, dev.type, None)
        available = bool(backend is not None and backend.is_available())
        count = int(backend.device_count()) if available and backend is not None else 0
    if not available:
        build = (
            " (this torch is a CPU-only build)"
            if dev.type == "cuda" and not torch.version.cuda
            else ""
        )
        raise CLIError(
            f"--device {spec}: torch {torch.__version__} finds no {dev.type} device on this "
            f"machine{build}; use --device cpu"
        )
    if dev.index is not None and dev.index >= count:
        raise CLIError(f"--device {spec}: only {count} {dev.type} device(s) here")


def cmd_steer(args: argparse.Namespace) -> int:
    """One path for every pipeline: load it with DiffusionPipeline.from_pretrained (the embedded
    model for 'default') and call glass_core.steer, sharded with --distributed."""
    from glass_core import _deps
    from glass_core._outdir import check_output_dir, staged_output_dir

    if args.pipeline is None:
        raise CLIError("--pipeline is required for 'steer'")
    if args.reward is None and args.method != "sample":
        raise CLIError(
            f"--reward is required for --method {args.method} (only --method sample runs "
            f"without one)"
        )
    _check_image(args)
    _check_positive(
        args,
        "particles",
        "transitions",
        "inner_steps",
        "substeps",
        "max_batch",
        "height",
        "width",
        "max_sequence_length",
    )
    _check_transitions(args)
    _deps.require("steer")
    import torch  # after the argument checks: usage errors stay fast

    transition = transition_of(args)
    if args.distributed:
        _check_distributed(args)
    check_device(args.device)
    check_output_dir(args.out, args.overwrite)
    pipe_dir = _pipeline_dir(args.pipeline)
    reward = None if args.reward is None else _steer_reward(args.reward, args.device)
    group, rank, world = None, 0, 1
    if args.distributed:
        from glass_core.align.distributed import init

        group = init()
    try:
        if group is not None:
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if rank != 0:
            args.quiet = True  # one rank prints, writes and shows progress
            _steer_run(args, pipe_dir, reward, transition, group, rank)
            return 0
        with staged_output_dir(args.out, args.overwrite) as folder:
            res = _steer_run(args, pipe_dir, reward, transition, group, rank)
            record = write_outputs(folder, res, args, transition, world)
    finally:
        if group is not None:
            torch.distributed.destroy_process_group()
    for warning in record["warnings"]:
        print(f"glass-core: warning: {warning}", file=sys.stderr)
    summary = f"method {args.method}, transition {args.transition}, N={args.particles}"
    summary += f" over {world} ranks" if group is not None else ""
    if record["rewards"] is not None:
        summary += f": rewards mean {record['mean_reward']:.4f} max {record['max_reward']:.4f}"
    print(f"{summary}, NFE/particle {record['nfe']}")
    best = (
        f" (best of each prompt: {', '.join(record['best_images'])})"
        if record["best_images"]
        else ""
    )
    print(f"wrote results.json and {len(record['images'])} image(s) to {args.out}{best}")
    return 0


def _check_image(args: argparse.Namespace) -> None:
    """--image names a readable file and --strength in [0, 1] goes with it."""
    if args.image is None:
        if args.strength is not None:
            raise CLIError("--strength applies only together with --image")
        return
    if not args.image.is_file():
        raise CLIError(f"--image: file not found: {str(args.image)!r}")
    if args.strength is None or not 0.0 <= args.strength <= 1.0:
        raise CLIError(
            f"--strength: a float in [0, 1] is required with --image, got {args.strength}"
        )


def _read_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    except (OSError, UnidentifiedImageError) as e:
        raise CLIError(f"--image: not a readable image: {str(path)!r} ({e})") from e


def _check_distributed(args: argparse.Namespace) -> None:
    """--distributed: a sharded method, launched by torchrun, N divisible by the world size."""
    import os

    from glass_core.steering import SHARDED_METHODS

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
    from glass_core.digits.assets import DEFAULT_MODEL_DIR

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


REWARD_SPECS = (
    "digits[:TARGET] or digits:DIR:TARGET",
    "python:FILE.py:FUNC",
    "latent:FILE.py:FUNC",
    "clip:PATH",
    "pickscore:PATH",
    "hps:PATH",
    "aesthetic:HEAD_FILE:CLIP_DIR",
    "image_reward:PATH",
)


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
    reward), latent:FILE.py:FUNC (a reward on latents) or KIND:PATH (load_reward)."""
    from glass_core.rewards.loading import REWARD_KINDS, image_reward, latent_reward, load_reward

    kind, _, rest = spec.partition(":")
    if kind == "digits":
        from glass_core.digits.assets import load_default_reward

        path, target = _default_reward_spec(spec)
        return load_default_reward(target, path, device=device)
    if kind not in ("python", "latent", *REWARD_KINDS):
        raise CLIError(
            f"--reward: unknown kind {kind!r} in {spec!r}; one of {', '.join(REWARD_SPECS)}"
        )
    if kind in ("python", "latent"):
        path, _, func = rest.rpartition(":")
        if not path or not func:
            raise CLIError(f"--reward {kind}:FILE.py:FUNC, got {spec!r}")
        if not Path(path).is_file():
            raise CLIError(f"--reward: file not found: {path!r}")
        fn = load_function(Path(path), func)
        return image_reward(fn) if kind == "python" else latent_reward(fn)
    extra: dict[str, Any] = {}
    if kind == "aesthetic":  # a head on CLIP ViT-L/14 image embeddings: two paths
        rest, _, clip = rest.rpartition(":")
        if not rest or not clip:
            raise CLIError(f"--reward aesthetic:HEAD_FILE:CLIP_DIR, got {spec!r}")
        extra["clip_path"] = clip
    if not rest:
        raise CLIError(f"--reward {kind}:PATH, got {spec!r}")
    for path in (rest, *extra.values()):
        if not Path(path).exists():
            raise CLIError(f"--reward: path not found: {path!r}")
    try:
        return load_reward(kind, rest, device=device, **extra)
    except (ImportError, MemoryError):
        raise
    except Exception as exc:
        raise CLIError(
            f"--reward: {spec!r} could not be loaded ({type(exc).__name__}: {exc})"
        ) from exc


def load_function(path: Path, name: str) -> Any:
    """FUNC from a Python file (for --reward python:/latent:FILE.py:FUNC); runs the file."""
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


def load_pipeline(args: argparse.Namespace, pipe_dir: Path) -> Any:
    """The --pipeline folder through ``digits.assets.load_pipeline``; one that does not load is
    bad input (exit code 2)."""
    import torch

    from glass_core.digits.assets import load_pipeline as load
    from glass_core.errors import InvalidInputError

    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    try:
        return load(pipe_dir, device=args.device, torch_dtype=dtype)
    except InvalidInputError as exc:
        raise CLIError(f"--pipeline: {exc}") from exc


def _pipeline_kwargs(args: argparse.Namespace, pipe: Any, unconditional: bool) -> dict[str, Any]:
    """steer() keywords from the pipeline flags, each checked against the pipeline's kind."""
    given = {
        dest: getattr(args, dest) for dest in PIPELINE_FLAGS if getattr(args, dest) is not None
    }
    if unconditional:
        if given:
            raise CLIError(
                f"{', '.join(_flag(d) for d in given)}: {args.pipeline!r} is an unconditional "
                f"pipeline (no text conditioning, fixed sample size); drop these options"
            )
        return {}
    if "prompt" not in given:
        raise CLIError("--prompt is required for a text-conditioned diffusers pipeline")
    from glass_core.models.diffusers._family import detect_family

    family = detect_family(pipe)
    if "true_cfg_scale" in given and family != "flux":
        raise CLIError(f"--true-cfg-scale applies to FLUX pipelines, not {family}")
    kwargs = dict(given)
    prompts = kwargs.pop("prompt")
    kwargs["prompt"] = prompts if len(prompts) > 1 else prompts[0]
    if "negative_prompt" in kwargs and len(kwargs["negative_prompt"]) == 1:
        kwargs["negative_prompt"] = kwargs["negative_prompt"][0]
    if "max_sequence_length" in kwargs:
        length = kwargs.pop("max_sequence_length")
        if "max_sequence_length" not in inspect.signature(pipe.encode_prompt).parameters:
            raise CLIError(
                f"--max-sequence-length applies to pipelines with a T5 encoder (FLUX, SD3), "
                f"not {family}"
            )
        kwargs["encode_kwargs"] = {"max_sequence_length": length}
    return kwargs


def _steer_run(
    args: argparse.Namespace, pipe_dir: Path, reward: Any, transition: Any, group: Any, rank: int
) -> Any:
    import torch

    from glass_core.digits.assets import IMAGE_SHAPE, DigitReward
    from glass_core.steering import default_num_transitions, is_unconditional, steer

    quiet_libraries(args.quiet)
    pipe = load_pipeline(args, pipe_dir)  # its own progress bars off: steer() shows progress
    unconditional = is_unconditional(pipe)
    kwargs = _pipeline_kwargs(args, pipe, unconditional)
    if isinstance(reward, DigitReward):
        cfg = pipe.unet.config if unconditional else None
        shape = None
        if cfg is not None:
            size = cfg.sample_size
            shape = (cfg.in_channels, *((size, size) if isinstance(size, int) else size))
        if shape is None or tuple(shape) != IMAGE_SHAPE:
            raise CLIError(
                "--reward digits needs an unconditional pipeline of 1x8x8 samples "
                f"(--pipeline default); {args.pipeline!r} makes "
                f"{'text-conditioned latents' if shape is None else shape}"
            )
    prompt = kwargs.pop("prompt", None)
    steps = args.transitions or default_num_transitions(transition)
    _log(
        args,
        f"steer: --method {args.method}, --transition {args.transition}: {steps} transitions x "
        f"{transition.nfe_per_call} = {steps * transition.nfe_per_call} NFE per particle, "
        f"{args.particles} particles per prompt",
    )
    return steer(
        pipe,
        prompt,
        reward=reward,
        method=args.method,
        transition=transition,
        num_particles=args.particles,
        num_transitions=args.transitions,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        output_type="pil" if rank == 0 else "latent",  # only rank 0 decodes and writes
        max_batch=args.max_batch,
        progress=not args.quiet,
        lambda_=args.lambda_,
        potential=args.potential,
        reward_scale=args.reward_scale,
        process_group=group,
        image=None if args.image is None else _read_image(args.image),
        strength=args.strength,
        **kwargs,
    )


def quiet_libraries(quiet: bool) -> None:
    """Loading bars of diffusers/transformers only on a terminal; with --quiet their warnings
    (tokenizer truncation notices, which repeat the whole prompt) are off too."""
    import diffusers

    modules: list[Any] = [diffusers]
    try:
        import transformers

        modules.append(transformers)
    except ImportError:
        pass
    for module in modules:
        if quiet or not sys.stderr.isatty():
            module.utils.logging.disable_progress_bar()
        if quiet:
            module.utils.logging.set_verbosity_error()


def ess_collapse(
    ess: np.ndarray, times: np.ndarray, num_particles: int
) -> list[tuple[int, float, float]]:
    """(group, t, ESS) for each group whose ESS fell below ESS_COLLAPSE at a potential step
    before t = EARLY_T: from there on its particles are copies of one."""
    if num_particles < 2 or len(times) == 0:
        return []
    ess = np.asarray(ess, dtype=np.float64).reshape(len(times), -1)
    found = []
    for b in range(ess.shape[1]):
        early = [(float(t), float(e)) for t, e in zip(times, ess[:, b], strict=True) if t < EARLY_T]
        low = [(t, e) for t, e in early if e < ESS_COLLAPSE]
        if low:
            found.append((b, *low[0]))
    return found


def distinct_ancestors(genealogy: np.ndarray) -> list[int]:
    """For each group, how many initial particles the final ones descend from."""
    gen = np.asarray(genealogy)  # [S, B, N]
    out = []
    for b in range(gen.shape[1]):
        idx = np.arange(gen.shape[2])
        for step in gen[::-1, b]:
            idx = step[idx]
        out.append(len(np.unique(idx)))
    return out


def write_outputs(
    folder: Path, res: Any, args: argparse.Namespace, transition: Any, world: int
) -> dict[str, Any]:
    """Images, best images and results.json into `folder`; returns the record."""
    import json

    import torch

    names = []
    for i, im in enumerate(res.images):
        names.append(f"image_{i:03d}.png")
        im.save(folder / names[-1])
    record: dict[str, Any] = {
        "pipeline": args.pipeline,
        "reward": args.reward,
        "method": args.method,
        "transition": args.transition,
        "kernel": repr(transition),  # every parameter, defaults included
        "nfe": int(res.nfe),
        "num_transitions": len(res.time_grid) - 1,
        "time_grid": np.asarray(res.time_grid).tolist(),
        "num_particles": res.num_particles,
        "rewards": None,
        "best_index": None,
        "images": names,  # B * N, group-major
        "best_images": [],
        "warnings": [],
    }
    if res.rewards is not None:
        r = res.rewards.detach().double()
        record["rewards"] = r.tolist()  # [B][N]
        record["mean_reward"] = float(r.mean())
        record["max_reward"] = float(r.max())
        record["best_index"] = res.best_index.tolist()  # [B]
        for b, im in enumerate(res.best()):
            record["best_images"].append(f"best_{b:03d}.png")
            im.save(folder / record["best_images"][-1])
    if args.method == "fk":
        record["log_weights"] = res.log_weights.tolist()  # [B][N]
        record["log_evidence"] = np.asarray(res.log_evidence).tolist()  # [B]
        times = np.asarray(getattr(res.raw, "step_times", []), dtype=np.float64)
        # no potential step when nothing was sampled (--image with --strength 0)
        ess_rows = [] if res.ess_history is None else res.ess_history
        ess = np.asarray(ess_rows, dtype=np.float64).reshape(len(times), res.num_groups)
        record["ess_times"] = times.tolist()  # [S]: the potential steps' t
        record["ess_history"] = ess.tolist()  # [S][B], after reweighting
        if res.ancestors is not None:
            record["genealogy"] = np.asarray(res.ancestors).tolist()  # [S][B][N] parent indices
            record["distinct_ancestors"] = distinct_ancestors(res.ancestors)  # [B]
        for b, t, e in ess_collapse(ess, times, res.num_particles):
            roots = record.get("distinct_ancestors", [None] * (b + 1))[b]
            record["warnings"].append(
                f"FK weights collapsed onto one particle early (prompt {b}: ESS {e:.2f} of "
                f"{res.num_particles} at t = {t:.2f}"
                + (f"; the final particles descend from {roots} initial one(s)" if roots else "")
                + f"), so the result is close to a single trajectory; lower --lambda (now "
                f"{args.lambda_:g}) or raise --particles"
            )
    for attr in ("wall_time", "model_time", "reward_time", "bookkeeping_time"):
        record[attr] = float(getattr(res, attr))
    record["args"] = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if not k.startswith("_")
    }
    record["torch"] = torch.__version__
    record["world_size"] = world
    (folder / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
