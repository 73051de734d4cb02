"""ODE solvers from noise on the exact Gaussian mixture: glass_core's against diffusers' UniPC and
DPM-Solver++(2M), in one run on the same noise.

Model: the 3-component GMM of docs/math.md §7 (d = 2, rectified flow), whose velocity is exact.
Every solver maps the same P noise draws at t = 0 to t = 1 in n = 2, 4, 8, 16 model evaluations on
the uniform grid: glass_core's ODE Euler and Heun, ODE pc when the library offers it, GLASS pc as
one transition 0 -> 1 (its phi-linear predictor-corrector used as a plain solver), and diffusers'
UniPC (order 2) and DPM-Solver++(2M) (``glass_core.digits.baselines``, flow sigmas, shift 1)
driving the same exact velocity. Metrics:

  rel vs exact    relative moment error max(|mean - m| / sqrt(tr C), |cov - C|_F / |C|_F) against
                  the mixture's exact mean m and covariance C (includes the Monte-Carlo floor,
                  printed as the "exact samples" row);
  rel vs ODE      the same statistic against the moments of the exact ODE's output on the same
                  noise (Heun with 2000 steps), which cancels the Monte-Carlo noise and isolates
                  the discretisation error.

Usage: python benches/bench_ode_solvers.py [--samples 20000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_glass_solvers import gmm, rel_moment_error  # the same mixture and statistic
from glass_core.digits.baselines import FlowNet, sample_baseline
from glass_core.models import GaussianMixture
from glass_core.schedules import RectifiedFlow, uniform_grid
from glass_core.transitions import ODE, Glass, sample

F64 = torch.float64
NFES = (2, 4, 8, 16)


def solvers(model: GaussianMixture) -> dict[str, Callable[[torch.Tensor, int], torch.Tensor]]:
    def chain(make: Callable[[int], Any]) -> Callable[[torch.Tensor, int], torch.Tensor]:
        def run(noise: torch.Tensor, n: int) -> torch.Tensor:
            tr = make(n)
            gen = torch.Generator().manual_seed(1)
            return sample(model, tr, uniform_grid(1), x0=noise.clone(), generator=gen).samples

        return run

    net = FlowNet(model)
    out = {
        "glass_core ODE Euler": chain(lambda n: ODE(substeps=n)),
        "glass_core ODE Heun (n/2 steps)": chain(lambda n: ODE(solver="heun", substeps=n // 2)),
    }
    try:
        ODE(solver="pc")
        out["glass_core ODE pc"] = chain(lambda n: ODE(solver="pc", substeps=n))
    except Exception:  # not offered by this library version
        pass
    out["GLASS pc, 1 transition 0 -> 1"] = chain(lambda n: Glass("ddpm", inner_steps=n))
    out["diffusers UniPC (order 2)"] = lambda noise, n: sample_baseline(net, "unipc", n, noise)
    out["diffusers DPM-Solver++(2M)"] = lambda noise, n: sample_baseline(net, "dpmpp_2m", n, noise)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = gmm(RectifiedFlow())
    m, c = model.mean().to(F64), model.covariance().to(F64)
    noise = torch.randn(args.samples, 2, generator=torch.Generator().manual_seed(args.seed))
    noise = noise.to(F64)
    exact = model.sample(args.samples, generator=torch.Generator().manual_seed(args.seed + 1))
    ref = sample(model, ODE(solver="heun", substeps=2000), uniform_grid(1), x0=noise).samples
    rm, rc = ref.mean(0), torch.cov(ref.T)
    rows: list[dict[str, Any]] = [
        {"solver": "exact samples (Monte-Carlo floor)", "exact": rel_moment_error(exact, m, c)},
        {"solver": "exact ODE (Heun, 2000 steps)", "exact": rel_moment_error(ref, m, c)},
    ]
    for name, run in solvers(model).items():
        row: dict[str, Any] = {"solver": name}
        for n in NFES:
            x = run(noise, n)
            row[f"exact_{n}"] = rel_moment_error(x, m, c)
            row[f"ode_{n}"] = rel_moment_error(x, rm, rc)
        rows.append(row)
    lines = [
        f"# ODE solvers from noise on the exact mixture (d = 2, rectified flow, {args.samples} "
        f"paired noise draws, seed {args.seed}, torch {torch.__version__}, python "
        f"{platform.python_version()}, {time.perf_counter() - start:.0f} s)\n",
        "Relative moment error at n NFE: against the exact ODE on the same noise / against the "
        "mixture's exact moments. Bold: the smallest error against the ODE at that NFE.\n",
        "| solver | " + " | ".join(f"{n} NFE" for n in NFES) + " |",
        "|---|" + "---:|" * len(NFES),
    ]
    solver_rows = [r for r in rows if "exact_2" in r]
    best = {n: min(solver_rows, key=lambda r: r[f"ode_{n}"])["solver"] for n in NFES}
    for r in rows:
        if "exact_2" not in r:
            cells = [f"- / {r['exact']:.4f}"] * len(NFES)
            lines.append(f"| {r['solver']} | " + " | ".join(cells) + " |")
            continue
        cells = []
        for n in NFES:
            text = f"{r[f'ode_{n}']:.4f} / {r[f'exact_{n}']:.4f}"
            cells.append(f"**{text}**" if best[n] == r["solver"] else text)
        lines.append(f"| {r['solver']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ode_solvers.md").write_text(text, encoding="utf-8")
        (args.out / "ode_solvers.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
