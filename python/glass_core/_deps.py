"""Optional dependencies: which pip extra brings which module, and one clear error when missing.

``pip install glass-core`` brings numpy, torch and tqdm (the library on your own models); the
extras add the rest (pyproject.toml's ``[project.optional-dependencies]`` lists the same names):

* ``demo``: the embedded model and ``glass-core demo`` (diffusers, safetensors, matplotlib,
  scikit-learn for the real digits the demo scores against);
* ``diffusers``: steering diffusers pipelines and the reward adapters (``glass-core steer``);
* ``test``: the test suite.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = [
    "EXTRA_OF_MODULE",
    "MissingExtraError",
    "describe_missing",
    "pretrained_kwargs",
    "require",
]

#: top-level module -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "diffusers": "demo",
    "safetensors": "demo",
    "matplotlib": "demo",
    "PIL": "demo",
    "sklearn": "demo",
    "transformers": "diffusers",
    "tokenizers": "diffusers",
    "accelerate": "diffusers",
    "open_clip": "diffusers",
}

#: what each command needs at least (checked before any work starts), and the extra to name
NEEDS: dict[str, tuple[str, ...]] = {
    "demo": ("diffusers", "safetensors", "matplotlib", "PIL", "sklearn"),
    "steer": ("diffusers", "safetensors", "PIL"),
}
EXTRA_OF_USE = {"demo": "demo", "steer": "diffusers"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""


def missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def install_hint(modules: list[str], extra: str | None = None) -> str:
    """Return the pip command installing the extras that provide `modules`.

    Parameters
    ----------
    modules : list of str
        Top-level module names (unknown ones map to the diffusers extra).
    extra : str, optional
        The extra to name instead of those of `modules`.

    Returns
    -------
    str
        The ``pip install "glass-core[...]"`` hint, with its source-checkout form.
    """
    extras = {extra} if extra else {EXTRA_OF_MODULE.get(m, "diffusers") for m in modules}
    spec = ",".join(sorted(extras))
    return (
        f'pip install "glass-core[{spec}]" (or, in a source checkout, pip install -e ".[{spec}]")'
    )


def require(use: str) -> None:
    """Raise MissingExtraError naming the extra when a module that ``use`` needs is missing.

    Parameters
    ----------
    use : str
        A key of ``NEEDS`` (the feature about to run).

    Raises
    ------
    MissingExtraError
        If a module that `use` needs is not installed; the message gives the install hint.
    """
    missing = missing_modules(*NEEDS[use])
    if missing:
        raise MissingExtraError(
            f"glass-core {use} needs {', '.join(missing)} (not installed): "
            f"{install_hint([], EXTRA_OF_USE[use])}"
        )


def describe_missing(exc: ModuleNotFoundError) -> str | None:
    """Return the install hint for a missing optional dependency.

    Parameters
    ----------
    exc : ModuleNotFoundError
        The error raised by an import.

    Returns
    -------
    str or None
        A message naming the missing module and the install command, or None when the module
        is not one of the optional dependencies.
    """
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None
    return f"the optional dependency {top!r} is not installed: {install_hint([top])}"


def pretrained_kwargs() -> dict[str, Any]:
    """Return keyword arguments for diffusers' ``from_pretrained``.

    The memory-light loading path is used when accelerate is installed (part of the diffusers
    extra), and no "accelerate not found" warning is printed on every load when it is not (tiny
    models such as the embedded one do not need it).

    Returns
    -------
    dict
        ``{"low_cpu_mem_usage": bool}``, true exactly when accelerate is importable.
    """
    return {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
