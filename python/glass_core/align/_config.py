"""Validated arguments of best_of_n, reward_guidance and fk_steering.

Whatever the particle storage: every check lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from glass_core._checks import optional_positive_int, particle_count
from glass_core.align._common import (
    check_bool,
    check_callable,
    check_finite_float,
    check_model,
    check_shape,
    check_time_grid,
    check_window,
    fail,
    resolve_groups,
)
from glass_core.align._start import resolve_start
from glass_core.align.potentials import Potential, as_potential
from glass_core.weights import SCHEMES


@dataclass(frozen=True)
class SamplingConfig:
    """Hold what every sampling algorithm needs.

    The per-group particle count (in total over all ranks
    and on this rank), the time grid, one sample's shape, the micro-batch and the groups.
    """

    num_particles: int
    local_particles: int  # num_particles / world_size (num_particles when not sharded)
    grid: list[float]
    shape: tuple[int, ...]
    max_batch: int | None
    num_groups: int
    grouped: bool  # keep the leading group axis in the result

    @property
    def num_steps(self) -> int:
        return len(self.grid) - 1

    @classmethod
    def validate(
        cls,
        *,
        model: Any,
        reward: Any,
        transition: Any,
        num_particles: Any,
        time_grid: Any,
        shape: Any,
        max_batch: Any,
        generator: Any,
        num_groups: Any,
        world_size: int,
    ) -> SamplingConfig:
        """Return the checked arguments shared by every algorithm.

        `world_size`: ranks that will share
        the particles.
        """
        check_model(model)
        check_callable(reward, "reward")
        check_callable(transition, "transition")
        n = particle_count(num_particles)  # named num_particles
        if n % world_size:
            raise fail(
                "num_particles", f"({n}) must be a multiple of the world size ({world_size})"
            )
        num_b, grouped = resolve_groups(generator, num_groups)
        return cls(
            num_particles=n,
            local_particles=n // world_size,
            grid=check_time_grid(time_grid),
            shape=check_shape(shape),
            max_batch=optional_positive_int(max_batch, "max_batch"),
            num_groups=num_b,
            grouped=grouped,
        )


def sampling_validator(
    model: Any,
    reward: Any,
    transition: Any,
    time_grid: Any,
    num_particles: Any,
    shape: Any,
    generator: Any,
    num_groups: Any,
    max_batch: Any,
    x0: Any,
    process_group: Any = None,
) -> Callable[[int], SamplingConfig]:
    """Check the start `x0` now and return ``validate(world_size)``.

    `x0` is checked against the other arguments (see resolve_start); ``validate`` returns the
    arguments every algorithm shares, checked for a run whose particles `world_size` ranks share
    (the storage strategy calls it, see ParticleStorage).
    """
    shape, num_groups = resolve_start(
        x0, shape, num_particles, num_groups, generator, time_grid, process_group
    )

    def validate(world_size: int) -> SamplingConfig:
        return SamplingConfig.validate(
            model=model,
            reward=reward,
            transition=transition,
            num_particles=num_particles,
            time_grid=time_grid,
            shape=shape,
            max_batch=max_batch,
            generator=generator,
            num_groups=num_groups,
            world_size=world_size,
        )

    return validate


@dataclass(frozen=True)
class FKConfig(SamplingConfig):
    """fk_steering's checked arguments."""

    potential: Potential
    lambda_: float
    resampling: str
    ess_threshold: float | None
    resample_every: int | None
    resample_window: tuple[float, float] | None
    final_resample: Any  # passed to SMCState.step as given

    @classmethod
    def from_sampling(
        cls,
        sampling: SamplingConfig,
        *,
        potential: Any,
        lambda_: Any,
        resampling: Any,
        ess_threshold: Any,
        resample_every: Any,
        resample_window: Any,
        final_resample: Any,
    ) -> FKConfig:
        """Return the checked sampling arguments plus fk_steering's own."""
        pot = as_potential(potential)
        lam = check_finite_float(lambda_, "lambda_")
        if resampling not in SCHEMES:
            raise fail("resampling", f"must be one of {SCHEMES}, got {resampling!r}")
        if ess_threshold is not None:
            ess_threshold = check_finite_float(ess_threshold, "ess_threshold")
            if not 0.0 < ess_threshold <= 1.0:
                raise fail(
                    "ess_threshold", f"must be in (0, 1] (a fraction of N), got {ess_threshold}"
                )
        return cls(
            **{f.name: getattr(sampling, f.name) for f in fields(SamplingConfig)},
            potential=pot,
            lambda_=lam,
            resampling=resampling,
            ess_threshold=ess_threshold,
            resample_every=optional_positive_int(resample_every, "resample_every"),
            resample_window=check_window(resample_window, "resample_window"),
            final_resample=check_bool(final_resample, "final_resample"),
        )

    def is_potential_step(self, k: int) -> bool:
        """Return whether transition k (1..K, ending at t_k) is a potential step.

        Steps k with k % resample_every == 0 (all if None) and t_k inside resample_window, plus
        always the final step.
        """
        if k == self.num_steps:
            return True
        window = self.resample_window
        return (self.resample_every is None or k % self.resample_every == 0) and (
            window is None or window[0] <= self.grid[k] <= window[1]
        )

    def resample_decision(self, final: bool) -> bool | None:
        """Return SMCState.step's `resample` argument.

        The final step resamples only if asked; intermediate
        potential steps always resample, or adaptively (None) with an ESS threshold.
        """
        if final:
            return self.final_resample
        return None if self.ess_threshold is not None else True
