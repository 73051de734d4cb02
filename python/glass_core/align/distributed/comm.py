"""Communication of a sharded run.

The process group and its timeout (:class:`Sharding`), the
collectives with a status header that turn one rank's failure into an error on every rank, and
the argument handshake run before any model call.

Every collective carries a status flag. A rank whose step raises (a reward or model error, OOM,
...) joins the next collective flagged as failed, the ranks exchange the error text and all raise
:class:`RankFailedError` naming the failed rank(s) and step. A rank that dies or hangs makes the
others raise :class:`DistributedTimeoutError` after ``Sharding.timeout`` seconds (with NCCL the
NCCL watchdog enforces the process group's own timeout: give ``init`` the same). Argument errors
found on any rank also surface as RankFailedError (step 0) on every rank.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch

from glass_core.align._common import Generator, check_finite_float, fail
from glass_core.align._config import SamplingConfig
from glass_core.errors import (  # noqa: F401  (re-exported: the old import path)
    DistributedTimeoutError,
    GlassError,
    InvalidInputError,
    RankFailedError,
)

_MSG_BYTES = 2048


@dataclass(frozen=True)
class Sharding:
    """Say how to shard a run.

    The process group (None = the default group, which must be initialised),
    the timeout in seconds of every collective (it must exceed the longest time by which one
    rank can lag another between two potential steps), and whether the final samples are
    all-gathered to every rank (``gather=False`` leaves ``samples`` as this rank's shard, with
    ``local_slots`` saying which particles they are).
    """

    group: Any = None
    timeout: float = 300.0
    gather: bool = True


def resolve_sharding(process_group: Any) -> Sharding:
    """Return the :class:`Sharding` for `process_group`.

    ``process_group`` as given to fk_steering/best_of_n: a ProcessGroup (e.g.
    ``torch.distributed.group.WORLD``) or a :class:`Sharding`.
    """
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

    Backend: NCCL when CUDA is available, else gloo. With NCCL the local GPU is selected.
    """
    import os

    import torch.distributed as dist

    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return dist.group.WORLD


@dataclass
class CommStats:
    """Count the bytes and seconds this rank spent communicating."""

    gather_bytes: int = 0  # bytes this rank contributed to the per-step reward all-gathers
    result_bytes: int = 0  # bytes this rank contributed to gathering the results (samples)
    setup_bytes: int = 0  # handshake and error exchange
    migration_bytes: int = 0  # particle bytes this rank sent point-to-point
    time: float = 0.0  # seconds inside collectives and exchanges (incl. waiting for peers)


class Comm:
    """One rank's side of the collectives of a run, with byte and time accounting."""

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

    def all_gather(
        self, buf: torch.Tensor, what: str, step: int, kind: str = "gather"
    ) -> torch.Tensor:
        """Gather `buf` from every rank to the host as [W, *buf.shape] (timed, counted)."""
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

        Raises RankFailedError on every rank if any rank passed `error`.
        """
        buf = torch.zeros(2 + size, dtype=dtype)
        buf[0] = 1 if error is not None else 0
        buf[1] = step
        if error is None and payload is not None:
            buf = torch.cat([buf[:2].to(payload.device), payload.to(dtype).reshape(-1)])
        out = self.all_gather(buf, what, step, "gather" if step > 0 else "setup")
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
        out = self.all_gather(buf, "error exchange", step, "setup")
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


def fingerprint(generator: Generator) -> int:
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


def handshake(comm: Comm, config: list[int] | None, error: BaseException | None) -> None:
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


def run_signature(cfg: SamplingConfig, generator: Generator) -> list[int]:
    """Return what every rank must agree on (see handshake)."""
    return [
        cfg.num_particles,
        cfg.num_groups,
        len(cfg.grid),
        math.prod(cfg.shape),
        fingerprint(generator),
    ]
