"""Steer tiny random-weight FLUX and Stable Diffusion pipelines, offline, from Python and from the
command line.

Each pipeline is built from configs (random weights, a word-level tokenizer made on the spot:
nothing is downloaded), every component is put in eval mode (freshly built transformers modules
start in training mode, where dropout makes two runs differ), and it is saved with
``save_pretrained`` the way a downloaded checkpoint sits on disk. Then it is steered toward a
"redness" reward twice with the same seed:

1. in Python, ``glass_core.steer(pipe, prompt, reward=image_reward(redness), ...)``;
2. on the saved folder, ``glass-core steer --pipeline DIR --reward python:THIS_FILE:redness ...``;

and the two runs give the same rewards. The images are noise (the weights are random): this
shows the plumbing, on a CPU in well under a minute. Real checkpoints work the same way once
their folders are on disk (README: "Steering a diffusers pipeline").

    python examples/steer_tiny_pipelines.py [--out DIR] [--particles N]

Needs the diffusers extra: pip install "glass-core[diffusers]" (or pip install -e ".[diffusers]").
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PROMPT = "a red house on a green hill"
WORDS = ["a", "an", "the", "of", "on", "in", "red", "green", "blue", "house", "hill", "tree"]
TOKENS = 16  # text context of both encoders (FLUX's T5 default would pad to 512)
SIZE = 32  # image height and width in pixels


def redness(images: torch.Tensor) -> torch.Tensor:
    """Reward on decoded images [M, 3, H, W] in [0, 1]: red minus the mean of green and blue."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------
# tiny components from configs


def tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=TOKENS,
    )


def clip_text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(WORDS) + 4,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TOKENS,
        projection_dim=32,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return CLIPTextModel(cfg)


def t5_text_encoder() -> Any:
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=len(WORDS) + 4,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=3,
    )
    return T5EncoderModel(cfg)


def vae(**kwargs: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=SIZE,
        **kwargs,
    )


def flux_pipeline() -> Any:
    """FLUX.1-dev-like: CLIP + T5 text encoders, a 1+1-block transformer with the distilled
    guidance input, dynamic shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=4,
        max_image_seq_len=256,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae(shift_factor=0.1, scaling_factor=0.7),
        text_encoder=clip_text_encoder(),
        tokenizer=tokenizer(),
        text_encoder_2=t5_text_encoder(),
        tokenizer_2=tokenizer(),
        transformer=transformer,
    )


def sd_pipeline() -> Any:
    """Stable Diffusion 1.x-like: CLIP text encoder, a 2-block UNet, DDIM, epsilon prediction."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae(scaling_factor=0.7),
        text_encoder=clip_text_encoder(),
        tokenizer=tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def eval_mode(pipe: Any) -> Any:
    """Every torch module of the pipeline in eval mode (no dropout: reproducible runs)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


# ---------------------------------------------------------------------------------------------
# steering the same pipeline from Python and from the command line

#: the settings both runs share: FK steering, 3 GLASS transitions x 2 inner steps = 6 NFE
STEER = {"method": "fk", "inner_steps": 2, "num_transitions": 3, "seed": 0, "lambda_": 10.0}
FAMILIES: dict[str, dict[str, Any]] = {
    # FLUX-dev's distilled guidance input; T5 context cut to the tokenizer's 16 tokens
    "flux": {"build": flux_pipeline, "guidance_scale": 3.5, "max_sequence_length": TOKENS},
    # classifier-free guidance (two network passes per evaluation)
    "sd": {"build": sd_pipeline, "guidance_scale": 5.0, "max_sequence_length": None},
}


def steer_in_python(pipe: Any, family: dict[str, Any], particles: int) -> Any:
    import glass_core
    from glass_core.rewards.loading import image_reward
    from glass_core.transitions import Glass

    encode = family["max_sequence_length"]
    return glass_core.steer(
        pipe,
        PROMPT,
        reward=image_reward(redness),
        method=STEER["method"],
        transition=Glass(inner_steps=STEER["inner_steps"]),
        num_particles=particles,
        num_transitions=STEER["num_transitions"],
        lambda_=STEER["lambda_"],
        guidance_scale=family["guidance_scale"],
        height=SIZE,
        width=SIZE,
        encode_kwargs=None if encode is None else {"max_sequence_length": encode},
        generator=torch.Generator().manual_seed(STEER["seed"]),
        progress=False,
    )


def steer_command(folder: Path, family: dict[str, Any], particles: int, out: Path) -> list[str]:
    """The `glass-core steer` command line for the saved pipeline (same settings)."""
    cmd = ["glass-core", "steer", "--pipeline", str(folder), "--prompt", PROMPT]
    cmd += ["--reward", f"python:{Path(__file__).resolve()}:redness"]
    cmd += ["--method", STEER["method"], "--transition", "glass"]
    cmd += ["--inner-steps", str(STEER["inner_steps"])]
    cmd += ["--transitions", str(STEER["num_transitions"]), "--lambda", str(STEER["lambda_"])]
    cmd += ["--particles", str(particles), "--seed", str(STEER["seed"])]
    cmd += ["--guidance-scale", str(family["guidance_scale"])]
    cmd += ["--height", str(SIZE), "--width", str(SIZE)]
    if family["max_sequence_length"] is not None:
        cmd += ["--max-sequence-length", str(family["max_sequence_length"])]
    return [*cmd, "--quiet", "--overwrite", "--out", str(out)]


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("glass_out/examples"))
    parser.add_argument("--particles", type=int, default=4)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    for name, family in FAMILIES.items():
        pipe = eval_mode(family["build"]())
        folder = args.out / f"tiny-{name}"
        pipe.save_pretrained(str(folder))

        result = steer_in_python(pipe, family, args.particles)
        result.best()[0].save(args.out / f"{name}-best.png")

        cmd = steer_command(folder, family, args.particles, args.out / f"{name}-steered")
        print("$", shlex.join(cmd))
        # the same command through this Python (glass-core may not be on PATH)
        subprocess.run([sys.executable, "-m", "glass_core", *cmd[1:]], check=True)
        record = json.loads((args.out / f"{name}-steered" / "results.json").read_text())

        python_rewards = result.rewards.tolist()
        print(f"{name}: NFE/particle {result.nfe}, rewards from Python {python_rewards}")
        print(f"{name}: rewards from glass-core steer {record['rewards']}")
        summary[name] = {"python": python_rewards, "command": record["rewards"], "nfe": result.nfe}
    return summary


if __name__ == "__main__":
    main()
