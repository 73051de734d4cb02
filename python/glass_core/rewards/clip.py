"""CLIPScore from a local transformers CLIP directory.

CLIPModel + tokenizer, optionally a preprocessor_config.json for the image mean/std.

score(image, prompt) = scale * cos(image_embedding, text_embedding), scale = 100 by default (the
torchmetrics convention; no clamp at 0 so gradients flow). Text embeddings are cached per prompt.
Differentiable in the images (for reward guidance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from glass_core.rewards.adapters import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageRewardModel,
    clip_preprocess,
    local_path,
)


def _features(out: Any) -> torch.Tensor:
    """Return the projected features (transformers 5: the output's pooler_output)."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def _mean_std(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = path / "preprocessor_config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        return (
            tuple(data.get("image_mean", OPENAI_CLIP_MEAN)),
            tuple(data.get("image_std", OPENAI_CLIP_STD)),
        )
    return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


class CLIPBackbone(ImageRewardModel):
    """A transformers CLIPModel with its tokenizer and differentiable image preprocessing."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        image_size: int | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        processor_path: str | os.PathLike[str] | None = None,
        torch_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load the model from a local directory or a hub name."""
        from transformers import AutoTokenizer, CLIPModel

        p = local_path(path, "path", kind="dir")
        proc = local_path(processor_path, "processor_path", kind="dir") if processor_path else p
        dtype_kw: dict[str, Any] = {"dtype": torch_dtype} if torch_dtype else {}
        model = CLIPModel.from_pretrained(str(p), local_files_only=True, **dtype_kw)
        tokenizer = AutoTokenizer.from_pretrained(str(proc), local_files_only=True)
        mean, std = _mean_std(proc)
        return cls(model, tokenizer, mean=mean, std=std, **kwargs)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings [len(prompts), D], cached per distinct prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            max_len = getattr(self.tokenizer, "model_max_length", 77)
            max_len = min(int(max_len), int(self.model.config.text_config.max_position_embeddings))
            tok = self.tokenizer(
                missing,
                padding="max_length",
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            )
            inputs = {"input_ids": tok["input_ids"].to(self.device)}
            if tok.get("attention_mask") is not None:
                inputs["attention_mask"] = tok["attention_mask"].to(self.device)
            with torch.no_grad():
                feats = _features(self.model.get_text_features(**inputs))
            feats = F.normalize(feats.float(), dim=-1)
            for p, f in zip(missing, feats, strict=True):
                self._text_cache[p] = f
        return torch.stack([self._text_cache[p] for p in prompts]).to(self.device)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings [M, D]; differentiable in `images` ([0, 1])."""
        pix = clip_preprocess(images.to(self.device), self.image_size, self.mean, self.std)
        dtype = next(self.model.parameters()).dtype
        feats = _features(self.model.get_image_features(pixel_values=pix.to(dtype)))
        return F.normalize(feats.float(), dim=-1)

    def cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Return the cosine similarity of each image with its prompt."""
        return (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)

    def to(self, *args: Any, **kwargs: Any) -> Any:  # drop cached text embeddings on moves
        """Move the model (dropping cached text embeddings)."""
        self._text_cache.clear()
        return super().to(*args, **kwargs)


class CLIPScore(CLIPBackbone):
    """CLIPScore: ``scale * cos(image, prompt)`` (scale 100)."""

    def __init__(self, model: Any, tokenizer: Any, *, scale: float = 100.0, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.scale = float(scale)

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """Return the reward of each image for its prompt, a tensor [M]."""
        assert prompts is not None
        return self.scale * self.cosine(images, prompts)
