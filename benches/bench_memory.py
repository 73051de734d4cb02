"""Peak memory of one large resampling call, against its own input and output arrays.

Each case runs in a fresh subprocess: allocate N float64 log-weights, reset the kernel's peak-RSS
mark (/proc/self/clear_refs), call ``glass_core.resample`` once, read the peak (VmHWM), drop the
result and read the resident size again. Reported: peak / (input + output bytes) above the
interpreter's own baseline (target <= 1.2) and what stays resident after the result is freed
(target: nothing, i.e. no per-thread scratch kept). Linux only.

Usage: python benches/bench_memory.py [--sizes 1e8] [--schemes systematic stratified ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys
import numpy as np
import glass_core as gc

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

n, scheme = int(float(sys.argv[1])), sys.argv[2]
gc.resample(np.zeros(16), scheme, seed=0)  # import and initialise everything first
base = status("VmRSS")
lw = np.random.default_rng(0).normal(scale=2.0, size=n)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
before = status("VmRSS")
out = gc.resample(lw, scheme, seed=1)
peak = status("VmHWM")
assert out.shape == (n,)
out_bytes = out.nbytes
del out
after = status("VmRSS")
print(json.dumps({"base": base, "before": before, "peak": peak, "after": after,
                  "in_bytes": lw.nbytes, "out_bytes": out_bytes}))
"""


def run(n: int, scheme: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), scheme], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1e8"])
    ap.add_argument(
        "--schemes", nargs="+", default=["systematic", "stratified", "multinomial", "residual"]
    )
    args = ap.parse_args(argv)
    print(
        "| scheme | N | input + output | peak above baseline | ratio (target <= 1.2) "
        "| kept after the call |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        n = int(float(size))
        for scheme in args.schemes:
            r = run(n, scheme)
            io = r["in_bytes"] + r["out_bytes"]
            peak = r["peak"] - r["base"]
            kept = r["after"] - r["before"]
            print(
                f"| {scheme} | {n:.0e} | {io / 2**30:.2f} GiB | {peak / 2**30:.2f} GiB "
                f"| {peak / io:.2f} | {kept / 2**20:.0f} MiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
