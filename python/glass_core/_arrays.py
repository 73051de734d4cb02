"""Conversion of array-likes (numpy, torch, sequences) to float64 numpy arrays for the native core.

The Rust functions read C-contiguous float64 numpy arrays in place (zero copy) and convert float32 /
non-contiguous numpy arrays themselves. Everything else is routed through :func:`to_float64`:

* torch tensors: detached; a tensor on a GPU (or any non-CPU device) is **moved to the CPU**
  (one device-to-host copy, which synchronises the device); bfloat16 / float16 tensors are **cast**
  to float32 first (numpy has no bfloat16); a contiguous CPU float64 tensor is shared with numpy
  without a copy; a non-contiguous tensor is **copied** into a contiguous one.
* numpy arrays of other dtypes (float16, integers, bool, big-endian floats) are cast to float64.
* Python sequences and scalars go through ``np.asarray(..., dtype=float64)``.
* complex values, strings, objects that do not convert: :class:`InvalidInputError` naming the
  argument. Nothing here crashes the interpreter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glass_core._core import InvalidInputError

__all__ = ["is_torch_tensor", "to_float64"]


def is_torch_tensor(x: object) -> bool:
    """True when ``x`` is a ``torch.Tensor`` (without importing torch if it was never imported)."""
    mod = type(x).__module__
    if not mod.startswith("torch"):
        return False
    import torch

    return isinstance(x, torch.Tensor)


def _torch_to_numpy(x: Any, name: str) -> np.ndarray:
    import torch

    t = x.detach()
    if t.is_complex():
        raise InvalidInputError(f"{name} must be real-valued, got a complex tensor ({t.dtype})")
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.to(torch.float32)
    elif not t.is_floating_point():
        t = t.to(torch.float64)
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        return t.numpy()
    except Exception:  # e.g. a tensor type numpy cannot view
        return np.asarray(t.tolist(), dtype=np.float64)


def to_float64(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy float64 (or float32) array, named ``name`` in error messages.

    See the module docstring for the exact moves, casts and copies performed.
    """
    if is_torch_tensor(x):
        try:
            arr = _torch_to_numpy(x, name)
        except InvalidInputError:
            raise
        except Exception as exc:  # e.g. a "meta" tensor, which has no data to move
            raise InvalidInputError(
                f"{name}: cannot read a {x.dtype} tensor on {x.device} as float64: {exc}"
            ) from None
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        if isinstance(x, (str, bytes)):
            raise InvalidInputError(f"{name} must be an array of floats, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise InvalidInputError(
                f"{name} must be an array of floats, got {type(x).__name__}: {exc}"
            ) from None
    if arr.dtype == np.float32 and arr.dtype.isnative:
        return arr
    if np.iscomplexobj(arr):
        raise InvalidInputError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if arr.dtype.kind not in "fiub":
        raise InvalidInputError(
            f"{name} must be an array of floats, got dtype {arr.dtype} ({type(x).__name__})"
        )
    return np.asarray(arr, dtype=np.float64, order="C")  # keeps 0-d arrays 0-d
