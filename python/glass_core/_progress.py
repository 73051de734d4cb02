"""One progress policy for the library and the command line.

``progress=True`` shows a tqdm bar when stderr is a terminal and, when it is not (a log file, CI,
a pipe), one plain line every ``LOG_INTERVAL`` seconds and a last one when the loop ends (only if
it ran long enough to print one), so a long run is never silent and a log never fills with
carriage-return bars. ``progress=False`` (``--quiet``) shows nothing.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["LOG_INTERVAL", "progress_bar"]

#: seconds between two log lines when stderr is not a terminal
LOG_INTERVAL = 10.0


class _LogLines:
    """A progress counter that writes ``desc: k/total steps, s elapsed`` lines to stderr."""

    def __init__(self, total: int, desc: str, interval: float) -> None:
        self.total, self.desc, self.interval = total, desc, interval
        self.n = 0
        self.start = self.last = time.monotonic()
        self.printed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self._line(now)

    def _line(self, now: float) -> None:
        print(
            f"{self.desc}: {self.n}/{self.total} steps, {now - self.start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        self.last = now
        self.printed = True

    def close(self) -> None:
        if self.printed:
            self._line(time.monotonic())
            self.printed = False

    def __enter__(self) -> _LogLines:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """Return a context manager with ``update(n)``: a bar, log lines or nothing.

    See the module doc.

    Parameters
    ----------
    total : int
        Steps expected.
    enabled : bool
        False: nothing is shown.
    desc : str
        The bar's label.

    Returns
    -------
    context manager
        With ``update(n)`` and ``close()``.
    """
    from tqdm.auto import tqdm

    if enabled and not (_is_terminal(sys.stderr) or _in_notebook()):
        return _LogLines(total, desc, LOG_INTERVAL)
    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


def _in_notebook() -> bool:
    """Jupyter's stderr is no terminal, yet tqdm.auto draws a widget there."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and type(get()).__name__ == "ZMQInteractiveShell"


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
