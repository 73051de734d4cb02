"""Euler-Maruyama on the reverse-time SDE (the "DDPM sampling" baseline, docs/math.md §5).

dX = [u_t(X) + kappa (nu_t^2 / 2) grad log p_t(X)] dt + sqrt(kappa) nu_t dW,
nu_t^2 = 2 alpha' sigma^2 / alpha - 2 sigma sigma'. kappa=1 is the paper's SDE, whose kernel equals
GLASS with rho="ddpm" (Prop. 1). With D = D_t(x) the drift is A x + B D (coefficients float64).
"""

from __future__ import annotations

import math

import torch

from glass_core import _random
from glass_core.errors import InvalidInputError
from glass_core.models.base import Denoiser, schedule_values, working_dtype
from glass_core.schedules import Schedule
from glass_core.transitions.base import (
    Transition,
    check_int,
    frozen_denoiser_step,
    leaves_noise_end,
    substep_intervals,
)


def sde_coefficients(
    schedule: Schedule, t: float, kappa: float = 1.0
) -> tuple[float, float, float]:
    """(A, B, eta): drift = A x + B D_t(x), diffusion^2 = 2 kappa eta, at a time 0 < t < 1."""
    a, s, da, ds = schedule_values(schedule, float(t))
    eta = da * s * s / a - s * ds  # nu_t^2 / 2
    a_u, b_u = ds / s, da - a * ds / s  # u = a_u x + b_u D (eq. 26)
    # score = (a D - x) / s^2
    return a_u - kappa * eta / (s * s), b_u + kappa * eta * a / (s * s), eta


class SDE(Transition):
    """`substeps` uniform Euler-Maruyama steps (1 model evaluation each) from t to t_next.

    Coefficients are taken at the left end of each substep. A substep leaving the noise end
    (alpha_t = 0, where they are infinite, or below a VP table's noisiest node, where they are
    steep) is instead the exact solution of this SDE with the denoiser held at D_t(x): the GLASS
    kernel with rho = rho_ddpm ** kappa (DDPM-ancestral for kappa = 1), exact in mean and free of
    Euler-Maruyama's variance blow-up there (docs/noise_end.md). `kappa` scales the diffusion
    (kappa=0 is the ODE); only kappa=1 reproduces the DDPM/GLASS-ddpm kernel.
    """

    def __init__(self, substeps: int = 1, kappa: float = 1.0):
        self.substeps = check_int(substeps, "substeps")
        k = float(kappa)
        if not (math.isfinite(k) and k >= 0):
            raise InvalidInputError(f"kappa must be a finite float >= 0, got {kappa!r}")
        self.kappa = k

    def __repr__(self) -> str:
        return f"SDE(substeps={self.substeps}, kappa={self.kappa})"

    @property
    def nfe_per_call(self) -> int:
        return self.substeps

    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        return self.substeps - (1 if reuse else 0)

    def _step(
        self,
        model: Denoiser,
        x: torch.Tensor,
        t: float,
        t_next: float,
        generator: _random.Generator,
        denoised: torch.Tensor | None,
    ) -> torch.Tensor:
        wd = working_dtype(x)
        y = x.to(wd)
        sched = model.schedule
        for k, (t0, t1) in enumerate(substep_intervals(t, t_next, self.substeps)):
            d = denoised if (k == 0 and denoised is not None) else model.denoise(y.to(x.dtype), t0)
            if leaves_noise_end(sched, t0):
                rho = float(sched.rho_ddpm(t0, t1)) ** self.kappa
                y = frozen_denoiser_step(sched, y, t0, t1, rho, d.to(wd), generator)
                continue
            h = t1 - t0
            a_c, b_c, eta = sde_coefficients(sched, t0, self.kappa)
            noise = _random.randn_like(y, generator)
            std = math.sqrt(2.0 * self.kappa * max(eta, 0.0) * h)
            y = y + h * (a_c * y + b_c * d.to(wd)) + std * noise
        return y.to(x.dtype)
