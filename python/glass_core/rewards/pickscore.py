"""PickScore (Kirstain et al. 2023) from a local directory.

A CLIP ViT-H/14 fine-tuned on Pick-a-Pic, loaded with transformers' CLIPModel (the processor
usually lives in the laion/CLIP-ViT-H-14 directory: pass ``processor_path``).

score(image, prompt) = exp(logit_scale) * cos(image, prompt), the reference implementation's logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from glass_core.rewards.clip import CLIPBackbone


class PickScore(CLIPBackbone):
    """PickScore logits ``exp(logit_scale) * cos``; differentiable in the images."""

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """Return the reward of each image for its prompt, a tensor [M]."""
        assert prompts is not None
        return self.model.logit_scale.exp().float() * self.cosine(images, prompts)
