"""Does lookahead FK (the value potential) beat plain FK at equal total NFE?

Both run FK steering with GLASS transitions (4 transitions x 4 inner Euler steps = 16 NFE per
particle, resampling at the 3 intermediate boundaries). Plain FK uses the `diff` potential on
r(D_t(x)) (no extra NFE). Lookahead FK uses V-hat_t(x) = log mean_j exp(lambda r(z_j)) over J
posterior samples by Glass(inner_steps=M_l) to t' = 1, costing 3 J (M_l - 1) extra NFE per
particle; plain FK gets proportionally more particles so that both spend the same total NFE per
run (= particles x NFE per particle). Each configuration is repeated R times (R groups in one call).

Targets
  mixture  the exact 3-component Gaussian mixture of docs/math.md §7 tilted by the quadratic reward
           r(z) = -|z - (1, -1)|^2 / 2 with lambda = 2 (as benches/bench_alignment.py), where
           log Z and the tilted mean reward are known exactly. Metrics over R = 200 runs: RMSE of
           log Z-hat, RMSE of the self-normalised mean-reward estimate, mean ESS at the end.
  digits   the embedded digits model tilted by r(z) = log p(3 | z) with lambda = 1 (the class-3
           conditional), no closed form. Metrics over R = 32 runs: the weighted mean reward and
           P(class 3) of the particles, and the standard deviation of log Z-hat across runs (both
           methods are unbiased for Z, so a smaller spread is a better estimator).

Usage: nice -n 10 python benches/bench_lookahead.py [--out docs/benchmarks] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from glass_core.align import Lookahead, fk_steering
from glass_core.models import GaussianMixture
from glass_core.rewards import QuadraticReward
from glass_core.transitions import Glass

GRID = np.linspace(0.0, 1.0, 5)  # 4 transitions
INNER = 4
# lookahead.md was measured with Euler inner steps (then the default): pinned so it reproduces
SOLVER = "euler"
BASE_NFE = 4 * INNER
STEPS = 3  # intermediate potential steps


def gens(reps: int, seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100_003 + r) for r in range(reps)]


def configs(budget_particles: int) -> list[dict]:
    """Plain FK with `budget_particles` particles, and lookahead variants with fewer particles at
    the same total NFE."""
    out = [dict(label="plain FK (diff)", potential="diff", n=budget_particles, extra=0)]
    total = budget_particles * BASE_NFE
    for j, m in ((2, 2), (4, 2), (4, 3)):
        per = BASE_NFE + STEPS * j * (m - 1)
        out.append(
            dict(
                label=f"lookahead J={j}, M_l={m}",
                potential="lookahead",
                n=max(2, round(total / per)),
                extra=STEPS * j * (m - 1),
                j=j,
                m=m,
            )
        )
    return out


def run(model, reward, cfg: dict, lam: float, shape, reps: int, seed: int):
    potential = cfg["potential"]
    if potential == "lookahead":
        potential = Lookahead(cfg["j"], Glass(inner_steps=cfg["m"], solver=SOLVER))
    return fk_steering(
        model,
        reward,
        transition=Glass(inner_steps=INNER, solver=SOLVER),
        num_particles=cfg["n"],
        time_grid=GRID,
        shape=shape,
        potential=potential,
        lambda_=lam,
        generator=gens(reps, seed),
        progress=False,
    )


def rmse_se(err: np.ndarray) -> tuple[float, float]:
    """RMSE and its delta-method standard error."""
    sq = err**2
    rmse = math.sqrt(sq.mean())
    return rmse, float(sq.std(ddof=1) / math.sqrt(sq.size) / (2 * rmse))


def mixture(reps: int, budget: int) -> list[dict]:
    model = GaussianMixture(
        torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]], dtype=torch.float64),
        torch.tensor([0.05, 0.2, 0.1], dtype=torch.float64).sqrt(),
        torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
    )
    reward, lam = QuadraticReward([1.0, -1.0], 1.0), 2.0
    target = model.tilted(reward.kind, reward.params, lam)
    exact_r = float(
        reward(target.sample(400_000, generator=torch.Generator().manual_seed(1))).mean()
    )
    rows = []
    for cfg in configs(budget):
        res = run(model, reward, cfg, lam, (2,), reps, seed=3)
        w = res.log_weights.exp()
        mean_r = (w * reward(res.samples.reshape(-1, 2)).reshape(w.shape)).sum(1).numpy()
        ess = (1.0 / (w**2).sum(1)).numpy() / cfg["n"]
        rows.append(
            dict(
                label=cfg["label"],
                particles=cfg["n"],
                nfe=res.nfe,
                total_nfe=res.nfe * cfg["n"],
                logz=rmse_se(np.asarray(res.log_evidence) - target.log_normalizer),
                reward=rmse_se(mean_r - exact_r),
                ess=float(ess.mean()),
            )
        )
    return rows


def digits(reps: int, budget: int) -> list[dict]:
    from glass_core.digits.assets import load_default_model, load_default_reward

    model, reward = load_default_model(), load_default_reward(target=3)
    rows = []
    for cfg in configs(budget):
        res = run(model, reward, cfg, 1.0, (1, 8, 8), reps, seed=5)
        w = res.log_weights.exp()
        r = res.rewards.to(torch.float64)
        mean_r = (w * r).sum(1).numpy()
        p3 = (w * r.exp()).sum(1).numpy()
        logz = np.asarray(res.log_evidence)
        se = lambda a: float(a.std(ddof=1) / math.sqrt(a.size))  # noqa: E731
        rows.append(
            dict(
                label=cfg["label"],
                particles=cfg["n"],
                nfe=res.nfe,
                total_nfe=res.nfe * cfg["n"],
                reward=(float(mean_r.mean()), se(mean_r)),
                p3=(float(p3.mean()), se(p3)),
                logz_sd=(
                    float(logz.std(ddof=1)),
                    float(logz.std(ddof=1) / math.sqrt(2 * (reps - 1))),
                ),
                logz_mean=(float(logz.mean()), se(logz)),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    mix = mixture(40 if args.quick else 200, 32)
    dig = digits(4 if args.quick else 32, 16 if args.quick else 32)
    wall = time.perf_counter() - start
    lines = [
        "### Exact mixture (quadratic reward, lambda = 2): errors over runs (lower is better)",
        "",
        "| method | particles | NFE/particle | total NFE | log Z RMSE | mean-reward RMSE | ESS/N |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in mix:
        lines.append(
            f"| {r['label']} | {r['particles']} | {r['nfe']} | {r['total_nfe']} | "
            f"{r['logz'][0]:.3f} ± {r['logz'][1]:.3f} | {r['reward'][0]:.3f} ± "
            f"{r['reward'][1]:.3f} | {r['ess']:.2f} |"
        )
    lines += [
        "",
        "### Digits model (r = log p(3 | z), lambda = 1): weighted particles per run",
        "",
        "| method | particles | NFE/particle | total NFE | mean reward | P(class 3) | "
        "sd of log Z-hat | mean log Z-hat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in dig:
        lines.append(
            f"| {r['label']} | {r['particles']} | {r['nfe']} | {r['total_nfe']} | "
            f"{r['reward'][0]:.3f} ± {r['reward'][1]:.3f} | {r['p3'][0]:.3f} ± {r['p3'][1]:.3f} | "
            f"{r['logz_sd'][0]:.3f} ± {r['logz_sd'][1]:.3f} | "
            f"{r['logz_mean'][0]:.3f} ± {r['logz_mean'][1]:.3f} |"
        )
    lines += ["", f"{platform.machine()}, torch {torch.__version__}, 1 thread, {wall:.0f} s."]
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "lookahead_table.md").write_text("\n".join(lines) + "\n")
        (args.out / "lookahead.json").write_text(
            json.dumps({"mixture": mix, "digits": dig, "wall_time_s": wall}, indent=1)
        )


if __name__ == "__main__":
    main()
