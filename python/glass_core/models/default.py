"""The embedded default model and reward: a tiny rectified-flow UNet and a digit classifier.

Both are trained on scikit-learn's 8x8 handwritten digits by ``scripts/train_default_model.py`` and
``scripts/train_default_reward.py`` and shipped as package data under ``glass_core/data/``.

Storage (diffusers format, safetensors):

* ``data/default_model/`` is a diffusers pipeline directory: ``model_index.json`` (a
  ``DDPMPipeline`` whose scheduler is a ``FlowMatchEulerDiscreteScheduler``, so
  ``DiffusionPipeline.from_pretrained`` loads it and its own ``__call__`` runs plain Euler on
  the flow), ``unet/`` (``UNet2DModel``), ``scheduler/`` and ``provenance.json``.
* ``data/default_reward/``: ``config.json``, ``model.safetensors`` (a :class:`DigitClassifier`),
  ``provenance.json``.

Conventions. Images are ``[B, 1, 8, 8]`` in ``[-1, 1]`` (ink = +1). The UNet follows diffusers'
flow-matching convention: diffusers time ``sigma = 1 - t`` (sigma = 1 is noise), network timestep
``1000 * sigma``, prediction ``v = eps - z``. In glass_core's convention (t = 0 noise, t = 1 data,
``x_t = t z + (1 - t) eps``) the velocity is ``u = dx/dt = z - eps = -v``;
:func:`load_default_model` converts once, at this boundary, and hands the result to
``glass_core.models.from_callable``.

This module imports only torch (and safetensors/diffusers lazily) at the top level so the training
scripts can load it by path before the native extension is built.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DEFAULT_MODEL_DIR",
    "DEFAULT_REWARD_DIR",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "CallStats",
    "DigitClassifier",
    "DigitReward",
    "load_default_model",
    "load_default_reward",
    "load_unet",
    "unet_velocity_fn",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_MODEL_DIR: Path = _DATA / "default_model"
DEFAULT_REWARD_DIR: Path = _DATA / "default_reward"
IMAGE_SHAPE: tuple[int, int, int] = (1, 8, 8)
NUM_CLASSES = 10

#: UNet2DModel config used by the training script (kept here so loader and trainer agree).
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 16,
}

#: Scheduler config (rectified flow, no shift).
SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}


class DigitClassifier(nn.Module):
    """Small smooth (SiLU) CNN on ``[B, 1, 8, 8]`` images in ``[-1, 1]``; logits ``[B, 10]``."""

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DigitReward:
    """Reward ``r(z) = log p(class = target | z)`` under :class:`DigitClassifier`.

    Callable on a batch ``z`` of shape ``[B, 1, 8, 8]`` (or ``[B, 64]``), returns ``[B]`` float32.
    Differentiable in ``z`` (use it under ``torch.enable_grad()`` for guidance); the classifier's
    own parameters are frozen.
    """

    def __init__(self, classifier: DigitClassifier, target: int) -> None:
        if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < NUM_CLASSES:
            raise ValueError(f"target must be an int digit class in [0, 9], got {target!r}")
        self.classifier = classifier.eval().requires_grad_(False)
        self.target = target

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2 and z.shape[1] == 64:
            z = z.reshape(-1, *IMAGE_SHAPE)
        if z.dim() != 4 or tuple(z.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"z must have shape [B, 1, 8, 8] or [B, 64], got {tuple(z.shape)}")
        param = next(self.classifier.parameters())
        return self.classifier(z.to(device=param.device, dtype=param.dtype))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(z), dim=-1)[:, self.target]

    def __repr__(self) -> str:
        return f"DigitReward(target={self.target})"


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def load_default_reward(
    target: int = 3, path: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> DigitReward:
    """Load the shipped digit classifier (or one saved by the training script at ``path``)."""
    from safetensors.torch import load_file

    root = Path(path) if path is not None else DEFAULT_REWARD_DIR
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"reward path {str(root)!r} has no config.json")
    cfg = _read_json(cfg_path)
    clf = DigitClassifier(width=int(cfg.get("width", 32)), num_classes=int(cfg["num_classes"]))
    clf.load_state_dict(load_file(str(root / "model.safetensors")))
    return DigitReward(clf.to(device), target)


def load_unet(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> Any:
    """Load the ``UNet2DModel`` from a pipeline directory (``unet/`` subfolder) or a unet dir."""
    from diffusers import UNet2DModel

    root = Path(path) if path is not None else DEFAULT_MODEL_DIR
    sub = root / "unet" if (root / "unet" / "config.json").is_file() else root
    if not (sub / "config.json").is_file():
        raise FileNotFoundError(f"model path {str(root)!r} has no unet/config.json")
    unet = UNet2DModel.from_pretrained(str(sub))
    return unet.to(device).eval().requires_grad_(False)


@dataclass
class CallStats:
    """Network calls, rows and seconds spent inside the network (for model/bookkeeping splits)."""

    calls: int = 0
    rows: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.calls, self.rows, self.seconds = 0, 0, 0.0


def unet_velocity_fn(
    unet: Any, num_train_timesteps: int = 1000, stats: CallStats | None = None
) -> Callable[[torch.Tensor, torch.Tensor | float], torch.Tensor]:
    """glass_core velocity ``u(x, t)`` (t = 0 noise) of a diffusers flow-matching UNet2DModel."""

    def fn(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        start = time.perf_counter()
        t_vec = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t_vec.dim() == 0:
            t_vec = t_vec.expand(x.shape[0])
        timestep = (1.0 - t_vec) * num_train_timesteps  # diffusers sigma * T
        out = -unet(x, timestep).sample  # u = -v_diffusers
        if stats is not None:
            stats.calls += 1
            stats.rows += x.shape[0]
            stats.seconds += time.perf_counter() - start
        return out

    return fn


def load_default_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    max_batch: int | None = None,
) -> Any:
    """The embedded model as a glass_core ``Denoiser`` (rectified-flow schedule, velocity input).

    Built with the public ``glass_core.models.from_callable`` API; the returned object also carries
    ``.unet``, ``.path`` and ``.stats`` (a :class:`CallStats` updated by every network call).
    """
    from glass_core.models import from_callable
    from glass_core.schedules import RectifiedFlow

    root = Path(path) if path is not None else DEFAULT_MODEL_DIR
    unet = load_unet(root, device=device)
    sched_cfg_path = root / "scheduler" / "scheduler_config.json"
    sched_cfg = _read_json(sched_cfg_path) if sched_cfg_path.is_file() else dict(SCHEDULER_CONFIG)
    if float(sched_cfg.get("shift", 1.0)) != 1.0 or sched_cfg.get("use_dynamic_shifting", False):
        raise ValueError("the default-model loader supports only unshifted rectified flow")
    stats = CallStats()
    fn = unet_velocity_fn(unet, int(sched_cfg.get("num_train_timesteps", 1000)), stats)
    model = from_callable(fn, prediction="velocity", schedule=RectifiedFlow(), max_batch=max_batch)
    model.unet = unet
    model.path = root
    model.stats = stats
    return model
