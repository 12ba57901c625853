"""Batch transforms on CPU or CUDA tensors, with per-sample random parameters."""

from .base import BatchContext, BatchTransform
from .basic import IMAGENET_MEAN, IMAGENET_STD, Normalize, RandomHorizontalFlip, ToTorchImage

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchContext",
    "BatchTransform",
    "Normalize",
    "RandomHorizontalFlip",
    "ToTorchImage",
]
