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
             real digits of class TARGET (realism; lower is better, 0 = indistinguishable), on the
             samples clamped to [-1, 1] as a pipeline returns them and in the embedded CNN's
             feature space (``evidence.score_realism``; both see leftover pixel noise; the raw
             pixel distance is in the json).
Every glass_core method uses the same 5 uniform outer steps: ODE (Euler) and SDE (glass_core's
exact ancestral/DDPM substeps, ending on the denoised estimate) take NFE/5 substeps per outer step,
GLASS the inner steps of the chosen solver that fit NFE/5; FK potentials (`diff`, lambda 4) and
resampling happen at the 4 interior outer times for SDE and GLASS alike. FK-GLASS+grad adds reward
guidance (scale 0.4, t in [0.2, 0.7], the paper's App. D.4) inside the GLASS transitions.
Best-of-N over the samplers a diffusers user would pick (UniPC order 2, DPM-Solver++(2M),
SDE-DPM-Solver++(2M), DDPM ancestral; ``evidence.baseline_methods``, grid shift 1) runs from the
same per-group noise. Each table names the strongest row per N and column.

Tables 3/4 in kind: unsteered samples (S per row, the same noise for every row) at 10, 20, 50 NFE:
glass_core's ODE (Euler, Heun, pc), SDE (exact ancestral) and GLASS (rho = DDPM and 0.4 over the 5
outer steps with each of ``--solvers``; pc as one transition 0 -> 1), and diffusers' UniPC,
DPM-Solver++(2M), SDE-DPM-Solver++(2M) and DDPM ancestral, each at its best grid shift of
``--shifts`` (``glass_core.digits.unsteered``). Scores against a random half of the real digits:
clamped, feature and raw energy distance (x100), the held-out classifier's mean confidence and the
% of pixels outside [-1.05, 1.05]; data rows: the other half (the data level) and the other half
+ N(0, 0.15^2) (the sanity row: a metric that sees noise scores it clearly worse than the data).

§6.1 in kind (posterior sampling from noised real digits, value-function correlation) is
benches/bench_value.py; this script runs it and includes its tables when it exists.

Usage: python benches/bench_paper.py [--quick] [--out docs/benchmarks] [--tables fk,sampling,
posterior] [--solvers heun,pc] [--fk-solver NAME] [--groups G] [--samples S] [--shifts 0.5,1,2]
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
from glass_core.digits.assets import load_default_model
from glass_core.digits.baselines import BASELINES, FLOW_SHIFTS
from glass_core.digits.evidence import (
    FK_SOLVER,
    Cell,
    baseline_methods,
    glass_inner_steps,
    load_judges,
    run_cell,
    steering_methods,
    transition_for,
)
from glass_core.digits.unsteered import (
    Row,
    baseline_rows,
    chain_row,
    load_reference,
    measure_rows,
    ode_sde_rows,
    outside_table,
    realism_table,
)
from glass_core.transitions import Glass

TARGET = 3
TRANSITIONS = 5
LAMBDA = 4.0
FULL = {
    "budgets": (10, 20, 50),
    "particles": (4, 8, 16),
    "groups": 128,
    "samples": 512,
    "shifts": FLOW_SHIFTS,
}
QUICK = {"budgets": (10, 20), "particles": (4, 8), "groups": 16, "samples": 256, "shifts": (1.0,)}
#: GLASS inner solvers of the unsteered table: the steering one and the library's default
SAMPLING_SOLVERS = tuple(dict.fromkeys((FK_SOLVER, "pc")))
#: Table 1 columns: (summary key, header, x100, higher is better)
FK_COLUMNS = (
    ("reward", "reward", False, True),
    ("heldout_p_target", "P_heldout", False, True),
    ("energy_distance_clamped", "clamped ED x100", True, False),
    ("feature_distance", "feature ED x100", True, False),
)


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
    methods = steering_methods(lookahead=has_lookahead()) + baseline_methods()
    methods = [m for m in methods if only is None or m.key in only]
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
                    f"  P {s['heldout_p_target']['mean']:.3f}  clamped ED "
                    f"{100 * s['energy_distance_clamped']['mean']:6.2f}  feature ED "
                    f"{100 * s['feature_distance']['mean']:6.2f}  ({cell.wall:.1f} s)"
                )
    return rows


def _pm(est: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    return f"{scale * est['mean']:.{digits}f} ± {scale * est['se']:.{digits}f}"


def _strongest(rows: list[dict], key: str, higher: bool) -> dict:
    return max(rows, key=lambda r: r[key]["mean"] if higher else -r[key]["mean"])


def format_fk(rows: list[dict], cfg: dict[str, Any]) -> str:
    """Per NFE budget one table, rows grouped by N, the strongest row per N and column bold."""
    out = []
    for nfe in cfg["budgets"]:
        sub = [r for r in rows if r["nfe_budget"] == nfe]
        out.append(f"\n#### {nfe} NFE per particle (N x {nfe} NFE per group)\n")
        out.append("| method (NFE used) | N | " + " | ".join(c[1] for c in FK_COLUMNS) + " |")
        out.append("|---|---:|" + "---:|" * len(FK_COLUMNS))
        flow = [r for r in sub if r["particles"] == 1]
        strongest = []
        for n in cfg["particles"]:
            group = [r for r in sub if r["particles"] == n]
            best = {c[0]: _strongest(group, c[0], c[3]) for c in FK_COLUMNS}
            for r in flow + group:
                cells = []
                for key, _, x100, _ in FK_COLUMNS:
                    text = _pm(r[key], 100, 2) if x100 else _pm(r[key])
                    cells.append(f"**{text}**" if r is best[key] else text)
                row = f"| {r['label']} ({r['nfe']}) | {r['particles']} | "
                out.append(row + " | ".join(cells) + " |")
            strongest.append(
                f"N = {n}: " + ", ".join(f"{c[1]}: {best[c[0]]['label']}" for c in FK_COLUMNS)
            )
        out.append("\nStrongest (bold) at " + f"{nfe} NFE per particle: " + "; ".join(strongest))
    return "\n".join(out)


def plot_fk(path: Path, rows: list[dict], cfg: dict[str, Any]) -> None:
    """Table 1's reward, held-out P and clamped ED against NFE per particle at the middle
    particle count, ±1 s.e. (the demo's plot, drawn from the benchmark's rows)."""
    from glass_core.digits.config import DemoConfig
    from glass_core.digits.demo import write_plot

    n = cfg["particles"][len(cfg["particles"]) // 2]
    # bench key -> the demo's key for the same method (so both plots colour it alike)
    keys = {
        "flow": "sample_ode",
        "bon_ode": "best_of_n_ode",
        "bon_sde": "best_of_n_sde",
        "bon_glass_04": "best_of_n_glass",
        "bon_unipc": "best_of_n_unipc",
        "bon_sde_dpmpp_2m": "best_of_n_sde_dpmpp",
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


def _glass_split(rho: float | str, solver: str) -> Any:
    """GLASS over the 5 outer steps (the steering tables' split), `solver` inner steps."""
    return lambda n: (TRANSITIONS, transition_for("glass", n, TRANSITIONS, rho=rho, solver=solver))


def _glass_pc_once(n: int) -> tuple[int, Any]:
    # from t = 0 the state is pure noise, so one transition 0 -> 1 does not depend on rho
    return 1, Glass("ddpm", inner_steps=glass_inner_steps("ddpm", n, "pc"))


def sampling_rows(model: Any, solvers: list[str], shifts: tuple[float, ...]) -> list[Row]:
    """The unsteered table's samplers: glass_core's, then the diffusers baselines."""
    rows = ode_sde_rows(model)
    for rho in ("ddpm", 0.4):
        for solver in solvers:
            name = "DDPM" if rho == "ddpm" else rho
            label = f"GLASS (rho={name}, {solver}, 5 transitions)"
            rows.append(chain_row(model, label, _glass_split(rho, solver)))
    rows.append(chain_row(model, "GLASS pc, 1 transition 0 -> 1", _glass_pc_once))
    return rows + baseline_rows(model, list(BASELINES), shifts)


def sampling_table(
    model: Any, cfg: dict[str, Any], solvers: list[str], log: Any
) -> list[dict[str, Any]]:
    reference = load_reference(seed=0, heldout=True)
    noise = torch.randn(cfg["samples"], 1, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = sampling_rows(model, solvers, tuple(cfg["shifts"]))
    return reference.data + measure_rows(rows, cfg["budgets"], noise, 0, reference, log)


def format_sampling(records: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    budgets = cfg["budgets"]
    parts = [
        realism_table(records, budgets, metric, title, higher_is_better=metric == "confidence")
        for metric, title in (
            ("clamped", "Energy distance x100, samples clamped to [-1, 1]"),
            ("features", "Feature energy distance x100 (embedded CNN, standardised)"),
            ("raw", "Energy distance x100, raw samples"),
            ("confidence", "Held-out classifier's mean confidence (max class probability)"),
        )
    ]
    return "\n\n".join([*parts, outside_table(records, budgets)])


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


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(QUICK if args.quick else FULL)
    if args.groups:
        cfg["groups"] = args.groups
    if args.samples:
        cfg["samples"] = args.samples
    if args.budgets:
        cfg["budgets"] = tuple(int(b) for b in args.budgets.split(","))
    if args.particles:
        cfg["particles"] = tuple(int(n) for n in args.particles.split(","))
    if args.shifts:
        cfg["shifts"] = tuple(float(s) for s in args.shifts.split(","))
    return cfg


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced grid (a few minutes)")
    ap.add_argument("--out", type=Path, default=None, help="write paper_tables[_quick].md/json")
    ap.add_argument("--tables", default="fk,sampling,posterior", help="comma-separated subset")
    ap.add_argument(
        "--solvers",
        default=",".join(SAMPLING_SOLVERS),
        help="GLASS inner solvers of the sampling table",
    )
    ap.add_argument("--fk-solver", default=FK_SOLVER, help="GLASS inner solver for the FK table")
    ap.add_argument("--groups", type=int, default=None, help="groups per FK cell")
    ap.add_argument("--samples", type=int, default=None, help="samples per sampling cell")
    ap.add_argument("--budgets", default=None, help="NFE per particle, e.g. 10,20 (all)")
    ap.add_argument("--particles", default=None, help="FK/BoN particle counts, e.g. 4,8 (all)")
    ap.add_argument("--shifts", default=None, help="baseline grid shifts searched, e.g. 1,2")
    ap.add_argument("--methods", default=None, help="FK-table method keys, e.g. fk_sde (all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = _config(args)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]

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
        results["fk_solver"] = args.fk_solver
        parts.append(
            f"### Table 1 in kind: steering toward digit {TARGET}\n\n{cfg['groups']} groups per "
            f"cell; mean ± s.e. over groups; GLASS inner solver: {args.fk_solver}; FK potential "
            f"diff, lambda {LAMBDA:g}, {TRANSITIONS} outer steps; ED to the real {TARGET}s.\n"
            + format_fk(rows, cfg)
        )
    if "sampling" in tables:
        log("Tables 3/4 in kind ...")
        records = sampling_table(model, cfg, args.solvers.split(","), log)
        results["sampling"] = records
        parts.append(
            f"### Tables 3/4 in kind: unsteered samples\n\n{cfg['samples']} samples per row, the "
            f"same noise (seed 0) for every row; reference: a random half (898) of the real "
            f"digits; baselines at their best grid shift of {list(cfg['shifts'])} per NFE (by the "
            f"clamped ED). A measured NFE different from the budget is shown next to the value."
            f"\n\n" + format_sampling(records, cfg)
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
