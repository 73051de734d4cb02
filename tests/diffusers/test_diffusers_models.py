"""Diffusers adapters on tiny random-weight pipelines: conventions, parity with the pipelines' own
samplers, grouping/CFG accounting and bad-input errors."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import tiny_pipelines as tp
from glass_core.errors import InvalidInputError, UnsupportedModelError
from glass_core.models.diffusers import (
    calculate_shift,
    default_time_grid,
    detect_family,
    from_pipeline,
    pack_latents,
    unpack_latents,
)
from glass_core.transitions import ODE, Glass, sample

PROMPTS = ["a photo of a cat", "a painting of a red house"]
PER_PROMPT = 2
SEQ = {"max_sequence_length": 8}


def _noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _run_ours(model, transition, grid, x0) -> torch.Tensor:
    with torch.no_grad():
        return sample(model, transition, grid, x0=x0.clone()).samples


# ----------------------------------------------------------------------------------------------
# parity with the pipelines' own samplers (same seed, same step grid)


@pytest.mark.parametrize("guidance_embeds", [True, False], ids=["dev", "schnell"])
@pytest.mark.parametrize("transition", [ODE(), Glass(rho=1.0, inner_steps=1)], ids=["ode", "ddim"])
def test_flux_parity_with_flow_match_euler(guidance_embeds: bool, transition) -> None:
    pipe = tp.flux_pipeline(guidance_embeds)
    steps, seed = 4, 0
    ref = pipe(
        PROMPTS,
        num_images_per_prompt=PER_PROMPT,
        height=tp.HEIGHT,
        width=tp.WIDTH,
        num_inference_steps=steps,
        guidance_scale=3.5,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=8,
    ).images
    model = from_pipeline(
        pipe, PROMPTS, guidance_scale=3.5, height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ
    )
    grid = default_time_grid(model, steps)
    x0 = _noise(seed, (len(PROMPTS) * PER_PROMPT, *model.latent_shape))
    ours = _run_ours(model, transition, grid, x0)
    _, h, w = model.latent_shape
    torch.testing.assert_close(ours, unpack_latents(ref, h, w), rtol=1e-4, atol=1e-5)
    assert model.num_evaluations == steps and model.passes_per_eval == 1


def test_flux_true_cfg_parity() -> None:
    pipe = tp.flux_pipeline(True)
    steps, seed, neg = 3, 7, "a dog"
    ref = pipe(
        PROMPTS,
        negative_prompt=[neg, neg],
        true_cfg_scale=4.0,
        height=tp.HEIGHT,
        width=tp.WIDTH,
        num_inference_steps=steps,
        guidance_scale=3.5,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=8,
    ).images
    model = from_pipeline(
        pipe,
        PROMPTS,
        negative_prompt=neg,
        true_cfg_scale=4.0,
        height=tp.HEIGHT,
        width=tp.WIDTH,
        encode_kwargs=SEQ,
    )
    assert model.passes_per_eval == 2
    x0 = _noise(seed, (len(PROMPTS), *model.latent_shape))
    ours = _run_ours(model, ODE(), default_time_grid(model, steps), x0)
    torch.testing.assert_close(ours, unpack_latents(ref, *x0.shape[-2:]), rtol=1e-4, atol=1e-5)


def test_sd3_parity_true_cfg() -> None:
    pipe = tp.sd3_pipeline()
    steps, seed = 3, 1
    ref = pipe(
        PROMPTS,
        num_images_per_prompt=PER_PROMPT,
        height=tp.HEIGHT,
        width=tp.WIDTH,
        num_inference_steps=steps,
        guidance_scale=6.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=8,
    ).images
    model = from_pipeline(
        pipe, PROMPTS, guidance_scale=6.0, height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ
    )
    x0 = _noise(seed, (len(PROMPTS) * PER_PROMPT, *model.latent_shape))
    ours = _run_ours(model, ODE(), default_time_grid(model, steps), x0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    # true CFG: 2 forward passes per NFE, both halves in one batched call per evaluation
    assert model.passes_per_eval == 2
    assert model.num_forward_passes == 2 * steps
    assert model.num_forward_rows == 2 * steps * x0.shape[0]


@pytest.mark.parametrize("family", ["sd-eps", "sd-v", "sdxl"])
def test_sd_parity_glass_rho1_one_step_is_ddim(family: str) -> None:
    pipe = {
        "sd-eps": lambda: tp.sd_pipeline("epsilon"),
        "sd-v": lambda: tp.sd_pipeline("v_prediction"),
        "sdxl": tp.sdxl_pipeline,
    }[family]()
    steps, seed, g = 4, 2, 5.0
    ref = pipe(
        PROMPTS,
        num_images_per_prompt=PER_PROMPT,
        height=tp.HEIGHT,
        width=tp.WIDTH,
        num_inference_steps=steps,
        guidance_scale=g,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
    ).images
    model = from_pipeline(pipe, PROMPTS, guidance_scale=g, height=tp.HEIGHT, width=tp.WIDTH)
    grid = default_time_grid(model, steps, exact=True)
    # the pipeline's DDIM timesteps map to node times 1 - (k + 1) / (T + 1)
    ks = np.array([751, 501, 251, 1])  # leading spacing, steps_offset=1, T=1000
    np.testing.assert_allclose(grid[:-1], 1 - (ks + 1) / 1001, rtol=0, atol=1e-12)
    x0 = _noise(seed, (len(PROMPTS) * PER_PROMPT, *model.latent_shape))
    ours = _run_ours(model, Glass(rho=1.0, inner_steps=1), grid, x0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-5)
    assert model.num_forward_passes == 2 * steps  # CFG


# ----------------------------------------------------------------------------------------------
# conventions


def test_flux_velocity_is_minus_v_and_packing_roundtrip() -> None:
    pipe = tp.flux_pipeline(True)
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ)
    x = _noise(3, (2, *model.latent_shape))
    assert torch.equal(unpack_latents(pack_latents(x), *x.shape[-2:]), x)
    packed = pipe._pack_latents(x, 2, x.shape[1], x.shape[2], x.shape[3])
    assert torch.equal(pack_latents(x), packed)
    t = 0.3
    cond = model.conditioning.cond
    with torch.no_grad():
        v = pipe.transformer(
            hidden_states=packed,
            timestep=torch.full((2,), 1 - t),
            guidance=torch.full((2,), 3.5),
            pooled_projections=cond["pooled_projections"].expand(2, -1),
            encoder_hidden_states=cond["encoder_hidden_states"].expand(2, -1, -1),
            txt_ids=model.txt_ids,
            img_ids=model.img_ids,
            return_dict=False,
        )[0]
        u = model.velocity(x, t)
        d = model.denoise(x, t)
    torch.testing.assert_close(u, -unpack_latents(v, *x.shape[-2:]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d, x + (1 - t) * u, rtol=1e-5, atol=1e-5)  # RF: D = x + (1-t) u


def test_flux_dynamic_shift_grid_matches_formula() -> None:
    model = from_pipeline(
        tp.flux_pipeline(True), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ
    )
    n = 5
    cfg = model.pipe.scheduler.config
    m = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    mu = model.image_seq_len * m + cfg.base_shift - m * cfg.base_image_seq_len
    s = np.exp(mu)
    sig = np.linspace(1, 0, n + 1)
    expected = 1 - s * sig / (1 + (s - 1) * sig)
    np.testing.assert_allclose(default_time_grid(model, n), expected, atol=1e-6)


def _dynamic_scheduler(kind: str):
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if kind == "euler":  # the shifts in its config (not the pipelines' fallbacks)
        return FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True,
            base_image_seq_len=4,
            max_image_seq_len=256,  # FLUX.1 here has 16 image tokens, SD3 64: both in between
            base_shift=0.7,
            max_shift=1.3,
        )
    # flow sigmas with dynamic shift, and no base/max seq len or shifts in its config: the pipeline
    # falls back to its own defaults (max_shift 1.15 for FLUX.1, 1.16 for SD3); DPM-Solver++'s
    # set_timesteps takes no sigmas at all
    flow = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
    if kind == "dpm":
        return DPMSolverMultistepScheduler(use_dynamic_shifting=True, **flow)
    return UniPCMultistepScheduler(use_dynamic_shifting=True, **flow)


@pytest.mark.parametrize("kind", ["euler", "unipc", "dpm"])
@pytest.mark.parametrize(
    "make", [lambda: tp.flux_pipeline(True), tp.sd3_pipeline], ids=["flux", "sd3"]
)
def test_dynamic_shift_grid_is_the_pipelines_own(make, kind: str) -> None:
    """default_time_grid = 1 - the sigmas the pipeline's own __call__ sets (its mu from the image
    sequence length and the scheduler's config, or the pipeline's defaults where that has none)."""
    base = make()
    pipe = type(base)(**{**base.components, "scheduler": _dynamic_scheduler(kind)})
    pipe.set_progress_bar_config(disable=True)
    size = {"height": tp.HEIGHT, "width": tp.WIDTH}
    sigmas = tp.pipeline_sigmas(pipe, 3, prompt=PROMPTS[0], max_sequence_length=8, **size)
    model = from_pipeline(pipe, PROMPTS[0], encode_kwargs=SEQ, **size)
    # float32 sigmas; a 0.01 change of max_shift moves them by > 1e-4 here
    np.testing.assert_allclose(default_time_grid(model, 3), 1 - sigmas, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_a_scheduler_without_dynamic_shifting_gets_no_mu(family: str) -> None:
    """A flow scheduler with no use_dynamic_shifting in its config (FlowMapEuler: set_timesteps
    takes no mu) gets FLUX's linear sigmas (SD3: the step count) and no mu."""
    import copy

    from diffusers import FlowMapEulerDiscreteScheduler

    make = {"flux": lambda: tp.flux_pipeline(True), "sd3": tp.sd3_pipeline}[family]
    pipe = copy.copy(make())
    pipe.scheduler = FlowMapEulerDiscreteScheduler(shift=3.0)
    assert "use_dynamic_shifting" not in pipe.scheduler.config
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ)
    ref = FlowMapEulerDiscreteScheduler(shift=3.0)
    if family == "flux":
        ref.set_timesteps(sigmas=np.linspace(1.0, 0.25, 4))
    else:
        ref.set_timesteps(4)
    np.testing.assert_allclose(default_time_grid(model, 4), 1 - ref.sigmas.numpy(), atol=1e-12)


def test_vp_timestep_mapping_and_continuous_query() -> None:
    model = from_pipeline(
        tp.sd_pipeline("epsilon"), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, guidance_scale=1.0
    )
    assert not model.cfg and model.passes_per_eval == 1
    big_t = 1000
    ks = torch.tensor([0.0, 1.0, 500.0, 999.0], dtype=torch.float64)
    t = 1 - (ks + 1) / (big_t + 1)
    torch.testing.assert_close(model.timestep(t), ks)
    # between nodes: the fractional continuous-time-equivalent timestep, clamped to [0, T-1]
    k = model.timestep(torch.tensor([1 - 500.5 / 1001, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(k, torch.tensor([499.5, 999.0, 0.0], dtype=torch.float64))
    # schedule nodes reproduce alphas_cumprod
    ac = model.pipe.scheduler.alphas_cumprod.double().numpy()
    tn = 1 - (np.arange(big_t) + 1) / (big_t + 1)
    np.testing.assert_allclose(np.asarray(model.schedule.alpha(tn)) ** 2, ac, rtol=1e-10)
    # eps -> x1 at a node matches diffusers' pred_original_sample
    x = _noise(4, (1, *model.latent_shape))
    with torch.no_grad():
        eps = model.pipe.unet(
            x,
            500,
            encoder_hidden_states=model.conditioning.cond["encoder_hidden_states"],
            return_dict=False,
        )[0]
        d = model.denoise(x, float(tn[500]))
    a = float(ac[500])
    torch.testing.assert_close(d, (x - (1 - a) ** 0.5 * eps) / a**0.5, rtol=1e-4, atol=1e-4)
    # outside the nodes the network is asked at the nearest node and converted with the schedule
    # there (query_time), on both ends: below the noisiest (t = 0, alpha = 0) and above the least
    # noisy node the denoiser equals the end node's
    for t_out, t_node in ((0.0, tn[-1]), (0.5 * tn[-1], tn[-1]), (1.0 - 1e-4, tn[0])):
        torch.testing.assert_close(model.denoise(x, t_out), model.denoise(x, float(t_node)))
    with torch.no_grad():
        eps0 = model.pipe.unet(
            x,
            0,
            encoder_hidden_states=model.conditioning.cond["encoder_hidden_states"],
            return_dict=False,
        )[0]
    a0 = float(ac[0])
    torch.testing.assert_close(
        model.denoise(x, 1.0 - 1e-4), (x - (1 - a0) ** 0.5 * eps0) / a0**0.5, rtol=1e-4, atol=1e-4
    )


def test_other_vp_schedulers_give_valid_grids() -> None:
    import copy

    from diffusers import EulerDiscreteScheduler

    pipe = copy.copy(tp.sdxl_pipeline())
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    grid = default_time_grid(model, 4)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    with torch.no_grad():
        out = sample(
            model,
            Glass(inner_steps=1),
            grid,
            shape=(1, *model.latent_shape),
            generator=torch.Generator().manual_seed(0),
        ).samples
    assert torch.isfinite(out).all()


def test_groups_map_rows_to_prompts_and_max_batch_is_exact() -> None:
    pipe = tp.sdxl_pipeline()
    both = from_pipeline(pipe, PROMPTS, height=tp.HEIGHT, width=tp.WIDTH)
    x = _noise(5, (6, *both.latent_shape))
    with torch.no_grad():
        d = both.denoise(x, 0.4)
        d0 = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH).denoise(x[:3], 0.4)
        d1 = from_pipeline(pipe, PROMPTS[1], height=tp.HEIGHT, width=tp.WIDTH).denoise(x[3:], 0.4)
        small = from_pipeline(pipe, PROMPTS, height=tp.HEIGHT, width=tp.WIDTH, max_batch=2)
        ds = small.denoise(x, 0.4)
    torch.testing.assert_close(d, torch.cat([d0, d1]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ds, d, rtol=1e-4, atol=1e-5)
    assert small.num_forward_rows == 12 and small.num_evaluations == 1
    with pytest.raises(InvalidInputError) as err:
        both.denoise(x[:5], 0.4)
    assert str(err.value) == (
        "x: batch of 5 rows is not a multiple of the 2 prompts (rows are group-major: row i "
        "belongs to prompt i // (batch / 2)); pass whole particle batches and let the adapter "
        "micro-batch (max_batch)"
    )
    with pytest.raises(InvalidInputError, match="latent_shape"):
        both.denoise(torch.zeros(2, 4, 4, 4), 0.4)


def _rows_per_call(model, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The model's velocity at x (t = 0.4) and the batch size of each of its network's calls."""
    seen: list[int] = []

    def hook(module, args, kwargs):
        first = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        seen.append(int(first.shape[0]))

    handle = model.network.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            u = model.velocity(x, 0.4)
    finally:
        handle.remove()
    return u, seen


_CLASSIC = {  # each with CFG on: 2 network rows per particle row
    "flux": (lambda: tp.flux_pipeline(True), {"negative_prompt": "a dog", "true_cfg_scale": 4.0}),
    "sd3": (tp.sd3_pipeline, {"guidance_scale": 6.0}),
    "sd": (lambda: tp.sd_pipeline("epsilon"), {"guidance_scale": 5.0}),
    "sdxl": (tp.sdxl_pipeline, {"guidance_scale": 5.0}),
}


@pytest.mark.parametrize("family", sorted(_CLASSIC))
def test_max_batch_bounds_the_rows_of_every_network_call(family: str) -> None:
    make, kw = _CLASSIC[family]
    pipe = make()
    size = {"height": tp.HEIGHT, "width": tp.WIDTH}
    if family in ("flux", "sd3"):
        size["encode_kwargs"] = SEQ
    whole = from_pipeline(pipe, PROMPTS, **kw, **size)
    small = from_pipeline(pipe, PROMPTS, max_batch=4, **kw, **size)
    assert small.passes_per_eval == 2 and small.network_max_batch == 4
    x = _noise(7, (4, *whole.latent_shape))
    u_whole, rows_whole = _rows_per_call(whole, x)
    u_small, rows_small = _rows_per_call(small, x)
    # 4 particle rows x 2 CFG passes: one call of 8 rows, or 2 calls of 2 particles' 4 rows
    assert rows_whole == [8] and rows_small == [4, 4]
    torch.testing.assert_close(u_small, u_whole, rtol=1e-4, atol=1e-5)
    # max_batch=2: one particle row (its 2 CFG rows) per call
    tiny = from_pipeline(pipe, PROMPTS, max_batch=2, **kw, **size)
    u_tiny, rows_tiny = _rows_per_call(tiny, x)
    assert rows_tiny == [2, 2, 2, 2]
    torch.testing.assert_close(u_tiny, u_whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("family", "options", "passes"),
    [
        ("flux", {"true_cfg_scale": 4.0, "negative_prompt": "a dog"}, 2),  # > 1 and a negative
        ("flux", {"true_cfg_scale": 4.0}, 1),
        ("flux", {"true_cfg_scale": 1.0, "negative_prompt": "a dog"}, 1),
        ("sd3", {"guidance_scale": 1.0}, 1),  # guidance_scale > 1
        ("sd3", {"guidance_scale": 1.5}, 2),
        ("sdxl", {"guidance_scale": 1.0, "negative_prompt": "a dog"}, 1),
    ],
)
def test_classic_cfg_runs_where_the_pipeline_runs_it(family, options, passes) -> None:
    make, _ = _CLASSIC[family]
    kw = {"encode_kwargs": SEQ} if family in ("flux", "sd3") else {}
    model = from_pipeline(make(), PROMPTS, height=tp.HEIGHT, width=tp.WIDTH, **options, **kw)
    assert model.passes_per_eval == passes and model.cfg == (passes == 2)


@pytest.mark.parametrize("family", sorted(_CLASSIC))
def test_each_adapter_carries_its_family_key(family: str) -> None:
    make, _ = _CLASSIC[family]
    pipe = make()
    kw = {"encode_kwargs": SEQ} if family in ("flux", "sd3") else {}
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, **kw)
    assert model.family == detect_family(pipe) == family


def test_prompt_embeds_instead_of_text() -> None:
    pipe = tp.sd3_pipeline()
    pe, npe, pp, npp = pipe.encode_prompt(PROMPTS, None, None, device="cpu", max_sequence_length=8)
    a = from_pipeline(pipe, PROMPTS, height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ)
    b = from_pipeline(
        pipe,
        prompt_embeds=pe,
        pooled_prompt_embeds=pp,
        negative_prompt_embeds=npe,
        negative_pooled_prompt_embeds=npp,
        height=tp.HEIGHT,
        width=tp.WIDTH,
    )
    x = _noise(6, (2, *a.latent_shape))
    with torch.no_grad():
        torch.testing.assert_close(a.velocity(x, 0.5), b.velocity(x, 0.5))


def test_flux_given_embeddings_reach_the_network_inputs() -> None:
    """FLUX.1's encode (true CFG) passes given prompt, pooled and negative embeddings through to
    the transformer's inputs."""
    from glass_core.models.diffusers import flux1

    pipe, cpu = tp.flux_pipeline(True), torch.device("cpu")
    pe, pp, _ = pipe.encode_prompt(PROMPTS, None, device=cpu, max_sequence_length=8)
    npe, npp, _ = pipe.encode_prompt(["dark", "blue"], None, device=cpu, max_sequence_length=8)
    given = {"prompt_embeds": pe, "pooled_prompt_embeds": pp}
    given |= {"negative_prompt_embeds": npe, "negative_pooled_prompt_embeds": npp}
    cond, uncond = flux1.encode(pipe, None, None, given, True, cpu, SEQ)
    assert uncond is not None
    for got, want in [(cond, (pe, pp)), (uncond, (npe, npp))]:
        torch.testing.assert_close(got["encoder_hidden_states"], want[0])
        torch.testing.assert_close(got["pooled_projections"], want[1])


def test_sd_given_embeddings_reach_the_network_inputs() -> None:
    """SD's encode passes given prompt and negative embeddings through to the UNet's inputs
    (encode_prompt would otherwise encode "" for the negatives)."""
    from glass_core.models.diffusers import sd

    pipe = tp.sd_pipeline()
    cpu = torch.device("cpu")
    pe, _ = pipe.encode_prompt(PROMPTS, cpu, 1, False)
    npe, _ = pipe.encode_prompt(["dark", "blue"], cpu, 1, False)
    given = {"prompt_embeds": pe, "negative_prompt_embeds": npe}
    given |= {"pooled_prompt_embeds": None, "negative_pooled_prompt_embeds": None}
    cond, uncond = sd.encode(pipe, None, None, given, True, cpu, {})
    assert uncond is not None
    torch.testing.assert_close(cond["encoder_hidden_states"], pe)
    torch.testing.assert_close(uncond["encoder_hidden_states"], npe)


def test_sd_negative_prompts_are_encoded_for_the_unconditional_rows() -> None:
    """SD's encode passes the negative prompts to encode_prompt: the unconditional rows are their
    embeddings (not those of "", encode_prompt's default)."""
    from glass_core.models.diffusers import sd

    pipe = tp.sd_pipeline()
    cpu = torch.device("cpu")
    negs = ["dark", "blue"]
    want, _ = pipe.encode_prompt(negs, cpu, 1, False)
    empty, _ = pipe.encode_prompt(["", ""], cpu, 1, False)
    assert not torch.allclose(want, empty)
    _, uncond = sd.encode(pipe, PROMPTS, negs, _no_embeds(), True, cpu, {})
    assert uncond is not None
    torch.testing.assert_close(uncond["encoder_hidden_states"], want)


def test_sd_embeddings_go_to_the_given_device() -> None:
    """SD's encode hands its device to encode_prompt, which moves given embeddings there (the
    meta device stands for an accelerator; the pipeline stays on the CPU)."""
    from glass_core.models.diffusers import sd

    pipe = tp.sd_pipeline()
    pe, _ = pipe.encode_prompt(PROMPTS, torch.device("cpu"), 1, False)
    given = _no_embeds() | {"prompt_embeds": pe, "negative_prompt_embeds": pe.clone()}
    cond, uncond = sd.encode(pipe, None, None, given, True, torch.device("meta"), {})
    assert uncond is not None
    assert cond["encoder_hidden_states"].device.type == "meta"
    assert uncond["encoder_hidden_states"].device.type == "meta"


def test_sd3_encodes_negative_prompts_only_with_cfg() -> None:
    """SD3 asks encode_prompt for the negatives only when it guides: at guidance 1 each of its
    three text encoders runs once on the 2 prompts, at guidance 3 once more on the 2 negatives."""
    pipe = tp.sd3_pipeline()
    rows: list[int] = []
    encoders = (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3)
    hooks = [e.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0])) for e in encoders]
    try:
        for scale, calls in ((1.0, 3), (3.0, 6)):
            rows.clear()
            from_pipeline(pipe, PROMPTS, guidance_scale=scale, height=tp.HEIGHT, width=tp.WIDTH)
            assert rows == [2] * calls, scale
    finally:
        for h in hooks:
            h.remove()


def test_execution_device_without_a_pipeline_property() -> None:
    """A pipeline-like object without `_execution_device` encodes on its network's device: the
    transformer's where it has one, else the UNet's."""
    from types import SimpleNamespace

    from glass_core.models.diffusers.families import execution_device

    meta, cpu = torch.nn.Linear(2, 2, device="meta"), torch.nn.Linear(2, 2)
    assert execution_device(SimpleNamespace(transformer=meta, unet=cpu)) == torch.device("meta")
    assert execution_device(SimpleNamespace(unet=meta)) == torch.device("meta")
    assert execution_device(SimpleNamespace(_execution_device=torch.device("meta"))).type == "meta"


def test_repr_and_to_pil() -> None:
    """The repr names the adapter, family, groups, latent shape, guidance, CFG and the schedule by
    its name (by its repr for a schedule without one); to_pil gives one RGB image per row, the
    [0, 1] values scaled to 0..255 and rounded, channels last."""
    import copy

    model = from_pipeline(tp.sd_pipeline(), PROMPTS, height=tp.HEIGHT, width=tp.WIDTH)
    assert repr(model) == (
        "UNetDenoiser(family='sd', groups=2, latent_shape=(4, 8, 8), guidance_scale=7.5, "
        "cfg=True, schedule='vp(T=1000)')"
    )

    class Nameless:
        def __repr__(self) -> str:
            return "Nameless()"

    unnamed = copy.copy(model)
    unnamed.schedule = Nameless()
    assert repr(unnamed).endswith(", schedule=Nameless())")
    images = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    pil = model.to_pil(images)
    expected = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert [(im.mode, im.size) for im in pil] == [("RGB", (7, 5))] * 2
    assert all(np.array_equal(np.asarray(im), e) for im, e in zip(pil, expected, strict=True))


# ----------------------------------------------------------------------------------------------
# bad input


class _NotAPipeline:
    pass


def test_unsupported_pipeline_names_supported_families() -> None:
    with pytest.raises(UnsupportedModelError, match=r"FLUX.*SD3.*SD 1\.x.*SDXL"):
        detect_family(_NotAPipeline())
    fake = _NotAPipeline()
    fake.transformer = torch.nn.Linear(2, 2)  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedModelError, match="Linear"):
        from_pipeline(fake, "a cat")


def _named(cls_name: str, **attrs):
    """An object whose class is called cls_name (detection goes by class names)."""
    return type(cls_name, (), attrs)()


def _net(cls_name: str, in_channels: int, out_channels: int | None):
    import types

    return _named(
        cls_name, config=types.SimpleNamespace(in_channels=in_channels, out_channels=out_channels)
    )


_UNET = _net("UNet2DConditionModel", 4, 4)
_XL_UNET = _named(  # SDXL's added text/time conditioning, detected from the config
    "UNet2DConditionModel",
    config=types.SimpleNamespace(in_channels=4, out_channels=4, addition_embed_type="text_time"),
)
_REJECTED = {
    "wan-a14b": (
        _named("WanPipeline", transformer_2=torch.nn.Linear(1, 1)),
        "pipe: WanPipeline with two transformers (Wan 2.2 A14B experts) is not supported",
    ),
    "transformer": (
        _named("MyPipe", transformer=torch.nn.Linear(1, 1)),
        "pipe: unsupported denoising transformer Linear in MyPipe",
    ),
    "controlnet": (
        _named("StableDiffusionPipeline", unet=_UNET, controlnet=object()),
        "pipe: StableDiffusionPipeline has a controlnet; conditioning through a controlnet is not "
        "supported (text-to-image only)",
    ),
    "controlnet-sdxl": (
        _named("StableDiffusionXLPipeline", unet=_UNET, controlnet=object()),
        "pipe: StableDiffusionXLPipeline has a controlnet; conditioning through a controlnet is "
        "not supported (text-to-image only)",
    ),
    "adapter-text-time-unet": (
        _named("MyPipe", unet=_XL_UNET, adapter=object()),
        "pipe: MyPipe has a adapter; conditioning through a adapter is not supported",
    ),
    "adapter": (
        _named("MyPipe", transformer=_net("FluxTransformer2DModel", 16, 16), adapter=object()),
        "pipe: MyPipe has a adapter; conditioning through a adapter is not supported",
    ),
    "fill": (
        _named("MyPipe", transformer=_net("SD3Transformer2DModel", 32, 16)),
        "pipe: MyPipe's network takes 32 input channels for 16 output channels (an "
        "inpainting/fill/control variant with extra conditioning channels); only text-to-image "
        "sd3 networks are supported",
    ),
    "other-unet": (
        _named("MyPipe", unet=torch.nn.Linear(1, 1)),
        "pipe: unsupported pipeline MyPipe (network Linear)",
    ),
    "unet-without-encoder": (
        _named("MyPipe", unet=_UNET),
        "pipe: unsupported pipeline MyPipe (network UNet2DConditionModel)",
    ),
    "no-network": (_named("MyPipe"), "pipe: unsupported pipeline MyPipe (network MyPipe)"),
}


@pytest.mark.parametrize("case", sorted(_REJECTED))
def test_detect_family_errors_name_the_pipeline_and_the_supported_families(case: str) -> None:
    from glass_core.models.diffusers._family import supported_message

    pipe, message = _REJECTED[case]
    with pytest.raises(UnsupportedModelError) as err:
        detect_family(pipe)
    assert str(err.value).startswith(message)
    assert str(err.value).endswith("; " + supported_message())


def test_a_network_config_without_out_channels_outputs_its_input_channels() -> None:
    # out_channels None (configs that leave it out): text-to-image, not a fill variant
    assert (
        detect_family(_named("P", transformer=_net("FluxTransformer2DModel", 64, None))) == "flux"
    )
    no_attr = _named("FluxTransformer2DModel", config=types.SimpleNamespace(in_channels=64))
    assert detect_family(_named("P", transformer=no_attr)) == "flux"  # no out_channels at all
    assert detect_family(_named("StableDiffusionXLPipeline", unet=_UNET)) == "sdxl"


def test_variants_with_extra_inputs_are_rejected() -> None:
    import types

    from diffusers import UNet2DConditionModel

    inpaint = UNet2DConditionModel(
        sample_size=8,
        in_channels=9,
        out_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    fake = types.SimpleNamespace(unet=inpaint, encode_prompt=None)
    with pytest.raises(UnsupportedModelError, match="9 input channels"):
        detect_family(fake)
    pipe = tp.sd_pipeline("epsilon")
    with_control = types.SimpleNamespace(unet=pipe.unet, encode_prompt=None, controlnet=object())
    with pytest.raises(UnsupportedModelError, match="controlnet"):
        detect_family(with_control)


def test_mismatched_embeds_and_prompts() -> None:
    pipe = tp.sdxl_pipeline()
    pe, _, pp, _ = pipe.encode_prompt(PROMPTS, device="cpu")
    with pytest.raises(InvalidInputError, match="pooled_prompt_embeds has batch size 1"):
        from_pipeline(pipe, prompt_embeds=pe, pooled_prompt_embeds=pp[:1], height=16, width=16)
    with pytest.raises(InvalidInputError, match="pooled_prompt_embeds is required"):
        from_pipeline(pipe, prompt_embeds=pe, height=16, width=16)
    with pytest.raises(InvalidInputError, match="either prompt or prompt_embeds"):
        from_pipeline(pipe, PROMPTS, prompt_embeds=pe, pooled_prompt_embeds=pp)
    with pytest.raises(InvalidInputError, match="negative_prompt has 3 entries"):
        from_pipeline(pipe, PROMPTS, negative_prompt=["x", "y", "z"], height=16, width=16)
    with pytest.raises(InvalidInputError, match="height and width"):
        from_pipeline(pipe, PROMPTS, height=15, width=16)
    with pytest.raises(InvalidInputError, match="prompt"):
        from_pipeline(pipe)


def _sd3_embeds() -> dict:
    pe, npe, pp, npp = tp.sd3_pipeline().encode_prompt(
        PROMPTS, None, None, device="cpu", max_sequence_length=8
    )
    return {"pe": pe, "npe": npe, "pp": pp, "npp": npp}


_BAD_PROMPTS = {  # case -> (from_pipeline(sd3, ...) arguments from SD3's embeddings e, message)
    "prompt-int": (
        lambda e: {"prompt": 5},
        "prompt must be a string or a non-empty list of strings, got 5",
    ),
    "prompt-empty": (
        lambda e: {"prompt": []},
        "prompt must be a string or a non-empty list of strings, got []",
    ),
    "negative-mixed": (
        lambda e: {"prompt": PROMPTS, "negative_prompt": ["a", 3]},
        "negative_prompt must be a string or a non-empty list of strings, got ['a', 3]",
    ),
    "both": (
        lambda e: {"prompt": PROMPTS, "prompt_embeds": e["pe"], "pooled_prompt_embeds": e["pp"]},
        "pass either prompt or prompt_embeds, not both",
    ),
    "neither": (lambda e: {}, "one of prompt or prompt_embeds is required"),
    "embeds-list": (
        lambda e: {"prompt_embeds": [[0.0]]},
        "prompt_embeds must be a tensor with 3 dims, got list",
    ),
    "negatives-count": (
        lambda e: {"prompt": PROMPTS, "negative_prompt": ["x", "y", "z"]},
        "negative_prompt has 3 entries but there are 2 prompts",
    ),
    "embeds-rank": (
        lambda e: {"prompt_embeds": torch.zeros(2, 8), "pooled_prompt_embeds": e["pp"]},
        "prompt_embeds must be a tensor with 3 dims, got (2, 8)",
    ),
    "embeds-not-a-tensor": (
        lambda e: {"prompt_embeds": e["pe"], "pooled_prompt_embeds": e["pp"].tolist()},
        "pooled_prompt_embeds must be a tensor with 2 dims, got list",
    ),
    "pooled-batch": (
        lambda e: {"prompt_embeds": e["pe"], "pooled_prompt_embeds": e["pp"][:1]},
        "pooled_prompt_embeds has batch size 1 but 2 prompts/prompt_embeds were given",
    ),
    "negative-embeds-rank": (
        lambda e: {
            "prompt_embeds": e["pe"],
            "pooled_prompt_embeds": e["pp"],
            "negative_prompt_embeds": e["npe"][0],
            "negative_pooled_prompt_embeds": e["npp"],
        },
        "negative_prompt_embeds must be a tensor with 3 dims, got ({m}, 32)",
    ),
    "negative-embeds-batch": (
        lambda e: {
            "prompt_embeds": e["pe"],
            "pooled_prompt_embeds": e["pp"],
            "negative_prompt_embeds": e["npe"][:1],
            "negative_pooled_prompt_embeds": e["npp"][:1],
        },
        "negative_prompt_embeds has batch size 1 but 2 prompts/prompt_embeds were given",
    ),
    "pooled-missing": (
        lambda e: {"prompt_embeds": e["pe"]},
        "pooled_prompt_embeds is required with prompt_embeds for the sd3 family",
    ),
    "negative-pooled-missing": (
        lambda e: {
            "prompt_embeds": e["pe"],
            "pooled_prompt_embeds": e["pp"],
            "negative_prompt_embeds": e["npe"],
        },
        "negative_pooled_prompt_embeds is required with negative_prompt_embeds for sd3",
    ),
    "negative-both": (
        lambda e: {
            "prompt_embeds": e["pe"],
            "pooled_prompt_embeds": e["pp"],
            "negative_prompt": "a dog",
            "negative_prompt_embeds": e["npe"],
            "negative_pooled_prompt_embeds": e["npp"],
        },
        "pass either negative_prompt or negative_prompt_embeds, not both",
    ),
    "negative-shape": (  # SD3 embeddings [2, 12 CLIP + 8 T5 tokens, 32]; one token dropped
        lambda e: {
            "prompt_embeds": e["pe"],
            "pooled_prompt_embeds": e["pp"],
            "negative_prompt_embeds": e["npe"][:, :-1],
            "negative_pooled_prompt_embeds": e["npp"],
        },
        "negative_prompt_embeds shape (2, {n}, 32) must equal prompt_embeds shape (2, {m}, 32)",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_PROMPTS))
def test_bad_prompts_and_embeddings_get_their_exact_message(case: str) -> None:
    args, message = _BAD_PROMPTS[case]
    e = _sd3_embeds()
    seq = e["pe"].shape[1]
    with pytest.raises(InvalidInputError) as err:
        from_pipeline(
            tp.sd3_pipeline(), height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ, **args(e)
        )
    assert str(err.value) == message.format(n=seq - 1, m=seq)


_BAD_OPTIONS = {  # case -> (pipeline, from_pipeline arguments, message, the error's arg)
    "size-odd": (
        lambda: tp.sd_pipeline("epsilon"),
        {"height": 15, "width": 16},
        "height and width must be positive multiples of 2 for StableDiffusionPipeline, "
        "got height=15, width=16",
        None,
    ),
    "size-odd-width": (
        lambda: tp.sd_pipeline("epsilon"),
        {"height": 16, "width": 15},
        "height and width must be positive multiples of 2 for StableDiffusionPipeline, "
        "got height=16, width=15",
        None,
    ),
    "size-zero-width": (  # 0 is a size, not "the default" (None is)
        lambda: tp.sd_pipeline("epsilon"),
        {"height": 16, "width": 0},
        "height and width must be positive multiples of 2 for StableDiffusionPipeline, "
        "got height=16, width=0",
        None,
    ),
    "size-zero-height": (
        lambda: tp.sd_pipeline("epsilon"),
        {"height": 0, "width": 16},
        "height and width must be positive multiples of 2 for StableDiffusionPipeline, "
        "got height=0, width=16",
        None,
    ),
    "size-negative-width": (
        lambda: tp.sd_pipeline("epsilon"),
        {"height": 16, "width": -16},
        "height and width must be positive multiples of 2 for StableDiffusionPipeline, "
        "got height=16, width=-16",
        None,
    ),
    "size-negative": (
        lambda: tp.sd_pipeline("epsilon"),
        {"height": -16, "width": 16},
        "height and width must be positive multiples of 2 for StableDiffusionPipeline, "
        "got height=-16, width=16",
        None,
    ),
    "size-flux-packing": (  # VAE factor 2 x FLUX's 2x2 patches
        lambda: tp.flux_pipeline(True),
        {"height": 18, "width": 16},
        "height and width must be positive multiples of 4 for FluxPipeline, "
        "got height=18, width=16",
        None,
    ),
    "one-unknown-option": (
        lambda: tp.sd_pipeline("epsilon"),
        {"original_size": (64, 64)},
        "original_size: not a call option of StableDiffusionPipeline that steer passes through "
        "(it takes none)",
        "original_size",
    ),
    "two-unknown-options": (
        tp.sdxl_pipeline,
        {"foo": 1, "bar": 2},
        "bar, foo: not a call option of StableDiffusionXLPipeline that steer passes through "
        "(it takes original_size, crops_coords_top_left, target_size)",
        None,
    ),
    "true-cfg": (
        lambda: tp.sd_pipeline("epsilon"),
        {"true_cfg_scale": 2.0},
        "true_cfg_scale: StableDiffusionPipeline has no true_cfg_scale (its classifier-free "
        "guidance is scaled by guidance_scale)",
        "true_cfg_scale",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_OPTIONS))
def test_bad_call_options_get_their_exact_message_and_argument(case: str) -> None:
    make, kwargs, message, arg = _BAD_OPTIONS[case]
    with pytest.raises(InvalidInputError) as err:
        from_pipeline(make(), "a cat", **kwargs)
    assert str(err.value) == message
    assert err.value.arg == arg


@pytest.mark.parametrize(
    "config",
    [
        {"scaling_factor": 0.5, "shift_factor": 0.1},
        {"scaling_factor": 0.5, "latents_mean": [0.1, -0.2], "latents_std": [2.1, 0.7]},
    ],
    ids=["shift", "per_channel"],
)
def test_vae_latent_maps_follow_the_config_and_invert(config: dict) -> None:
    """Network latents -> VAE latents: z / scaling + shift, or per channel z * std / scaling +
    mean; the inverse map returns the network latents. In the latents' own dtype: float64 here,
    with a mean and std that float32 would round."""
    import types

    from glass_core.models.diffusers.base import DiffusersDenoiser

    den = object.__new__(DiffusersDenoiser)
    den.pipe = types.SimpleNamespace(
        vae=types.SimpleNamespace(config=types.SimpleNamespace(**config))
    )
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if "latents_mean" in config:
        mean = torch.tensor(config["latents_mean"], dtype=z.dtype).view(1, 2, 1, 1)
        std = torch.tensor(config["latents_std"], dtype=z.dtype).view(1, 2, 1, 1)
        want = z * std / config["scaling_factor"] + mean
    else:
        want = z / config["scaling_factor"] + config["shift_factor"]
    vae = den._vae_latents(z)
    torch.testing.assert_close(vae, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(den._network_latents(vae), z, rtol=1e-12, atol=1e-12)


def test_images_to_output_types() -> None:
    """pt as given; np channels-last float32; pil 8-bit with rounding and clamping, grayscale for
    one channel."""
    from glass_core.models.diffusers.base import images_to_output

    rgb = torch.tensor([0.0, 0.5, 1.2, -0.1]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    rgb[0, 1] = 0.25
    assert images_to_output(rgb, "pt") is rgb
    arr = images_to_output(rgb.double(), "np")
    assert arr.shape == (1, 2, 2, 3) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0, :, :, 0], np.float32([[0.0, 0.5], [1.2, -0.1]]))
    (img,) = images_to_output(rgb, "pil")
    assert img.mode == "RGB" and img.size == (2, 2)
    # round(0.5 * 255) = 128, round(0.25 * 255) = 64; 1.2 and -0.1 clamp to 255 and 0
    assert [img.getpixel(p) for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [
        (0, 64, 0), (128, 64, 128), (255, 64, 255), (0, 64, 0),
    ]  # fmt: skip
    (gray,) = images_to_output(rgb[:, :1], "pil")
    assert gray.mode == "L"
    assert [gray.getpixel(p) for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 128, 255, 0]
    for other in ("PIL", "latent", None):  # no silent fallback to PIL images
        with pytest.raises(InvalidInputError) as err:
            images_to_output(rgb, other)  # type: ignore[arg-type]
        assert str(err.value) == f"output_type must be 'pt', 'np' or 'pil', got {other!r}"


def test_video_frames_save_as_an_animation_that_loops_forever_by_default() -> None:
    import io

    from glass_core.models.diffusers.base import images_to_output
    from PIL import Image

    video = torch.zeros(1, 3, 3, 4, 6)  # [M, F, C, H, W]
    video[0, :, 0] = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1)  # red ramps over the frames
    (frames,) = images_to_output(video, "pil")
    assert [f.size for f in frames] == [(6, 4)] * 3

    def saved(**params) -> Image.Image:
        buf = io.BytesIO()
        frames.save(buf, "GIF", **params)
        buf.seek(0)
        return Image.open(buf)

    # a GIF without a loop count plays once; the default writes loop 0 (forever)
    anim = saved()
    assert anim.n_frames == 3 and anim.info["loop"] == 0
    reds = []
    for k in range(3):
        anim.seek(k)
        reds.append(anim.convert("RGB").getpixel((0, 0))[0])
    assert reds == [0, 128, 255]  # round(0.5 * 255) = 128
    assert saved(loop=2).info["loop"] == 2  # a given loop count is kept
    # per-frame durations work for a one-frame video too (it is still saved as an animation)
    (still,) = images_to_output(video[:, :1], "pil")
    buf = io.BytesIO()
    still.save(buf, "GIF", duration=[70])
    buf.seek(0)
    one = Image.open(buf)
    assert one.n_frames == 1 and one.info["duration"] == 70 and one.info["loop"] == 0


def test_encode_and_decode_batch_the_vae_by_max_batch_else_the_adapters() -> None:
    """max_batch of encode/decode, else the adapter's max_batch, else one VAE call."""
    pipe = tp.sd_pipeline("epsilon")
    size = {"height": tp.HEIGHT, "width": tp.WIDTH, "guidance_scale": 1.0}
    whole = from_pipeline(pipe, PROMPTS[0], **size)
    by_two = from_pipeline(pipe, PROMPTS[0], max_batch=2, **size)
    images = torch.rand(4, 3, tp.HEIGHT, tp.WIDTH, generator=torch.Generator().manual_seed(0))
    rows: list[int] = []

    def vae_rows(method, *args, **kwargs) -> tuple[torch.Tensor, list[int]]:
        rows.clear()
        with torch.no_grad():
            out = method(*args, **kwargs)
        return out, list(rows)

    hooks = [
        part.register_forward_pre_hook(lambda mod, args: rows.append(args[0].shape[0]))
        for part in (pipe.vae.encoder, pipe.vae.decoder)
    ]
    try:
        z, r = vae_rows(whole.encode, images)
        assert r == [4]
        img, r = vae_rows(whole.decode, z)
        assert r == [4]
        for model, max_batch, want in ((whole, 1, [1, 1, 1, 1]), (by_two, None, [2, 2]),
                                       (by_two, 3, [3, 1])):  # fmt: skip
            z2, r = vae_rows(model.encode, images, max_batch=max_batch)
            assert r == want
            torch.testing.assert_close(z2, z, rtol=1e-5, atol=1e-5)
            img2, r = vae_rows(model.decode, z, max_batch=max_batch)
            assert r == want
            torch.testing.assert_close(img2, img, rtol=1e-5, atol=1e-5)
    finally:
        for h in hooks:
            h.remove()


def test_an_fp16_vae_with_force_upcast_codes_in_float32_and_stays_fp16() -> None:
    """As the pipelines do for SDXL's fp16 VAE: encode and decode run it in float32 (the same
    numbers as a float32 copy of its fp16 weights) and leave it in fp16."""
    import copy

    base = tp.sd_pipeline("epsilon")
    size = {"height": tp.HEIGHT, "width": tp.WIDTH, "guidance_scale": 1.0}
    half, full = copy.copy(base), copy.copy(base)
    half.vae = copy.deepcopy(base.vae).half()
    full.vae = copy.deepcopy(half.vae).float()
    assert half.vae.config.force_upcast
    m16, m32 = from_pipeline(half, PROMPTS[0], **size), from_pipeline(full, PROMPTS[0], **size)
    images = torch.rand(2, 3, tp.HEIGHT, tp.WIDTH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z16, z32 = m16.encode(images), m32.encode(images)
        assert next(half.vae.parameters()).dtype == torch.float16
        img16, img32 = m16.decode(z32), m32.decode(z32)
    assert next(half.vae.parameters()).dtype == torch.float16
    assert z16.dtype == img16.dtype == torch.float32
    assert torch.equal(z16, z32) and torch.equal(img16, img32)


def test_encode_resizes_images_to_the_adapters_size() -> None:
    """encode resizes any image to the adapter's height x width (the image processor is given
    both): a tall and a wide image give latents of the adapter's latent shape."""
    pipe = tp.sd_pipeline("epsilon")
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, guidance_scale=1.0)
    g = torch.Generator().manual_seed(4)
    for h, w in [(2 * tp.HEIGHT, tp.WIDTH), (tp.HEIGHT, 2 * tp.WIDTH)]:
        with torch.no_grad():
            z = model.encode(torch.rand(2, 3, h, w, generator=g))
        assert z.shape == (2, *model.latent_shape), (h, w)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "f64"])
def test_decode_maps_latents_to_the_vae_in_float32(dtype: torch.dtype) -> None:
    """Latents of any dtype are taken to float32 before the VAE's latent map (scale, shift), so
    they decode exactly as their float32 values do (bf16 -> f32 is exact, and these f64 are f32
    values)."""
    model = from_pipeline(
        tp.flux_pipeline(True), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ
    )
    z = _noise(8, (2, *model.latent_shape)).to(dtype)
    with torch.no_grad():
        img = model.decode(z)
        ref = model.decode(z.float())
    assert img.dtype == torch.float32 and img.shape == (2, 3, tp.HEIGHT, tp.WIDTH)
    assert torch.equal(img, ref)


@pytest.mark.parametrize("hook", ["offloaded", "hook-without-device", "none"])
def test_module_device_without_diffusers_helper_matches_it(monkeypatch, hook: str) -> None:
    """Before diffusers 0.42 (no get_module_execution_device) module_device reads an accelerate
    offload hook's execution device itself, else the parameters' device: what the helper gives."""
    import types

    import diffusers.utils.torch_utils as tu
    from glass_core.models.diffusers.base import module_device

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)))
    if hook == "offloaded":  # a submodule's hook runs it on another device than its weights
        net[1][0]._hf_hook = types.SimpleNamespace(execution_device="meta")
    elif hook == "hook-without-device":
        net[1]._hf_hook = types.SimpleNamespace()
    want = tu.get_module_execution_device(net)
    assert want == torch.device("meta" if hook == "offloaded" else "cpu")
    monkeypatch.delattr(tu, "get_module_execution_device")
    assert module_device(net) == want


def test_latents_of_the_wrong_shape_are_named_with_the_expected_shape() -> None:
    model = from_pipeline(
        tp.sd_pipeline("epsilon"), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, guidance_scale=1.0
    )
    assert model.latent_shape == (4, 8, 8)
    bad = torch.zeros(2, 4, 4, 4)
    with pytest.raises(InvalidInputError) as err:
        model.decode(bad)
    assert str(err.value) == "z must have shape [M, 4, 8, 8], got (2, 4, 4, 4)"
    with pytest.raises(InvalidInputError) as err:
        model.denoise(bad, 0.4)
    assert str(err.value) == "x must have shape [M, 4, 8, 8] (latent_shape), got (2, 4, 4, 4)"


@pytest.mark.parametrize("scheduler", ["flow", "flow-prediction"])
def test_sd_schedulers_the_unet_adapter_cannot_use_are_named(scheduler: str) -> None:
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        StableDiffusionPipeline,
    )

    base = tp.sd_pipeline("epsilon")
    if scheduler == "flow":
        sched = FlowMatchEulerDiscreteScheduler()
        message = (
            "pipe.scheduler: FlowMatchEulerDiscreteScheduler has no alphas_cumprod; SD/SDXL "
            "adapters need a discrete VP scheduler (DDIM, DDPM, Euler, DPM-Solver, ...)"
        )
    else:
        sched = DPMSolverMultistepScheduler(prediction_type="flow_prediction", steps_offset=1)
        message = (
            "pipe.scheduler.config.prediction_type='flow_prediction' is not one of "
            "('epsilon', 'v_prediction', 'sample')"
        )
    pipe = StableDiffusionPipeline(**{**base.components, "scheduler": sched})
    with pytest.raises(UnsupportedModelError) as err:
        from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "micro",
    [{}, {"original_size": (96, 80), "crops_coords_top_left": (4, 2), "target_size": (64, 48)}],
    ids=["defaults", "given"],
)
def test_sdxl_time_ids_are_the_pipelines_own(micro: dict) -> None:
    from glass_core.models.diffusers import sdxl_add_time_ids

    pipe = tp.sdxl_pipeline()
    ref = pipe._get_add_time_ids(
        micro.get("original_size", (20, 12)),
        micro.get("crops_coords_top_left", (0, 0)),
        micro.get("target_size", (20, 12)),
        dtype=torch.float32,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    )
    got = sdxl_add_time_ids(pipe, 20, 12, **micro)
    assert got.dtype == torch.float32 and torch.equal(got, ref[0])
    # the adapter's UNet gets them (the micro-conditioning passed through from_pipeline)
    model = from_pipeline(pipe, PROMPTS, height=tp.HEIGHT, width=tp.WIDTH, **micro)
    own = sdxl_add_time_ids(pipe, tp.HEIGHT, tp.WIDTH, **micro)
    for rows in (model.conditioning.cond, model.conditioning.uncond):
        assert torch.equal(rows["time_ids"], own.expand(2, 6))


def test_sdxl_time_ids_that_do_not_fit_the_unet_are_named() -> None:
    import types

    from glass_core.models.diffusers import sdxl_add_time_ids

    ns = types.SimpleNamespace
    pipe = ns(
        unet=ns(
            add_embedding=ns(linear_1=ns(in_features=100)), config=ns(addition_time_embed_dim=8)
        ),
        text_encoder_2=ns(config=ns(projection_dim=32)),
    )
    with pytest.raises(UnsupportedModelError) as err:
        sdxl_add_time_ids(pipe, 16, 16)
    # 6 ids x 8 + the projection's 32
    assert str(err.value) == "pipe.unet expects an added embedding of 100, SDXL time ids give 80"


def test_a_pipeline_without_a_unet_is_named_in_the_error():
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    class NotAPipeline:
        unet = None

    with pytest.raises(UnsupportedModelError, match="pipe: NotAPipeline is not an unconditional"):
        from_unconditional_pipeline(NotAPipeline())


def _no_embeds() -> dict:
    names = ("prompt_embeds", "pooled_prompt_embeds")
    return {p + n: None for n in names for p in ("", "negative_")}


def test_checked_encoder_passes_the_given_embeddings_through():
    from glass_core.models.diffusers._conditioning import checked_encoder

    seen = []

    def enc(pipe, prompts, negs, e, do_cfg, device, kw):
        seen.append((pipe, prompts, negs, e, do_cfg, device, kw))
        return {"encoder_hidden_states": e["prompt_embeds"]}, None

    given = {**_no_embeds(), "prompt_embeds": torch.randn(3, 4, 8)}
    encode = checked_encoder(enc, "sd", needs_pooled=False)
    args = (object(), None, None, given, False, torch.device("cpu"), {"clip_skip": 1})
    cond, uncond = encode(*args)
    assert cond["encoder_hidden_states"] is given["prompt_embeds"] and uncond is None
    assert len(seen) == 1 and all(a is b for a, b in zip(seen[0], args, strict=True))


@pytest.mark.parametrize("which", ["cond", "uncond"])
@pytest.mark.parametrize(
    ("bad", "got"), [(torch.zeros(1, 4, 8), r"\(1, 4, 8\)"), (None, "None")], ids=["rows", "none"]
)
def test_checked_encoder_names_an_output_without_one_row_per_prompt(bad, got: str, which: str):
    from glass_core.models.diffusers._conditioning import checked_encoder

    def enc(pipe, prompts, negs, e, do_cfg, device, kw):
        good = {"encoder_hidden_states": torch.zeros(2, 4, 8)}
        wrong = {"encoder_hidden_states": bad}
        return (wrong, good) if which == "cond" else (good, wrong)

    encode = checked_encoder(enc, "sd", needs_pooled=False)
    want = (
        rf"^encode_prompt returned {which} encoder_hidden_states with shape {got}; "
        r"expected batch 2$"
    )
    with pytest.raises(InvalidInputError, match=want):
        encode(None, ["a", "b"], None, _no_embeds(), True, torch.device("cpu"), {})


def test_wan_guides_for_any_scale_above_one():
    from glass_core.models.diffusers import wan

    assert wan.does_cfg(None, 1.5, False) and not wan.does_cfg(None, 1.0, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unet_predict_reads_times_of_any_float_dtype(dtype: torch.dtype) -> None:
    """The public predict takes times in any float dtype: the UNet's timestep is computed from
    their values in float64 (NumPy has no bfloat16), the same as for those values in float64."""
    model = from_pipeline(tp.sd_pipeline(), PROMPTS, height=tp.HEIGHT, width=tp.WIDTH)
    x = _noise(5, (2, *model.latent_shape))
    t = torch.tensor([0.3, 0.7], dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(
            model.predict(x, t), model.predict(x, t.double()), rtol=0, atol=0
        )


def test_predictions_build_no_autograd_graph_by_default():
    """requires_grad=False (the default): the network runs under no_grad, so no graph is kept."""
    pipe = tp.flux_pipeline(True)
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ)
    assert any(p.requires_grad for p in pipe.transformer.parameters())
    assert not model.denoise(_noise(3, (2, *model.latent_shape)), 0.3).requires_grad


def test_uneven_ddim_timesteps_warn_at_the_callers_line() -> None:
    """DDIM timesteps not spaced by T // num_steps (trailing spacing, 3 steps of 1000) cannot be
    mirrored exactly (exact=True): the warning says so and points at the code that asked."""
    import copy

    from diffusers import DDIMScheduler

    pipe = copy.copy(tp.sd_pipeline())
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    with pytest.warns(UserWarning, match="not evenly spaced") as caught:
        default_time_grid(model, 3, exact=True)
    assert [str(w.message) for w in caught] == [
        "DDIM's timesteps are not evenly spaced by T // num_steps; the pipeline queries the "
        "network at times that differ from its states, so it cannot be mirrored exactly"
    ]
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampoline is a frame outside glass_core
        assert [w.filename for w in caught] == [__file__]


def test_evenly_spaced_ddim_timesteps_do_not_warn() -> None:
    """Leading spacing, 3 steps of 1000: timesteps 666, 333, 0 (plus the offset), spaced by the
    integer T // num_steps = 333, so the grid mirrors the pipeline exactly and nothing warns."""
    import copy
    import warnings

    from diffusers import DDIMScheduler

    pipe = copy.copy(tp.sd_pipeline())
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid = default_time_grid(model, 3, exact=True)
    assert len(grid) == 4


@pytest.mark.parametrize("missing", [False, True], ids=["sigmas-none", "no-sigmas-attribute"])
def test_a_flow_scheduler_without_sigmas_is_named(missing: bool) -> None:
    import copy

    from diffusers import FlowMatchEulerDiscreteScheduler

    class NoSigmas(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, *args, **kwargs):
            super().set_timesteps(*args, **kwargs)
            if missing:
                del self.sigmas
            else:
                self.sigmas = None

    model = from_pipeline(tp.flux_pipeline(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    model.pipe = copy.copy(model.pipe)
    model.pipe.scheduler = NoSigmas.from_config(model.pipe.scheduler.config)
    with pytest.raises(InvalidInputError, match="NoSigmas exposes no sigmas; pass time_grid"):
        default_time_grid(model, 4)


def test_calculate_shift_defaults_are_diffusers_flux_ones() -> None:
    """calculate_shift(n) uses FluxPipeline's defaults (256, 4096, 0.5, 1.15): diffusers' own
    calculate_shift gives the same mu."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_shift

    for n in (16, 256, 1024, 4096, 8192):
        assert calculate_shift(n) == pytest.approx(diffusers_shift(n), rel=1e-12, abs=1e-12)
        assert calculate_shift(n) == calculate_shift(n, 256, 4096, 0.5, 1.15)


def test_time_grids_leave_the_pipelines_scheduler_untouched() -> None:
    """The grid comes from a deep copy of the scheduler: DPM-Solver++'s set_timesteps with mu writes
    config.flow_shift, and the pipeline's own scheduler keeps its value and its timesteps.
    A VP scheduler without DDIM's final_alpha_cumprod (Euler) ends the exact grid at t = 1."""
    import copy

    from diffusers import EulerDiscreteScheduler

    pipe = copy.copy(tp.flux_pipeline(True))
    pipe.scheduler = _dynamic_scheduler("dpm")
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, encode_kwargs=SEQ)
    before, steps = pipe.scheduler.config.flow_shift, pipe.scheduler.timesteps.clone()
    default_time_grid(model, 3)
    assert pipe.scheduler.config.flow_shift == before
    assert torch.equal(pipe.scheduler.timesteps, steps)
    sd = copy.copy(tp.sd_pipeline())
    sd.scheduler = EulerDiscreteScheduler.from_config(sd.scheduler.config)
    assert not hasattr(sd.scheduler, "final_alpha_cumprod")
    vp = from_pipeline(sd, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    assert default_time_grid(vp, 4, exact=True)[-1] == 1.0


@pytest.mark.parametrize("only", ["latents_mean", "latents_std"])
def test_a_vae_config_with_only_one_of_latents_mean_std_uses_its_scaling_factor(only: str) -> None:
    """Per-channel normalisation needs both latents_mean and latents_std; a config with only one
    of them maps latents by its scaling (and shift) factor, as one with neither does."""
    import copy

    base = tp.sd_pipeline("epsilon")
    size = {"height": tp.HEIGHT, "width": tp.WIDTH, "guidance_scale": 1.0}
    one = copy.copy(base)
    one.vae = copy.deepcopy(base.vae)
    one.vae.register_to_config(**{only: [0.5] * one.vae.config.latent_channels})
    plain, odd = from_pipeline(base, PROMPTS[0], **size), from_pipeline(one, PROMPTS[0], **size)
    z = _noise(6, (2, *plain.latent_shape))
    with torch.no_grad():
        assert torch.equal(odd.decode(z), plain.decode(z))


@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_vp_grid_ends_at_ddims_final_alpha(alpha_to_one: bool) -> None:
    """exact=True ends where DDIM's last step lands: alpha = 1 (t = 1) with set_alpha_to_one,
    else alphas_cumprod[0] (node k = 0, t = 1 - 1/(T+1)); exact=False starts at 0, ends at 1."""
    import copy

    from diffusers import DDIMScheduler

    pipe = copy.copy(tp.sd_pipeline())
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=alpha_to_one)
    model = from_pipeline(pipe, PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    exact = default_time_grid(model, 4, exact=True)
    ks = np.array([751, 501, 251, 1])  # leading spacing, steps_offset=1, T=1000
    np.testing.assert_allclose(exact[:-1], 1 - (ks + 1) / 1001, rtol=0, atol=1e-12)
    assert exact[-1] == (1.0 if alpha_to_one else pytest.approx(1 - 1 / 1001, abs=1e-12))
    loose = default_time_grid(model, 4)
    assert loose[0] == 0.0 and loose[-1] == 1.0
    np.testing.assert_array_equal(loose[1:-1], exact[1:-1])


def test_time_grid_errors_are_named() -> None:
    import copy

    from diffusers import FlowMatchEulerDiscreteScheduler

    class Stalls(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, *args, **kwargs):
            super().set_timesteps(*args, **kwargs)
            self.sigmas = torch.tensor([1.0, 0.5, 0.5, 0.0])

    model = from_pipeline(tp.flux_pipeline(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    with pytest.raises(InvalidInputError) as err:
        default_time_grid(model, 0)
    assert str(err.value) == "`num_steps` must be an integer >= 1, got 0"
    model.pipe = copy.copy(model.pipe)
    model.pipe.scheduler = Stalls.from_config(model.pipe.scheduler.config)
    with pytest.raises(InvalidInputError) as err:
        default_time_grid(model, 3)
    assert str(err.value) == "the scheduler produced a non-increasing time grid: [0.  0.5 0.5 1. ]"


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (tp.sd_pipeline, lambda p: p.unet.config.sample_size),  # SD 1.x: the UNet's sample size
        (tp.sd3_pipeline, lambda p: p.transformer.config.sample_size),
        (tp.flux_pipeline, lambda p: 128),  # FluxPipeline.default_sample_size
    ],
    ids=["sd", "sd3", "flux"],
)
def test_the_default_image_size_is_the_pipelines(make, size) -> None:
    """Without height and width, the particles have the latent size of the pipeline's own
    default image (its ``__call__`` defaults)."""
    pipe = make()
    model = from_pipeline(pipe, PROMPTS[0])
    assert model.latent_shape[-2:] == (size(pipe), size(pipe))


def test_a_custom_pipeline_is_recognised_by_its_unet() -> None:
    """A pipeline class of another name is SDXL when its UNet takes SDXL's added text-time
    conditioning, SD 1.x when it is a plain text UNet with an encode_prompt."""
    import types

    xl = types.SimpleNamespace(unet=tp.sdxl_pipeline().unet, encode_prompt=None)
    assert detect_family(xl) == "sdxl"
    sd = types.SimpleNamespace(unet=tp.sd_pipeline("epsilon").unet, encode_prompt=None)
    assert detect_family(sd) == "sd"


def test_an_adapters_max_batch_must_be_a_positive_int_and_is_named() -> None:
    """max_batch is the adapter's own micro-batch (network rows per pass): 0 is refused with an
    error naming the argument."""
    with pytest.raises(InvalidInputError) as err:
        from_pipeline(tp.sd_pipeline(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, max_batch=0)
    assert err.value.arg == "max_batch"
    assert str(err.value) == "`max_batch` must be an integer >= 1, got 0"


def test_unet_adapter_with_requires_grad_keeps_the_graph_and_its_prediction_type() -> None:
    """requires_grad=True runs the UNet with autograd on (reward guidance differentiates through
    it); the adapter keeps the scheduler's prediction_type and stores the flag."""
    model = from_pipeline(
        tp.sd_pipeline("v_prediction"),
        PROMPTS[0],
        height=tp.HEIGHT,
        width=tp.WIDTH,
        guidance_scale=1.0,
        requires_grad=True,
    )
    assert model.requires_grad is True
    assert model.prediction_type == "v_prediction" and model.prediction == "v"
    x = _noise(3, (2, *model.latent_shape))
    assert model.predict(x, torch.full((2,), 0.4, dtype=torch.float64)).requires_grad


def test_unet_predict_returns_the_inputs_dtype() -> None:
    """The UNet runs in its own dtype (float32 here); its output comes back in x's dtype."""
    model = from_pipeline(tp.sd_pipeline(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
    x = _noise(5, (2, *model.latent_shape))
    t = torch.full((2,), 0.4, dtype=torch.float64)
    with torch.no_grad():
        out32, out64 = model.predict(x, t), model.predict(x.double(), t)
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    torch.testing.assert_close(out64, out32.double(), rtol=0, atol=0)


def test_a_shared_python_float_time_reaches_the_unet_in_float64() -> None:
    """A python float time is kept in float64 up to the UNet's timestep: at a node time
    1 - (k + 1) / (T + 1) it gives the node's integer k, exactly as the same time given per row
    in float64 (float32 would miss the node by ~1.6e-5 and query a fractional timestep)."""
    model = from_pipeline(
        tp.sd_pipeline(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, guidance_scale=1.0
    )
    seen: list[torch.Tensor] = []
    handle = model.network.register_forward_pre_hook(lambda m, a: seen.append(a[1].clone()))
    t = 1 - (5 + 1) / 1001  # in float32, 1001 (1 - t) - 1 = 5.0000159
    x = _noise(8, (2, *model.latent_shape))
    try:
        with torch.no_grad():
            shared = model.denoise(x, t)
            per_row = model.denoise(x, torch.full((2,), t, dtype=torch.float64))
    finally:
        handle.remove()
    assert [s.tolist() for s in seen] == [[5.0, 5.0]] * 2
    torch.testing.assert_close(shared, per_row, rtol=0, atol=0)


def test_sd_unet_gets_no_added_conditioning_and_sdxl_its_time_ids() -> None:
    """As the pipelines call it: SD's UNet gets added_cond_kwargs=None, SDXL's the pooled text
    embeddings and the added time ids."""
    seen: list = []
    for make in (tp.sd_pipeline, tp.sdxl_pipeline):
        model = from_pipeline(make(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH)
        seen.clear()
        handle = model.network.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["added_cond_kwargs"]), with_kwargs=True
        )
        try:
            with torch.no_grad():
                model.denoise(_noise(1, (1, *model.latent_shape)), 0.5)
        finally:
            handle.remove()
        if model.family == "sd":
            assert seen == [None]
        else:
            assert len(seen) == 1 and sorted(seen[0]) == ["text_embeds", "time_ids"]


def test_unet_timesteps_within_1e_6_of_a_node_snap_to_it() -> None:
    """Times a rounding error off a node time give the node's integer timestep exactly (grid
    times then reproduce the pipeline's timesteps); farther off, the fractional timestep."""
    model = from_pipeline(
        tp.sd_pipeline(), PROMPTS[0], height=tp.HEIGHT, width=tp.WIDTH, guidance_scale=1.0
    )
    ks = torch.tensor([1.0, 500.0, 998.0], dtype=torch.float64)
    for d in (-1e-8, 1e-8):
        t = 1 - (ks + d + 1) / 1001
        assert torch.equal(model.timestep(t), ks)
    far = model.timestep(1 - (ks + 1e-3 + 1) / 1001)
    torch.testing.assert_close(far, ks + 1e-3, rtol=0, atol=1e-9)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_encode_kwargs_reach_encode_prompt(family: str) -> None:
    """Further keyword arguments (encode_kwargs) go to the pipeline's encode_prompt: one it does
    not take is refused there, not silently dropped."""
    from glass_core.models.diffusers import sd, sdxl

    cpu = torch.device("cpu")
    pipe, mod = (tp.sd_pipeline(), sd) if family == "sd" else (tp.sdxl_pipeline(), sdxl)
    with pytest.raises(TypeError, match="no_such_option"), torch.no_grad():
        mod.encode(pipe, PROMPTS, None, _no_embeds(), False, cpu, {"no_such_option": 1})


def test_sdxl_clip_skip_reaches_encode_prompt() -> None:
    """SDXL's encode passes clip_skip to encode_prompt: the embeddings are those it gives with
    it, not without."""
    from glass_core.models.diffusers import sdxl

    cpu = torch.device("cpu")
    pipe = tp.sdxl_pipeline()
    want = pipe.encode_prompt(PROMPTS, device=cpu, num_images_per_prompt=1,
                              do_classifier_free_guidance=False, clip_skip=1)[0]  # fmt: skip
    plain = pipe.encode_prompt(PROMPTS, device=cpu, num_images_per_prompt=1,
                               do_classifier_free_guidance=False)[0]  # fmt: skip
    assert not torch.allclose(want, plain)
    with torch.no_grad():
        cond, _ = sdxl.encode(pipe, PROMPTS, None, _no_embeds(), False, cpu, {"clip_skip": 1})
    torch.testing.assert_close(cond["encoder_hidden_states"], want)


def test_sdxl_time_ids_without_a_second_text_encoder_are_not_checked() -> None:
    """A pipeline without text_encoder_2 (attribute missing or None) has no projection size to
    check the UNet's added embedding against: the ids are built unchecked."""
    import types

    from glass_core.models.diffusers import sdxl_add_time_ids

    ns = types.SimpleNamespace
    unet = ns(add_embedding=ns(linear_1=ns(in_features=100)), config=ns(addition_time_embed_dim=8))
    for pipe in (ns(unet=unet), ns(unet=unet, text_encoder_2=None)):
        got = sdxl_add_time_ids(pipe, 16, 8, crops_coords_top_left=(2, 1))
        assert torch.equal(got, torch.tensor([16.0, 8.0, 2.0, 1.0, 16.0, 8.0]))


def test_a_bfloat16_alphas_cumprod_table_gives_the_schedule_of_its_values() -> None:
    """A scheduler's alphas_cumprod in any float dtype (bfloat16 has no NumPy dtype) is read in
    float64: the schedule's nodes reproduce its values."""
    import types

    from glass_core.models.diffusers.unet import vp_schedule_from_scheduler

    table = torch.linspace(0.99, 0.01, 10, dtype=torch.float64).to(torch.bfloat16)
    vp = vp_schedule_from_scheduler(types.SimpleNamespace(alphas_cumprod=table))
    tn = 1 - (np.arange(10) + 1) / 11
    np.testing.assert_allclose(
        np.asarray(vp.alpha(tn)) ** 2, table.double().numpy(), rtol=1e-12, atol=0
    )
