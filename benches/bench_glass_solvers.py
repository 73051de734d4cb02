"""GLASS inner solvers at small NFE: accuracy against the exact kernel, sample quality on digits.

Part 1, exact mixture (the 3-component GMM of docs/math.md §7, d = 2). For each cell (schedule, t,
t', rho) draw P start points x_t ~ p_t and from each N transitions with
  euler      K = n inner steps (the paper's Algorithm 1)
  midpoint   K = n // 2 (2 NFE per step)
  heun       K = n // 2, or (n + 1) // 2 when s = 1 is singular (t' = 1 or |rho| = 1: 2K - 1 NFE)
  multistep  K = n (1 NFE per step)
  pc         K = n (1 NFE per step; predictor-corrector)
  SDE        n exact ancestral substeps (only where its kernel is the cell's: rho = ddpm or t' = 1)
at n = 2, 4, 8, 16 NFE per transition. Metrics against the exact kernel, averaged over the P points:
  rel   relative moment error max(|mean - m| / sqrt(tr C), |cov - C|_F / |C|_F) with m, C the
        exact kernel moments; "floor" is the same statistic for N exact kernel samples.
  ed    V-statistic energy distance between 2000 of the samples and 2000 exact kernel samples.

Part 2, the embedded digits model (glass_core.digits.assets; real scikit-learn digits). Unsteered
samples from the same N(0, I) draws at equal NFE (10, 20, 50): glass_core's ODE (Euler, Heun, pc)
and SDE (exact ancestral) with NFE uniform steps, GLASS rho = ddpm over T = 5 uniform transitions
with each inner solver (euler, multistep and pc K = NFE/5; heun and midpoint K = NFE/10) and
multistep and pc over T = 2, and diffusers' UniPC (order 2), DPM-Solver++(2M),
SDE-DPM-Solver++(2M) and DDPM ancestral (glass_core.digits.baselines) at their best grid shift of
--shifts (chosen on seed 0). Scores (glass_core.digits.evidence.score_realism, pooled over seeds
with pool_realism): energy distance x100 to a random half of the real digits per seed, on the
clamped samples, in the embedded CNN's feature space and raw, plus the % of pixels outside the
data range; the data row (the other half) and the sanity row (real digits + N(0, 0.15^2)). The
rows, records and tables are bench_baselines.py's.

Usage: nice -n 10 python benches/bench_glass_solvers.py [--part mixture|digits] [--out DIR]
[--quick] (without --out it only prints; --render JSON... re-renders digits runs made per NFE)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import bench_baselines as bb  # the same rows, records and tables as baselines.md
import numpy as np
import torch
from glass_core.digits.baselines import BASELINES, FLOW_SHIFTS
from glass_core.digits.evidence import Realism, digit_features, pool_realism, score_realism
from glass_core.metrics import energy_distance
from glass_core.models import GaussianMixture
from glass_core.schedules import Cosine, RectifiedFlow
from glass_core.transitions import ODE, SDE, Glass

F64 = torch.float64
NFES = (2, 4, 8, 16)
SOLVERS = ("euler", "midpoint", "heun", "multistep", "pc")
# (schedule, t, t', rho): posterior sampling from early and late times, late steps, interior steps
CELLS = [
    ("rf", 0.05, 1.0, "ddpm"),
    ("rf", 0.15, 1.0, "ddpm"),
    ("rf", 0.4, 1.0, "ddpm"),
    ("rf", 0.6, 1.0, "ddpm"),
    ("rf", 0.8, 0.95, "ddpm"),
    ("rf", 0.8, 0.95, 0.4),
    ("rf", 0.3, 0.6, "ddpm"),
    ("rf", 0.3, 0.6, 0.4),
    ("rf", 0.5, 0.8, 0.4),
    ("rf", 0.4, 0.7, 1.0),
    ("rf", 0.3, 0.6, -0.5),
    ("cosine", 0.15, 1.0, "ddpm"),
    ("cosine", 0.8, 0.95, "ddpm"),
    ("cosine", 0.3, 0.6, 0.4),
]


def gmm(schedule) -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]], dtype=F64)
    stds = torch.tensor([0.05, 0.2, 0.1], dtype=F64).sqrt()
    return GaussianMixture(means, stds, torch.tensor([0.3, 0.5, 0.2]), schedule)


def rel_moment_error(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    m, c = x.mean(0), torch.cov(x.T)
    return max(float((m - mean).norm() / cov.trace().sqrt()), float((c - cov).norm() / cov.norm()))


def energy_v(x: torch.Tensor, y: torch.Tensor) -> float:
    """V-statistic energy distance (>= 0; the published tables were computed with it)."""
    return energy_distance(x, y, unbiased=False).value


def singular(t_next: float, rho) -> bool:
    return t_next == 1.0 or (not isinstance(rho, str) and abs(rho) == 1.0)


def methods(n: int, t_next: float, rho):
    """(name, transition) pairs spending n NFE per transition (heun at a singular end: 2K-1)."""
    out = [(s, Glass(rho, n, s)) for s in ("euler", "multistep", "pc")]
    if n >= 2:
        out.append(("midpoint", Glass(rho, n // 2, "midpoint")))
        k = (n + 1) // 2 if singular(t_next, rho) else n // 2
        out.append(("heun", Glass(rho, k, "heun")))
    if rho == "ddpm" or t_next == 1.0:
        out.append(("SDE", SDE(substeps=n)))
    return out


def run_mixture(
    points: int, samples: int, cells: list, budgets: list[int], only: tuple[str, ...] = ()
) -> list[dict]:
    """Mixture rows; `only` keeps those methods (each method's noise is seeded on its own, so a
    subset reproduces the full run's rows for those methods)."""
    rows = []
    for sname, t, t_next, rho in cells:
        model = gmm(RectifiedFlow() if sname == "rf" else Cosine())
        g = torch.Generator().manual_seed(7)
        x0s = model.sample_marginal(points, t, g)
        floor = []
        exact = []
        for p in range(points):
            x = x0s[p : p + 1].expand(samples, 2)
            mu, cov = model.transition_moments(x0s[p : p + 1], t, t_next, rho)
            ex = model.sample_transition(x, t, t_next, rho, g)
            floor.append(rel_moment_error(ex, mu[0], cov[0]))
            exact.append((x, mu[0], cov[0], model.sample_transition(x[:2000], t, t_next, rho, g)))
        cell = f"{sname} {t}->{t_next} rho={rho}"
        rows.append(
            {
                "cell": cell,
                "method": "floor",
                "nfe": 0,
                "rel": float(np.mean(floor)),
                "ed": float(
                    np.mean(
                        [
                            energy_v(e[3], model.sample_transition(e[0][:2000], t, t_next, rho, g))
                            for e in exact
                        ]
                    )
                ),
            }
        )
        for n in budgets:
            for name, tr in methods(n, t_next, rho):
                if only and name not in only:
                    continue
                rel, ed = [], []
                for p, (x, mu, cov, ex) in enumerate(exact):
                    out = tr(model, x, t, t_next, torch.Generator().manual_seed(100 + p))
                    rel.append(rel_moment_error(out, mu, cov))
                    ed.append(energy_v(out[:2000], ex))
                rows.append(
                    {
                        "cell": cell,
                        "method": name,
                        "nfe": tr.nfe(model.schedule, t, t_next),
                        "budget": n,
                        "rel": float(np.mean(rel)),
                        "ed": float(np.mean(ed)),
                    }
                )
                print(
                    f"{cell:28s} n={n:2d} {name:10s} rel={rows[-1]['rel']:.3f} "
                    f"ed={rows[-1]['ed']:.2e}",
                    flush=True,
                )
    return rows


def digit_rows() -> dict[str, bb.Sampler]:
    """glass_core's rows: label -> sampler spending `nfe` NFE per sample (heun: 2K-1 at t' = 1)."""
    rows = {
        "ODE Euler": (1, lambda n: ODE(substeps=n)),
        "ODE Heun": (1, lambda n: ODE(solver="heun", substeps=n // 2)),
        "ODE pc": (1, lambda n: ODE(solver="pc", substeps=n)),
        "glass_core SDE (exact ancestral)": (1, lambda n: SDE(substeps=n)),
        "GLASS euler 5 x K": (5, lambda n: Glass("ddpm", n // 5, "euler")),
        "GLASS multistep 5 x K": (5, lambda n: Glass("ddpm", n // 5, "multistep")),
        "GLASS multistep 2 x K": (2, lambda n: Glass("ddpm", n // 2, "multistep")),
        "GLASS pc 5 x K": (5, lambda n: Glass("ddpm", n // 5, "pc")),
        "GLASS pc 2 x K": (2, lambda n: Glass("ddpm", n // 2, "pc")),
        "GLASS heun 5 x K": (5, lambda n: Glass("ddpm", n // 10, "heun")),
        "GLASS midpoint 5 x K": (5, lambda n: Glass("ddpm", n // 10, "midpoint")),
    }
    return {
        label: bb.chain(lambda n, steps=steps, make=make: (steps, make(n)))
        for label, (steps, make) in rows.items()
    }


def run_digits(args: argparse.Namespace, nfes: list[int]) -> list[dict]:
    """Score every row at every NFE over `args.seeds` seeds (bench_baselines' records, pooled).

    Seed s draws the noise shared by all rows, the step noise of the stochastic rows and a random
    half of the real digits as the reference (the other half is the data row). A diffusers
    baseline's grid shift is chosen on seed 0 by the clamped distance, then kept for the others.
    """
    from glass_core.digits.assets import load_default_model, load_default_reward, load_real_digits

    torch.set_num_threads(args.threads)
    bb.MODEL = load_default_model()
    real, _ = load_real_digits()
    feats = digit_features(load_default_reward(3).classifier)
    seeds = []
    for seed in range(args.seeds):
        perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        ref, held = real[perm[: len(real) // 2]], real[perm[len(real) // 2 :]]
        noise = torch.randn(
            args.batch, 1, 8, 8, generator=torch.Generator().manual_seed(1000 + seed)
        )
        noisy = held + 0.15 * torch.randn(
            held.shape, generator=torch.Generator().manual_seed(7 + seed)
        )
        seeds.append((ref, held, noisy, noise))
    records = [
        bb.record(
            label,
            None,
            len(seeds[0][1]),
            0,
            pool_realism([score_realism(s[i], s[0], feats) for s in seeds]),
            0.0,
        )
        for label, i in (("real digits (other half)", 1), ("real digits + N(0, 0.15^2)", 2))
    ]
    groups = [(label, [(None, run)]) for label, run in digit_rows().items()]
    groups += [
        (BASELINES[n][2], [(sh, bb.baseline_row(n, sh)) for sh in args.shifts]) for n in BASELINES
    ]
    for label, variants in groups:
        if args.skip and args.skip in label:
            continue
        for nfe in nfes:
            start = time.perf_counter()

            def score(run: bb.Sampler, seed: int, nfe: int = nfe) -> tuple[Realism, int]:
                ref, _, _, noise = seeds[seed]
                out, spent = run(nfe, noise, torch.Generator().manual_seed(10_000 + seed))
                return score_realism(out, ref, feats), spent

            first = [(sh, *score(run, 0)) for sh, run in variants]
            shift, r0, spent = min(first, key=lambda f: f[1].clamped.value)
            run = dict(variants)[shift]
            rest = [score(run, s)[0] for s in range(1, len(seeds))]
            records.append(bb.record(label, nfe, spent, shift, pool_realism([r0, *rest]), start))
            r = records[-1]
            print(
                f"digits nfe={nfe} ({spent}) {label:44s} clamped {100 * r['clamped']['mean']:6.2f} "
                f"features {100 * r['features']['mean']:7.2f} shift {shift} ({r['wall_s']} s)",
                flush=True,
            )
    return records


def merge_digits(runs: list[list[dict]]) -> list[dict]:
    """Concatenate the digits records of several runs (the data rows once, from the first)."""
    data = [r for r in runs[0] if r["nfe_budget"] is None]
    return data + [r for run in runs for r in run if r["nfe_budget"] is not None]


def digits_tables(records: list[dict], nfes: list[int]) -> list[str]:
    """bench_baselines' tables (x100, strongest row per NFE in bold) for these records."""
    samplers = [r for r in records if r["nfe_budget"] is not None]
    data = [r for r in records if r["nfe_budget"] is None]
    parts = []
    for metric, title in bb.METRICS:
        parts += [bb.with_data(bb.table(samplers, nfes, metric, title), data, metric), ""]
    return [*parts, bb.outside_table(records, nfes)]


def mixture_tables(rows: list[dict]) -> list[str]:
    lines = []
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    names = (*SOLVERS, "SDE")
    for metric, title in (("rel", "relative moment error"), ("ed", "energy distance")):
        for n in NFES:
            lines += [
                f"### {title}, {n} NFE per transition",
                "",
                "| cell | floor | " + " | ".join(names) + " |",
                "|---|" + "---:|" * (len(names) + 1),
            ]
            for cell in cells:
                fl = next(r for r in rows if r["cell"] == cell and r["method"] == "floor")
                vals = []
                for m in names:
                    r = [
                        r
                        for r in rows
                        if r["cell"] == cell and r["method"] == m and r.get("budget") == n
                    ]
                    vals.append(f"{r[0][metric]:.3g} ({r[0]['nfe']})" if r else "-")
                lines.append(f"| {cell} | {fl[metric]:.3g} | " + " | ".join(vals) + " |")
            lines.append("")
    return lines


def verdict(rows: list[dict], n: int = 4) -> list[str]:
    """Done-when at n NFE: best new solver's worst rel <= 0.5 x Euler's worst, never worse.

    One line per solver, then a per-cell table (rel, ratio to Euler, floor) so that every cell's
    verdict can be read next to the Monte-Carlo floor of the same size.
    """
    at_n = [r for r in rows if r.get("budget") == n]
    cells = list(dict.fromkeys(r["cell"] for r in at_n))
    new = SOLVERS[1:]

    def rel(cell, m):
        return next(
            r["rel"]
            for r in rows
            if r["cell"] == cell and r["method"] == m and (m == "floor" or r.get("budget") == n)
        )

    worst_euler = max(rel(c, "euler") for c in cells)
    out = []
    for m in new:
        worst = max(rel(c, m) for c in cells)
        worse = [c for c in cells if rel(c, m) > rel(c, "euler")]
        out.append(
            f"- {n} NFE, {m}: worst {worst:.3f} vs Euler's worst {worst_euler:.3f} "
            f"(ratio {worst / worst_euler:.2f}); cells worse than Euler: "
            f"{', '.join(worse) if worse else 'none'} ({len(cells)} cells)"
        )
    out += [
        "",
        f"| cell ({n} NFE) | floor | euler | " + " | ".join(f"{m} (ratio)" for m in new) + " |",
        "|---|" + "---:|" * (len(new) + 2),
    ]
    for c in cells:
        e = rel(c, "euler")
        vals = [f"{rel(c, m):.3f} ({rel(c, m) / e:.2f})" for m in new]
        out.append(f"| {c} | {rel(c, 'floor'):.3f} | {e:.3f} | " + " | ".join(vals) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="also write json/table.md here")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--samples", type=int, default=40_000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--part", choices=("all", "mixture", "digits"), default="all")
    ap.add_argument("--nfes", default="10,20,50", help="digits NFE budgets")
    ap.add_argument("--skip", default="", help="digits: skip rows whose label contains this")
    ap.add_argument("--shifts", type=float, nargs="+", default=list(FLOW_SHIFTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--render", type=Path, nargs="+", default=[], help="digits: tables from these jsons"
    )
    ap.add_argument("--methods", default="", help="mixture: only these methods (comma list)")
    ap.add_argument("--cells", default="", help="mixture: comma-separated cell indices")
    ap.add_argument("--budgets", default="2,4,8,16", help="mixture: NFE per transition")
    args = ap.parse_args()
    out = args.out
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res: dict = {"machine": platform.platform(), "torch": torch.__version__, "args": vars(args)}
    if args.part in ("all", "mixture"):
        cells = [CELLS[int(i)] for i in args.cells.split(",")] if args.cells else CELLS
        res["mixture"] = run_mixture(
            args.points,
            args.samples,
            cells[:4] if args.quick else cells,
            [int(n) for n in args.budgets.split(",")],
            tuple(m for m in args.methods.split(",") if m),
        )
        if out is not None:
            (out / "glass_solvers_mixture.json").write_text(json.dumps(res, indent=1, default=str))
    nfes = [int(n) for n in args.nfes.split(",")][: 1 if args.quick else None]
    if args.render:  # tables from earlier digits runs (e.g. one process per NFE), not re-run
        res["digits"] = merge_digits([json.loads(p.read_text())["digits"] for p in args.render])
    elif args.part in ("all", "digits"):
        res["digits"] = run_digits(args, nfes)
        if out is not None:
            (out / "glass_solvers_digits.json").write_text(json.dumps(res, indent=1, default=str))
    lines = []
    if "mixture" in res:
        lines += ["## Exact mixture", ""]
        if not args.methods:
            lines += [*verdict(res["mixture"]), ""]
        lines += mixture_tables(res["mixture"])
    if "digits" in res:
        lines += [
            "## Digits: unsteered realism (x100, pooled s.e.; batch and seeds: see the json)",
            "",
            *digits_tables(res["digits"], nfes),
        ]
    lines.append(f"\nwall time {time.time() - t0:.0f} s")
    print("\n".join(lines))
    if out is not None:
        (out / f"glass_solvers_{args.part}.table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
