"""The paper's experiments in kind on the embedded digits model, scored by held-out judges.

One place defines the steering methods compared at equal NFE per particle (best-of-N and FK
steering over ODE, SDE and GLASS transitions, FK with reward guidance inside GLASS), how a budget
of NFE per particle becomes each method's transition, and how returned samples are scored:

* the optimised reward: log p(digit = target) under the embedded CNN classifier;
* held-out P(target): the probability of the target digit under a logistic regression trained on
  the real digits (``digits.assets.load_heldout_classifier``), a model the steering never sees;
* realism: energy distance of the returned samples to the real digits of the target class
  (``glass_core.metrics.energy_distance``, unbiased, jackknife standard error), three ways
  (:func:`score_realism`): on the raw samples (the historical column), on the samples clamped to the
  data range [-1, 1] as a pipeline returns images, and in feature space
  (``glass_core.metrics.feature_energy_distance`` on :func:`digit_features`), the two that see
  leftover pixel noise; plus the fraction of pixels outside [-1.05, 1.05].

Every method uses the same time grid of ``transitions`` uniform outer steps (FK potentials and
resampling at its points for SDE and GLASS alike), the same per-group generators (group g of every
cell starts from the same seed) and returns, per group, its highest-reward sample. The benchmark
(``benches/bench_paper.py``) and ``glass-core demo`` both run through :func:`run_cell`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glass_core.metrics import Estimate, energy_distance, feature_energy_distance, mean_se

__all__ = [
    "FK_SOLVER",
    "GUIDANCE_SCALE",
    "GUIDANCE_WINDOW",
    "Cell",
    "Judges",
    "Method",
    "Realism",
    "baseline_methods",
    "digit_features",
    "glass_inner_steps",
    "load_judges",
    "pipeline_output",
    "pool_realism",
    "run_cell",
    "score_realism",
    "steering_methods",
    "summarise",
    "transition_for",
    "unsteered_samples",
]

#: Reward-guidance recipe of the paper's App. D.4 (lambda = 0.4 on the nu^2/2 coefficient, applied
#: for t in [0.2, 0.7]); used as is, not tuned on this model.
GUIDANCE_SCALE = 0.4
GUIDANCE_WINDOW = (0.2, 0.7)
#: The GLASS inner solver of the demo's steering rows: Heun had the lowest unsteered raw energy
#: distance at 10 NFE in an earlier run of docs/benchmarks/paper.md's Tables 3/4; in the current
#: one Heun and pc tie there (pc lower on the pixel distances, Heun on the feature distance) and
#: the paper bench's Table 1 runs with pc (``--fk-solver pc``), the library's default.
FK_SOLVER = "heun"


@dataclass(frozen=True)
class Method:
    """One row of the steering table."""

    key: str
    label: str
    algorithm: str  # "sample" (one unsteered draw), "best_of_n" or "fk"
    kernel: str  # "ode", "sde", "glass" or a diffusers baseline (digits.baselines.BASELINES)
    rho: float | str | None = None
    guided: bool = False
    potential: str = "diff"


def steering_methods(lookahead: bool = False) -> list[Method]:
    """List the rows of the paper's Table 1 in kind.

    Parameters
    ----------
    lookahead : bool, default False
        Append the lookahead FK-GLASS row.

    Returns
    -------
    list of Method
        The steering methods, unsteered sample first.
    """
    rows = [
        Method("flow", "no steering (ODE, N = 1)", "sample", "ode"),
        Method("bon_ode", "BoN-ODE", "best_of_n", "ode"),
        Method("bon_sde", "BoN-SDE", "best_of_n", "sde"),
        Method("bon_glass_ddpm", "BoN-GLASS (rho=DDPM)", "best_of_n", "glass", "ddpm"),
        Method("bon_glass_04", "BoN-GLASS (rho=0.4)", "best_of_n", "glass", 0.4),
        Method("fk_sde", "FK-SDE", "fk", "sde"),
        Method("fk_glass_ddpm", "FK-GLASS (rho=DDPM)", "fk", "glass", "ddpm"),
        Method("fk_glass_04", "FK-GLASS (rho=0.4)", "fk", "glass", 0.4),
        Method("fk_glass_04_grad", "FK-GLASS+grad (rho=0.4)", "fk", "glass", 0.4, guided=True),
    ]
    if lookahead:
        rows.append(
            Method(
                "fk_lookahead",
                "lookahead FK-GLASS (rho=0.4)",
                "fk",
                "glass",
                0.4,
                potential="lookahead",
            )
        )
    return rows


#: best-of-N over the diffusers baselines: baseline name -> (method key, label)
BASELINE_BON: dict[str, tuple[str, str]] = {
    "unipc": ("bon_unipc", "BoN-UniPC (order 2)"),
    "dpmpp_2m": ("bon_dpmpp_2m", "BoN-DPM-Solver++(2M)"),
    "sde_dpmpp_2m": ("bon_sde_dpmpp_2m", "BoN-SDE-DPM-Solver++(2M)"),
    "ddpm_ancestral": ("bon_ddpm_ancestral", "BoN-DDPM ancestral (diffusers)"),
}


def baseline_methods(names: Sequence[str] = tuple(BASELINE_BON)) -> list[Method]:
    """List best-of-N over the samplers a diffusers user would pick, beside the steering rows.

    :func:`run_cell` samples them with ``digits.baselines.sample_baseline`` (grid shift 1) from
    the same per-group noise as the glass_core rows.

    Parameters
    ----------
    names : sequence of str, default every baseline
        Keys of :data:`BASELINE_BON` (and of ``digits.baselines.BASELINES``).

    Returns
    -------
    list of Method

    Raises
    ------
    InvalidInputError
        For a name that is not a baseline.
    """
    from glass_core.errors import InvalidInputError

    unknown = [n for n in names if n not in BASELINE_BON]
    if unknown:
        raise InvalidInputError(f"names must be baselines {list(BASELINE_BON)}, got {unknown}")
    return [Method(BASELINE_BON[n][0], BASELINE_BON[n][1], "best_of_n", n) for n in names]


def solver_option(solver: str | None) -> dict[str, Any]:
    """Return the Glass keyword arguments for `solver`.

    Parameters
    ----------
    solver : str or None
        An inner solver name; None keeps the library's default.

    Returns
    -------
    dict
        ``{}`` for None, else ``{"solver": solver}``.
    """
    return {} if solver is None else {"solver": solver}


def glass_inner_steps(rho: float | str, per_transition: int, solver: str | None) -> int:
    """Find the most GLASS inner steps whose cost fits `per_transition` NFE with this solver.

    Parameters
    ----------
    rho : float or str
        The GLASS correlation (a float or ``"ddpm"``).
    per_transition : int
        The NFE budget of one transition.
    solver : str or None
        The inner solver (None: the library's default).

    Returns
    -------
    int
        The largest number of inner steps fitting the budget, 0 if even one step costs more.
    """
    from glass_core.transitions import Glass

    k = per_transition
    while (
        k > 0 and Glass(rho, inner_steps=k, **solver_option(solver)).nfe_per_call > per_transition
    ):
        k -= 1
    return k


def transition_for(
    kernel: str,
    nfe: int,
    transitions: int,
    *,
    rho: float | str | None = None,
    solver: str | None = None,
) -> Any:
    """Build the transition spending about `nfe` evaluations over `transitions` outer steps.

    ODE/SDE take nfe/transitions Euler substeps per outer step (Heun ODE: half as many); GLASS
    takes the inner steps of `solver` (None = the library's default) that fit nfe/transitions,
    or nfe/transitions Euler inner steps when not even one step of `solver` fits.

    Parameters
    ----------
    kernel : str
        ``"ode"``, ``"sde"`` or ``"glass"``.
    nfe : int
        NFE per particle over the whole grid.
    transitions : int
        Number of uniform outer steps.
    rho : float or str, optional
        The GLASS correlation (required for ``"glass"``).
    solver : str, optional
        The ODE solver (default Euler) or the GLASS inner solver.

    Returns
    -------
    ODE, SDE or Glass
        The transition.

    Raises
    ------
    ValueError
        If `nfe` is not a multiple of `transitions` or `kernel` is unknown.
    """
    from glass_core.transitions import ODE, SDE, Glass

    if nfe % transitions:
        raise ValueError(f"nfe ({nfe}) must be a multiple of transitions ({transitions})")
    per = nfe // transitions
    if kernel == "ode":
        ode_solver = solver or "euler"
        return ODE(solver=ode_solver, substeps=max(1, per // 2) if ode_solver == "heun" else per)
    if kernel == "sde":
        return SDE(substeps=per)
    if kernel == "glass":
        assert rho is not None
        k = glass_inner_steps(rho, per, solver)
        if k == 0:  # a two-stage solver does not fit 1 NFE per transition: one Euler step does
            return Glass(rho, inner_steps=per, solver="euler")
        return Glass(rho, inner_steps=k, **solver_option(solver))
    raise ValueError(f"unknown kernel {kernel!r}")


#: the data range of the digits; a pipeline returns images clamped to it
DATA_RANGE: tuple[float, float] = (-1.0, 1.0)
#: a pixel this far outside the data range counts as leftover noise
OUTSIDE_MARGIN = 0.05


def pipeline_output(x: torch.Tensor) -> torch.Tensor:
    """Clamp samples to :data:`DATA_RANGE`, as a pipeline returns images."""
    return x.clamp(*DATA_RANGE)


def digit_features(classifier: Any) -> Any:
    """Build the feature map for ``feature_energy_distance``.

    The features are the spatial means of each SiLU activation of the embedded CNN
    (``DigitClassifier.features``) on clamped images, concatenated (160 features: the first
    layer sees pixel texture such as leftover noise, the last one digit shape).

    Parameters
    ----------
    classifier : DigitClassifier
        The embedded reward's network (``load_default_reward(...).classifier``).

    Returns
    -------
    callable
        ``[k, 1, 8, 8] -> [k, 160]`` float tensor.
    """

    def features(x: torch.Tensor) -> torch.Tensor:
        h = pipeline_output(x.float())
        pooled = []
        for layer in classifier.features:
            h = layer(h)
            if isinstance(layer, torch.nn.SiLU):
                pooled.append(h.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    return features


@dataclass(frozen=True)
class Realism:
    """Realism of a sample set against real digits (lower = more real; 0 = indistinguishable)."""

    raw: Estimate  # pixel energy distance on the unclamped samples
    clamped: Estimate  # pixel energy distance on pipeline_output(samples)
    features: Estimate  # feature energy distance (digit_features)
    outside: float  # fraction of pixels outside the data range by more than OUTSIDE_MARGIN

    def summary(self) -> dict[str, Any]:
        """Return the scores as a JSON-ready dict (estimates as ``{"mean", "se"}``)."""
        return {
            "energy_distance": _est(self.raw),
            "energy_distance_clamped": _est(self.clamped),
            "feature_distance": _est(self.features),
            "outside_fraction": self.outside,
        }


def score_realism(samples: torch.Tensor, real: torch.Tensor, features: Any) -> Realism:
    """Score `samples` against `real` digits all three ways (:class:`Realism`).

    Parameters
    ----------
    samples : torch.Tensor
        Generated images ``[n >= 3, 1, 8, 8]``.
    real : torch.Tensor
        Reference images ``[m >= 2, 1, 8, 8]`` (in the data range).
    features : callable
        The feature map, e.g. ``digit_features(classifier)``.

    Returns
    -------
    Realism
        Pixel energy distances (raw and clamped), feature energy distance and the fraction of
        pixels outside the data range by more than :data:`OUTSIDE_MARGIN`.

    Raises
    ------
    ValueError
        On too few rows (as :func:`glass_core.metrics.energy_distance`).
    """
    lo, hi = DATA_RANGE
    out = (samples < lo - OUTSIDE_MARGIN) | (samples > hi + OUTSIDE_MARGIN)
    return Realism(
        raw=energy_distance(samples, real),
        clamped=energy_distance(pipeline_output(samples), real),
        features=feature_energy_distance(samples, real, features),
        outside=float(out.double().mean()),
    )


def pool_realism(scores: Sequence[Realism]) -> Realism:
    """Pool the realism of independent sample sets (e.g. one per seed) into one estimate.

    Each score is the mean over the sets; its standard error combines the sets' own standard
    errors, sqrt(sum se_i^2) / k, which stays usable with few sets (an s.e. from the spread of
    three values would itself be very noisy).

    Parameters
    ----------
    scores : sequence of Realism
        One score per independent sample set, all against comparable references.

    Returns
    -------
    Realism
        The pooled scores; ``outside`` is the mean fraction.

    Raises
    ------
    ValueError
        If `scores` is empty.
    """
    if not scores:
        raise ValueError("pool_realism needs at least one score")
    k = len(scores)

    def pooled(field: str) -> Estimate:
        ests = [getattr(s, field) for s in scores]
        value = sum(e.value for e in ests) / k
        return Estimate(value, math.sqrt(sum(e.se**2 for e in ests)) / k)

    return Realism(
        raw=pooled("raw"),
        clamped=pooled("clamped"),
        features=pooled("features"),
        outside=sum(s.outside for s in scores) / k,
    )


@dataclass(frozen=True)
class Judges:
    """What the returned samples are scored with.

    None of it is seen by the steering but the reward.
    """

    reward: Any  # the optimised reward, log p(digit = target) under the embedded CNN
    heldout: Any  # digits.assets.HeldoutClassifier
    real: torch.Tensor  # real digits of the target class [M, 1, 8, 8]
    target: int
    features: Any  # feature map for the feature distance (digit_features)


def load_judges(target: int, reward_path: str | Path | None = None) -> Judges:
    """Load the judges for `target`.

    Parameters
    ----------
    target : int
        The digit class steered toward.
    reward_path : str or Path, optional
        A reward classifier directory (default: the embedded reward). The feature map always
        uses the embedded classifier.

    Returns
    -------
    Judges
        The reward, the held-out classifier, the real digits of class `target` and the
        feature map.

    Raises
    ------
    FileNotFoundError
        If a classifier directory lacks its files.
    ValueError
        If `target` is not an int in [0, 9].
    """
    from glass_core.digits.assets import (
        load_default_reward,
        load_heldout_classifier,
        load_real_digits,
    )

    x, y = load_real_digits()
    reward = load_default_reward(target, reward_path)
    features = digit_features(load_default_reward(target).classifier)
    return Judges(reward, load_heldout_classifier(), x[y == target], target, features)


@dataclass
class Cell:
    """One method at one (NFE per particle, N): per-group returned samples and their scores."""

    method: Method
    nfe_budget: int
    particles: int
    samples: torch.Tensor  # [B, 1, 8, 8]
    rewards: torch.Tensor  # [B] optimised reward of the returned sample
    heldout: torch.Tensor  # [B] held-out P(target) of the returned sample
    nfe: int  # measured model evaluations per particle
    wall: float
    realism: Realism | None = None

    def summary(self) -> dict[str, Any]:
        """Return the cell as a JSON-ready dict: means and standard errors over groups."""
        scores = {"energy_distance": None} if self.realism is None else self.realism.summary()
        return {
            "method": self.method.key,
            "label": self.method.label,
            "nfe_budget": self.nfe_budget,
            "nfe": self.nfe,
            "particles": self.particles,
            "groups": len(self.rewards),
            "reward": _est(mean_se(self.rewards)),
            "heldout_p_target": _est(mean_se(self.heldout)),
            "heldout_accuracy": _est(mean_se((self.heldout > 0.5).double())),
            **scores,
            "wall_s": round(self.wall, 2),
        }


def _est(e: Estimate) -> dict[str, float]:
    return {"mean": e.value, "se": e.se}


def run_cell(
    model: Any,
    judges: Judges,
    method: Method,
    *,
    nfe: int,
    particles: int,
    groups: int,
    seed: int = 0,
    transitions: int = 5,
    solver: str | None = None,
    lambda_: float = 4.0,
    realism: bool = True,
) -> Cell:
    """Run `method` for `groups` independent groups and score the returned samples.

    The groups of `particles` particles run in one batched call, group g seeded with seed + g;
    each group returns its highest-reward particle.

    Parameters
    ----------
    model : Denoiser
        The model (its ``unet`` is used by the diffusers baselines).
    judges : Judges
        The reward steered toward and the scorers.
    method : Method
        The steering method.
    nfe : int
        NFE budget per particle.
    particles : int
        N per group (1 for the unsteered sample).
    groups : int
        Number of independent groups.
    seed : int, default 0
        Base seed.
    transitions : int, default 5
        Uniform outer steps (the FK resampling times).
    solver : str, optional
        The GLASS inner solver (ignored for other kernels).
    lambda_ : float, default 4.0
        The FK reward exponent.
    realism : bool, default True
        Also score the samples' realism (:func:`score_realism`).

    Returns
    -------
    Cell
        The returned samples with their scores and the measured NFE and wall time.

    Raises
    ------
    ValueError
        If `nfe` is not a multiple of `transitions` or the kernel is unknown.
    """
    from glass_core.align import Lookahead, best_of_n, fk_steering, guided
    from glass_core.digits.baselines import BASELINES
    from glass_core.schedules import uniform_grid
    from glass_core.transitions import Glass

    if method.kernel in BASELINES:
        start = time.perf_counter()
        samples, rewards = _baseline_best_of_n(model, judges, method, nfe, particles, groups, seed)
        return _scored(method, judges, nfe, particles, samples, rewards, nfe, start, realism)
    kernel_solver = solver if method.kernel == "glass" else None
    transition = transition_for(
        method.kernel, nfe, transitions, rho=method.rho, solver=kernel_solver
    )
    grid = uniform_grid(transitions)
    gens = [torch.Generator().manual_seed(seed + g) for g in range(groups)]
    net = guided(model, judges.reward, GUIDANCE_SCALE, GUIDANCE_WINDOW) if method.guided else model
    common: dict[str, Any] = {
        "transition": transition,
        "time_grid": grid,
        "shape": (1, 8, 8),
        "generator": gens,
        "progress": False,
    }
    start = time.perf_counter()
    if method.algorithm == "fk":
        potential: Any = method.potential
        if potential == "lookahead":  # J = 2 posterior samples, 2 inner steps: 2 extra
            # NFE per particle at each interior potential step (reported in the measured NFE)
            assert method.rho is not None  # lookahead rows are GLASS rows
            potential = Lookahead(2, Glass(method.rho, inner_steps=2, solver="euler"))
        res: Any = fk_steering(
            net,
            judges.reward,
            num_particles=particles,
            potential=potential,
            lambda_=lambda_,
            **common,
        )
        idx = res.rewards.argmax(dim=-1)
        rows = torch.arange(groups)
        samples, rewards = res.samples[rows, idx], res.rewards[rows, idx]
    else:
        n = 1 if method.algorithm == "sample" else particles
        res = best_of_n(net, judges.reward, num_particles=n, **common)
        samples, rewards = res.best(), res.best_reward
    return _scored(method, judges, nfe, particles, samples, rewards, int(res.nfe), start, realism)


def _scored(
    method: Method,
    judges: Judges,
    nfe_budget: int,
    particles: int,
    samples: torch.Tensor,
    rewards: torch.Tensor,
    nfe: int,
    start: float,
    realism: bool,
) -> Cell:
    """Build the Cell of returned `samples` (one per group) with its scores."""
    wall = time.perf_counter() - start
    samples = samples.detach()
    cell = Cell(
        method=method,
        nfe_budget=nfe_budget,
        particles=1 if method.algorithm == "sample" else particles,
        samples=samples,
        rewards=rewards.detach().double(),
        heldout=judges.heldout.probs(samples)[:, judges.target],
        nfe=nfe,
        wall=wall,
    )
    if realism:
        cell.realism = score_realism(samples, judges.real, judges.features)
    return cell


def _baseline_best_of_n(
    model: Any,
    judges: Judges,
    method: Method,
    nfe: int,
    particles: int,
    groups: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run best-of-N (or one sample) over a diffusers baseline's samples.

    Group g's noise comes from seed + g as for the glass_core rows; a stochastic baseline's step
    noise from one generator seeded seed + groups. Returns the per-group best samples and their
    rewards.
    """
    from glass_core.digits.baselines import sample_baseline

    n = 1 if method.algorithm == "sample" else particles
    noise = torch.cat(
        [
            torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + g))
            for g in range(groups)
        ]
    )
    step_gen = torch.Generator().manual_seed(seed + groups)
    x = sample_baseline(model.unet, method.kernel, nfe, noise, generator=step_gen)
    with torch.no_grad():
        r = judges.reward(x).detach().reshape(groups, n)
    idx = r.argmax(dim=-1)
    rows = torch.arange(groups)
    return x.reshape(groups, n, 1, 8, 8)[rows, idx], r[rows, idx]


def unsteered_samples(
    model: Any,
    kernel: str,
    *,
    nfe: int,
    count: int,
    seed: int,
    transitions: int = 5,
    rho: float | str | None = None,
    solver: str | None = None,
) -> tuple[torch.Tensor, int]:
    """Draw `count` plain samples of one transition family at `nfe` per sample.

    Parameters
    ----------
    model : Denoiser
        The model.
    kernel : str
        ``"ode"``, ``"sde"`` or ``"glass"`` (see :func:`transition_for`).
    nfe : int
        NFE per sample.
    count : int
        Number of samples.
    seed : int
        Seed of the generator.
    transitions : int, default 5
        Uniform outer steps.
    rho : float or str, optional
        The GLASS correlation.
    solver : str, optional
        The ODE or GLASS inner solver.

    Returns
    -------
    tuple of (torch.Tensor, int)
        The samples ``[count, 1, 8, 8]`` and the NFE spent per sample.

    Raises
    ------
    ValueError
        As :func:`transition_for`.
    """
    from glass_core.schedules import uniform_grid
    from glass_core.transitions import sample

    transition = transition_for(kernel, nfe, transitions, rho=rho, solver=solver)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        res = sample(
            model, transition, uniform_grid(transitions), shape=(count, 1, 8, 8), generator=gen
        )
    return res.samples, int(res.nfe)


def summarise(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Return :meth:`Cell.summary` of each cell, in order."""
    return [c.summary() for c in cells]
