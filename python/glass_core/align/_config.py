"""Validated arguments of best_of_n, reward_guidance and fk_steering, shared by the
single-process and the sharded (glass_core.align.distributed) implementations so that every
check lives in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glass_core.align._common import (
    check_bool,
    check_callable,
    check_finite_float,
    check_model,
    check_optional_positive_int,
    check_positive_int,
    check_shape,
    check_time_grid,
    check_window,
    fail,
    resolve_groups,
)
from glass_core.align.potentials import POTENTIALS

SCHEMES = ("multinomial", "stratified", "systematic", "residual")


@dataclass(frozen=True)
class SamplingConfig:
    """What every sampling algorithm needs: per-group particle count (in total over all ranks
    and on this rank), the time grid, one sample's shape, the micro-batch and the groups."""

    n: int
    n_local: int  # n / world_size (n when not sharded)
    grid: list[float]
    shape: tuple[int, ...]
    max_batch: int | None
    num_groups: int
    grouped: bool  # keep the leading group axis in the result

    @property
    def num_steps(self) -> int:
        return len(self.grid) - 1

    @classmethod
    def from_args(
        cls, args: Mapping[str, Any], n_name: str = "n", world_size: int = 1
    ) -> SamplingConfig:
        """Validate the arguments of best_of_n / reward_guidance, given as a mapping (the
        function's ``locals()``); `n_name`: the per-group count argument; `world_size`: ranks
        that will share the samples."""
        return cls(**cls._check_common(args, n_name, world_size))

    @staticmethod
    def _check_common(args: Mapping[str, Any], n_name: str, world_size: int) -> dict[str, Any]:
        """Check the shared fields; returns them as keyword arguments of the constructor."""
        check_model(args["model"])
        check_callable(args["reward"], "reward")
        check_callable(args["transition"], "transition")
        n = check_positive_int(args[n_name], n_name)
        if n % world_size:
            raise fail(n_name, f"({n}) must be a multiple of the world size ({world_size})")
        grid = check_time_grid(args["time_grid"])
        shape = check_shape(args["shape"])
        max_batch = check_optional_positive_int(args["max_batch"], "max_batch")
        num_b, grouped = resolve_groups(args["generator"], args["num_groups"])
        return dict(
            n=n,
            n_local=n // world_size,
            grid=grid,
            shape=shape,
            max_batch=max_batch,
            num_groups=num_b,
            grouped=grouped,
        )


@dataclass(frozen=True)
class FKConfig(SamplingConfig):
    potential: str
    lambda_: float
    scheme: str
    ess_threshold: float | None
    resample_every: int | None
    resample_window: tuple[float, float] | None
    final_resample: Any  # passed to SMCState.step as given

    @classmethod
    def from_args(
        cls, args: Mapping[str, Any], n_name: str = "num_particles", world_size: int = 1
    ) -> FKConfig:
        """Validate fk_steering's arguments, given as a mapping (its ``locals()``)."""
        common = cls._check_common(args, n_name, world_size)
        potential, resample = args["potential"], args["resample"]
        if potential not in POTENTIALS:
            raise fail("potential", f"must be one of {POTENTIALS}, got {potential!r}")
        lam = check_finite_float(args["lambda_"], "lambda_")
        if resample not in SCHEMES:
            raise fail("resample", f"must be one of {SCHEMES}, got {resample!r}")
        ess_threshold = args["ess_threshold"]
        if ess_threshold is not None:
            ess_threshold = check_finite_float(ess_threshold, "ess_threshold")
            if not 0.0 < ess_threshold <= 1.0:
                raise fail(
                    "ess_threshold", f"must be in (0, 1] (a fraction of N), got {ess_threshold}"
                )
        return cls(
            **common,
            potential=potential,
            lambda_=lam,
            scheme=resample,
            ess_threshold=ess_threshold,
            resample_every=check_optional_positive_int(args["resample_every"], "resample_every"),
            resample_window=check_window(args["resample_window"], "resample_window"),
            final_resample=check_bool(args["final_resample"], "final_resample"),
        )

    def potential_steps(self) -> list[bool]:
        """is_potential[k] for k = 1..K (index 0 unused): steps k with k % resample_every == 0
        (all if None) and t_k inside resample_window, plus always the final step."""
        every, window, grid = self.resample_every, self.resample_window, self.grid
        flags = [False] * (self.num_steps + 1)
        for k in range(1, self.num_steps):
            on = every is None or k % every == 0
            if window is not None:
                on = on and window[0] <= grid[k] <= window[1]
            flags[k] = on
        flags[self.num_steps] = True
        return flags

    def resample_decision(self, final: bool) -> bool | None:
        """SMCState.step's `resample`: the final step resamples only if asked; intermediate
        potential steps always resample, or adaptively (None) with an ESS threshold."""
        if final:
            return self.final_resample
        return None if self.ess_threshold is not None else True
