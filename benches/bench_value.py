"""Posterior sampling and value estimation from a noised real digit (the paper's §6.1, in kind).

Model: the embedded rectified-flow digits model (glass_core.digits.assets). Data: real
scikit-learn digits z (8x8, in [-1, 1]), noised to x_t = t z + (1 - t) eps at t in
{0.05, 0.15, 0.4}. From each x_t we draw posterior samples z' ~ p(x1 | x_t), at K = NFE per
sample in {2, 4, 8, 16}, with

* glass_core: GLASS (one transition t -> 1, K inner steps: Euler as in the paper, and the
  default pc) and the SDE (K exact ancestral substeps, ending on the denoised estimate);
* diffusers, started at sigma = 1 - t from x_t (``glass_core.digits.baselines``, ``start_time``):
  SDE-DPM-Solver++(2M) and DDPM ancestral, each at its best static grid shift of ``--shifts`` per
  (t, NFE) by the clamped energy distance (the shift is printed and reused for the value rows);
* deterministic rows, energy tables only: glass_core's ODE pc and diffusers' UniPC (order 2) and
  DPM-Solver++(2M). They map each x_t to one point, so they give no posterior (a value estimate
  from J copies of one point is r at that point, not log E exp r); but x_t ~ p_t and the flow maps
  p_t onto the data, so their outputs' distance to real digits is the same marginal test the
  posterior samplers take.

Metrics
  energy  squared energy distance (U-statistic, x100) between one sample for each of P_ED = 256
          noised digits and the other 1541 real digits (held out), three ways
          (glass_core.digits.evidence.score_realism): on the samples clamped to [-1, 1] as a
          pipeline returns them (the headline), in the embedded CNN's standardised feature space,
          and on the raw samples; plus the % of pixels outside [-1.05, 1.05]. Rows "data" score
          the 256 source digits themselves (the floor of any sampler, ~0: the U-statistic is
          unbiased), "data + N(0, 0.15^2)" the same digits with pixel noise (the sanity row: a
          metric that sees leftover noise scores it clearly worse than the data), "reference"
          GLASS-Heun with 12 inner steps (23 NFE). SE: jackknife over the samples.
  corr    Pearson correlation over P_V = 32 noised digits between V-hat_t(x) =
          glass_core.align.value_estimate (J = 8 posterior samples) and a ground-truth V
          (J = 64 samples by GLASS-Heun with 12 inner steps, 23 NFE) for the digit-classifier
          reward r(z) = log p(class = 3 | z). SE: bootstrap over the 32 points (400 resamples).
          The "ceiling" row correlates the ground truth's two halves (32 samples each).

Every sampler at a given t starts from the same x_t and draws its noise from the same seed.
Sizes are small because the benchmark machine is a shared 2-core CPU.

Usage: nice -n 10 python benches/bench_value.py [--out docs/benchmarks] [--quick] [--shifts 1 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from glass_core.align import value_estimate
from glass_core.align.value import log_mean_exp
from glass_core.digits.assets import load_default_model, load_default_reward, load_real_digits
from glass_core.digits.baselines import STOCHASTIC, sample_baseline
from glass_core.digits.evidence import digit_features, score_realism
from glass_core.transitions import ODE, SDE, Glass

TIMES = (0.05, 0.15, 0.4)
NFES = (2, 4, 8, 16)
REFERENCE = Glass(inner_steps=12, solver="heun")  # 23 NFE at t' = 1
#: a sampler from (x_t, t) to 1: (x, t, nfe, flow_shift, generator) -> samples
Sampler = Callable[[torch.Tensor, float, int, float, torch.Generator], torch.Tensor]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noised(model, z: torch.Tensor, t: float, seed: int) -> torch.Tensor:
    eps = torch.randn(z.shape, generator=gen(seed))
    return float(model.schedule.alpha(t)) * z + float(model.schedule.sigma(t)) * eps


def _glass_core(make: Callable[[int], Any]) -> Sampler:
    def run(x, t, nfe, shift, g):
        return make(nfe)(MODEL, x, t, 1.0, g)

    return run


def _diffusers(name: str) -> Sampler:
    def run(x, t, nfe, shift, g):
        g_or_none = g if name in STOCHASTIC else None
        return sample_baseline(
            MODEL.unet, name, nfe, x, flow_shift=shift, generator=g_or_none, start_time=t
        )

    return run


#: label -> (sampler, grid shifts apply, posterior sampler); "GLASS" is the paper's Euler inner
#: solver (the published §6.1 rows), "GLASS-pc" the library's default
ROWS: dict[str, tuple[Sampler, bool, bool]] = {
    "GLASS (Euler)": (_glass_core(lambda n: Glass(inner_steps=n, solver="euler")), False, True),
    "GLASS-pc": (_glass_core(lambda n: Glass(inner_steps=n, solver="pc")), False, True),
    "glass_core SDE": (_glass_core(lambda n: SDE(substeps=n)), False, True),
    "SDE-DPM-Solver++(2M)": (_diffusers("sde_dpmpp_2m"), True, True),
    "DDPM ancestral (diffusers)": (_diffusers("ddpm_ancestral"), True, True),
    "ODE pc (deterministic)": (_glass_core(lambda n: ODE(solver="pc", substeps=n)), False, False),
    "UniPC (deterministic)": (_diffusers("unipc"), True, False),
    "DPM-Solver++(2M) (deterministic)": (_diffusers("dpmpp_2m"), True, False),
}
#: the rows that are not samplers: key -> label
DATA_ROWS = {
    "data": "data",
    "data + N(0, 0.15^2)": "data + N(0, 0.15^2)",
    "reference": "reference (GLASS-Heun, 23 NFE)",
}
POSTERIOR = [label for label, (_, _, post) in ROWS.items() if post]
MODEL: Any = None


def energy_rows(sources, held_out, feats, t, nfes, shifts, seed) -> dict[str, Any]:
    """{label: realism record} for one sample per source digit, per row and NFE (best shift)."""
    x = noised(MODEL, sources, t, seed)

    def score(samples: torch.Tensor, shift: float | None = None) -> dict[str, Any]:
        return {**score_realism(samples, held_out, feats).summary(), "shift": shift}

    noisy = sources + 0.15 * torch.randn(sources.shape, generator=gen(seed + 7))
    out = {"data": score(sources), "data + N(0, 0.15^2)": score(noisy)}
    with torch.no_grad():
        out["reference"] = score(REFERENCE(MODEL, x, t, 1.0, gen(seed + 1)))
        for label, (run, shifted, _) in ROWS.items():
            for nfe in nfes:
                recs = [
                    score(run(x, t, nfe, s, gen(seed + 2)), s if shifted else None)
                    for s in (shifts if shifted else (1.0,))
                ]
                out[f"{label}/{nfe}"] = min(
                    recs, key=lambda r: r["energy_distance_clamped"]["mean"]
                )
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def boot_se(a: np.ndarray, b: np.ndarray, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(reps, a.size))
    return float(np.std([pearson(a[i], b[i]) for i in idx], ddof=1))


def _as_transition(run: Sampler, nfe: int, shift: float) -> Callable[..., torch.Tensor]:
    """A row's sampler as the transition value_estimate calls: (model, x, t, 1, generator)."""

    def transition(model, x, t, t_next, generator=None, denoised=None):
        return run(x, float(t), nfe, shift, generator)

    return transition


def value_rows(reward, sources, t, nfes, j, j_gt, seed, shifts_used) -> dict[str, Any]:
    """{label: (corr, se)} of V-hat against the ground truth, plus the ground truth's ceiling."""
    x = noised(MODEL, sources, t, seed)
    gt = value_estimate(
        MODEL,
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
    out: dict[str, Any] = {"ceiling": (pearson(*halves), boot_se(*halves, 400, seed))}
    out["truth_sd"] = (float(truth.std()), 0.0)
    for label in POSTERIOR:
        for nfe in nfes:
            shift = shifts_used[f"{label}/{nfe}"]["shift"] or 1.0
            tr = _as_transition(ROWS[label][0], nfe, shift)
            est = value_estimate(
                MODEL, reward, x, t, num_samples=j, transition=tr, generator=gen(seed + 3)
            ).values.numpy()
            out[f"{label}/{nfe}"] = (pearson(est, truth), boot_se(est, truth, 400, seed))
    return out


def _cell(mean: float, se: float, scale: float, digits: int) -> str:
    return f"{scale * mean:.{digits}f} ± {scale * se:.{digits}f}"


def energy_table(energy: dict, metric: str, title: str, nfes) -> list[str]:
    """Rows (t, sampler) x NFE of `metric` x100; bold: the strongest posterior sampler."""
    lines = [
        f"**{title}** (x100, ± s.e.; bold: the strongest posterior sampler at that t and NFE)",
        "",
        "| t | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    for t, rows in energy.items():
        best = {n: min(POSTERIOR, key=lambda k: rows[f"{k}/{n}"][metric]["mean"]) for n in nfes}
        for key, label in DATA_ROWS.items():
            r = rows[key][metric]
            blank = " |" * (len(nfes) - 1)
            lines.append(f"| {t} | {label} | {_cell(r['mean'], r['se'], 100, 2)} |" + blank)
        for label in ROWS:
            cells = []
            for n in nfes:
                r = rows[f"{label}/{n}"]
                text = _cell(r[metric]["mean"], r[metric]["se"], 100, 2)
                text = f"**{text}**" if best[n] == label else text
                cells.append(text + (f" (shift {r['shift']:g})" if r["shift"] else ""))
            lines.append(f"| {t} | {label} | " + " | ".join(cells) + " |")
    return lines


def outside_table(energy: dict, nfes) -> list[str]:
    lines = [
        "**% of pixels outside [-1.05, 1.05]** (real digits: 0)",
        "",
        "| t | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    for t, rows in energy.items():
        for label in ROWS:
            cells = [f"{100 * rows[f'{label}/{n}']['outside_fraction']:.2f}" for n in nfes]
            lines.append(f"| {t} | {label} | " + " | ".join(cells) + " |")
    return lines


def corr_table(corr: dict, nfes) -> list[str]:
    """Rows (t, posterior sampler) x NFE of corr(V-hat, V); bold: the highest at that t, NFE."""
    lines = [
        "| t | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    for t, rows in corr.items():
        best = {n: max(POSTERIOR, key=lambda k: rows[f"{k}/{n}"][0]) for n in nfes}
        for label in POSTERIOR:
            cells = [_cell(*rows[f"{label}/{n}"], 1, 3) for n in nfes]
            cells = [
                f"**{c}**" if best[n] == label else c for c, n in zip(cells, nfes, strict=True)
            ]
            lines.append(f"| {t} | {label} | " + " | ".join(cells) + " |")
        blank = " |" * (len(nfes) - 1)
        lines.append(f"| {t} | ceiling | {_cell(*rows['ceiling'], 1, 3)} |" + blank)
    return lines


def figure(path: Path, energy: dict, corr: dict, nfes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(energy), figsize=(4 * len(energy), 7), squeeze=False)
    for col, t in enumerate(energy):
        for label in POSTERIOR:
            ed = [energy[t][f"{label}/{n}"]["energy_distance_clamped"] for n in nfes]
            axes[0, col].errorbar(
                nfes, [100 * e["mean"] for e in ed], yerr=[100 * e["se"] for e in ed],
                fmt="-o", capsize=3, label=label,
            )  # fmt: skip
            c = [corr[t][f"{label}/{n}"] for n in nfes]
            axes[1, col].errorbar(
                nfes, [m for m, _ in c], yerr=[s for _, s in c], fmt="-o", capsize=3, label=label
            )
        axes[0, col].axhline(100 * energy[t]["data"]["energy_distance_clamped"]["mean"], ls=":")
        axes[1, col].axhline(corr[t]["ceiling"][0], ls=":", color="gray")
        axes[0, col].set_yscale("symlog", linthresh=1.0)  # U-statistics dip below 0 at the floor
        axes[0, col].set_title(f"t = {t}: energy distance x100 (clamped)")
        axes[1, col].set_title(f"t = {t}: corr(V-hat, V)")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("NFE per posterior sample")
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(energy: dict, corr: dict, nfes, sizes: dict, wall: float) -> list[str]:
    """The markdown tables of one run."""
    lines = []
    for metric, title in (
        ("energy_distance_clamped", "Energy distance, samples clamped to [-1, 1]"),
        ("feature_distance", "Feature energy distance (embedded CNN, standardised)"),
        ("energy_distance", "Energy distance, raw samples"),
    ):
        lines += ["### " + title, "", *energy_table(energy, metric, title, nfes), ""]
    lines += ["### Pixels outside the data range", "", *outside_table(energy, nfes), ""]
    lines += [
        f"### corr(V-hat, V) for r = log p(3 | z) (J = {sizes['j']} vs ground truth "
        f"J = {sizes['j_gt']}; bold: the highest at that t and NFE)",
        "",
        *corr_table(corr, nfes),
        "",
        f"Ground-truth V standard deviation across the {sizes['p_v']} points: "
        + ", ".join(f"t={t}: {rows['truth_sd'][0]:.2f}" for t, rows in corr.items()),
        "",
        f"{platform.machine()}, torch {torch.__version__}, 1 thread, shifts searched "
        f"{sizes['shifts']}, {wall:.0f} s.",
    ]
    return lines


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--shifts", type=float, nargs="+", default=[1.0, 3.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    p_ed, p_v, j, j_gt = (256, 32, 8, 64) if not args.quick else (64, 8, 4, 8)
    nfes = NFES if not args.quick else (2, 4)
    sizes = dict(p_ed=p_ed, p_v=p_v, j=j, j_gt=j_gt, shifts=args.shifts)
    MODEL = load_default_model()
    reward = load_default_reward(target=3)
    feats = digit_features(reward.classifier)
    digits, _ = load_real_digits()
    perm = torch.randperm(digits.shape[0], generator=gen(0))
    sources, held_out = digits[perm[:p_ed]], digits[perm[p_ed:]]
    start = time.perf_counter()
    energy, corr = {}, {}
    for i, t in enumerate(TIMES):
        energy[t] = energy_rows(sources, held_out, feats, t, nfes, args.shifts, 1000 * i)
        print(f"t={t} energy done at {time.perf_counter() - start:.0f} s", flush=True)
        corr[t] = value_rows(reward, sources[:p_v], t, nfes, j, j_gt, 1000 * i + 500, energy[t])
        print(f"t={t} done at {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start
    lines = report(energy, corr, nfes, sizes, wall)
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "value_table.md").write_text("\n".join(lines) + "\n")
        payload = {
            "energy": {str(t): r for t, r in energy.items()},
            "corr": {str(t): r for t, r in corr.items()},
            "sizes": sizes,
            "wall_time_s": wall,
        }
        (args.out / "value.json").write_text(json.dumps(payload, indent=1))
        figure(args.out / "value.png", energy, corr, nfes)


if __name__ == "__main__":
    main()
