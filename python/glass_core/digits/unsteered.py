"""Unsteered sample quality on the embedded digits model: glass_core against diffusers baselines.

The rows and the table of ``benches/bench_baselines.py`` and of Tables 3/4 in kind in
``benches/bench_paper.py``: every row starts from the same noise draws (stochastic rows draw their
step noise from one generator seeded ``seed + 1``), is scored by
:func:`glass_core.digits.evidence.score_realism` against a reference half of the real digits, and
sits beside two data rows: the other half of the real digits (the data level) and that half plus
N(0, 0.15^2) (the sanity row a noise-blind metric would rank with the data). A row may come in
several grid variants (a baseline's static grid shifts); at each NFE the variant with the lowest
clamped energy distance is kept and its shift reported. The tables name the strongest sampler at
each NFE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from glass_core.digits.evidence import Realism, score_realism
from glass_core.metrics import mean_se

__all__ = [
    "Reference",
    "Row",
    "Run",
    "baseline_rows",
    "chain_row",
    "format_score",
    "insert_data_rows",
    "load_reference",
    "measure_rows",
    "ode_sde_rows",
    "outside_table",
    "realism_table",
    "record",
]

#: (nfe, initial noise, step-noise generator) -> (samples, NFE spent per sample)
Run = Callable[[int, torch.Tensor, torch.Generator], tuple[torch.Tensor, int]]
#: std of the per-pixel noise of the sanity row
SANITY_NOISE = 0.15


@dataclass(frozen=True)
class Row:
    """One sampler of the table: its label and its grid variants ``(shift or None, run)``."""

    label: str
    variants: tuple[tuple[float | None, Run], ...]


@dataclass(frozen=True)
class Reference:
    """The real digits split in two: the reference set and the data and sanity rows' records."""

    ref: torch.Tensor
    features: Any
    heldout: Any
    data: list[dict[str, Any]]


def chain_row(model: Any, label: str, make: Callable[[int], tuple[int, Any]]) -> Row:
    """Build a glass_core row: ``make(nfe) -> (T, transition)`` run over T uniform outer steps.

    Parameters
    ----------
    model : Denoiser
        The embedded model.
    label : str
        The row's label.
    make : callable
        The transition spending `nfe` evaluations per sample over T steps.

    Returns
    -------
    Row
        A row with one variant (no grid shift).
    """
    from glass_core.schedules import uniform_grid
    from glass_core.transitions import sample

    def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        steps, transition = make(nfe)
        with torch.no_grad():
            res = sample(model, transition, uniform_grid(steps), x0=noise.clone(), generator=gen)
        return res.samples, int(res.nfe)

    return Row(label, ((None, run),))


def ode_sde_rows(model: Any) -> list[Row]:
    """List glass_core's ODE (Euler, Heun, pc) and SDE rows, each one transition 0 -> 1.

    Heun spends 2 evaluations per substep (one at its last step, which ends at t = 1); ODE pc
    with K substeps is the GLASS pc transition 0 -> 1 with K inner steps.

    Parameters
    ----------
    model : Denoiser
        The embedded model.

    Returns
    -------
    list of Row
    """
    from glass_core.transitions import ODE, SDE

    return [
        chain_row(model, "ODE Euler", lambda n: (1, ODE(substeps=n))),
        chain_row(model, "ODE Heun", lambda n: (1, ODE(solver="heun", substeps=max(1, n // 2)))),
        chain_row(model, "ODE pc", lambda n: (1, ODE(solver="pc", substeps=n))),
        chain_row(model, "glass_core SDE (exact ancestral)", lambda n: (1, SDE(substeps=n))),
    ]


def baseline_rows(model: Any, names: Sequence[str], shifts: Sequence[float]) -> list[Row]:
    """List the diffusers baselines `names`, each with one variant per grid shift.

    Parameters
    ----------
    model : Denoiser
        The embedded model (its ``unet`` is driven).
    names : sequence of str
        Keys of :data:`glass_core.digits.baselines.BASELINES`.
    shifts : sequence of float
        Static grid shifts searched per NFE.

    Returns
    -------
    list of Row
    """
    from glass_core.digits.baselines import BASELINES, STOCHASTIC, sample_baseline

    def variant(name: str, shift: float) -> Run:
        def run(nfe: int, noise: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
            g = gen if name in STOCHASTIC else None
            x = sample_baseline(model.unet, name, nfe, noise, flow_shift=shift, generator=g)
            return x, nfe

        return run

    return [Row(BASELINES[n][2], tuple((s, variant(n, s)) for s in shifts)) for n in names]


def load_reference(seed: int = 0, heldout: bool = False) -> Reference:
    """Split the real digits into a reference half and the data rows' half, and score the latter.

    Parameters
    ----------
    seed : int, default 0
        Seed of the split.
    heldout : bool, default False
        Also report the held-out classifier's mean confidence (max class probability).

    Returns
    -------
    Reference
        The reference half, the feature map, the held-out classifier (or None) and the records
        of "real digits (other half)" and "real digits + N(0, 0.15^2)".
    """
    from glass_core.digits.assets import (
        load_default_reward,
        load_heldout_classifier,
        load_real_digits,
    )
    from glass_core.digits.evidence import digit_features

    x, _ = load_real_digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    ref, held = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    feats = digit_features(load_default_reward(3).classifier)
    judge = load_heldout_classifier() if heldout else None
    noise = torch.randn(held.shape, generator=torch.Generator().manual_seed(7))
    noisy = held + SANITY_NOISE * noise
    data = [
        record(label, None, 0, None, score_realism(s, ref, feats), 0.0, _confidence(judge, s))
        for label, s in (("real digits (other half)", held), ("real digits + N(0, 0.15^2)", noisy))
    ]
    return Reference(ref, feats, judge, data)


def measure_rows(
    rows: Sequence[Row],
    nfes: Sequence[int],
    noise: torch.Tensor,
    seed: int,
    reference: Reference,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Score every row at every NFE, keeping each row's best grid variant (clamped ED).

    Parameters
    ----------
    rows : sequence of Row
        The samplers.
    nfes : sequence of int
        Budgets (NFE per sample).
    noise : torch.Tensor
        The initial noise shared by every row ``[S, 1, 8, 8]``.
    seed : int
        The step-noise generator of each run is seeded ``seed + 1``.
    reference : Reference
        From :func:`load_reference`.
    log : callable, default print
        Receives one line per (row, NFE).

    Returns
    -------
    list of dict
        One record per (row, NFE): ``row``, ``nfe_budget``, ``nfe`` (measured), ``shift``,
        ``clamped``, ``features``, ``raw`` (``{"mean", "se"}``), ``outside``, ``confidence``
        (or None) and ``wall_s``.
    """
    records = []
    for row in rows:
        for nfe in nfes:
            best: dict[str, Any] | None = None
            for shift, run in row.variants:
                start = time.perf_counter()
                out, spent = run(nfe, noise, torch.Generator().manual_seed(seed + 1))
                realism = score_realism(out, reference.ref, reference.features)
                conf = _confidence(reference.heldout, out)
                rec = record(row.label, nfe, spent, shift, realism, start, conf)
                if best is None or rec["clamped"]["mean"] < best["clamped"]["mean"]:
                    best = rec
            assert best is not None
            clamped = 100 * best["clamped"]["mean"]
            log(f"{row.label} @ {nfe}: clamped {clamped:.2f} ({best['wall_s']}s)")
            records.append(best)
    return records


def _confidence(heldout: Any, x: torch.Tensor) -> dict[str, float] | None:
    if heldout is None:
        return None
    c = mean_se(heldout.probs(x).max(-1).values)
    return {"mean": c.value, "se": c.se}


def record(
    label: str,
    nfe: int | None,
    spent: int,
    shift: float | None,
    r: Realism,
    start: float,
    confidence: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Build one table row's JSON record.

    Parameters
    ----------
    label : str
        The row's label.
    nfe : int or None
        The NFE budget (None for a data row).
    spent : int
        The measured NFE per sample.
    shift : float or None
        The grid shift of the variant kept (None: no shift).
    r : Realism
        The scores.
    start : float
        ``time.perf_counter()`` at the start of the run (0: no wall time).
    confidence : dict, optional
        The held-out classifier's mean confidence ``{"mean", "se"}``.

    Returns
    -------
    dict
        ``row``, ``nfe_budget``, ``nfe``, ``shift``, ``clamped``, ``features``, ``raw``,
        ``outside``, ``confidence`` and ``wall_s``.
    """
    s = r.summary()
    return {
        "row": label,
        "nfe_budget": nfe,
        "nfe": spent,
        "shift": shift,
        "clamped": s["energy_distance_clamped"],
        "features": s["feature_distance"],
        "raw": s["energy_distance"],
        "outside": s["outside_fraction"],
        "confidence": confidence,
        "wall_s": round(time.perf_counter() - start, 1) if start else 0.0,
    }


def format_score(r: dict[str, Any], metric: str, higher_is_better: bool = False) -> str:
    """Format ``r[metric]`` as "mean ± se": x100 with 2 decimals for a distance, else 3 decimals.

    Parameters
    ----------
    r : dict
        A record.
    metric : str
        A key of `r` holding ``{"mean", "se"}``.
    higher_is_better : bool, default False
        True for a score such as the held-out confidence (printed as is).

    Returns
    -------
    str
    """
    scale, digits = (1.0, 3) if higher_is_better else (100.0, 2)
    return f"{scale * r[metric]['mean']:.{digits}f} ± {scale * r[metric]['se']:.{digits}f}"


def insert_data_rows(text: str, data: Sequence[dict[str, Any]], fmt: Callable[[Any], str]) -> str:
    """Insert the data rows under a table's header, the same value `fmt(r)` in every column.

    Parameters
    ----------
    text : str
        A markdown table (its first ``|---`` line ends the header).
    data : sequence of dict
        The data rows' records.
    fmt : callable
        record -> cell text.

    Returns
    -------
    str
    """
    lines = text.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    ncol = lines[head].count("|") - 2
    extra = [f"| {r['row']} | " + " | ".join([fmt(r)] * ncol) + " |" for r in data]
    return "\n".join(lines[: head + 1] + extra + lines[head + 1 :])


def realism_table(
    records: Sequence[dict[str, Any]],
    nfes: Sequence[int],
    metric: str,
    title: str,
    higher_is_better: bool = False,
) -> str:
    """Format one markdown table, samplers x NFE of `metric` (x100), strongest per column bold.

    Data rows (``nfe_budget`` None) are shown under the header with the same value in every
    column and never count as strongest.

    Parameters
    ----------
    records : sequence of dict
        From :func:`measure_rows` and :attr:`Reference.data`.
    nfes : sequence of int
        The columns.
    metric : str
        A record key holding ``{"mean", "se"}``.
    title : str
        The table's bold title.
    higher_is_better : bool, default False
        True for a score such as the held-out confidence.

    Returns
    -------
    str
        The table followed by a line naming the strongest sampler at each NFE.
    """
    samplers = [r for r in records if r["nfe_budget"] is not None]
    data = [r for r in records if r["nfe_budget"] is None]
    sign = -1.0 if higher_is_better else 1.0
    best = {
        n: min(
            (r for r in samplers if r["nfe_budget"] == n), key=lambda r: sign * r[metric]["mean"]
        )
        for n in nfes
    }

    def fmt(r: dict[str, Any]) -> str:
        return format_score(r, metric, higher_is_better)

    lines = [
        f"**{title}** (± s.e.; bold: the strongest sampler at that NFE)\n",
        "| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    at = {(r["row"], r["nfe_budget"]): r for r in samplers}
    for row in dict.fromkeys(r["row"] for r in samplers):
        cells = []
        for n in nfes:
            r = at.get((row, n))
            if r is None:
                cells.append("")
                continue
            text = f"**{fmt(r)}**" if r is best[n] else fmt(r)
            tags = [f"shift {r['shift']:g}"] if r["shift"] else []
            if r["nfe"] != n:
                tags.append(f"{r['nfe']} NFE")
            cells.append(text + (f" ({', '.join(tags)})" if tags else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Strongest at each NFE: "
        + "; ".join(f"{n}: {best[n]['row']}" for n in nfes)
        + " (the data rows are not samplers and never count as strongest)."
    )
    return insert_data_rows("\n".join(lines), data, fmt)


def outside_table(records: Sequence[dict[str, Any]], nfes: Sequence[int]) -> str:
    """Format the % of pixels outside [-1.05, 1.05] per sampler and NFE (real digits: 0).

    Parameters
    ----------
    records : sequence of dict
        From :func:`measure_rows`.
    nfes : sequence of int
        The columns.

    Returns
    -------
    str
        The markdown table.
    """
    at = {(r["row"], r["nfe_budget"]): r for r in records}
    lines = [
        "**% of pixels outside [-1.05, 1.05]** (real digits: 0)\n",
        "| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    for row in dict.fromkeys(r["row"] for r in records if r["nfe_budget"] is not None):
        cells = [f"{100 * at[(row, n)]['outside']:.2f}" for n in nfes]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
