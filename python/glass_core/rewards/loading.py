"""``load_reward``.

One entry point for every model-based reward adapter, loaded from local paths. The shared adapter
pieces live in :mod:`glass_core.rewards.adapters` (re-exported here).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from glass_core.errors import InvalidInputError
from glass_core.rewards.adapters import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    DecodedReward,
    ImageCallableReward,
    ImageRewardModel,
    LatentCallableReward,
    check_images,
    clip_preprocess,
    image_reward,
    latent_reward,
    local_path,
    rows_to_prompts,
    video_reward,
)

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "REWARD_KINDS",
    "DecodedReward",
    "ImageCallableReward",
    "ImageRewardModel",
    "LatentCallableReward",
    "check_images",
    "clip_preprocess",
    "image_reward",
    "latent_reward",
    "load_reward",
    "local_path",
    "rows_to_prompts",
    "video_reward",
]

REWARD_KINDS = ("clip", "pickscore", "hps", "aesthetic", "image_reward")


def load_reward(
    kind: str,
    path: str | os.PathLike[str],
    *,
    device: Any = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> Any:
    """Load a reward adapter from a local directory/file.

    kind: "clip" (CLIPScore, transformers CLIP dir), "pickscore" (PickScore CLIP dir; give
    ``processor_path`` if the processor lives elsewhere), "hps" (HPSv2 open_clip checkpoint file),
    "aesthetic" (head file; ``clip_path`` = the CLIP ViT-L/14 dir), "image_reward" (ImageReward
    checkpoint; needs the ``image-reward`` package).

    Parameters
    ----------
    kind : str
        One of ``REWARD_KINDS`` (above).
    path : str or PathLike
        The local directory or file.
    device, dtype : optional
        Where and in which dtype the adapter runs.
    **kwargs
        Further arguments of the adapter's loader.

    Returns
    -------
    Reward
        The adapter.

    Raises
    ------
    InvalidInputError
        An unknown ``kind`` or a missing path.
    """
    if kind == "clip":
        from glass_core.rewards.clip import CLIPScore

        r: Any = CLIPScore.from_pretrained(path, **kwargs)
    elif kind == "pickscore":
        from glass_core.rewards.pickscore import PickScore

        r = PickScore.from_pretrained(path, **kwargs)
    elif kind == "hps":
        from glass_core.rewards.hps import HPSv2

        r = HPSv2.from_checkpoint(path, **kwargs)
    elif kind == "aesthetic":
        from glass_core.rewards.aesthetic import AestheticScore

        r = AestheticScore.from_pretrained(head_path=path, **kwargs)
    elif kind == "image_reward":
        from glass_core.rewards.image_reward import ImageRewardScore

        r = ImageRewardScore.from_checkpoint(path, **kwargs)
    else:
        raise InvalidInputError(f"kind must be one of {REWARD_KINDS}, got {kind!r}")
    if device is not None or dtype is not None:
        r = r.to(device=device, dtype=dtype)
    return r
