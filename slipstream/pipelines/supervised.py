"""Presets for supervised training and evaluation."""

from __future__ import annotations

from typing import Any

import torch

from ..decoders import DecodeCenterCrop, DecodeRandomResizedCrop
from ..transforms.basic import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RandomHorizontalFlip,
    ToTorchImage,
)

__all__ = ["supervised_train", "supervised_val"]


def _to_tensor(device: Any, dtype: torch.dtype, normalize: bool) -> ToTorchImage:
    """``[B, 3, H, W]`` on ``device``: uint8 when a Normalize follows, else ``dtype``."""
    return ToTorchImage(device, torch.uint8 if normalize else dtype)


def _normalize(device: Any, dtype: torch.dtype, normalize: bool) -> list[Any]:
    return [Normalize(IMAGENET_MEAN, IMAGENET_STD, device, dtype)] if normalize else []


def supervised_train(
    size: int = 224,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = True,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> dict[str, list[Any]]:
    """ImageNet-style training: random resized crop to ``size`` (``scale``, ``ratio``),
    horizontal flip with probability ``flip_p``, then ``[B, 3, size, size]`` on ``device``
    in ``dtype``: ImageNet-normalised if ``normalize``, else scaled to [0, 1] (float
    dtypes) or left as is (uint8).

    Random draws are keyed by ``seed`` if given, else by the loader's seed.
    """
    return {"image": [
        DecodeRandomResizedCrop(size, scale=scale, ratio=ratio, seed=seed),
        _to_tensor(device, dtype, normalize),
        RandomHorizontalFlip(flip_p, seed=seed),
        *_normalize(device, dtype, normalize),
    ]}


def supervised_val(
    size: int = 224,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = True,
    ratio: float = 224 / 256,
) -> dict[str, list[Any]]:
    """Evaluation: the centre crop (``ratio`` of the shorter side) resized to ``size``,
    then the same output stages as :func:`supervised_train`. Nothing random (``seed`` is
    accepted for a uniform preset signature)."""
    del seed
    return {"image": [
        DecodeCenterCrop(size, ratio=ratio),
        _to_tensor(device, dtype, normalize),
        *_normalize(device, dtype, normalize),
    ]}
