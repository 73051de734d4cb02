"""What every command of the command line shares.

What every command of the command line shares: its user-facing error, the help formatter, the
common options, the table from library arguments to flags and the log. A module of its own, so
that the command modules and ``glass_core.cli`` can use it without importing each other.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

__all__ = ["FLAGS", "CLIError", "Formatter", "Parser", "add_common_options", "flag_of", "logger"]


class CLIError(Exception):
    """A user-facing error: bad argument, bad config or missing path (exit code 2)."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every default shown and descriptions kept as written."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors reported like every other bad input (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see `{self.prog} --help`)")


#: The one table from library argument names (``InvalidInputError.arg``, the keywords of
#: ``glass_core.steer``, the transitions and the demo's settings) to the flags that set them.
FLAGS: dict[str, str] = {
    "num_particles": "--particles",
    "num_transitions": "--transitions",
    "num_steps": "--transitions",  # the time grid's name for it
    "lambda_": "--lambda",
    "reward_scale": "--reward-scale",
    "potential": "--potential",
    "inner_steps": "--inner-steps",
    "solver": "--solver",
    "substeps": "--substeps",
    "rho": "--rho",
    "max_batch": "--max-batch",
    "device": "--device",
    "dtype": "--dtype",
    "seed": "--seed",
    "reward": "--reward",
    "method": "--method",
    "transition": "--transition",
    "image": "--image",
    "strength": "--strength",
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "guidance_scale": "--guidance-scale",
    "true_cfg_scale": "--true-cfg-scale",
    "height": "--height",
    "width": "--width",
    "max_sequence_length": "--max-sequence-length",
    "num_frames": "--num-frames",
    "num_candidates": "--num-candidates",
    "threads": "--threads",
    "compile": "--compile",
}


def flag_of(arg: str | None) -> str | None:
    """Return the flag setting library argument `arg` (None if no flag does).

    Parameters
    ----------
    arg : str or None
        A library argument's name or a flag.

    Returns
    -------
    str or None
        The flag.
    """
    if arg is None or arg.startswith("--"):
        return arg
    return FLAGS.get(arg)


def rho_type(value: str | float) -> str | float:
    """GLASS rho from a flag or a TOML value: 'ddpm' or a float in [-1, 1].

    Parameters
    ----------
    value : str or float
        The flag's or key's value.

    Returns
    -------
    str or float
        'ddpm' or the float.

    Raises
    ------
    argparse.ArgumentTypeError
        Anything else.
    """
    from glass_core.errors import InvalidInputError
    from glass_core.schedules import check_rho  # the library's rule (no torch import)

    parsed: object = value
    if isinstance(value, str) and value != "ddpm":
        with contextlib.suppress(ValueError):  # else check_rho names the text
            parsed = float(value)
    try:
        return check_rho(parsed)
    except InvalidInputError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("rho ")) from None


def add_common_options(p: argparse.ArgumentParser) -> None:
    """--config, --quiet, --overwrite and --debug, which every command takes.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The command's parser.
    """
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


def logger(args: argparse.Namespace) -> Callable[[str], None]:
    """Return a function printing a progress message on stderr unless --quiet.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags.

    Returns
    -------
    callable
        ``log(message)``.
    """

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    return log
