"""The unconditional-pipeline adapter (DDPMPipeline-style: a UNet2DModel and a scheduler):
its denoiser against diffusers' own x0 conversion for each prediction type, encode, and errors."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from tiny_pipelines import ddpm_pipeline


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unconditional_vp_pipeline_adapter(prediction_type: str) -> None:
    """DDPM-style pipelines: at a table node k (t_k = 1 - (k+1)/(T+1)) the adapter's denoiser is
    the diffusers x0-prediction of the network queried at timestep k."""
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    pipe = ddpm_pipeline(prediction_type)
    model = from_unconditional_pipeline(pipe)
    assert model.sample_shape == (1, 8, 8)
    k, num_t = 37, 100
    t = 1.0 - (k + 1) / (num_t + 1)
    x = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    abar = pipe.scheduler.alphas_cumprod[k]
    with torch.no_grad():
        out = pipe.unet(x, torch.full((3,), float(k))).sample
        d = model.denoise(x, t)
    if prediction_type == "epsilon":
        ref = (x - (1 - abar).sqrt() * out) / abar.sqrt()
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  x0 = sqrt(abar) x - sqrt(1 - abar) v
        ref = abar.sqrt() * x - (1 - abar).sqrt() * out
    torch.testing.assert_close(d, ref, rtol=1e-4, atol=1e-4)
    # pure noise (t = 0) and t = 1 are answered at the end nodes (query_time), finitely
    t_lo, t_hi = model.schedule.model_time_range
    torch.testing.assert_close(model.denoise(x, 0.0), model.denoise(x, t_lo))
    torch.testing.assert_close(model.denoise(x, 1.0), model.denoise(x, t_hi))
    assert torch.isfinite(model.velocity(x, 0.0)).all()


def test_unsupported_pipeline_is_a_clear_error() -> None:
    from glass_core.errors import UnsupportedModelError
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    class NotAPipeline:
        unet = None

    with pytest.raises(UnsupportedModelError, match="UNet2DModel"):
        from_unconditional_pipeline(NotAPipeline())


def test_encode_resizes_any_image_to_the_sample_shape() -> None:
    """encode resizes to the UNet's sample size (height and width) and maps [0, 1] to [-1, 1]."""
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    model = UnconditionalPipelineModel(ddpm_pipeline(), 1, None)
    flat = torch.full((2, 1, 20, 12), 0.75)
    z = model.encode(flat)
    assert z.shape == (2, 1, 8, 8)
    torch.testing.assert_close(z, torch.full_like(z, 0.5))


@pytest.mark.parametrize("scheduler", ["ddpm", "flow"])
def test_a_half_precision_unet_predicts_in_the_particles_dtype(scheduler: str) -> None:
    """A bf16 UNet is fed bf16 inputs, but its predictions come back in the particles' float32."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    pipe = ddpm_pipeline()
    if scheduler == "flow":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=100)
    pipe.unet.to(torch.bfloat16)
    model = from_unconditional_pipeline(pipe)
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert model.predict(x, torch.full((2,), 0.5)).dtype == torch.float32


@pytest.mark.parametrize("scheduler", ["ddpm", "flow"])
def test_half_precision_particles_are_queried_at_their_exact_times(scheduler: str) -> None:
    """Times are not rounded to bf16 particles' dtype (0.123 -> 0.1230469): the UNet gets the
    timestep float32 particles get, the continuous-time equivalent of t on the DDPM table or
    T (1 - t) for a flow scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    pipe = ddpm_pipeline()  # T = 100
    if scheduler == "flow":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=100)
    model = from_unconditional_pipeline(pipe)
    seen = []
    pipe.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[1].double()))
    t = 0.123
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.denoise(x, t)
        model.denoise(x.bfloat16(), t)
    # DDPM: 101 (1 - t) - 1 = 87.577 on this table (continuous-time equivalent timestep)
    want = float(model.schedule.timestep_from_t(t)) if scheduler == "ddpm" else 100 * (1 - t)
    for got in seen:  # to within float32 rounding of t
        torch.testing.assert_close(
            got, torch.full((2,), want, dtype=torch.float64), rtol=1e-6, atol=0
        )
