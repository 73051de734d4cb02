"""glass_core.diffusers on tiny random pipelines: transitions as a drop-in scheduler inside the
pipelines' own __call__ (equal to their own Euler at rho=1, K=1 and to glass_core.steer), FK and
best-of-N through callback_on_step_end (equal to steer), config round trips and the cases the
route cannot serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import tiny_pipelines as tp
from glass_core.diffusers import (
    PCFlowScheduler,
    TransitionScheduler,
    flux_layout,
    steering_callback,
)
from glass_core.errors import InvalidInputError, UnsupportedModelError
from glass_core.models.diffusers import pack_latents
from glass_core.rewards.loading import image_reward, latent_reward
from glass_core.steering import steer
from glass_core.transitions import ODE, SDE, Glass

PROMPTS = ["a photo of a cat", "a red house"]
CALL = {"height": tp.HEIGHT, "width": tp.WIDTH, "max_sequence_length": 8, "output_type": "latent"}
MEAN = latent_reward(lambda z: z.mean(dim=tuple(range(1, z.ndim))))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def flux():
    pipe = tp.flux_pipeline(True)
    base = pipe.scheduler
    yield pipe
    pipe.scheduler = base


def _wrap(pipe, transition, seed: int, layout: bool = True) -> torch.Generator:
    g = _gen(seed)
    lay = flux_layout(pipe, tp.HEIGHT, tp.WIDTH) if layout else None
    pipe.scheduler = TransitionScheduler.wrap(
        pipe.scheduler, transition=transition, generator=g, layout=lay
    )
    return g


def _steer(pipe, transition, steps: int, seed: int, **kw):
    pipe.scheduler = getattr(pipe.scheduler, "base", pipe.scheduler)
    kw.setdefault("num_particles", 1)
    return steer(
        pipe,
        kw.pop("prompt", PROMPTS[0]),
        transition=transition,
        num_transitions=steps,
        generator=_gen(seed),
        output_type="latent",
        height=tp.HEIGHT,
        width=tp.WIDTH,
        encode_kwargs={"max_sequence_length": 8},
        progress=False,
        **kw,
    )


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    err = float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)
    assert err < rel, f"relative error {err:.3g} >= {rel}"


def test_rho1_k1_equals_the_pipelines_own_flowmatch_euler(flux) -> None:
    ref = flux(PROMPTS[0], num_inference_steps=4, generator=_gen(0), **CALL).images
    g = _wrap(flux, Glass(rho=1.0, inner_steps=1), 0, layout=False)
    out = flux(PROMPTS[0], num_inference_steps=4, generator=g, **CALL).images
    assert float((out - ref).abs().max()) < 1e-5
    assert len(flux.scheduler.timesteps) == 4


@pytest.mark.parametrize(
    "transition",
    [
        Glass(rho=0.4, inner_steps=4, solver="euler"),
        Glass(rho=0.4, inner_steps=3, solver="pc"),
        Glass(rho="ddpm", inner_steps=2, solver="heun"),
        Glass(rho=1.0, inner_steps=3, solver="midpoint"),
        Glass(rho=-0.3, inner_steps=3, solver="multistep"),
        ODE(solver="heun", substeps=2),
        SDE(substeps=3),
    ],
    ids=repr,
)
def test_pipeline_call_equals_steer_sample(flux, transition) -> None:
    steps = 3
    g = _wrap(flux, transition, 1)
    out = flux(PROMPTS[0], num_inference_steps=steps, generator=g, **CALL).images
    sched = flux.scheduler
    # one scheduler timestep per model evaluation: steer's NFE
    res = _steer(flux, transition, steps, 1, method="sample")
    assert len(sched.timesteps) == res.nfe
    np.testing.assert_allclose(sched.time_grid, res.time_grid, rtol=0, atol=1e-12)
    _close(out, pack_latents(res.samples), 1e-4)


def test_packed_noise_is_another_draw_of_the_same_law(flux) -> None:
    """Without the unpacked layout the transitions' noise is drawn in FLUX's token layout: a
    different draw (equal in distribution), so the samples differ from steer's."""
    tr = Glass(rho=0.4, inner_steps=2)
    g = _wrap(flux, tr, 2, layout=False)
    out = flux(PROMPTS[0], num_inference_steps=2, generator=g, **CALL).images
    res = _steer(flux, tr, 2, 2, method="sample")
    assert float((out - pack_latents(res.samples)).abs().max()) > 1e-2


def _fk_call(pipe, transition, steps, seed, n, **cb_kw):
    g = _wrap(pipe, transition, seed)
    cb = steering_callback(pipe, num_particles=n, **cb_kw)
    out = pipe(
        PROMPTS,
        num_images_per_prompt=n,
        num_inference_steps=steps,
        generator=g,
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=cb.tensor_inputs,
        **CALL,
    ).images
    return cb.result, out


@pytest.mark.parametrize(
    "transition",
    [Glass(rho=0.4, inner_steps=4, solver="euler"), Glass(rho=0.4, inner_steps=1), SDE()],
    ids=repr,
)
def test_fk_callback_equals_steer_fk(flux, transition) -> None:
    n, steps, lam = 4, 3, 30.0
    got, images = _fk_call(flux, transition, steps, 5, n, reward=MEAN, method="fk", lambda_=lam)
    ref = _steer(flux, transition, steps, 5, prompt=PROMPTS, reward=MEAN, method="fk",
                 lambda_=lam, num_particles=n)  # fmt: skip
    _close(got.samples.reshape(ref.samples.shape), ref.samples, 1e-4)
    _close(pack_latents(got.samples.flatten(0, 1)), images, 1e-6)  # the pipeline's output
    np.testing.assert_array_equal(got.ancestors, ref.ancestors)
    assert (got.ancestors != np.arange(n)).any()  # it did resample
    torch.testing.assert_close(got.log_weights, ref.log_weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.log_evidence, ref.log_evidence, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.rewards, ref.rewards, rtol=1e-4, atol=1e-5)
    assert got.nfe == ref.nfe


def test_fk_callback_options_equal_steer(flux) -> None:
    """Adaptive resampling, a sparser potential schedule, another potential and a final
    resample: the same options give the same run by either route."""
    opts = {"potential": "max", "ess_threshold": 0.7, "resample_every": 2, "final_resample": True,
            "resampling": "multinomial", "lambda_": 40.0}  # fmt: skip
    tr, n, steps = Glass(rho=0.2, inner_steps=2, solver="pc"), 4, 4
    got, images = _fk_call(flux, tr, steps, 13, n, reward=MEAN, method="fk", **opts)
    ref = _steer(flux, tr, steps, 13, prompt=PROMPTS, reward=MEAN, method="fk", num_particles=n,
                 **opts)  # fmt: skip
    _close(got.samples.reshape(ref.samples.shape), ref.samples, 1e-4)
    _close(pack_latents(got.samples.flatten(0, 1)), images, 1e-6)
    np.testing.assert_array_equal(got.ancestors, ref.ancestors)
    np.testing.assert_array_equal(got.resampled, ref.raw.resampled)
    np.testing.assert_allclose(got.log_evidence, ref.log_evidence, rtol=1e-4, atol=1e-5)


def test_fk_callback_raises_the_mean_reward(flux) -> None:
    n, steps, tr = 8, 3, Glass(rho=0.4, inner_steps=2)
    fk, _ = _fk_call(flux, tr, steps, 7, n, reward=MEAN, method="fk", lambda_=50.0)
    g = _wrap(flux, tr, 7)
    plain = flux(PROMPTS, num_images_per_prompt=n, num_inference_steps=steps, generator=g, **CALL)
    r_plain = MEAN(flux.scheduler.layout.to_model(plain.images))
    r_fk = fk.rewards.flatten()
    # mean over 2n particles each; the gap must exceed 3 standard errors of the difference
    se = float(torch.sqrt(r_plain.var() / r_plain.numel() + r_fk.var() / r_fk.numel()))
    assert float(r_fk.mean() - r_plain.mean()) > 3 * se


def test_best_of_n_callback_equals_steer(flux) -> None:
    tr, n = Glass(rho=0.4, inner_steps=2), 3
    got, _ = _fk_call(flux, tr, 2, 9, n, reward=MEAN, method="best_of_n")
    ref = _steer(flux, tr, 2, 9, prompt=PROMPTS, reward=MEAN, method="best_of_n", num_particles=n)
    _close(got.samples.reshape(ref.samples.shape), ref.samples, 1e-4)
    assert torch.equal(got.best_index, ref.best_index)
    assert got.ancestors is None and got.best_sample.shape == (2, 4, 8, 8)


def test_image_reward_decodes_through_the_flux_adapter(flux) -> None:
    bright = image_reward(lambda im: im.mean(dim=(1, 2, 3)))
    tr, n = Glass(rho=0.4, inner_steps=2), 2
    got, _ = _fk_call(flux, tr, 2, 11, n, reward=bright, method="fk", lambda_=20.0)
    ref = _steer(flux, tr, 2, 11, prompt=PROMPTS, reward=bright, method="fk", lambda_=20.0,
                 num_particles=n)  # fmt: skip
    _close(got.samples.reshape(ref.samples.shape), ref.samples, 1e-4)
    torch.testing.assert_close(got.rewards, ref.rewards, rtol=1e-4, atol=1e-5)


def test_a_callback_that_only_permutes_latents_is_caught(flux) -> None:
    g = _wrap(flux, Glass(rho=0.4, inner_steps=2), 0)

    def permute(pipe, i, t, kw):
        return {"latents": kw["latents"].flip(0)}

    with pytest.raises(InvalidInputError, match="resample"):
        flux(PROMPTS[0], num_images_per_prompt=2, num_inference_steps=2, generator=g,
             callback_on_step_end=permute, **CALL)  # fmt: skip


def test_vp_schedulers_and_callbacks_without_the_scheduler_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="flow-matching"):
        TransitionScheduler.wrap(tp.sd_pipeline("epsilon").scheduler, transition=Glass())
    with pytest.raises(InvalidInputError, match="TransitionScheduler"):
        steering_callback(tp.flux_pipeline(True), reward=MEAN, num_particles=2)


def test_bad_callback_arguments_fail_early(flux) -> None:
    _wrap(flux, Glass(), 0)
    with pytest.raises(InvalidInputError, match="method"):
        steering_callback(flux, reward=MEAN, num_particles=2, method="guidance")
    with pytest.raises(InvalidInputError, match="lookahead"):
        steering_callback(flux, reward=MEAN, num_particles=2, potential="lookahead")
    with pytest.raises(InvalidInputError, match="resampling"):
        steering_callback(flux, reward=MEAN, num_particles=2, resampling="nope")
    with pytest.raises(InvalidInputError, match="num_particles"):
        steering_callback(flux, reward=MEAN, num_particles=0)


def test_img2img_starts_only_on_a_transition_boundary(flux) -> None:
    from diffusers import FluxImg2ImgPipeline

    pipe = FluxImg2ImgPipeline(**flux.components)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, tp.HEIGHT, tp.WIDTH)
    kw = {**CALL, "image": image, "num_inference_steps": 4}
    g = _wrap(pipe, Glass(rho=0.4, inner_steps=2), 0)
    # 8 evaluations; strength 0.5 starts at evaluation 4 = transition 3 of 4
    out = pipe(PROMPTS[0], strength=0.5, generator=g, **kw).images
    assert torch.isfinite(out).all()
    assert pipe.scheduler.run_grid.tolist() == pipe.scheduler.time_grid[2:].tolist()
    with pytest.raises(UnsupportedModelError, match="boundary"):
        pipe(PROMPTS[0], strength=0.375, generator=g, **kw)  # evaluation 5: inside one


def test_inpainting_blend_is_refused(flux) -> None:
    from diffusers import FluxInpaintPipeline

    pipe = FluxInpaintPipeline(**flux.components)
    pipe.set_progress_bar_config(disable=True)
    g = _wrap(pipe, Glass(rho=0.4, inner_steps=2), 0)
    image = torch.rand(1, 3, tp.HEIGHT, tp.WIDTH)
    with pytest.raises(UnsupportedModelError, match="inpainting"):
        pipe(PROMPTS[0], image=image, mask_image=torch.ones(1, 1, tp.HEIGHT, tp.WIDTH),
             strength=1.0, num_inference_steps=2, generator=g, **CALL)  # fmt: skip


def test_config_round_trip(tmp_path, flux) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    tr = Glass(rho=0.25, inner_steps=3, solver="heun", sigma0=0.5)
    sched = TransitionScheduler.wrap(flux.scheduler, transition=tr)
    assert sched.config["base_image_seq_len"] == 4  # the pipeline reads the base's options
    sched.save_pretrained(tmp_path)
    back = TransitionScheduler.from_pretrained(tmp_path)
    assert repr(back.transition) == repr(tr)
    assert type(back.base) is FlowMatchEulerDiscreteScheduler
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(back.base.config) == public(sched.base.config)
    for s in (sched, back):
        s.set_timesteps(sigmas=np.linspace(1.0, 1 / 3, 3), mu=0.7)
    torch.testing.assert_close(back.timesteps, sched.timesteps)
    # a plain flow config gives the default transition; the base class is read back too
    plain = TransitionScheduler.from_config(flux.scheduler.config)
    assert isinstance(plain.transition, Glass) and plain.base.config.shift == 3.0
    assert FlowMatchEulerDiscreteScheduler.from_config(sched.config).config.shift == 3.0
    assert TransitionScheduler.wrap(sched).base is sched.base  # no wrapper in a wrapper


def test_steer_unwraps_a_wrapped_scheduler(flux) -> None:
    tr = Glass(rho=0.4, inner_steps=2)
    plain = _steer(flux, tr, 3, 0, method="sample")
    _wrap(flux, tr, 0)
    wrapped = steer(
        flux,
        PROMPTS[0],
        transition=tr,
        num_transitions=3,
        generator=_gen(0),
        output_type="latent",
        height=tp.HEIGHT,
        width=tp.WIDTH,
        encode_kwargs={"max_sequence_length": 8},
        progress=False,
        method="sample",
        num_particles=1,
    )
    np.testing.assert_array_equal(wrapped.time_grid, plain.time_grid)
    assert torch.equal(wrapped.samples, plain.samples)


def test_pc_flow_scheduler_equals_steer_ode_pc(flux) -> None:
    steps = 4
    g = _gen(0)
    flux.scheduler = PCFlowScheduler.from_config(flux.scheduler.config, generator=g)
    sched = flux.scheduler
    out = flux(PROMPTS[0], num_inference_steps=steps, generator=g, **CALL).images
    assert repr(sched.transition) == repr(ODE(solver="pc", substeps=steps))
    assert len(sched.timesteps) == steps and sched.time_grid.tolist() == [0.0, 1.0]
    res = _steer(flux, sched.transition, 1, 0, method="sample")  # steer grid: [0, 1]
    assert res.nfe == steps
    _close(out, pack_latents(res.samples), 1e-4)
    # a deterministic solver of the ODE the pipeline's Euler solves: close to Euler at 50 steps
    euler = flux(PROMPTS[0], num_inference_steps=50, generator=_gen(0), **CALL).images
    pc_err = float((out - euler).abs().max())
    euler4 = flux(PROMPTS[0], num_inference_steps=steps, generator=_gen(0), **CALL).images
    assert pc_err < float((euler4 - euler).abs().max())
    back = PCFlowScheduler.from_config(sched.config)
    assert type(back) is PCFlowScheduler and back.transition.solver == "pc"


# -- other families: the same scheduler inside their own pipelines ------------------------------

FAMILIES = {  # family -> the call's particles-per-prompt argument
    "qwenimage": "num_images_per_prompt",
    "wan": "num_videos_per_prompt",
    "flux2_klein": "num_images_per_prompt",
}


@pytest.fixture(params=list(FAMILIES))
def family(request):
    tf = pytest.importorskip("tiny_families")
    pipe = tf.BUILDERS[request.param]()
    base = pipe.scheduler
    call = {**tf.SMALL_CALL[request.param], "output_type": "latent"}
    yield pipe, call, FAMILIES[request.param]
    pipe.scheduler = base


def test_other_families_rho1_k1_equal_their_own_euler(family) -> None:
    pipe, call, _ = family
    ref = pipe(prompt=PROMPTS[0], num_inference_steps=3, generator=_gen(0), **call)[0]
    g = _gen(0)
    pipe.scheduler = TransitionScheduler.wrap(
        pipe.scheduler, transition=Glass(rho=1.0, inner_steps=1), generator=g
    )
    out = pipe(prompt=PROMPTS[0], num_inference_steps=3, generator=g, **call)[0]
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-5 * max(1.0, float(ref.abs().max()))


def test_other_families_fk_raises_a_latent_reward(family) -> None:
    pipe, call, per_prompt = family
    n, steps, tr = 8, 3, Glass(rho=0.4, inner_steps=2)
    base = pipe.scheduler

    def run(cb):
        g = _gen(3)
        pipe.scheduler = TransitionScheduler.wrap(base, transition=tr, generator=g)
        extra: dict = {}
        if cb is not None:
            cb = steering_callback(pipe, reward=MEAN, num_particles=n, lambda_=50.0)
            extra = {"callback_on_step_end": cb, "callback_on_step_end_tensor_inputs": ["latents"]}
        out = pipe(prompt=PROMPTS, num_inference_steps=steps, generator=g, **{per_prompt: n},
                   **call, **extra)[0]  # fmt: skip
        return out, extra.get("callback_on_step_end")

    plain, _ = run(None)
    _, cb = run(True)
    r_plain, r_fk = MEAN(plain), cb.result.rewards.flatten()
    assert cb.result.ancestors.shape == (steps, 2, n)
    se = float(torch.sqrt(r_plain.var() / r_plain.numel() + r_fk.var() / r_fk.numel()))
    assert float(r_fk.mean() - r_plain.mean()) > 3 * se


@pytest.mark.slow
def test_example_runs_and_matches_steer() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "scheduler_route.py"
    spec = importlib.util.spec_from_file_location("scheduler_route", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--particles", "2", "--steps", "2"])
    assert out["max |fk callback - steer fk| samples"] < 1e-4
    assert out["nfe per particle"] == 4
    a, b = out["log-evidence callback / steer"]
    assert abs(a - b) < 1e-4 * max(1.0, abs(b))
