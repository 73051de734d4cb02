"""Time grids (t = 0 noise -> t = 1 data) that mirror each pipeline's own default step grid.

The pipeline's scheduler is never stepped: a deep copy runs ``set_timesteps`` with exactly the
arguments the pipeline's ``__call__`` would pass (FLUX: ``sigmas = linspace(1, 1/n, n)`` and the
dynamic-shift ``mu`` from the image sequence length; SD3: default sigmas with the static shift or
``mu``), and its ``sigmas`` / ``timesteps`` are mapped to glass_core time.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from glass_core._checks import positive_int
from glass_core._warnings import warn_caller
from glass_core.errors import InvalidInputError
from glass_core.schedules import dynamic_shift_mu


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Return FLUX/SD3's dynamic-shift ``mu`` (diffusers' formula).

    Computed by the native ``dynamic_shift_mu``; static-shift equivalent: exp(mu).

    Parameters
    ----------
    image_seq_len : int
        Image tokens.
    base_seq_len, max_seq_len : int
        The scheduler's sequence lengths.
    base_shift, max_shift : float
        The scheduler's shifts.

    Returns
    -------
    float
        mu.
    """
    return float(dynamic_shift_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift))


def scheduler_mu(model: Any, default_max_shift: float = 1.15) -> float:
    """Return the dynamic-shift ``mu`` the pipeline computes (``calculate_shift``).

    From its image sequence length and the scheduler's config.

    Parameters
    ----------
    model : DiffusersDenoiser
        The adapter (its pipeline's scheduler and ``image_seq_len``).
    default_max_shift : float
        ``max_shift`` when the scheduler's config has none.

    Returns
    -------
    float
        mu.
    """
    cfg = model.pipe.scheduler.config
    return calculate_shift(
        model.image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", default_max_shift),
    )


def linear_sigmas(num_steps: int) -> np.ndarray:
    """Return the sigmas FLUX-style pipelines pass, ``linspace(1, 1/n, n)``.

    Parameters
    ----------
    num_steps : int
        The number of steps n.

    Returns
    -------
    ndarray
        The sigmas.
    """
    return np.linspace(1.0, 1.0 / num_steps, num_steps)


def flux_sigmas(model: Any, num_steps: int) -> np.ndarray | None:
    """Return the sigmas the FLUX and FLUX.2 pipelines pass: `linear_sigmas`.

    None when the scheduler makes its own (``use_flow_sigmas``); Qwen-Image has no such rule.

    Parameters
    ----------
    model : DiffusersDenoiser
        The adapter.
    num_steps : int
        The number of steps n.

    Returns
    -------
    ndarray or None
        The sigmas.
    """
    if model.pipe.scheduler.config.get("use_flow_sigmas", False):
        return None
    return linear_sigmas(num_steps)


def own_scheduler(pipe: Any) -> Any:
    """Return the pipeline's own scheduler.

    A glass_core.diffusers.TransitionScheduler (whose timesteps list model evaluations, not a
    grid) is unwrapped to the scheduler it wraps, ``.base``.

    Parameters
    ----------
    pipe : Any
        A diffusers pipeline with a ``scheduler`` attribute.

    Returns
    -------
    Any
        ``pipe.scheduler.base`` when set, else ``pipe.scheduler``.
    """
    sched = pipe.scheduler
    return getattr(sched, "base", None) or sched


def _flow_grid(model: Any, num_steps: int) -> np.ndarray:
    sched = copy.deepcopy(own_scheduler(model.pipe))
    kwargs = model.scheduler_kwargs(num_steps)
    if kwargs.get("sigmas") is not None:
        sched.set_timesteps(**kwargs)
    else:
        kwargs.pop("sigmas", None)
        sched.set_timesteps(num_steps, **kwargs)
    sig = getattr(sched, "sigmas", None)
    if sig is None:
        raise InvalidInputError(
            f"pipe.scheduler: {type(sched).__name__} exposes no sigmas; pass time_grid explicitly"
        )
    return 1.0 - sig.detach().cpu().double().numpy()


def _vp_grid(model: Any, num_steps: int, exact: bool) -> np.ndarray:
    sched = copy.deepcopy(own_scheduler(model.pipe))
    sched.set_timesteps(num_steps)
    ks = sched.timesteps.detach().cpu().double().numpy()
    big_t = model.num_train_timesteps
    ts = np.asarray(model.schedule.t_from_timestep(ks), dtype=np.float64)  # native mapping
    if not exact:
        return np.concatenate([[0.0], ts[1:], [1.0]])
    final_t = 1.0
    final_ac = getattr(sched, "final_alpha_cumprod", None)  # DDIM: alphas_cumprod[0] or 1
    if final_ac is not None and float(final_ac) < 1.0:
        final_t = float(model.schedule.t_from_timestep(0.0))  # DDIM ends on alphas_cumprod[0]
    step = big_t // num_steps
    if "DDIM" in type(sched).__name__ and np.any(np.diff(ks) != -step):
        warn_caller(
            "DDIM's timesteps are not evenly spaced by T // num_steps; the pipeline queries the "
            "network at times that differ from its states, so it cannot be mirrored exactly"
        )
    return np.concatenate([ts, [final_t]])


def default_time_grid(model: Any, num_steps: int, *, exact: bool = False) -> np.ndarray:
    """float64 grid of ``num_steps + 1`` increasing times matching the pipeline's step grid.

    Flow families (FLUX, SD3) give 0 = t_0 < ... < t_n = 1 exactly as the pipeline's shifted sigmas.
    VP families (SD, SDXL): node times of the scheduler's timesteps. With ``exact=False`` (default,
    what the alignment algorithms need) the first time is replaced by 0 (the pipeline also starts
    from pure noise there) and the last is 1 (clean data); ``exact=True`` keeps the scheduler's
    first timestep and its final alpha (for parity checks against the pipeline's own sampler).

    Parameters
    ----------
    model : DiffusersDenoiser
        The adapter.
    num_steps : int
        The number of transitions.
    exact : bool
        See above.

    Returns
    -------
    ndarray
        The grid, float64.
    """
    positive_int(num_steps, "num_steps")
    if hasattr(model, "scheduler_kwargs"):  # flow families: they say what the pipeline passes
        grid = _flow_grid(model, int(num_steps))
    else:
        grid = _vp_grid(model, int(num_steps), exact)
    if np.any(np.diff(grid) <= 0):
        raise InvalidInputError(f"the scheduler produced a non-increasing time grid: {grid}")
    return grid
