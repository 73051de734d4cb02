"""GLASS inner solvers at small NFE: accuracy against the exact kernel, sample quality on digits.

Part 1, exact mixture (the 3-component GMM of docs/math.md §7, d = 2). For each cell (schedule, t,
t', rho) draw P start points x_t ~ p_t and from each N transitions with
  euler      K = n inner steps (the paper's Algorithm 1)
  midpoint   K = n // 2 (2 NFE per step)
  heun       K = n // 2, or (n + 1) // 2 when s = 1 is singular (t' = 1 or |rho| = 1: 2K - 1 NFE)
  multistep  K = n (1 NFE per step)
  pc         K = n (1 NFE per step; predictor-corrector)
  SDE        n Euler-Maruyama substeps (only where its kernel is the cell's: rho = ddpm or t' = 1)
at n = 2, 4, 8, 16 NFE per transition. Metrics against the exact kernel, averaged over the P points:
  rel   relative moment error max(|mean - m| / sqrt(tr C), |cov - C|_F / |C|_F) with m, C the
        exact kernel moments; "floor" is the same statistic for N exact kernel samples.
  ed    V-statistic energy distance between 2000 of the samples and 2000 exact kernel samples.

Part 2, the embedded digits model (glass_core.digits.assets; real scikit-learn digits). Unsteered
samples from N(0, I) at equal NFE (10, 20, 50): ODE (Euler) and SDE (Euler-Maruyama) with NFE
uniform steps, GLASS rho = ddpm over T = 5 uniform transitions with each inner solver (euler,
multistep and pc K = NFE/5; heun and midpoint K = NFE/10), and multistep and pc over T = 2
transitions. Metric:
U-statistic energy distance between the samples and all 1797 real digits, mean and standard error
over seeds. "data" is a random subset of real digits of the same size against the remaining ones.

Usage: nice -n 10 python benches/bench_glass_solvers.py [--out DIR] [--quick]
(without --out it only prints)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from glass_core.metrics import energy_distance
from glass_core.models import GaussianMixture
from glass_core.schedules import Cosine, RectifiedFlow, uniform_grid
from glass_core.transitions import ODE, SDE, Glass, sample

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


def energy_u(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased (U-statistic) energy distance. Float64 since it moved to glass_core.metrics: the
    published digits table (float32) can differ by one in its last printed digit."""
    return energy_distance(x, y).value


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


def run_mixture(points: int, samples: int, cells: list, budgets: list[int]) -> list[dict]:
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


def digit_configs(nfe: int):
    """(name, transition, time grid) spending `nfe` NFE per sample."""
    five = uniform_grid(5)
    out = [
        ("ODE (Euler)", ODE(substeps=nfe), [0.0, 1.0]),
        ("SDE (Euler-Maruyama)", SDE(substeps=nfe), [0.0, 1.0]),
        ("GLASS euler 5 x K", Glass("ddpm", nfe // 5, "euler"), five),
        ("GLASS multistep 5 x K", Glass("ddpm", nfe // 5, "multistep"), five),
        ("GLASS multistep 2 x K", Glass("ddpm", nfe // 2, "multistep"), uniform_grid(2)),
        ("GLASS pc 5 x K", Glass("ddpm", nfe // 5, "pc"), five),
        ("GLASS pc 2 x K", Glass("ddpm", nfe // 2, "pc"), uniform_grid(2)),
        ("GLASS heun 5 x K", Glass("ddpm", nfe // 10, "heun"), five),
        ("GLASS midpoint 5 x K", Glass("ddpm", nfe // 10, "midpoint"), five),
    ]
    # the digits runs are the slow part: midpoint (as accurate as heun on the mixture) is optional
    return out


def run_digits(seeds: int, batch: int, nfes: list[int], skip: str) -> list[dict]:
    from glass_core.digits.assets import load_default_model, load_real_digits

    torch.set_num_threads(1)
    model = load_default_model()
    real, _ = load_real_digits()
    flat_real = real.reshape(real.shape[0], -1)
    rows = []
    data = []
    for seed in range(seeds):
        perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
        data.append(energy_u(flat_real[perm[:batch]], flat_real[perm[batch:]]))
    rows.append(
        {
            "method": "data",
            "nfe": 0,
            "mean": float(np.mean(data)),
            "se": float(np.std(data, ddof=1) / np.sqrt(seeds)),
            "nfe_used": 0,
        }
    )
    for nfe in nfes:
        for name, tr, grid in digit_configs(nfe):
            if skip and skip in name:
                continue
            vals, used = [], 0
            for seed in range(seeds):
                g = torch.Generator().manual_seed(1000 + seed)
                with torch.no_grad():
                    res = sample(model, tr, grid, shape=(batch, 1, 8, 8), generator=g)
                used = res.nfe
                vals.append(energy_u(res.samples.reshape(batch, -1).float(), flat_real))
            rows.append(
                {
                    "method": name,
                    "nfe": nfe,
                    "nfe_used": used,
                    "mean": float(np.mean(vals)),
                    "se": float(np.std(vals, ddof=1) / np.sqrt(seeds)),
                }
            )
            print(
                f"digits nfe={nfe} ({used}) {name:24s} ed={rows[-1]['mean']:.4f} "
                f"+- {rows[-1]['se']:.4f}",
                flush=True,
            )
    return rows


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
    ap.add_argument("--skip", default="", help="digits: skip configs whose name contains this")
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
        )
        if out is not None:
            (out / "glass_solvers_mixture.json").write_text(json.dumps(res, indent=1))
    if args.part in ("all", "digits"):
        nfes = [int(n) for n in args.nfes.split(",")]
        res["digits"] = run_digits(
            args.seeds, args.batch, nfes[:1] if args.quick else nfes, args.skip
        )
        if out is not None:
            (out / "glass_solvers_digits.json").write_text(json.dumps(res, indent=1))
    lines = []
    if "mixture" in res:
        lines += ["## Exact mixture", "", *verdict(res["mixture"]), ""]
        lines += mixture_tables(res["mixture"])
    if "digits" in res:
        lines += [
            "## Digits: energy distance to the real digits (mean ± SE over seeds)",
            "",
            "| method | NFE (used) | energy distance |",
            "|---|---:|---:|",
        ]
        for r in res["digits"]:
            lines.append(
                f"| {r['method']} | {r['nfe']} ({r['nfe_used']}) | "
                f"{r['mean']:.4f} ± {r['se']:.4f} |"
            )
    lines.append(f"\nwall time {time.time() - t0:.0f} s")
    print("\n".join(lines))
    if out is not None:
        (out / f"glass_solvers_{args.part}.table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
