"""The GLASS paper's experiments in kind, on the embedded digits model and the real digits.

Table 1 in kind (the paper's FKS table): steer toward digit TARGET with the embedded CNN reward
r = log p(digit = TARGET | z). For each budget of NFE per particle (10, 20, 50) and particle count
N (4, 8, 16), every method runs G independent groups in one batched call (group g seeded g, the
same for every method) and returns its highest-reward particle. Columns, mean ± standard error
over the G groups:
  reward     the optimised reward of the returned sample;
  P_heldout  P(digit = TARGET) under a logistic regression trained on the real digits
             (data/heldout_classifier, scripts/train_heldout_classifier.py): another model family,
             never seen by the steering, so a method that fools the CNN without drawing a TARGET
             scores low here (the paper's GenEval column);
  ED         energy distance (unbiased, x100, jackknife s.e.) of the G returned samples to the
             real digits of class TARGET (realism; lower is better, 0 = indistinguishable).
Every method uses the same 5 uniform outer steps: ODE/SDE take NFE/5 Euler(-Maruyama) substeps
per outer step, GLASS NFE/5 NFE of inner steps of the chosen solver; FK potentials (`diff`,
lambda 4) and resampling happen at the 4 interior outer times for SDE and GLASS alike.
FK-GLASS+grad adds reward guidance (scale 0.4, t in [0.2, 0.7], the paper's App. D.4) inside the
GLASS transitions.

Tables 3/4 in kind: unsteered samples (S per method) at 10, 20, 50 NFE for ODE, SDE and GLASS with
each inner solver; ED (x100) to all 1797 real digits and the held-out classifier's mean
confidence (max class probability). Reference row: half of the real digits against the other half.

§6.1 in kind (posterior sampling from noised real digits, value-function correlation) is
benches/bench_value.py; this script runs it and includes its tables when it exists.

Usage: python benches/bench_paper.py [--quick] [--out docs/benchmarks] [--tables fk,sampling,
posterior] [--solvers euler,heun] [--fk-solver NAME] [--groups G] [--samples S]
Through the CLI: glass-core bench --only paper --script-args="--quick" (full mode needs a longer
--timeout; see docs/benchmarks/paper.md for its measured time).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from glass_core.digits.assets import load_default_model, load_heldout_classifier, load_real_digits
from glass_core.digits.evidence import (
    FK_SOLVER,
    Cell,
    load_judges,
    run_cell,
    steering_methods,
    unsteered_samples,
)
from glass_core.metrics import energy_distance, mean_se

TARGET = 3
TRANSITIONS = 5
LAMBDA = 4.0
FULL = {"budgets": (10, 20, 50), "particles": (4, 8, 16), "groups": 128, "samples": 512}
QUICK = {"budgets": (10, 20), "particles": (4, 8), "groups": 16, "samples": 256}


def inner_solvers() -> list[str]:
    """Every inner solver the library's GLASS transition offers."""
    from glass_core.transitions import glass

    return list(glass.SOLVERS)


def has_lookahead() -> bool:
    from glass_core.align import potentials

    return "lookahead" in getattr(potentials, "POTENTIALS", ())


# ---------------------------------------------------------------------------------------------
# Table 1


def fk_table(
    model: Any, cfg: dict[str, Any], fk_solver: str, only: set[str] | None, log: Any
) -> list[dict]:
    judges = load_judges(TARGET)
    rows: list[dict] = []
    methods = [
        m for m in steering_methods(lookahead=has_lookahead()) if only is None or m.key in only
    ]
    for nfe in cfg["budgets"]:
        for method in methods:
            counts = (1,) if method.algorithm == "sample" else cfg["particles"]
            for n in counts:
                cell: Cell = run_cell(
                    model,
                    judges,
                    method,
                    nfe=nfe,
                    particles=n,
                    groups=cfg["groups"],
                    transitions=TRANSITIONS,
                    solver=fk_solver,
                    lambda_=LAMBDA,
                )
                rows.append(cell.summary())
                s = rows[-1]
                log(
                    f"  NFE {nfe} N {n:2d} {method.label:28s} reward {s['reward']['mean']:7.3f}"
                    f"  P {s['heldout_p_target']['mean']:.3f}  ED "
                    f"{100 * s['energy_distance']['mean']:6.2f}  ({cell.wall:.1f} s)"
                )
    return rows


def _pm(est: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    return f"{scale * est['mean']:.{digits}f} ± {scale * est['se']:.{digits}f}"


def format_fk(rows: list[dict], cfg: dict[str, Any]) -> str:
    out = []
    ns = cfg["particles"]
    for nfe in cfg["budgets"]:
        sub = [r for r in rows if r["nfe_budget"] == nfe]
        head = "| method | " + " | ".join(
            f"N={n}: reward | N={n}: P_heldout | N={n}: ED x100" for n in ns
        )
        out.append(f"\n#### {nfe} NFE per particle (N x {nfe} NFE per group)\n")
        out.append(head + " |")
        out.append("|---|" + "---:|" * (3 * len(ns)))
        labels = list(dict.fromkeys(r["label"] for r in sub))
        for label in labels:
            cells = []
            for n in ns:
                hit = [r for r in sub if r["label"] == label and r["particles"] in (n, 1)]
                if not hit:
                    cells += ["", "", ""]
                    continue
                r = hit[0]
                cells += [
                    _pm(r["reward"]),
                    _pm(r["heldout_p_target"]),
                    _pm(r["energy_distance"], 100, 2),
                ]
            nfe_used = sub[[r["label"] for r in sub].index(label)]["nfe"]
            out.append(f"| {label} ({nfe_used} NFE) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot_fk(path: Path, rows: list[dict], cfg: dict[str, Any]) -> None:
    """Table 1's three columns against NFE per particle at the middle particle count, ±1 s.e.
    (the demo's plot, drawn from the benchmark's rows)."""
    from glass_core.digits.config import DemoConfig
    from glass_core.digits.demo import write_plot

    n = cfg["particles"][len(cfg["particles"]) // 2]
    # bench key -> the demo's key for the same method (so both plots colour it alike)
    keys = {
        "flow": "sample_ode",
        "bon_ode": "best_of_n_ode",
        "bon_sde": "best_of_n_sde",
        "bon_glass_04": "best_of_n_glass",
        "fk_sde": "fk_sde",
        "fk_glass_04": "fk_glass",
    }
    shown = [
        {**r, "method": keys[r["method"]]}
        for r in rows
        if r["method"] in keys and r["particles"] in (1, n)
    ]
    shown.sort(key=lambda r: list(keys.values()).index(r["method"]))
    look = DemoConfig(
        particles=n,
        groups=cfg["groups"],
        nfe=min(cfg["budgets"]),
        budgets=list(cfg["budgets"]),
        target=TARGET,
    )
    write_plot(path, shown, look)


# ---------------------------------------------------------------------------------------------
# Tables 3/4


def sampling_methods(solvers: list[str]) -> list[tuple[str, str, Any, str | None]]:
    """(label, kernel, rho, solver) for the unsteered-sampling table."""
    rows: list[tuple[str, str, Any, str | None]] = [
        ("ODE (Euler)", "ode", None, "euler"),
        ("ODE (Heun)", "ode", None, "heun"),
        ("SDE (DDPM, Euler-Maruyama)", "sde", None, None),
    ]
    for rho in ("ddpm", 0.4):
        for solver in solvers:
            name = "DDPM" if rho == "ddpm" else rho
            rows.append((f"GLASS (rho={name}, {solver})", "glass", rho, solver))
    return rows


def sampling_table(model: Any, cfg: dict[str, Any], solvers: list[str], log: Any) -> list[dict]:
    real, _ = load_real_digits()
    heldout = load_heldout_classifier()
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half = len(real) // 2
    ref = energy_distance(real[perm[:half]], real[perm[half:]])
    conf = mean_se(heldout.probs(real).max(-1).values)
    rows = [
        {
            "label": f"real digits ({half}) vs the other {len(real) - half}",
            "nfe_budget": None,
            "nfe": 0,
            "energy_distance": {"mean": ref.value, "se": ref.se},
            "heldout_confidence": {"mean": conf.value, "se": conf.se},
        }
    ]
    for nfe in cfg["budgets"]:
        for label, kernel, rho, solver in sampling_methods(solvers):
            start = time.perf_counter()
            x, used = unsteered_samples(
                model,
                kernel,
                nfe=nfe,
                count=cfg["samples"],
                seed=nfe,
                transitions=TRANSITIONS,
                rho=rho,
                solver=solver,
            )
            ed = energy_distance(x, real)
            c = mean_se(heldout.probs(x).max(-1).values)
            rows.append(
                {
                    "label": label,
                    "nfe_budget": nfe,
                    "nfe": used,
                    "energy_distance": {"mean": ed.value, "se": ed.se},
                    "heldout_confidence": {"mean": c.value, "se": c.se},
                    "wall_s": round(time.perf_counter() - start, 2),
                }
            )
            log(
                f"  NFE {nfe} {label:34s} ({used} NFE) ED x100 {100 * ed.value:6.2f} "
                f"conf {c.value:.3f}"
            )
    return rows


def format_sampling(rows: list[dict], cfg: dict[str, Any]) -> str:
    budgets = cfg["budgets"]
    head = "| sampler | " + " | ".join(f"{b} NFE: ED x100 | {b} NFE: confidence" for b in budgets)
    lines = [head + " |", "|---|" + "---:|" * (2 * len(budgets))]
    ref = rows[0]
    lines.append(
        f"| {ref['label']} | "
        + " | ".join(
            f"{_pm(ref['energy_distance'], 100, 2)} | {_pm(ref['heldout_confidence'])}"
            for _ in budgets
        )
        + " |"
    )
    for label in dict.fromkeys(r["label"] for r in rows[1:]):
        cells = []
        for b in budgets:
            r = next(r for r in rows if r["label"] == label and r["nfe_budget"] == b)
            tag = "" if r["nfe"] == b else f" ({r['nfe']} NFE)"
            cells.append(f"{_pm(r['energy_distance'], 100, 2)}{tag}")
            cells.append(_pm(r["heldout_confidence"]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# §6.1


def posterior_section(quick: bool, out: Path | None) -> str:
    script = Path(__file__).resolve().parent / "bench_value.py"
    if not script.is_file():
        return "benches/bench_value.py is not in this checkout; §6.1 not run."
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    if out is not None:
        cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_value.py failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced grid (a few minutes)")
    ap.add_argument("--out", type=Path, default=None, help="write paper_tables[_quick].md/json")
    ap.add_argument("--tables", default="fk,sampling,posterior", help="comma-separated subset")
    ap.add_argument(
        "--solvers", default=None, help="GLASS inner solvers for the sampling table (all)"
    )
    ap.add_argument("--fk-solver", default=FK_SOLVER, help="GLASS inner solver for the FK table")
    ap.add_argument("--groups", type=int, default=None, help="groups per FK cell")
    ap.add_argument("--samples", type=int, default=None, help="samples per sampling cell")
    ap.add_argument("--budgets", default=None, help="NFE per particle, e.g. 10,20 (all)")
    ap.add_argument("--particles", default=None, help="FK/BoN particle counts, e.g. 4,8 (all)")
    ap.add_argument("--methods", default=None, help="FK-table method keys, e.g. fk_sde (all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    if args.groups:
        cfg["groups"] = args.groups
    if args.samples:
        cfg["samples"] = args.samples
    if args.budgets:
        cfg["budgets"] = tuple(int(b) for b in args.budgets.split(","))
    if args.particles:
        cfg["particles"] = tuple(int(n) for n in args.particles.split(","))
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    solvers = args.solvers.split(",") if args.solvers else inner_solvers()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    model = load_default_model(max_batch=512)
    mode = "quick" if args.quick else "full"
    results: dict[str, Any] = {"mode": mode, "config": cfg, "target": TARGET}
    parts = [f"## bench_paper ({mode} mode)"]
    if "fk" in tables:
        log("Table 1 in kind ...")
        only = set(args.methods.split(",")) if args.methods else None
        rows = fk_table(model, cfg, args.fk_solver, only, log)
        results["fk"] = rows
        solver = args.fk_solver
        parts.append(
            f"### Table 1 in kind: steering toward digit {TARGET}\n\n{cfg['groups']} groups per "
            f"cell; mean ± s.e. over groups; GLASS inner solver: {solver}; FK potential diff, "
            f"lambda {LAMBDA:g}, {TRANSITIONS} outer steps.\n" + format_fk(rows, cfg)
        )
    if "sampling" in tables:
        log("Tables 3/4 in kind ...")
        rows = sampling_table(model, cfg, solvers, log)
        results["sampling"] = rows
        parts.append(
            f"### Tables 3/4 in kind: unsteered samples\n\n{cfg['samples']} samples per cell "
            f"(seed = NFE); ED x100 to the 1797 real digits (jackknife s.e.); confidence = mean "
            f"max class probability under the held-out classifier. A measured NFE different from "
            f"the budget is shown next to the value.\n\n" + format_sampling(rows, cfg)
        )
    if "posterior" in tables:
        log("§6.1 in kind (benches/bench_value.py) ...")
        text = posterior_section(args.quick, args.out)
        results["posterior"] = text
        parts.append("### §6.1 in kind: posterior sampling and value estimation\n\n" + text)
    wall = time.perf_counter() - start
    results["wall_s"] = round(wall, 1)
    parts.append(
        f"[{wall:.0f} s, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s)]"
    )
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        suffix = "_quick" if args.quick else ""
        (args.out / f"paper_tables{suffix}.md").write_text(text, encoding="utf-8")
        (args.out / f"paper{suffix}.json").write_text(
            json.dumps(results, indent=2) + "\n", encoding="utf-8"
        )
        if "fk" in results:
            plot_fk(args.out / f"paper_fk{suffix}.png", results["fk"], cfg)


if __name__ == "__main__":
    main()
