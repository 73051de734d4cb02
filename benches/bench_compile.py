"""Glass(compile=True) against eager on CPU: time per transition of the default pc solver (and
Euler) at N = 1024 particles for d = 16 and d = 4096, with a cheap network (one tanh layer) so the
figure is the inner loop's own cost. Prints eager, compiled and their ratio side by side from one
run, plus the first call's compile time. Results go to a file only with --out.

    python benches/bench_compile.py [--particles 1024] [--dims 16 4096] [--repeats 20] [--out F]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from glass_core.models import from_callable
from glass_core.schedules import Schedule
from glass_core.transitions import Glass


def _model(d: int):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, d, generator=g) / d**0.5 if d <= 256 else None
    scale = torch.randn(d, generator=g) * 0.3

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x @ w if w is not None else x * scale  # dense for small d, diagonal for large d
        return torch.tanh(h) - x * (1.0 - t[:, None])

    return from_callable(net, schedule=Schedule.rectified_flow(), prediction="velocity")


def _time(tr: Glass, model, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """First-call seconds and the median of `repeats` calls after three warm-up calls."""
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    tr(model, x, 0.2, 0.5, generator=g)
    first = time.perf_counter() - start
    for t, tn in ((0.5, 0.8), (0.2, 0.5), (0.5, 0.8)):  # warm-up: later calls still settle
        tr(model, x, t, tn, generator=g)
    times = []
    for i in range(repeats):
        t, tn = (0.2, 0.5) if i % 2 else (0.5, 0.8)
        start = time.perf_counter()
        tr(model, x, t, tn, generator=g)
        times.append(time.perf_counter() - start)
    return first, sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=1024)
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 4096])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rows = [
        "| solver | d | eager ms | compiled ms | eager / compiled | first compiled call s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for solver in ("pc", "euler"):
        for d in a.dims:
            model = _model(d)
            x = torch.randn(a.particles, d, generator=torch.Generator().manual_seed(2))
            _, eager = _time(Glass(0.4, 5, solver), model, x, a.repeats)
            torch._dynamo.reset()
            first, comp = _time(Glass(0.4, 5, solver, compile=True), model, x, a.repeats)
            rows.append(
                f"| {solver} | {d} | {eager * 1e3:.2f} | {comp * 1e3:.2f} | "
                f"{eager / comp:.2f}x | {first:.1f} |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(f"\nN = {a.particles}, K = 5 inner steps, rho = 0.4, {torch.get_num_threads()} threads")
    print(table)
    if a.out is not None:
        a.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
