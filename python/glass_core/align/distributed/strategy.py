"""The sharded particle-storage strategy.

See :mod:`glass_core.align.storage` for the interface
the FK and best-of-N loops use, and the package doc for how a sharded run reproduces one
process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from glass_core.align._common import Generator, ungroup
from glass_core.align._config import SamplingConfig
from glass_core.align.distributed.comm import (
    Comm,
    CommStats,
    handshake,
    resolve_sharding,
    run_signature,
)
from glass_core.align.distributed.layout import Layout, gather_samples, migrate
from glass_core.align.distributed.migration import contiguous_layout
from glass_core.align.distributed.noise import ShardedNoise
from glass_core.align.results import BestOfNResult, FKResult

if TYPE_CHECKING:
    from glass_core.weights import StepResult

C = TypeVar("C", bound=SamplingConfig)


@dataclass(frozen=True, kw_only=True)
class ShardedFKResult(FKResult):
    """FKResult of a sharded run (identical on every rank) plus this rank's view and traffic.

    ``migrated[s]`` / ``transfers[s]``: slots that changed rank / particles sent at potential
    step s (0 where no resampling), summed over ranks.
    """

    rank: int
    world_size: int
    local_slots: np.ndarray  # [n_local] or [B, n_local]: slot of each local row
    local_samples: torch.Tensor  # [B*n_local, ...] this rank's particles (local_slots order)
    migrated: np.ndarray  # [S] int64
    transfers: np.ndarray  # [S] int64
    comm: CommStats


@dataclass(frozen=True, kw_only=True)
class ShardedBestOfNResult(BestOfNResult):
    """BestOfNResult of a sharded run (identical on every rank) plus this rank's shard."""

    rank: int
    world_size: int
    local_samples: torch.Tensor  # [B*n_local, ...]; rank r holds slots [r n, (r+1) n) per group
    comm: CommStats


class ShardedStorage:
    """N / W particles of every group on each of the W ranks of a process group."""

    label = " (sharded)"
    fk_result = ShardedFKResult
    best_of_n_result = ShardedBestOfNResult

    def __init__(self, process_group: Any) -> None:
        self.sharding = resolve_sharding(process_group)
        self.comm = Comm(self.sharding)
        self.is_main = self.comm.rank == 0
        self.layout: Layout | None = None
        self.noise: ShardedNoise | None = None
        self.local_rows = 0

    def configure(self, validate: Callable[[int], C], generator: Generator) -> C:
        """Validate the arguments and set the run up (see ParticleStorage.configure)."""
        comm = self.comm
        try:
            cfg = validate(comm.world)
            config, error = run_signature(cfg, generator), None
        except Exception as exc:  # every rank must learn about it
            config, error = None, exc
        handshake(comm, config, error)  # raises on every rank if any rank failed
        layout = np.stack([contiguous_layout(cfg.num_particles, comm.world)] * cfg.num_groups)
        self.layout = Layout(layout, comm.rank)
        self.noise = ShardedNoise(
            generator, cfg.num_groups * cfg.num_particles, self.layout.local_rows()
        )
        self.local_rows = cfg.num_groups * cfg.local_particles
        return cfg

    def _layout(self) -> Layout:
        assert self.layout is not None, "configure() first"
        return self.layout

    @property
    def host_device(self) -> torch.device | None:
        """Return where the potential state lives (see ParticleStorage.host_device)."""
        return torch.device("cpu")  # the gathered rewards are on the host already

    @contextlib.contextmanager
    def guard(self, step: int) -> Iterator[None]:
        """Guard the work of transition `step` (see ParticleStorage.guard)."""
        try:
            yield
        except Exception as exc:  # join the pending gather flagged as failed
            self.comm.fail(exc, self.local_rows, step)

    def gather_rewards(self, local: torch.Tensor, step: int) -> torch.Tensor:
        """Return the [B*N] rewards of all slots (see ParticleStorage.gather_rewards)."""
        gathered = self.comm.gather(local, self.local_rows, step)
        return torch.from_numpy(self._layout().to_slots(gathered.numpy()).reshape(-1))

    def held_by(self, flat_slots: np.ndarray) -> list[int] | None:
        """Return the processes holding `flat_slots` (see ParticleStorage.held_by)."""
        return self._layout().owners(flat_slots)

    def follow(
        self, res: StepResult, flat_ancestors: torch.Tensor | None, parts: list[Any], step: int
    ) -> list[Any]:
        """Move `parts` to their new slots (see ParticleStorage.follow)."""
        layout = self._layout()
        if flat_ancestors is None:
            layout.moved.append(0)
            layout.transfers.append(0)
            return parts
        present = [p for p in parts if p is not None]
        moved = iter(
            migrate(
                self.comm,
                layout,
                np.asarray(res.ancestors),
                np.asarray(res.resampled),
                present,
                step,
            )
        )
        assert self.noise is not None
        self.noise.rows = layout.local_rows()
        return [None if p is None else next(moved) for p in parts]

    def gathered_samples(self, x: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
        """Return the [B, N, ...] samples (see ParticleStorage.gathered_samples)."""
        if self.sharding.gather:
            return gather_samples(self.comm, self._layout(), x)
        return x.reshape(cfg.num_groups, cfg.local_particles, *cfg.shape)

    def best_samples(
        self, x: torch.Tensor, index: torch.Tensor, cfg: SamplingConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (samples, best sample per group) (see ParticleStorage.best_samples)."""
        num_b, n_loc, shape = cfg.num_groups, cfg.local_particles, cfg.shape
        rows = torch.arange(num_b)
        index = index.cpu()
        samples = self.gathered_samples(x, cfg)
        if self.sharding.gather:
            return samples, samples[rows, index.to(samples.device)]
        # every rank contributes its candidate per group (zeros if it does not own the best)
        rank = self.comm.rank
        owner = (index // n_loc).numpy()
        mine = torch.zeros((num_b, *shape), dtype=x.dtype, device=x.device)
        for b in np.flatnonzero(owner == rank):
            mine[b] = samples[b, int(index[b]) - rank * n_loc]
        flat = mine.reshape(num_b, -1).contiguous().view(torch.uint8)
        allb = self.comm.all_gather(flat, "all-gather of the best samples", -1, "result")
        allb = allb.view(x.dtype).reshape(self.comm.world, num_b, *shape)
        return samples, allb[torch.from_numpy(owner), rows].to(x.device)

    def best_of_n_extra(self, x: torch.Tensor, cfg: SamplingConfig) -> dict[str, Any]:
        """Return the extra best-of-N result fields (see ParticleStorage.best_of_n_extra)."""
        return dict(
            rank=self.comm.rank, world_size=self.comm.world, local_samples=x, comm=self.comm.stats
        )

    def fk_extra(self, x: torch.Tensor, cfg: SamplingConfig) -> dict[str, Any]:
        """Return the extra FK result fields (see ParticleStorage.fk_extra)."""
        layout = self._layout()
        return dict(
            self.best_of_n_extra(x, cfg),
            local_slots=ungroup(layout.layouts[:, self.comm.rank, :].copy(), cfg.grouped),
            migrated=np.asarray(layout.moved, dtype=np.int64),
            transfers=np.asarray(layout.transfers, dtype=np.int64),
        )
