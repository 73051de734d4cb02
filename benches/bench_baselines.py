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
from glass_core.digits.assets import load_default_model
from glass_core.digits.baselines import BASELINES
from glass_core.digits.evidence import glass_inner_steps
from glass_core.digits.unsteered import (
    Run,
    baseline_rows,
    chain_row,
    format_score,
    insert_data_rows,
    load_reference,
    measure_rows,
    ode_sde_rows,
    outside_table,
    realism_table,
    record,
)
from glass_core.transitions import Glass

#: the paper bench's split of NFE into T transitions x K inner steps
SPLIT = {4: (2, 2), 6: (3, 2), 10: (5, 2), 20: (5, 4)}
#: the realism columns, in the order the tables print them (record keys, titles)
METRICS = (
    ("clamped", "energy distance x100, samples clamped to [-1, 1]"),
    ("features", "feature energy distance x100 (embedded CNN, standardised)"),
    ("raw", "energy distance x100, raw samples"),
)

# ---------------------------------------------------------------------------------------------
# The names other benches (bench_glass_solvers) build their digits table from; one
# implementation, glass_core.digits.unsteered, behind them.

Sampler = Run
MODEL: Any = None  # set by the bench using chain/baseline_row before they run
__all__ = [
    "METRICS",
    "MODEL",
    "Sampler",
    "baseline_row",
    "chain",
    "outside_table",
    "record",
    "table",
    "with_data",
]


def chain(make: Callable[[int], tuple[int, Any]]) -> Sampler:
    """A glass_core row on :data:`MODEL`: make(nfe) -> (T, transition) over T uniform steps."""

    def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        return chain_row(MODEL, "", make).variants[0][1](nfe, noise, gen)

    return run


def baseline_row(name: str, shift: float) -> Sampler:
    """Diffusers baseline `name` at grid shift `shift` on :data:`MODEL`."""

    def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        return baseline_rows(MODEL, [name], [shift])[0].variants[0][1](nfe, noise, gen)

    return run


def table(records: list[dict[str, Any]], nfes: list[int], metric: str, title: str) -> str:
    """The samplers x NFE table of `metric`, strongest row per NFE bold (digits.unsteered)."""
    return realism_table(records, nfes, metric, title)


def with_data(text: str, data: list[dict[str, Any]], metric: str) -> str:
    """Insert the data rows (same value in every column) under the table's header."""
    return insert_data_rows(text, data, lambda r: format_score(r, metric))


def _glass_pc(rho: float | str, split: bool) -> Any:
    def make(nfe: int) -> tuple[int, Any]:
        steps = SPLIT.get(nfe, (1, nfe))[0] if split else 1
        return steps, Glass(rho, inner_steps=glass_inner_steps(rho, nfe // steps, "pc"))

    return make


def main(argv: list[str] | None = None) -> None:
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
    model = load_default_model()
    start = time.perf_counter()
    reference = load_reference(args.seed)
    noise = torch.randn(args.samples, 1, 8, 8, generator=torch.Generator().manual_seed(args.seed))
    rows = [
        *ode_sde_rows(model),
        # from t = 0 the state is pure noise, so one transition 0 -> 1 does not depend on rho
        chain_row(model, "GLASS pc, 1 transition 0 -> 1", _glass_pc("ddpm", False)),
        chain_row(model, "GLASS pc rho=0.4, T x K split", _glass_pc(0.4, True)),
        *baseline_rows(model, args.baselines, args.shifts),
    ]
    records = reference.data + measure_rows(
        rows, args.nfe, noise, args.seed, reference, lambda m: print(m, flush=True)
    )
    wall = time.perf_counter() - start
    parts = [
        f"# Unsteered realism vs NFE: {args.samples} samples per row, same noise (seed "
        f"{args.seed}), reference: 898 real digits, shifts searched {args.shifts}, "
        f"torch {torch.__version__}, {args.threads} thread(s), {wall:.0f} s\n",
    ]
    for metric, title in METRICS:
        parts.append(realism_table(records, args.nfe, metric, title))
    parts.append(outside_table(records, args.nfe))
    text = "\n\n".join(parts) + "\n"
    print("\n" + text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "baselines.md").write_text(text, encoding="utf-8")
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "records": records}
        (args.out / "baselines.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
