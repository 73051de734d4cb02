"""TOML configuration of the commands.

TOML configuration of the commands: every flag is also a key (dashes or underscores), flat or
under a ``[demo]`` / ``[steer]`` / ``[bench]`` table; a value must have exactly the flag's type
(3.7 is no integer, true no number), so a file is checked as strictly as the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from glass_core.cli._common import CLIError

__all__ = ["load_config"]


def _convert_one(action: argparse.Action, key: str, v: Any) -> Any:
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


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """Check a TOML value for `action`, of exactly the type the flag takes."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise CLIError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*"):
        if not isinstance(value, list):
            value = [value]
        return [_convert_one(action, key, v) for v in value]
    if isinstance(value, list | dict):
        raise CLIError(f"config key {key!r} must be a single value, got {value!r}")
    return _convert_one(action, key, value)


def _read_toml(path: Path) -> dict[str, Any]:
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
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"--config {str(path)!r}: invalid TOML: {exc}") from None


def load_config(path: Path, sub: argparse.ArgumentParser, command: str) -> dict[str, Any]:
    """TOML keys -> argparse defaults for the parser `sub` of `command`.

    Parameters
    ----------
    path : Path
        The TOML file.
    sub : argparse.ArgumentParser
        The command's parser (its flags are the known keys).
    command : str
        The command's name (its table in the file).

    Returns
    -------
    dict
        argparse destination -> value, for ``sub.set_defaults``.

    Raises
    ------
    CLIError
        A missing or invalid file, an unknown key or a value of the wrong type.
    """
    data = _read_toml(path)
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
