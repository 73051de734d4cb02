"""Output folders of the command line: never mixed with an older run's files, never half written.

A command writes into a fresh hidden folder beside ``--out`` and moves it into place only when it
has finished, so a failed or interrupted run leaves ``--out`` exactly as it was (and creates no
empty folder). An existing non-empty ``--out`` is refused unless ``overwrite``; then it is
replaced whole, so no image of an earlier, larger run is left beside the new ``results.json``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glass_core.errors import InvalidInputError

__all__ = ["check_output_dir", "staged_output_dir"]


def check_output_dir(out: Path, overwrite: bool, flag: str = "--out") -> None:
    """Raise InvalidInputError naming ``flag`` unless ``out`` can receive a new run's files."""
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{flag}: {str(out)!r} is a file, not a folder")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
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


@contextmanager
def staged_output_dir(out: Path, overwrite: bool, flag: str = "--out") -> Iterator[Path]:
    """Yield an empty folder beside ``out``; on success it becomes ``out`` (replacing it), on any
    exception (including KeyboardInterrupt) it is deleted and ``out`` is left untouched."""
    check_output_dir(out, overwrite, flag)
    target = out.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    _default_permissions(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():  # empty, or replaced with overwrite
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def _default_permissions(path: Path) -> None:
    """mkdtemp makes the folder private (0700); give it the mode mkdir would (0777 - umask)."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o777 & ~mask)
