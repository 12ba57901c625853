"""Tensor conversion, normalisation and flips for batches on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import BatchContext, BatchTransform, resolve_device

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ToTorchImage", "Normalize", "RandomHorizontalFlip"]

#: ImageNet channel statistics on the [0, 1] scale (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ToTorchImage(BatchTransform):
    """``[B, H, W, 3] uint8`` (as decoders write) → ``[B, 3, H, W]`` on ``device`` in ``dtype``.

    The channel permutation is a view (the result is channels-last in memory, which
    convolutions on CUDA prefer). Floating dtypes are scaled to [0, 1]; ``uint8`` is
    left as is. On CUDA the copy is asynchronous from pinned memory.
    """

    def __init__(self, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.uint8) -> None:
        self.device = resolve_device(device)
        self.dtype = dtype

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        if batch.dim() != 4 or batch.shape[-1] != 3:
            raise ValueError(f"ToTorchImage expects [B, H, W, 3] images, got {tuple(batch.shape)}")
        x = batch.permute(0, 3, 1, 2)
        if self.device is not None and x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        if self.dtype != x.dtype:
            x = x.to(self.dtype)
            if self.dtype.is_floating_point and batch.dtype == torch.uint8:
                x = x.mul_(1 / 255)
        return x


class Normalize(BatchTransform):
    """``(x - mean) / std`` per channel on ``[B, 3, H, W]``; ``uint8`` input is scaled to [0, 1]
    first. ``mean``/``std`` are on the [0, 1] scale. Output is ``dtype`` (float32 default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"Normalize: dtype must be a floating type (normalised values are "
                             f"fractions), got {dtype}; use normalize=False for {dtype} output")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"Normalize needs equal-length mean and positive std, got "
                             f"mean={mean}, std={std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.device = resolve_device(device)
        self.dtype = dtype
        self._cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats(self, device: torch.device, dtype: torch.dtype, scale: float):
        key = (device, dtype, scale)
        if key not in self._cache:
            mean = torch.tensor(self.mean, device=device, dtype=torch.float64) * scale
            std = torch.tensor(self.std, device=device, dtype=torch.float64) * scale
            self._cache[key] = (mean.to(dtype).view(1, -1, 1, 1),
                                (1 / std).to(dtype).view(1, -1, 1, 1))
        return self._cache[key]

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        x = batch
        if self.device is not None and x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        mean, inv_std = self._stats(x.device, self.dtype, scale)
        return (x.to(self.dtype) - mean).mul_(inv_std)


class RandomHorizontalFlip(BatchTransform):
    """Mirror each image left-right with probability ``p``, decided per sample from the
    batch context (a sample's flip does not depend on its batch, thread or rank).

    Works on ``[B, C, H, W]`` tensors (after :class:`ToTorchImage`), in place.
    """

    def __init__(self, p: float = 0.5, device: str | torch.device | None = None,
                 seed: int | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p
        self.device = resolve_device(device)
        self.seed = seed

    def flags(self, ctx: BatchContext) -> np.ndarray:
        """Which samples of the batch are flipped."""
        return ctx.reseeded(self.seed).uniforms("hflip")[:, 0] < self.p

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        if batch.dim() != 4:
            raise ValueError(f"RandomHorizontalFlip expects [B, C, H, W], got {tuple(batch.shape)}")
        if self.device is not None and batch.device != self.device:
            batch = batch.to(self.device, non_blocking=True)
        chosen = np.flatnonzero(self.flags(ctx))
        if len(chosen):
            idx = torch.from_numpy(chosen).to(batch.device)
            batch[idx] = batch[idx].flip(-1)
        return batch
