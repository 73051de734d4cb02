"""Unsteered sample quality against NFE on the embedded digits model: glass_core's transitions
against the samplers a diffusers user would pick, in one run on the same noise.

Rows: the real digits themselves (the data level) and real digits + N(0, 0.15^2) (the sanity row:
a metric that cannot see leftover noise would rank it with the data); glass_core's ODE (Euler,
Heun and, when the library offers it, pc), SDE and GLASS pc (one transition
0 -> 1 with K inner steps, and the paper bench's split of T transitions x K inner steps);
diffusers' UniPC (order 2), DPM-Solver++(2M), SDE-DPM-Solver++(2M) and DDPM ancestral driving the
same network (``glass_core.digits.baselines``), each at its best static grid shift of
``--shifts`` per NFE (the best by the clamped energy distance; the shift is printed).

Every row starts from the same ``--samples`` noise draws (seed ``--seed``); stochastic rows draw
their step noise from a generator seeded ``--seed + 1``. The reference set is a random half of the
1797 real digits; the data row is the other half. Scores (``glass_core.digits.evidence.realism``):
energy distance x100 on the samples clamped to [-1, 1] as a pipeline returns them (the headline,
which names each column's strongest row), in the embedded CNN's standardised feature space, and on
the raw samples, plus the % of pixels outside [-1.05, 1.05]; ± jackknife standard errors.

Usage: python benches/bench_baselines.py [--nfe 4 6 10 20] [--samples 400] [--out DIR]
(``--out`` writes baselines.md and baselines.json there; without it only the table is printed).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from glass_core.digits.assets import load_default_model, load_default_reward, load_real_digits
from glass_core.digits.baselines import BASELINES, STOCHASTIC, sample_baseline
from glass_core.digits.evidence import Realism, digit_features, glass_inner_steps, score_realism
from glass_core.schedules import uniform_grid
from glass_core.transitions import ODE, SDE, Glass, sample

#: the paper bench's split of NFE into T transitions x K inner steps
SPLIT = {4: (2, 2), 6: (3, 2), 10: (5, 2), 20: (5, 4)}
Sampler = Callable[[int, torch.Tensor, torch.Generator], tuple[torch.Tensor, int]]


def chain(make: Callable[[int], tuple[int, Any]]) -> Sampler:
    """A glass_core row: make(nfe) -> (transitions T, transition), run over T uniform steps."""

    def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        steps, transition = make(nfe)
        with torch.no_grad():
            res = sample(MODEL, transition, uniform_grid(steps), x0=noise.clone(), generator=gen)
        return res.samples, int(res.nfe)

    return run


def _glass_pc(rho: float | str, split: bool) -> Callable[[int], tuple[int, Any]]:
    def make(nfe: int) -> tuple[int, Any]:
        steps = SPLIT.get(nfe, (1, nfe))[0] if split else 1
        return steps, Glass(rho, inner_steps=glass_inner_steps(rho, nfe // steps, "pc"))

    return make


def glass_rows() -> dict[str, Sampler]:
    rows: dict[str, Sampler] = {
        "ODE Euler": chain(lambda n: (1, ODE(substeps=n))),
        "ODE Heun": chain(lambda n: (1, ODE(solver="heun", substeps=max(1, n // 2)))),
    }
    try:
        ODE(solver="pc")
        rows["ODE pc"] = chain(lambda n: (1, ODE(solver="pc", substeps=n)))
    except Exception:  # the library does not offer ODE(solver="pc") yet
        pass
    rows["glass_core SDE"] = chain(lambda n: (1, SDE(substeps=n)))
    # from t = 0 the state is pure noise, so one transition 0 -> 1 does not depend on rho
    rows["GLASS pc, 1 transition 0 -> 1"] = chain(_glass_pc("ddpm", False))
    rows["GLASS pc rho=0.4, T x K split"] = chain(_glass_pc(0.4, True))
    return rows


def baseline_row(name: str, shift: float) -> Sampler:
    def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        g = gen if name in STOCHASTIC else None
        return sample_baseline(MODEL.unet, name, nfe, noise, flow_shift=shift, generator=g), nfe

    return run


MODEL: Any = None
#: the realism columns, in the order the tables print them (record keys, titles)
METRICS = (
    ("clamped", "energy distance, samples clamped to [-1, 1]"),
    ("features", "feature energy distance (embedded CNN, standardised)"),
    ("raw", "energy distance, raw samples"),
)


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Score every row at every NFE; returns one record per (row, nfe)."""
    x, _ = load_real_digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    ref, held = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    feats = digit_features(load_default_reward(3).classifier)
    noise = torch.randn(args.samples, 1, 8, 8, generator=torch.Generator().manual_seed(args.seed))
    noisy = held + 0.15 * torch.randn(held.shape, generator=torch.Generator().manual_seed(7))
    records = [
        record(
            "real digits (other half)", None, len(held), 0, score_realism(held, ref, feats), 0.0
        ),
        record(
            "real digits + N(0, 0.15^2)", None, len(held), 0, score_realism(noisy, ref, feats), 0.0
        ),
    ]
    groups: list[tuple[str, list[tuple[float | None, Sampler]]]] = [
        (label, [(None, run)]) for label, run in glass_rows().items()
    ]
    groups += [
        (BASELINES[n][2], [(s, baseline_row(n, s)) for s in args.shifts]) for n in args.baselines
    ]
    for label, variants in groups:
        for nfe in args.nfe:
            best: dict[str, Any] | None = None
            for shift, run in variants:
                start = time.perf_counter()
                out, spent = run(nfe, noise, torch.Generator().manual_seed(args.seed + 1))
                rec = record(label, nfe, spent, shift, score_realism(out, ref, feats), start)
                if best is None or rec["clamped"]["mean"] < best["clamped"]["mean"]:
                    best = rec
            assert best is not None
            log(f"{label} @ {nfe}: clamped {100 * best['clamped']['mean']:.2f} ({best['wall_s']}s)")
            records.append(best)
    return records


def record(
    label: str, nfe: int | None, spent: int, shift: float | None, r: Realism, start: float
) -> dict[str, Any]:
    """One table row's JSON record: `r`'s scores, the NFE spent, the shift and the wall time."""
    s = r.summary()
    return {
        "row": label,
        "nfe_budget": nfe,
        "nfe": spent,
        "shift": shift,
        "clamped": s["energy_distance_clamped"],
        "features": s["feature_distance"],
        "raw": s["energy_distance"],
        "outside": s["outside_fraction"],
        "wall_s": round(time.perf_counter() - start, 1) if start else 0.0,
    }


def table(records: list[dict[str, Any]], nfes: list[int], metric: str, title: str) -> str:
    """One markdown table: rows x NFE of `metric` (x100), the strongest row per column bold."""
    rows = dict.fromkeys(r["row"] for r in records)
    at = {(r["row"], r["nfe_budget"]): r for r in records}
    best = {
        n: min((r for r in records if r["nfe_budget"] == n), key=lambda r: r[metric]["mean"])
        for n in nfes
    }
    lines = [
        f"**{title}** (x100, ± s.e.; bold: the strongest sampler at that NFE)\n",
        "| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    for row in rows:
        cells = []
        for n in nfes:
            r = at.get((row, n)) or at.get((row, None))
            if r is None:
                cells.append("")
                continue
            text = f"{100 * r[metric]['mean']:.2f} ± {100 * r[metric]['se']:.2f}"
            if r is best.get(n):
                text = f"**{text}**"
            tags = [f"shift {r['shift']:g}"] if r["shift"] else []
            if r["nfe_budget"] is not None and r["nfe"] != n:
                tags.append(f"{r['nfe']} NFE")
            cells.append(text + (f" ({', '.join(tags)})" if tags else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Strongest at each NFE: "
        + "; ".join(f"{n}: {best[n]['row']}" for n in nfes)
        + " (the data rows are not samplers and never count as strongest)."
    )
    return "\n".join(lines)


def outside_table(records: list[dict[str, Any]], nfes: list[int]) -> str:
    at = {(r["row"], r["nfe_budget"]): r for r in records}
    lines = [
        "**% of pixels outside [-1.05, 1.05]** (real digits: 0)\n",
        "| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    for row in dict.fromkeys(r["row"] for r in records if r["nfe_budget"] is not None):
        cells = [f"{100 * at[(row, n)]['outside']:.2f}" for n in nfes]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 6, 10, 20])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--shifts", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    MODEL = load_default_model()
    start = time.perf_counter()
    records = measure(args, lambda m: print(m, flush=True))
    wall = time.perf_counter() - start
    # data rows count for every column of the table but never as "strongest"
    samplers = [r for r in records if r["nfe_budget"] is not None]
    data = [r for r in records if r["nfe_budget"] is None]
    parts = [
        f"# Unsteered realism vs NFE: {args.samples} samples per row, same noise (seed "
        f"{args.seed}), reference: 898 real digits, shifts searched {args.shifts}, "
        f"torch {torch.__version__}, {args.threads} thread(s), {wall:.0f} s\n",
    ]
    for metric, title in METRICS:
        parts.append(with_data(table(samplers, args.nfe, metric, title), data, metric))
    parts.append(outside_table(records, args.nfe))
    text = "\n\n".join(parts) + "\n"
    print("\n" + text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "baselines.md").write_text(text, encoding="utf-8")
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "records": records}
        (args.out / "baselines.json").write_text(json.dumps(payload, indent=2) + "\n")


def with_data(text: str, data: list[dict[str, Any]], metric: str) -> str:
    """Insert the data rows (same value in every column) under the table's header."""
    lines = text.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    ncol = lines[head].count("|") - 2
    extra = [
        f"| {r['row']} | "
        + " | ".join([f"{100 * r[metric]['mean']:.2f} ± {100 * r[metric]['se']:.2f}"] * ncol)
        + " |"
        for r in data
    ]
    return "\n".join(lines[: head + 1] + extra + lines[head + 1 :])


if __name__ == "__main__":
    main()
