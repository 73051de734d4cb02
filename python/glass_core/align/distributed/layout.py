"""Where the particles of a sharded run live and how they move.

The per-group layout (which slot
each local row holds), packing particles into byte blocks, the migration that follows a
resampling step (planned by :mod:`glass_core.align.distributed.migration`) and the final
all-gather of the samples in slot order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from glass_core.align.distributed.comm import Comm
from glass_core.align.distributed.migration import MigrationPlan, plan_migration


@dataclass
class Layout:
    """layouts[b, r, j]: row-local slot of group b held by local row j of rank r."""

    layouts: np.ndarray  # [B, W, n]
    rank: int
    moved: list[int] = field(default_factory=list)
    transfers: list[int] = field(default_factory=list)

    @property
    def num_groups(self) -> int:
        """Return B, the number of groups."""
        return int(self.layouts.shape[0])

    @property
    def n_total(self) -> int:
        """Return N, the particles per group over all ranks."""
        return int(self.layouts.shape[1] * self.layouts.shape[2])

    @property
    def n_local(self) -> int:
        """Return the particles per group on this rank."""
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
        """Return the sorted ranks holding the flat slots `flat_slots`."""
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


def migrate(
    comm: Comm,
    layout: Layout,
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


def gather_samples(comm: Comm, layout: Layout, x: torch.Tensor) -> torch.Tensor:
    """Local [B*n, ...] -> [B, N, ...] in slot order on every rank."""
    bsz, world, n = layout.layouts.shape
    flat = x.reshape(x.shape[0], -1).contiguous()
    raw = comm.all_gather(flat.view(torch.uint8), "all-gather of samples", -1, "result")
    allx = raw.view(x.dtype).reshape(world, bsz, n, *x.shape[1:]).transpose(0, 1)
    out = torch.empty((bsz, world * n, *x.shape[1:]), dtype=x.dtype)
    out[torch.arange(bsz)[:, None, None], torch.from_numpy(layout.layouts)] = allx
    return out.to(x.device)
