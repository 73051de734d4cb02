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
``glass_core.models.diffusers.unconditional.from_unconditional_pipeline`` converts once, at that
boundary.

This module imports only numpy and torch at the top level (safetensors, diffusers and glass_core
lazily) so the training scripts can load it by path before the native extension is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DEFAULT_HELDOUT_DIR",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_REWARD_DIR",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "DigitClassifier",
    "DigitReward",
    "HeldoutClassifier",
    "load_default_model",
    "load_default_reward",
    "load_heldout_classifier",
    "load_pipeline",
    "load_real_digits",
    "load_template_reward",
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
    """Small smooth (SiLU) CNN on ``[B, 1, 8, 8]`` images in ``[-1, 1]``; logits ``[B, 10]``.

    Parameters
    ----------
    width : int, default 32
        Channels of the first convolution (the later ones have twice as many).
    num_classes : int, default 10
        Number of output logits.
    """

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
        """Return the logits ``[B, num_classes]`` of images `x` ``[B, 1, 8, 8]``."""
        return self.head(self.features(x))


class DigitReward:
    """Reward ``r(z) = log p(class = target | z)`` under :class:`DigitClassifier`.

    Callable on a batch ``z`` of shape ``[B, 1, 8, 8]`` (or ``[B, 64]``), returns ``[B]`` float32.
    Differentiable in ``z`` (use it under ``torch.enable_grad()`` for guidance); the classifier's
    own parameters are frozen.

    Parameters
    ----------
    classifier : DigitClassifier
        The classifier, put in eval mode with its parameters frozen.
    target : int
        The digit class rewarded, in [0, 9].

    Raises
    ------
    ValueError
        If `target` is not an int in [0, 9].
    """

    def __init__(self, classifier: DigitClassifier, target: int) -> None:
        if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < NUM_CLASSES:
            raise ValueError(f"target must be an int digit class in [0, 9], got {target!r}")
        self.classifier = classifier.eval().requires_grad_(False)
        self.target = target

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Return the classifier's logits of `z`.

        Parameters
        ----------
        z : torch.Tensor
            ``[B, 1, 8, 8]`` or ``[B, 64]`` images; moved to the classifier's device and dtype.

        Returns
        -------
        torch.Tensor
            ``[B, num_classes]`` logits.

        Raises
        ------
        ValueError
            If `z` has another shape.
        """
        if z.dim() == 2 and z.shape[1] == 64:
            z = z.reshape(-1, *IMAGE_SHAPE)
        if z.dim() != 4 or tuple(z.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"z must have shape [B, 1, 8, 8] or [B, 64], got {tuple(z.shape)}")
        param = next(self.classifier.parameters())
        return self.classifier(z.to(device=param.device, dtype=param.dtype))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``log p(class = target | z)`` ``[B]`` (see :meth:`logits` for `z`)."""
        return torch.log_softmax(self.logits(z), dim=-1)[:, self.target]

    def __repr__(self) -> str:
        """Return ``DigitReward(target=...)``."""
        return f"DigitReward(target={self.target})"


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def load_default_reward(
    target: int = 3, path: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> DigitReward:
    """Load the shipped digit classifier (or one saved by the training script at ``path``).

    Parameters
    ----------
    target : int, default 3
        The digit class rewarded.
    path : str or Path, optional
        A directory with ``config.json`` and ``model.safetensors`` (default: the shipped one).
    device : str or torch.device, default "cpu"
        Where the classifier is put.

    Returns
    -------
    DigitReward
        The reward ``log p(class = target | z)``.

    Raises
    ------
    FileNotFoundError
        If the directory has no ``config.json``.
    ValueError
        If `target` is not an int in [0, 9].
    """
    from safetensors.torch import load_file

    root = Path(path) if path is not None else DEFAULT_REWARD_DIR
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"reward path {str(root)!r} has no config.json")
    cfg = _read_json(cfg_path)
    clf = DigitClassifier(width=int(cfg.get("width", 32)), num_classes=int(cfg["num_classes"]))
    clf.load_state_dict(load_file(str(root / "model.safetensors")))
    return DigitReward(clf.to(device), target)


def load_template_reward(
    target: int = 3, path: str | Path | None = None, *, scale: float = 2.0
) -> Any:
    """Load the closed-form reward ``r(z) = -|z - m_target|^2 / (2 scale^2)``.

    ``m_target`` is the mean image of digit ``target`` (shipped in ``class_means.safetensors``).
    The reward is an isotropic ``glass_core.rewards.QuadraticReward``, so p(z) exp(lambda r(z))
    stays closed-form for Gaussian-mixture models and its gradient is exact.

    Parameters
    ----------
    target : int, default 3
        The digit class whose mean image is the reward's centre.
    path : str or Path, optional
        A directory with ``class_means.safetensors`` (default: the shipped one).
    scale : float, default 2.0
        The reward's length scale.

    Returns
    -------
    QuadraticReward
        The reward, with a ``target`` attribute.

    Raises
    ------
    ValueError
        If `target` is not an int in [0, 9].
    FileNotFoundError
        If the directory has no ``class_means.safetensors``.
    """
    from safetensors.torch import load_file

    from glass_core.rewards import QuadraticReward

    if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < NUM_CLASSES:
        raise ValueError(f"target must be an int digit class in [0, 9], got {target!r}")
    root = Path(path) if path is not None else DEFAULT_REWARD_DIR
    file = root / "class_means.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"reward path {str(root)!r} has no class_means.safetensors")
    means = load_file(str(file))["class_means"]
    reward: Any = QuadraticReward(means[target].flatten().double(), scale)
    reward.target = target
    return reward


def load_pipeline(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    torch_dtype: torch.dtype | None = None,
) -> Any:
    """Load a pipeline with ``DiffusionPipeline.from_pretrained`` from a local directory.

    This is exactly how a user loads a pipeline; loading bars are off.

    Parameters
    ----------
    path : str or Path, optional
        A ``save_pretrained`` directory (default: the embedded model).
    device : str or torch.device, default "cpu"
        Where the pipeline is put.
    torch_dtype : torch.dtype, optional
        Passed to ``from_pretrained`` when given.

    Returns
    -------
    diffusers.DiffusionPipeline
        The loaded pipeline with its progress bar disabled.

    Raises
    ------
    FileNotFoundError
        If the directory has no ``model_index.json``.
    InvalidInputError
        If the folder does not load (corrupt ``model_index.json`` or config, truncated
        weights, unknown classes), naming it: the folder is at fault, not the program.
    """
    import diffusers
    from diffusers import DiffusionPipeline

    from glass_core._deps import pretrained_kwargs
    from glass_core.errors import InvalidInputError

    root = Path(path) if path is not None else DEFAULT_MODEL_DIR
    if not (root / "model_index.json").is_file():
        raise FileNotFoundError(f"model path {str(root)!r} has no model_index.json")
    kwargs: dict[str, Any] = {"local_files_only": True, **pretrained_kwargs()}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    diffusers.utils.logging.disable_progress_bar()
    try:
        pipe = DiffusionPipeline.from_pretrained(str(root), **kwargs)
    except (ImportError, MemoryError):
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"{str(root)!r} could not be loaded as a diffusers pipeline ({type(exc).__name__}: "
            f"{exc}); is it a complete folder written by save_pretrained?"
        ) from exc
    finally:
        diffusers.utils.logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_default_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    max_batch: int | None = None,
) -> Any:
    """Load the embedded model (or any unconditional UNet2DModel pipeline) as a ``Denoiser``.

    :func:`load_pipeline` (``DiffusionPipeline.from_pretrained``, the path users take) then
    :func:`from_unconditional_pipeline` (built on ``glass_core.models.from_callable``).

    Parameters
    ----------
    path : str or Path, optional
        A pipeline directory (default: the embedded model).
    device : str or torch.device, default "cpu"
        Where the pipeline is put.
    max_batch : int, optional
        Passed to :func:`from_unconditional_pipeline` (chunks every model call).

    Returns
    -------
    Denoiser
        The glass_core model, with a ``path`` attribute.

    Raises
    ------
    FileNotFoundError, InvalidInputError
        As :func:`load_pipeline`.
    """
    from glass_core.models.diffusers.unconditional import from_unconditional_pipeline

    root = Path(path) if path is not None else DEFAULT_MODEL_DIR
    model = from_unconditional_pipeline(load_pipeline(root, device=device), max_batch=max_batch)
    model.path = root
    return model


DEFAULT_HELDOUT_DIR: Path = _DATA / "heldout_classifier"


class HeldoutClassifier:
    """The held-out judge: multinomial logistic regression on the real digits' pixels.

    Trained by ``scripts/train_heldout_classifier.py``. Another model family than the reward's
    CNN and never used for steering, so ``probs(z)[:, target]`` on steered samples detects
    reward hacking.

    Parameters
    ----------
    weight : torch.Tensor
        ``[10, 64]`` weights (kept in float64).
    bias : torch.Tensor
        ``[10]`` biases (kept in float64).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight = weight.double()  # [10, 64]
        self.bias = bias.double()  # [10]

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Return the class probabilities of images `z`.

        Parameters
        ----------
        z : torch.Tensor
            ``[B, 1, 8, 8]`` images in ``[-1, 1]``.

        Returns
        -------
        torch.Tensor
            ``[B, 10]`` float64 probabilities on the CPU.

        Raises
        ------
        ValueError
            If `z` has another shape.
        """
        if z.dim() != 4 or tuple(z.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"z must have shape [B, 1, 8, 8], got {tuple(z.shape)}")
        logits = z.detach().reshape(len(z), -1).double().cpu() @ self.weight.T + self.bias
        return torch.softmax(logits, dim=-1)


def load_heldout_classifier(path: str | Path | None = None) -> HeldoutClassifier:
    """Load the shipped held-out classifier (or one written by its training script at ``path``).

    Parameters
    ----------
    path : str or Path, optional
        A directory with ``model.safetensors`` (default: the shipped one).

    Returns
    -------
    HeldoutClassifier
        The judge.

    Raises
    ------
    FileNotFoundError
        If the directory has no ``model.safetensors``.
    """
    from safetensors.torch import load_file

    root = Path(path) if path is not None else DEFAULT_HELDOUT_DIR
    file = root / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"held-out classifier path {str(root)!r} has no model.safetensors")
    tensors = load_file(str(file))
    return HeldoutClassifier(tensors["weight"], tensors["bias"])


def load_real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Load scikit-learn's 1797 real digits, the data the embedded model was trained on.

    Needs scikit-learn.

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor)
        The images as float32 ``[1797, 1, 8, 8]`` in ``[-1, 1]`` (ink = +1) and their int64
        labels.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2.0 - 1.0
    return x, torch.tensor(data.target, dtype=torch.int64)
