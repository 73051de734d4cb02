"""Minimal particle migration after a resampling step (pure numpy, no communication).

A group of N particles is sharded over W ranks, n = N / W rows each. ``layout[r, j]`` is the
global particle index (the "slot", the row the particle has in the single-process run) held by
local row j of rank r. After resampling, new slot i descends from old slot ``ancestors[i]``.

:func:`plan_migration` decides which rank holds every new slot so that each rank again holds
exactly n slots and as few slots as possible need data from another rank: a rank keeps
min(demand_r, n) of the new slots whose ancestor it already holds (demand_r of them), which is
the most it can keep with n rows. Hence ``moved = N - sum_r min(demand_r, n)`` is the lower bound
of any balanced assignment, and the plan attains it. Which of its demand_r slots a rank keeps
(the first n in slot order) and where the overflow goes (to the ranks with free rows, in rank
order) is arbitrary but deterministic, so every rank computes the same plan from the same
ancestors. With systematic/stratified resampling the ancestors are sorted, so the overflow of a
rank is a few contiguous families and most of them land on a single receiver.

On the wire a particle needed by several new slots on the same receiver is sent once
(``transfers`` counts these unique (particle, receiver) pairs, ``transfers <= moved``).
Within a rank the new slots are kept in increasing slot order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glass_core.errors import InvalidInputError


@dataclass(frozen=True)
class MigrationPlan:
    """Where every new slot lives and where its ancestor comes from (all [W, n] int64)."""

    new_layout: np.ndarray  # [W, n]: global slot held by local row j of rank r after the step
    source_rank: np.ndarray  # [W, n]: rank that held the ancestor of that slot before the step
    source_row: np.ndarray  # [W, n]: local row of that ancestor on its rank before the step

    @property
    def world_size(self) -> int:
        """Return the number of ranks."""
        return int(self.new_layout.shape[0])

    @property
    def moved(self) -> int:
        """New slots whose ancestor lives on another rank (the minimal possible count)."""
        ranks = np.arange(self.world_size)[:, None]
        return int((self.source_rank != ranks).sum())

    @property
    def transfers(self) -> int:
        """Unique (particle, receiving rank) pairs that cross ranks: tensors on the wire."""
        return sum(
            self.recv_rows(dst, src).size
            for dst in range(self.world_size)
            for src in range(self.world_size)
            if src != dst
        )

    def recv_rows(self, dst: int, src: int) -> np.ndarray:
        """Sorted unique local rows of rank `src` (before the step) that rank `dst` needs."""
        mask = self.source_rank[dst] == src
        return np.unique(self.source_row[dst][mask])


def minimal_moves(layout: np.ndarray, ancestors: np.ndarray) -> int:
    """Lower bound on migrated slots of any assignment with n rows per rank."""
    world, n = layout.shape
    owner = np.empty(world * n, dtype=np.int64)
    owner[layout.ravel()] = np.repeat(np.arange(world), n)
    demand = np.bincount(owner[ancestors], minlength=world)
    return int(world * n - np.minimum(demand, n).sum())


def contiguous_layout(num_particles: int, world_size: int) -> np.ndarray:
    """Rank r holds slots [r n, (r+1) n): the layout before the first resampling step."""
    if world_size < 1 or num_particles % world_size != 0:
        raise InvalidInputError(
            f"`num_particles` ({num_particles}) must be a multiple of the world size "
            f"({world_size}) so every rank holds the same number of particles"
        )
    return np.arange(num_particles, dtype=np.int64).reshape(world_size, -1)


def _check(layout: np.ndarray, ancestors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    layout = np.asarray(layout)
    ancestors = np.asarray(ancestors)
    if layout.ndim != 2 or layout.size == 0:
        raise InvalidInputError(f"`layout` must be a non-empty [W, n] array, got {layout.shape}")
    total = layout.size
    if not np.array_equal(np.sort(layout.ravel()), np.arange(total)):
        raise InvalidInputError(f"`layout` must be a permutation of 0..{total - 1}")
    if ancestors.shape != (total,):
        raise InvalidInputError(f"`ancestors` must have shape [{total}], got {ancestors.shape}")
    if not np.issubdtype(ancestors.dtype, np.integer) or (
        total and (ancestors.min() < 0 or ancestors.max() >= total)
    ):
        raise InvalidInputError(f"`ancestors` must be integers in [0, {total})")
    return layout.astype(np.int64, copy=False), ancestors.astype(np.int64, copy=False)


def plan_migration(layout: np.ndarray, ancestors: np.ndarray) -> MigrationPlan:
    """Balanced assignment of new slots to ranks with the fewest migrations (module doc)."""
    layout, ancestors = _check(layout, ancestors)
    world, n = layout.shape
    total = world * n
    owner = np.empty(total, dtype=np.int64)
    row = np.empty(total, dtype=np.int64)
    owner[layout.ravel()] = np.repeat(np.arange(world), n)
    row[layout.ravel()] = np.tile(np.arange(n), world)

    src = owner[ancestors]  # rank holding the ancestor of each new slot
    by_src = np.argsort(src, kind="stable")  # grouped by source rank, slot order inside
    demand = np.bincount(src, minlength=world)
    first = np.concatenate(([0], np.cumsum(demand)[:-1]))
    rank_of_sorted = src[by_src]
    keep = (np.arange(total) - first[rank_of_sorted]) < n
    dest = np.empty(total, dtype=np.int64)
    dest[by_src[keep]] = rank_of_sorted[keep]
    free = n - np.minimum(demand, n)
    dest[by_src[~keep]] = np.repeat(np.arange(world), free)  # overflow fills free rows

    new_layout = np.lexsort((np.arange(total), dest)).reshape(world, n)
    return MigrationPlan(
        new_layout=new_layout,
        source_rank=src[new_layout],
        source_row=row[ancestors[new_layout]],
    )
