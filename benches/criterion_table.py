"""Criterion results as one markdown table: median time, elements/s and GB/s per benchmark, beside
the memory bandwidth measured on the same machine (`cargo bench --bench bandwidth`).

A resampling call reads N float64 log-weights and writes N int64 indices, so its traffic is
16 bytes per element; "of bandwidth" divides its GB/s by the read-f64/write-i64 streaming pass
of the nearest measured size (1e6 or 1e8 elements).

Usage: cargo bench --bench bandwidth && cargo bench --bench resample
       python benches/criterion_table.py [--filter systematic] [--dir target/criterion]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

BYTES_PER_ELEMENT = 16  # one float64 in, one int64 out


def load(root: Path) -> list[dict]:
    rows = []
    for bench in sorted(root.rglob("new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        rows.append(
            {
                "id": meta["full_id"],
                "median": est["median"]["point_estimate"] * 1e-9,
                "lo": est["median"]["confidence_interval"]["lower_bound"] * 1e-9,
                "hi": est["median"]["confidence_interval"]["upper_bound"] * 1e-9,
                "throughput": meta.get("throughput") or {},
            }
        )
    return rows


def fmt_time(s: float) -> str:
    if s < 1e-6:
        return f"{s * 1e9:.1f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    return f"{s * 1e3:.2f} ms"


def bandwidths(rows: list[dict]) -> dict[int, float]:
    """GB/s of the read-f64/write-i64 pass per size."""
    out = {}
    for r in rows:
        if r["id"].startswith("bandwidth/") and r["id"].endswith("/read_f64_write_i64"):
            n = int(r["id"].split("N=")[1].split("/")[0])
            out[n] = r["throughput"]["Bytes"] / r["median"] / 1e9
    return out


def table(rows: list[dict], filt: str | None) -> str:
    bw = bandwidths(rows)
    lines = [
        "| benchmark | median [95% CI] | elements/s | GB/s | of bandwidth |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if filt and filt not in r["id"]:
            continue
        tp = r["throughput"]
        elems = tp.get("Elements")
        nbytes = tp.get("Bytes", None if elems is None else elems * BYTES_PER_ELEMENT)
        eps = "—" if elems is None else f"{elems / r['median']:.3g}"
        gbs = None if nbytes is None else nbytes / r["median"] / 1e9
        share = "—"
        if elems is not None and bw and gbs is not None:
            near = min(bw, key=lambda k: abs(math.log(k) - math.log(elems)))
            share = f"{gbs / bw[near]:.2f}"
        lines.append(
            f"| {r['id']} | {fmt_time(r['median'])} [{fmt_time(r['lo'])}, {fmt_time(r['hi'])}] "
            f"| {eps} | {'—' if gbs is None else f'{gbs:.2f}'} | {share} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("target/criterion"))
    ap.add_argument("--filter", default=None, help="only benchmark ids containing this")
    args = ap.parse_args(argv)
    rows = load(args.dir)
    if not rows:
        raise SystemExit(f"no Criterion results under {args.dir}; run cargo bench first")
    print(table(rows, args.filter))


if __name__ == "__main__":
    main()
