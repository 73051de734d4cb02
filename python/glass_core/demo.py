"""`glass-core demo`: best-of-N (ODE) vs FK steering (SDE) vs FK steering (GLASS) at equal NFE.

Runs on the embedded default model (a tiny rectified-flow UNet on 8x8 digits) and reward
(log p(digit = target | image) under a small classifier), both shipped as package data. Every
method spends the same number of network evaluations per particle (``nfe``) and the same number of
particles per group; FK steering resamples at the same times (the GLASS transition boundaries) for
SDE and GLASS. ``groups`` independent runs (B groups x N particles, one batched call) give the
averages in the table. Outputs: a markdown table (printed), ``results.json``, ``demo_grid.png``
(rows: method; unsteered samples of the same transition beside steered outputs) and
``reward_vs_nfe.png`` (mean output reward against total NFE per group, varying N).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glass_core.demo_config import REWARD_KINDS, DemoConfig

__all__ = ["DemoConfig", "format_table", "run_demo"]

METHODS: tuple[str, ...] = ("best_of_n_ode", "fk_sde", "fk_glass")
LABELS: dict[str, str] = {
    "sample_ode": "no steering (ODE)",
    "best_of_n_ode": "best-of-N (ODE)",
    "fk_sde": "FK steering (SDE)",
    "fk_glass": "FK steering (GLASS)",
}


class _TimedReward:
    """Wraps a reward callable and accumulates the seconds spent in it."""

    def __init__(self, reward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.reward = reward
        self.seconds = 0.0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.reward(z)
        self.seconds += time.perf_counter() - start
        return out


@dataclass
class MethodRun:
    """One method at one particle count: the steered outputs and accounting."""

    key: str
    particles: int
    outputs: torch.Tensor  # [B, 1, 8, 8], one returned sample per group
    output_rewards: torch.Tensor  # [B]
    particle_mean_reward: float  # reward averaged over all final particles (weighted for FK)
    nfe_per_particle: int
    total_nfe_per_group: int
    wall: float
    model_time: float
    reward_time: float
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, target_prob: float) -> dict[str, Any]:
        r = self.output_rewards.double()
        return {
            "method": LABELS[self.key],
            "key": self.key,
            "particles": self.particles,
            "nfe_per_particle": self.nfe_per_particle,
            "total_nfe_per_group": self.total_nfe_per_group,
            "mean_reward": float(r.mean()),
            "mean_reward_se": float(r.std() / math.sqrt(r.numel())) if r.numel() > 1 else 0.0,
            "max_reward": float(r.max()),
            "mean_reward_all_particles": self.particle_mean_reward,
            "frac_target": target_prob,
            "wall_s": self.wall,
            "model_s": self.model_time,
            "reward_s": self.reward_time,
            "bookkeeping_s": max(self.wall - self.model_time - self.reward_time, 0.0),
            **self.extra,
        }


def _transitions(cfg: DemoConfig) -> dict[str, tuple[Any, np.ndarray, int | None]]:
    """method key -> (transition, time grid, resample_every) with equal NFE per particle."""
    from glass_core.schedules import uniform_grid
    from glass_core.transitions import ODE, SDE, Glass

    rho: float | str = cfg.glass_rho if cfg.glass_rho == "ddpm" else float(cfg.glass_rho)
    inner = cfg.nfe // cfg.glass_transitions
    fine = uniform_grid(cfg.nfe)
    return {
        "sample_ode": (ODE(solver="euler"), fine, None),
        "best_of_n_ode": (ODE(solver="euler"), fine, None),
        # SDE potentials/resampling at the GLASS boundaries: every `inner` fine steps.
        "fk_sde": (SDE(), fine, inner),
        "fk_glass": (Glass(rho=rho, inner_steps=inner), uniform_grid(cfg.glass_transitions), None),
    }


def _run_method(
    key: str,
    model: Any,
    reward: _TimedReward,
    cfg: DemoConfig,
    particles: int,
    progress: bool,
) -> MethodRun:
    from glass_core.align import best_of_n, fk_steering

    transition, grid, every = _transitions(cfg)[key]
    gen = torch.Generator().manual_seed(cfg.seed)  # same initial noise for every method
    shape = (1, 8, 8)
    model.stats.reset()
    reward.seconds = 0.0
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if key in ("sample_ode", "best_of_n_ode"):
        n = 1 if key == "sample_ode" else particles
        res = best_of_n(
            model,
            reward,
            transition=transition,
            n=n,
            time_grid=grid,
            shape=shape,
            generator=gen,
            num_groups=cfg.groups,
            max_batch=cfg.max_batch,
            progress=progress,
        )
        outputs, out_r = res.best, res.best_reward
        mean_all = float(res.rewards.double().mean())
        nfe = int(res.nfe)
    else:
        fk = fk_steering(
            model,
            reward,
            transition=transition,
            num_particles=particles,
            time_grid=grid,
            shape=shape,
            potential=cfg.potential,
            lambda_=cfg.lambda_,
            resample_every=every,
            generator=gen,
            num_groups=cfg.groups,
            max_batch=cfg.max_batch,
            progress=progress,
        )
        idx = fk.rewards.argmax(dim=-1)
        rows = torch.arange(cfg.groups)
        outputs, out_r = fk.samples[rows, idx], fk.rewards[rows, idx]
        w = fk.log_weights.exp()
        mean_all = float((w * fk.rewards.double()).sum(-1).mean())
        nfe = int(fk.nfe)
        extra["log_evidence_mean"] = float(np.mean(fk.log_evidence))
        extra["mean_final_ess"] = float(np.mean(np.asarray(fk.ess_history)[-1]))
    wall = time.perf_counter() - start
    return MethodRun(
        key=key,
        particles=1 if key == "sample_ode" else particles,
        outputs=outputs.detach(),
        output_rewards=out_r.detach().float(),
        particle_mean_reward=mean_all,
        nfe_per_particle=nfe,
        total_nfe_per_group=nfe * (1 if key == "sample_ode" else particles),
        wall=wall,
        model_time=model.stats.seconds,
        reward_time=reward.seconds,
        extra=extra,
    )


def _unsteered(key: str, model: Any, cfg: DemoConfig, count: int) -> torch.Tensor:
    """Plain samples of the method's own transition (what steering starts from)."""
    from glass_core.transitions import sample

    transition, grid, _ = _transitions(cfg)[key]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    x0 = torch.randn((count, 1, 8, 8), generator=gen)
    with torch.no_grad():
        return sample(model, transition, grid, x0=x0, generator=gen).samples


def _target_prob(reward: Any, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((reward.logits(x).argmax(-1) == reward.target).float().mean())


# ---------------------------------------------------------------------------------------------
# outputs


def format_table(rows: Sequence[dict[str, Any]], cfg: DemoConfig) -> str:
    """Markdown table of the main comparison."""
    head = (
        "| method | particles N | NFE / particle | total NFE / group | mean reward | max reward "
        "| mean reward, all particles | P(digit = target) | wall s | model s | reward s "
        "| bookkeeping s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['method']} | {r['particles']} | {r['nfe_per_particle']} | "
        f"{r['total_nfe_per_group']} | {r['mean_reward']:.3f} ± {r['mean_reward_se']:.3f} | "
        f"{r['max_reward']:.3f} | "
        f"{r['mean_reward_all_particles']:.3f} | {r['frac_target']:.2f} | {r['wall_s']:.2f} | "
        f"{r['model_s']:.2f} | {r['reward_s']:.2f} | {r['bookkeeping_s']:.2f} |\n"
        for r in rows
    )
    note = (
        f"\nReward r = {REWARD_KINDS[cfg.reward_kind].format(t=cfg.target)}; {cfg.groups} "
        f"independent groups (seed {cfg.seed}); 'mean (± standard error) / max reward' are "
        f"over the one sample each group returns (best-of-N: the best; FK: the highest-reward "
        f"final particle); "
        f"'all particles' is the (importance-weighted for FK) mean over every final particle. "
        f"FK: potential {cfg.potential}, lambda {cfg.lambda_:g}, resampling at the "
        f"{cfg.glass_transitions} GLASS boundaries; GLASS: rho {cfg.glass_rho}, "
        f"{cfg.glass_transitions} transitions x {cfg.nfe // cfg.glass_transitions} inner Euler "
        f"steps. 'bookkeeping' = wall - model - reward.\n"
    )
    return head + body + note


def _to_img(x: torch.Tensor) -> np.ndarray:
    """[K, 1, 8, 8] in [-1, 1] -> [8, 8*K + gaps] in [0, 1] with 1-pixel gaps."""
    imgs = ((x.detach().float().clamp(-1, 1) + 1) / 2).squeeze(1).numpy()
    k = imgs.shape[0]
    strip = np.ones((8, k * 9 - 1), dtype=np.float64) * 0.0
    for i in range(k):
        strip[:, i * 9 : i * 9 + 8] = imgs[i]
    return strip


def write_grid(path: Path, rows: list[tuple[str, torch.Tensor, torch.Tensor]], target: int) -> None:
    """Image grid: one row per method, unsteered samples (left) beside steered outputs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(max(u.shape[0], s.shape[0]) for _, u, s in rows)
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(2 * k * 0.45 + 2.2, len(rows) * 0.62 + 0.7), squeeze=False
    )
    for i, (label, unsteered, steered) in enumerate(rows):
        for j, (imgs, title) in enumerate(
            ((unsteered, "unsteered (same transition)"), (steered, f"steered to digit {target}"))
        ):
            ax = axes[i, j]
            ax.imshow(_to_img(imgs[:k]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plot(
    path: Path,
    sweep: dict[str, list[dict[str, Any]]],
    ylabel: str,
    baseline: float | None = None,
) -> None:
    """Mean output reward vs total NFE per group (log2 x axis), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ticks: set[int] = set()
    for key, points in sweep.items():
        xs = [p["total_nfe_per_group"] for p in points]
        ys = [p["mean_reward"] for p in points]
        ticks.update(xs)
        ax.plot(xs, ys, marker="o", label=LABELS[key])
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label=LABELS["sample_ode"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("total NFE per group (N particles x NFE per particle)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# driver


def run_demo(
    cfg: DemoConfig, out: Path, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the comparison, write table.md, results.json, demo_grid.png, reward_vs_nfe.png."""
    from glass_core.models.default import (
        load_default_model,
        load_default_reward,
        load_template_reward,
    )

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = load_default_model(cfg.model, max_batch=cfg.max_batch)
    base_reward = load_default_reward(cfg.target, cfg.reward)  # also scores P(digit = target)
    reward = _TimedReward(
        base_reward
        if cfg.reward_kind == "classifier"
        else load_template_reward(cfg.target, cfg.reward)
    )

    rows: list[dict[str, Any]] = []
    runs: dict[str, MethodRun] = {}
    for key in ("sample_ode", *METHODS):
        log(f"running {LABELS[key]} ...")
        run = _run_method(key, model, reward, cfg, cfg.particles, progress)
        runs[key] = run
        rows.append(run.row(_target_prob(base_reward, run.outputs)))

    sweep: dict[str, list[dict[str, Any]]] = {k: [] for k in METHODS}
    budgets = sorted(set(cfg.budgets))
    for key in METHODS:
        for n in budgets:
            log(f"sweep {LABELS[key]} N={n} ...")
            run = (
                runs[key]
                if n == cfg.particles
                else _run_method(key, model, reward, cfg, n, progress)
            )
            sweep[key].append(run.row(_target_prob(base_reward, run.outputs)))

    shown = min(8, cfg.groups)
    grid_rows = [
        (LABELS[key], _unsteered(key, model, cfg, shown), runs[key].outputs[:shown])
        for key in METHODS
    ]
    write_grid(out / "demo_grid.png", grid_rows, cfg.target)
    ylabel = (
        f"mean reward  log p(digit={cfg.target})"
        if cfg.reward_kind == "classifier"
        else f"mean reward  -|z - mean {cfg.target}|^2 / 8"
    )
    write_plot(out / "reward_vs_nfe.png", sweep, ylabel, rows[0]["mean_reward"])
    table = format_table(rows, cfg)
    (out / "table.md").write_text(table, encoding="utf-8")
    total = time.perf_counter() - t_start
    results = {
        "config": asdict(cfg),
        "rows": rows,
        "sweep": sweep,
        "total_wall_s": total,
        "torch_threads": torch.get_num_threads(),
        "files": {
            "table": "table.md",
            "grid": "demo_grid.png",
            "plot": "reward_vs_nfe.png",
        },
        "versions": {"torch": torch.__version__},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results
