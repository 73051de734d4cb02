"""Output folders of the command line.

Output folders of the command line: never mixed with an older run's files, never half written,
never lost.

A command writes into a fresh hidden folder beside ``--out`` and moves it into place only when it
has finished, so a failed or interrupted run leaves ``--out`` exactly as it was (and creates no
empty folder). An existing non-empty ``--out`` is refused unless ``overwrite``; then it is
replaced whole, so no image of an earlier, larger run is left beside the new ``results.json``.
The final move re-checks atomically that ``--out`` is still empty (a rename onto a non-empty
folder fails), so a run that finished second never deletes another's results; when the move
fails, ``OutputNotMovedError`` says where the complete results are.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glass_core.errors import InvalidInputError

__all__ = ["OutputNotMovedError", "check_output_dir", "staged_output_dir"]

#: characters mkdtemp adds to a prefix
_RANDOM_CHARS = 8


class OutputNotMovedError(RuntimeError):
    """A completed run whose folder could not be moved to ``--out``.

    A run completed but its folder could not be moved to ``--out``; ``results`` is where it
    is (complete), named in the message.
    """

    def __init__(self, message: str, results: Path) -> None:
        super().__init__(message)
        self.results = results


def _name_max(folder: Path) -> int:
    """Return the longest file name (bytes) the filesystem of `folder` allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long to look up
        return False


def _existing_ancestor(path: Path) -> Path:
    parent = path.absolute().parent
    while not _exists(parent):
        parent = parent.parent
    return parent


def check_output_dir(out: Path, overwrite: bool, flag: str = "--out") -> None:
    """Raise InvalidInputError naming ``flag`` unless ``out`` can receive a new run's files.

    Parameters
    ----------
    out : pathlib.Path
        The output folder.
    overwrite : bool
        A non-empty ``out`` may be replaced.
    flag : str
        The option's name in messages.

    Raises
    ------
    InvalidInputError
        ``out`` is a file, non-empty without ``overwrite``, or its name is too long.
    """
    parent = _existing_ancestor(out)
    limit = _name_max(parent)
    for part in out.absolute().parts:
        if len(os.fsencode(part)) > limit:
            raise InvalidInputError(
                f"{flag}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes long; this "
                f"filesystem allows at most {limit}"
            )
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{flag}: {str(out)!r} is a file, not a folder")
    if not parent.is_dir():
        raise InvalidInputError(f"{flag}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise InvalidInputError(f"{flag}: cannot write into {str(parent)!r} (permission denied)")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise InvalidInputError(
            f"{flag}: {str(out)!r} is the current folder or contains it; name a folder for this "
            f"run's files, e.g. {flag} glass_out/run1"
        )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InvalidInputError(
            f"{flag}: {str(out)!r} is not empty; choose another folder, or pass --overwrite to "
            f"replace it and everything in it"
        )


def _sibling(target: Path, kind: str) -> Path:
    """Create a new empty hidden staging folder beside `target`.

    A new empty hidden folder ``.NAME.KIND-XXXXXXXX`` beside `target` (NAME shortened so the
    whole name fits the filesystem's limit however long ``--out``'s own name is).
    """
    fixed = len(f"..{kind}-") + _RANDOM_CHARS
    keep = max(1, _name_max(target.parent) - fixed)
    name = os.fsencode(target.name)[:keep].decode(errors="ignore")
    return Path(tempfile.mkdtemp(prefix=f".{name}.{kind}-", dir=target.parent))


def _rename(src: Path, dst: Path) -> None:
    """os.rename: onto a folder only if it is empty (POSIX), the atomic emptiness check."""
    os.rename(src, dst)


@contextmanager
def staged_output_dir(out: Path, overwrite: bool, flag: str = "--out") -> Iterator[Path]:
    """Stage a run's output folder and move it into place on success.

    Yield an empty folder beside ``out``; on success it becomes ``out`` (replacing it with
    ``overwrite``), on any exception (including KeyboardInterrupt) it is deleted and ``out`` is
    left untouched.

    Raises
    ------
    InvalidInputError
        ``out`` cannot receive the run (see check_output_dir), checked before the body runs.
    OutputNotMovedError
        The body completed but its folder could not become ``out`` (another run filled it
        meanwhile, or the filesystem refused); the message and ``results`` say where it is.

    Parameters
    ----------
    out : pathlib.Path
        The output folder.
    overwrite : bool
        A non-empty ``out`` may be replaced.
    flag : str
        The option's name in messages.

    Yields
    ------
    pathlib.Path
        The staging folder to write into.

    Raises
    ------
    OutputNotMovedError
        The run completed but could not be moved to ``out`` (the message says where it is).
    """
    check_output_dir(out, overwrite, flag)
    target = out.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "partial")
    _default_permissions(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if overwrite and target.exists():
            _replace(staging, target)
        else:
            _rename(staging, target)
    except OSError as exc:
        raise _not_moved(exc, staging, target, flag) from exc


def _replace(staging: Path, target: Path) -> None:
    """``target`` (any content) replaced by ``staging``; if that fails, ``target`` is restored."""
    old = _sibling(target, "old")
    os.rmdir(old)
    try:
        _rename(target, old)
    except FileNotFoundError:  # removed meanwhile: nothing to replace
        _rename(staging, target)
        return
    try:
        _rename(staging, target)
    except OSError:
        _rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _not_moved(exc: OSError, staging: Path, target: Path, flag: str) -> OutputNotMovedError:
    taken = exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)
    why = (
        f"{str(target)!r} was filled by another run meanwhile"
        if taken
        else f"moving it to {str(target)!r} failed ({exc.strerror or exc})"
    )
    return OutputNotMovedError(
        f"{flag}: the run completed but {why}; its complete results are in {str(staging)!r}",
        staging,
    )


def _default_permissions(path: Path) -> None:
    """Mkdtemp makes the folder private (0700); give it the mode mkdir would (0777 - umask)."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o777 & ~mask)
