"""``glass-core steer``: steer a local diffusers pipeline.

``glass-core steer``: load a local diffusers pipeline and a reward, call ``glass_core.steer``,
write the images, the best image of each prompt and ``results.json`` into a folder that appears
only when the run is complete. Every argument rule that needs no model is the library's
(``glass_core._checks``), asked with the flags' names before anything loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from glass_core import _checks
from glass_core.cli._common import (
    CLIError,
    Formatter,
    add_common_options,
    flag_of,
    logger,
    rho_type,
)

__all__ = ["add_parser", "run"]

#: every FK potential of glass_core.align.potentials.POTENTIALS (a test keeps them equal; the
#: module imports torch, which --help must not)
POTENTIALS = ("diff", "max", "sum", "lookahead")

#: every method of glass_core.steering.METHODS (a test keeps them equal; steering imports torch)
METHODS = (
    "fk", "best_of_n", "guidance", "sample", "tempered", "twisted", "value_decoding", "beam_search"
)  # fmt: skip
#: the methods that draw candidates per step (value decoding, beam search)
SEARCH_METHODS = ("value_decoding", "beam_search")

#: --lambda's deliberate default: the FKS text-to-image setting (steer()'s own lambda_ is 1.0)
CLI_LAMBDA = 10.0

DESCRIPTION = (
    "Steer any local diffusers pipeline toward a reward through glass_core.steer. --pipeline "
    "'default' uses the embedded digits model (then --reward digits[:TARGET] or "
    "digits:DIR:TARGET).\n\n"
    "Many processes/GPUs (--distributed, --method fk or best_of_n): launch under torchrun,\n"
    "  torchrun --nproc-per-node K --no-python glass-core steer --distributed ...\n"
    "  python -m torch.distributed.run --nproc-per-node K -m glass_core steer --distributed "
    "...\n"
    "(torchrun needs --no-python to run the glass-core command). Each of the K ranks holds "
    "--particles / K particles (gloo on CPU, NCCL on GPUs); results equal one process with "
    "the same --seed; rank 0 prints and writes --out."
)


def add_parser(subparsers: Any) -> None:
    """Add the ``steer`` command to `subparsers`.

    Add the ``steer`` command to `subparsers` (defaults: glass_core.steer's, except --lambda,
    stated in its help).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``glass-core`` parser's subparsers.
    """
    p = subparsers.add_parser(
        "steer",
        help="steer a local diffusers pipeline toward a reward (glass_core.steer)",
        description=DESCRIPTION,
        formatter_class=Formatter,
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
    _add_method_options(p)
    _add_pipeline_options(p)
    _add_run_options(p)
    add_common_options(p)


def _add_method_options(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add("--method", default="fk", choices=METHODS,
        help="alignment method (docs/search.md for tempered, twisted, value_decoding, "
        "beam_search)")  # fmt: skip
    add(
        "--num-candidates",
        type=int,
        default=argparse.SUPPRESS,  # unset: the library's default
        help="candidates per particle and step for --method value_decoding / beam_search",
    )
    add("--transition", default="glass", choices=["glass", "sde", "ode"], help="transition kernel")
    add("--particles", type=int, default=4, help="particles N per prompt")
    add(
        "--transitions",
        type=int,
        default=None,
        help="outer transitions (time-grid steps); unset = 50 NFE per particle whatever the "
        "kernel: 50 / --inner-steps for glass, 50 / --substeps for ode and sde",
    )
    add("--inner-steps", type=int, default=10, help="GLASS inner steps per transition")
    add(
        "--solver",
        default=argparse.SUPPRESS,  # unset: the library's default
        help="GLASS inner solver: pc (the default), multistep, euler, heun or midpoint; with "
        "--transition ode: euler (the default), heun, multistep or pc",
    )
    add("--substeps", type=int, default=1, help="ODE/SDE Euler substeps per transition")
    add(
        "--compile",
        action="store_true",
        default=None,  # unset: steer's default
        help="torch.compile the GLASS inner loop (glass_core.steer's compile=True; the first "
        "call pays the compilation)",
    )
    add("--rho", type=rho_type, default="ddpm", help="GLASS rho: 'ddpm' or a float in [-1, 1]")
    add("--potential", default="diff", choices=POTENTIALS, help="FK potential")
    add(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=float,
        default=CLI_LAMBDA,
        help="FK temperature; the default is deliberately the FKS text-to-image setting, not "
        "glass_core.steer's lambda_=1.0",
    )
    add(
        "--reward-scale",
        type=float,
        default=0.4,
        help="reward-guidance scale for --method guidance (docs/math.md §6.4)",
    )


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
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
        help="true classifier-free guidance with --negative-prompt (> 1 turns it on) for the "
        "families that have it (FLUX, Qwen-Image); the pipeline says if it has none",
    )
    g.add_argument("--height", type=int, default=None, help="image height in pixels")
    g.add_argument("--width", type=int, default=None, help="image width in pixels")
    g.add_argument(
        "--max-sequence-length",
        type=int,
        default=None,
        help="T5 prompt tokens (FLUX, SD3); unset = the pipeline's default (512 for FLUX)",
    )
    g.add_argument(
        "--num-frames",
        type=int,
        default=None,
        help="video frames (Wan, the pipeline's own num_frames); unset = the pipeline's default",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add(
        "--image",
        type=Path,
        default=None,
        help="edit this image file (SDEdit): VAE-encode it, noise it to t0 = 1 - --strength and "
        "steer from there",
    )
    add(
        "--strength",
        type=float,
        default=None,
        help="with --image: 0 keeps the image, 1 ignores it (starts from noise)",
    )
    add("--seed", type=int, default=0, help="random seed, in [0, 2**64 - 1]")
    add("--max-batch", type=int, default=None, help="model micro-batch size")
    add("--device", default="cpu", help="torch device")
    add("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
        help="model dtype")  # fmt: skip
    add("--out", type=Path, default=Path("glass_out/steer"), help="output directory")
    add(
        "--distributed",
        action="store_true",
        help="shard the particles over torch.distributed ranks (--method fk or best_of_n, "
        "--particles a multiple of the rank count); run under `torchrun --nproc-per-node K "
        "--no-python glass-core steer --distributed ...` or `python -m torch.distributed.run "
        "--nproc-per-node K -m glass_core steer --distributed ...`; only rank 0 writes --out",
    )


def transition_of(args: argparse.Namespace) -> Any:
    """Build the transition kernel the flags name (its own constructor checks its parameters).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.

    Returns
    -------
    Transition
        Glass, ODE or SDE.

    Raises
    ------
    InvalidInputError
        A parameter the kernel refuses.
    """
    from glass_core.transitions import ODE, SDE, Glass

    if args.transition == "ode":  # the CLI's ODE default stays Euler
        return ODE(solver=getattr(args, "solver", "euler"), substeps=args.substeps)
    if args.transition == "sde":
        return SDE(substeps=args.substeps)
    solver: dict[str, Any] = {"solver": args.solver} if "solver" in args else {}  # unset: default
    return Glass(rho=args.rho, inner_steps=args.inner_steps, **solver)


def check_arguments(args: argparse.Namespace) -> None:
    """Check every rule that needs no model, before anything loads.

    Every rule that needs no model, before anything loads: glass_core.steer's own rules
    (glass_core._checks.steer_arguments) named by the flags, the seed, and the sizes and files
    only the command line has.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.

    Raises
    ------
    CLIError
        The first rule broken, naming its flag.
    """
    if args.pipeline is None:
        raise CLIError("--pipeline is required for 'steer'")
    _checks.steer_arguments(
        method=args.method,
        reward=args.reward,
        num_particles=args.particles,
        num_transitions=args.transitions,
        lambda_=args.lambda_,
        reward_scale=args.reward_scale,
        image=args.image,
        strength=args.strength,
        name=lambda arg: flag_of(arg) or arg,
    )
    _checks.seed(args.seed, "--seed")
    sizes = ("inner_steps", "substeps", "max_batch", "height", "width", "max_sequence_length")
    for dest in (*sizes, "num_frames"):
        _checks.optional_positive_int(getattr(args, dest), "--" + dest.replace("_", "-"))
    if args.image is not None and not args.image.is_file():
        raise CLIError(f"--image: file not found: {str(args.image)!r}")


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


def run(args: argparse.Namespace) -> int:
    """Run ``glass-core steer``.

    One path for every pipeline: load it with DiffusionPipeline.from_pretrained (the embedded
    model for 'default') and call glass_core.steer, sharded with --distributed.

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
        Bad flags (exit code 2).
    InvalidInputError
        An argument steer refuses (exit code 2).
    """
    from glass_core import _deps
    from glass_core._outdir import check_output_dir, staged_output_dir
    from glass_core.cli._steer_load import check_device, pipeline_dir, steer_reward
    from glass_core.cli._steer_record import write_outputs

    check_arguments(args)
    check_output_dir(args.out, args.overwrite)
    _deps.require("steer")
    import torch  # after the argument checks: usage errors stay fast

    transition = transition_of(args)
    if args.distributed:
        _check_distributed(args)
    check_device(args.device)
    pipe_dir = pipeline_dir(args.pipeline)
    reward = None if args.reward is None else steer_reward(args.reward, args.device)
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
    _print_summary(args, record, world if group is not None else None)
    return 0


def _print_summary(args: argparse.Namespace, record: dict[str, Any], ranks: int | None) -> None:
    for warning in record["warnings"]:
        print(f"glass-core: warning: {warning}", file=sys.stderr)
    summary = f"method {args.method}, transition {args.transition}, N={args.particles}"
    summary += f" over {ranks} ranks" if ranks is not None else ""
    if record["rewards"] is not None:
        summary += f": rewards mean {record['mean_reward']:.4f} max {record['max_reward']:.4f}"
    print(f"{summary}, NFE/particle {record['nfe']}")
    best = record["best_images"]
    best_text = f" (best of each prompt: {', '.join(best)})" if best else ""
    print(f"wrote results.json and {len(record['images'])} image(s) to {args.out}{best_text}")


def _check_digit_pipeline(args: argparse.Namespace, pipe: Any, unconditional: bool) -> None:
    """--reward digits scores 1x8x8 samples: only the embedded model's kind makes them."""
    from glass_core.digits.assets import IMAGE_SHAPE

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


def _steer_run(
    args: argparse.Namespace, pipe_dir: Path, reward: Any, transition: Any, group: Any, rank: int
) -> Any:
    import torch

    from glass_core.cli._steer_load import (
        load_pipeline,
        pipeline_kwargs,
        quiet_libraries,
        read_image,
    )
    from glass_core.digits.assets import DigitReward
    from glass_core.steering import default_num_transitions, is_unconditional, steer

    search = _search_kwargs(args)  # before the pipeline loads
    quiet_libraries(args.quiet)
    pipe = load_pipeline(args, pipe_dir)  # its own progress bars off: steer() shows progress
    unconditional = is_unconditional(pipe)
    kwargs = pipeline_kwargs(args, pipe, unconditional)
    if isinstance(reward, DigitReward):
        _check_digit_pipeline(args, pipe, unconditional)
    prompt = kwargs.pop("prompt", None)
    steps = args.transitions or default_num_transitions(transition)
    nfe = transition.nfe_per_call
    logger(args)(
        f"steer: --method {args.method}, --transition {args.transition}: {steps} transitions x "
        f"{nfe} = {steps * nfe} NFE per particle, {args.particles} particles per prompt",
    )
    return steer(
        pipe,
        prompt,
        reward=reward,
        method=args.method,
        transition=transition,
        num_particles=args.particles,
        num_transitions=args.transitions,
        # drawn where the run lives (a CUDA generator with --device cuda: no host-side noise)
        generator=torch.Generator(device=args.device).manual_seed(args.seed),
        output_type="pil" if rank == 0 else "latent",  # only rank 0 decodes and writes
        max_batch=args.max_batch,
        progress=not args.quiet,
        lambda_=args.lambda_,
        potential=args.potential,
        reward_scale=args.reward_scale,
        process_group=group,
        image=None if args.image is None else read_image(args.image),
        strength=args.strength,
        compile=args.compile,
        **search,
        **kwargs,
    )


def _search_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """--num-candidates for the methods that take it (unset: the library's default)."""
    if "num_candidates" not in vars(args):
        return {}
    if args.method not in SEARCH_METHODS:
        raise CLIError(f"--num-candidates applies to --method {' or '.join(SEARCH_METHODS)}")
    return {"num_candidates": args.num_candidates}
