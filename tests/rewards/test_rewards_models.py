"""Model-based reward adapters: tiny random-weight models of each supported architecture saved to
a temp dir and loaded back (no downloads), batched, differentiable; the VAE decode-once wrapper;
bad paths and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import tiny_pipelines as tp
from glass_core.errors import InvalidInputError
from glass_core.rewards.loading import (
    DecodedReward,
    clip_preprocess,
    image_reward,
    load_reward,
)

PROMPTS = ["a photo of a cat", "a red house"]


def _images(m: int = 4, seed: int = 0, size: int = 20) -> torch.Tensor:
    return torch.rand(m, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = {
        "vocab_size": tp.VOCAB_SIZE,
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": tp.MAX_LEN,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 16,
        "patch_size": 8,
    }
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    d = tmp_path_factory.mktemp("clip")
    model.save_pretrained(d)
    tp.make_tokenizer().save_pretrained(d)
    (d / "preprocessor_config.json").write_text(
        json.dumps(
            {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "crop_size": 16}
        )
    )
    return d


def test_clip_score_loads_and_matches_manual(clip_dir: Path) -> None:
    from transformers import CLIPModel

    r = load_reward("clip", clip_dir)
    images = _images()
    rows = [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    s = r(images, PROMPTS)  # group-major: 2 prompts -> 2 rows each
    assert s.shape == (4,) and s.dtype == torch.float32
    ref_model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    tok = tp.make_tokenizer()(
        rows, padding="max_length", max_length=tp.MAX_LEN, return_tensors="pt"
    )
    pix = clip_preprocess(images, 16, (0.5,) * 3, (0.25,) * 3)
    with torch.no_grad():
        ti = ref_model.get_text_features(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        )
        im = ref_model.get_image_features(pixel_values=pix)
    ti = ti if isinstance(ti, torch.Tensor) else ti.pooler_output
    im = im if isinstance(im, torch.Tensor) else im.pooler_output
    expected = 100 * F.cosine_similarity(im, ti, dim=-1)
    torch.testing.assert_close(s, expected, rtol=1e-4, atol=1e-4)
    # per-row prompts give the same as group prompts
    torch.testing.assert_close(r(images, rows), s)
    # differentiable in the images
    x = images.clone().requires_grad_(True)
    r(x, PROMPTS).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_pickscore_uses_logit_scale(clip_dir: Path) -> None:
    clip = load_reward("clip", clip_dir)
    pick = load_reward("pickscore", clip_dir)
    images = _images(2, seed=1)
    scale = float(pick.model.logit_scale.exp())
    torch.testing.assert_close(
        pick(images, PROMPTS[:1]), clip(images, PROMPTS[:1]) * scale / 100, rtol=1e-5, atol=1e-5
    )


def test_clip_preprocess_matches_transformers_processor() -> None:
    from transformers import CLIPImageProcessor

    images = _images(2, seed=2, size=24)
    proc = CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, do_rescale=False
    )
    ref = proc(images=list(images), return_tensors="pt")["pixel_values"]
    ours = clip_preprocess(images, 16)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 0.05  # torch vs PIL bicubic resampling


@pytest.mark.parametrize("fmt", ["mlp-pth", "linear-safetensors"])
def test_aesthetic_head(clip_dir: Path, tmp_path: Path, fmt: str) -> None:
    from glass_core.rewards.aesthetic import AestheticMLP

    torch.manual_seed(1)
    if fmt == "mlp-pth":
        head: torch.nn.Module = AestheticMLP(8).eval()
        path = tmp_path / "head.pth"
        torch.save(head.state_dict(), path)
    else:
        from safetensors.torch import save_file

        head = torch.nn.Linear(8, 1).eval()
        path = tmp_path / "head.safetensors"
        save_file(head.state_dict(), str(path))
    r = load_reward("aesthetic", path, clip_path=clip_dir)
    images = _images(3, seed=3)
    s = r(images)  # no prompts needed
    assert s.shape == (3,)
    with torch.no_grad():
        expected = head(r.clip.image_embeddings(images)).reshape(-1)
    torch.testing.assert_close(s, expected)
    x = images.clone().requires_grad_(True)
    r(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_hpsv2_open_clip_checkpoint(tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 16,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    cfg_path = tmp_path / "tiny-hps-test.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(cfg_path))
    torch.manual_seed(2)
    model = open_clip.create_model("tiny-hps-test", pretrained=None).eval()
    ckpt = tmp_path / "HPS_tiny.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, ckpt)
    r = load_reward("hps", ckpt, model_name="tiny-hps-test", model_config=cfg_path)
    images = _images(4, seed=4, size=16)
    s = r(images, PROMPTS)
    rows = [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    tok = open_clip.get_tokenizer("tiny-hps-test")
    norm = clip_preprocess(images, 16)
    with torch.no_grad():
        img_f, txt_f, _ = model(norm, tok(rows))
    torch.testing.assert_close(s, (img_f * txt_f).sum(-1), rtol=1e-4, atol=1e-5)
    x = images.clone().requires_grad_(True)
    r(x, PROMPTS).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_image_reward_package_gate(tmp_path: Path) -> None:
    fake = tmp_path / "ImageReward.pt"
    fake.write_bytes(b"not a checkpoint")
    try:
        import ImageReward  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="image-reward"):
            load_reward("image_reward", fake)
    else:  # pragma: no cover - the package is not installed in CI
        pytest.skip("ImageReward installed; the gate is not exercised")


def test_bad_paths_and_kinds(tmp_path: Path, clip_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_reward("clip", "openai/clip-vit-large-patch14")
    with pytest.raises(InvalidInputError, match="kind must be one of"):
        load_reward("dreamsim", tmp_path)
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(2)}, bad)
    with pytest.raises(InvalidInputError, match="unrecognised aesthetic head"):
        load_reward("aesthetic", bad, clip_path=clip_dir)
    with pytest.raises(InvalidInputError, match="must be a directory"):
        load_reward("clip", bad)
    r = load_reward("clip", clip_dir)
    with pytest.raises(InvalidInputError, match="prompts are required"):
        r(_images(2))
    with pytest.raises(InvalidInputError, match=r"\[M, 3, H, W\]"):
        r(torch.zeros(2, 4, 8, 8), PROMPTS)


def test_decoded_reward_decodes_once_and_reuses() -> None:
    calls = {"n": 0}

    def decode(z: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return torch.sigmoid(z[:, :3])

    seen: list[list[str]] = []

    def fn(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        seen.append(list(prompts))
        return images.mean(dim=(1, 2, 3))

    r = DecodedReward(image_reward(fn), decode, PROMPTS)
    z = torch.randn(4, 4, 2, 2, generator=torch.Generator().manual_seed(5))
    v = r(z)
    assert v.shape == (4,) and calls["n"] == 1
    assert seen[-1] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    imgs = r.images_for(z.clone())  # same values: reused, not decoded again
    assert calls["n"] == 1 and torch.equal(imgs, torch.sigmoid(z[:, :3]))
    r.images_for(z + 1)
    assert calls["n"] == 2
    zg = z.clone().requires_grad_(True)  # with gradients: decoded differentiably
    with torch.enable_grad():
        r(zg).sum().backward()
    assert zg.grad is not None and zg.grad.abs().sum() > 0 and calls["n"] == 3
