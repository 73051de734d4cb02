"""Sharded FK steering (glass_core.align.distributed) on CPU / gloo with 1, 2 and 4 ranks.

Setting: N = 4096 particles, FK-GLASS (rho = ddpm, 10 inner Euler steps) over 5 transitions,
resampling (systematic) at every intermediate step, linear reward on a 2-D GMM stand-in. The
model costs 1 ms per evaluation of the whole N-particle batch and its cost is proportional to
the rows it gets (each rank waits (n / N) ms per call with time.sleep: a rank waiting on its own
accelerator; the box has 2 shared cores, so spinning 4 processes would measure the scheduler).

Per rank: wall time split into model / reward / communication (all-gathers and particle
exchange, including waiting for the slowest rank) / bookkeeping (the rest: transitions'
arithmetic, noise, the native SMC step, migration planning). Communication volume: bytes of the
rewards all-gather per potential step and particle bytes moved per resampling step (summed over
ranks), plus the same migration plan replayed on the recorded genealogy for W = 8 (the plan is
a pure function of the ancestors, which do not depend on W), used for the FLUX projection.

Run: python benches/bench_distributed.py [--out docs/benchmarks/distributed.json]
(without --out it only prints)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

N = 4096
MODEL_MS = 1.0
REPEATS = 10
GRID = np.linspace(0.0, 1.0, 6)


def _model(model_ms: float):
    from glass_core.models import from_callable
    from glass_core.schedules import RectifiedFlow

    def slow(x: torch.Tensor, t: object) -> torch.Tensor:
        out = 0.5 * x  # stand-in output; the cost is the wait
        time.sleep(model_ms * 1e-3 * x.shape[0] / N)
        return out

    return from_callable(slow, prediction="x1", schedule=RectifiedFlow())


def _run(process_group: object, seed: int, model_ms: float):
    from glass_core.align import fk_steering
    from glass_core.rewards import LinearReward
    from glass_core.transitions import Glass

    return fk_steering(
        _model(model_ms),
        LinearReward([1.0, 0.5]),
        transition=Glass(rho="ddpm", inner_steps=10),
        num_particles=N,
        time_grid=GRID,
        shape=(2,),
        lambda_=2.0,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
        progress=False,
        profile=True,
        process_group=process_group,
    )


def _worker(rank: int, world: int, port: int, out_path: str, model_ms: float, repeats: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    group = dist.group.WORLD
    _run(group, 99, model_ms)  # warm-up (connections, allocator)
    runs = []
    for r in range(repeats):
        dist.barrier()
        res = _run(group, r, model_ms)
        stats = {
            "wall": res.wall_time,
            "model": res.model_time,
            "reward": res.reward_time,
            "comm": res.comm.time,
            "gather_bytes": res.comm.gather_bytes,
            "result_bytes": res.comm.result_bytes,
            "migration_bytes": res.comm.migration_bytes,
        }
        per_rank: list[dict] = [{} for _ in range(world)]
        dist.all_gather_object(per_rank, stats)
        runs.append(
            {
                "seed": r,
                "ranks": per_rank,
                "migrated": res.migrated.tolist(),
                "transfers": res.transfers.tolist(),
                "resampled": res.resampled.tolist(),
                "nfe": res.nfe,
                "ancestors": res.ancestors.tolist() if world == 1 else None,
                "log_evidence": res.log_evidence,
            }
        )
    micro = _micro(world, rank)
    if rank == 0:
        single = None
        if world == 1:  # the plain single-process path, same seeds, for reference
            single = []
            for r in range(repeats):
                res = _run(None, r, model_ms)
                single.append({"wall": res.wall_time, "model": res.model_time})
        Path(out_path).write_text(
            json.dumps({"world": world, "runs": runs, "single": single, "micro": micro})
        )
    dist.barrier()
    dist.destroy_process_group()


def _micro(world: int, rank: int, iters: int = 200) -> dict:
    """Pure communication cost with the ranks lined up by a barrier: the rewards all-gather of
    one potential step, and a ring exchange of 64 particles (x and denoised, 2 float64 each)."""
    buf = torch.zeros(N // world + 2, dtype=torch.float64)
    out = torch.empty(world * buf.numel(), dtype=torch.float64)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_gather_into_tensor(out, buf)
    gather = (time.perf_counter() - start) / iters
    ring = float("nan")
    if world > 1:
        send = torch.zeros(64, 32, dtype=torch.uint8)
        recv = torch.empty_like(send)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            ops = [
                dist.P2POp(dist.isend, send, (rank + 1) % world),
                dist.P2POp(dist.irecv, recv, (rank - 1) % world),
            ]
            for work in dist.batch_isend_irecv(ops):
                work.wait()
        ring = (time.perf_counter() - start) / iters
    return {"allgather_s": gather, "p2p_ring_s": ring}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(world: int, tmp: Path, model_ms: float, repeats: int) -> dict:
    path = tmp / f"bench_distributed_{world}.json"
    args = (world, _free_port(), str(path), model_ms, repeats)
    mp.spawn(_worker, args=args, nprocs=world, join=True)
    return json.loads(path.read_text())


def replay(ancestors: np.ndarray, resampled: list[bool], world: int) -> dict:
    """Migration plan of every resampling step for `world` ranks on a recorded genealogy:
    transfers (particles on the wire, all ranks) and the most any one rank receives."""
    from glass_core.align.distributed.migration import contiguous_layout, plan_migration

    layout = contiguous_layout(ancestors.shape[1], world)
    total, worst, moved = [], [], []
    for anc, did in zip(ancestors, resampled, strict=True):
        if not did:
            continue
        plan = plan_migration(layout, anc)
        recv = [
            sum(plan.recv_rows(d, s).size for s in range(world) if s != d) for d in range(world)
        ]
        total.append(plan.transfers)
        worst.append(max(recv))
        moved.append(plan.moved)
        layout = plan.new_layout
    return {"transfers": total, "max_recv": worst, "moved": moved}


def summarise(results: dict[int, dict]) -> dict:
    """Time split of the fastest repeat (the box is shared: noise only adds time), averaged over
    ranks; byte and particle counts averaged over every resampling step of every repeat."""
    rows: dict = {}
    for world, data in results.items():
        runs = data["runs"]
        best = min(runs, key=lambda run: max(rk["wall"] for rk in run["ranks"]))
        rk = best["ranks"]
        mean = {k: float(np.mean([r[k] for r in rk])) for k in ("wall", "model", "reward", "comm")}
        mean["bookkeeping"] = mean["wall"] - mean["model"] - mean["reward"] - mean["comm"]
        n_steps = sum(len(run["resampled"]) for run in runs)
        n_res = sum(int(sum(run["resampled"])) for run in runs)
        transfers = [
            t
            for run in runs
            for t, did in zip(run["transfers"], run["resampled"], strict=True)
            if did
        ]
        moved = [
            m
            for run in runs
            for m, did in zip(run["migrated"], run["resampled"], strict=True)
            if did
        ]
        rows[world] = {
            **mean,
            "max_wall": max(r["wall"] for r in rk),
            "nfe": best["nfe"],
            "gather_bytes_per_step": sum(r["gather_bytes"] for run in runs for r in run["ranks"])
            / n_steps,
            "migration_bytes_per_resampling": sum(
                r["migration_bytes"] for run in runs for r in run["ranks"]
            )
            / max(n_res, 1),
            "transfers_per_resampling": float(np.mean(transfers)),
            "moved_per_resampling": float(np.mean(moved)),
            "micro": data["micro"],
        }
    if 1 in results and results[1]["single"]:
        rows["single"] = min(results[1]["single"], key=lambda s: s["wall"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the runs to this JSON file")
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--model-ms", type=float, default=MODEL_MS, help="model ms per N-batch NFE")
    ap.add_argument("--repeats", type=int, default=REPEATS)
    args = ap.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    results = {w: measure(w, tmp, args.model_ms, args.repeats) for w in args.worlds}
    rows = summarise(results)

    # replay the plan on the W=1 genealogies (identical for every W) for W = 2, 4, 8
    replays = {}
    if 1 in results:
        for w in (2, 4, 8):
            per_run = [
                replay(np.asarray(run["ancestors"]), run["resampled"], w)
                for run in results[1]["runs"]
            ]
            replays[w] = {
                "transfers_mean": float(np.mean([np.mean(p["transfers"]) for p in per_run])),
                "transfers_max": int(max(max(p["transfers"]) for p in per_run)),
                "max_recv_mean": float(np.mean([np.mean(p["max_recv"]) for p in per_run])),
                "max_recv_max": int(max(max(p["max_recv"]) for p in per_run)),
                "moved_mean": float(np.mean([np.mean(p["moved"]) for p in per_run])),
                "per_run_transfers": [p["transfers"] for p in per_run],
            }
        for w in (2, 4):  # the measured runs must equal the replay
            if w in results:
                measured = [
                    [t for t, did in zip(run["transfers"], run["resampled"], strict=True) if did]
                    for run in results[w]["runs"]
                ]
                replays[w]["matches_measured"] = measured == replays[w]["per_run_transfers"]
    for data in results.values():  # the genealogies were only needed for the replay
        for run in data["runs"]:
            run.pop("ancestors", None)
    out = {
        "N": N,
        "model_ms": args.model_ms,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "rows": {str(k): v for k, v in rows.items()},
        "runs": {str(k): v["runs"] for k, v in results.items()},
        "replay": {str(k): v for k, v in replays.items()},
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    print(table(rows, replays))


def table(rows: dict, replays: dict) -> str:
    head = (
        "| ranks | wall s | model s | reward s | comm s (incl. waiting) | bookkeeping s | NFE "
        "| all-gather B / step | moved slots / resampling | particles sent / resampling "
        "| migration B / resampling | pure all-gather us | pure p2p ring us |"
    )
    lines = [head, "|" + "---|" * 13]
    for w in sorted(k for k in rows if k != "single"):
        r = rows[w]
        m = r["micro"]
        lines.append(
            f"| {w} | {r['max_wall']:.3f} | {r['model']:.3f} | {r['reward']:.4f} | "
            f"{r['comm']:.3f} | {r['bookkeeping']:.3f} | {r['nfe']} | "
            f"{r['gather_bytes_per_step']:.0f} | {r['moved_per_resampling']:.1f} | "
            f"{r['transfers_per_resampling']:.1f} | {r['migration_bytes_per_resampling']:.0f} | "
            f"{1e6 * m['allgather_s']:.0f} | {1e6 * m['p2p_ring_s']:.0f} |"
        )
    if "single" in rows:
        s = rows["single"]
        lines.append(
            f"\nsingle process (no process_group): wall {s['wall']:.3f} s, model {s['model']:.3f} s"
        )
    for w, rp in sorted(replays.items()):
        lines.append(
            f"replay W={w}: particles sent per resampling step mean {rp['transfers_mean']:.1f} "
            f"(max {rp['transfers_max']}), most received by one rank mean "
            f"{rp['max_recv_mean']:.1f} (max {rp['max_recv_max']}), moved slots "
            f"{rp['moved_mean']:.1f}, equals measured: {rp.get('matches_measured', '-')}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
