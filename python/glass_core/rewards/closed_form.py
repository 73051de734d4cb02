"""Closed-form rewards whose tilt of a Gaussian mixture stays a Gaussian mixture.

``reward.kind`` and ``reward.params`` feed ``GaussianMixture.tilted(kind, params, lambda_)`` so a
test or benchmark gets the exact target p(z) exp(lambda r(z)) / Z for the same reward object.
"""

from __future__ import annotations

from typing import Any

import torch

from glass_core.errors import InvalidInputError

__all__ = ["LinearReward", "QuadraticReward"]


def _vector(value: Any, name: str) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=torch.float64)
    if v.ndim != 1 or v.numel() == 0 or not bool(torch.isfinite(v).all()):
        raise InvalidInputError(f"`{name}` must be a non-empty finite 1-D vector, got {value!r}")
    return v


class _OnDevice:
    """A float64 CPU constant with one cached copy per (device, dtype) it is used on.

    A reward called every step thus moves it to the particles' device once, not on every call.
    """

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value
        self._copies: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def get(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._copies:
            self._copies[key] = self.value.to(device=device, dtype=dtype)
        return self._copies[key]


def _flat(z: torch.Tensor, dim: int, name: str) -> torch.Tensor:
    zf = z.reshape(z.shape[0], -1)
    if zf.shape[1] != dim:
        raise InvalidInputError(
            f"{name}: samples have {zf.shape[1]} features per row, the reward has dimension {dim}"
        )
    return zf


class LinearReward:
    """r(z) = a . z over the flattened sample.

    Parameters
    ----------
    a : array_like
        The direction, flattened like the sample.
    """

    kind = "linear"

    def __init__(self, a: Any) -> None:
        self.a = _vector(a, "a")
        self._a = _OnDevice(self.a)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Return the reward's parameters."""
        return {"a": self.a}

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        zf = _flat(z, self.a.numel(), "LinearReward")
        return zf @ self._a.get(z.device, z.dtype)

    def __repr__(self) -> str:
        """Return a short description of the object."""
        return f"LinearReward(a={self.a.tolist()})"


class QuadraticReward:
    """Isotropic quadratic r(z) = -|z - center|^2 / (2 scale^2) over the flattened sample.

    Parameters
    ----------
    center : array_like
        The centre, flattened like the sample.
    scale : float
        The width (> 0).
    """

    kind = "quadratic"

    def __init__(self, center: Any, scale: float) -> None:
        self.center = _vector(center, "center")
        self._center = _OnDevice(self.center)
        scale = float(scale)
        if not (scale > 0.0 and scale < float("inf")):
            raise InvalidInputError(f"`scale` must be finite and > 0, got {scale}")
        self.scale = scale

    @property
    def params(self) -> dict[str, Any]:
        """Return the reward's parameters."""
        # Key names follow GaussianMixture.tilted("quadratic", {"c": ..., "s": ...}, lambda_).
        return {"c": self.center, "s": self.scale}

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Score a batch as a tensor [M]."""
        zf = _flat(z, self.center.numel(), "QuadraticReward")
        c = self._center.get(z.device, z.dtype)
        return -((zf - c) ** 2).sum(dim=1) / (2.0 * self.scale**2)

    def __repr__(self) -> str:
        """Return a short description of the object."""
        return f"QuadraticReward(center={self.center.tolist()}, scale={self.scale})"
