"""The ``glass-core`` command (also ``python -m glass_core``).

Subcommands: ``demo`` (embedded model and reward, GLASS vs baselines at equal NFE), ``steer`` (any
local diffusers pipeline and reward, through ``glass_core.steer``), ``bench`` (runs benches/*.py),
one module each (``add_parser(subparsers)`` and ``run(args) -> int``). Every option can also come
from a TOML file (``--config FILE``, see ``glass_core.cli.config``); flags win over the file. A
config file can name Python files that the command runs (``python:`` / ``latent:`` rewards,
``--benches``): treat it as code.

Output folders: a command writes into a temporary folder beside ``--out`` and moves it into
place when it is complete; a non-empty ``--out`` is refused unless ``--overwrite``. If the move
fails, the error says where the complete results are.

Exit codes: 0 success, 1 runtime failure, 2 bad arguments / configuration / paths / pipelines
that do not load / a missing optional dependency (the message names the pip extra), 130 on
Ctrl-C, 128 + N on signal N (SIGTERM 143, SIGHUP 129; the staging folder is removed).
Errors print one line ``glass-core: error: ...`` and no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from glass_core.cli import bench, demo, steer
from glass_core.cli._common import CLIError, Parser, flag_of
from glass_core.cli.config import load_config

__all__ = ["CLIError", "build_parser", "main"]

PROG = "glass-core"

#: command name -> its module's run(args)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": demo.run,
    "steer": steer.run,
    "bench": bench.run,
}

#: signals that end a run like Ctrl-C does: staged output removed, exit code 128 + signal
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else ()


class Terminated(BaseException):
    """SIGTERM/SIGHUP arrived: unwinds like KeyboardInterrupt (staged output is removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def build_parser() -> argparse.ArgumentParser:
    """Build the ``glass-core`` parser with one subparser per command.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    from glass_core import __doc__ as pkg_doc
    from glass_core.cli._common import Formatter

    parser = Parser(
        prog=PROG,
        description=(pkg_doc or "").strip() + "\n\nExit codes: 0 ok, 1 runtime failure, "
        "2 bad input (arguments, config, paths, pipelines) or a missing optional dependency.",
        formatter_class=Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{demo,steer,bench}")
    for module in (demo, steer, bench):
        module.add_parser(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sp: argparse.ArgumentParser = action.choices[name]
            return sp
    raise KeyError(name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse flags over the --config file over the defaults.

    ``args._explicit`` holds the dests given as flags.

    Parameters
    ----------
    argv : sequence of str or None
        The arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
        The settings.

    Raises
    ------
    CLIError
        Bad flags or a bad --config file.
    """
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


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glass-core`` and return its exit code.

    Entry point of ``glass-core``; returns the exit code (0 ok, 1 failure, 2 bad input or a
    missing optional dependency, 130 interrupted, 128 + N ended by signal N).

    Parameters
    ----------
    argv : sequence of str or None
        The arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code; errors are reported on stderr, not raised.
    """
    argv = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in argv
    previous = _install_signal_handlers()
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
    except Terminated as exc:
        print(f"{PROG}: ended by {exc}", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:
        if debug:
            raise
        code = _exit_code(exc)
        print(f"{PROG}: error: {_describe(exc)}", file=sys.stderr)
        if code == 1:
            print(f"{PROG}: run again with --debug for the traceback", file=sys.stderr)
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install_signal_handlers() -> dict[signal.Signals, Any]:
    """Make SIGTERM/SIGHUP raise Terminated.

    SIGTERM/SIGHUP raise Terminated (main thread only: elsewhere signals cannot be caught);
    returns the previous handlers to restore.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[signal.Signals, Any] = {}
    for signum in TERMINATING_SIGNALS:
        previous[signum] = signal.signal(signum, _terminate)
    return previous


def _exit_now(code: int) -> NoReturn:
    """End a --distributed run without interpreter finalisation.

    End a --distributed run without interpreter finalisation: the process group is already
    destroyed and every file written, but gloo's C++ threads can still abort (SIGABRT,
    "terminate called without an active exception") during finalisation, which torchrun would
    report as a failed run.
    """
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
    """Return the one-line message of an error.

    The one-line message: as raised, prefixed by the flag of the argument at fault (from
    ``InvalidInputError.arg`` through the one table, FLAGS) unless the message names it.
    """
    from glass_core._deps import MissingExtraError, describe_missing

    msg = str(exc) or type(exc).__name__
    if isinstance(exc, CLIError | MissingExtraError):
        return msg
    if isinstance(exc, ModuleNotFoundError):
        return describe_missing(exc) or f"{type(exc).__name__}: {msg}"
    flag = flag_of(getattr(exc, "arg", None))
    if flag is not None:
        return msg if flag in msg else f"{flag}: {msg}"
    return f"{type(exc).__name__}: {msg}"


if __name__ == "__main__":
    raise SystemExit(main())
