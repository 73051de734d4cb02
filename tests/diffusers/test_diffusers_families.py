"""FLUX.2 ([dev], [klein]), Qwen-Image, SANA and Wan 2.x through ``steer`` on tiny random-weight
pipelines: the deterministic sampler equals the pipeline's own (same seed, same steps), FK and
best-of-N run, video rewards, call options and errors."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import tiny_families as tf
import tiny_pipelines as tp
from glass_core.errors import InvalidInputError, UnsupportedModelError
from glass_core.models.diffusers import SUPPORTED_FAMILIES, detect_family
from glass_core.models.diffusers.pipeline_model import PipelineModel, wrap_pipeline
from glass_core.rewards.loading import image_reward, video_reward
from glass_core.steering import steer
from glass_core.transitions import ODE, Glass

PROMPTS = ["a red house", "a cat on the moon"]
FAMILIES = sorted(tf.BUILDERS)
# Qwen-Image's true CFG needs a negative prompt (the pipeline's true_cfg_scale default is 4.0)
EXTRA = {"qwenimage": {"negative_prompt": ["blue sky", "green tree"]}}
MEAN = image_reward(lambda im: im.mean(dim=(1, 2, 3)))


# the 2024 families' tiny pipelines (tiny_pipelines), by the names of the families they are
CLASSIC = {
    "flux": lambda: tp.flux_pipeline(True),
    "sd3": lambda: tp.sd3_pipeline(),
    "sd": lambda: tp.sd_pipeline("epsilon"),
    "sdxl": lambda: tp.sdxl_pipeline(),
}


def _any_pipeline(name: str):
    return (CLASSIC.get(name) or tf.BUILDERS[name])()


def _call(name: str) -> dict:
    if name in CLASSIC:  # the 2024 families' tiny pipelines share one size
        return {"height": tp.HEIGHT, "width": tp.WIDTH}
    return {**tf.SMALL_CALL[name], **EXTRA.get(name, {})}


def _pipe_output(name: str, k: int) -> torch.Tensor:
    out = tf.BUILDERS[name]()(
        prompt=PROMPTS,
        num_inference_steps=k,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        **_call(name),
    )
    return out.frames if hasattr(out, "frames") else out.images


@pytest.mark.parametrize("name", FAMILIES)
def test_deterministic_steer_equals_the_pipeline(name: str) -> None:
    k = 3
    ref = _pipe_output(name, k)
    for transition in (ODE(), Glass(rho=1.0, inner_steps=1)):
        res = steer(
            tf.BUILDERS[name](),
            PROMPTS,
            method="sample",
            transition=transition,
            num_particles=1,
            num_transitions=k,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            progress=False,
            **_call(name),
        )
        assert res.images.shape == ref.shape
        rel = float((res.images - ref).abs().max() / ref.abs().max())
        assert rel < 1e-4, (name, type(transition).__name__, rel)
        assert res.nfe == k


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", ["fk", "best_of_n"])
def test_fk_and_best_of_n_run(name: str, method: str) -> None:
    n, k = 2, 2
    res = steer(
        tf.BUILDERS[name](),
        PROMPTS,
        reward=MEAN,
        method=method,
        transition=Glass(inner_steps=1),
        num_particles=n,
        num_transitions=k,
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
        progress=False,
        **_call(name),
    )
    assert res.rewards.shape == (2, n) and torch.isfinite(res.rewards).all()
    media = res.images.reshape(2 * n, -1)
    # the rewards are those of the returned images (frames averaged for a video)
    torch.testing.assert_close(res.rewards.reshape(-1), media.mean(dim=1))
    if method == "fk":
        assert res.ancestors.shape == (k, 2, n)
    assert res.total_forward_passes == res.forward_passes * 2 * n


@pytest.mark.parametrize("name", FAMILIES)
def test_max_batch_bounds_the_rows_of_every_network_call(name: str) -> None:
    from glass_core.models.diffusers import from_pipeline

    pipe = tf.BUILDERS[name]()
    whole = from_pipeline(pipe, PROMPTS, **_call(name))
    passes = whole.passes_per_eval  # 2 with CFG
    small = from_pipeline(pipe, PROMPTS, max_batch=2 * passes, **_call(name))
    assert small.network_max_batch == 2 * passes
    x = torch.randn(4, *whole.latent_shape, generator=torch.Generator().manual_seed(3))
    seen: dict[str, list[int]] = {"whole": [], "small": []}

    def rows(model, key: str) -> torch.Tensor:
        def hook(module, args, kwargs):
            seen[key].append(int((args[0] if args else kwargs["hidden_states"]).shape[0]))

        handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                return model.velocity(x, 0.4)
        finally:
            handle.remove()

    u_whole, u_small = rows(whole, "whole"), rows(small, "small")
    # every row once (x CFG passes); 2 particle rows per call instead of 4 (Qwen-Image runs its
    # conditional and unconditional passes as separate calls, the others batch them)
    assert sum(seen["whole"]) == sum(seen["small"]) == 4 * passes
    assert max(seen["whole"]) == 2 * max(seen["small"]) <= 2 * small.network_max_batch
    torch.testing.assert_close(u_small, u_whole, rtol=1e-4, atol=1e-5)


def test_every_family_implements_the_interface_and_is_detected() -> None:
    for name in FAMILIES:
        pipe = tf.BUILDERS[name]()
        family = detect_family(pipe)
        assert family in SUPPORTED_FAMILIES
        model = wrap_pipeline(pipe, PROMPTS, **_call(name))
        assert isinstance(model, PipelineModel)
        assert model.num_groups == 2 and model.prompts == PROMPTS


def test_wrap_pipeline_passes_max_batch_and_timing_to_the_adapter() -> None:
    pipe = tf.BUILDERS["sana"]()
    model = wrap_pipeline(pipe, PROMPTS, max_batch=3, timed=True, **_call("sana"))
    assert model.network_max_batch == 3 and model.meter.timed
    assert wrap_pipeline(pipe, PROMPTS, **_call("sana")).meter.timed is False


def _with_transformer(name: str, dtype: torch.dtype = torch.float32, **config):
    """The tiny ``name`` pipeline with its transformer's config changed (or in another dtype)."""
    base = tf.BUILDERS[name]()
    own = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}
    tr = type(base.transformer).from_config({**own, **config})
    tr.load_state_dict(base.transformer.state_dict())
    pipe = type(base)(**{**base.components, "transformer": tr.eval().to(dtype)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _network_timesteps(pipe, t: float, name: str = "sana") -> list[float]:
    from glass_core.models.diffusers import from_pipeline

    model = from_pipeline(pipe, PROMPTS, **_call(name))
    seen: list[float] = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.extend(kwargs["timestep"].tolist()), with_kwargs=True
    )
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            model.velocity(x, t)
    finally:
        hook.remove()
    return seen


def test_sana_scales_timesteps_like_the_pipeline() -> None:
    """A transformer with timestep_scale (SANA-Sprint) gets T sigma x scale, as SanaPipeline
    passes it (same samples); a config without one (diffusers before it existed) is unscaled."""
    pipe = _with_transformer("sana", timestep_scale=2.0)
    ref = pipe(
        prompt=PROMPTS, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
        output_type="pt", **_call("sana"),
    ).images  # fmt: skip
    res = steer(
        pipe, PROMPTS, method="sample", transition=ODE(), num_particles=1, num_transitions=2,
        generator=torch.Generator().manual_seed(0), output_type="pt", progress=False,
        **_call("sana"),
    )  # fmt: skip
    assert float((res.images - ref).abs().max() / ref.abs().max()) < 1e-4
    # T = 1000, sigma = 1 - t = 0.75; CFG: conditional and unconditional rows
    assert _network_timesteps(pipe, 0.25) == [1500.0] * 4
    from diffusers.configuration_utils import FrozenDict

    old = _with_transformer("sana", timestep_scale=2.0)
    old.transformer._internal_dict = FrozenDict(
        {k: v for k, v in old.transformer.config.items() if k != "timestep_scale"}
    )
    assert _network_timesteps(old, 0.25) == [750.0] * 4


def test_sana_scales_float32_timesteps_as_the_pipeline_rounds_them() -> None:
    """SanaPipeline multiplies its float32 timesteps by timestep_scale in float32: with scale 0.3,
    750 x 0.3 rounds to 225.0000153 (not 225), and the network gets exactly that, as float32."""
    pipe = _with_transformer("sana", timestep_scale=0.3)
    expected = torch.full((4,), 750.0) * 0.3  # the pipeline's float32 product
    assert float(expected[0]) != 225.0  # the rounding order is visible here
    seen: list[torch.Tensor] = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["timestep"]), with_kwargs=True
    )
    try:
        assert _network_timesteps(pipe, 0.25) == expected.tolist()
    finally:
        hook.remove()
    assert seen[0].dtype == torch.float32


def test_sana_learned_sigma_keeps_the_first_half_as_the_pipeline() -> None:
    """A transformer with out_channels = 2 x in_channels (learned sigma): the velocity is the
    first half of its output channels, as SanaPipeline takes it (same samples)."""
    base = tf.BUILDERS["sana"]()
    own = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}
    torch.manual_seed(41)
    tr = type(base.transformer).from_config({**own, "out_channels": 2 * own["in_channels"]})
    pipe = type(base)(**{**base.components, "transformer": tr.eval()})
    pipe.set_progress_bar_config(disable=True)
    kw = {"generator": torch.Generator().manual_seed(0), "output_type": "pt", **_call("sana")}
    ref = pipe(prompt=PROMPTS, num_inference_steps=2, **kw).images
    kw["generator"] = torch.Generator().manual_seed(0)
    res = steer(
        pipe, PROMPTS, method="sample", transition=ODE(), num_particles=1, num_transitions=2,
        progress=False, **kw,
    )  # fmt: skip
    assert float((res.images - ref).abs().max() / ref.abs().max()) < 1e-4


def test_sana_runs_a_bf16_transformer_with_a_float32_text_encoder() -> None:
    """The particles and prompt embeddings are cast to the transformer's dtype, as SanaPipeline
    casts them: u = -transformer(x, embeddings, T (1 - t)) in bf16, returned in float32."""
    from glass_core.models.diffusers import from_pipeline

    pipe = _with_transformer("sana", torch.bfloat16)
    model = from_pipeline(pipe, PROMPTS, guidance_scale=1.0, **_call("sana"))  # no CFG
    cond = model.conditioning.cond
    assert cond["encoder_hidden_states"].dtype == torch.float32  # the text encoder's
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        u = model.velocity(x, 0.25)
        ref = pipe.transformer(
            x.bfloat16(),
            encoder_hidden_states=cond["encoder_hidden_states"].bfloat16(),
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=torch.full((2,), 750.0),
            return_dict=False,
        )[0]
    assert u.dtype == torch.float32
    torch.testing.assert_close(u, -ref.float(), rtol=0, atol=0)


def test_qwenimage_distilled_guidance_is_required_and_used_only_by_distilled_models() -> None:
    """As QwenImagePipeline: guidance_scale is the guidance embedding's input of a
    guidance-distilled transformer (required there), and ignored by the others."""
    from glass_core.models.diffusers import from_pipeline

    call = _call("qwenimage")
    distilled = _with_transformer("qwenimage", guidance_embeds=True)
    with pytest.raises(InvalidInputError) as err:
        from_pipeline(distilled, PROMPTS, **call)
    assert str(err.value) == "guidance_scale is required for a guidance-distilled model"
    assert from_pipeline(distilled, PROMPTS, guidance_scale=3.0, **call).distilled_guidance == 3.0
    plain = from_pipeline(tf.BUILDERS["qwenimage"](), PROMPTS, guidance_scale=3.0, **call)
    assert plain.distilled_guidance is None
    # a transformer config without guidance_embeds at all is not distilled either
    from diffusers.configuration_utils import FrozenDict

    bare = _with_transformer("qwenimage")  # a copy: the tiny pipelines are shared
    bare.transformer._internal_dict = FrozenDict(
        {k: v for k, v in bare.transformer.config.items() if k != "guidance_embeds"}
    )
    assert from_pipeline(bare, PROMPTS, guidance_scale=3.0, **call).distilled_guidance is None


@pytest.mark.parametrize(
    "name",
    [
        *FAMILIES,
        "flux2-dynamic",
        "flux2_klein-dynamic",
        "qwenimage-unipc",
    ],
)
def test_default_grid_is_the_pipelines_own_sigmas(name: str) -> None:
    """default_time_grid = 1 - the sigmas the pipeline's __call__ sets (FLUX.2 also with a
    dynamic-shift scheduler, where its empirical mu from sequence length and steps applies;
    Qwen-Image also with a dynamic-shift UniPC, whose config has no max_shift: the pipeline's
    fallback 1.15 applies)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from glass_core.models.diffusers import default_time_grid, from_pipeline

    family, _, variant = name.partition("-")
    pipe = tf.BUILDERS[family]()
    if variant:
        if variant == "dynamic":
            sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        else:
            sched = _unipc_dynamic()
        pipe = type(pipe)(**{**pipe.components, "scheduler": sched})
        pipe.set_progress_bar_config(disable=True)

    sigmas = tp.pipeline_sigmas(pipe, 3, prompt=PROMPTS, **_call(family))
    model = from_pipeline(pipe, PROMPTS, **_call(family))
    np.testing.assert_allclose(default_time_grid(model, 3), 1 - sigmas, rtol=0, atol=1e-6)


class _Stop(Exception):
    """Raised by a forward pre-hook once it has the network's inputs."""


def _first_network_kwargs(model, x: torch.Tensor, t: float) -> dict:
    """The keyword arguments of model's first network call at (x, t); the forward is not run."""
    seen: list[dict] = []

    def grab(mod, args, kwargs):
        seen.append(kwargs)
        raise _Stop

    hook = model.network.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with pytest.raises(_Stop), torch.no_grad():
            model.velocity(x, t)
    finally:
        hook.remove()
    return seen[0]


def test_qwenimage_network_inputs_are_the_pipelines() -> None:
    """As QwenImagePipeline passes them: a guidance-distilled transformer gets the guidance
    scale per row (float32), sigma = 1 - t in the latents' dtype, and img_shapes [(1, h/2, w/2)]
    per row as ints (the RoPE slices with them); a plain transformer gets guidance None."""
    from glass_core.models.diffusers import from_pipeline

    call = _call("qwenimage")
    distilled = from_pipeline(
        _with_transformer("qwenimage", guidance_embeds=True), PROMPTS, guidance_scale=3.0, **call
    )
    _, h, w = distilled.latent_shape
    x = torch.randn(2, *distilled.latent_shape, generator=torch.Generator().manual_seed(0))
    kw = _first_network_kwargs(distilled, x, 0.25)
    assert kw["guidance"].dtype == torch.float32 and kw["guidance"].device == x.device
    assert torch.equal(kw["guidance"], torch.full((2,), 3.0))
    assert kw["timestep"].dtype == x.dtype and kw["timestep"].tolist() == [0.75, 0.75]
    assert kw["img_shapes"] == [[(1, h // 2, w // 2)]] * 2
    assert all(type(v) is int for v in kw["img_shapes"][0][0])
    pipe = _with_transformer("qwenimage")  # a fresh transformer: its RoPE cache is empty
    plain = from_pipeline(pipe, PROMPTS, **{**tf.SMALL_CALL["qwenimage"], "width": 24})
    assert not plain.cfg
    c, h, w = plain.latent_shape
    assert len({c, h, w}) == 3  # unpacking with a wrong axis would show
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(1))
    assert _first_network_kwargs(plain, x, 0.25)["guidance"] is None
    # the fresh transformer runs with those img_shapes, and its packed output unpacks to the
    # particles' layout
    with torch.no_grad():
        out = plain.network(
            hidden_states=pipe._pack_latents(x, 2, c, h, w),
            timestep=torch.full((2,), 0.75),
            encoder_hidden_states=plain.conditioning.cond["encoder_hidden_states"],
            encoder_hidden_states_mask=plain.conditioning.cond.get("encoder_hidden_states_mask"),
            img_shapes=[[(1, h // 2, w // 2)]] * 2,
            return_dict=False,
        )[0]
        v = plain.velocity(x, 0.25)
    own = pipe._unpack_latents(out, call["height"], 24, pipe.vae_scale_factor)[:, :, 0]
    torch.testing.assert_close(v, -own, rtol=1e-5, atol=1e-6)


def test_qwenimage_direct_construction_defaults_and_sizes_are_the_pipelines() -> None:
    """QwenImageDenoiser built directly: true_cfg_scale defaults to the pipeline's __call__
    default, and a size off the 2 x vae_scale_factor grid rounds down as prepare_latents does."""
    import inspect

    from glass_core.models.diffusers import from_pipeline
    from glass_core.models.diffusers.qwenimage import QwenImageDenoiser

    pipe = tf.BUILDERS["qwenimage"]()
    cond = from_pipeline(pipe, PROMPTS, **_call("qwenimage")).conditioning
    model = QwenImageDenoiser(pipe, cond, height=36, width=20)
    default = inspect.signature(type(pipe).__call__).parameters["true_cfg_scale"].default
    assert model.guidance_scale == default
    vsf = pipe.vae_scale_factor
    assert (36 % (2 * vsf), 20 % (2 * vsf)) != (0, 0)
    # QwenImagePipeline.prepare_latents: height = 2 * (int(height) // (vae_scale_factor * 2))
    c = pipe.transformer.config.in_channels // 4
    assert model.latent_shape == (c, 2 * (36 // (2 * vsf)), 2 * (20 // (2 * vsf)))


@pytest.mark.parametrize("name", ["flux", "sd3", "sd", "wan"])
def test_direct_construction_defaults_are_the_pipelines(name: str) -> None:
    """An adapter built directly runs without autograd by default (with it when asked), and its
    call-option defaults are the pipeline's __call__ defaults (FLUX.1's true_cfg_scale, Wan's
    num_frames, which needs no rounding)."""
    import inspect
    import warnings

    from glass_core.models.diffusers import from_pipeline
    from glass_core.models.diffusers.flow import FluxDenoiser, SD3Denoiser
    from glass_core.models.diffusers.unet import UNetDenoiser
    from glass_core.models.diffusers.wan import WanDenoiser, latent_frames

    pipe = _any_pipeline(name)
    size = {"height": _call(name)["height"], "width": _call(name)["width"]}
    cond = from_pipeline(pipe, PROMPTS, **_call(name)).conditioning
    default = inspect.signature(type(pipe).__call__).parameters
    make = {
        "flux": lambda **kw: FluxDenoiser(pipe, cond, **size, **kw),
        "sd3": lambda **kw: SD3Denoiser(pipe, cond, **size, **kw),
        "sd": lambda **kw: UNetDenoiser(pipe, cond, family="sd", guidance_scale=7.5, **size, **kw),
        "wan": lambda **kw: WanDenoiser(pipe, cond, **size, **kw),
    }[name]
    with warnings.catch_warnings():
        if name == "wan":  # its default num_frames is on WanPipeline's grid: nothing to round
            warnings.simplefilter("error")
        model = make()
    assert model.requires_grad is False
    assert make(requires_grad=True).requires_grad is True
    if name == "flux":
        assert model.guidance_scale == default["true_cfg_scale"].default
    if name == "wan":
        assert model.latent_shape[1] == latent_frames(pipe, default["num_frames"].default)


def test_flux_encode_with_cfg_and_no_negative_guides_against_the_empty_prompt() -> None:
    """flux1.encode asked for the negative rows with neither a negative prompt nor negative
    embeddings encodes the empty prompt, one per group."""
    from glass_core.models.diffusers import flux1

    pipe = tp.flux_pipeline(True)
    e = dict.fromkeys(
        ["prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
         "negative_pooled_prompt_embeds"]
    )  # fmt: skip
    kw = {"max_sequence_length": 8}
    _, uncond = flux1.encode(pipe, PROMPTS, None, e, True, torch.device("cpu"), kw)
    ref, ref_pooled, _ = pipe.encode_prompt(prompt=["", ""], prompt_2=None, **kw)
    assert torch.equal(uncond["encoder_hidden_states"], ref)
    assert torch.equal(uncond["pooled_projections"], ref_pooled)


def test_flux2_network_inputs_are_the_pipelines() -> None:
    """As Flux2Pipeline / Flux2KleinPipeline pass them: [dev] (guidance embedding) gets the
    guidance scale per row in float32 and sigma = 1 - t in the latents' dtype; [klein] never
    gets guidance, even from a transformer with a guidance embedding; a transformer config
    without guidance_embeds has none. The adapters name their family."""
    from diffusers.configuration_utils import FrozenDict
    from glass_core.models.diffusers import from_pipeline

    dev = from_pipeline(tf.BUILDERS["flux2"](), PROMPTS, guidance_scale=3.0, **_call("flux2"))
    assert dev.family == "flux2"
    x = torch.randn(2, *dev.latent_shape, generator=torch.Generator().manual_seed(0))
    kw = _first_network_kwargs(dev, x, 0.25)
    assert kw["timestep"].dtype == x.dtype and kw["timestep"].tolist() == [0.75, 0.75]
    assert kw["guidance"].dtype == torch.float32
    assert torch.equal(kw["guidance"], torch.full((2,), 3.0))

    bare = _with_transformer("flux2")  # a copy: the tiny pipelines are shared
    bare.transformer._internal_dict = FrozenDict(
        {k: v for k, v in bare.transformer.config.items() if k != "guidance_embeds"}
    )
    plain = from_pipeline(bare, PROMPTS, guidance_scale=3.0, **_call("flux2"))
    assert _first_network_kwargs(plain, x, 0.25)["guidance"] is None

    base = tf.BUILDERS["flux2_klein"]()
    own = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}
    tr = type(base.transformer).from_config({**own, "guidance_embeds": True})
    tr.load_state_dict(base.transformer.state_dict(), strict=False)
    klein = type(base)(**{**base.components, "transformer": tr.eval()})
    model = from_pipeline(klein, PROMPTS, **_call("flux2_klein"))
    assert model.family == "flux2_klein"
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    assert _first_network_kwargs(model, x, 0.25)["guidance"] is None


@pytest.mark.parametrize("name", ["sd3", "sdxl", "sana", "wan"])
def test_a_negative_prompt_reaches_the_unconditional_rows(name: str) -> None:
    """With CFG, the negative prompt is what the unconditional rows encode (not the pipeline's
    default negative)."""
    from glass_core.models.diffusers import from_pipeline

    pipe = _any_pipeline(name)
    negs = ["blue sky", "green tree"]
    given = from_pipeline(pipe, PROMPTS, negative_prompt=negs, **_call(name))
    default = from_pipeline(pipe, PROMPTS, **_call(name))
    assert given.cfg and default.cfg
    a = given.conditioning.uncond["encoder_hidden_states"]
    b = default.conditioning.uncond["encoder_hidden_states"]
    assert a.shape != b.shape or not torch.equal(a, b)


def _unipc_dynamic():
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(
        use_dynamic_shifting=True, prediction_type="flow_prediction", use_flow_sigmas=True
    )
    assert "max_shift" not in sched.config
    return sched


def test_qwenimage_mu_without_max_shift_in_the_config_is_the_pipelines() -> None:
    """A dynamic-shift scheduler with no max_shift in its config (UniPC): the adapter's mu is the
    one QwenImagePipeline passes to set_timesteps (its fallback max_shift 1.15)."""
    from glass_core.models.diffusers import from_pipeline

    base = tf.BUILDERS["qwenimage"]()
    pipe = type(base)(**{**base.components, "scheduler": _unipc_dynamic()})
    pipe.set_progress_bar_config(disable=True)
    seen: list[float] = []
    own = pipe.scheduler.set_timesteps

    @functools.wraps(own)  # retrieve_timesteps reads its signature
    def spy(*args, **kwargs):
        seen.append(kwargs["mu"])
        return own(*args, **kwargs)

    pipe.scheduler.set_timesteps = spy
    call = _call("qwenimage")
    pipe(prompt=PROMPTS, num_inference_steps=1, output_type="latent", **call)
    model = from_pipeline(pipe, PROMPTS, **call)
    mu = model.scheduler_kwargs(3)["mu"]
    assert len(seen) == 1 and seen[0] != 0.5  # image_seq_len != 256: max_shift matters
    assert mu == pytest.approx(seen[0], rel=1e-12, abs=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_requires_grad_runs_the_network_with_autograd(name: str) -> None:
    """requires_grad=True (reward guidance) keeps the graph from the particles to the prediction;
    the default, and each denoiser class's own default, runs under no_grad."""
    from glass_core.models.diffusers import from_pipeline

    pipe = tf.BUILDERS[name]()
    graded = from_pipeline(pipe, PROMPTS, requires_grad=True, **_call(name))
    plain = from_pipeline(pipe, PROMPTS, **_call(name))
    assert graded.requires_grad is True and plain.requires_grad is False
    direct = type(plain)(pipe, plain.conditioning, height=plain.height, width=plain.width)
    assert direct.requires_grad is False and direct.network_max_batch is None
    x = torch.randn(2, *plain.latent_shape, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    assert not plain.velocity(x, 0.5).requires_grad
    graded.velocity(x, 0.5).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("frames", "latent"), [(5, 2), (6, 2), (8, 3), (9, 3), (1, 1)])
def test_wan_rounds_num_frames_as_its_pipeline(frames: int, latent: int) -> None:
    """num_frames - 1 not a multiple of the VAE's temporal factor 4 becomes num_frames // 4 * 4 + 1
    (6 -> 5, 8 -> 9) as in WanPipeline, with a warning; latent frames (num_frames - 1) / 4 + 1."""
    import warnings

    from glass_core.models.diffusers import from_pipeline

    call = {**_call("wan"), "num_frames": frames}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = from_pipeline(tf.BUILDERS["wan"](), PROMPTS, **call)
    assert model.latent_shape[1] == latent
    said = [str(w.message) for w in caught if "num_frames" in str(w.message)]
    want = ["num_frames - 1 has to be divisible by 4; rounding as WanPipeline does"]
    assert said == (want if (frames - 1) % 4 else [])
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampoline is a frame outside glass_core
        # the warning names the caller's line, here this file's, not a line inside glass_core
        located = [w.filename for w in caught if "num_frames" in str(w.message)]
        assert located == [__file__] * len(said)


def test_execution_device_is_the_pipelines_else_its_networks() -> None:
    """pipe._execution_device (where CPU offload runs the modules) when the pipeline has one,
    else the device of its transformer or UNet."""
    import types

    from glass_core.models.diffusers.families import execution_device

    net = torch.nn.Linear(1, 1)
    meta = torch.device("meta")
    ns = types.SimpleNamespace
    assert execution_device(ns(_execution_device=meta, transformer=net)) == meta
    assert execution_device(ns(_execution_device="meta", transformer=net)) == torch.device("cpu")
    assert execution_device(ns(transformer=None, unet=net)) == torch.device("cpu")
    assert execution_device(ns(unet=net.to("meta"))) == meta


_CFG_CASES = [  # (family, options, CFG passes) by each pipeline's own rule
    ("flux2", {"guidance_scale": 4.0}, 1),  # [dev]: distilled guidance input, never CFG
    ("flux2_klein", {"guidance_scale": 4.0}, 2),  # guidance_scale > 1 and not is_distilled
    ("flux2_klein", {"guidance_scale": 1.0}, 1),
    ("flux2_klein", {"guidance_scale": 1.5}, 2),
    ("flux2_klein-distilled", {"guidance_scale": 4.0}, 1),
    ("qwenimage", {"true_cfg_scale": 4.0, "negative_prompt": "blur"}, 2),  # > 1 and a negative
    ("qwenimage", {"true_cfg_scale": 4.0}, 1),
    ("qwenimage", {"true_cfg_scale": 1.0, "negative_prompt": "blur"}, 1),
    ("qwenimage", {"true_cfg_scale": 1.5, "negative_prompt": "blur"}, 2),
    ("sana", {"guidance_scale": 4.5}, 2),  # guidance_scale > 1
    ("sana", {"guidance_scale": 1.0}, 1),
    ("wan", {"guidance_scale": 1.0}, 1),
]


@pytest.mark.parametrize(("name", "options", "passes"), _CFG_CASES)
def test_cfg_runs_where_the_pipeline_runs_it(name: str, options: dict, passes: int) -> None:
    from glass_core.models.diffusers import from_pipeline

    family = name.removesuffix("-distilled")
    pipe = tf.BUILDERS[family]()
    if name.endswith("-distilled"):
        pipe = type(pipe)(**pipe.components, is_distilled=True)
    model = from_pipeline(pipe, PROMPTS, **{**tf.SMALL_CALL[family], **options})
    assert model.passes_per_eval == passes
    assert model.cfg == (passes == 2)


@pytest.mark.parametrize("name", FAMILIES)
def test_encode_options_default_to_the_pipelines_call(name: str, monkeypatch) -> None:
    """encode_prompt gets the family's call options at the pipeline's __call__ defaults unless
    given; encode_kwargs override both."""
    from glass_core.models.diffusers import from_pipeline
    from glass_core.models.diffusers.families import FAMILIES as REGISTRY
    from glass_core.models.diffusers.families import call_default

    pipe = tf.BUILDERS[name]()
    seen: list[dict] = []
    real = pipe.encode_prompt

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", spy)
    size = {k: v for k, v in tf.SMALL_CALL[name].items() if k in ("height", "width", "num_frames")}
    size.update({"use_resolution_binning": False} if name == "sana" else {})
    names = REGISTRY[detect_family(pipe)].module.ENCODE_OPTIONS
    from_pipeline(pipe, PROMPTS[0], **size)
    assert {n: seen[-1][n] for n in names} == {n: call_default(pipe, n) for n in names}
    from_pipeline(pipe, PROMPTS[0], max_sequence_length=12, **size)
    assert seen[-1]["max_sequence_length"] == 12
    from_pipeline(
        pipe, PROMPTS[0], max_sequence_length=12, encode_kwargs={"max_sequence_length": 9}, **size
    )
    assert seen[-1]["max_sequence_length"] == 9


_DEFAULT_SIZE = {  # what each pipeline's __call__ uses without height/width
    "flux2": lambda p: (p.default_sample_size * p.vae_scale_factor,) * 2,  # "height or ..."
    "flux2_klein": lambda p: (p.default_sample_size * p.vae_scale_factor,) * 2,
    "qwenimage": lambda p: (p.default_sample_size * p.vae_scale_factor,) * 2,
    "sana": lambda p: (1024, 1024),  # __call__(height=1024, width=1024)
    "wan": lambda p: (480, 832),  # __call__(height=480, width=832)
}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_default_size_is_the_pipelines(name: str) -> None:
    from glass_core.models.diffusers import from_pipeline

    pipe = tf.BUILDERS[name]()
    extra = {"use_resolution_binning": False} if name == "sana" else {}
    model = from_pipeline(pipe, PROMPTS[0], max_sequence_length=16, **extra)
    assert (model.height, model.width) == _DEFAULT_SIZE[name](pipe)


def test_wan_video_rewards_per_frame_and_whole_video(tmp_path: Path) -> None:
    pipe = tf.wan_pipeline()
    kw = {
        "method": "best_of_n",
        "transition": ODE(),
        "num_particles": 2,
        "num_transitions": 2,
        "output_type": "pt",
        "progress": False,
        "max_batch": 1,  # chunking over video rows
        **tf.SMALL_CALL["wan"],
    }
    first = image_reward(lambda im: im[:, 0].mean(dim=(1, 2)))  # red channel of each frame
    res = steer(pipe, PROMPTS, reward=first, generator=torch.Generator().manual_seed(2), **kw)
    video = res.images
    assert video.shape == (4, 5, 3, 32, 16)  # [M, F, C, H, W]: 5 frames, 2 latent frames
    torch.testing.assert_close(res.rewards.reshape(-1), video[:, :, 0].mean(dim=(1, 2, 3)))
    seen: list[tuple[int, ...]] = []

    def last_frame(videos: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(videos.shape))
        return videos[:, -1].mean(dim=(1, 2, 3))

    gen = torch.Generator().manual_seed(2)
    res = steer(pipe, PROMPTS, reward=video_reward(last_frame), generator=gen, **kw)
    torch.testing.assert_close(res.rewards.reshape(-1), res.images[:, -1].mean(dim=(1, 2, 3)))
    assert all(s[0] == 1 and len(s) == 5 for s in seen)  # max_batch videos per reward call
    one = {"method": "sample", "transition": ODE(), "num_particles": 1, "num_transitions": 1}
    frames = steer(
        pipe, PROMPTS[:1], output_type="pil", progress=False, **one, **tf.SMALL_CALL["wan"]
    )
    assert len(frames.images) == 1 and len(frames.images[0]) == 5  # one list of PIL frames
    frames.images[0].save(tmp_path / "video.png")  # an animated PNG of the 5 frames
    from PIL import Image

    with Image.open(tmp_path / "video.png") as anim:
        assert anim.n_frames == 5 and anim.size == (16, 32)


def test_call_options_and_errors() -> None:
    pipe = tf.sana_pipeline()
    with pytest.raises(InvalidInputError, match="num_frames"):
        steer(pipe, PROMPTS, method="sample", num_frames=9, progress=False)
    with pytest.raises(InvalidInputError, match="multiples of 32"):
        steer(pipe, PROMPTS, method="sample", height=48, width=32, progress=False)
    with pytest.raises(InvalidInputError, match="true_cfg_scale"):
        steer(pipe, PROMPTS, method="sample", true_cfg_scale=4.0, **tf.SMALL_CALL["sana"])
    with pytest.raises(InvalidInputError, match="video reward"):
        steer(pipe, PROMPTS, reward=video_reward(lambda v: v.mean()), **tf.SMALL_CALL["sana"])


def test_unsupported_message_lists_every_family() -> None:
    class NotAPipeline:
        transformer = torch.nn.Linear(1, 1)

    with pytest.raises(UnsupportedModelError) as err:
        detect_family(NotAPipeline())
    for name in ("FLUX.1", "SD3", "SDXL", "FLUX.2", "Qwen-Image", "SANA", "Wan"):
        assert name in str(err.value)
    listed = "; ".join(SUPPORTED_FAMILIES.values())
    assert str(err.value) == (
        "pipe: unsupported denoising transformer Linear in NotAPipeline; "
        f"supported families: {listed}"
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_steers_the_saved_tiny_pipeline(name: str, tmp_path: Path) -> None:
    """``glass-core steer --pipeline DIR`` on each family's tiny pipeline saved to disk (Wan's
    videos are written as animated PNGs; the CLI's default num_frames is the pipeline's, 81)."""
    tf.BUILDERS[name]().save_pretrained(str(tmp_path / "pipe"))
    (tmp_path / "reward.py").write_text(
        "def mean(images):\n    return images.mean(dim=(1, 2, 3))\n"
    )
    size = tf.SMALL_CALL[name]
    out = tmp_path / "out"
    argv = [
        *("steer", "--pipeline", str(tmp_path / "pipe"), "--prompt", "a red house"),
        *("--reward", f"python:{tmp_path / 'reward.py'}:mean", "--method", "fk"),
        *("--particles", "2", "--transitions", "2", "--inner-steps", "1", "--quiet"),
        *("--height", str(size["height"]), "--width", str(size["width"])),
        *("--max-sequence-length", "16", "--out", str(out)),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "glass_core", *argv], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["images"] == ["image_000.png", "image_001.png"]
    assert all((out / f).read_bytes()[:4] == b"\x89PNG" for f in record["images"])


def test_classic_families_share_the_registry_rules() -> None:
    """FLUX.1/SD3/SD/SDXL go through families.build: call options by the pipeline's names
    (SDXL's micro-conditioning, also through steer), the same option and true-CFG checks."""
    from glass_core.models.diffusers import call_options, from_pipeline, sdxl_add_time_ids

    xl = tp.sdxl_pipeline()
    assert call_options(xl) == ("original_size", "crops_coords_top_left", "target_size")
    size = {"height": tp.HEIGHT, "width": tp.WIDTH}
    given = {"original_size": (96, 80), "crops_coords_top_left": (4, 2), "target_size": (64, 48)}
    model = from_pipeline(xl, "a cat", **given, **size)
    expect = sdxl_add_time_ids(xl, **size, **given)
    assert expect.tolist() == [96, 80, 4, 2, 64, 48]
    torch.testing.assert_close(model.conditioning.cond["time_ids"][0], expect.to(torch.float32))
    # through steer: the option reaches the denoiser (different micro-conditioning, other output)
    kw = {"method": "sample", "num_particles": 1, "num_transitions": 2, "output_type": "latent"}
    kw.update(size, progress=False)
    plain = steer(xl, "a cat", generator=torch.Generator().manual_seed(0), **kw).samples
    micro = steer(
        xl, "a cat", generator=torch.Generator().manual_seed(0), original_size=(512, 512), **kw
    ).samples
    assert not torch.equal(plain, micro)
    sd = tp.sd_pipeline("epsilon")
    with pytest.raises(InvalidInputError, match="original_size: not a call option"):
        from_pipeline(sd, "a cat", original_size=(64, 64), **size)
    with pytest.raises(InvalidInputError, match="true_cfg_scale: StableDiffusionPipeline has no"):
        from_pipeline(sd, "a cat", true_cfg_scale=2.0, **size)
    with pytest.raises(InvalidInputError) as err:
        from_pipeline(tf.BUILDERS["sana"](), prompt_embeds=torch.zeros(1, 4, 8),
                      pooled_prompt_embeds=torch.zeros(1, 8),
                      negative_pooled_prompt_embeds=torch.zeros(1, 8))  # fmt: skip
    assert str(err.value) == (
        "negative_pooled_prompt_embeds, pooled_prompt_embeds: sana pipelines take no pooled embeds"
    )


@pytest.mark.parametrize("name", [*FAMILIES, *CLASSIC])
def test_default_guidance_is_the_pipelines_call_default(name: str) -> None:
    """The guidance a family uses when given none is its pipeline's ``__call__`` default
    (Qwen-Image's: None, no distilled guidance input)."""
    from glass_core.models.diffusers import DEFAULT_GUIDANCE
    from glass_core.models.diffusers.families import FAMILIES as REGISTRY
    from glass_core.models.diffusers.families import call_default

    pipe = _any_pipeline(name)
    family = detect_family(pipe)
    want = call_default(pipe, "guidance_scale")
    assert want == REGISTRY[family].module.DEFAULT_GUIDANCE
    if name in CLASSIC:
        assert DEFAULT_GUIDANCE[family] == want


class _Reached(Exception):
    """Raised by a forward pre-hook once it has seen the network's inputs."""


@pytest.mark.parametrize("name", [*FAMILIES, *CLASSIC])
def test_network_inputs_are_on_the_particles_device(name: str) -> None:
    """Particles on an accelerator with times given on the host (the public ``predict`` takes
    both): the latents, timestep and guidance inputs reach the network on the particles' device
    (the meta device stands for the accelerator; the hook stops before the forward runs)."""
    from glass_core.models.diffusers import from_pipeline

    pipe = _any_pipeline(name)
    model = from_pipeline(pipe, PROMPTS, **_call(name))
    seen: dict[str, object] = {}

    def hook(module, args, kwargs):
        names = ("hidden_states", "timestep")  # the UNets take both positionally
        seen.update(zip(names, args, strict=False), **kwargs)
        raise _Reached

    handle = model.network.register_forward_pre_hook(hook, with_kwargs=True)
    x = torch.zeros(2, *model.latent_shape, device="meta")
    try:
        with pytest.raises(_Reached):
            model.predict(x, torch.tensor([0.3, 0.6], dtype=torch.float64))
    finally:
        handle.remove()
    inputs = [seen["hidden_states"], seen["timestep"]]
    if seen.get("guidance") is not None:
        inputs.append(seen["guidance"])
    assert [v.device.type for v in inputs] == ["meta"] * len(inputs)


def test_sana_given_embeddings_and_masks_reach_the_network_inputs():
    """SANA's encode passes every given embedding and attention mask through to the
    transformer's inputs, the negatives' too (nothing is re-encoded or dropped)."""
    from glass_core.models.diffusers import sana

    pipe = tf.BUILDERS["sana"]()
    pe, mask, npe, nmask = pipe.encode_prompt(PROMPTS, True, negative_prompt=["", "dark"])
    given = {"prompt_embeds": pe, "negative_prompt_embeds": npe}
    masks = {"prompt_attention_mask": mask, "negative_prompt_attention_mask": nmask}
    cond, uncond = sana.encode(pipe, None, None, given, True, torch.device("cpu"), masks)
    assert uncond is not None
    torch.testing.assert_close(cond["encoder_hidden_states"], pe)
    torch.testing.assert_close(cond["encoder_attention_mask"], mask)
    torch.testing.assert_close(uncond["encoder_hidden_states"], npe)
    torch.testing.assert_close(uncond["encoder_attention_mask"], nmask)


@pytest.mark.parametrize("negative", [False, True])
def test_sana_embeddings_without_their_mask_are_refused(negative: bool) -> None:
    """SanaPipeline needs the attention mask with given embeddings; so does the adapter, naming
    the missing mask (diffusers itself fails on None.view)."""
    from glass_core.models.diffusers import from_pipeline

    pipe = tf.BUILDERS["sana"]()
    pe, mask, npe, _ = pipe.encode_prompt(PROMPTS, True, negative_prompt=["", "dark"])
    given = {"prompt_embeds": pe, "prompt_attention_mask": mask, "negative_prompt_embeds": npe}
    if not negative:
        given = {"prompt_embeds": pe}
    name = "negative_prompt_attention_mask" if negative else "prompt_attention_mask"
    embeds = "negative_prompt_embeds" if negative else "prompt_embeds"
    with pytest.raises(InvalidInputError) as err:
        from_pipeline(pipe, **given, **_call("sana"))
    assert str(err.value) == f"{name}: SANA needs it with {embeds} (as its pipeline)"
    assert err.value.arg == name


def test_sana_resolution_binning_follows_the_pipelines_rule(monkeypatch) -> None:
    """With use_resolution_binning SANA generates at the aspect-ratio bin SanaPipeline picks: the
    bin table by the transformer's sample_size (128/64/32/16: the 4096/2048/1024/512 tables), the
    image processor's nearest bin (the tables' sizes differ, so a wrong table shows), and the
    output is resized back to the size asked. Another sample_size is refused by name."""
    from diffusers.configuration_utils import FrozenDict
    from diffusers.pipelines.sana import pipeline_sana as ps
    from glass_core.models.diffusers import from_pipeline
    from glass_core.models.diffusers.sana import SanaDenoiser

    pipe = tf.BUILDERS["sana"]()
    tables = {
        128: ps.ASPECT_RATIO_4096_BIN,
        64: ps.ASPECT_RATIO_2048_BIN,
        32: ps.ASPECT_RATIO_1024_BIN,
        16: ps.ASPECT_RATIO_512_BIN,
    }
    height, width, vsf = 96, 64, pipe.vae_scale_factor
    plain = from_pipeline(
        pipe, PROMPTS, height=height, width=width, use_resolution_binning=False,
        encode_kwargs={"max_sequence_length": 16},
    )  # fmt: skip
    assert (plain.height, plain.width, plain.output_size) == (height, width, None)

    def binned(size: int) -> SanaDenoiser:
        config = FrozenDict({**pipe.transformer.config, "sample_size": size})
        monkeypatch.setattr(pipe.transformer, "_internal_dict", config)
        return SanaDenoiser(pipe, plain.conditioning, height=height, width=width)

    for size, table in tables.items():
        h, w = pipe.image_processor.classify_height_width_bin(height, width, ratios=table)
        model = binned(size)
        assert (model.height, model.width, model.output_size) == (h, w, (height, width))
        assert model.latent_shape == (4, h // vsf, w // vsf)
    assert (h, w) != (height, width)  # the last bin differs, so decoding must resize
    with torch.no_grad():
        images = model.decode(torch.zeros(1, *model.latent_shape))
    assert images.shape == (1, 3, height, width)
    with pytest.raises(
        InvalidInputError, match=r"sample_size 48; pass use_resolution_binning=False"
    ):
        binned(48)


def test_flux2_patchify_is_the_pipelines_and_unpatchify_inverts_it():
    """The particles' 2x2 patch layout is Flux2Pipeline's own, both ways, on a non-square
    latent (a transposed axis would show)."""
    from diffusers import Flux2Pipeline
    from glass_core.models.diffusers.flux2 import patchify, unpatchify

    lat = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    z = patchify(lat)
    assert torch.equal(z, Flux2Pipeline._patchify_latents(lat))
    assert torch.equal(unpatchify(z), Flux2Pipeline._unpatchify_latents(z))
    assert torch.equal(unpatchify(z), lat)


def _encoded_images(name: str, seed: int):
    """(pipe, model, 2 random images at the small call size, the model's encode of them)."""
    from glass_core.models.diffusers import from_pipeline

    pipe = tf.BUILDERS[name]()
    call = tf.SMALL_CALL[name]
    model = from_pipeline(pipe, PROMPTS, **call)
    image = torch.rand(
        2, 3, call["height"], call["width"], generator=torch.Generator().manual_seed(seed)
    )
    return pipe, model, image, model.encode(image)


def test_flux2_encode_is_the_pipelines_image_latents():
    """FLUX.2's encode is Flux2Pipeline's own image-latent encoding (the VAE's mode, 2x2 patches,
    normalised by the VAE's batch-norm running statistics, which the tiny VAE sets away from 0
    and 1), so editing starts where the pipeline's reference-image latents would."""
    pipe, model, image, z = _encoded_images("flux2", seed=3)
    with torch.no_grad():
        ref = pipe._encode_vae_image(image * 2 - 1, generator=None)
    assert z.shape == (2, *model.latent_shape)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)


def test_flux2_encode_gives_float32_latents_with_a_float64_vae() -> None:
    """encode returns float32 latents (the particles' dtype) whatever the VAE's dtype: with a
    float64 VAE the batch-norm statistics are cast to the latents' float32 too, and the result
    is the float32 encode's within float32 rounding."""
    import copy

    from glass_core.models.diffusers import from_pipeline

    pipe, _, image, z = _encoded_images("flux2", seed=3)
    wide = type(pipe)(**{**pipe.components, "vae": copy.deepcopy(pipe.vae).to(torch.float64)})
    z64 = from_pipeline(wide, PROMPTS, **tf.SMALL_CALL["flux2"]).encode(image)
    assert z64.dtype == torch.float32
    torch.testing.assert_close(z64, z, rtol=1e-5, atol=1e-5)


def test_flux2_batch_norm_statistics_follow_the_latents_device() -> None:
    """FLUX.2's latent normalisation moves the VAE's batch-norm mean and std to the latents'
    device, so latents on an accelerator work with a VAE still elsewhere (as under model CPU
    offload, which moves the VAE only for its forward); the meta device stands for the
    accelerator, the VAE stays on the CPU."""
    from glass_core.models.diffusers import from_pipeline

    model = from_pipeline(tf.BUILDERS["flux2"](), PROMPTS, **tf.SMALL_CALL["flux2"])
    z = torch.zeros(2, *model.latent_shape, device="meta")
    lat = model._vae_latents(z)  # the VAE's latents: z std + mean, 2x2 patches undone
    assert lat.device.type == "meta"
    assert model._network_latents(lat).device.type == "meta"
    assert all(v.device.type == "meta" for v in model._bn(z))


@pytest.mark.parametrize("name", ["qwenimage", "wan"])
def test_per_channel_latent_statistics_follow_the_latents_device(name: str) -> None:
    """The VAE config's per-channel latents_mean / latents_std (Qwen-Image, Wan) are made on the
    latents' device: accelerator latents map to and from the VAE's space with the VAE on the
    CPU (the meta device stands for the accelerator)."""
    from glass_core.models.diffusers import from_pipeline

    model = from_pipeline(tf.BUILDERS[name](), PROMPTS, **_call(name))
    z = torch.zeros(2, *model.latent_shape, device="meta")
    lat = model._vae_latents(z)
    assert lat.device.type == "meta" and model._network_latents(lat).device.type == "meta"


def test_wan_scales_timesteps_by_the_schedulers_num_train_timesteps() -> None:
    """Wan's network timestep is T sigma with the scheduler's own T (WanPipeline passes the
    scheduler's timesteps), here T = 500 rather than the usual 1000."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    base = tf.BUILDERS["wan"]()
    sched = FlowMatchEulerDiscreteScheduler(shift=5.0, num_train_timesteps=500)
    pipe = type(base)(**{**base.components, "scheduler": sched})
    # sigma = 1 - t = 0.75; CFG (default scale 5): conditional and unconditional rows
    assert _network_timesteps(pipe, 0.25, "wan") == [375.0] * 4


def test_train_timesteps_is_the_schedulers_else_the_diffusers_default() -> None:
    """T comes from the scheduler's config; a scheduler whose config lacks it counts 1000, the
    default of every diffusers scheduler."""
    from types import SimpleNamespace

    from glass_core.models.diffusers.flow import train_timesteps

    assert train_timesteps(SimpleNamespace(config={"num_train_timesteps": 500})) == 500
    assert train_timesteps(SimpleNamespace(config={})) == 1000


@pytest.mark.parametrize(("k", "frames"), [(1, 5), (2, 5), (2, 6), (4, 81)])
def test_latent_frames_follow_the_pipelines_rule_for_any_temporal_factor(k: int, frames: int):
    """Latent frames for a VAE temporal factor k, as WanPipeline counts them: num_frames with
    num_frames % k != 1 becomes num_frames // k * k + 1 (k = 1 too), then (n - 1) // k + 1,
    an int."""
    import warnings
    from types import SimpleNamespace

    from glass_core.models.diffusers.wan import latent_frames

    n = frames if frames % k == 1 else frames // k * k + 1  # WanPipeline.__call__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = latent_frames(SimpleNamespace(vae_scale_factor_temporal=k), frames)
    assert type(got) is int and got == (n - 1) // k + 1


@pytest.mark.parametrize(("frames", "rounded"), [(6, 5), (8, 9), (4, 5)])
def test_wan_rounds_uneven_frame_counts_as_the_pipeline_does(frames: int, rounded: int) -> None:
    """num_frames - 1 not a multiple of the VAE's temporal factor (4) warns, naming the factor,
    and is rounded as WanPipeline rounds it: num_frames // 4 * 4 + 1."""
    import warnings
    from types import SimpleNamespace

    from glass_core.models.diffusers.wan import latent_frames

    pipe = SimpleNamespace(vae_scale_factor_temporal=4)
    msg = r"^num_frames - 1 has to be divisible by 4; rounding as WanPipeline does$"
    with pytest.warns(UserWarning, match=msg):
        assert latent_frames(pipe, frames) == (rounded - 1) // 4 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an even count is taken as is, silently
        assert latent_frames(pipe, rounded) == (rounded - 1) // 4 + 1


def test_wan_refuses_to_edit_an_existing_video():
    """steer(image=...) on Wan says that editing a video is not supported (WanPipeline has no
    image processor to read the image with)."""
    with pytest.raises(
        InvalidInputError, match=r"^image: editing an existing video is not supported for Wan$"
    ):
        steer(
            tf.BUILDERS["wan"](), PROMPTS, image=torch.rand(2, 3, 32, 16), strength=0.5,
            method="sample", num_particles=1, num_transitions=2, progress=False,
            **tf.SMALL_CALL["wan"],
        )  # fmt: skip


def test_qwenimage_encode_is_the_vaes_normalised_mode():
    """Qwen-Image's encode: its video VAE on a one-frame clip, the distribution's mode (no
    sampling), normalised by the config's latents_mean/std like QwenImageImg2ImgPipeline."""
    pipe, model, image, z = _encoded_images("qwenimage", seed=2)
    cfg = pipe.vae.config
    shape = (1, cfg.z_dim, 1, 1, 1)
    mean, std = (
        torch.tensor(cfg.latents_mean).view(shape),
        torch.tensor(cfg.latents_std).view(shape),
    )
    with torch.no_grad():
        lat = pipe.vae.encode(image[:, :, None] * 2 - 1).latent_dist.mode()
    assert z.shape == (2, *model.latent_shape)
    torch.testing.assert_close(z, ((lat - mean) / std)[:, :, 0], rtol=1e-5, atol=1e-5)


def test_sana_encode_is_the_deep_compression_latent_scaled():
    """SANA's encode: AutoencoderDC returns its latent itself (no distribution to take a mode
    of), scaled by the config's scaling_factor like SANA's pipelines."""
    pipe, model, image, z = _encoded_images("sana", seed=4)
    with torch.no_grad():
        lat = pipe.vae.encode(image * 2 - 1).latent
    assert z.shape == (2, *model.latent_shape)
    torch.testing.assert_close(z, lat * pipe.vae.config.scaling_factor, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("family", "module"), [("qwenimage", "qwenimage"), ("flux2_klein", "flux2")]
)
def test_true_cfg_given_embeddings_reach_the_network_inputs(family: str, module: str):
    """Qwen-Image's and FLUX.2 [klein]'s encode (true CFG) pass given prompt and negative
    embeddings through."""
    import importlib

    encode = importlib.import_module(f"glass_core.models.diffusers.{module}").encode
    pipe, cpu = tf.BUILDERS[family](), torch.device("cpu")
    kw = {"max_sequence_length": 16}
    pe, _ = pipe.encode_prompt(prompt=PROMPTS, device=cpu, **kw)
    npe, _ = pipe.encode_prompt(prompt=["dark", "blue"], device=cpu, **kw)
    given = {"prompt_embeds": pe, "negative_prompt_embeds": npe}
    cond, uncond = encode(pipe, None, None, given, True, cpu, kw)
    assert uncond is not None
    torch.testing.assert_close(cond["encoder_hidden_states"], pe)
    torch.testing.assert_close(uncond["encoder_hidden_states"], npe)


# the network inputs that carry prompt embeddings, and the from_pipeline argument giving each
_EMBEDDING_INPUTS = {
    "encoder_hidden_states": "prompt_embeds",
    "pooled_projections": "pooled_prompt_embeds",  # FLUX.1, SD3
    "text_embeds": "pooled_prompt_embeds",  # SDXL (inside added_cond_kwargs)
}


def _shifted_embeddings(text) -> dict[str, torch.Tensor]:
    """from_pipeline's embedding arguments from a prompt-encoded model's network inputs, shifted
    by +0.5 (conditional) and -0.5 (negative); SANA's attention masks as they are."""
    given = {}
    for prefix, inputs, shift in (("", text.conditioning.cond, 0.5),
                                  ("negative_", text.conditioning.uncond or {}, -0.5)):  # fmt: skip
        for key, argument in _EMBEDDING_INPUTS.items():
            if key in inputs:
                given[prefix + argument] = inputs[key] + shift
        if "encoder_attention_mask" in inputs:  # SANA: the masks go with the embeddings
            given[prefix + "prompt_attention_mask"] = inputs["encoder_attention_mask"]
    return given


def _cfg_call(name: str) -> tuple[dict, list[str] | None]:
    """The family's call size and options with CFG on where it has CFG, and its negatives."""
    call = {k: v for k, v in _call(name).items() if k != "negative_prompt"}
    call |= {"flux": {"true_cfg_scale": 2.0}}.get(name, {})
    return call, (None if name == "flux2" else ["blue sky", "green tree"])  # [dev]: no CFG


@pytest.mark.parametrize("name", [*FAMILIES, *CLASSIC])
def test_given_embeddings_move_to_the_execution_device(name: str, monkeypatch) -> None:
    """Embeddings given on the host reach the network on the pipeline's execution device, every
    conditioning input of every family (some encode_prompts move only some of them, e.g.
    SDXL's pooled ones stayed behind). The meta device stands for an accelerator."""
    from glass_core.models.diffusers import families, from_pipeline

    pipe = _any_pipeline(name)
    call, negatives = _cfg_call(name)
    given = _shifted_embeddings(from_pipeline(pipe, PROMPTS, negative_prompt=negatives, **call))
    monkeypatch.setattr(families, "execution_device", lambda pipe: torch.device("meta"))
    model = from_pipeline(pipe, **given, **call)
    inputs = [*model.conditioning.cond.values(), *(model.conditioning.uncond or {}).values()]
    assert inputs and all(v.device.type == "meta" for v in inputs), name


def _network_inputs(model, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The embedding inputs of every network call of one prediction, by input name."""
    calls: list[dict[str, torch.Tensor]] = []

    def hook(module, args, kwargs):
        flat = {**kwargs, **(kwargs.get("added_cond_kwargs") or {})}
        calls.append({k: flat[k] for k in _EMBEDDING_INPUTS if flat.get(k) is not None})

    handle = model.network.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model.predict(x, torch.tensor([0.3, 0.6], dtype=torch.float64))
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("name", [*FAMILIES, *CLASSIC])
def test_given_embeddings_are_what_the_network_receives(name: str) -> None:
    """Every family, with CFG where it runs it: embeddings given instead of prompts (pooled ones
    where the family takes them, and the negatives') are the network's inputs. The given tensors
    are the prompt-encoded model's own inputs shifted by +0.5 (conditional) and -0.5 (negative),
    so every network row must differ from the prompt-encoded run by exactly one of the shifts,
    -0.5 on as many rows as there are negative rows."""
    from glass_core.models.diffusers import from_pipeline

    pipe = _any_pipeline(name)
    call, negatives = _cfg_call(name)
    text = from_pipeline(pipe, PROMPTS, negative_prompt=negatives, **call)
    model = from_pipeline(pipe, **_shifted_embeddings(text), **call)
    assert model.passes_per_eval == text.passes_per_eval == (1 if name == "flux2" else 2)
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    want, got = _network_inputs(text, x), _network_inputs(model, x)
    assert len(got) == len(want) and [set(c) for c in got] == [set(c) for c in want]
    negative_rows = 0
    for w, g in zip(want, got, strict=True):
        for key in w:
            diff = (g[key] - w[key]).reshape(g[key].shape[0], -1)
            shift = diff[:, :1]
            torch.testing.assert_close(diff, shift.expand_as(diff), rtol=0, atol=1e-5)
            assert all(abs(abs(s) - 0.5) < 1e-5 for s in shift.flatten().tolist()), key
            if key == "encoder_hidden_states":
                negative_rows += int((shift < 0).sum())
    assert negative_rows == (0 if name == "flux2" else x.shape[0])


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "wan", "sana"])
def test_without_cfg_the_negative_prompt_is_not_encoded(name: str) -> None:
    """guidance_scale 1 turns CFG off (as in the pipeline): the negative prompts are not run
    through the text encoders, each encoder runs once, on the prompts."""
    from glass_core.models.diffusers import from_pipeline

    pipe = _any_pipeline(name)
    call = _call(name)
    encoders = [m for k, m in pipe.components.items() if k.startswith("text_encoder") and m]
    rows: list[int] = []
    handles = [
        e.register_forward_pre_hook(lambda mod, args: rows.append(int(args[0].shape[0])))
        for e in encoders
    ]
    try:
        model = from_pipeline(
            pipe, PROMPTS, negative_prompt=["blue sky", "green tree"], guidance_scale=1.0, **call
        )
    finally:
        for h in handles:
            h.remove()
    assert not model.cfg
    assert rows == [len(PROMPTS)] * len(encoders)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("sd", torch.bfloat16), ("flux2", torch.float16)],
    ids=["sd-bf16-force-upcast", "flux2-fp16-no-force-upcast"],
)
def test_a_vae_is_run_in_its_own_dtype_unless_fp16_with_force_upcast(name, dtype) -> None:
    """As the pipelines do, encode and decode upcast only an fp16 VAE whose config says
    force_upcast: a bf16 VAE (SD's config has force_upcast) and an fp16 VAE without the flag
    (FLUX.2's config has none) take and give their own dtype, and stay in it."""
    import copy

    from glass_core.models.diffusers import from_pipeline

    pipe = copy.copy(_any_pipeline(name))
    pipe.vae = copy.deepcopy(pipe.vae).to(dtype)
    assert ("force_upcast" in pipe.vae.config) == (name == "sd")
    model = from_pipeline(pipe, PROMPTS, **_call(name))
    seen: list[tuple[str, torch.dtype, torch.dtype]] = []

    def record(part):
        def hook(module, args):
            seen.append((part, args[0].dtype, next(module.parameters()).dtype))

        return hook

    handles = [
        getattr(pipe.vae, p).register_forward_pre_hook(record(p)) for p in ("encoder", "decoder")
    ]
    try:
        images = torch.rand(
            2, 3, model.height, model.width, generator=torch.Generator().manual_seed(5)
        )
        with torch.no_grad():
            z = model.encode(images)
            img = model.decode(z)
    finally:
        for h in handles:
            h.remove()
    assert seen == [("encoder", dtype, dtype), ("decoder", dtype, dtype)]
    assert z.dtype == img.dtype == torch.float32 and torch.isfinite(img).all()
    assert next(pipe.vae.parameters()).dtype == dtype


def test_sizes_default_to_the_call_else_the_sample_size_and_must_be_positive_multiples() -> None:
    """families._size: None takes the pipeline's __call__ default, else default_sample_size x
    vae_scale_factor, with diffusers' own fallbacks 128 and 8 for a pipeline that has neither (a
    custom pipeline on Wan's components); a size must be a positive multiple of the family's
    pixel multiple, 1 included when that is 1 (an SD VAE with a single block). The multiples are
    the pipelines' check_inputs ones: FLUX.2 2 x vae_scale_factor, SD3 vae_scale_factor x
    patch_size."""
    from types import SimpleNamespace

    from glass_core.models.diffusers import families, flux2, sd3

    class Bare:  # no size attributes; __call__ defaults the size to None
        def __call__(self, prompt=None, height=None, width=None): ...

    wan = families.FAMILIES["wan"]
    assert families._size(Bare(), wan, None, None) == (128 * 8, 128 * 8)
    assert families._size(Bare(), wan, 32, None) == (32, 128 * 8)

    class OneBlock(Bare):  # an SD pipeline whose VAE does not downsample
        vae_scale_factor = 1
        unet = SimpleNamespace(config=SimpleNamespace(sample_size=4))

    sd = families.FAMILIES["sd"]
    assert families._size(OneBlock(), sd, 1, 1) == (1, 1)
    assert families._size(OneBlock(), sd, None, None) == (4, 4)
    for h, w in [(0, 1), (1, 0), (-1, 1), (1, -1)]:
        with pytest.raises(InvalidInputError, match=r"positive multiples of 1 for OneBlock"):
            families._size(OneBlock(), sd, h, w)

    pipe = SimpleNamespace(
        vae_scale_factor=8, transformer=SimpleNamespace(config=SimpleNamespace(patch_size=2))
    )
    assert flux2.size_multiple(pipe) == 16 and type(flux2.size_multiple(pipe)) is int
    assert sd3.size_multiple(pipe) == 16 and type(sd3.size_multiple(pipe)) is int


def test_build_takes_model_option_defaults_from_the_pipelines_call() -> None:
    """families.build (from_pipeline's builder, also called directly) defaults a model option to
    the pipeline's own __call__ default, here a WanPipeline subclass making 5 frames by default
    (2 latent frames, not the adapter's 81), and runs without autograd unless asked."""
    from glass_core.models.diffusers.families import build

    base = tf.BUILDERS["wan"]()

    class FiveFrames(type(base)):
        def __call__(self, *args, num_frames: int = 5, **kwargs):
            return super().__call__(*args, num_frames=num_frames, **kwargs)

    pipe = FiveFrames(**base.components)
    pipe.set_progress_bar_config(disable=True)
    call = {k: v for k, v in _call("wan").items() if k != "num_frames"}
    model = build("wan", pipe, PROMPTS, **call)
    assert model.latent_shape[1] == 2
    assert model.requires_grad is False


def test_flux_network_inputs_in_bf16_and_without_guidance_embeds_in_the_config() -> None:
    """FLUX.1 with a bf16 transformer: the text and image ids and sigma = 1 - t reach it in its
    dtype (bf16); a transformer config without guidance_embeds (saved before diffusers had it)
    has no guidance embedding, so no guidance input."""
    import copy

    from diffusers.configuration_utils import FrozenDict
    from glass_core.models.diffusers import from_pipeline

    base = tp.flux_pipeline(False)
    tr = copy.deepcopy(base.transformer).to(torch.bfloat16)
    tr._internal_dict = FrozenDict({k: v for k, v in tr.config.items() if k != "guidance_embeds"})
    pipe = type(base)(**{**base.components, "transformer": tr})
    pipe.set_progress_bar_config(disable=True)
    model = from_pipeline(pipe, PROMPTS, **_call("flux"))
    assert model.has_guidance_embeds is False
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    kw = _first_network_kwargs(model, x, 0.25)
    assert kw["guidance"] is None
    for key in ("txt_ids", "img_ids", "timestep"):
        assert kw[key].dtype == torch.bfloat16, key
    assert kw["timestep"].tolist() == [0.75, 0.75]


def test_qwenimage_conditioning_is_the_pipelines_encode_prompt() -> None:
    """Qwen-Image's prompt and negative embeddings and attention masks are encode_prompt's, with
    the max_sequence_length given (for the negatives too: a long one is cut to it); the masks
    of prompts of different lengths are kept, with true CFG and without."""
    from glass_core.models.diffusers import from_pipeline

    pipe = tf.BUILDERS["qwenimage"]()
    call = dict(tf.SMALL_CALL["qwenimage"])
    n = call["max_sequence_length"]
    negs = ["blue sky", " ".join(["a green tree on the moon"] * 5)]
    pe, mask = pipe.encode_prompt(prompt=PROMPTS, max_sequence_length=n)
    npe, nmask = pipe.encode_prompt(prompt=negs, max_sequence_length=n)
    assert mask is not None and nmask is not None  # different lengths: padded rows
    assert npe.shape[1] == n < pipe.encode_prompt(prompt=negs)[0].shape[1]
    model = from_pipeline(pipe, PROMPTS, negative_prompt=negs, **call)
    cond, uncond = model.conditioning.cond, model.conditioning.uncond
    assert uncond is not None
    assert torch.equal(cond["encoder_hidden_states"], pe)
    assert torch.equal(cond["encoder_hidden_states_mask"], mask)
    assert torch.equal(uncond["encoder_hidden_states"], npe)
    assert torch.equal(uncond["encoder_hidden_states_mask"], nmask)
    plain = from_pipeline(pipe, PROMPTS, **call)  # no negative prompt: no true CFG
    assert plain.conditioning.uncond is None
    assert torch.equal(plain.conditioning.cond["encoder_hidden_states_mask"], mask)


def test_sana_learned_sigma_rule_is_the_pipelines_integer_division() -> None:
    """SanaPipeline takes the first chunk of the output channels when out_channels // 2 equals
    the latent channels C (integer division: 2C + 1 output channels count too, and chunk(2)
    keeps C + 1 of them); the adapter applies the same rule to the network's output."""
    from glass_core.models.diffusers import from_pipeline

    base = tf.BUILDERS["sana"]()
    own = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}
    c = own["in_channels"]
    torch.manual_seed(43)
    tr = type(base.transformer).from_config({**own, "out_channels": 2 * c + 1}).eval()
    pipe = type(base)(**{**base.components, "transformer": tr})
    pipe.set_progress_bar_config(disable=True)
    model = from_pipeline(pipe, PROMPTS, guidance_scale=1.0, **_call("sana"))  # no CFG
    cond = model.conditioning.cond
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        u = model.velocity(x, 0.25)
        out = tr(
            x,
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=torch.full((2,), 750.0),
            return_dict=False,
        )[0]
    assert out.shape[1] == 2 * c + 1 and u.shape[1] == c + 1
    torch.testing.assert_close(u, -out.chunk(2, dim=1)[0], rtol=0, atol=0)
