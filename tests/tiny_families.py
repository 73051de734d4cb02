"""Tiny random-weight FLUX.2, Qwen-Image, SANA and Wan 2.x pipelines, built offline.

Each builder follows the dummy components of diffusers' own tests
(``tests/pipelines/<family>/test_*.py``) with two changes that make them work with no hub access
and at the pipelines' default call options:

* tokenizers are the word-level tokenizer of :mod:`tiny_pipelines` (made on the spot), given a
  small chat template where the pipeline calls ``apply_chat_template`` (FLUX.2, FLUX.2 [klein]);
* text encoders are deep enough for the hidden-state layers the pipeline reads by default
  (FLUX.2 stacks layers 10/20/30, [klein] 9/18/27), and their vocabularies are the tokenizer's.

Every builder is deterministic (``torch.manual_seed`` inside), puts every module in eval mode and
is cached, so tests share one instance per family. At the ``SMALL_CALL`` sizes (images 16-64 px,
videos of 5 frames) one 2-step call of every family together took 14 s of CPU time, imports
included, on this project's test machine.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from tiny_pipelines import VOCAB_SIZE, make_tokenizer, t5_encoder

# Concatenates the text parts of every message, the way a chat template would.
_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% endfor %}"
)


def chat_tokenizer(max_length: int = 512) -> Any:
    """The word-level tokenizer with a chat template (for pipelines calling apply_chat_template)."""
    tok = make_tokenizer(max_length)
    tok.chat_template = _CHAT_TEMPLATE
    return tok


def _done(pipe: Any) -> Any:
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _flux2_parts(*, guidance_embeds: bool, seed: int) -> dict[str, Any]:
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2Transformer2DModel,
    )

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,  # 3 stacked hidden-state layers x 16
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    # A batch-norm with non-trivial statistics, so the de-normalisation before decoding matters.
    vae.bn.running_mean.uniform_(-0.2, 0.2)
    vae.bn.running_var.uniform_(0.5, 1.5)
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "tokenizer": chat_tokenizer(),
    }


@functools.cache
def flux2_pipeline() -> Any:
    """FLUX.2 [dev]-like: Mistral-3 text encoder (31 hidden states), guidance embedding, no CFG."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    ids = {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 16,
            "intermediate_size": 24,
            "max_position_embeddings": 1024,
            "num_attention_heads": 2,
            "num_hidden_layers": 30,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "sliding_window": None,
            **ids,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "image_size": 30,
            "patch_size": 6,
            "num_channels": 3,
        },
        image_token_index=1,
        **ids,
    )
    torch.manual_seed(20)
    text_encoder = Mistral3ForConditionalGeneration(config)
    parts = _flux2_parts(guidance_embeds=True, seed=21)
    return _done(Flux2Pipeline(text_encoder=text_encoder, **parts))


@functools.cache
def flux2_klein_pipeline() -> Any:
    """FLUX.2 [klein]-like: Qwen3 text encoder (28 hidden states), true CFG with "" (no
    guidance embedding)."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=27,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(22)
    text_encoder = Qwen3ForCausalLM(config)
    parts = _flux2_parts(guidance_embeds=False, seed=23)
    return _done(Flux2KleinPipeline(text_encoder=text_encoder, **parts))


@functools.cache
def qwenimage_pipeline() -> Any:
    """Qwen-Image-like: Qwen2.5-VL text encoder (template prefix dropped), 2x2-packed latents,
    VAE with latents_mean/latents_std and no scaling_factor, dynamic-shift scheduler."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(30)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(31)
    vae = AutoencoderKLQwenImage(
        base_dim=4 * 6,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 1.2],
    )
    # Qwen-Image's own schedule: dynamic shift (mu from the sequence length), exponential, with
    # a terminal shift.
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=4,
        base_shift=0.5,
        max_image_seq_len=64,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": VOCAB_SIZE + 3,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=16,
        vocab_size=VOCAB_SIZE + 3,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        vision_start_token_id=VOCAB_SIZE,
        vision_end_token_id=VOCAB_SIZE + 1,
        vision_token_id=VOCAB_SIZE + 2,
        image_token_id=VOCAB_SIZE + 2,
        video_token_id=VOCAB_SIZE + 2,
    )
    torch.manual_seed(32)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    pipe = QwenImagePipeline(
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=make_tokenizer(1024),
    )
    return _done(pipe)


def _sana_vae() -> Any:
    from diffusers import AutoencoderDC

    torch.manual_seed(41)
    return AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )


def _gemma2(seed: int) -> Any:
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    return Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=8,
            intermediate_size=64,
            max_position_embeddings=2048,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=VOCAB_SIZE,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            attn_implementation="eager",
        )
    )


@functools.cache
def sana_pipeline() -> Any:
    """SANA-like: Gemma-2 text encoder, linear-attention DiT, DC-AE (scaling_factor), static
    shift 3.0, CFG on (negative prompt "")."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(40)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=16,
    )
    pipe = SanaPipeline(
        transformer=transformer,
        vae=_sana_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=_gemma2(42),
        tokenizer=make_tokenizer(2048),
    )
    return _done(pipe)


@functools.cache
def wan_pipeline() -> Any:
    """Wan 2.1-like text-to-video: T5 text encoder, 3D transformer, causal video VAE with
    latents_mean/latents_std (no scaling_factor), static shift, CFG with a negative prompt."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(50)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.05 * (i % 5) for i in range(16)],
        latents_std=[0.8 + 0.05 * (i % 7) for i in range(16)],
    )
    torch.manual_seed(51)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    pipe = WanPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder=t5_encoder(32, seed=52),
        tokenizer=make_tokenizer(512),
        transformer_2=None,
    )
    return _done(pipe)


BUILDERS = {
    "flux2": flux2_pipeline,
    "flux2_klein": flux2_klein_pipeline,
    "qwenimage": qwenimage_pipeline,
    "sana": sana_pipeline,
    "wan": wan_pipeline,
}

# Call options that keep one call small (the pipelines' defaults are 1024 px / 81 frames).
SMALL_CALL = {
    "flux2": {"height": 16, "width": 8, "max_sequence_length": 16},
    "flux2_klein": {"height": 16, "width": 8, "max_sequence_length": 16},
    "qwenimage": {"height": 32, "width": 16, "max_sequence_length": 16},
    "sana": {"height": 64, "width": 32, "max_sequence_length": 16, "use_resolution_binning": False},
    "wan": {"height": 32, "width": 16, "num_frames": 5, "max_sequence_length": 16},
}

__all__ = ["BUILDERS", "SMALL_CALL", "chat_tokenizer"]
