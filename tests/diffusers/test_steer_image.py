"""steer(image=, strength=): SDEdit-style editing on every tiny pipeline family and the embedded
default model (encode with the VAE, noise to t0 = 1 - strength, steer from there)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import tiny_pipelines as tp
from glass_core.align import Lookahead
from glass_core.errors import InvalidInputError
from glass_core.rewards.loading import image_reward, latent_reward
from glass_core.steering import steer
from glass_core.transitions import ODE, Glass

BRIGHT = image_reward(lambda im: im.mean(dim=(1, 2, 3)))
INK = latent_reward(lambda z: z.mean(dim=(1, 2, 3)))  # the embedded model's 1-channel samples
PROMPTS = ["a photo of a cat", "a red house"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _embedded():
    from glass_core.digits.assets import load_pipeline

    return load_pipeline()


# (pipeline factory, prompt, keyword arguments, image shape)
FAMILIES = {
    "flux": (
        lambda: tp.flux_pipeline(True),
        PROMPTS,
        {"height": tp.HEIGHT, "width": tp.WIDTH, "encode_kwargs": {"max_sequence_length": 8}},
        (3, tp.HEIGHT, tp.WIDTH),
    ),
    "sd3": (tp.sd3_pipeline, PROMPTS, {"height": tp.HEIGHT, "width": tp.WIDTH}, None),
    "sd": (tp.sd_pipeline, PROMPTS, {"height": tp.HEIGHT, "width": tp.WIDTH}, None),
    "sdxl": (tp.sdxl_pipeline, PROMPTS, {"height": tp.HEIGHT, "width": tp.WIDTH}, None),
    "embedded": (_embedded, None, {}, (1, 8, 8)),
}


def _setup(family: str):
    make, prompt, kw, img_shape = FAMILIES[family]
    img_shape = img_shape or (3, tp.HEIGHT, tp.WIDTH)
    groups = 2 if prompt is not None else 1
    image = torch.rand((groups, *img_shape), generator=_gen(5))
    return make(), prompt, {**kw, "progress": False}, image


def _reward(prompt):
    return BRIGHT if prompt is not None else INK


def _encoded(pipe, prompt, kw, image):
    from glass_core.models.diffusers import from_pipeline
    from glass_core.models.diffusers.unconditional import (
        UnconditionalPipelineModel,
        is_unconditional,
    )

    if is_unconditional(pipe):
        return UnconditionalPipelineModel(pipe, 1, None).encode(image)
    kw = {k: v for k, v in kw.items() if k != "progress"}
    return from_pipeline(pipe, prompt, **kw).encode(image)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_strength_zero_returns_the_image_latents(family: str) -> None:
    pipe, prompt, kw, image = _setup(family)
    n = 2
    res = steer(
        pipe,
        prompt,
        reward=_reward(prompt),
        image=image,
        strength=0.0,
        num_particles=n,
        generator=_gen(0),
        output_type="pt",
        **kw,
    )
    z = _encoded(pipe, prompt, kw, image)
    expected = z.repeat_interleave(n, dim=0)
    assert torch.equal(res.samples, expected)
    assert res.nfe == 0 and res.rewards.shape == (z.shape[0], n)
    # the rewards are those of the returned images (z / 2 + 1/2 for the embedded model)
    torch.testing.assert_close(
        res.rewards.reshape(-1),
        res.images.mean(dim=(1, 2, 3)) * 2 - 1
        if prompt is None
        else res.images.mean(dim=(1, 2, 3)),
    )


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", ["fk", "best_of_n", "guidance", "sample"])
def test_edit_runs_from_t0(family: str, method: str) -> None:
    pipe, prompt, kw, image = _setup(family)
    n, inner = 2, 2
    res = steer(
        pipe,
        prompt,
        reward=_reward(prompt),
        method=method,
        image=image,
        strength=0.5,
        transition=Glass(inner_steps=inner),
        num_particles=n,
        num_transitions=4,
        generator=_gen(1),
        output_type="pt",
        **kw,
    )
    grid = res.time_grid
    assert grid[0] == pytest.approx(0.5) and grid[-1] == 1.0 and (grid[1:] > 0.5).all()
    assert res.nfe == (len(grid) - 1) * inner
    groups = image.shape[0]
    assert res.samples.shape[0] == groups * n and torch.isfinite(res.samples).all()
    assert res.rewards.shape == (groups, n)


# strength 1 starts from pure noise drawn first from the generator, exactly as a run without an
# image does, so the two runs are identical: the image is ignored, and the noise is the same draw.
def test_strength_one_equals_no_image() -> None:
    pipe, prompt, kw, image = _setup("sd")
    args = dict(
        reward=BRIGHT,
        method="sample",
        transition=Glass(inner_steps=2),
        num_particles=2,
        num_transitions=3,
        output_type="latent",
        **kw,
    )
    a = steer(pipe, prompt, image=image, strength=1.0, generator=_gen(3), **args)
    b = steer(pipe, prompt, generator=_gen(3), **args)
    torch.testing.assert_close(a.samples, b.samples)


# A deterministic ODE from a small strength stays near the image (SDEdit's faithfulness), and
# moves further from it as the strength grows.
def test_small_strength_stays_close_to_the_image() -> None:
    pipe, prompt, kw, image = _setup("embedded")
    z = _encoded(pipe, prompt, kw, image)
    dist = []
    for s in (0.05, 0.9):
        res = steer(
            pipe,
            None,
            method="sample",
            image=image,
            strength=s,
            transition=ODE(substeps=4),
            num_particles=4,
            num_transitions=5,
            generator=_gen(4),
            output_type="latent",
            **kw,
        )
        dist.append(float((res.samples - z).flatten(1).norm(dim=1).mean()))
    assert dist[0] < 0.25 * dist[1], dist


def test_bad_image_arguments() -> None:
    pipe, prompt, kw, image = _setup("sd")
    with pytest.raises(InvalidInputError, match="strength"):
        steer(pipe, prompt, reward=BRIGHT, strength=0.5, **kw)
    with pytest.raises(InvalidInputError, match="strength"):
        steer(pipe, prompt, reward=BRIGHT, image=image, strength=1.5, **kw)
    with pytest.raises(InvalidInputError, match="image"):
        steer(pipe, prompt, reward=BRIGHT, image=torch.rand(3, 3, 16, 16), strength=0.5, **kw)


def test_lookahead_fk_through_steer_counts_its_nfe() -> None:
    pipe, prompt, kw, _ = _setup("sd")
    res = steer(
        pipe,
        prompt,
        reward=BRIGHT,
        method="fk",
        potential=Lookahead(3, Glass(inner_steps=2)),
        transition=Glass(inner_steps=2),
        num_particles=2,
        num_transitions=3,
        generator=_gen(0),
        output_type="pt",
        **kw,
    )
    # 3 transitions x 2, plus at each of the 2 intermediate steps J = 3 samples x 1 further call
    assert res.nfe == 3 * 2 + 2 * 3 * 1
    torch.testing.assert_close(res.rewards.reshape(-1), res.images.mean(dim=(1, 2, 3)))
