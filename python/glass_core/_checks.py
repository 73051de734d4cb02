"""Argument checks shared by every layer (one rule each); errors name the argument.

Every error raised here is an ``InvalidInputError`` (or a ``ModelError`` / ``RewardError`` for a
user's model or reward) whose ``arg`` attribute is the library argument at fault, so a caller
(the command line) can say which of its own options that is without parsing the message.
This module imports neither torch nor anything heavy at import time: the command line checks
its options with it before any model loads.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from glass_core.errors import InvalidInputError, ModelError, RewardError

#: torch.Generator.manual_seed takes any integer in [0, 2**64 - 1] (it wraps negative ones)
MAX_SEED = 2**64 - 1

#: bytes per particle beyond its sample that every algorithm keeps: float64 log-weight, reward,
#: ancestor index and scratch (a lower bound: the memory check below is for absurd sizes)
PARTICLE_OVERHEAD_BYTES = 32

#: the limit where the available memory cannot be read (as the native core's rust/limits.rs)
UNKNOWN_MEMORY_BYTES = 1 << 40

#: dtypes every algorithm can draw noise in and compute with
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def invalid(arg: str | None, message: str) -> InvalidInputError:
    """Make an InvalidInputError whose ``arg`` names the argument at fault (None: no single one).

    Parameters
    ----------
    arg : str or None
        The library argument (keyword) at fault.
    message : str
        The whole message, naming the argument.

    Returns
    -------
    InvalidInputError
        To be raised by the caller.
    """
    exc = InvalidInputError(message)
    exc.arg = arg  # type: ignore[attr-defined]
    return exc


def positive_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Check an integer in a range.

    `value` as an int in [minimum, maximum] (integer-likes such as numpy.int64 accepted, bools
    and floats refused).

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The argument's name in the message (and the error's ``arg``).
    minimum, maximum : int
        The bounds (``maximum`` None: none).

    Returns
    -------
    int
        ``value`` as an int.

    Raises
    ------
    InvalidInputError
        Not an integer or out of range.
    """
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if isinstance(value, bool | np.bool_) or v is None or v < minimum:
        raise invalid(name, f"`{name}` must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and v > maximum:
        raise invalid(name, f"`{name}` must be an integer <= {maximum}, got {value!r}")
    return v


def optional_positive_int(value: Any, name: str) -> int | None:
    """None, or `value` as a positive int.

    Parameters
    ----------
    value : object
        None or the value to check.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    int or None
        ``value`` as an int, or None.

    Raises
    ------
    InvalidInputError
        Not a positive integer.
    """
    return None if value is None else positive_int(value, name)


def real_number(value: Any) -> float | None:
    """Return `value` as a float if it is a real number, else None.

    Real numbers: ints, floats, NumPy scalars, one-element tensors (NaN and inf included).
    Booleans and strings are not, though ``float()`` would read True as 1.0 and parse "0.5".

    Parameters
    ----------
    value : object
        The value.

    Returns
    -------
    float or None
        The float, or None.
    """
    if isinstance(value, bool | np.bool_ | str | bytes):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a multi-element tensor
        return None


def finite_float(value: Any, name: str) -> float:
    """Check a finite float.

    `value` as a finite float: a real number (int, float, numpy scalar, one-element tensor);
    booleans and strings are refused rather than read as 1.0 / parsed.

    Raises
    ------
    InvalidInputError
        With ``arg = name`` for anything else, NaN or inf.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    float
        ``value`` as a float.

    Raises
    ------
    InvalidInputError
        Not a real number, or NaN/inf.
    """
    v = real_number(value)
    if v is None or not math.isfinite(v):
        raise invalid(name, f"`{name}` must be a finite number, got {value!r}")
    return v


def seed(value: Any, name: str = "seed") -> int:
    """Check a seed for ``torch.Generator.manual_seed``: an integer in [0, 2**64 - 1].

    Parameters
    ----------
    value : object
        The seed.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    int
        The seed as an int.

    Raises
    ------
    InvalidInputError
        Not an integer in that range.
    """
    return positive_int(value, name, minimum=0, maximum=MAX_SEED)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which a container may narrow).

    Returns
    -------
    int
        The number of cores, at least 1.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def num_threads(value: Any, name: str = "threads") -> int:
    """Check a CPU thread count.

    A CPU thread count in [1, available_cpus()]: more threads than cores only slow torch down
    (and tens of thousands make OpenMP fail to create them or crash).

    Parameters
    ----------
    value : object
        The thread count.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    int
        The thread count.

    Raises
    ------
    InvalidInputError
        Not an integer in [1, available_cpus()].
    """
    n, cores = positive_int(value, name), available_cpus()
    if n > cores:
        raise invalid(
            name, f"`{name}` = {n} is more than the {cores} CPU core(s) this process may use"
        )
    return n


def available_bytes() -> int:
    """Return the bytes this process can still allocate.

    Bytes this process can still allocate (Linux: MemAvailable, lowered by a cgroup v2
    limit), else UNKNOWN_MEMORY_BYTES; the rule of the native core's size contract.

    Returns
    -------
    int
        The bytes available.
    """
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = int(fh.read().strip())
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            left = max(0, limit - int(fh.read().strip()))
        avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):  # no cgroup v2 limit ("max") or not Linux
        pass
    return min(UNKNOWN_MEMORY_BYTES if avail is None else avail, UNKNOWN_MEMORY_BYTES)


def _human(num_bytes: int) -> str:
    size, unit = float(num_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{size:.3g} {unit}"


def particle_count(
    value: Any,
    name: str = "num_particles",
    *,
    num_groups: int = 1,
    sample_bytes: int = 4,
) -> int:
    """Check a particle count against the memory available.

    `value` as a particle count whose particles fit in memory: ``num_groups x value`` samples
    of at least ``sample_bytes`` each plus PARTICLE_OVERHEAD_BYTES, against available_bytes().

    Parameters
    ----------
    value : int-like
        The particle count per group.
    name : str
        The argument's name (``arg`` of the error).
    num_groups : int
        Groups (prompts) of ``value`` particles each.
    sample_bytes : int
        Bytes of one sample (a lower bound where the shape is not known yet).

    Returns
    -------
    int
        The count.

    Raises
    ------
    InvalidInputError
        If it is not a positive integer or the particles cannot fit in memory.
    """
    n = positive_int(value, name)
    need = n * num_groups * (sample_bytes + PARTICLE_OVERHEAD_BYTES)
    avail = available_bytes()
    if need > avail:
        raise invalid(
            name,
            f"`{name}` = {n} is too large: {num_groups} group(s) x {n} particles need at least "
            f"{_human(need)} of memory, more than the {_human(avail)} available",
        )
    return n


def device(value: Any, name: str = "device") -> Any:
    """Check that a device can hold data.

    A torch device (or None) that can hold data: 'meta' tensors have none, so every
    algorithm would fail on them much later with an unrelated message.

    Parameters
    ----------
    value : object
        None, a torch.device or a device string.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    torch.device or None
        The device.

    Raises
    ------
    InvalidInputError
        Not a device, or the meta device.
    """
    import torch

    if value is None:
        return None
    try:
        dev = torch.device(value)
        torch.empty(0, device=dev)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise invalid(name, f"`{name}` is not a usable torch device: {value!r} ({exc})") from None
    if dev.type == "meta":
        raise invalid(name, f"`{name}` = {value!r} holds no data (meta); use cpu or a GPU")
    return dev


def float_dtype(value: Any, name: str = "dtype") -> Any:
    """None or one of FLOAT_DTYPES (float8 and complex dtypes cannot draw Gaussian noise).

    Parameters
    ----------
    value : object
        None or a torch dtype.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    torch.dtype or None
        The dtype.

    Raises
    ------
    InvalidInputError
        Not one of FLOAT_DTYPES.
    """
    import torch

    allowed = [getattr(torch, d) for d in FLOAT_DTYPES]
    if value is not None and value not in allowed:
        raise invalid(
            name, f"`{name}` must be None or one of torch.{', torch.'.join(FLOAT_DTYPES)}, "
            f"got {value!r}",
        )  # fmt: skip
    return value


def tensor_with_data(x: Any, name: str) -> None:
    """Check that a tensor argument holds data (not on the meta device).

    Parameters
    ----------
    x : object
        The argument (checked only if it is a tensor).
    name : str
        The argument's name in the message (and the error's ``arg``).

    Raises
    ------
    InvalidInputError
        A tensor on the meta device.
    """
    if getattr(x, "is_meta", False):
        raise invalid(name, f"`{name}` is on the meta device (no data); pass a real tensor")


def model_output(out: Any, x: Any, t: object) -> None:
    """Check that the model's output is on the input's device (else a ModelError naming both).

    Parameters
    ----------
    out : torch.Tensor
        The model's output.
    x : torch.Tensor
        The model's input.
    t : object
        The time, for the message.

    Raises
    ------
    ModelError
        ``out`` on another device than ``x``.
    """
    if out.device != x.device:
        raise ModelError(
            f"the model's output at t={t} is on {out.device}, but its input was on {x.device}; "
            "return the output on the input's device"
        )


def reward_output(values: Any, device: Any, name: str = "reward") -> None:
    """Check that a reward's values are on the particles' device (else RewardError).

    Parameters
    ----------
    values : torch.Tensor
        The reward's output.
    device : torch.device or None
        The particles' device (None: not checked).
    name : str
        The reward's name in the message.

    Raises
    ------
    RewardError
        ``values`` on another device.
    """
    if device is not None and values.device != device:
        raise RewardError(
            f"{name} returned values on {values.device}, but the particles are on {device}; "
            "return them on the particles' device"
        )


def plain_array(values: Any, name: str) -> None:
    """Masked arrays are refused: their mask would be ignored silently.

    Parameters
    ----------
    values : object
        The argument.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Raises
    ------
    InvalidInputError
        A numpy masked array.
    """
    if isinstance(values, np.ma.MaskedArray):
        raise invalid(
            name,
            f"`{name}` is a numpy masked array, whose mask would be ignored; fill it first, e.g. "
            f"`{name}.filled(-np.inf)` for log-weights",
        )


def grid_steps(value: Any, name: str = "num_transitions") -> int:
    """Check a number of time-grid steps whose grid ((value + 1) float64 times) fits in memory.

    Parameters
    ----------
    value : object
        The number of steps.
    name : str
        The argument's name in the message (and the error's ``arg``).

    Returns
    -------
    int
        The number of steps.

    Raises
    ------
    InvalidInputError
        Not a positive integer, or a grid too large for the memory available.
    """
    k = positive_int(value, name)
    need, avail = (k + 1) * 8, available_bytes()
    if need > avail:
        raise invalid(
            name,
            f"{name} = {k} is too large: its time grid needs {_human(need)} of memory, more than "
            f"the {_human(avail)} available",
        )
    return k


def _same(arg: str) -> str:
    return arg


def steer_arguments(
    *,
    method: str,
    reward: Any,
    num_particles: Any,
    num_transitions: Any = None,
    lambda_: Any = 1.0,
    reward_scale: Any = 0.4,
    image: Any = None,
    strength: Any = None,
    name: Callable[[str], str] = _same,
) -> int:
    """Check the arguments of ``glass_core.steer`` that need no pipeline.

    The rules of ``glass_core.steer``'s arguments that need no pipeline, so a caller can ask
    them before loading one (the command line, with its flags' names).

    Parameters
    ----------
    method, reward, num_particles, num_transitions, lambda_, reward_scale, image, strength
        As for ``glass_core.steer`` (``image`` only matters as given or not).
    name : callable
        Maps each argument's name to the name the messages (and the errors' ``arg``) use.

    Returns
    -------
    int
        The particle count.

    Raises
    ------
    InvalidInputError
        Naming ``name(argument)`` for the first rule broken.
    """
    n = particle_count(num_particles, name("num_particles"))
    if num_transitions is not None:
        grid_steps(num_transitions, name("num_transitions"))
    finite_float(lambda_, name("lambda_"))
    finite_float(reward_scale, name("reward_scale"))
    if reward is None and method != "sample":
        raise invalid(
            name("reward"),
            f"{name('reward')} is required for {name('method')} {method} (only {name('method')} "
            "sample runs without one)",
        )
    if image is None and strength is not None:
        raise invalid(
            name("strength"), f"{name('strength')} applies only together with {name('image')}"
        )
    if image is not None:
        s = None if strength is None else finite_float(strength, name("strength"))
        if s is None or not 0.0 <= s <= 1.0:
            raise invalid(
                name("strength"),
                f"{name('strength')} must be a number in [0, 1] with {name('image')}, got "
                f"{strength!r}",
            )
    return n
