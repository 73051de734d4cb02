"""The unconditional-pipeline adapter (DDPMPipeline-style: a UNet2DModel and a scheduler):
its denoiser against diffusers' own x0 conversion for each prediction type, encode, and errors."""

from __future__ import annotations

import numpy as np
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


def test_decode_maps_to_images_and_counts_each_call() -> None:
    """decode maps samples in [-1, 1] to images in [0, 1] (clamped) and counts one decode per
    call on the meter steer reports as num_decodes."""
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    model = UnconditionalPipelineModel(ddpm_pipeline(), 1, None)
    z = torch.tensor([-1.5, -1.0, 0.0, 0.5]).view(4, 1, 1, 1).expand(4, 1, 8, 8)
    images = model.decode(z)
    torch.testing.assert_close(images[:, 0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 0.75]))
    model.decode(z)
    assert model.meter.decodes == 2


def test_encode_resizes_any_image_to_the_sample_shape() -> None:
    """encode resizes to the UNet's sample size (height and width) and maps [0, 1] to [-1, 1]."""
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    model = UnconditionalPipelineModel(ddpm_pipeline(), 1, None)
    flat = torch.full((2, 1, 20, 12), 0.75, dtype=torch.float64)
    z = model.encode(flat)
    assert z.shape == (2, 1, 8, 8) and z.dtype == torch.float32  # the particles' dtype
    torch.testing.assert_close(z, torch.full_like(z, 0.5))


@pytest.mark.parametrize("channels", [1, 3])
def test_encode_reads_a_colour_image_with_the_unets_channels(channels: int) -> None:
    """An RGB PIL image becomes a grey-scale sample for a 1-channel UNet (luma 0.299 R, PIL's
    ITU-R 601-2 conversion, to 8 bits) and stays RGB for a 3-channel one; [0, 1] -> [-1, 1]."""
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel
    from PIL import Image

    model = UnconditionalPipelineModel(ddpm_pipeline(channels=channels), 1, None)
    z = model.encode(Image.new("RGB", (8, 8), (255, 0, 0)))  # pure red
    assert z.shape == (1, channels, 8, 8)
    want = [0.299 * 2 - 1] if channels == 1 else [1.0, -1.0, -1.0]
    for c, v in enumerate(want):
        torch.testing.assert_close(z[0, c], torch.full((8, 8), v), rtol=0, atol=2 / 255)


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


def test_the_adapters_velocity_is_the_marginal_velocity_of_its_denoiser() -> None:
    """UnconditionalPipelineModel.velocity is u_t(x) = (sigma'/sigma) x + (alpha' - alpha
    sigma'/sigma) D_t(x) (docs/math.md §1) of its own denoiser, per-row times too, and each call
    counts one evaluation."""
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    model = UnconditionalPipelineModel(ddpm_pipeline(), 1, None)
    s = model.schedule
    x = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    ts = torch.tensor([0.3, 0.5, 0.8])
    with torch.no_grad():
        u, d = model.velocity(x, ts), model.denoise(x, ts)
        u2 = model.velocity(x, 0.5)
    assert model.num_evaluations == 3
    coef = [(s.d_sigma(t) / s.sigma(t), s.d_alpha(t) - s.alpha(t) * s.d_sigma(t) / s.sigma(t))
            for t in ts.tolist()]  # fmt: skip
    ref = torch.stack([a * x[i] + b * d[i] for i, (a, b) in enumerate(coef)])
    torch.testing.assert_close(u, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u2[1], u[1])


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
    pipe.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[1]))
    t = 0.123
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.denoise(x, t)
        model.denoise(x.bfloat16(), t)
    # DDPM: 101 (1 - t) - 1 = 87.577 on this table (continuous-time equivalent timestep)
    want = float(model.schedule.timestep_from_t(t)) if scheduler == "ddpm" else 100 * (1 - t)
    for got in seen:  # to within float32 rounding of t
        torch.testing.assert_close(
            got.double(), torch.full((2,), want, dtype=torch.float64), rtol=1e-6, atol=0
        )
        # in the times' float32, never float64: a Fourier-embedding UNet computes its embedding
        # in the timestep's dtype, and MPS has no float64
        assert got.dtype == torch.float32


class _FlowMatchBareScheduler:
    """A flow-matching scheduler whose config records neither shift nor num_train_timesteps."""

    def __init__(self) -> None:
        self.config: dict = {}


def test_flow_time_grid_is_uniform_or_shifted_by_the_schedulers_shift() -> None:
    """A flow scheduler's grid is uniform in t = 1 - sigma, moved by a static shift to
    sigma' = shift sigma / (1 + (shift - 1) sigma) (diffusers' time shift); a config without shift
    (or num_train_timesteps) means no shift (and T = 1000, diffusers' default)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    k = 4
    sigma = 1.0 - np.arange(k + 1) / k
    cases = [
        (FlowMatchEulerDiscreteScheduler(num_train_timesteps=100, shift=3.0), 3.0),
        (FlowMatchEulerDiscreteScheduler(num_train_timesteps=100), 1.0),
        (_FlowMatchBareScheduler(), 1.0),
    ]
    for sched, shift in cases:
        pipe = ddpm_pipeline()
        pipe.scheduler = sched
        model = UnconditionalPipelineModel(pipe, 1, None)
        want = 1.0 - shift * sigma / (1.0 + (shift - 1.0) * sigma)
        np.testing.assert_allclose(model.time_grid(k), want, rtol=0, atol=1e-15)
    seen = []
    pipe.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[1].tolist()))
    with torch.no_grad():
        model.denoise(torch.zeros(2, 1, 8, 8), 0.25)
    assert seen == [[750.0, 750.0]]  # T sigma, T = 1000


class _NoTableScheduler:
    def __init__(self) -> None:
        self.config: dict = {}


def _with_scheduler(make):
    def build():
        pipe = ddpm_pipeline()
        pipe.scheduler = make()
        return pipe

    return build


def _dpm_flow():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(prediction_type="flow_prediction")


def _dynamic_flow():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)


class _NotAPipeline:
    unet = None


class _NoUnet:
    scheduler = None


_UNSUPPORTED = {
    "no-unet": (
        _NoUnet,
        "pipe: _NoUnet is not an unconditional UNet2DModel pipeline (needs pipe.unet: "
        "UNet2DModel and pipe.scheduler); text-conditioned pipelines go through "
        "glass_core.models.diffusers",
    ),
    "not-a-pipeline": (
        _NotAPipeline,
        "pipe: _NotAPipeline is not an unconditional UNet2DModel pipeline (needs pipe.unet: "
        "UNet2DModel and pipe.scheduler); text-conditioned pipelines go through "
        "glass_core.models.diffusers",
    ),
    "no-scheduler": (
        _with_scheduler(lambda: None),
        "pipe: DDPMPipeline is not an unconditional UNet2DModel pipeline (needs pipe.unet: "
        "UNet2DModel and pipe.scheduler); text-conditioned pipelines go through "
        "glass_core.models.diffusers",
    ),
    "dynamic-shift": (
        _with_scheduler(_dynamic_flow),
        "pipe.scheduler: dynamic shifting needs an image size",
    ),
    "prediction-type": (
        _with_scheduler(_dpm_flow),
        "pipe.scheduler: prediction_type 'flow_prediction' unsupported",
    ),
    "no-table": (
        _with_scheduler(_NoTableScheduler),
        "pipe.scheduler: _NoTableScheduler is neither a flow-matching scheduler nor one with "
        "alphas_cumprod",
    ),
}


@pytest.mark.parametrize("case", sorted(_UNSUPPORTED))
def test_unsupported_pipelines_and_schedulers_get_their_exact_message(case: str) -> None:
    from glass_core.errors import UnsupportedModelError
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    make, message = _UNSUPPORTED[case]
    with pytest.raises(UnsupportedModelError) as err:
        from_unconditional_pipeline(make())
    assert str(err.value) == message


def test_the_wrapper_passes_max_batch_to_its_denoiser() -> None:
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    pipe = ddpm_pipeline()
    model = UnconditionalPipelineModel(pipe, 1, max_batch=2)
    seen = []
    pipe.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    x = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d = model.denoise(x, 0.4)
        whole = UnconditionalPipelineModel(pipe, 1, max_batch=None).denoise(x, 0.4)
    assert seen == [2, 2, 1, 5]
    torch.testing.assert_close(d, whole, rtol=1e-5, atol=1e-6)


def test_wrap_pipeline_takes_groups_from_generators_and_refuses_text_arguments() -> None:
    from glass_core.errors import InvalidInputError
    from glass_core.models.diffusers.pipeline_model import wrap_pipeline

    pipe = ddpm_pipeline()
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    model = wrap_pipeline(pipe, generator=gens, max_batch=4, timed=True, guidance_scale=None)
    assert model.num_groups == 3 and model.inner.max_batch == 4 and model.meter.timed
    assert wrap_pipeline(pipe, generator=gens[0]).num_groups == 1
    assert wrap_pipeline(pipe, generator=[]).num_groups == 1  # at least one group
    assert wrap_pipeline(pipe).meter.timed is False  # a bool, as Meter.timed is
    with pytest.raises(InvalidInputError) as err:
        wrap_pipeline(pipe, "a cat", guidance_scale=3.0, height=None)
    assert str(err.value) == (
        "prompt, guidance_scale: DDPMPipeline is an unconditional UNet2DModel pipeline (no text "
        "conditioning); pass prompt=None and no prompt/embedding/guidance/size arguments"
    )


def test_unconditional_flow_pipeline_adapter() -> None:
    """A flow-matching scheduler: x_t = t x0 + sigma eps with sigma = 1 - t and diffusers'
    v = eps - x0, so the adapter's denoiser is x - sigma v(x, T sigma) (docs/math.md §1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    pipe = ddpm_pipeline()
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=100)
    model = from_unconditional_pipeline(pipe)
    x = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    t = 0.375  # sigma = 0.625, network timestep 62.5 (exact in float32)
    with torch.no_grad():
        v = pipe.unet(x, torch.full((3,), 62.5)).sample
        d = model.denoise(x, t)
    torch.testing.assert_close(d, x - 0.625 * v, rtol=1e-5, atol=1e-5)


def test_a_rectangular_sample_size_sets_the_sample_shape_and_encode_size() -> None:
    """A UNet whose sample_size is (height, width): samples and encoded images take exactly that
    size (7 x 5 is no multiple of a VAE factor: encode does not round it down); the denoiser
    carries the pipeline's own UNet."""
    from glass_core.models.diffusers.unconditional import (
        UnconditionalPipelineModel,
        from_unconditional_pipeline,
    )

    pipe = ddpm_pipeline()
    pipe.unet.register_to_config(sample_size=(7, 5))
    inner = from_unconditional_pipeline(pipe)
    assert inner.sample_shape == (1, 7, 5) and inner.unet is pipe.unet
    model = UnconditionalPipelineModel(pipe, 1, None)
    assert model.latent_shape == (1, 7, 5)
    z = model.encode(torch.full((1, 1, 14, 10), 0.25))
    assert z.shape == (1, 1, 7, 5)
    torch.testing.assert_close(z, torch.full_like(z, -0.5))


class _TableOnlyScheduler:
    """A DDPM table whose config records no prediction_type (diffusers' default: epsilon)."""

    def __init__(self) -> None:
        from diffusers import DDPMScheduler

        self.config: dict = {"num_train_timesteps": 100}
        self.alphas_cumprod = DDPMScheduler(num_train_timesteps=100).alphas_cumprod


def test_a_table_scheduler_without_prediction_type_predicts_epsilon() -> None:
    """No prediction_type in the scheduler's config means epsilon, as in diffusers: at table node
    k the denoiser is (x - sqrt(1 - abar_k) eps) / sqrt(abar_k)."""
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    pipe = ddpm_pipeline()
    pipe.scheduler = _TableOnlyScheduler()
    model = from_unconditional_pipeline(pipe)
    assert model.prediction == "epsilon"
    k = 37
    t = 1.0 - (k + 1) / 101
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    abar = pipe.scheduler.alphas_cumprod[k]
    with torch.no_grad():
        eps = pipe.unet(x, torch.full((2,), float(k))).sample
        d = model.denoise(x, t)
    torch.testing.assert_close(d, (x - (1 - abar).sqrt() * eps) / abar.sqrt(), rtol=1e-4, atol=1e-4)


def test_vp_time_grid_is_the_schedulers_timesteps_on_the_table() -> None:
    """A DDPM scheduler (T = 100): the grid is its own timesteps for 4 steps (75, 50, 25, 0) as
    table times t_k = 1 - (k + 1) / (T + 1), starting from pure noise 0 and ending at 1."""
    from glass_core.models.diffusers.unconditional import UnconditionalPipelineModel

    model = UnconditionalPipelineModel(ddpm_pipeline(), 1, None)
    assert model.num_train_timesteps == 100
    want = [0.0, *(1.0 - (k + 1) / 101 for k in (50, 25, 0)), 1.0]
    np.testing.assert_allclose(model.time_grid(4), want, rtol=0, atol=1e-12)


def test_predict_reads_times_of_any_float_dtype() -> None:
    """The public predict takes times in any float dtype (bf16 too, which NumPy has no type for):
    bf16 times whose timesteps are exact in bf16 (t = 0.5, 0.75: k = 49.5, 24.25) predict what
    the same times in float32 do."""
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    model = from_unconditional_pipeline(ddpm_pipeline())
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(8))
    t = torch.tensor([0.5, 0.75])
    with torch.no_grad():
        torch.testing.assert_close(
            model.predict(x, t.bfloat16()), model.predict(x, t), rtol=1e-6, atol=1e-6
        )
