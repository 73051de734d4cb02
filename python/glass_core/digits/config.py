"""Settings of `glass-core demo`, importable without torch (the CLI builds its parser from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: reward kinds: the classifier's log-probability, or the closed-form quadratic "template" reward
REWARD_KINDS: dict[str, str] = {
    "classifier": "log p(digit = {t} | image) (embedded classifier)",
    "template": "-|z - mean image of digit {t}|^2 / (2 * 2^2) (closed-form quadratic)",
}


@dataclass
class DemoConfig:
    """Demo settings; every field is also a CLI flag / TOML key (underscores or dashes)."""

    target: int = 3
    particles: int = 8
    groups: int = 48
    nfe: int = 10
    glass_transitions: int = 5
    glass_rho: str = "0.4"
    potential: str = "diff"
    lambda_: float = 4.0
    budgets: list[int] = field(default_factory=lambda: [10, 20])
    seed: int = 0
    threads: int = 1
    max_batch: int | None = None
    model: str | None = None
    reward: str | None = None
    reward_kind: str = "classifier"

    @classmethod
    def quick(cls) -> DemoConfig:
        """Reduced budget for tests and smoke runs (a few seconds)."""
        return cls(particles=4, groups=4, nfe=10, glass_transitions=5, budgets=[10])

    @property
    def sweep(self) -> list[int]:
        """The NFE budgets run: `budgets` and `nfe` (the grid's budget)."""
        return sorted({*self.budgets, self.nfe})

    def validate(self) -> None:
        """Check every field, naming the command-line option at fault.

        Raises
        ------
        InvalidInputError
            On a bad seed, thread count, particle count, grid size, target digit, group count
            (< 3), budget, NFE not a multiple of ``--glass-transitions``, lambda, GLASS rho,
            reward kind or max batch.
        """
        from glass_core import _checks
        from glass_core.errors import InvalidInputError

        def bad(name: str, msg: str) -> InvalidInputError:
            return InvalidInputError(f"--{name.replace('_', '-').rstrip('-')} {msg}")

        _checks.seed(self.seed, "--seed")
        _checks.num_threads(self.threads, "--threads")
        _checks.particle_count(  # 8x8 float32 samples
            self.particles, "--particles", num_groups=max(1, self.groups), sample_bytes=256
        )
        for name in ("nfe", "glass_transitions"):
            _checks.grid_steps(getattr(self, name), "--" + name.replace("_", "-"))
        for budget in self.budgets:
            _checks.grid_steps(budget, "--budgets")
        if not 0 <= self.target <= 9:
            raise bad("target", f"must be a digit class 0..9, got {self.target}")
        for name in ("particles", "groups", "nfe", "glass_transitions", "threads"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.groups < 3:
            raise bad("groups", f"must be >= 3 (standard errors need them), got {self.groups}")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise bad("budgets", f"must be positive NFE per particle, got {self.budgets}")
        for name, values in (("nfe", [self.nfe]), ("budgets", self.budgets)):
            if any(v % self.glass_transitions for v in values):
                raise bad(
                    name,
                    f"({values if name == 'budgets' else self.nfe}) must be a multiple of "
                    f"--glass-transitions ({self.glass_transitions}) so every method spends the "
                    "same NFE",
                )
        if not math.isfinite(self.lambda_) or self.lambda_ < 0:
            raise bad("lambda", f"must be a finite number >= 0, got {self.lambda_}")
        if self.glass_rho != "ddpm":
            try:
                rho = float(self.glass_rho)
            except ValueError:
                raise bad(
                    "glass_rho", f"must be 'ddpm' or a float, got {self.glass_rho!r}"
                ) from None
            if not -1.0 <= rho <= 1.0:
                raise bad("glass_rho", f"must be in [-1, 1], got {rho}")
        if self.reward_kind not in REWARD_KINDS:
            raise bad(
                "reward_kind", f"must be one of {list(REWARD_KINDS)}, got {self.reward_kind!r}"
            )
        if self.max_batch is not None and self.max_batch < 1:
            raise bad("max_batch", f"must be >= 1, got {self.max_batch}")
