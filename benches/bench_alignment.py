"""Alignment benchmark on the exact tilted Gaussian-mixture target.

Compares, at equal total NFE (particles x NFE per particle), best-of-N with ODE samples, FK
steering with SDE transitions, FK steering with GLASS transitions, FK-GLASS with reward guidance
inside the transitions, and reward guidance alone. Every method spends 16 NFE per particle:
ODE/SDE 16 Euler(-Maruyama) steps, GLASS 4 transitions x 4 inner Euler steps. FK resamples at
t = 0.25, 0.5, 0.75 (the GLASS transition boundaries) with the `diff` potential.

Each configuration is repeated R times (R independent groups in one call). Per repetition the
method returns ONE sample: BoN its best, FK one particle drawn by weight, guidance its sample.
Metrics over the R returned samples:
  reward     mean reward of the returned sample (exact target mean given for reference)
  energy     energy distance (U-statistic) to exact samples of p(z) exp(lambda r(z)) / Z; the
             "exact" row shows the value for R exact samples (the noise floor)
  logZ_rmse  RMSE of the log Z estimate over repetitions (FK: log-evidence; BoN: log-mean-exp of
             lambda r over its N samples, i.e. importance sampling with the ODE as proposal)
Then the bookkeeping overhead: FK-GLASS with N = 1024 particles and a ~1 ms model.

Usage: python benches/bench_alignment.py [--reps 400] [--out docs/benchmarks] [--quick]
(without --out it only prints)
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from glass_core.align import best_of_n, fk_steering, guided, reward_guidance
from glass_core.align._common import CountedModel, propagate
from glass_core.metrics import energy_distance
from glass_core.models import GaussianMixture, from_callable
from glass_core.rewards import QuadraticReward
from glass_core.transitions import ODE, SDE, Glass

MEANS = [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]]
VARS = [0.05, 0.2, 0.1]
WEIGHTS = [0.3, 0.5, 0.2]
REWARD = QuadraticReward([1.0, -1.0], 1.0)
LAMBDA = 2.0
NFE_PER_PARTICLE = 16
GLASS_GRID = np.linspace(0.0, 1.0, 5)  # 4 transitions x 4 inner steps
FINE_GRID = np.linspace(0.0, 1.0, 17)  # 16 ODE / SDE steps
GUIDE_WINDOW = (0.2, 0.7)  # App. D.4


def gmm() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor(MEANS, dtype=torch.float64),
        torch.tensor(VARS, dtype=torch.float64).sqrt(),
        torch.tensor(WEIGHTS, dtype=torch.float64),
    )


class ExactKernel:
    """Reference only: the exact GLASS(rho_DDPM) kernel sampled by the GMM, i.e. what FK-GLASS
    would do with a perfect inner solver. Uses no model calls of its own."""

    def __call__(self, model, x, t, t_next, generator=None, *, denoised=None):
        return model.sample_transition(x, t, t_next, "ddpm", generator)


def gens(reps: int, seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100_003 + r) for r in range(reps)]


def pick_by_weight(samples: torch.Tensor, log_w: torch.Tensor, seed: int) -> torch.Tensor:
    """One particle per group drawn with probability w (a sample of FK's approximate target)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(log_w.exp(), 1, generator=g).squeeze(1)
    return samples[torch.arange(samples.shape[0]), idx]


def run_method(name: str, n: int, reps: int, seed: int):
    """Returns (returned samples [R, 2], log Z estimates [R] or None, NFE per particle)."""
    model = gmm()
    common = dict(
        time_grid=None, shape=(2,), generator=gens(reps, seed), dtype=torch.float64, progress=False
    )
    if name == "BoN-ODE":
        common["time_grid"] = FINE_GRID
        res = best_of_n(model, REWARD, transition=ODE(), num_particles=n, **common)
        log_z = torch.logsumexp(LAMBDA * res.rewards, 1) - math.log(n)
        return res.best(), log_z.numpy(), res.nfe
    if name == "guidance-ODE":
        common["time_grid"] = FINE_GRID
        res = reward_guidance(
            model,
            REWARD,
            transition=ODE(),
            scale=LAMBDA,
            window=GUIDE_WINDOW,
            num_particles=1,
            **common,
        )
        return res.samples[:, 0], None, res.nfe
    fk = dict(num_particles=n, potential="diff", lambda_=LAMBDA, **common)
    if name == "FK-SDE":
        fk.update(time_grid=FINE_GRID, resample_every=4)
        res = fk_steering(model, REWARD, transition=SDE(), **fk)
    elif name == "FK-GLASS":
        fk.update(time_grid=GLASS_GRID)
        res = fk_steering(
            model, REWARD, transition=Glass(rho="ddpm", inner_steps=4, solver="euler"), **fk
        )
    elif name == "FK-exact (ref)":
        fk.update(time_grid=GLASS_GRID)
        res = fk_steering(model, REWARD, transition=ExactKernel(), **fk)
        out = pick_by_weight(res.samples, res.log_weights, seed)
        return out, np.asarray(res.log_evidence), NFE_PER_PARTICLE  # not a model-NFE method
    elif name == "FK-GLASS+grad":
        fk.update(time_grid=GLASS_GRID)
        gm = guided(model, REWARD, LAMBDA, GUIDE_WINDOW)
        res = fk_steering(
            gm, REWARD, transition=Glass(rho="ddpm", inner_steps=4, solver="euler"), **fk
        )
    else:
        raise ValueError(name)
    out = pick_by_weight(res.samples, res.log_weights, seed)
    return out, np.asarray(res.log_evidence), res.nfe


METHODS = ["BoN-ODE", "FK-SDE", "FK-GLASS", "FK-GLASS+grad", "guidance-ODE", "FK-exact (ref)"]


def quality_table(budgets: list[int], reps: int) -> tuple[list[dict], dict]:
    target = gmm().tilted(REWARD.kind, REWARD.params, LAMBDA)
    ref = target.sample(4000, generator=torch.Generator().manual_seed(1))
    # sampling noise of the metric itself: R exact samples, 20 independent draws
    floor = [
        energy_distance(
            target.sample(reps, generator=torch.Generator().manual_seed(100 + i)), ref
        ).value
        for i in range(20)
    ]
    exact = {
        "reward": float(
            REWARD(target.sample(200_000, generator=torch.Generator().manual_seed(3))).mean()
        ),
        "energy": float(np.mean(floor)),
        "energy_sd": float(np.std(floor, ddof=1)),
        "log_z": target.log_normalizer,
    }
    rows = []
    for budget in budgets:
        n = budget // NFE_PER_PARTICLE
        for name in METHODS:
            t0 = time.perf_counter()
            out, log_z, nfe = run_method(name, n, reps, seed=budget)
            assert nfe == NFE_PER_PARTICLE, (name, nfe)
            rows.append(
                {
                    "budget": budget,
                    "method": name,
                    "n": n,
                    "reward": float(REWARD(out).mean()),
                    "reward_se": float(REWARD(out).std() / math.sqrt(reps)),
                    "energy": energy_distance(out, ref).value,
                    "logz_rmse": (
                        float(np.sqrt(np.mean((log_z - exact["log_z"]) ** 2)))
                        if log_z is not None
                        else float("nan")
                    ),
                    "logz_bias": (
                        float(np.mean(log_z) - exact["log_z"])
                        if log_z is not None
                        else float("nan")
                    ),
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(_fmt_row(rows[-1]), flush=True)
    return rows, exact


def _fmt_row(r: dict) -> str:
    return (
        f"| {r['budget']:>5} | {r['method']:<14} | {r['n']:>4} | {r['reward']:+.3f} "
        f"± {r['reward_se']:.3f} | {r['energy']:.4f} | {r['logz_rmse']:.3f} | "
        f"{r['logz_bias']:+.3f} |"
    )


def overhead(num_particles: int = 1024, model_ms: float = 1.0, repeats: int = 5) -> dict:
    """Wall time minus model time for FK-GLASS (paper setting 5 x 10) with a ~1 ms model, and
    the same for the plain GLASS chain (no weighting) to isolate the FK bookkeeping. The run with
    the smallest non-model time is kept (the box is shared; noise only ever adds time)."""
    base = gmm()

    def slow(x, t):
        # exactly ~1 ms per call including the GMM arithmetic (sleep overshoots and would
        # flatter the ratio); the spin is short and only runs 5 x 50 times
        start = time.perf_counter()
        out = 0.5 * x  # stand-in output: the exact GMM alone costs ~2 ms at N = 1024 here
        while time.perf_counter() - start < model_ms / 1000.0:
            pass
        return out

    model = from_callable(slow, prediction="x1", schedule=base.schedule)
    tr = Glass(rho="ddpm", inner_steps=10, solver="euler")
    grid = np.linspace(0.0, 1.0, 6)
    fk_runs, plain_runs = [], []
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        res = fk_steering(
            model,
            REWARD,
            transition=tr,
            num_particles=num_particles,
            time_grid=grid,
            shape=(2,),
            lambda_=LAMBDA,
            generator=g,
            dtype=torch.float64,
            progress=False,
            profile=True,
        )
        fk_runs.append(
            {
                "fk_wall": res.wall_time,
                "fk_model": res.model_time,
                "fk_reward": res.reward_time,
                "fk_nfe": res.nfe,
            }
        )
        cm = CountedModel(model, timed=True)
        x0 = torch.randn(num_particles, 2, dtype=torch.float64, generator=g)
        t0 = time.perf_counter()
        propagate(cm, tr, x0, list(grid), g, False, "")
        plain_runs.append({"plain_wall": time.perf_counter() - t0, "plain_model": cm.model_time})
    b = min(fk_runs, key=lambda d: d["fk_wall"] - d["fk_model"])
    b.update(min(plain_runs, key=lambda d: d["plain_wall"] - d["plain_model"]))
    b["fk_non_model"] = b["fk_wall"] - b["fk_model"]
    b["fk_non_model_reward"] = b["fk_non_model"] - b["fk_reward"]
    b["plain_non_model"] = b["plain_wall"] - b["plain_model"]
    b["fk_bookkeeping"] = b["fk_non_model_reward"] - b["plain_non_model"]
    return b


def verdicts(rows: list[dict], exact: dict) -> list[str]:
    """Per budget: is FK-GLASS best on energy distance (2 sd noise margin) and not worse on
    reward (2 se margin) than every other method? Measured, never tuned."""
    out = []
    noise = 2 * exact["energy_sd"]
    for budget in sorted({r["budget"] for r in rows}):
        rr = {r["method"]: r for r in rows if r["budget"] == budget}
        fk = rr["FK-GLASS"]
        others = [r for m, r in rr.items() if m not in ("FK-GLASS", "FK-exact (ref)")]
        best_other = min(others, key=lambda r: r["energy"])
        if fk["energy"] < best_other["energy"] - noise:
            dist = "best (beyond noise)"
        elif fk["energy"] <= best_other["energy"] + noise:
            dist = f"tied within noise with {best_other['method']}"
        else:
            dist = f"NOT best ({best_other['method']} lower by more than noise)"
        worse = [
            r["method"]
            for r in others
            if fk["reward"] < r["reward"] - 2 * math.hypot(fk["reward_se"], r["reward_se"])
        ]
        rew = "not worse than any" if not worse else "lower than " + ", ".join(worse)
        out.append(f"- NFE {budget}: distance: {dist}; reward: {rew}.")
    return out


def write_markdown(
    path: Path, rows: list[dict], exact: dict, ov: dict, reps: int, png: str | None
) -> None:
    tilted_w = gmm().tilted(REWARD.kind, REWARD.params, LAMBDA).weights
    lines = [
        "# Alignment benchmark (exact tilted Gaussian-mixture target)",
        "",
        "Generated by `python benches/bench_alignment.py`; numbers are measured, not tuned.",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads (shared 2-core box).",
        "",
        f"Model: 3-component GMM in 2-D (docs/math.md §7). Reward: quadratic "
        f"r(z) = -|z - (1, -1)|^2 / 2, lambda = {LAMBDA}. Target p(z) exp(lambda r(z)) / Z, "
        f"log Z = {exact['log_z']:.4f}, component weights "
        f"{[round(float(w), 4) for w in tilted_w]}.",
        f"Every method: {NFE_PER_PARTICLE} NFE per particle (ODE/SDE 16 Euler steps; GLASS 4 "
        "transitions x 4 inner Euler steps, rho = DDPM); FK: `diff` potential, resampling at "
        "t = 0.25/0.5/0.75, weights kept at t = 1; guidance scale = lambda, window [0.2, 0.7].",
        f"R = {reps} repetitions per cell; each returns one sample (BoN: its best; FK: one "
        "particle drawn by weight). `energy` = U-statistic squared energy distance of the R "
        "returned samples to 4000 exact target samples; `logZ` = RMSE / bias of the log Z "
        "estimate (BoN: log-mean-exp of lambda r over its N ODE samples).",
        "",
        f"Exact target: mean reward {exact['reward']:+.3f}; energy distance of {reps} exact "
        f"samples (noise floor) {exact['energy']:+.4f} ± {exact['energy_sd']:.4f} (sd over 20 "
        "draws): energy differences below ~2 sd are noise.",
        "",
        "| NFE total | method | N | reward ± se | energy | logZ RMSE | logZ bias |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_fmt_row(r) for r in rows]
    lines += ["", "## Targets (FK-GLASS best on distance, not worse on reward)", ""]
    lines += verdicts(rows, exact)
    lines += [
        "",
        "Reading the numbers (static notes, the verdicts above are computed):",
        "",
        "- FK methods aim at the tilted target, whose mean reward is the `exact` value above; a",
        "  returned sample with a *higher* mean reward (BoN at large N, guidance, FK-GLASS+grad)",
        "  over-optimises and sits far from the target (large energy distance). The issue's",
        "  'not worse on reward' criterion therefore conflicts with matching the target and is",
        "  reported as measured, not tuned for.",
        "- FK-GLASS here uses only 4 Euler inner steps per transition (16 NFE per particle); its",
        "  small reward deficit vs the exact target is the inner-solver bias (the test suite shows",
        "  the same FK code with exact kernels, or with M = 40, matches the target).",
        "- FK-GLASS+grad uses the guided denoiser inside GLASS without correcting the weights for",
        "  the guidance (as in the paper's FKS-GLASS+grad), so it does not target",
        "  p exp(lambda r) / Z; its log Z estimate is biased accordingly.",
        "- BoN's log Z is importance sampling with ODE samples as the proposal.",
        "- `FK-exact (ref)` is not a competitor: the same FK loop and resampling times with the",
        "  exact GLASS(rho_DDPM) kernel (a perfect inner solver, sampled by the GMM). It shows",
        "  what is achievable with 4 transitions and N particles; e.g. at N = 4 it is itself",
        "  above FK-SDE's distance, so small-N gaps are not an inner-solver artefact.",
    ]
    lines += [
        "",
        "## Bookkeeping overhead",
        "",
        f"FK-GLASS, N = 1024, 5 transitions x 10 inner steps ({ov['fk_nfe']} NFE), "
        "model = a trivial denoiser padded to 1 ms per call (spin), torch 1 thread; least noisy of "
        "5 runs. "
        "Target: wall - model <= 2% of wall.",
        "",
        "| quantity | seconds | share of FK wall time |",
        "|---|---|---|",
    ]
    for key, label in [
        ("fk_wall", "FK wall time"),
        ("fk_model", "model time"),
        ("fk_reward", "reward time"),
        ("fk_non_model", "wall - model (issue's definition: reward + transition + FK)"),
        ("fk_non_model_reward", "wall - model - reward (transition arithmetic + FK)"),
        ("plain_non_model", "plain GLASS chain, wall - model (transition arithmetic)"),
        ("fk_bookkeeping", "FK bookkeeping alone (difference of the two above)"),
    ]:
        lines.append(f"| {label} | {ov[key]:.4f} | {100 * ov[key] / ov['fk_wall']:.2f}% |")
    per_call = ov["fk_model"] / ov["fk_nfe"]
    denom = ov["fk_nfe"] * 1e-3 + ov["fk_non_model"]  # the same run with an exact 1 ms model
    lines += [
        "",
        f"The padded model measured {1e3 * per_call:.2f} ms per call (more than 1 ms means the "
        "spin was preempted on the shared box, diluting the shares above). Normalised to exactly "
        f"1 ms per call: wall - model = {100 * ov['fk_non_model'] / denom:.2f}%, FK bookkeeping "
        f"alone = {100 * ov['fk_bookkeeping'] / denom:.2f}% "
        f"({1e6 * ov['fk_bookkeeping'] / 5:.0f} us per potential step for N = 1024).",
    ]
    if png:
        lines += ["", f"![alignment benchmark]({png})"]
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], exact: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name in METHODS:
        rr = [r for r in rows if r["method"] == name]
        b = [r["budget"] for r in rr]
        axes[0].errorbar(
            b,
            [r["reward"] for r in rr],
            [r["reward_se"] for r in rr],
            label=name,
            marker="o",
            capsize=2,
        )
        axes[1].plot(b, [r["energy"] for r in rr], marker="o", label=name)
        if not math.isnan(rr[0]["logz_rmse"]):
            axes[2].plot(b, [r["logz_rmse"] for r in rr], marker="o", label=name)
    axes[0].axhline(exact["reward"], color="k", ls="--", lw=1, label="exact target")
    lo, hi = exact["energy"] - 2 * exact["energy_sd"], exact["energy"] + 2 * exact["energy_sd"]
    axes[1].axhspan(lo, hi, color="k", alpha=0.15, label="exact samples ± 2 sd")
    for ax, title in zip(
        axes,
        ["mean reward of returned sample", "energy distance to target", "log Z RMSE"],
        strict=True,
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("total NFE")
        ax.set_title(title)
    axes[1].set_yscale("symlog", linthresh=0.01)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--budgets", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--out", type=Path, default=None, help="write alignment.md/.png here")
    ap.add_argument("--quick", action="store_true", help="reps=50, budgets 64 256 (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.budgets = 50, [64, 256]
    torch.set_num_threads(1)
    print("| NFE total | method | N | reward ± se | energy | logZ RMSE | logZ bias |")
    rows, exact = quality_table(args.budgets, args.reps)
    print(
        f"exact: reward {exact['reward']:+.3f}, energy floor {exact['energy']:.4f}, "
        f"log Z {exact['log_z']:.4f}"
    )
    ov = overhead()
    for k, v in ov.items():
        print(
            f"{k:>16}: {v:.4f}"
            + (f"  ({100 * v / ov['fk_wall']:.2f}% of FK wall)" if k != "fk_nfe" else "")
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        png = args.out / "alignment.png"
        plot(rows, exact, png)
        write_markdown(args.out / "alignment.md", rows, exact, ov, args.reps, png.name)
        print(f"wrote {args.out / 'alignment.md'} and {png}")


if __name__ == "__main__":
    main()
