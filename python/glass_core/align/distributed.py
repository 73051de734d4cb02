"""Particles sharded across torch.distributed ranks: ``fk_steering`` / ``best_of_n`` with
``process_group=`` (launch with ``torchrun --nproc-per-node K``; gloo on CPU, NCCL on GPUs).

Each of the W ranks holds n = N / W particles of every group and runs its own model calls.
At a potential step the ranks all-gather only their rewards (float64, n per group and rank, plus
a 2-value status header); every rank then runs the same Potential and the same native
``SMCState`` step from the shared seed on all N values, so the weights, ancestors, genealogy,
log-evidence and ESS are global and identical everywhere. Particles then move with
``batch_isend_irecv`` following :func:`glass_core.align.migration.plan_migration`: only the
particles whose new slot cannot stay on the ancestor's rank move (the minimal count), a particle
needed twice by one receiver is sent once, and every rank ends with exactly n particles per group.

Reproducing the single-process run: the particle in "slot" i (its row in the single-process
batch) is tracked through migrations by a per-group layout (``local_slots``). All noise is drawn
by :class:`ShardedNoise`, which asks the user's generator for exactly what the single process
would draw (all B*N rows) and keeps this rank's rows, so every particle gets the noise of its
slot. Cost: each rank generates the full noise tensor of one transition call (B*N x sample size,
transiently, on the generator's device) and O(B*N*sample) RNG work; for FLUX latents
(16 x 128 x 128 float32 = 1 MiB per particle) and N=1024 that is 1 GiB of transient memory per
draw, so for very large N x latent products prefer several runs. Samples are therefore the same
as a single process with the same seed and total N, bit-for-bit when the model gives each row
the same bits whatever the batch composition (checked for the analytic GMM in the tests).

Failure: every collective carries a status flag. A rank whose step raises (a reward or model
error, OOM, ...) joins the next collective flagged as failed, the ranks exchange the error text
and all raise :class:`RankFailedError` naming the failed rank(s) and step. A rank that dies or
hangs makes the others raise :class:`DistributedTimeoutError` after ``Sharding.timeout`` seconds
(with NCCL the NCCL watchdog enforces the process group's own timeout: give ``init`` the same).
Argument errors found on any rank also surface as RankFailedError (step 0) on every rank.
Measured traffic and times: docs/benchmarks/distributed.md.
NaN/inf rewards are caught after the gather, so every rank raises the same ``RewardError`` with
global particle indices and the ranks holding them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn, cast

import numpy as np
import torch

from glass_core import _random
from glass_core.align._common import (
    CountedModel,
    Generator,
    Timer,
    check_finite_float,
    draw_seeds,
    fail,
    initial_noise,
    nonfinite_reward_error,
    progress_bar,
    propagate,
    ungroup,
)
from glass_core.align._config import SCHEMES as SCHEMES  # re-exported
from glass_core.align._config import FKConfig, SamplingConfig
from glass_core.align.best_of_n import best_of_n_result
from glass_core.align.fk import FKBookkeeping, score_potential_step
from glass_core.align.migration import MigrationPlan, contiguous_layout, plan_migration
from glass_core.align.results import BestOfNResult, FKResult
from glass_core.errors import GlassError, InvalidInputError
from glass_core.rewards.base import Reward, check_rewards

_MSG_BYTES = 2048


class RankFailedError(GlassError, RuntimeError):
    """A rank raised during a sharded run; raised on every rank. ``ranks`` and ``step`` say where
    (step k is the transition t_{k-1} -> t_k; 0 is argument checking before the first one)."""

    def __init__(self, message: str, ranks: list[int], step: int) -> None:
        super().__init__(message)
        self.ranks = ranks
        self.step = step


class DistributedTimeoutError(GlassError, TimeoutError):
    """A collective did not complete within ``Sharding.timeout`` (a rank died, hangs or left)."""


@dataclass(frozen=True)
class Sharding:
    """How to shard: the process group (None = the default group, which must be initialised),
    the timeout in seconds of every collective (it must exceed the longest time by which one
    rank can lag another between two potential steps), and whether the final samples are
    all-gathered to every rank (``gather=False`` leaves ``samples`` as this rank's shard, with
    ``local_slots`` saying which particles they are)."""

    group: Any = None
    timeout: float = 300.0
    gather: bool = True


def resolve_sharding(process_group: Any) -> Sharding:
    """``process_group`` as given to fk_steering/best_of_n: a ProcessGroup (e.g.
    ``torch.distributed.group.WORLD``) or a :class:`Sharding`."""
    import torch.distributed as dist

    sharding = process_group if isinstance(process_group, Sharding) else Sharding(process_group)
    if not (dist.is_available() and dist.is_initialized()):
        raise fail(
            "process_group",
            "needs torch.distributed initialised (launch with torchrun and call "
            "torch.distributed.init_process_group, or glass_core.align.distributed.init())",
        )
    if sharding.group is not None and not isinstance(sharding.group, dist.ProcessGroup):
        raise fail(
            "process_group",
            "must be a torch.distributed.ProcessGroup or a Sharding, "
            f"got {type(sharding.group).__name__}",
        )
    timeout = check_finite_float(sharding.timeout, "process_group.timeout")
    if timeout <= 0:
        raise fail("process_group.timeout", f"must be > 0 seconds, got {timeout}")
    return sharding


def init(backend: str | None = None, timeout: float = 300.0) -> Any:
    """Initialise the default group from torchrun's environment (idempotent) and return it.
    Backend: NCCL when CUDA is available, else gloo. With NCCL the local GPU is selected."""
    import os

    import torch.distributed as dist

    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return dist.group.WORLD


# --------------------------------------------------------------------------------------------
# communication


@dataclass
class CommStats:
    gather_bytes: int = 0  # bytes this rank contributed to the per-step reward all-gathers
    result_bytes: int = 0  # bytes this rank contributed to gathering the results (samples)
    setup_bytes: int = 0  # handshake and error exchange
    migration_bytes: int = 0  # particle bytes this rank sent point-to-point
    time: float = 0.0  # seconds inside collectives and exchanges (incl. waiting for peers)


class _Comm:
    def __init__(self, sharding: Sharding) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.group = sharding.group
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.timeout = timedelta(seconds=float(sharding.timeout))
        self.device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend(self.group) == "nccl"
            else torch.device("cpu")
        )
        self.stats = CommStats()

    def _wait(self, work: Any, what: str, step: int) -> None:
        try:
            work.wait(self.timeout)
        except RuntimeError as exc:
            raise DistributedTimeoutError(
                f"rank {self.rank} of {self.world}: {what} at step {step} failed or did not "
                f"complete within {self.timeout.total_seconds():g} s: another rank died, hangs or "
                f"left the run ({exc})"
            ) from exc

    def _all_gather(
        self, buf: torch.Tensor, what: str, step: int, kind: str = "gather"
    ) -> torch.Tensor:
        start = time.perf_counter()
        rows = (self.world * buf.shape[0], *buf.shape[1:])  # concatenated along dim 0
        out = torch.empty(rows, dtype=buf.dtype, device=self.device)
        work = self.dist.all_gather_into_tensor(
            out, buf.to(self.device), group=self.group, async_op=True
        )
        self._wait(work, what, step)
        nbytes = buf.numel() * buf.element_size()
        setattr(self.stats, f"{kind}_bytes", getattr(self.stats, f"{kind}_bytes") + nbytes)
        host = out.cpu().reshape(self.world, *buf.shape)  # the one host sync of the step
        self.stats.time += time.perf_counter() - start
        return host

    def gather(
        self,
        payload: torch.Tensor | None,
        size: int,
        step: int,
        *,
        error: BaseException | None = None,
        dtype: torch.dtype = torch.float64,
        what: str = "all-gather of rewards",
    ) -> torch.Tensor:
        """All-gather `size` values per rank behind a status header -> [W, size] on the CPU.
        Raises RankFailedError on every rank if any rank passed `error`."""
        buf = torch.zeros(2 + size, dtype=dtype)
        buf[0] = 1 if error is not None else 0
        buf[1] = step
        if error is None and payload is not None:
            buf = torch.cat([buf[:2].to(payload.device), payload.to(dtype).reshape(-1)])
        out = self._all_gather(buf, what, step, "gather" if step > 0 else "setup")
        failed = torch.nonzero(out[:, 0] != 0).flatten().tolist()
        if failed:
            self._raise_failure(failed, [int(out[r, 1]) for r in failed], error, step)
        return out[:, 2:]

    def fail(self, error: BaseException, size: int, step: int, **kw: Any) -> NoReturn:
        """Join the pending gather as failed (then raise on every rank)."""
        self.gather(None, size, step, error=error, **kw)
        raise AssertionError("unreachable")  # gather raised

    def _raise_failure(
        self, failed: list[int], steps: list[int], error: BaseException | None, step: int
    ) -> NoReturn:
        text = b"" if error is None else f"{type(error).__name__}: {error}".encode()[:_MSG_BYTES]
        buf = torch.zeros(_MSG_BYTES + 1, dtype=torch.uint8)
        buf[0] = len(text) > 0
        if text:
            buf[1 : 1 + len(text)] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
        out = self._all_gather(buf, "error exchange", step, "setup")
        lines = []
        for r, s in zip(failed, steps, strict=True):
            raw = bytes(out[r, 1:].tolist()).rstrip(b"\0").decode(errors="replace")
            lines.append(f"rank {r} of {self.world} failed at step {s}: {raw or '(no message)'}")
        msg = "; ".join(lines)
        raise RankFailedError(msg, failed, min(steps)) from error

    def exchange(
        self,
        sends: dict[int, torch.Tensor],
        recv_sizes: dict[int, tuple[int, int]],
        step: int,
    ) -> dict[int, torch.Tensor]:
        """Point-to-point: send uint8 [k, P] blocks to peers, receive [k, P] blocks from peers."""
        dist = self.dist
        start = time.perf_counter()
        ops, recvs = [], {}
        for peer, block in sends.items():
            block = block.to(self.device)
            ops.append(dist.P2POp(dist.isend, block, self._global(peer), self.group))
            self.stats.migration_bytes += block.numel()
        for peer, shape in recv_sizes.items():
            recvs[peer] = torch.empty(shape, dtype=torch.uint8, device=self.device)
            ops.append(dist.P2POp(dist.irecv, recvs[peer], self._global(peer), self.group))
        if ops:
            for work in dist.batch_isend_irecv(ops):
                self._wait(work, "particle exchange", step)
        self.stats.time += time.perf_counter() - start
        return recvs

    def _global(self, peer: int) -> int:
        if self.group is None:
            return peer
        return int(self.dist.get_global_rank(self.group, peer))


def _fingerprint(generator: Generator) -> int:
    """63-bit hash of the generator state(s) (the global RNG when None)."""
    if generator is None:
        states = [torch.get_rng_state()]
    elif isinstance(generator, torch.Generator):
        states = [generator.get_state()]
    else:
        states = [g.get_state() for g in generator]
    h = hashlib.blake2b(digest_size=8)
    for s in states:
        h.update(s.cpu().numpy().tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def _handshake(comm: _Comm, config: list[int] | None, error: BaseException | None) -> None:
    """Every rank must run the same call: same sizes and an identically seeded generator."""
    names = ["num_particles", "num_groups", "len(time_grid)", "sample size", "generator state"]
    size = len(names)
    if error is not None:
        comm.fail(error, size, 0, dtype=torch.int64, what="argument handshake")
    payload = torch.tensor(config, dtype=torch.int64)
    rows = comm.gather(payload, size, 0, dtype=torch.int64, what="argument handshake")
    for r in range(1, comm.world):
        diff = [n for i, n in enumerate(names) if rows[r, i] != rows[0, i]]
        if diff:
            raise InvalidInputError(
                f"`process_group`: rank {r} was called with a different {', '.join(diff)} than "
                "rank 0; every rank must pass the same arguments and a generator seeded the same"
            )


# --------------------------------------------------------------------------------------------
# noise and layout


class ShardedNoise:
    """A rank's view of a generator (None, one, or a list of B): draws exactly what the single
    process would draw for all B*N rows and keeps this rank's rows (``rows``: global flat row of
    each local row). Used through the ``glass_randn``/``glass_rand`` hook of glass_core._random."""

    def __init__(self, generator: Generator, total_rows: int, rows: torch.Tensor) -> None:
        self.generator = generator
        self.total_rows = total_rows
        self.rows = rows

    def _draw_device(self, device: torch.device) -> torch.device:
        """Draw where the generator lives (a CPU generator keeps the full draw in host memory;
        only this rank's rows go to `device`); the global RNG (None) draws on `device`."""
        gen = self.generator
        gens = [gen] if isinstance(gen, torch.Generator) else list(gen or [])
        devices = {g.device for g in gens if isinstance(g, torch.Generator)}
        return devices.pop() if gens and len(devices) == 1 else device

    def _take(self, full: torch.Tensor, device: torch.device) -> torch.Tensor:
        return full.index_select(0, self.rows.to(full.device)).to(device)

    def _check(self, shape: tuple[int, ...]) -> None:
        if not shape or shape[0] != self.rows.numel():
            raise InvalidInputError(
                f"generator: a sharded run draws noise for this rank's {self.rows.numel()} rows, "
                f"got a request of shape {shape} (transitions must draw for the whole batch)"
            )

    def _draw(
        self,
        fn: Callable[..., torch.Tensor],
        shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        self._check(shape)
        full_shape = (self.total_rows, *shape[1:])
        full = fn(full_shape, self.generator, device=self._draw_device(device), dtype=dtype)
        return self._take(full, device)

    def glass_randn(
        self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return self._draw(_random.randn, shape, device, dtype)

    def glass_rand(
        self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return self._draw(_random.rand, shape, device, dtype)


@dataclass
class _Layout:
    """layouts[b, r, j]: row-local slot of group b held by local row j of rank r."""

    layouts: np.ndarray  # [B, W, n]
    rank: int
    moved: list[int] = field(default_factory=list)
    transfers: list[int] = field(default_factory=list)

    @property
    def num_groups(self) -> int:
        return int(self.layouts.shape[0])

    @property
    def n_total(self) -> int:
        return int(self.layouts.shape[1] * self.layouts.shape[2])

    @property
    def n_local(self) -> int:
        return int(self.layouts.shape[2])

    def local_rows(self) -> torch.Tensor:
        """Global flat rows (b*N + slot) of this rank's local rows, group-major."""
        b = np.arange(self.num_groups)[:, None] * self.n_total
        return torch.from_numpy((b + self.layouts[:, self.rank, :]).reshape(-1))

    def to_slots(self, per_rank: np.ndarray) -> np.ndarray:
        """[W, B*n] gathered per-rank values -> [B, N] in slot order."""
        bsz, world, n = self.layouts.shape
        vals = per_rank.reshape(world, bsz, n).transpose(1, 0, 2)
        out = np.empty((bsz, world * n), dtype=per_rank.dtype)
        out[np.arange(bsz)[:, None, None], self.layouts] = vals
        return out

    def owners(self, flat_slots: np.ndarray) -> list[int]:
        bsz, world, n = self.layouts.shape
        owner = np.empty((bsz, world * n), dtype=np.int64)
        owner[np.arange(bsz)[:, None, None], self.layouts] = np.arange(world)[None, :, None]
        return sorted(set(owner.reshape(-1)[flat_slots].tolist()))


def _pack(parts: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    k = rows.numel()
    return torch.cat(
        [p.index_select(0, rows.to(p.device)).reshape(k, -1).view(torch.uint8) for p in parts],
        dim=1,
    )


def _unpack(block: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, off = [], 0
    for p in like:
        nb = p[:1].numel() * p.element_size()
        piece = block[:, off : off + nb].contiguous().view(p.dtype)
        out.append(piece.reshape(block.shape[0], *p.shape[1:]).to(p.device))
        off += nb
    return out


def _migrate(
    comm: _Comm,
    layout: _Layout,
    ancestors: np.ndarray,
    resampled: np.ndarray,
    parts: list[torch.Tensor],
    step: int,
) -> list[torch.Tensor]:
    """Move `parts` (local [B*n, ...] tensors) so this rank holds its slots of the new layout."""
    me, n = comm.rank, layout.n_local
    plans: dict[int, MigrationPlan] = {}
    moved = transfers = 0
    for b in np.flatnonzero(resampled):
        plans[b] = plan_migration(layout.layouts[b], ancestors[b])
        moved += plans[b].moved
        transfers += plans[b].transfers
    layout.moved.append(moved)
    layout.transfers.append(transfers)

    def rows_between(dst: int, src: int) -> np.ndarray:  # src-local flat rows dst needs
        chunks = [b * n + p.recv_rows(dst, src) for b, p in plans.items()]
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)

    sends, recv_sizes, recv_rows = {}, {}, {}
    width = sum(p[:1].numel() * p.element_size() for p in parts)
    for peer in range(comm.world):
        if peer == me:
            continue
        out_rows = rows_between(peer, me)
        if out_rows.size:
            sends[peer] = _pack(parts, torch.from_numpy(out_rows))
        in_rows = rows_between(me, peer)
        if in_rows.size:
            recv_sizes[peer] = (int(in_rows.size), width)
            recv_rows[peer] = in_rows
    recvs = comm.exchange(sends, recv_sizes, step)

    # gather index into cat([local parts, received from peer 0, peer 1, ...])
    base, offsets = parts[0].shape[0], {}
    for peer in sorted(recvs):
        offsets[peer] = base
        base += recv_rows[peer].size
    index = np.arange(layout.num_groups * n, dtype=np.int64)  # unresampled groups stay
    for b, plan in plans.items():
        src_rank, src_row = plan.source_rank[me], plan.source_row[me]
        idx = np.where(src_rank == me, b * n + src_row, 0)
        for peer in offsets:
            mask = src_rank == peer
            pos = np.searchsorted(recv_rows[peer], b * n + src_row[mask])
            idx[mask] = offsets[peer] + pos
        index[b * n : (b + 1) * n] = idx
        layout.layouts[b] = plan.new_layout
    received = [_unpack(recvs[p], parts) for p in sorted(recvs)]
    out = []
    for i, part in enumerate(parts):
        pool = torch.cat([part, *(r[i] for r in received)]) if received else part
        out.append(pool.index_select(0, torch.from_numpy(index).to(part.device)))
    return out


def _gather_samples(comm: _Comm, layout: _Layout, x: torch.Tensor) -> torch.Tensor:
    """Local [B*n, ...] -> [B, N, ...] in slot order on every rank."""
    bsz, world, n = layout.layouts.shape
    flat = x.reshape(x.shape[0], -1).contiguous()
    raw = comm._all_gather(flat.view(torch.uint8), "all-gather of samples", -1, "result")
    allx = raw.view(x.dtype).reshape(world, bsz, n, *x.shape[1:]).transpose(0, 1)
    out = torch.empty((bsz, world * n, *x.shape[1:]), dtype=x.dtype)
    out[torch.arange(bsz)[:, None, None], torch.from_numpy(layout.layouts)] = allx
    return out.to(x.device)


# --------------------------------------------------------------------------------------------
# algorithms


@dataclass(frozen=True)
class ShardedFKResult(FKResult):
    """FKResult of a sharded run (identical on every rank) plus this rank's view and traffic.
    ``migrated[s]`` / ``transfers[s]``: slots that changed rank / particles sent at potential
    step s (0 where no resampling), summed over ranks."""

    rank: int
    world_size: int
    local_slots: np.ndarray  # [n_local] or [B, n_local]: slot of each local row
    local_samples: torch.Tensor  # [B*n_local, ...] this rank's particles (local_slots order)
    migrated: np.ndarray  # [S] int64
    transfers: np.ndarray  # [S] int64
    comm: CommStats


def _run_signature(cfg: SamplingConfig, generator: Generator) -> list[int]:
    """What every rank must agree on (see _handshake)."""
    return [cfg.n, cfg.num_groups, len(cfg.grid), math.prod(cfg.shape), _fingerprint(generator)]


def sharded_fk_steering(
    model: Any,
    reward: Reward,
    *,
    transition: Any,
    num_particles: int,
    time_grid: Any,
    shape: Any,
    potential: str = "diff",
    lambda_: float = 1.0,
    resample: str = "systematic",
    ess_threshold: float | None = None,
    resample_every: int | None = None,
    resample_window: tuple[float, float] | None = None,
    final_resample: bool = False,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    track_genealogy: bool = True,
    progress: bool = True,
    profile: bool = False,
    process_group: Any = None,
) -> ShardedFKResult:
    """fk_steering with particles sharded over ``process_group`` (see the module doc); same
    arguments and result fields as :func:`glass_core.align.fk_steering`."""
    args = dict(locals())  # the arguments only
    wall_start = time.perf_counter()
    sharding = resolve_sharding(process_group)
    comm = _Comm(sharding)
    try:
        cfg = FKConfig.from_args(args, world_size=comm.world)
        config, error = _run_signature(cfg, generator), None
    except Exception as exc:  # every rank must learn about it
        config, error = None, exc
    _handshake(comm, config, error)

    num_b, n = cfg.num_groups, cfg.n
    layout = _Layout(np.stack([contiguous_layout(n, comm.world)] * num_b), comm.rank)
    noise = ShardedNoise(generator, num_b * n, layout.local_rows())
    counted = CountedModel(model, cfg.max_batch, timed=profile)
    reward_timer = Timer(profile)
    size = num_b * cfg.n_local
    try:
        x = initial_noise(size, cfg.shape, cast(Any, noise), dtype, device)
        seeds = draw_seeds(generator, num_b)
        error = None
    except Exception as exc:
        error = exc
    if error is not None:
        comm.fail(error, size, 0)
    book = FKBookkeeping(cfg, seeds, torch.device("cpu"), track_genealogy)
    flags = cfg.potential_steps()
    denoised: torch.Tensor | None = None
    rewards = torch.empty(0, dtype=torch.float64)
    reward_dtype = torch.float32
    show = progress and comm.rank == 0

    with torch.no_grad(), progress_bar(cfg.num_steps, show, "FK steering (sharded)") as bar:
        for k in range(1, cfg.num_steps + 1):
            t, t_next = cfg.grid[k - 1], cfg.grid[k]
            final = k == cfg.num_steps
            try:
                x = transition(counted, x, t, t_next, noise, denoised=denoised)
                denoised = None
                bar.update(1)
                if not flags[k]:
                    continue
                denoised, local = score_potential_step(
                    counted, reward, reward_timer, x, t_next, final
                )
                reward_dtype = local.dtype
                error = None
            except Exception as exc:
                error = exc
            if error is not None:
                comm.fail(error, size, k)
            gathered = comm.gather(local, size, k)
            glob = layout.to_slots(gathered.numpy()).reshape(-1)  # [B*N] slot order, float64
            if not np.isfinite(glob).all():
                raise nonfinite_reward_error(glob, k, t_next, layout.owners)
            rewards = torch.from_numpy(glob)
            log_g = book.potential.step(rewards, final=final)
            res, idx = book.step(log_g.numpy(), t_next, final)
            if idx is None:
                layout.moved.append(0)
                layout.transfers.append(0)
                continue
            if final:
                rewards = rewards.index_select(0, idx)
            parts = [x] if denoised is None else [x, denoised]
            parts = _migrate(
                comm, layout, np.asarray(res.ancestors), np.asarray(res.resampled), parts, k
            )
            x = parts[0]
            denoised = parts[1] if len(parts) > 1 else None
            noise.rows = layout.local_rows()

    local_slots = layout.layouts[:, comm.rank, :].copy()
    samples = (
        _gather_samples(comm, layout, x)
        if sharding.gather
        else x.reshape(num_b, cfg.n_local, *cfg.shape)
    )
    return book.result(
        ShardedFKResult,
        samples=samples,
        rewards=rewards.to(dtype=reward_dtype, device=x.device).reshape(num_b, n),
        counted=counted,
        reward_timer=reward_timer,
        wall_start=wall_start,
        rank=comm.rank,
        world_size=comm.world,
        local_slots=ungroup(local_slots, cfg.grouped),
        local_samples=x,
        migrated=np.asarray(layout.moved, dtype=np.int64),
        transfers=np.asarray(layout.transfers, dtype=np.int64),
        comm=comm.stats,
    )


@dataclass(frozen=True)
class ShardedBestOfNResult(BestOfNResult):
    """BestOfNResult of a sharded run (identical on every rank) plus this rank's shard."""

    rank: int
    world_size: int
    local_samples: torch.Tensor  # [B*n_local, ...]; rank r holds slots [r n, (r+1) n) per group
    comm: CommStats


def sharded_best_of_n(
    model: Any,
    reward: Reward,
    *,
    transition: Any,
    n: int,
    time_grid: Any,
    shape: Any,
    generator: Generator = None,
    num_groups: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_batch: int | None = None,
    progress: bool = True,
    process_group: Any = None,
) -> ShardedBestOfNResult:
    """best_of_n with the n samples of every group sharded over ``process_group``. Only the
    rewards (float64) are all-gathered; the best sample comes from its rank (all samples are
    gathered when ``Sharding.gather``)."""
    args = dict(locals())  # the arguments only
    sharding = resolve_sharding(process_group)
    comm = _Comm(sharding)
    try:
        cfg = SamplingConfig.from_args(args, world_size=comm.world)
        config, error = _run_signature(cfg, generator), None
    except Exception as exc:
        config, error = None, exc
    _handshake(comm, config, error)

    num_b, n, n_loc, shape_t = cfg.num_groups, cfg.n, cfg.n_local, cfg.shape
    layout = _Layout(np.stack([contiguous_layout(n, comm.world)] * num_b), comm.rank)
    noise = ShardedNoise(generator, num_b * n, layout.local_rows())
    counted = CountedModel(model, cfg.max_batch, timed=False)
    size = num_b * n_loc
    show = progress and comm.rank == 0
    last = cfg.num_steps
    try:
        with torch.no_grad():
            x = initial_noise(size, shape_t, cast(Any, noise), dtype, device)
            x = propagate(
                counted, transition, x, cfg.grid, cast(Any, noise), show, "best-of-N (sharded)"
            )
            local = check_rewards(reward(x), size, finite=False)
        error = None
    except Exception as exc:
        error = exc
    if error is not None:
        comm.fail(error, size, last)
    gathered = comm.gather(local, size, last)
    glob = layout.to_slots(gathered.numpy())  # [B, N]
    if not np.isfinite(glob).all():
        raise nonfinite_reward_error(glob.reshape(-1), last, 1.0, layout.owners)
    r = torch.from_numpy(glob).to(dtype=local.dtype)
    idx = r.argmax(dim=1)
    rows = torch.arange(num_b)
    if sharding.gather:
        samples = _gather_samples(comm, layout, x)
        best = samples[rows, idx.to(samples.device)]
    else:
        samples = x.reshape(num_b, n_loc, *shape_t)
        # every rank contributes its candidate per group (zeros if it does not own the best)
        owner = (idx // n_loc).numpy()
        mine = torch.zeros((num_b, *shape_t), dtype=x.dtype, device=x.device)
        for b in np.flatnonzero(owner == comm.rank):
            mine[b] = samples[b, int(idx[b]) - comm.rank * n_loc]
        flat = mine.reshape(num_b, -1).contiguous().view(torch.uint8)
        allb = comm._all_gather(flat, "all-gather of the best samples", -1, "result")
        allb = allb.view(x.dtype).reshape(comm.world, num_b, *shape_t)
        best = allb[torch.from_numpy(owner), rows].to(x.device)
    return best_of_n_result(
        ShardedBestOfNResult,
        cfg,
        best=best,
        rewards=r.to(x.device),
        index=idx.to(x.device),
        samples=samples,
        nfe=counted.nfe,
        rank=comm.rank,
        world_size=comm.world,
        local_samples=x,
        comm=comm.stats,
    )
