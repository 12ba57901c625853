"""Batch transforms on CPU or CUDA tensors, with per-sample random parameters."""

from .augment import (
    ColorJitter,
    ColorJitterParams,
    GaussianBlurParams,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomSolarization,
    RandomZoom,
    ZoomParams,
)
from .base import BatchContext, BatchTransform
from .basic import IMAGENET_MEAN, IMAGENET_STD, Normalize, RandomHorizontalFlip, ToTorchImage
from .wrap import Lambda

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchContext",
    "BatchTransform",
    "ColorJitter",
    "ColorJitterParams",
    "GaussianBlurParams",
    "Lambda",
    "Normalize",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomSolarization",
    "RandomZoom",
    "ToTorchImage",
    "ZoomParams",
]
