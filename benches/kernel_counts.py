"""Kernels per NFE outside the model, counted by the torch dispatcher (issue 21's measurement).

fk_steering with N = 1024 particles of dimension 16, 5 outer steps on a uniform grid, resampling
at every step, a trivial x1 model (0.5 x) and a linear reward. Every aten op that launches a
kernel (not views, not allocations, not host reads) is counted by a TorchDispatchMode, except
the ops inside the model's own network; the figure is the slope between 5 and 10 NFE per
transition, so the per-step cost of rewards and FK bookkeeping cancels:
(count(10 NFE) - count(5 NFE)) / (5 steps x 5 NFE). Host reads (`item`, `bool`, `tolist` of a
tensor: aten._local_scalar_dense) are counted apart. Kernel counts are deterministic (no
timings), so tests assert bounds on them (tests/transitions/test_kernel_counts.py).

Usage: python benches/kernel_counts.py
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that launch no kernel: allocations and metadata-only ops (views are recognised by schema).
_NO_KERNEL = {
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::lift_fresh",
    "aten::detach",
    "aten::alias",
    "aten::set_",
    "aten::resize_",
    "aten::_local_scalar_dense",  # a host read, counted apart
    "aten::promote_types",  # dtype arithmetic, no tensor
    "aten::result_type",
}


@dataclass
class Counts:
    """Kernel launches and device->host reads seen by a `KernelCounter`."""

    kernels: int = 0
    host_reads: int = 0


class KernelCounter(TorchDispatchMode):
    """Counts kernel-launching aten ops and host reads; `paused()` hides a region (the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self.ops: dict[str, int] = {}
        self._paused = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if not self._paused:
            name = func._schema.name
            if name == "aten::_local_scalar_dense":
                self.counts.host_reads += 1
            elif not func.is_view and name not in _NO_KERNEL:
                self.counts.kernels += 1
                self.ops[str(func)] = self.ops.get(str(func), 0) + 1
        return func(*args, **(kwargs or {}))


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensors created by aten ops inside the mode and still alive (views and
    in-place results are not new memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func.is_view or func._schema.name.endswith("_"):
            return out
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta" and id(t) not in self._seen:
                size = t.untyped_storage().nbytes()
                self._seen.add(id(t))
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, id(t), size)
        return out


def peak_extra_particles(transition: object, *, n: int = 1024, d: int = 16) -> float:
    """Peak memory of one transition call (0.3 -> 0.7, check=False) over the model's own (the
    issue's "extra" memory), in units of the particles' bytes: tensors created during the call
    and alive at the same time, minus the peak of one model call alone (its output and its
    time vector)."""
    counter = KernelCounter()
    model = _model(counter)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with LiveBytes() as own:
        out = model.denoise(x, 0.5)
    del out
    with LiveBytes() as mode:
        out = transition(model, x, 0.3, 0.7, gen, check=False)  # type: ignore[operator]
    del out
    return (mode.peak - own.peak) / (x.numel() * x.element_size())


def _model(counter: KernelCounter):  # type: ignore[no-untyped-def]
    from glass_core.models import from_callable
    from glass_core.schedules import Schedule

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with counter.paused():  # the network is not the library's cost
            return 0.5 * x

    return from_callable(net, schedule=Schedule.rectified_flow(), prediction="x1")


def count_fk_run(
    transition: object, *, n: int = 1024, d: int = 16, steps: int = 5, seed: int = 0
) -> tuple[Counts, KernelCounter]:
    """Counts of one fk_steering run with `transition` (resampling at every step)."""
    from glass_core.align import fk_steering

    counter = KernelCounter()
    model = _model(counter)
    w = torch.linspace(-1.0, 1.0, d)
    with counter:
        fk_steering(
            model,
            lambda z: z @ w.to(z),
            shape=(d,),
            num_particles=n,
            time_grid=torch.linspace(0.0, 1.0, steps + 1).tolist(),
            transition=transition,
            generator=torch.Generator().manual_seed(seed),
            progress=False,
            track_genealogy=False,
        )
    return counter.counts, counter


def kernels_per_nfe(
    make: Callable[[int], object], *, low: int = 5, high: int = 10, steps: int = 5, n: int = 1024
) -> float:
    """Kernels per NFE outside the model: the slope of an fk_steering run's kernel count between
    transitions of `low` and `high` NFE (`make(nfe)` builds the transition)."""
    lo, _ = count_fk_run(make(low), steps=steps, n=n)
    hi, _ = count_fk_run(make(high), steps=steps, n=n)
    return (hi.kernels - lo.kernels) / (steps * (high - low))


def host_reads_per_step(make: Callable[[int], object], nfe: int = 5, steps: int = 5) -> float:
    """Device->host reads per outer step of the same fk_steering run."""
    counts, _ = count_fk_run(make(nfe), steps=steps)
    return counts.host_reads / steps


def _transitions() -> dict[str, Callable[[int], object]]:
    from glass_core.transitions import ODE, SDE, Glass

    return {
        "ODE euler": lambda k: ODE(substeps=k),
        "SDE": lambda k: SDE(substeps=k),
        "GLASS euler": lambda k: Glass(rho=0.4, inner_steps=k, solver="euler"),
        "GLASS pc": lambda k: Glass(rho=0.4, inner_steps=k, solver="pc"),
    }


# issue 21's targets (eager, same measurement)
BOUNDS = {"ODE euler": 3, "SDE": 6, "GLASS euler": 6, "GLASS pc": 9}


def main() -> None:
    torch.set_num_threads(1)
    print("| transition | kernels per NFE outside the model | bound | host reads per FK step |")
    print("|---|---:|---:|---:|")
    for name, make in _transitions().items():
        k = kernels_per_nfe(make)
        print(f"| {name} | {k:.1f} | {BOUNDS[name]} | {host_reads_per_step(make):.1f} |")
    print("\n| transition (10 NFE) | peak extra memory, particle tensors |\n|---|---:|")
    for name, make in _transitions().items():
        print(f"| {name} | {peak_extra_particles(make(10)):.2f} |")


if __name__ == "__main__":
    main()
