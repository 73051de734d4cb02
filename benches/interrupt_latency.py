"""Ctrl-C latency of long native calls: SIGINT is sent at several points of a call and the time
until KeyboardInterrupt reaches Python is measured (target: 100 ms), next to the duration of the
uninterrupted call (what the latency was before calls checked for signals). Both in wall time and
in the process's CPU time: on a loaded machine (or under nice) wall time mostly measures how
little CPU the process gets, CPU time measures the work done before the signal was honoured.

    python benches/interrupt_latency.py [--sizes 10000000 100000000]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time

import glass_core as gc
import numpy as np


def latency(call, delay: float) -> tuple[float, float] | None:
    """(wall, CPU) seconds from the signal to KeyboardInterrupt, or None if the call finished."""
    sent: list[tuple[float, float]] = []

    def fire() -> None:
        time.sleep(delay)
        sent.append((time.perf_counter(), time.process_time()))
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        call()
        thread.join()
        return None  # finished before the signal
    except KeyboardInterrupt:
        out = (time.perf_counter() - sent[0][0], time.process_time() - sent[0][1])
        thread.join()
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    # a background job may start with SIGINT ignored; measure with Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(
        f"{'call':<32} {'call s':>7} {'call CPU s':>10} {'latency ms':>10} {'max':>7} "
        f"{'CPU ms':>7} {'max':>6}  call/latency"
    )
    for n in args.sizes:
        lw = np.random.default_rng(0).normal(size=n)
        for scheme in ("multinomial", "systematic"):

            def call(lw=lw, scheme=scheme):
                return gc.resample(lw, scheme, seed=0)

            start, cpu = time.perf_counter(), time.process_time()
            call()
            full, full_cpu = time.perf_counter() - start, time.process_time() - cpu
            lats = [latency(call, full * (k + 0.5) / args.trials) for k in range(args.trials)]
            got = [x for x in lats if x is not None]
            if not got:
                print(f"resample {scheme} N={n:.0e}: every call finished before the signal")
                continue
            wall = [w * 1e3 for w, _ in got]
            cpu_ms = [c * 1e3 for _, c in got]
            med = statistics.median(wall)
            name = f"resample {scheme} N={n:.0e}"
            print(
                f"{name:<32} {full:>7.2f} {full_cpu:>10.2f} {med:>10.1f} {max(wall):>7.1f} "
                f"{statistics.median(cpu_ms):>7.1f} {max(cpu_ms):>6.1f}  {full * 1e3 / med:.0f}x"
            )


if __name__ == "__main__":
    main()
