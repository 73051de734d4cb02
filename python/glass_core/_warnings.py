"""Warnings that point at the user's line, however deep inside glass_core they are raised."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import FrameType

_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep  # not a sibling glass_core_x/


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with the location of the first caller outside the glass_core package.

    A fixed ``stacklevel`` is right for one call path only (``from_pipeline``, direct
    construction and ``steer`` reach the same check at different depths).

    Parameters
    ----------
    message : str
        The warning's text.
    category : type of Warning
        Its class.
    """
    frame: FrameType | None = sys._getframe(1)  # warn_caller's caller: stacklevel 2
    level = 2
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
        _PACKAGE_DIR
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
