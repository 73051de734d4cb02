"""Outputs of ``glass-core steer``.

Outputs of ``glass-core steer``: the images, the best image of each prompt and results.json
(rewards, weights, ESS history, genealogy), and the warning when FK's weights collapsed early
(the diagnostics are the FK result's own: ``lineage_roots()``, ``early_collapse()``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

#: an FK run whose ESS falls below this before EARLY_T has in effect one particle left
ESS_COLLAPSE = 1.5
EARLY_T = 0.5


def write_outputs(
    folder: Path, res: Any, args: argparse.Namespace, transition: Any, world: int
) -> dict[str, Any]:
    """Images, best images and results.json into `folder`; returns the record.

    Parameters
    ----------
    folder : pathlib.Path
        The (staging) output folder.
    res : SteerResult
        The run's result.
    args : argparse.Namespace
        The parsed flags.
    transition : object
        The transition kernel.
    world : int
        The number of ranks.

    Returns
    -------
    dict
        The record written to results.json.
    """
    import json

    import torch

    names = []
    for i, im in enumerate(res.images):
        names.append(f"image_{i:03d}.png")
        im.save(folder / names[-1])
    record: dict[str, Any] = {
        "pipeline": args.pipeline,
        "reward": args.reward,
        "method": args.method,
        "transition": args.transition,
        "kernel": repr(transition),  # every parameter, defaults included
        "nfe": int(res.nfe),
        "num_transitions": len(res.time_grid) - 1,
        "time_grid": np.asarray(res.time_grid).tolist(),
        "num_particles": res.num_particles,
        "rewards": None,
        "best_index": None,
        "images": names,  # B * N, group-major
        "best_images": [],
        "warnings": [],
    }
    if res.rewards is not None:
        r = res.rewards.detach().double()
        record["rewards"] = r.tolist()  # [B][N]
        record["mean_reward"] = float(r.mean())
        record["max_reward"] = float(r.max())
        record["best_index"] = res.best_index.tolist()  # [B]
        for b, im in enumerate(res.best()):
            record["best_images"].append(f"best_{b:03d}.png")
            im.save(folder / record["best_images"][-1])
    if args.method == "fk":
        record["log_weights"] = res.log_weights.tolist()  # [B][N]
        record["log_evidence"] = np.asarray(res.log_evidence).tolist()  # [B]
        times = np.asarray(getattr(res.raw, "step_times", []), dtype=np.float64)
        # no potential step when nothing was sampled (--image with --strength 0)
        ess_rows = [] if res.ess_history is None else res.ess_history
        ess = np.asarray(ess_rows, dtype=np.float64).reshape(len(times), res.num_groups)
        record["ess_times"] = times.tolist()  # [S]: the potential steps' t
        record["ess_history"] = ess.tolist()  # [S][B], after reweighting
        raw = res.raw  # the FKResult (None when nothing was sampled)
        if res.ancestors is not None:
            record["genealogy"] = np.asarray(res.ancestors).tolist()  # [S][B][N] parent indices
            record["distinct_ancestors"] = np.atleast_1d(raw.lineage_roots()).tolist()  # [B]
        collapsed = (
            [] if raw is None else raw.early_collapse(ess_below=ESS_COLLAPSE, before=EARLY_T)
        )
        for b, t, e in collapsed:
            roots = record.get("distinct_ancestors", [None] * (b + 1))[b]
            record["warnings"].append(
                f"FK weights collapsed onto one particle early (prompt {b}: ESS {e:.2f} of "
                f"{res.num_particles} at t = {t:.2f}"
                + (f"; the final particles descend from {roots} initial one(s)" if roots else "")
                + f"), so the result is close to a single trajectory; lower --lambda (now "
                f"{args.lambda_:g}) or raise --particles"
            )
    for attr in ("wall_time", "model_time", "reward_time", "bookkeeping_time"):
        record[attr] = float(getattr(res, attr))
    record["args"] = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if not k.startswith("_")
    }
    record["torch"] = torch.__version__
    record["world_size"] = world
    (folder / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
