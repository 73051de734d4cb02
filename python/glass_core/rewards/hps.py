"""HPSv2 (Wu et al. 2023) through open_clip.

A ViT-H-14 open_clip model with the HPSv2 checkpoint (``HPS_v2_compressed.pt`` or
``HPS_v2.1_compressed.pt``) loaded from a local file.

score(image, prompt) = cos(image, prompt) (the reference ``hpsv2.score``). The model is created
with ``pretrained=None`` (no download) and the checkpoint's ``state_dict`` is loaded into it. The
tokenizer is open_clip's bundled BPE tokenizer (no download). Needs ``open_clip_torch`` (it installs
cleanly from PyPI: open_clip_torch 3.3.0 pulls ftfy, timm, torchvision). Differentiable in the
images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from glass_core.errors import InvalidInputError
from glass_core.rewards.adapters import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageRewardModel,
    clip_preprocess,
    local_path,
)


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "HPSv2 needs open_clip: `pip install open_clip_torch` (installs cleanly from PyPI)"
        ) from e
    return open_clip


class HPSv2(ImageRewardModel):
    """HPSv2 score ``cos(image, prompt)`` on an open_clip model."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        pre = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = image_size or pre.get("size") or model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.mean = tuple(mean or pre.get("mean") or OPENAI_CLIP_MEAN)
        self.std = tuple(std or pre.get("std") or OPENAI_CLIP_STD)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.requires_grad_(False)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        model_name: str = "ViT-H-14",
        model_config: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> HPSv2:
        """Load ``path`` (an HPSv2 checkpoint) into open_clip's ``model_name`` architecture.

        ``model_config``: optional JSON file (or directory of them) registering a custom
        architecture with open_clip (``open_clip.add_model_config``).
        """
        oc = _open_clip()
        ckpt_path = local_path(path, "path", kind="file")
        if model_config is not None:
            oc.add_model_config(str(local_path(model_config, "model_config")))
        if model_name not in oc.list_models():
            raise InvalidInputError(
                f"model_name {model_name!r} is not an open_clip architecture (pass model_config)"
            )
        model = oc.create_model(model_name, pretrained=None, device="cpu")
        state = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model.load_state_dict(state)
        return cls(model, oc.get_tokenizer(model_name), **kwargs)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Return the normalised text embeddings of the prompts."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            with torch.no_grad():
                feats = self.model.encode_text(self.tokenizer(missing).to(self.device))
            feats = F.normalize(feats.float(), dim=-1)
            for p, f in zip(missing, feats, strict=True):
                self._text_cache[p] = f
        return torch.stack([self._text_cache[p] for p in prompts]).to(self.device)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Return the normalised image embeddings."""
        pix = clip_preprocess(images.to(self.device), self.image_size, self.mean, self.std)
        dtype = next(self.model.parameters()).dtype
        return F.normalize(self.model.encode_image(pix.to(dtype)).float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """Return the reward of each image for its prompt, a tensor [M]."""
        assert prompts is not None
        return (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """Move the model (dropping cached text embeddings)."""
        self._text_cache.clear()
        return super().to(*args, **kwargs)
