"""ImageReward (Xu et al. 2023) through its own package ``image-reward``.

Import name ``ImageReward``; loaded from a local checkpoint file (``ImageReward.pt``) and its
``med_config``.

Status: the package is NOT a dependency and is not installed in the test environment. It downloads
and pip-resolves, but does not install cleanly next to this project's stack: it pins timm==0.6.13
(open_clip needs timm>=1), pulls datasets/pandas/pyarrow, upgrades numpy to 2.x, and its BLIP code
targets transformers 4.x. This adapter is therefore untested here; it imports the package lazily
and fails with a clear message when it is missing. Scores are computed through the package's
``score`` method on PIL images (not differentiable: no reward guidance with this adapter).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from glass_core.rewards.adapters import ImageRewardModel, local_path


class ImageRewardScore(ImageRewardModel):
    """ImageReward score per (image, prompt); not differentiable."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        med_config: str | os.PathLike[str] | None = None,
        device: Any = "cpu",
    ) -> ImageRewardScore:
        """Load the model from a checkpoint."""
        ckpt = local_path(path, "path", kind="file")
        try:
            import ImageReward as RM
        except ImportError as e:
            raise ImportError(
                "the ImageReward adapter needs the `image-reward` package (pip install "
                "image-reward); it does not install cleanly alongside open_clip/transformers 5, "
                "see glass_core.rewards.image_reward's docstring"
            ) from e
        kwargs: dict[str, Any] = {"device": device}
        if med_config is not None:
            kwargs["med_config"] = str(local_path(med_config, "med_config", kind="file"))
        return cls(RM.load(str(ckpt), **kwargs))

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """Return the reward of each image for its prompt, a tensor [M]."""
        from PIL import Image

        assert prompts is not None
        arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        pils = [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy()]
        with torch.no_grad():
            vals = [float(self.model.score(p, [im])) for p, im in zip(prompts, pils, strict=True)]
        return torch.tensor(vals, dtype=torch.float32, device=images.device)
