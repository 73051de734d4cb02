"""Feynman-Kac potentials (docs/math.md §6.2, FKS conventions) in log space.

Intermediate log-potentials, with r_k the reward of D_{t_k}(x_{t_k}) and lambda the temperature:
  diff: lambda (r_k - r_{k-1}), r_{-1} = 0
  max:  lambda max(r_1..r_k)
  sum:  lambda (r_1 + ... + r_k)
  lookahead: V_k - V_{k-1}, V_{-1} = 0, with V_k = V-hat_{t_k}(x) = log mean_j exp(lambda r(z_j))
        over posterior samples z_j ~ p(z | x_{t_k}) (glass_core.align.value), passed in place of
        the reward: the twisted SMC potential, optimal (constant weights) when V-hat = V
The final step always applies lambda r(z) minus the log-potentials already applied along the
particle's lineage, so the product over a lineage is exp(lambda r(z)) and the weighted particles
target p(z) exp(lambda r(z)) / Z whatever the intermediate choice (it only changes variance).
State is carried per particle and gathered with the ancestors at every resampling.
"""

from __future__ import annotations

import torch

from glass_core.errors import InvalidInputError

POTENTIALS = ("diff", "max", "sum", "lookahead")


class Potential:
    def __init__(self, kind: str, lambda_: float, n: int, device: torch.device) -> None:
        if kind not in POTENTIALS:
            raise ValueError(kind)
        self.kind = kind
        self.lambda_ = lambda_
        # max starts at -inf (not FKS's 0) so negative rewards still steer; see module doc.
        start = float("-inf") if kind == "max" else 0.0
        self.running = torch.full((n,), start, dtype=torch.float64, device=device)
        self.applied = torch.zeros(n, dtype=torch.float64, device=device)

    def step(self, reward: torch.Tensor, *, final: bool) -> torch.Tensor:
        r = reward.to(torch.float64)
        if final:
            log_g = self.lambda_ * r - self.applied
        elif self.kind == "diff":
            log_g = self.lambda_ * (r - self.running)
            self.running = r
        elif self.kind == "lookahead":  # r is already a lambda-scaled log-value
            log_g = r - self.running
            self.running = r
        elif self.kind == "max":
            self.running = torch.maximum(self.running, r)
            log_g = self.lambda_ * self.running
        else:
            self.running = self.running + r
            log_g = self.lambda_ * self.running
        # finite rewards (NaN/inf rewards are reported by the reward check) but non-finite
        # potentials: lambda_ * r overflowed
        if bool((torch.isfinite(r) & ~torch.isfinite(log_g)).any()):
            raise InvalidInputError(
                f"lambda_ = {self.lambda_!r} is too large: lambda_ * reward overflows float64 "
                f"(largest |reward| {float(r.abs().max()):.3g})"
            )
        self.applied = self.applied + log_g
        return log_g

    def gather(self, index: torch.Tensor) -> None:
        self.running = self.running.index_select(0, index)
        self.applied = self.applied.index_select(0, index)
