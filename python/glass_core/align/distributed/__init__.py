"""Particles sharded across torch.distributed ranks.

``fk_steering`` / ``best_of_n`` with ``process_group=`` (launch with
``torchrun --nproc-per-node K``; gloo on CPU, NCCL on GPUs).

Each of the W ranks holds n = N / W particles of every group and runs its own model calls.
At a potential step the ranks all-gather only their rewards (float64, n per group and rank, plus
a 2-value status header); every rank then runs the same Potential and the same native
``SMCState`` step from the shared seed on all N values, so the weights, ancestors, genealogy,
log-evidence and ESS are global and identical everywhere. Particles then move with
``batch_isend_irecv`` following :func:`~glass_core.align.distributed.migration.plan_migration`:
only the particles whose new slot cannot stay on the ancestor's rank move (the minimal count), a
particle needed twice by one receiver is sent once, and every rank ends with exactly n particles
per group.

Reproducing the single-process run: the particle in "slot" i (its row in the single-process
batch) is tracked through migrations by a per-group layout (``local_slots``), and all noise is
drawn by :class:`ShardedNoise` so that every particle gets the noise of its slot. Samples are
therefore the same as a single process with the same seed and total N, bit-for-bit when the
model gives each row the same bits whatever the batch composition (checked for the analytic GMM
in the tests). NaN/inf rewards are caught after the gather, so every rank raises the same
``RewardError`` with global particle indices and the ranks holding them.

Modules: :mod:`.strategy` (the particle-storage strategy the loops use), :mod:`.comm`
(collectives, failure protocol, handshake), :mod:`.noise`, :mod:`.layout` (where particles live
and how they move) and :mod:`.migration` (the migration plan, pure numpy).
Measured traffic and times: docs/benchmarks/distributed.md.
"""

from glass_core.align.distributed.comm import (
    CommStats,
    DistributedTimeoutError,
    RankFailedError,
    Sharding,
    init,
    resolve_sharding,
)
from glass_core.align.distributed.noise import ShardedNoise
from glass_core.align.distributed.strategy import (
    ShardedBestOfNResult,
    ShardedFKResult,
    ShardedStorage,
)

__all__ = [
    "CommStats",
    "DistributedTimeoutError",
    "RankFailedError",
    "ShardedBestOfNResult",
    "ShardedFKResult",
    "ShardedNoise",
    "ShardedStorage",
    "Sharding",
    "init",
    "resolve_sharding",
]
