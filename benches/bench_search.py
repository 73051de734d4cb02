"""Tempered SMC, twisted FK, value decoding and beam search against FK and best-of-N.

Table 1, the exact Gaussian mixture (docs/math.md §7) with the linear reward r(z) = a.z, a =
(1, 0.5): the tilted target p(z) exp(lambda r(z)) / Z is a Gaussian mixture in closed form
(GaussianMixture.tilted). FK steering, tempered SMC and twisted FK, each at 20 NFE per particle
over 5 uniform outer steps (GLASS: Glass(inner_steps=4), the library's default solver; SDE: 4
exact ancestral substeps per outer step), G groups of N particles in one call. Columns, mean ±
standard error over the G groups: the error of the weighted mean reward and of log Z against the
closed form, and the mean ESS / N after reweighting at the interior steps.

Table 2, the embedded digits model (target digit 3, reward log p(3 | image) under the embedded
CNN, lambda = 4, 5 uniform outer steps, 20 NFE per particle-step budget): every method spends
about the same model evaluations per group (the measured total is printed), and returns per group
its highest-reward sample. Columns, mean ± standard error over the G groups: the reward,
held-out P(target) (a logistic regression on the real digits, never seen by the steering) and
the energy distance (x100, jackknife s.e.) of the returned samples to the real 3s (realism,
lower is better). Twisted FK needs a Gaussian kernel: with GLASS it is refused by design.

Table 3 (--posterior, a separate run with the same setup): value decoding scored by the
Monte-Carlo posterior value (J = 2 posterior samples per candidate, 2 NFE each, drawn by SDE or
GLASS like the row's transitions) instead of r(D_t(x)).

One run per table (one seed), CPU. Usage:
python benches/bench_search.py [--quick] [--groups G] [--posterior] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from glass_core.align import beam_search, best_of_n, fk_steering, tempered_smc, value_decoding
from glass_core.digits.assets import load_default_model
from glass_core.digits.evidence import Judges, load_judges, transition_for
from glass_core.metrics import Estimate, energy_distance, mean_se
from glass_core.models import GaussianMixture
from glass_core.rewards import LinearReward
from glass_core.schedules import uniform_grid

MEANS = [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]]
VARS = [0.05, 0.2, 0.1]
WEIGHTS = [0.3, 0.5, 0.2]
A = torch.tensor([1.0, 0.5], dtype=torch.float64)
TRANSITIONS = 5
NFE = 20  # per particle, over the 5 outer steps
TARGET, DIGITS_LAMBDA = 3, 4.0


def gmm() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor(MEANS, dtype=torch.float64),
        torch.tensor(VARS, dtype=torch.float64).sqrt(),
        torch.tensor(WEIGHTS, dtype=torch.float64),
    )


def gens(groups: int, seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100_003 + g) for g in range(groups)]


def pm(e: Estimate, scale: float = 1.0, digits: int = 3) -> str:
    return f"{e.value * scale:.{digits}f} ± {e.se * scale:.{digits}f}"


# -- Table 1 --------------------------------------------------------------------------------------


def mixture_table(groups: int, particles: int, lambdas: list[float]) -> str:
    model, reward = gmm(), LinearReward(A)
    rows = [
        ("FK", "glass", fk_steering, {}),
        ("tempered SMC", "glass", tempered_smc, {}),
        ("FK", "sde", fk_steering, {}),
        ("tempered SMC", "sde", tempered_smc, {}),
        ("twisted FK", "sde", fk_steering, {"proposal": "twisted"}),
    ]
    lines = [
        f"G = {groups} groups x N = {particles} particles, {NFE} NFE per particle, "
        f"{TRANSITIONS} outer steps",
        "",
        "| lambda | method | transition | mean-reward error | log Z error | ESS / N (interior) |"
        " s |",
        "|---|---|---|---|---|---|---|",
    ]
    for lam in lambdas:
        target = model.tilted(reward.kind, reward.params, lam)
        exact_mean = float(target.mean() @ A)
        for label, kernel, fn, extra in rows:
            start = time.perf_counter()
            res = fn(
                model, reward, transition=transition_for(kernel, NFE, TRANSITIONS, rho="ddpm"),
                num_particles=particles, time_grid=uniform_grid(TRANSITIONS), shape=(2,),
                lambda_=lam, generator=gens(groups, 1), progress=False, **extra,
            )  # fmt: skip
            wall = time.perf_counter() - start
            est = (res.log_weights.exp() * res.rewards.double()).sum(1)
            mean_err = mean_se(est - exact_mean)
            z_err = mean_se(torch.as_tensor(res.log_evidence) - target.log_normalizer)
            ess = mean_se(torch.as_tensor(res.ess_history[:-1].mean(0)) / particles)
            lines.append(
                f"| {lam:g} | {label} | {kernel.upper()} | {pm(mean_err)} | {pm(z_err)} | "
                f"{pm(ess, digits=2)} | {wall:.1f} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


# -- Table 2 --------------------------------------------------------------------------------------


def digits_methods(particles: int) -> list[tuple[str, str, Callable[..., Any], dict[str, Any]]]:
    """(label, kernel, algorithm, its own arguments) at about `particles` x NFE per group:
    value decoding spends M candidates per particle, so it runs particles / M chains."""
    m = 4
    chains = max(1, particles // m)
    rows: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []
    for kernel in ("sde", "glass"):
        rows += [
            ("BoN", kernel, best_of_n, {"num_particles": particles}),
            ("FK", kernel, fk_steering, {"num_particles": particles, "lambda_": DIGITS_LAMBDA}),
            (
                "tempered SMC",
                kernel,
                tempered_smc,
                {"num_particles": particles, "lambda_": DIGITS_LAMBDA},
            ),
        ]
        if kernel == "sde":
            rows.append(
                (
                    "twisted FK",
                    kernel,
                    fk_steering,
                    {"num_particles": particles, "lambda_": DIGITS_LAMBDA, "proposal": "twisted"},
                )
            )
        rows += [
            (
                f"value decoding (M={m})",
                kernel,
                value_decoding,
                {"num_particles": chains, "num_candidates": m},
            ),
            (
                f"beam search (B={chains}, M={m})",
                kernel,
                beam_search,
                {"beam_width": chains, "num_candidates": m},
            ),
        ]
    return rows


def digits_row(model: Any, judges: Judges, method: Any, groups: int) -> tuple[str, dict]:
    label, kernel, fn, extra = method
    transition = transition_for(kernel, NFE, TRANSITIONS, rho=0.4 if kernel == "glass" else None)
    start = time.perf_counter()
    res = fn(
        model, judges.reward, transition=transition, time_grid=uniform_grid(TRANSITIONS),
        shape=(1, 8, 8), generator=gens(groups, 2), progress=False, **extra,
    )  # fmt: skip
    wall = time.perf_counter() - start
    idx = res.rewards.argmax(dim=-1)
    rows = torch.arange(groups)
    samples = res.samples[rows, idx].detach()
    n = res.samples.shape[1]
    return label, {
        "kernel": kernel.upper(),
        "nfe_group": res.nfe * n,
        "reward": mean_se(res.rewards[rows, idx]),
        "heldout": mean_se(judges.heldout.probs(samples)[:, judges.target]),
        "ed": energy_distance(samples, judges.real),
        "wall": wall,
    }


def posterior_methods(particles: int) -> list[tuple[str, str, Callable[..., Any], dict[str, Any]]]:
    """Value decoding with the Monte-Carlo posterior value (J = 2 samples at 2 NFE each, drawn
    by the row's own transition family): about 4 + 2 x 2 NFE per candidate and step, so one chain of
    M = 6 candidates spends about the budget of the other rows (the measured NFE is printed)."""
    from glass_core.transitions import SDE, Glass

    m, chains = 6, max(1, particles // 8)
    value_transitions = {"sde": SDE(substeps=2), "glass": Glass(0.4, inner_steps=2, solver="euler")}
    return [
        (
            f"value decoding (M={m}, posterior value J=2)",
            kernel,
            value_decoding,
            {
                "num_particles": chains,
                "num_candidates": m,
                "value": "posterior",
                "value_samples": 2,
                "value_transition": value_transitions[kernel],
            },
        )
        for kernel in ("sde", "glass")
    ]


def digits_table(groups: int, particles: int, posterior: bool = False) -> str:
    model = load_default_model()
    judges = load_judges(TARGET)
    methods = posterior_methods(particles) if posterior else digits_methods(particles)
    lines = [
        f"G = {groups} groups, budget {particles} particles x {NFE} NFE per group "
        f"(measured below), lambda = {DIGITS_LAMBDA:g}, GLASS rho = 0.4",
        "",
        "| method | transition | NFE / group | reward | held-out P(3) | ED x100 | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        label, r = digits_row(model, judges, method, groups)
        lines.append(
            f"| {label} | {r['kernel']} | {r['nfe_group']} | {pm(r['reward'])} | "
            f"{pm(r['heldout'])} | {pm(r['ed'], 100, 2)} | {r['wall']:.1f} |"
        )
        print(lines[-1], flush=True)
    if not posterior:
        lines.append("| twisted FK | GLASS | refused: no kernel density (use guide=True) | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--groups", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write <out>/search_tables.md")
    parser.add_argument(
        "--posterior",
        action="store_true",
        help="only the posterior-value rows (Table 3; writes <out>/search_posterior.md)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick = args.quick
    g1, n1 = (2, 200) if quick else (8, 2500)
    g2, n2 = (4, 4) if quick else (args.groups or 48, 8)
    start = time.perf_counter()
    env = f"{platform.python_version()}, torch {torch.__version__}, 1 thread, CPU"
    if args.posterior:
        t3 = digits_table(g2, n2, posterior=True)
        text = f"## Table 3: value decoding with the posterior value\n\n{t3}\n\n({env}; total "
        text += f"{time.perf_counter() - start:.0f} s)\n"
        print(text)
        if args.out is not None:
            (args.out / "search_posterior.md").write_text(text)
        return
    t1 = mixture_table(g1, n1, [1.0] if quick else [1.0, 4.0])
    t2 = digits_table(g2, n2)
    text = (
        "### Table 1: exact mixture, linear reward\n\n" + t1
        + "\n\n### Table 2: embedded digits model\n\n" + t2
        + f"\n\n({env}; total {time.perf_counter() - start:.0f} s)\n"
    )  # fmt: skip
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "search_tables.md").write_text(text)


if __name__ == "__main__":
    main()
