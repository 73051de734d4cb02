"""Aesthetic score: a small head on normalised CLIP image embeddings (LAION aesthetic predictor).

The head file is either the LAION "improved aesthetic predictor" MLP (``sac+logos+ava1-l14-
linearMSE.pth``: Linear(D,1024) - Dropout - Linear(1024,128) - Dropout - Linear(128,64) - Dropout -
Linear(64,16) - Linear(16,1), state-dict keys ``layers.{0,2,4,6,7}``) or a single linear layer
(``weight`` [1, D], ``bias`` [1], the v1 predictor), as .pth/.pt or .safetensors. The CLIP backbone
(ViT-L/14 for the public heads) loads from a local transformers directory. Prompt-free;
differentiable in the images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from glass_core.errors import InvalidInputError
from glass_core.rewards.adapters import ImageRewardModel, local_path
from glass_core.rewards.clip import CLIPBackbone


class AestheticMLP(torch.nn.Module):
    """The LAION improved-aesthetic-predictor MLP (same parameter names)."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the head's output for the image embeddings."""
        return self.layers(x)


def _load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    p = local_path(path, "head_path", kind="file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return dict(state)


def head_from_state(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Build the aesthetic MLP head from its state dict.

    Parameters
    ----------
    state : dict
        The head's state dict.

    Returns
    -------
    torch.nn.Module
        The head.
    """
    if "layers.0.weight" in state:
        head: torch.nn.Module = AestheticMLP(int(state["layers.0.weight"].shape[1]))
    elif "weight" in state and state["weight"].ndim == 2 and state["weight"].shape[0] == 1:
        head = torch.nn.Linear(int(state["weight"].shape[1]), 1)
    else:
        raise InvalidInputError(
            "head_path: unrecognised aesthetic head (expected LAION MLP keys layers.0..7 or a "
            f"single linear layer weight/bias), got keys {sorted(state)[:6]}"
        )
    head.load_state_dict(state)
    return head.eval()


class AestheticScore(ImageRewardModel):
    """``head(normalize(clip_image_embedding))`` (LAION scale: roughly 1..10)."""

    needs_prompts = False

    def __init__(self, clip: CLIPBackbone, head: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip
        self.head = head.eval()
        self.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        *,
        head_path: str | os.PathLike[str],
        clip_path: str | os.PathLike[str],
        processor_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> AestheticScore:
        """Load the model from a local directory or a hub name."""
        clip = CLIPBackbone.from_pretrained(clip_path, processor_path=processor_path, **kwargs)
        return cls(clip, head_from_state(_load_state(head_path)))

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """Return the reward of each image for its prompt, a tensor [M]."""
        emb = self.clip.image_embeddings(images)
        dtype = next(self.head.parameters()).dtype
        return self.head(emb.to(dtype)).float().reshape(-1)
