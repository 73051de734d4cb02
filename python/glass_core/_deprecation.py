"""Old public names kept working for one release, each with a DeprecationWarning naming the new
one."""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def warn(old: str, new: str, *, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_kwargs(**old_to_new: str) -> Callable[[F], F]:
    """Decorator: keyword `old` (deprecated) is passed on as `new`; both at once is an error."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        from glass_core.errors import InvalidInputError

                        raise InvalidInputError(
                            f"`{old}` is the deprecated name of `{new}`; pass only `{new}`"
                        )
                    warn(f"{fn.__name__}({old}=...)", f"{new}=...")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


class ModuleAlias(types.ModuleType):
    """A module kept under its old import path (register it in ``sys.modules``): every
    attribute read imports the new module, warns and forwards."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old, f"Deprecated alias of {new}.")
        self._new = new

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        import importlib

        warn(f"module {self.__name__}", f"module {self._new}")
        return getattr(importlib.import_module(self._new), name)


def moved_module(old: str, new: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for a module kept at its old path after a move: every
    attribute read imports the new module, warns and forwards (the old module itself stays
    importable silently, so only using it warns)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        import importlib

        value = getattr(importlib.import_module(new), name)
        warn(f"{old}.{name}", f"{new}.{name}")
        return value

    return __getattr__
