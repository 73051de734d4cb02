"""Where the particles live, as a strategy the FK and best-of-N loops are written against once.

:class:`LocalStorage` keeps all B*N particles in one batched tensor of this process and follows
the ancestors with ``index_select``. The sharded strategy
(:class:`glass_core.align.distributed.ShardedStorage`) holds N / W particles per group on each of
W ranks, all-gathers the rewards, runs the same native bookkeeping on every rank and migrates only
the particles that change rank. A loop never knows which it has.

Rows are "slots": slot i of group b is row b*N + i of the single-process batch. Every strategy
hands the loop the rewards of all slots (in slot order) and takes the flat ancestors back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import torch

from glass_core.align._common import Generator, as_generator_arg
from glass_core.align._config import SamplingConfig
from glass_core.align.results import BestOfNResult, FKResult

if TYPE_CHECKING:
    from glass_core.weights import StepResult

C = TypeVar("C", bound=SamplingConfig)


class ParticleStorage(Protocol):
    """The particle-storage strategy of one run (configured once, then used by one loop)."""

    is_main: bool  # this process reports progress
    label: str  # appended to progress-bar titles

    @property
    def fk_result(self) -> type[FKResult]:
        """Return the FK result class (strategies may return a subclass)."""
        ...

    @property
    def best_of_n_result(self) -> type[BestOfNResult]:
        """Return the best-of-N result class (strategies may return a subclass)."""
        ...

    def configure(self, validate: Callable[[int], C], generator: Generator) -> C:
        """Validate the arguments (``validate(world_size)``) and set the run up.

        Every process of the run raises if any of them found an error.
        """
        ...

    @property
    def noise(self) -> Any:
        """What the transitions receive as their generator."""
        ...

    @property
    def local_rows(self) -> int:
        """Particles held by this process (all groups)."""
        ...

    @property
    def host_device(self) -> torch.device | None:
        """Where the potential state lives (None: with the particles)."""
        ...

    def guard(self, step: int) -> contextlib.AbstractContextManager[None]:
        """Guard the work of transition `step` (0: setup).

        A failure inside reaches every process of the run.
        """
        ...

    def gather_rewards(self, local: torch.Tensor, step: int) -> torch.Tensor:
        """[local_rows] rewards of this process -> [B*N] rewards of all slots."""
        ...

    def held_by(self, flat_slots: np.ndarray) -> list[int] | None:
        """Which processes hold these slots (for error messages; None when there is one)."""
        ...

    def follow(
        self, res: StepResult, flat_ancestors: torch.Tensor | None, parts: list[Any], step: int
    ) -> list[Any]:
        """Move the per-particle tensors `parts` to their new slots after a potential step.

        None entries pass through; `flat_ancestors` None: nothing resampled.
        """
        ...

    def gathered_samples(self, x: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
        """Return the [B, N, ...] samples in slot order (or this process's shard, if configured)."""
        ...

    def best_samples(
        self, x: torch.Tensor, index: torch.Tensor, cfg: SamplingConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (samples, [B, ...] sample at `index` of each group) from the local particles."""
        ...

    def fk_extra(self, x: torch.Tensor, cfg: SamplingConfig) -> dict[str, Any]:
        """Fields the strategy adds to its `fk_result` class."""
        ...

    def best_of_n_extra(self, x: torch.Tensor, cfg: SamplingConfig) -> dict[str, Any]:
        """Fields the strategy adds to its `best_of_n_result` class."""
        ...


class LocalStorage:
    """All particles in this process."""

    is_main = True
    label = ""
    fk_result = FKResult
    best_of_n_result = BestOfNResult
    noise: Any  # set by configure, before any other use
    local_rows: int

    def configure(self, validate: Callable[[int], C], generator: Generator) -> C:
        """Validate the arguments and set the run up (see ParticleStorage.configure)."""
        cfg = validate(1)
        self.noise = as_generator_arg(generator)
        self.local_rows = cfg.num_groups * cfg.num_particles
        return cfg

    @property
    def host_device(self) -> torch.device | None:
        """Return where the potential state lives (see ParticleStorage.host_device)."""
        return None

    @contextlib.contextmanager
    def guard(self, step: int) -> Iterator[None]:
        """Guard the work of transition `step` (see ParticleStorage.guard)."""
        yield  # a failure simply propagates

    def gather_rewards(self, local: torch.Tensor, step: int) -> torch.Tensor:
        """Return the [B*N] rewards of all slots (see ParticleStorage.gather_rewards)."""
        return local

    def held_by(self, flat_slots: np.ndarray) -> list[int] | None:
        """Return the processes holding `flat_slots` (see ParticleStorage.held_by)."""
        return None

    def follow(
        self, res: StepResult, flat_ancestors: torch.Tensor | None, parts: list[Any], step: int
    ) -> list[Any]:
        """Move `parts` to their new slots (see ParticleStorage.follow)."""
        if flat_ancestors is None:
            return parts
        return [None if p is None else p.index_select(0, flat_ancestors) for p in parts]

    def gathered_samples(self, x: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
        """Return the [B, N, ...] samples (see ParticleStorage.gathered_samples)."""
        return x.reshape(cfg.num_groups, cfg.num_particles, *cfg.shape)

    def best_samples(
        self, x: torch.Tensor, index: torch.Tensor, cfg: SamplingConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (samples, best sample per group) (see ParticleStorage.best_samples)."""
        samples = self.gathered_samples(x, cfg)
        rows = torch.arange(cfg.num_groups, device=index.device)
        return samples, samples[rows, index]

    def fk_extra(self, x: torch.Tensor, cfg: SamplingConfig) -> dict[str, Any]:
        """Return the extra FK result fields (see ParticleStorage.fk_extra)."""
        return {}

    def best_of_n_extra(self, x: torch.Tensor, cfg: SamplingConfig) -> dict[str, Any]:
        """Return the extra best-of-N result fields (see ParticleStorage.best_of_n_extra)."""
        return {}


def particle_storage(process_group: Any) -> ParticleStorage:
    """Return the particle-storage strategy for `process_group`.

    `process_group` as given to fk_steering/best_of_n: None keeps every particle here; a
    torch.distributed ProcessGroup or a ``Sharding`` shards them.
    """
    if process_group is None:
        return LocalStorage()
    from glass_core.align.distributed.strategy import ShardedStorage

    return ShardedStorage(process_group)
