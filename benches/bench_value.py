"""Posterior sampling and value estimation from a noised real digit (the paper's §6.1, in kind).

Model: the embedded rectified-flow digits model (glass_core.digits.assets). Data: real
scikit-learn digits z (8x8, in [-1, 1]), noised to x_t = alpha_t z + sigma_t eps at
t in {0.05, 0.15, 0.4}. From each x_t we draw posterior samples z' ~ p(x1 | x_t) with GLASS
(one transition t -> 1, K inner steps: Euler as in the paper, and the default pc) or the DDPM
SDE (K Euler-Maruyama steps), at K = NFE per sample in {2, 4, 8, 16}.

Metrics
  energy  squared energy distance (U-statistic, 64-dim pixels) between one posterior sample for
          each of P_ED = 256 noised digits and the other 1541 real digits (held out). Rows "data"
          give the same statistic for the 256 source digits themselves (the floor of any sampler)
          and "reference" for GLASS-Heun with 12 inner steps (23 NFE, close to the model's
          converged posterior). SE: glass_core.metrics' jackknife over the sources (the
          published tables predate it: their SEs are over 8 disjoint blocks of 32 sources).
  corr    Pearson correlation over P_V = 32 noised digits between V-hat_t(x) =
          glass_core.align.value_estimate (J = 8 posterior samples) and a ground-truth V
          (J = 64 samples by GLASS-Heun with 12 inner steps, 23 NFE) for the digit-classifier
          reward r(z) = log p(class = 3 | z). SE: bootstrap over the 32 points (400 resamples).
          The "ceiling" row correlates the ground truth's two halves (32 samples each): how
          well a very accurate 32-sample estimate can agree with itself.

Sizes are small because the benchmark machine is a shared 2-core CPU.

Usage: nice -n 10 python benches/bench_value.py [--out docs/benchmarks] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from glass_core.align import value_estimate
from glass_core.align.value import log_mean_exp
from glass_core.digits.assets import load_default_model, load_default_reward, load_real_digits
from glass_core.metrics import energy_distance
from glass_core.transitions import SDE, Glass

TIMES = (0.05, 0.15, 0.4)
NFES = (2, 4, 8, 16)
REFERENCE = Glass(inner_steps=12, solver="heun")  # 23 NFE at t' = 1


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noised(model, z: torch.Tensor, t: float, seed: int) -> torch.Tensor:
    eps = torch.randn(z.shape, generator=gen(seed))
    return float(model.schedule.alpha(t)) * z + float(model.schedule.sigma(t)) * eps


# "GLASS" is the paper's Euler inner solver (the published §6.1 rows), "GLASS-pc" the default
METHOD_STYLES = {"GLASS": "-o", "GLASS-pc": "-^", "SDE": "--s"}


def methods(nfe: int) -> dict[str, object]:
    return {
        "GLASS": Glass(inner_steps=nfe, solver="euler"),
        "GLASS-pc": Glass(inner_steps=nfe, solver="pc"),
        "SDE": SDE(substeps=nfe),
    }


def energy_rows(model, sources, held_out, t, nfes, seed):
    """{label: (energy, se)} for one posterior sample per source digit, per method and NFE."""
    x = noised(model, sources, t, seed)

    def score(samples: torch.Tensor) -> tuple[float, float]:
        ed = energy_distance(samples, held_out)
        return ed.value, ed.se

    out = {"data": score(sources)}
    with torch.no_grad():
        out["reference"] = score(REFERENCE(model, x, t, 1.0, gen(seed + 1)))
        for nfe in nfes:
            for name, tr in methods(nfe).items():
                out[f"{name}/{nfe}"] = score(tr(model, x, t, 1.0, gen(seed + 2)))  # type: ignore[operator]
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def boot_se(a: np.ndarray, b: np.ndarray, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(reps, a.size))
    return float(np.std([pearson(a[i], b[i]) for i in idx], ddof=1))


def value_rows(model, reward, sources, t, nfes, j, j_gt, seed):
    """{label: (corr, se)} of V-hat against the ground truth, plus the ground truth's ceiling."""
    x = noised(model, sources, t, seed)

    def v(tr, jj, s, mb=None):
        return value_estimate(
            model, reward, x, t, num_samples=jj, transition=tr, generator=gen(s), max_batch=mb
        ).values.numpy()

    gt = value_estimate(
        model,
        reward,
        x,
        t,
        num_samples=j_gt,
        transition=REFERENCE,
        generator=gen(seed + 1),
        max_batch=2048,
    ).rewards
    truth = log_mean_exp(gt).numpy()
    halves = [log_mean_exp(h).numpy() for h in gt.chunk(2, dim=1)]
    out = {"ceiling": (pearson(*halves), boot_se(*halves, 400, seed))}
    out["truth_sd"] = (float(truth.std()), 0.0)
    for nfe in nfes:
        for name, tr in methods(nfe).items():
            est = v(tr, j, seed + 3)
            out[f"{name}/{nfe}"] = (pearson(est, truth), boot_se(est, truth, 400, seed))
    return out


def table(results: dict, key: str, nfes, digits: int) -> list[str]:
    head = "| t | method | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [head, "|---" * (len(nfes) + 2) + "|"]
    for t, rows in results.items():
        for name in METHOD_STYLES:
            cells = [
                f"{rows[f'{name}/{n}'][0]:.{digits}f} ± {rows[f'{name}/{n}'][1]:.{digits}f}"
                for n in nfes
            ]
            lines.append(f"| {t} | {name} | " + " | ".join(cells) + " |")
        extra = ("data", "reference") if key == "energy" else ("ceiling",)
        for e in extra:
            lines.append(
                f"| {t} | {e} | {rows[e][0]:.{digits}f} ± {rows[e][1]:.{digits}f} |"
                + " |" * (len(nfes) - 1)
            )
    return lines


def figure(path: Path, energy: dict, corr: dict, nfes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = dict(zip(energy, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    for ax, res, label in (
        (axes[0], energy, "energy distance to real digits"),
        (axes[1], corr, "corr(V-hat, ground-truth V)"),
    ):
        for t, rows in res.items():
            for name, style in METHOD_STYLES.items():
                m = [rows[f"{name}/{n}"][0] for n in nfes]
                s = [rows[f"{name}/{n}"][1] for n in nfes]
                ax.errorbar(
                    nfes, m, yerr=s, fmt=style, color=colors[t], capsize=3, label=f"{name} t={t}"
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE per posterior sample")
        ax.set_title(label)
    axes[0].set_yscale("symlog", linthresh=1e-2)  # U-statistics can dip below 0 at the floor
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p_ed, p_v, j, j_gt = (256, 32, 8, 64) if not args.quick else (64, 8, 4, 8)
    nfes = NFES if not args.quick else (2, 4)
    model = load_default_model()
    reward = load_default_reward(target=3)
    digits, _ = load_real_digits()
    perm = torch.randperm(digits.shape[0], generator=gen(0))
    sources, held_out = digits[perm[:p_ed]], digits[perm[p_ed:]]
    start = time.perf_counter()
    energy, corr = {}, {}
    for i, t in enumerate(TIMES):
        energy[t] = energy_rows(model, sources, held_out, t, nfes, 1000 * i)
        corr[t] = value_rows(model, reward, sources[:p_v], t, nfes, j, j_gt, 1000 * i + 500)
        print(f"t={t} done at {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start
    lines = [
        "### Energy distance of posterior samples to held-out real digits (lower is better)",
        "",
        *table(energy, "energy", nfes, 4),
        "",
        f"### corr(V-hat, V) for r = log p(3 | z) (J = {j} vs ground truth J = {j_gt})",
        "",
        *table(corr, "corr", nfes, 3),
        "",
        f"Ground-truth V standard deviation across the {p_v} points: "
        + ", ".join(f"t={t}: {rows['truth_sd'][0]:.2f}" for t, rows in corr.items()),
        "",
        f"{platform.machine()}, torch {torch.__version__}, 1 thread, {wall:.0f} s.",
    ]
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "value_table.md").write_text("\n".join(lines) + "\n")
        (args.out / "value.json").write_text(
            json.dumps(
                {
                    "energy": {str(t): r for t, r in energy.items()},
                    "corr": {str(t): r for t, r in corr.items()},
                    "sizes": dict(p_ed=p_ed, p_v=p_v, j=j, j_gt=j_gt),
                    "wall_time_s": wall,
                },
                indent=1,
            )
        )
        figure(args.out / "value.png", energy, corr, nfes)


if __name__ == "__main__":
    main()
