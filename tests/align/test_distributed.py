"""Sharded fk_steering / best_of_n on CPU with gloo, 2 and 4 processes (torch.multiprocessing
spawn): identical to the single-process run with the same seed, minimal migration, and every rank
raising (not hanging) when one rank fails."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
from align_fixtures import GRID, ExactKernel, gen, gmm
from glass_core.align import best_of_n, fk_steering
from glass_core.align.distributed import (
    DistributedTimeoutError,
    RankFailedError,
    Sharding,
)
from glass_core.align.distributed.migration import contiguous_layout, minimal_moves, plan_migration
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards import LinearReward, QuadraticReward
from glass_core.transitions import SDE, Glass
from spawn_ranks import free_port, spawn

LIN = LinearReward([1.0, 0.5])


def _init(rank: int, world: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _fk(pg, **kw):
    args = dict(
        transition=Glass(inner_steps=3),
        num_particles=16,
        time_grid=GRID,
        shape=(2,),
        lambda_=1.0,
        generator=gen(0),
        dtype=torch.float64,
        progress=False,
    )
    args.update(kw)
    reward = args.pop("reward", LIN)
    return fk_steering(gmm(), reward, process_group=pg, **args)


# Each config is a factory so the single and the sharded run get fresh generators.
FK_CONFIGS = {
    "glass-every-step": dict,
    "exact-kernel-quadratic": lambda: dict(
        transition=ExactKernel(), reward=QuadraticReward([1.0, -1.0], 1.0)
    ),
    "ess-adaptive": lambda: dict(ess_threshold=0.7, num_particles=32),
    "sde-max-multinomial": lambda: dict(
        transition=SDE(), potential="max", resampling="multinomial"
    ),
    "groups-final-resample": lambda: dict(generator=[gen(1), gen(2)], final_resample=True),
    "residual-every2-float32": lambda: dict(
        resampling="residual", resample_every=2, dtype=torch.float32, num_particles=32
    ),
}


def _same_fk(ref, got, name):
    assert torch.equal(ref.samples, got.samples), name
    assert ref.samples.dtype == got.samples.dtype
    assert torch.equal(ref.log_weights, got.log_weights), name
    assert torch.equal(ref.rewards, got.rewards), name
    assert ref.rewards.dtype == got.rewards.dtype
    np.testing.assert_array_equal(ref.log_evidence, got.log_evidence)
    np.testing.assert_array_equal(ref.ancestors, got.ancestors)
    np.testing.assert_array_equal(ref.ess_history, got.ess_history)
    np.testing.assert_array_equal(ref.resampled, got.resampled)
    assert ref.nfe == got.nfe and ref.total_nfe == got.total_nfe


def _check_minimal_migration(res, world: int) -> None:
    """Replay the layouts from the genealogy: every step moved exactly the lower bound, and the
    bytes sent by all ranks are the unique transfers times the particle size."""
    anc = res.ancestors if res.ancestors.ndim == 3 else res.ancestors[:, None]
    n_total = anc.shape[-1]
    layouts = [contiguous_layout(n_total, world) for _ in range(anc.shape[1])]
    expect_transfers = 0
    for s in range(anc.shape[0]):
        moved = 0
        for b in range(anc.shape[1]):
            resampled = res.resampled[s] if res.resampled.ndim == 1 else res.resampled[s, b]
            if not resampled:
                assert np.array_equal(anc[s, b], np.arange(n_total))
                continue
            moved += minimal_moves(layouts[b], anc[s, b])
            plan = plan_migration(layouts[b], anc[s, b])
            expect_transfers += plan.transfers * (1 if s == anc.shape[0] - 1 else 2)
            layouts[b] = plan.new_layout
        assert res.migrated[s] == moved
    rank_layout = np.stack([lay[res.rank] for lay in layouts])
    np.testing.assert_array_equal(rank_layout.reshape(np.shape(res.local_slots)), res.local_slots)
    sent = torch.tensor([res.comm.migration_bytes], dtype=torch.int64)
    dist.all_reduce(sent)
    per_particle = int(np.prod(res.samples.shape[-1:])) * res.samples.element_size()
    # x and the denoised estimate move at intermediate steps, x alone at the final step
    assert int(sent) == expect_transfers * per_particle


def _equivalence_worker(rank: int, world: int, port: int) -> None:
    _init(rank, world, port)
    group = dist.group.WORLD
    for name, make in FK_CONFIGS.items():
        ref = _fk(None, **make())
        got = _fk(group, **make())
        _same_fk(ref, got, name)
        assert got.rank == rank and got.world_size == world
        _check_minimal_migration(got, world)
    assert sum(int(_fk(group).migrated.sum()) for _ in range(1)) > 0  # migrations do happen

    # shard-only result: local samples are the slots named by local_slots
    ref = _fk(None)
    got = _fk(Sharding(group, gather=False))
    assert got.samples.shape == (16 // world, 2)
    assert torch.equal(got.samples, ref.samples[torch.from_numpy(got.local_slots)])

    # best-of-N: gathered and shard-only
    for gather in (True, False):
        kw = dict(
            transition=SDE(), num_particles=16, time_grid=GRID, shape=(2,), dtype=torch.float64
        )
        ref = best_of_n(gmm(), LIN, generator=[gen(3), gen(4)], progress=False, **kw)
        got = best_of_n(
            gmm(),
            LIN,
            generator=[gen(3), gen(4)],
            progress=False,
            process_group=Sharding(group, gather=gather),
            **kw,
        )
        assert torch.equal(ref.best(), got.best()) and torch.equal(ref.best_index, got.best_index)
        assert torch.equal(ref.rewards, got.rewards) and torch.equal(
            ref.best_reward, got.best_reward
        )
        n_loc = 16 // world
        mine = ref.samples[:, rank * n_loc : (rank + 1) * n_loc]  # this rank's slots per group
        assert got.local_samples.shape == (2 * n_loc, 2)  # group-major, as the rank holds them
        assert torch.equal(got.local_samples.reshape(mine.shape), mine)
        if gather:
            assert torch.equal(ref.samples, got.samples)
        else:
            assert torch.equal(got.samples, mine)

    # arguments that differ between ranks are caught before any model call
    with pytest.raises(InvalidInputError, match="generator state"):
        _fk(group, generator=gen(rank))
    with pytest.raises(RankFailedError, match=r"num_particles.*multiple of the world size"):
        _fk(group, num_particles=4 * world + 1)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_equals_single_process(world):
    spawn(_equivalence_worker, world)


class _FailingReward:
    """LIN, except that on `bad_rank` the `call`-th evaluation raises or returns NaN or hangs."""

    def __init__(self, bad_rank: int, call: int, mode: str) -> None:
        self.bad = dist.get_rank() == bad_rank
        self.call = call
        self.mode = mode
        self.calls = 0

    def __call__(self, z):
        self.calls += 1
        out = LIN(z)
        if self.bad and self.calls == self.call:
            if self.mode == "raise":
                raise RuntimeError("CUDA out of memory (simulated)")
            if self.mode == "hang":
                time.sleep(5.0)
            out = out.clone()
            out[1] = float("nan")
        return out


def _failure_worker(rank: int, world: int, port: int) -> None:
    _init(rank, world, port)
    group = Sharding(dist.group.WORLD, timeout=3.0)

    start = time.perf_counter()
    with pytest.raises(RankFailedError, match=r"rank 1 of \d failed at step 3: RuntimeError: CUDA"):
        _fk(group, reward=_FailingReward(1, 3, "raise"))
    assert time.perf_counter() - start < 3.0

    # NaN: every rank raises the same RewardError with the global index and the rank holding it
    n_loc = 16 // world
    with pytest.raises(
        RewardError, match=rf"step 1 .*indices \[{n_loc + 1}\] \(held by rank\(s\) 1\)"
    ):
        _fk(group, reward=_FailingReward(1, 1, "nan"))

    # best-of-N: a rank raising in its reward
    with pytest.raises(RankFailedError, match=r"rank 1 of \d failed at step 5: RuntimeError"):
        best_of_n(
            gmm(),
            _FailingReward(1, 1, "raise"),
            transition=SDE(),
            num_particles=16,
            time_grid=GRID,
            shape=(2,),
            generator=gen(0),
            progress=False,
            process_group=group,
        )

    # the group is still usable after announced failures
    _same_fk(_fk(None), _fk(group), "after failures")
    dist.barrier()
    dist.destroy_process_group()


def _hang_worker(rank: int, world: int, port: int) -> None:
    """A hanging rank: the others give up after the timeout with a clear error."""
    _init(rank, world, port)
    group = Sharding(dist.group.WORLD, timeout=3.0)
    start = time.perf_counter()
    try:
        _fk(group, reward=_FailingReward(1, 2, "hang"))
    except DistributedTimeoutError as exc:
        if rank != 1:  # the hanging rank itself finds its peers gone: any error is fine for it
            assert "within 3 s" in str(exc) and "step 2" in str(exc)
            assert time.perf_counter() - start < 3.0 + 1.5
    except Exception:
        assert rank == 1
    else:
        raise AssertionError("no error raised")
    # The abandoned gloo collective cannot be torn down cleanly (gloo aborts in its destructor
    # when a peer left mid-collective); the assertions above are what this test checks.
    sys.stdout.flush()
    os._exit(0)


def test_failing_rank_makes_every_rank_raise():
    spawn(_failure_worker, 2)


def test_hanging_rank_times_out_on_every_other_rank():
    spawn(_hang_worker, 2)


TORCHRUN_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from glass_core.align import fk_steering
from glass_core.align.distributed import init
from glass_core.rewards import LinearReward
from glass_core.transitions import Glass
from align_fixtures import GRID, gen, gmm

group = init(timeout=60)
kw = dict(transition=Glass(inner_steps=3), num_particles=32, time_grid=GRID, shape=(2,),
          dtype=torch.float64, progress=False)
got = fk_steering(gmm(), LinearReward([1.0, 0.5]), process_group=group, generator=gen(0), **kw)
ref = fk_steering(gmm(), LinearReward([1.0, 0.5]), generator=gen(0), **kw)
assert torch.equal(ref.samples, got.samples) and ref.log_evidence == got.log_evidence
print(f"rank {{got.rank}} of {{got.world_size}} ok", flush=True)
torch.distributed.destroy_process_group()
os._exit(0)  # gloo may abort in interpreter finalisation after a clean run (see spawn_ranks)
"""


def test_torchrun_launch(tmp_path):
    """The documented launch: torchrun + glass_core.align.distributed.init() from its env."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        TORCHRUN_SCRIPT.format(tests=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(free_port()), str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 0 of 2 ok" in out.stdout and "rank 1 of 2 ok" in out.stdout


def test_process_group_needs_initialised_distributed():
    assert not dist.is_initialized()
    with pytest.raises(InvalidInputError, match=r"process_group.*initialised"):
        _fk(Sharding())
    with pytest.raises(InvalidInputError, match="process_group"):
        best_of_n(
            gmm(),
            LIN,
            transition=SDE(),
            num_particles=4,
            time_grid=GRID,
            shape=(2,),
            process_group=Sharding(),
        )


def test_the_given_sharding_reaches_the_sharded_run():
    """With torch.distributed up (one gloo rank in this process), fk_steering and best_of_n shard
    with the Sharding they are given: its timeout is checked (a default Sharding would pass)."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    bon = dict(transition=SDE(), num_particles=4, time_grid=GRID, shape=(2,))
    try:
        for run in (_fk, lambda pg: best_of_n(gmm(), LIN, process_group=pg, **bon)):
            with pytest.raises(InvalidInputError) as err:
                run(Sharding(timeout=0.0))
            assert str(err.value) == "`process_group.timeout` must be > 0 seconds, got 0.0"
    finally:
        dist.destroy_process_group()
