"""Tiny random-weight diffusers pipelines built from configs (no downloads), shared by the tests.

Every builder is deterministic (``torch.manual_seed`` inside) and cached, so tests can share one
instance per family. Sizes are chosen so one forward pass costs a few milliseconds on a CPU core:
images are 16x16 pixels, the VAE downsamples by 2 (latents 4x8x8), text encoders have 32 hidden
units and a 12-token context.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

HEIGHT = 16
WIDTH = 16
MAX_LEN = 12

_WORDS = [
    "a",
    "photo",
    "of",
    "an",
    "astronaut",
    "riding",
    "horse",
    "on",
    "the",
    "moon",
    "cat",
    "dog",
    "red",
    "blue",
    "green",
    "tree",
    "house",
    "sky",
    "painting",
    "castle",
    "in",
    "style",
    "van",
    "gogh",
]


def pipeline_sigmas(pipe: Any, steps: int, **call: Any) -> Any:
    """The sigmas a pipeline's own __call__ sets for `steps` steps (float64 numpy), read at its
    first step: the reference for the adapters' default grids."""
    seen = []

    def grab(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        seen.append(p.scheduler.sigmas.double().numpy().copy())
        return kw

    pipe(
        num_inference_steps=steps, output_type="latent", callback_on_step_end=grab,
        generator=torch.Generator().manual_seed(0), **call,
    )  # fmt: skip
    return seen[0]


def make_tokenizer(max_length: int = MAX_LEN) -> Any:
    """A WordLevel tokenizer made locally with ``tokenizers``, wrapped in PreTrainedTokenizerFast.

    Ids: 0 = [PAD], 1 = [UNK], 2 = [BOS], 3 = [EOS], then the words. Every sequence gets BOS/EOS.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
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
        model_max_length=max_length,
    )


VOCAB_SIZE = 4 + len(dict.fromkeys(_WORDS))


def _clip_text_config(hidden: int = 32, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LEN,
        projection_dim=projection_dim,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def clip_text_model(hidden: int = 32, seed: int = 0) -> Any:
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(_clip_text_config(hidden)).eval()


def clip_text_model_with_projection(
    hidden: int = 32, projection_dim: int = 32, seed: int = 0
) -> Any:
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_clip_text_config(hidden, projection_dim)).eval()


def t5_encoder(d_model: int = 32, seed: int = 0) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=3,
    )
    return T5EncoderModel(cfg).eval()


def tiny_vae(latent_channels: int = 4, *, shift_factor: float | None = None, seed: int = 0) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if shift_factor is not None:
        kwargs["shift_factor"] = shift_factor
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=HEIGHT,
        scaling_factor=0.7,
        **kwargs,
    ).eval()


@functools.cache
def flux_pipeline(guidance_embeds: bool = True) -> Any:
    """FLUX.1-like pipeline (dev-like with distilled guidance input; schnell-like without)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(1)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=4,
        max_image_seq_len=64,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=tiny_vae(4, shift_factor=0.1),
        text_encoder=clip_text_model(32, seed=2),
        tokenizer=make_tokenizer(),
        text_encoder_2=t5_encoder(32, seed=3),
        tokenizer_2=make_tokenizer(),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.cache
def sd3_pipeline() -> Any:
    """SD3-like pipeline: two CLIP encoders with projection + T5, static shift 3.0."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(4)
    transformer = SD3Transformer2DModel(
        sample_size=HEIGHT // 2,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=16,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(4, shift_factor=0.05),
        text_encoder=clip_text_model_with_projection(16, 16, seed=5),
        tokenizer=make_tokenizer(),
        text_encoder_2=clip_text_model_with_projection(16, 16, seed=6),
        tokenizer_2=make_tokenizer(),
        text_encoder_3=t5_encoder(32, seed=7),
        tokenizer_3=make_tokenizer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _unet(cross_attention_dim: int, *, sdxl: bool = False, seed: int = 8) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if sdxl:
        kwargs = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
        }
    return UNet2DConditionModel(
        sample_size=HEIGHT // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
        **kwargs,
    ).eval()


def _ddim(prediction_type: str) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


@functools.cache
def sd_pipeline(prediction_type: str = "epsilon") -> Any:
    """SD 1.x/2.x-like pipeline with a DDIM scheduler ("epsilon" or "v_prediction")."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=tiny_vae(4),
        text_encoder=clip_text_model(32, seed=9),
        tokenizer=make_tokenizer(),
        unet=_unet(32),
        scheduler=_ddim(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.cache
def sdxl_pipeline() -> Any:
    """SDXL-like pipeline: two text encoders (hidden states concatenated), pooled embeds,
    added time ids."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(4),
        text_encoder=clip_text_model(32, seed=10),
        text_encoder_2=clip_text_model_with_projection(32, 32, seed=11),
        tokenizer=make_tokenizer(),
        tokenizer_2=make_tokenizer(),
        unet=_unet(64, sdxl=True, seed=12),
        scheduler=_ddim("epsilon"),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ddpm_pipeline(
    prediction_type: str = "epsilon", num_train_timesteps: int = 100, channels: int = 1
) -> Any:
    """Unconditional DDPMPipeline: an 8x8 UNet2DModel (random weights), DDPM table."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )
    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, prediction_type=prediction_type)
    return DDPMPipeline(unet=unet.eval(), scheduler=sched)


__all__ = [
    "HEIGHT",
    "MAX_LEN",
    "WIDTH",
    "ddpm_pipeline",
    "flux_pipeline",
    "make_tokenizer",
    "sd3_pipeline",
    "sd_pipeline",
    "sdxl_pipeline",
]
