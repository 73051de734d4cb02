"""glass_core.steer end to end on tiny random-weight pipelines: every method, shapes, dtypes, seeds,
NFE/CFG accounting, decode-once, groups, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import tiny_pipelines as tp
from glass_core.errors import InvalidInputError, RewardError
from glass_core.rewards.loading import image_reward, latent_reward
from glass_core.steering import steer
from glass_core.transitions import ODE, SDE, Glass

PROMPTS = ["a photo of a cat", "a red house"]
SEQ = {"max_sequence_length": 8}
BRIGHT = image_reward(lambda im: im.mean(dim=(1, 2, 3)))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flux_kwargs() -> dict:
    return {"height": tp.HEIGHT, "width": tp.WIDTH, "encode_kwargs": SEQ, "progress": False}


def _sd_kwargs() -> dict:
    return {"height": tp.HEIGHT, "width": tp.WIDTH, "progress": False}


@pytest.mark.parametrize("method", ["fk", "best_of_n", "guidance", "sample"])
def test_every_method_on_flux(method: str) -> None:
    pipe = tp.flux_pipeline(True)
    n, k, inner = 3, 2, 2
    res = steer(
        pipe,
        PROMPTS,
        reward=BRIGHT,
        method=method,
        transition=Glass(inner_steps=inner),
        num_particles=n,
        num_transitions=k,
        generator=_gen(0),
        output_type="pt",
        **_flux_kwargs(),
    )
    assert res.images.shape == (2 * n, 3, tp.HEIGHT, tp.WIDTH)
    assert res.images.dtype == torch.float32
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    assert res.samples.shape == (2 * n, 4, 8, 8) and res.samples.dtype == torch.float32
    assert res.rewards.shape == (2, n) and torch.isfinite(res.rewards).all()
    assert res.log_weights.shape == (2, n)
    torch.testing.assert_close(
        torch.logsumexp(res.log_weights, 1), torch.zeros(2, dtype=res.log_weights.dtype)
    )
    # NFE: K transitions x M inner steps; FK's intermediate denoise is reused by the next GLASS step
    assert res.nfe == k * inner
    assert res.forward_passes == res.nfe  # FLUX-dev: distilled guidance, one pass
    assert res.total_forward_passes == res.nfe * 2 * n
    assert res.time_grid[0] == 0.0 and res.time_grid[-1] == 1.0 and len(res.time_grid) == k + 1
    assert res.wall_time >= res.model_time > 0.0
    assert res.bookkeeping_time >= 0.0
    # the rewards are the rewards of the returned images (decode reused, not recomputed)
    torch.testing.assert_close(res.rewards.reshape(-1), res.images.mean(dim=(1, 2, 3)))
    if method == "fk":
        assert res.ancestors.shape == (k, 2, n)
        assert res.log_evidence.shape == (2,)
        assert res.num_decodes == k  # one decode per potential step; output reuses the last
    elif method in ("best_of_n", "sample"):
        assert res.num_decodes == 1
        assert res.ancestors is None


def test_seed_reproducible_and_seed_sensitive() -> None:
    pipe = tp.sd_pipeline("epsilon")
    kw = {
        "reward": BRIGHT,
        "method": "fk",
        "transition": Glass(inner_steps=1),
        "num_particles": 2,
        "num_transitions": 3,
        "output_type": "latent",
        **_sd_kwargs(),
    }
    a = steer(pipe, PROMPTS[0], generator=_gen(1), **kw)
    b = steer(pipe, PROMPTS[0], generator=_gen(1), **kw)
    c = steer(pipe, PROMPTS[0], generator=_gen(2), **kw)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.images, a.samples)
    np.testing.assert_array_equal(a.ancestors, b.ancestors)
    assert not torch.allclose(a.samples, c.samples)


def test_cfg_counts_two_passes_per_nfe_sd3() -> None:
    res = steer(
        tp.sd3_pipeline(),
        PROMPTS,
        reward=BRIGHT,
        method="best_of_n",
        transition=ODE(),
        num_particles=2,
        num_transitions=3,
        generator=_gen(3),
        output_type="latent",
        **_flux_kwargs(),
    )
    assert res.nfe == 3 and res.forward_passes == 6
    assert res.total_forward_passes == 6 * 4
    assert res.num_decodes == 1  # the final reward's decode (no output decode for "latent")


def test_groups_equal_separate_runs_with_generator_list() -> None:
    pipe = tp.sdxl_pipeline()
    kw = {
        "reward": BRIGHT,
        "method": "fk",
        "transition": SDE(),
        "num_particles": 3,
        "num_transitions": 3,
        "output_type": "latent",
        **_sd_kwargs(),
    }
    both = steer(pipe, PROMPTS, generator=[_gen(10), _gen(11)], **kw)
    one = steer(pipe, PROMPTS[0], generator=[_gen(10)], **kw)
    two = steer(pipe, PROMPTS[1], generator=[_gen(11)], **kw)
    torch.testing.assert_close(
        both.samples, torch.cat([one.samples, two.samples]), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(both.ancestors[:, 1], two.ancestors[:, 0])


def test_latent_reward_and_callback_and_pil() -> None:
    pipe = tp.flux_pipeline(False)  # schnell-like
    seen: list[tuple[int, float, float]] = []
    res = steer(
        pipe,
        PROMPTS[0],
        reward=latent_reward(lambda z: -z.pow(2).mean(dim=(1, 2, 3))),
        method="best_of_n",
        transition=ODE(),
        num_particles=2,
        num_transitions=2,
        generator=_gen(4),
        callback=lambda i, t, tn, x: seen.append((i, t, tn)),
        **_flux_kwargs(),
    )
    assert [s[0] for s in seen] == [0, 1] and seen[0][1] == 0.0 and seen[-1][2] == 1.0
    assert len(res.images) == 2 and res.images[0].size == (tp.WIDTH, tp.HEIGHT)
    torch.testing.assert_close(res.rewards.reshape(-1), -res.samples.pow(2).mean(dim=(1, 2, 3)))
    assert len(res.best()) == 1
    assert res.best()[0] is res.images[int(res.best_index[0])]
    assert res.total_nfe == res.nfe * 2 and res.ancestors is None


def test_guidance_moves_toward_a_latent_reward() -> None:
    pipe = tp.sd_pipeline("v_prediction")
    target = 1.5
    r = latent_reward(lambda z: -(z - target).pow(2).sum(dim=(1, 2, 3)))
    kw = {
        "transition": ODE(),
        "num_particles": 2,
        "num_transitions": 4,
        "output_type": "latent",
        "reward_window": (0.0, 1.0),
        **_sd_kwargs(),
    }
    plain = steer(pipe, PROMPTS[0], method="sample", generator=_gen(5), **kw)
    zero = steer(
        pipe, PROMPTS[0], reward=r, method="guidance", reward_scale=0.0, generator=_gen(5), **kw
    )
    pushed = steer(
        pipe, PROMPTS[0], reward=r, method="guidance", reward_scale=0.2, generator=_gen(5), **kw
    )
    torch.testing.assert_close(zero.samples, plain.samples)
    d_plain = (plain.samples - target).pow(2).mean()
    d_pushed = (pushed.samples - target).pow(2).mean()
    assert d_pushed < 0.75 * d_plain  # measured ~0.62 on this tiny random model


def test_bf16_pipeline_keeps_float32_particles() -> None:
    import copy

    pipe16 = copy.deepcopy(tp.flux_pipeline(True)).to(torch.bfloat16)
    kw = {
        "reward": BRIGHT,
        "method": "guidance",
        "transition": Glass(inner_steps=2),
        "num_particles": 2,
        "num_transitions": 2,
        "output_type": "pt",
        **_flux_kwargs(),
    }
    low = steer(pipe16, PROMPTS[0], generator=_gen(12), **kw)
    ref = steer(tp.flux_pipeline(True), PROMPTS[0], generator=_gen(12), **kw)
    assert low.samples.dtype == torch.float32 and low.images.dtype == torch.float32
    assert torch.isfinite(low.samples).all() and torch.isfinite(low.rewards).all()
    # bf16 network, float32 particles: close to the float32 run (measured max diff ~0.09 / 3.0)
    assert (low.samples - ref.samples).abs().max() < 0.3


def test_fk_with_guidance_inside() -> None:
    pipe = tp.sd_pipeline("epsilon")
    target = 1.5
    r = latent_reward(lambda z: -(z - target).pow(2).sum(dim=(1, 2, 3)))
    kw = {
        "reward": r,
        "method": "fk",
        "transition": Glass(rho=1.0, inner_steps=1),
        "num_particles": 2,
        "num_transitions": 3,
        "output_type": "latent",
        "reward_window": (0.0, 1.0),
        "reward_scale": 0.2,
        **_sd_kwargs(),
    }
    plain = steer(pipe, PROMPTS[0], generator=_gen(9), **kw)
    both = steer(pipe, PROMPTS[0], generator=_gen(9), guide=True, **kw)
    assert both.nfe == plain.nfe == 3
    assert both.rewards.mean() > plain.rewards.mean()
    with pytest.raises(InvalidInputError, match="guide=True"):
        steer(pipe, PROMPTS[0], method="sample", guide=True, **_sd_kwargs())


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_arguments() -> None:
    pipe = tp.sd_pipeline("epsilon")
    kw = _sd_kwargs()
    with pytest.raises(InvalidInputError, match="method"):
        steer(pipe, "a cat", reward=BRIGHT, method="beam", **kw)
    with pytest.raises(InvalidInputError, match="output_type"):
        steer(pipe, "a cat", reward=BRIGHT, output_type="jpg", **kw)
    with pytest.raises(InvalidInputError, match="reward is required"):
        steer(pipe, "a cat", method="fk", **kw)
    with pytest.raises(InvalidInputError, match="num_particles"):
        steer(pipe, "a cat", reward=BRIGHT, num_particles=0, **kw)
    with pytest.raises(InvalidInputError, match="either time_grid or num_transitions"):
        steer(pipe, "a cat", reward=BRIGHT, time_grid=[0, 1], num_transitions=2, **kw)
    with pytest.raises(InvalidInputError, match=r"one torch\.Generator per prompt"):
        steer(pipe, PROMPTS, reward=BRIGHT, generator=[_gen(0)], **kw)


class _Reached(Exception):
    """Raised by the spy when the compiled GLASS step is reached."""


@pytest.mark.parametrize("given", [None, Glass(rho=0.5, inner_steps=3, solver="euler")])
def test_compile_reaches_the_glass_transition(monkeypatch, given) -> None:
    seen: list[Glass] = []

    def spy(self, *args, **kwargs):
        seen.append(self)
        raise _Reached

    monkeypatch.setattr(Glass, "_compiled_step", spy)
    pipe = tp.sd_pipeline("epsilon")
    with pytest.raises(_Reached):
        steer(pipe, "a cat", method="sample", transition=given, num_particles=1,
              num_transitions=2, generator=_gen(0), compile=True, **_sd_kwargs())  # fmt: skip
    assert len(seen) == 1 and seen[0].compile is True
    if given is not None:  # same parameters; the caller's object untouched
        assert (seen[0].rho, seen[0].inner_steps, seen[0].solver) == (0.5, 3, "euler")
        assert seen[0] is not given and given.compile is False
    # compile=False turns it off again; None keeps the transition's own setting
    kw = {"method": "sample", "num_particles": 1, "num_transitions": 2, **_sd_kwargs()}
    for compile_arg, transition in [(False, Glass(compile=True)), (None, Glass())]:
        steer(pipe, "a cat", transition=transition, compile=compile_arg, generator=_gen(0), **kw)
    assert len(seen) == 1


def test_compile_rejected_for_non_glass_transitions() -> None:
    pipe = tp.sd_pipeline("epsilon")
    kw = {"method": "sample", "num_particles": 1, "num_transitions": 2, **_sd_kwargs()}
    with pytest.raises(InvalidInputError, match="compile=True applies to a Glass"):
        steer(pipe, "a cat", transition=ODE(), compile=True, **kw)
    with pytest.raises(InvalidInputError, match="compile must be"):
        steer(pipe, "a cat", compile="yes", **kw)
    steer(pipe, "a cat", transition=SDE(), compile=False, **kw)  # nothing to turn off


def test_prompt_embeds_with_reward_prompts() -> None:
    pipe = tp.sd_pipeline("epsilon")
    pe, npe = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    seen: list[list[str]] = []

    def fn(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        seen.append(list(prompts))
        return images.mean(dim=(1, 2, 3))

    kw = {
        "reward": image_reward(fn),
        "method": "best_of_n",
        "transition": ODE(),
        "num_particles": 2,
        "num_transitions": 2,
        "output_type": "latent",
        **_sd_kwargs(),
    }
    by_text = steer(pipe, PROMPTS, generator=_gen(8), **kw)
    by_embeds = steer(
        pipe,
        prompt_embeds=pe,
        negative_prompt_embeds=npe,
        reward_prompts=PROMPTS,
        generator=_gen(8),
        **kw,
    )
    torch.testing.assert_close(by_text.samples, by_embeds.samples)
    assert seen[-1] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    with pytest.raises(InvalidInputError, match="reward_prompts must be 2"):
        steer(pipe, prompt_embeds=pe, reward_prompts=["x"], generator=_gen(8), **kw)


@pytest.mark.parametrize("bad", ["shape", "nan"])
def test_bad_reward_outputs_raise(bad: str) -> None:
    pipe = tp.sd_pipeline("epsilon")

    def fn(images: torch.Tensor) -> torch.Tensor:
        m = images.mean(dim=(1, 2, 3))
        if bad == "shape":
            return m[:-1]
        m = m.clone()
        m[1] = float("nan")
        return m

    match = "shape" if bad == "shape" else r"NaN.*\[1"
    with pytest.raises(RewardError, match=match):
        steer(
            pipe,
            "a cat",
            reward=image_reward(fn),
            method="best_of_n",
            transition=Glass(inner_steps=1),
            num_particles=3,
            num_transitions=2,
            generator=_gen(0),
            output_type="latent",
            **_sd_kwargs(),
        )


# ---------------------------------------------------------------------------------------------
# unconditional pipelines (the embedded default model) and process_group


def _default_pipe_and_reward():
    from glass_core.digits.assets import load_default_reward, load_pipeline

    return load_pipeline(), load_default_reward(5)


def test_steer_on_the_embedded_default_model() -> None:
    """steer() takes the embedded DDPMPipeline (UNet2DModel + flow-matching scheduler) through
    models.diffusers.unconditional.from_unconditional_pipeline and gives what fk_steering gives
    on that adapter."""
    from glass_core.align import fk_steering
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline
    from glass_core.schedules import uniform_grid

    pipe, reward = _default_pipe_and_reward()
    n, k, inner = 4, 3, 2
    res = steer(
        pipe,
        reward=reward,
        method="fk",
        transition=Glass(inner_steps=inner),
        num_particles=n,
        num_transitions=k,
        generator=_gen(1),
        lambda_=10.0,
        progress=False,
    )
    assert res.samples.shape == (n, 1, 8, 8) and res.rewards.shape == (1, n)
    assert res.nfe == k * inner and res.forward_passes == res.nfe
    assert res.total_forward_passes == res.nfe * n
    assert res.prompts is None and res.ancestors.shape == (k, 1, n)
    np.testing.assert_array_equal(res.time_grid, uniform_grid(k))  # FlowMatch, shift 1
    assert len(res.images) == n and res.images[0].mode == "L" and res.images[0].size == (8, 8)
    assert bool((res.rewards <= 0).all())  # log-probabilities
    assert res.wall_time >= res.model_time > 0.0

    ref = fk_steering(
        from_unconditional_pipeline(pipe),
        reward,
        transition=Glass(inner_steps=inner),
        num_particles=n,
        time_grid=uniform_grid(k),
        shape=(1, 8, 8),
        lambda_=10.0,
        generator=_gen(1),
        progress=False,
    )
    torch.testing.assert_close(res.samples, ref.samples, rtol=0, atol=0)
    torch.testing.assert_close(res.rewards[0], ref.rewards, rtol=0, atol=0)
    # images are the DDPMPipeline post-processing of the samples
    pt = steer(pipe, reward=reward, method="sample", num_particles=2, num_transitions=2,
               generator=_gen(0), output_type="pt", progress=False)  # fmt: skip
    torch.testing.assert_close(pt.images, (pt.samples / 2 + 0.5).clamp(0, 1))


def test_steer_unconditional_rejects_conditioning() -> None:
    pipe, reward = _default_pipe_and_reward()
    with pytest.raises(InvalidInputError, match=r"^prompt: DDPMPipeline is an unconditional"):
        steer(pipe, "a cat", reward=reward, progress=False)
    with pytest.raises(InvalidInputError, match="guidance_scale, height"):
        steer(pipe, reward=reward, guidance_scale=3.0, height=8, progress=False)


@pytest.mark.parametrize("method", ["guidance", "sample"])
def test_steer_process_group_rejected_for_unsharded_methods(method: str) -> None:
    pipe, reward = _default_pipe_and_reward()
    with pytest.raises(
        InvalidInputError, match=rf"process_group: method='{method}' is not sharded"
    ):
        steer(pipe, reward=reward, method=method, process_group=object(), progress=False)


def test_steer_process_group_needs_gathered_samples() -> None:
    from glass_core.align.distributed import Sharding

    pipe, reward = _default_pipe_and_reward()
    with pytest.raises(InvalidInputError, match=r"process_group: .*gather=True"):
        steer(pipe, reward=reward, process_group=Sharding(gather=False), progress=False)


@pytest.mark.parametrize("method", ["fk", "best_of_n"])
def test_steer_process_group_one_rank_equals_no_group(method: str) -> None:
    """steer passes process_group to the sharded algorithms (a 1-rank gloo group in this process;
    2 ranks under torchrun: tests/cli/test_cli.py)."""
    import socket

    import torch.distributed as dist

    pipe, reward = _default_pipe_and_reward()
    kw = dict(reward=reward, method=method, transition=SDE(), num_particles=4, num_transitions=3,
              output_type="latent", progress=False)  # fmt: skip
    ref = steer(pipe, generator=_gen(2), **kw)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        got = steer(pipe, generator=_gen(2), process_group=dist.group.WORLD, **kw)
    finally:
        dist.destroy_process_group()
    assert type(got.raw).__name__.startswith("Sharded") and got.raw.world_size == 1
    torch.testing.assert_close(got.samples, ref.samples, rtol=0, atol=0)
    torch.testing.assert_close(got.rewards, ref.rewards, rtol=0, atol=0)
    torch.testing.assert_close(got.log_weights, ref.log_weights, rtol=0, atol=0)
    assert got.nfe == ref.nfe


def test_steer_bf16_unconditional_pipeline_keeps_float32_particles() -> None:
    pipe, reward = _default_pipe_and_reward()
    pipe.unet.to(torch.bfloat16)
    kw = dict(method="best_of_n", transition=SDE(), num_particles=2, num_transitions=2)
    res = steer(pipe, reward=reward, generator=_gen(0), output_type="latent", progress=False, **kw)
    assert res.samples.dtype == torch.float32 and torch.isfinite(res.samples).all()
    assert res.rewards.shape == (1, 2) and torch.isfinite(res.rewards).all()
