"""Ctrl-C latency of long native calls: SIGINT is sent at several points of a call and the time
until KeyboardInterrupt reaches Python is measured (target: 100 ms), next to the duration of the
uninterrupted call (what the latency was before calls checked for signals).

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


def latency(call, delay: float) -> float | None:
    sent: list[float] = []

    def fire() -> None:
        time.sleep(delay)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        call()
        thread.join()
        return None  # finished before the signal
    except KeyboardInterrupt:
        out = time.perf_counter() - sent[0]
        thread.join()
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    # a background job may start with SIGINT ignored; measure with Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"{'call':<34} {'full call s':>11} {'latency ms median':>18} {'max':>8}  ratio")
    for n in args.sizes:
        lw = np.random.default_rng(0).normal(size=n)
        for scheme in ("multinomial", "systematic"):

            def call(lw=lw, scheme=scheme):
                return gc.resample(lw, scheme, seed=0)

            start = time.perf_counter()
            call()
            full = time.perf_counter() - start
            lats = [latency(call, full * (k + 0.5) / args.trials) for k in range(args.trials)]
            got = [x for x in lats if x is not None]
            if not got:
                print(f"resample {scheme} N={n:.0e}: every call finished before the signal")
                continue
            med, worst = statistics.median(got) * 1e3, max(got) * 1e3
            name = f"resample {scheme} N={n:.0e}"
            print(f"{name:<34} {full:>11.2f} {med:>18.1f} {worst:>8.1f}  {full * 1e3 / med:.0f}x")


if __name__ == "__main__":
    main()
