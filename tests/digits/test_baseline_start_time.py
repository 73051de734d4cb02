"""Issue 25: diffusers baselines started from a noised state x_t at sigma = 1 - t
(``glass_core.digits.baselines.set_flow_grid`` / ``sample_baseline(start_time=)``), validated
against glass_core's own posterior samplers on the embedded digits model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from glass_core.digits.assets import load_default_model, load_real_digits
from glass_core.digits.baselines import make_scheduler, sample_baseline, set_flow_grid
from glass_core.errors import InvalidInputError
from glass_core.transitions import ODE, SDE

T = 0.4


@pytest.fixture(scope="module")
def model() -> object:
    return load_default_model()


def noised(rows: int, seed: int) -> torch.Tensor:
    """x_t = t z + (1 - t) eps for the first `rows` real digits."""
    z = load_real_digits()[0][:rows]
    return T * z + (1 - T) * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_grid_is_what_unipc_sets_for_the_same_sigmas(shift: float) -> None:
    """The grid written into the scheduler equals UniPC's own ``set_timesteps(sigmas=)`` for the
    unshifted grid, starts exactly at sigma = 1 - t and ends at 0."""
    ours, theirs = (
        make_scheduler("unipc", flow_shift=shift),
        make_scheduler("unipc", flow_shift=shift),
    )
    set_flow_grid(ours, 5, T)
    u_max = (1 - T) / (shift - (shift - 1) * (1 - T))
    theirs.set_timesteps(sigmas=np.linspace(u_max, 0.0, 6)[:-1])
    assert torch.allclose(ours.sigmas, theirs.sigmas, atol=1e-6)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    assert ours.sigmas[0].item() == pytest.approx(1 - T) and ours.sigmas[-1].item() == 0.0
    # start_time = 0 is the scheduler's own grid
    own = make_scheduler("dpmpp_2m", flow_shift=shift)
    own.set_timesteps(5)
    zero = make_scheduler("dpmpp_2m", flow_shift=shift)
    set_flow_grid(zero, 5, 0.0)
    assert torch.equal(own.sigmas, zero.sigmas) and torch.equal(own.timesteps, zero.timesteps)


def test_ddpm_ancestral_from_x_t_samples_the_glass_core_sde_posterior(model: object) -> None:
    """Both take exact ancestral steps on the same grid from t to 1, so their posterior samples
    from one x_t share a distribution: every pixel's mean agrees within 4 s.e. of the difference
    (Bonferroni over 64 pixels: a false alarm has probability < 0.5% whatever their correlation)
    and the pixel-averaged spread within 15% (the relative s.e. of a sample std is at most
    sqrt((kurtosis - 1) / 4n) < 0.041 per set for these bounded pixels). Starting the grid at
    t = 0.3 instead of 0.4 fails both by far."""
    n = 600
    x = noised(1, 0).repeat(n, 1, 1, 1)
    with torch.no_grad():
        ref = SDE(substeps=4)(model, x, T, 1.0, torch.Generator().manual_seed(1))

    def max_z_and_spread(start: float) -> tuple[float, float]:
        g = torch.Generator().manual_seed(2)
        out = sample_baseline(model.unet, "ddpm_ancestral", 4, x, generator=g, start_time=start)
        se = (ref.var(0) / n + out.var(0) / n).sqrt().clamp_min(1e-6)
        z = float(((ref.mean(0) - out.mean(0)) / se).abs().max())
        return z, float(out.std(0).mean() / ref.std(0).mean())

    z, spread = max_z_and_spread(T)
    assert z < 4.0 and abs(spread - 1) < 0.15
    z_wrong, spread_wrong = max_z_and_spread(0.3)
    assert z_wrong > 4.0 and abs(spread_wrong - 1) > 0.15


def test_unipc_from_x_t_lands_on_the_ode_solution(model: object) -> None:
    """From x_t, 50 UniPC steps land closer to the ODE's solution from t (Richardson
    extrapolation of glass_core's Euler at 50 and 100 steps) than Euler at 50 does; started at
    sigma = 1 - 0.38 instead (a 0.02 error in the start) it does not."""
    x = noised(8, 3)

    def euler(n: int) -> torch.Tensor:
        with torch.no_grad():
            return ODE(substeps=n)(model, x, T, 1.0)

    e50 = euler(50)
    exact = 2 * euler(100) - e50
    euler_err = float((e50 - exact).abs().mean())

    def err(start: float) -> float:
        return float(
            (sample_baseline(model.unet, "unipc", 50, x, start_time=start) - exact).abs().mean()
        )

    assert euler_err < 0.05  # the reference is an accurate ODE solution
    assert err(T) < 0.7 * euler_err
    assert err(T - 0.02) > euler_err


@pytest.mark.parametrize("start", [-0.1, 1.0, float("nan")])
def test_start_time_outside_zero_one_is_rejected(model: object, start: float) -> None:
    with pytest.raises(InvalidInputError, match="start_time"):
        sample_baseline(model.unet, "unipc", 2, torch.zeros(2, 1, 8, 8), start_time=start)
