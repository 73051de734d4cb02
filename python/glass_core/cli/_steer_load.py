"""Inputs of ``glass-core steer``.

Inputs of ``glass-core steer``: the --device, the --pipeline folder and its options, the
--reward spec (embedded, user Python or a registered kind) and the --image file; every one that
cannot be used is a CLIError naming its flag (exit code 2).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from glass_core.cli._common import CLIError

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
    "num_frames",
)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_device(spec: str) -> None:
    """--device names a torch device that exists here (else exit 2 before anything loads).

    Parameters
    ----------
    spec : str
        The --device value.

    Raises
    ------
    CLIError
        Not a torch device, or none such here.
    """
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


def read_image(path: Path) -> Any:
    """Read the --image file as a PIL image (grayscale or RGB).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    PIL.Image.Image
        The image.

    Raises
    ------
    CLIError
        A file PIL cannot read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    except (OSError, UnidentifiedImageError) as e:
        raise CLIError(f"--image: not a readable image: {str(path)!r} ({e})") from e


def pipeline_dir(spec: str) -> Path:
    """Return the folder a --pipeline value names ('default': the embedded model's).

    Parameters
    ----------
    spec : str
        The --pipeline value.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    CLIError
        A folder that does not exist or holds no pipeline.
    """
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


def default_reward_spec(spec: str) -> tuple[str | None, int]:
    """Digits | digits:TARGET | digits:DIR:TARGET -> (dir or None, target).

    Parameters
    ----------
    spec : str
        The --reward value.

    Returns
    -------
    tuple of (str or None, int)
        The classifier folder (None: embedded) and the target digit.

    Raises
    ------
    CLIError
        A malformed spec or target.
    """
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


def steer_reward(spec: str, device: str) -> Any:
    """Build the reward a --reward spec names.

    digits[:...] (the embedded classifier, on 1x8x8 samples), python:FILE.py:FUNC (an image
    reward), latent:FILE.py:FUNC (a reward on latents) or KIND:PATH (load_reward).

    Parameters
    ----------
    spec : str
        The --reward value.
    device : str
        The --device value.

    Returns
    -------
    object
        The reward for ``glass_core.steer``.

    Raises
    ------
    CLIError
        A spec that names no reward that loads.
    """
    from glass_core.rewards.loading import REWARD_KINDS, image_reward, latent_reward, load_reward

    kind, _, rest = spec.partition(":")
    if kind == "digits":
        from glass_core.digits.assets import load_default_reward

        path, target = default_reward_spec(spec)
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
    """FUNC from a Python file (for --reward python:/latent:FILE.py:FUNC); runs the file.

    Parameters
    ----------
    path : pathlib.Path
        The Python file.
    name : str
        The function's name.

    Returns
    -------
    callable
        The function.

    Raises
    ------
    CLIError
        A missing file, a file that fails to run, or no such callable.
    """
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
    """Load the --pipeline folder.

    The --pipeline folder through ``digits.assets.load_pipeline``; one that does not load is
    bad input (exit code 2).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.
    pipe_dir : pathlib.Path
        The pipeline folder.

    Returns
    -------
    object
        The diffusers pipeline.

    Raises
    ------
    CLIError
        A folder that does not load.
    """
    import torch

    from glass_core.digits.assets import load_pipeline as load
    from glass_core.errors import InvalidInputError

    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    try:
        return load(pipe_dir, device=args.device, torch_dtype=dtype)
    except InvalidInputError as exc:
        raise CLIError(f"--pipeline: {exc}") from exc


def pipeline_kwargs(args: argparse.Namespace, pipe: Any, unconditional: bool) -> dict[str, Any]:
    """steer() keywords from the pipeline flags, each checked against the pipeline's kind.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.
    pipe : object
        The loaded pipeline.
    unconditional : bool
        The pipeline has no text conditioning.

    Returns
    -------
    dict
        Keyword arguments of ``glass_core.steer``.

    Raises
    ------
    CLIError
        Text options for an unconditional pipeline, no --prompt, or an option the family lacks.
    """
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


def quiet_libraries(quiet: bool) -> None:
    """Quiet the loading bars and warnings of diffusers/transformers.

    Loading bars of diffusers/transformers only on a terminal; with --quiet their warnings
    (tokenizer truncation notices, which repeat the whole prompt) are off too.

    Parameters
    ----------
    quiet : bool
        The --quiet flag.
    """
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
