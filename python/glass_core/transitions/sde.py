"""The reverse-time SDE (the "DDPM sampling" baseline, docs/math.md §5), by exact ancestral steps.

dX = [u_t(X) + kappa (nu_t^2 / 2) grad log p_t(X)] dt + sqrt(kappa) nu_t dW,
nu_t^2 = 2 alpha' sigma^2 / alpha - 2 sigma sigma'. kappa=1 is the paper's SDE, whose kernel equals
GLASS with rho="ddpm" (Prop. 1). With the denoiser frozen at D over a substep the SDE is linear
and its solution is Gaussian: the GLASS z-conditional kernel with z = D and rho = rho_ddpm^kappa.
Each substep takes that solution exactly (DDPM-ancestral for kappa = 1), so the sampler is
stable for any step size and its noise vanishes at t' = 1, where it returns D itself.
"""

from __future__ import annotations

import torch

from glass_core import _random
from glass_core._checks import finite_float
from glass_core.errors import InvalidInputError
from glass_core.models.base import Denoiser, schedule_values, working_dtype
from glass_core.models.gmm import kernel_scalars
from glass_core.schedules import Schedule
from glass_core.transitions.base import Transition, check_int, substep_intervals
from glass_core.transitions.solvers import lincomb


def sde_coefficients(
    schedule: Schedule, t: float, kappa: float = 1.0
) -> tuple[float, float, float]:
    """Return the reverse SDE's coefficients (A, B, eta) at a time 0 < t < 1.

    The drift is A x + B D_t(x) and the diffusion squared is 2 kappa eta.

    Parameters
    ----------
    schedule : Schedule
        The model's schedule.
    t : float
        The time, 0 < t < 1.
    kappa : float
        Diffusion scale.

    Returns
    -------
    tuple of float
        (A, B, eta).
    """
    a, s, da, ds = schedule_values(schedule, float(t))
    eta = da * s * s / a - s * ds  # nu_t^2 / 2
    a_u, b_u = ds / s, da - a * ds / s  # u = a_u x + b_u D (eq. 26)
    # score = (a D - x) / s^2
    return a_u - kappa * eta / (s * s), b_u + kappa * eta * a / (s * s), eta


class SDE(Transition):
    """`substeps` uniform steps (1 model evaluation each) of the reverse SDE from t to t_next.

    Each substep from t0 to t1 freezes the denoiser at D = D_t0(x) and takes the exact solution of
    the then linear SDE: x' = gamma x + abar D + sbar xi with (gamma, abar, sbar) of the GLASS
    z-conditional kernel at rho = rho_ddpm(t0, t1) ** kappa (DDPM-ancestral for kappa = 1;
    docs/math.md §3.6). No schedule derivative enters, so it is finite from alpha_t = 0 and stable
    on any grid; at t1 = 1 sbar = 0 and gamma = 0, so the last substep returns D (no leftover
    noise). `kappa` scales the diffusion (kappa=0 is DDIM); only kappa=1 reproduces the
    DDPM/GLASS-ddpm kernel.

    Parameters
    ----------
    substeps : int
        Steps per call.
    kappa : float
        Diffusion scale (>= 0).

    Raises
    ------
    InvalidInputError
        For a bad substeps or kappa (naming it).

    Examples
    --------
    >>> import torch
    >>> from glass_core.models import from_callable
    >>> from glass_core.schedules import Schedule
    >>> from glass_core.transitions import SDE
    >>> rf = Schedule.rectified_flow()
    >>> model = from_callable(lambda x, t: 0 * x + 2, schedule=rf, prediction="x1")
    >>> SDE(substeps=4)(model, torch.randn(2, 2), 0.0, 1.0, torch.Generator().manual_seed(0))
    tensor([[2., 2.],
            [2., 2.]])
    """

    def __init__(self, substeps: int = 1, kappa: float = 1.0):
        self.substeps = check_int(substeps, "substeps")
        k = finite_float(kappa, "kappa")  # a real number: no bool, str or NaN
        if k < 0:
            raise InvalidInputError(f"kappa must be a finite float >= 0, got {kappa!r}")
        self.kappa = k

    def __repr__(self) -> str:
        """Return the constructor call that rebuilds this transition."""
        return f"SDE(substeps={self.substeps}, kappa={self.kappa})"

    @property
    def nfe_per_call(self) -> int:
        """Model evaluations of one call without `denoised` reuse."""
        return self.substeps

    def nfe(self, schedule: Schedule, t: float, t_next: float, *, reuse: bool = False) -> int:
        """Count the model evaluations of one call (see `Transition.nfe`)."""
        return self.substeps - (1 if reuse else 0)

    def scalars(
        self, schedule: Schedule, t: float, t_next: float
    ) -> list[tuple[float, float, float, float]]:
        """Return, per substep, the float64 (t0, gamma, abar, sbar) of its exact step.

        Parameters
        ----------
        schedule : Schedule
            The model's schedule.
        t, t_next : float
            The call's step.

        Returns
        -------
        list of tuple of float
            One (t0, gamma, abar, sbar) per substep: x' = gamma x + abar D_t0(x) + sbar xi.
        """
        out = []
        for t0, t1 in substep_intervals(t, t_next, self.substeps):
            rho = float(schedule.rho_ddpm(t0, t1)) ** self.kappa
            out.append((t0, *kernel_scalars(schedule, t0, t1, rho)))
        return out

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
        for k, (t0, gamma, abar, sbar) in enumerate(self.scalars(model.schedule, t, t_next)):
            d = denoised if (k == 0 and denoised is not None) else model.denoise(y.to(x.dtype), t0)
            terms = [(gamma, y), (abar, d.to(wd))]
            if sbar > 0.0:
                terms.append((sbar, _random.randn_like(y, generator)))
            y = lincomb(terms)
        return y.to(x.dtype)
