"""Shared pieces of the model-based rewards.

Local-path checks, differentiable CLIP-style image preprocessing, user callables on images or
latents, and the VAE-decoding wrapper that turns an image reward into a reward on latents (decoding
once per scored batch and caching the decode), and ``reward_on_latents``, which picks the wrapping a
pipeline adapter needs.

Image rewards take ``images [M, 3, H, W]`` in [0, 1] (float, on the reward's device) and the
per-row prompts, and return ``[M]`` float. Latent rewards take the latents directly.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from glass_core.errors import InvalidInputError, RewardError
from glass_core.meter import Meter, chunked

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def local_path(path: str | os.PathLike[str], name: str = "path", *, kind: str = "any") -> Path:
    """Return a local file or directory that exists (no hub ids: this library never downloads).

    Parameters
    ----------
    path : str or PathLike
        The path.
    name : str
        Its name in the error message.
    kind : str
        "file", "dir" or "any".

    Returns
    -------
    Path
        The path.

    Raises
    ------
    InvalidInputError
        Not a path, missing, or of the wrong kind.
    """
    if not isinstance(path, str | os.PathLike):
        raise InvalidInputError(f"{name} must be a local path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInputError(
            f"{name}: {str(path)!r} does not exist (rewards load from a local directory or file; "
            "download weights beforehand, e.g. with `huggingface-cli download`)"
        )
    if kind == "dir" and not p.is_dir():
        raise InvalidInputError(f"{name}: {str(path)!r} must be a directory")
    if kind == "file" and not p.is_file():
        raise InvalidInputError(f"{name}: {str(path)!r} must be a file")
    return p


def check_images(images: Any, name: str = "images", channels: int | None = 3) -> torch.Tensor:
    """``images`` is a [M, C, H, W] tensor (C = ``channels`` unless None).

    Parameters
    ----------
    images : Any
        The input.
    name : str
        Its name in the error message.
    channels : int, optional
        Required channels (None: any).

    Returns
    -------
    torch.Tensor
        ``images``.

    Raises
    ------
    InvalidInputError
        Not such a tensor.
    """
    is_4d = isinstance(images, torch.Tensor) and images.ndim == 4
    if not is_4d or (channels is not None and images.shape[1] != channels):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        c = "C" if channels is None else channels
        raise InvalidInputError(f"{name} must be a [M, {c}, H, W] tensor in [0, 1], got {shape}")
    return images


def clip_preprocess(
    images: torch.Tensor,
    size: int | tuple[int, int],
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Differentiable CLIP preprocessing.

    Resize the shorter side (bicubic, antialiased), center crop, normalise. ``images`` in [0, 1].

    Parameters
    ----------
    images : torch.Tensor
        Images [M, 3, H, W] in [0, 1].
    size : int or tuple of int
        The crop size.
    mean, std : sequence of float
        The normalisation.

    Returns
    -------
    torch.Tensor
        The model inputs.
    """
    check_images(images)
    sh, sw = (size, size) if isinstance(size, int) else size
    h, w = images.shape[-2:]
    scale = max(sh / h, sw / w)
    nh, nw = max(sh, round(h * scale)), max(sw, round(w * scale))
    x = images.float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - sh) // 2, (nw - sw) // 2
    x = x[..., top : top + sh, left : left + sw]
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def rows_to_prompts(prompts: Sequence[str] | None, m: int) -> list[str] | None:
    """Per-row prompts for a group-major batch of m rows (row i -> prompts[i // (m / B)]).

    Parameters
    ----------
    prompts : list of str, optional
        One prompt per group (B).
    m : int
        Rows.

    Returns
    -------
    list of str or None
        One prompt per row.

    Raises
    ------
    InvalidInputError
        m is not a multiple of B.
    """
    if prompts is None:
        return None
    b = len(prompts)
    if b == 0 or m % b != 0:
        raise InvalidInputError(f"prompts: {m} rows are not a multiple of the {b} prompts")
    per = m // b
    return [prompts[i // per] for i in range(m)]


class ImageRewardModel(torch.nn.Module):
    """Base of the image rewards. Subclasses implement ``score(images, prompts) -> [M]``."""

    input_kind = "images"
    needs_prompts = True

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """Return the reward of each image for its prompt, a tensor [M]."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Score a batch of images (and prompts) as a tensor [M]."""
        check_images(images)
        if self.needs_prompts:
            if prompts is None:
                raise InvalidInputError(
                    f"prompts are required by {type(self).__name__} (with steer and prompt_embeds, "
                    "pass reward_prompts=)"
                )
            prompts = rows_to_prompts(list(prompts), images.shape[0])
        return self.score(images, prompts)

    @property
    def device(self) -> torch.device:
        """Return the device the model runs on."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


class ImageCallableReward(ImageRewardModel):
    """A user function on images.

    ``fn(images[M,C,H,W] in [0,1]) -> [M]`` or ``fn(images, prompts) -> [M]`` (prompts: one string
    per row). C is the pipeline's: 3 for the text-to-image families, 1 for grey-scale unconditional
    models such as the embedded one.
    """

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        if not callable(fn):
            raise InvalidInputError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            self.takes_prompts = len(params) >= 2
        except (TypeError, ValueError):
            self.takes_prompts = False
        self.needs_prompts = False

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Score a batch of images (and prompts) as a tensor [M]."""
        check_images(images, channels=None)
        if self.takes_prompts:
            return self.fn(
                images,
                rows_to_prompts(list(prompts), images.shape[0]) if prompts is not None else None,
            )
        return self.fn(images)


class LatentCallableReward:
    """A user function on latents ``fn(z[M, C, h, w]) -> [M]`` (no VAE decode)."""

    input_kind = "latents"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if not callable(fn):
            raise InvalidInputError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        return self.fn(z)


class VideoCallableReward:
    """A user function on videos.

    ``fn(videos[M, F, C, H, W] in [0, 1]) -> [M]`` or ``fn(videos, prompts) -> [M]`` (prompts: one
    string per video).
    """

    input_kind = "videos"

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        if not callable(fn):
            raise InvalidInputError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, videos: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
            shape = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos)
            raise InvalidInputError(f"videos must be a [M, F, C, H, W] tensor, got {shape}")
        if _accepts_prompts(self.fn):
            return self.fn(videos, prompts)
        return self.fn(videos)


class FrameAveragedReward:
    """An image reward on videos.

    Every frame scored (with its video's prompt), averaged over the frames of each video.
    """

    def __init__(self, reward: Callable[..., torch.Tensor]) -> None:
        self.reward = reward

    def __call__(self, videos: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        m, f = videos.shape[:2]
        frames = videos.reshape(m * f, *videos.shape[2:])
        if not _accepts_prompts(self.reward):
            scores = self.reward(frames)
        else:
            rows = rows_to_prompts(prompts, m) if prompts is not None else None
            per_frame = None if rows is None else [p for p in rows for _ in range(f)]
            scores = self.reward(frames, per_frame)
        if not isinstance(scores, torch.Tensor):
            raise RewardError(f"reward must return a torch.Tensor, got {type(scores).__name__}")
        return scores.reshape(m, f).mean(dim=1)


def video_reward(fn: Callable[..., torch.Tensor]) -> VideoCallableReward:
    """Mark a user callable as a reward on decoded videos ``[M, F, C, H, W]`` in [0, 1].

    Parameters
    ----------
    fn : callable
        ``fn(videos)`` or ``fn(videos, prompts)`` -> [M].

    Returns
    -------
    VideoCallableReward
        The reward.
    """
    return VideoCallableReward(fn)


def image_reward(fn: Callable[..., torch.Tensor]) -> ImageCallableReward:
    """Mark a user callable as a reward on decoded images in [0, 1].

    Parameters
    ----------
    fn : callable
        ``fn(images)`` or ``fn(images, prompts)`` -> [M].

    Returns
    -------
    ImageCallableReward
        The reward.

    Examples
    --------
    >>> import torch
    >>> from glass_core.rewards.loading import image_reward
    >>> bright = image_reward(lambda im: im.mean(dim=(1, 2, 3)))
    >>> bright(torch.ones(2, 3, 4, 4)).tolist()
    [1.0, 1.0]
    """
    return ImageCallableReward(fn)


def latent_reward(fn: Callable[[torch.Tensor], torch.Tensor]) -> LatentCallableReward:
    """Mark a user callable as a reward on latents (the particles themselves).

    Parameters
    ----------
    fn : callable
        ``fn(z)`` -> [M].

    Returns
    -------
    LatentCallableReward
        The reward.
    """
    return LatentCallableReward(fn)


class DecodedReward:
    """Reward on latents = image reward of the VAE decode, for the alignment algorithms.

    Decodes each scored batch once (through ``decode``, differentiably when ``z`` requires grad,
    for reward guidance) and keeps the last decode: ``last_images`` / ``images_for(z)`` give the
    decoded batch back without decoding again (``steer`` reuses it for the output images).
    Decoding and scoring are reward work on ``meter`` (:class:`glass_core.meter.Meter`, shared
    with the pipeline adapter by ``reward_on_latents``; the adapter's ``decode`` counts decodes).
    """

    input_kind = "latents"

    def __init__(
        self,
        reward: Callable[..., torch.Tensor],
        decode: Callable[[torch.Tensor], torch.Tensor],
        prompts: Sequence[str] | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.reward = reward
        self.decode = decode
        self.prompts = list(prompts) if prompts is not None else None
        self.meter = Meter() if meter is None else meter
        self.last_latents: torch.Tensor | None = None
        self.last_images: torch.Tensor | None = None

    def _cached(self, z: torch.Tensor) -> torch.Tensor | None:
        last = self.last_latents
        if last is None or self.last_images is None or last.shape != z.shape:
            return None
        if last.device != z.device or last.dtype != z.dtype:
            return None
        return self.last_images if torch.equal(last, z.detach()) else None

    def images_for(self, z: torch.Tensor) -> torch.Tensor:
        """Return decoded images of z, reusing the last decode when z is the last scored batch."""
        return self.meter.reward(self._images, z)  # type: ignore[no-any-return]

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        cached = self._cached(z)
        if cached is not None:
            return cached
        with torch.no_grad():
            images = self.decode(z)
        self.last_latents, self.last_images = z.detach().clone(), images.detach()
        return images

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        return self.meter.reward(self._score, z)  # type: ignore[no-any-return]

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and z.requires_grad:
            images = self.decode(z)
            self.last_latents, self.last_images = z.detach().clone(), images.detach()
        else:
            images = self._images(z)  # inside this timed section: not timed again
        prompts = self.prompts
        out = self.reward(images, prompts) if _accepts_prompts(self.reward) else self.reward(images)
        if not isinstance(out, torch.Tensor):
            raise RewardError(f"reward must return a torch.Tensor, got {type(out).__name__}")
        out = out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out
        return out.to(z.device) if out.device != z.device else out


def _accepts_prompts(fn: Any) -> bool:
    if isinstance(fn, ImageRewardModel):
        return True
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


class ChunkedImageReward:
    """Calls an image reward on chunks of `max_batch` rows with per-row prompts."""

    def __init__(self, reward: Any, max_batch: int | None) -> None:
        self.reward = reward
        self.max_batch = max_batch

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        rows = rows_to_prompts(prompts, images.shape[0]) if prompts is not None else None
        if not _accepts_prompts(self.reward):
            return chunked(self.reward, self.max_batch, images)
        return chunked(self.reward, self.max_batch, images, rows, per_row=(True, rows is not None))


def reward_on_latents(
    reward: Any,
    model: Any,
    reward_on: str,
    max_batch: int | None,
    reward_prompts: str | Sequence[str] | None,
    prompts: list[str] | None,
) -> Any:
    """Return the reward the alignment algorithms score latents with.

    For a pipeline adapter `model` (``decode``, ``device``, ``num_groups``, ``media``): a latent
    reward as is, an image reward
    (``reward_on`` "images", or "auto" and the reward says so) through :class:`DecodedReward` on
    chunks of `max_batch` images with per-row prompts (`reward_prompts`, one per group, else
    `prompts`). For a video pipeline an image reward scores every frame and averages over the
    frames (:class:`FrameAveragedReward`); a video reward (``reward_on`` "videos" or
    :func:`video_reward`) gets the decoded videos; chunks are then `max_batch` videos.

    Parameters
    ----------
    reward : callable
        The user's reward.
    model : PipelineModel
        The wrapped pipeline.
    reward_on : str
        "auto", "images", "videos" or "latents".
    max_batch : int, optional
        Images (videos) per decode and reward call.
    reward_prompts : str or list of str, optional
        The text the reward compares against.
    prompts : list of str, optional
        The pipeline's prompts (the default text).

    Returns
    -------
    callable
        A reward on latents [M, ...] -> [M].

    Raises
    ------
    InvalidInputError
        A bad ``reward_on`` or prompts that do not match the groups.
    """
    if reward is None:
        return None
    if not callable(reward):
        raise InvalidInputError(f"reward must be callable, got {type(reward).__name__}")
    kind = reward_on
    if kind == "auto":
        kind = getattr(reward, "input_kind", "latents")
    if kind not in ("images", "latents", "videos"):
        raise InvalidInputError(
            f"reward_on must be 'auto', 'images', 'videos' or 'latents', got {reward_on!r}"
        )
    media = getattr(model, "media", "image")
    if kind == "videos" and media != "video":
        raise InvalidInputError(f"reward: a video reward needs a video pipeline, not {media}s")
    if isinstance(reward, torch.nn.Module):
        reward.to(model.device)
    if kind == "latents":
        return reward
    if reward_prompts is not None:
        rp = [reward_prompts] if isinstance(reward_prompts, str) else list(reward_prompts)
        if len(rp) != model.num_groups or not all(isinstance(p, str) for p in rp):
            raise InvalidInputError(
                f"reward_prompts must be {model.num_groups} string(s), one per prompt group, "
                f"got {reward_prompts!r}"
            )
        prompts = rp

    def decode(z: torch.Tensor) -> torch.Tensor:
        return model.decode(z, max_batch=max_batch)

    if kind == "images" and media == "video":  # documented: per frame, averaged over frames
        reward = FrameAveragedReward(reward)
    chunks = ChunkedImageReward(reward, max_batch)
    return DecodedReward(chunks, decode, prompts, getattr(model, "meter", None))
