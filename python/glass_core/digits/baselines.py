"""The samplers a diffusers user would pick, driving the embedded digits network directly.

Every bench compares glass_core's transitions against these rows, so they live in one place.
Each baseline is a diffusers scheduler configured for the embedded rectified-flow model
(``prediction_type="flow_prediction"``, ``use_flow_sigmas=True``: the network predicts
v = eps - z at sigma = 1 - t) and run by the loop a diffusers pipeline runs: for each of the
scheduler's timesteps, one UNet call at that timestep, then ``scheduler.step``. One model
evaluation per step, so NFE = ``num_inference_steps``; the last step ends at sigma = 0 on the
data-prediction estimate (``final_sigmas_type="zero"``).

* ``unipc``: UniPCMultistepScheduler, order 2 (bh2, the corrector reusing the next evaluation);
* ``dpmpp_2m``: DPMSolverMultistepScheduler, DPM-Solver++(2M);
* ``sde_dpmpp_2m``: the same with ``algorithm_type="sde-dpmsolver++"`` (stochastic);
* ``ddpm_ancestral``: ``sde-dpmsolver++`` of order 1, which is exactly the DDPM ancestral step
  x_s ~ q(x_s | x_t, z_hat) of the flow's Gaussian path (DDIM with eta = 1).

``flow_shift`` is the scheduler's static grid shift (1 = uniform in sigma); benches pick each
baseline's best shift per NFE from :data:`FLOW_SHIFTS`.

``start_time`` starts a baseline from a noised state x_t instead of noise (posterior sampling, as
an img2img/SDEdit pipeline does, but at exactly sigma = 1 - t rather than at the nearest step of
the full grid): :func:`set_flow_grid` lays the ``nfe`` steps from sigma = 1 - t to 0 with the
scheduler's own shift formula.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

__all__ = [
    "BASELINES",
    "FLOW_SHIFTS",
    "STOCHASTIC",
    "FlowNet",
    "make_scheduler",
    "sample_baseline",
    "set_flow_grid",
]

#: name -> (diffusers class name, extra config, label)
BASELINES: dict[str, tuple[str, dict[str, Any], str]] = {
    "unipc": (
        "UniPCMultistepScheduler",
        {"solver_order": 2, "solver_type": "bh2"},
        "diffusers UniPC (order 2)",
    ),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"solver_order": 2, "algorithm_type": "dpmsolver++"},
        "diffusers DPM-Solver++(2M)",
    ),
    "sde_dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
        "diffusers SDE-DPM-Solver++(2M)",
    ),
    "ddpm_ancestral": (
        "DPMSolverMultistepScheduler",
        {"solver_order": 1, "algorithm_type": "sde-dpmsolver++"},
        "DDPM ancestral (diffusers SDE-DPM-Solver++ order 1)",
    ),
}
#: the baselines that draw noise at every step
STOCHASTIC = frozenset({"sde_dpmpp_2m", "ddpm_ancestral"})
#: static grid shifts searched for each baseline's best grid (1.0 = uniform in sigma)
FLOW_SHIFTS: tuple[float, ...] = (0.5, 1.0, 2.0)


class FlowNet:
    """A glass_core model as a diffusers flow network, so the baselines can drive it.

    ``net(x, timestep).sample`` is the flow-matching prediction v = eps - z at
    sigma = timestep / 1000, i.e. minus glass_core's velocity at t = 1 - sigma (e.g. the exact
    velocity of ``glass_core.models.GaussianMixture``).

    Parameters
    ----------
    model : Denoiser
        Any model with ``velocity(x, t)`` on the rectified-flow path.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dtype = getattr(model, "dtype", torch.float64)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        """Return ``SimpleNamespace(sample=v)`` as a diffusers UNet's output."""
        t = 1.0 - timestep.to(torch.float64) / 1000.0
        return SimpleNamespace(sample=-self.model.velocity(x, t))


def make_scheduler(name: str, *, flow_shift: float = 1.0) -> Any:
    """Build a fresh diffusers scheduler for baseline `name` on the embedded rectified-flow model.

    Parameters
    ----------
    name : str
        A key of :data:`BASELINES`.
    flow_shift : float
        Static shift of the flow sigmas (1.0: uniform).

    Returns
    -------
    diffusers.SchedulerMixin

    Raises
    ------
    InvalidInputError
        If `name` is not a baseline or `flow_shift` is not positive.
    """
    import diffusers

    from glass_core.errors import InvalidInputError

    if name not in BASELINES:
        raise InvalidInputError(f"baseline name must be one of {list(BASELINES)}, got {name!r}")
    if not flow_shift > 0:
        raise InvalidInputError(f"flow_shift must be > 0, got {flow_shift}")
    cls_name, extra, _ = BASELINES[name]
    return getattr(diffusers, cls_name)(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        final_sigmas_type="zero",
        lower_order_final=True,
        **extra,
    )


def set_flow_grid(scheduler: Any, nfe: int, start_time: float = 0.0, *, device: Any = None) -> None:
    """Set `scheduler` up for `nfe` steps from sigma = 1 - `start_time` (glass_core's t) to 0.

    ``start_time = 0`` is the scheduler's own ``set_timesteps(nfe)`` (its grid starts at
    sigma = 0.999). Otherwise the grid is uniform in the unshifted sigma u from u_max to 0, mapped
    through the scheduler's static shift ``k u / (1 + (k - 1) u)`` (``config.flow_shift``), with
    u_max chosen so the first sigma is exactly 1 - `start_time`; the network timesteps are
    ``1000 * sigma`` cast to int64 as diffusers casts them. DPMSolverMultistepScheduler's
    ``set_timesteps`` (diffusers 0.42) takes no ``sigmas=``, so the grid is written into the
    scheduler's ``sigmas``/``timesteps`` after ``set_timesteps`` has reset its multistep state:
    what UniPC's ``set_timesteps(sigmas=...)`` writes for the same grid.

    Parameters
    ----------
    scheduler : diffusers.SchedulerMixin
        A scheduler from :func:`make_scheduler`.
    nfe : int
        Number of steps.
    start_time : float
        glass_core's time of the starting state, 0 <= start_time < 1.
    device : torch.device, optional
        Device of the timesteps.

    Raises
    ------
    InvalidInputError
        If `start_time` is outside [0, 1).
    """
    from glass_core.errors import InvalidInputError

    if not 0.0 <= start_time < 1.0:
        raise InvalidInputError(f"start_time must be in [0, 1), got {start_time}")
    scheduler.set_timesteps(nfe, device=device)  # also resets the multistep history
    if start_time == 0.0:
        return
    k, top = float(scheduler.config.flow_shift), 1.0 - start_time
    u = np.linspace(top / (k - (k - 1.0) * top), 0.0, nfe + 1)
    sigmas = k * u / (1.0 + (k - 1.0) * u)
    sigmas[0], sigmas[-1] = top, 0.0  # exact ends (the shift formula rounds)
    steps = sigmas[:-1] * scheduler.config.num_train_timesteps
    scheduler.sigmas = torch.from_numpy(sigmas.astype(np.float32))
    scheduler.timesteps = torch.from_numpy(steps).to(device=device, dtype=torch.int64)


@torch.no_grad()
def sample_baseline(
    unet: Any,
    name: str,
    nfe: int,
    noise: torch.Tensor,
    *,
    flow_shift: float = 1.0,
    generator: torch.Generator | None = None,
    start_time: float = 0.0,
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample baseline `name` in `nfe` UNet evaluations from `noise`.

    `noise` is the state at sigma = 1, i.e. glass_core's t = 0 (or, with `start_time` = t > 0,
    a state x_t = t z + (1 - t) eps at sigma = 1 - t: the samples are then draws from the
    posterior p(z | x_t), :func:`set_flow_grid`); the samples are computed as a diffusers
    pipeline's denoising loop computes them. With `sigmas` the loop runs over that grid
    instead (a transition between two noise levels, e.g. glass_core's t -> t' as
    sigma = 1 - t, with timesteps not rounded to integers as exact models need).

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        The flow-matching network (``pipe.unet`` of the embedded model).
    name : str
        A key of :data:`BASELINES`.
    nfe : int
        Number of inference steps (one UNet call each).
    noise : torch.Tensor
        Initial noise ``[B, C, H, W]``.
    flow_shift : float
        Static grid shift (see :func:`make_scheduler`).
    generator : torch.Generator, optional
        Source of the per-step noise of the stochastic baselines (required for them).
    start_time : float
        glass_core's time of `noise` (0: pure noise), 0 <= start_time < 1.
    sigmas : torch.Tensor, optional
        ``nfe + 1`` decreasing noise levels in [0, 1], first the one `noise` is at, last the one
        returned (default: the scheduler's own grid from 1 to 0). The network then sees these
        exact levels as timesteps ``1000 * sigma`` (not rounded to integers).

    Returns
    -------
    torch.Tensor
        Samples ``[B, C, H, W]`` in the data convention (not clamped).

    Raises
    ------
    InvalidInputError
        On an unknown name, ``nfe < 1``, a `start_time` outside [0, 1), both `start_time` and
        `sigmas`, `sigmas` of the wrong length or not decreasing in [0, 1], or a
        stochastic baseline without a generator.
    """
    from glass_core.errors import InvalidInputError

    if nfe < 1:
        raise InvalidInputError(f"nfe must be >= 1, got {nfe}")
    if name in STOCHASTIC and generator is None:
        raise InvalidInputError(f"baseline {name!r} draws noise: pass generator=")
    sched = make_scheduler(name, flow_shift=flow_shift)
    if sigmas is not None and start_time != 0.0:
        raise InvalidInputError("pass start_time or sigmas, not both")
    set_flow_grid(sched, nfe, start_time, device=noise.device)
    if sigmas is not None:
        _use_sigmas(sched, sigmas, nfe, noise.device)
    step_kwargs = {"generator": generator} if name in STOCHASTIC else {}
    x = noise * sched.init_noise_sigma if start_time == 0.0 and sigmas is None else noise
    for t in sched.timesteps:
        v = unet(x.to(unet.dtype), t.expand(len(x))).sample.to(x.dtype)
        x = sched.step(v, t, x, **step_kwargs).prev_sample
    return x


def _use_sigmas(sched: Any, sigmas: torch.Tensor, nfe: int, device: torch.device) -> None:
    """Replace a scheduler's grid (after ``set_timesteps(nfe)``) by `sigmas`, checked."""
    from glass_core.errors import InvalidInputError

    s = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if len(s) != nfe + 1 or not (bool((s[1:] < s[:-1]).all()) and s[0] <= 1 and s[-1] >= 0):
        raise InvalidInputError(
            f"sigmas must be {nfe + 1} decreasing values in [0, 1], got {sigmas.tolist()}"
        )
    # the schedulers step from sigmas[i] to sigmas[i + 1] and find i by the timestep passed in
    sched.sigmas = s
    sched.timesteps = (1000 * s[:-1]).to(device)
