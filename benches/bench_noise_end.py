"""Final-moment errors of every sampler started at t = 0 (pure noise), per schedule and model kind.

Data: the 3-component mixture of docs/math.md §7 (exact mean and covariance known). For rectified
flow, cosine and SD's scaled-linear VP table (``VP.from_betas(0.00085, 0.012, 1000,
"scaled_linear")``), with the exact x1 denoiser and the same denoiser wrapped as an epsilon model
(``from_callable(prediction="epsilon")``), draw N samples from N(0, I) at t = 0 and run each sampler
over ``uniform_grid(n, 0, 1)`` (and, for the VP table, over the 10-step grid ``default_time_grid``
gives an SD pipeline: DDIM nodes after t = 0). Errors: mean |m - m*| / sqrt(tr C*), covariance
||C - C*||_F / ||C*||_F. "raises" means the sampler refused to start at t = 0. The noise floor is
the same statistic on N exact mixture draws (mean over 5 seeds). Also printed: the state's std
after the SDE's first step from t = 0 next to the exact marginal std at that time.

With ``--baseline DIR`` the same measurements are taken with ``PYTHONPATH=DIR`` (e.g. a checkout
of the code before a change) in a subprocess and printed side by side.

Usage: python benches/bench_noise_end.py [--samples 20000] [--baseline DIR] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

F64 = torch.float64
MEANS = [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]]
VARS = [0.05, 0.2, 0.1]
WEIGHTS = [0.3, 0.5, 0.2]


def measure(samples: int) -> dict:
    from glass_core.models import GaussianMixture, from_callable
    from glass_core.schedules import VP, Cosine, RectifiedFlow
    from glass_core.transitions import ODE, SDE, Glass, sample

    torch.set_num_threads(1)
    schedules = {
        "rectified flow": RectifiedFlow(),
        "cosine": Cosine(),
        "SD VP table": VP.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
    }
    samplers = {
        "ODE Euler x50": (lambda: ODE(), 50),
        "ODE Heun x25": (lambda: ODE("heun"), 25),
        "SDE x50": (lambda: SDE(), 50),
        "SDE x10": (lambda: SDE(), 10),
        "GLASS ddpm K=2 x25": (lambda: Glass("ddpm", inner_steps=2, solver="euler"), 25),
        "GLASS 0.4 K=5 x10": (lambda: Glass(0.4, inner_steps=5, solver="euler"), 10),
        "GLASS ddpm heun K=5 x5": (lambda: Glass("ddpm", inner_steps=5, solver="heun"), 5),
        "ODE Euler DDIM grid x10": (lambda: ODE(), "ddim10"),
    }
    out: dict = {"rows": {}, "first_step": {}, "floor": None}
    for sname, sched in schedules.items():
        gmm = GaussianMixture(
            torch.tensor(MEANS, dtype=F64),
            torch.tensor(VARS, dtype=F64).sqrt(),
            torch.tensor(WEIGHTS, dtype=F64),
            sched,
        )
        m_true, c_true = gmm.mean().to(F64), gmm.covariance().to(F64)
        eps = from_callable(
            lambda x, t, g=gmm: g.epsilon(x, t), prediction="epsilon", schedule=sched
        )
        if out["floor"] is None:
            floors = [
                errors(gmm.sample(samples, torch.Generator().manual_seed(s)), m_true, c_true)
                for s in range(5)
            ]
            out["floor"] = [
                float(np.mean([f[0] for f in floors])),
                float(np.mean([f[1] for f in floors])),
            ]
        for pname, model in (("x1", gmm), ("epsilon", eps)):
            for tname, (make, n) in samplers.items():
                if n == "ddim10" and sched.kind != "vp":
                    continue
                key = f"{sname} | {pname} | {tname}"
                try:
                    res = sample(
                        model,
                        make(),
                        grid(n),
                        shape=(samples, 2),
                        generator=torch.Generator().manual_seed(0),
                        dtype=F64,
                    )
                    out["rows"][key] = list(errors(res.samples, m_true, c_true))
                except Exception as e:  # the "before" code refuses some starts at t = 0
                    out["rows"][key] = f"raises {type(e).__name__}"
        for n in (10, 50, 200):
            t1 = 1.0 / n
            big = 10 * samples  # one step only: a tighter std estimate is cheap
            x0 = torch.randn(big, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
            x1 = SDE()(gmm, x0, 0.0, t1, torch.Generator().manual_seed(2))
            exact = gmm.sample_marginal(big, t1, torch.Generator().manual_seed(3))
            out["first_step"][f"{sname} | {n}"] = [
                float(x1.std(0).mean()),
                float(exact.std(0).mean()),
            ]
    return out


def grid(n: int | str) -> np.ndarray:
    """uniform_grid(n, 0, 1), or "ddim10": the grid ``default_time_grid`` gives an SD pipeline
    for 10 steps (DDIM "leading" timesteps 901, 801, ..., 1 at node times 1 - (k+1)/1001, the
    first replaced by pure noise t = 0 and the last by t = 1)."""
    from glass_core.schedules import uniform_grid

    if n == "ddim10":
        ks = np.arange(901, 0, -100)
        return np.concatenate([[0.0], 1.0 - (ks[1:] + 1.0) / 1001.0, [1.0]])
    return np.asarray(uniform_grid(int(n), 0.0, 1.0))


def errors(z: torch.Tensor, m_true: torch.Tensor, c_true: torch.Tensor) -> tuple[float, float]:
    z = z.to(F64)
    m, c = z.mean(0), torch.cov(z.T)
    return (
        float((m - m_true).norm() / c_true.trace().sqrt()),
        float((c - c_true).norm() / c_true.norm()),
    )


def cell(v) -> str:
    return v if isinstance(v, str) else f"{v[0]:.4f} / {v[1]:.4f}"


def table(after: dict, before: dict | None) -> str:
    lines = []
    head = "| schedule | model | sampler | " + ("before: mean / cov | " if before else "")
    lines.append(head + "after: mean / cov |")
    lines.append("|" + "---|" * (4 + (1 if before else 0)))
    for key, v in after["rows"].items():
        s, p, t = key.split(" | ")
        b = f"{cell(before['rows'].get(key, 'n/a'))} | " if before else ""
        lines.append(f"| {s} | {p} | {t} | {b}{cell(v)} |")
    f = after["floor"]
    lines.append("")
    lines.append(f"Noise floor (exact draws, same N): mean {f[0]:.4f}, covariance {f[1]:.4f}.")
    lines.append("")
    lines.append(
        "| SDE first step 0 -> 1/n: schedule | n | "
        + ("before: std | " if before else "")
        + "after: std | exact std |"
    )
    lines.append("|" + "---|" * (4 + (1 if before else 0)))
    for key, (std, exact) in after["first_step"].items():
        b = f"{before['first_step'][key][0]:.3f} | " if before else ""
        lines.append(f"| {key} | {b}{std:.3f} | {exact:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--baseline", type=Path, default=None, help="PYTHONPATH of the 'before' code")
    ap.add_argument("--json", action="store_true", help="print the raw measurements as JSON")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure(args.samples)))
        return
    before = None
    if args.baseline is not None:
        env = dict(os.environ, PYTHONPATH=str(args.baseline))
        cmd = [sys.executable, __file__, "--json", "--samples", str(args.samples)]
        before = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)
    text = table(measure(args.samples), before)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
