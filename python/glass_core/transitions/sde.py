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
from glass_core.models.gmm import kernel_scalars
from glass_core.schedules import Schedule
from glass_core.transitions.base import (
    Transition,
    check_int,
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
        for k, (t0, t1) in enumerate(self.substeps_of(t, t_next)):
            d = denoised if (k == 0 and denoised is not None) else model.denoise(y.to(x.dtype), t0)
            mean, std = self.gaussian_kernel(sched, y, d.to(wd), t0, t1)
            # the noise end's closed-form step draws no noise when it is deterministic
            if std > 0.0 or not leaves_noise_end(sched, t0):
                mean = mean + std * _random.randn_like(y, generator)
            y = mean
        return y.to(x.dtype)

    def substeps_of(self, t: float, t_next: float) -> list[tuple[float, float]]:
        """The substeps (t0, t1) of one call from t to t_next, each a Gaussian kernel given
        D_t0 (see `gaussian_kernel`)."""
        return substep_intervals(t, t_next, self.substeps)

    def gaussian_kernel(
        self, schedule: Schedule, x: torch.Tensor, denoised: torch.Tensor, t0: float, t1: float
    ) -> tuple[torch.Tensor, float]:
        """(mean [x's shape], std): one substep t0 -> t1 is x' = mean + std * xi, xi ~ N(0, I),
        given x and denoised = D_t0(x). Twisted proposals (glass_core.align.twisted) shift the
        mean and weight by this kernel's density.

        Parameters
        ----------
        schedule : Schedule
            The model's schedule.
        x, denoised : torch.Tensor
            The particles at t0 and D_t0(x) (same shape and dtype).
        t0, t1 : float
            One substep of `substeps_of`.

        Returns
        -------
        tuple of (torch.Tensor, float)
            The kernel's mean and its isotropic standard deviation.
        """
        if leaves_noise_end(schedule, t0):
            rho = float(schedule.rho_ddpm(t0, t1)) ** self.kappa
            gamma, abar, sbar = kernel_scalars(schedule, t0, t1, rho)
            return gamma * x + abar * denoised, sbar
        h = t1 - t0
        a_c, b_c, eta = sde_coefficients(schedule, t0, self.kappa)
        std = math.sqrt(2.0 * self.kappa * max(eta, 0.0) * h)
        return x + h * (a_c * x + b_c * denoised), std
