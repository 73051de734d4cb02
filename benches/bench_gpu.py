"""GPU cost of glass_core's transitions next to the model's own, and its CPU proxy.

On a CUDA device (``--device cuda``; the default when one is present): a random-weight FLUX-shaped
transformer (``diffusers.FluxTransformer2DModel`` at FLUX.1's width, ``--layers`` double and
``--single-layers`` single blocks instead of 19 + 38, bfloat16) at 512x512 and 1024x1024 images
(64x64 and 128x128 latents, 1024 and 4096 tokens) with N = 4/8/16 particles. Per cell: time per
NFE of the model alone and of one ODE euler / SDE / GLASS euler / GLASS pc transition (eager and,
when the transition takes ``compile=True``, compiled; CUDA events, median of ``--repeats``), the
transition's overhead over the model, host syncs per transition (cudaStreamSynchronize /
cudaDeviceSynchronize / synchronous device->host cudaMemcpy events in the torch profiler), peak
extra memory of a transition over the model alone (``torch.cuda.max_memory_allocated``), and the
FK wall time per outer step split into model / reward / bookkeeping (``fk_steering(profile=True)``).

On CPU (or ``--device cpu``) it prints issue 21's proxy instead: kernel-launching aten ops per NFE
outside the model, counted by a TorchDispatchMode (view and metadata ops excluded), for
fk_steering with N = 1024, d = 16, 5 outer steps, resampling at every step and a trivial model,
as the slope between 5 and 10 NFE per transition; and the device->host reads per outer step
(``item``/``bool`` reads, i.e. ``aten._local_scalar_dense``, plus ``Tensor.cpu``/``tolist``
calls: on CPU an upper bound, since some of those may read host tensors).

One command, one table; results are written only with ``--out DIR`` (gpu.md and gpu.json).
Usage: python benches/bench_gpu.py [--device cpu|cuda] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from glass_core.align import fk_steering
from glass_core.models import from_callable
from glass_core.rewards import QuadraticReward
from glass_core.schedules import RectifiedFlow
from glass_core.transitions import ODE, SDE, Glass, sample
from torch.utils._python_dispatch import TorchDispatchMode

KINDS = ("ODE euler", "SDE", "GLASS euler", "GLASS pc")


def make_transition(kind: str, per: int, *, compile: bool = False) -> Any:
    """The transition `kind` spending `per` NFE per call (``compile=True`` only if offered)."""
    extra = {"compile": True} if compile else {}
    if kind == "ODE euler":
        return ODE(substeps=per, **extra)
    if kind == "SDE":
        return SDE(substeps=per, **extra)
    solver = "euler" if kind == "GLASS euler" else "pc"
    return Glass(0.4, inner_steps=per, solver=solver, **extra)


def compilable(kind: str) -> bool:
    """Whether this library version offers ``compile=`` on the transition of `kind`."""
    cls = {"ODE euler": ODE, "SDE": SDE}.get(kind, Glass)
    return "compile" in inspect.signature(cls.__init__).parameters


# ---------------------------------------------------------------------------------------------
# CPU proxy: kernels and host reads counted by the dispatcher

#: aten ops that launch no kernel (views, metadata, allocation without fill)
_NO_KERNEL = {
    "aten::detach",
    "aten::alias",
    "aten::empty",
    "aten::empty_like",
    "aten::empty_strided",
    "aten::lift_fresh",
    "aten::_local_scalar_dense",
    "aten::is_nonzero",
    "aten::sym_size",
    "aten::sym_stride",
    "aten::sym_numel",
    "aten::sym_storage_offset",
}


class KernelCounter(TorchDispatchMode):
    """Counts kernel-launching aten ops and host reads, except while `paused` (the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0
        self.reads = 0
        self.paused = False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name
        if not self.paused:
            if name == "aten::_local_scalar_dense":
                self.reads += 1
            elif name not in _NO_KERNEL and not func.is_view:
                self.kernels += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_host_reads(counter: KernelCounter) -> Iterator[None]:
    """Count Tensor.cpu/tolist calls (device->host transfers on a GPU) into `counter` (numpy()
    is not one: it refuses device tensors, so it only ever follows a counted .cpu())."""
    names = ("cpu", "tolist")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def read(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            if not counter.paused:
                counter.reads += 1
            return original(self, *a, **k)

        return read

    try:
        for n in names:
            setattr(torch.Tensor, n, wrap(saved[n]))
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def fk_counts(kind: str, per: int, n: int, d: int, steps: int) -> tuple[int, int]:
    """(kernels outside the model, host reads) of one fk_steering run."""
    counter = KernelCounter()

    def trivial(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        counter.paused = True
        try:
            return 0.5 * x
        finally:
            counter.paused = False

    model = from_callable(trivial, prediction="x1", schedule=RectifiedFlow())
    reward = QuadraticReward(torch.ones(d), 2.0)
    with counter, counting_host_reads(counter):
        fk_steering(
            model,
            reward,
            transition=make_transition(kind, per),
            num_particles=n,
            time_grid=np.linspace(0.0, 1.0, steps + 1),
            shape=(d,),
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )
    return counter.kernels, counter.reads


def cpu_table(n: int, d: int, steps: int, lo: int = 5, hi: int = 10) -> tuple[str, list[dict]]:
    """Issue 21's proxy table: kernels per NFE outside the model and host reads per outer step."""
    rows = []
    for kind in KINDS:
        k_lo, r_lo = fk_counts(kind, lo, n, d, steps)
        k_hi, r_hi = fk_counts(kind, hi, n, d, steps)
        rows.append(
            {
                "transition": kind,
                "kernels_per_nfe": (k_hi - k_lo) / (steps * (hi - lo)),
                "reads_per_nfe": (r_hi - r_lo) / (steps * (hi - lo)),
                "reads_per_outer_step": r_hi / steps,
                "kernels_total": k_hi,
            }
        )
    lines = [
        f"| transition | kernels per NFE outside the model (slope {lo} -> {hi} NFE) "
        "| host reads per NFE | host reads per outer step (upper bound) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['transition']} | {r['kernels_per_nfe']:.1f} | {r['reads_per_nfe']:.2f} "
        f"| {r['reads_per_outer_step']:.1f} |"
        for r in rows
    ]
    head = (
        f"fk_steering, N = {n}, d = {d}, {steps} outer steps, resampling at every step, "
        "trivial model (0.5 x), aten ops counted by a TorchDispatchMode\n\n"
    )
    return head + "\n".join(lines), rows


# ---------------------------------------------------------------------------------------------
# CUDA: a FLUX-shaped transformer


def flux_model(
    res: int, layers: int, single_layers: int, device: torch.device, text_tokens: int = 256
) -> Any:
    """A random-weight FluxTransformer2DModel (FLUX.1 width, reduced depth, bfloat16) as a
    glass_core velocity model on unpacked latents [M, 16, res/8, res/8]; the text conditioning
    is a fixed random embedding shared by all particles."""
    from diffusers import FluxTransformer2DModel
    from glass_core.models.diffusers.flow import pack_latents, unpack_latents

    torch.manual_seed(0)
    net = FluxTransformer2DModel(num_layers=layers, num_single_layers=single_layers)
    net = net.to(device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
    h = w = res // 8
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    img_ids = ids.reshape(-1, 3).to(device=device, dtype=torch.bfloat16)
    txt_ids = torch.zeros(text_tokens, 3, device=device, dtype=torch.bfloat16)
    g = torch.Generator(device).manual_seed(1)
    text = torch.randn(1, text_tokens, 4096, generator=g, device=device, dtype=torch.bfloat16)
    pooled = torch.randn(1, 768, generator=g, device=device, dtype=torch.bfloat16)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = len(x)
        v = net(
            hidden_states=pack_latents(x.to(torch.bfloat16)),
            timestep=(1.0 - t).to(torch.bfloat16),
            pooled_projections=pooled.expand(m, -1),
            encoder_hidden_states=text.expand(m, -1, -1),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return -unpack_latents(v, h, w).to(x.dtype)  # glass_core's u = -v (diffusers' flow)

    return from_callable(velocity, prediction="velocity", schedule=RectifiedFlow())


def cuda_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of fn() by CUDA events, after one warm-up call (compilation included)."""
    fn()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def count_syncs(fn: Callable[[], Any]) -> int:
    """Host syncs during fn(): stream/device synchronisations and synchronous D2H copies."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    torch.cuda.synchronize()
    names = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
    # .item()/.cpu() show as cudaMemcpyAsync + cudaStreamSynchronize; a plain cudaMemcpy (not
    # ...Async) blocks the host whatever its direction
    return sum(1 for ev in prof.events() if ev.name in names or ev.name == "cudaMemcpy")


def peak_extra(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated during fn() above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def cuda_cell(model: Any, res: int, n: int, per: int, repeats: int) -> list[dict[str, Any]]:
    """All measurements for one (resolution, N): the model alone, then each transition."""
    dev = torch.device("cuda")
    shape = (n, 16, res // 8, res // 8)
    gen = torch.Generator(dev).manual_seed(0)
    x = torch.randn(shape, generator=gen, device=dev)
    t_vec = torch.full((n,), 0.3, device=dev)
    with torch.no_grad():
        model_s = cuda_time(lambda: model.velocity(x, t_vec), repeats)
        model_mem = peak_extra(lambda: model.velocity(x, t_vec))
    rows = [{"res": res, "n": n, "what": "model alone", "per_nfe_s": model_s, "mem": model_mem}]
    for kind in KINDS:
        for compiled in (False, True):
            if compiled and not compilable(kind):
                continue
            tr = make_transition(kind, per, compile=compiled)

            def step(tr: Any = tr) -> Any:
                with torch.no_grad():
                    return sample(model, tr, [0.3, 0.6], x0=x, generator=gen).samples

            per_nfe = cuda_time(step, repeats) / per
            mem = peak_extra(step)
            rows.append(
                {
                    "res": res,
                    "n": n,
                    "what": f"{kind} ({'compiled' if compiled else 'eager'})",
                    "per_nfe_s": per_nfe,
                    "overhead": per_nfe / model_s - 1.0,
                    "syncs": count_syncs(step),
                    "mem": mem,
                    "extra_mem_over_model": mem - model_mem,
                }
            )
    return rows


def fk_split(model: Any, res: int, n: int, per: int, steps: int) -> dict[str, Any]:
    """FK-GLASS pc wall time per outer step split into model / reward / bookkeeping."""
    dev = torch.device("cuda")

    def reward(z: torch.Tensor) -> torch.Tensor:
        return -z.float().square().mean(dim=(1, 2, 3))

    def run(profile: bool = True) -> Any:
        return fk_steering(
            model,
            reward,
            transition=make_transition("GLASS pc", per),
            num_particles=n,
            time_grid=np.linspace(0.0, 1.0, steps + 1),
            shape=(16, res // 8, res // 8),
            generator=torch.Generator(dev).manual_seed(0),
            device=dev,
            progress=False,
            profile=profile,  # True syncs around every model/reward call: not when counting
        )

    run()  # warm-up
    res_ = run()
    book = res_.wall_time - res_.model_time - res_.reward_time
    return {
        "res": res,
        "n": n,
        "wall_per_step_s": res_.wall_time / steps,
        "model_frac": res_.model_time / res_.wall_time,
        "reward_frac": res_.reward_time / res_.wall_time,
        "bookkeeping_frac": book / res_.wall_time,
        "syncs_per_step": count_syncs(lambda: run(profile=False)) / steps,
    }


def cuda_table(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    fk: list[dict[str, Any]] = []
    dev = torch.device("cuda")
    for res in args.resolutions:
        model = flux_model(res, args.layers, args.single_layers, dev)
        for n in args.particles:
            cells += cuda_cell(model, res, n, args.per, args.repeats)
            fk.append(fk_split(model, res, n, args.per, args.steps))
        del model
        torch.cuda.empty_cache()
    lines = [
        "| image | N | what | ms per NFE | overhead over the model | host syncs per transition "
        "| peak memory (MiB) | extra over the model (MiB) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    mib = 2.0**20
    for c in cells:
        lines.append(
            f"| {c['res']} | {c['n']} | {c['what']} | {1e3 * c['per_nfe_s']:.2f} "
            f"| {100 * c['overhead']:.1f}% | {c['syncs']} | {c['mem'] / mib:.0f} "
            f"| {c['extra_mem_over_model'] / mib:.0f} |"
            if "overhead" in c
            else f"| {c['res']} | {c['n']} | {c['what']} | {1e3 * c['per_nfe_s']:.2f} | - | - "
            f"| {c['mem'] / mib:.0f} | - |"
        )
    lines += [
        "",
        f"FK-GLASS pc ({args.steps} outer steps x {args.per} NFE, resampling every step):",
        "",
        "| image | N | ms per outer step | model | reward | bookkeeping | host syncs per step |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['res']} | {f['n']} | {1e3 * f['wall_per_step_s']:.1f} "
        f"| {100 * f['model_frac']:.1f}% | {100 * f['reward_frac']:.1f}% "
        f"| {100 * f['bookkeeping_frac']:.1f}% | {f['syncs_per_step']:.1f} |"
        for f in fk
    ]
    name = torch.cuda.get_device_name()
    head = (
        f"{name}: random FluxTransformer2DModel ({args.layers} + {args.single_layers} blocks, "
        f"bfloat16), {args.per} NFE per transition, median of {args.repeats}\n\n"
    )
    return head + "\n".join(lines), {"cells": cells, "fk": fk}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--quick", action="store_true", help="small CPU proxy (for tests)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--particles", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--single-layers", type=int, default=2)
    ap.add_argument("--per", type=int, default=4, help="NFE per transition (CUDA)")
    ap.add_argument("--steps", type=int, default=5, help="FK outer steps")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    if device == "cuda":
        text, data = cuda_table(args)
    else:
        n, d = (64, 4) if args.quick else (1024, 16)
        lo, hi = (1, 2) if args.quick else (5, 10)
        text, rows = cpu_table(n, d, args.steps, lo, hi)
        data = {"rows": rows}
    head = (
        f"# bench_gpu ({device}; python {platform.python_version()}, torch {torch.__version__}, "
        f"{time.perf_counter() - start:.0f} s)\n\n"
    )
    print(head + text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.md").write_text(head + text + "\n", encoding="utf-8")
        (args.out / "gpu.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
