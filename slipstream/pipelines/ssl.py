"""Self-supervised multi-crop presets: every view cut from one decode of each image.

Each preset returns ``{"image": [DecodeMultiRandomResizedCrop(...), MultiCropPipeline({...})]}``
so a batch holds one tensor per view name. Augmentation probabilities follow the papers
(SimCLR, IPCL, DINO; L-JEPA uses DINO's recipe) and are listed in ``docs/pipelines.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..decoders import DecodeMultiRandomResizedCrop
from ..transforms.augment import (
    ColorJitter,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomSolarization,
)
from ..transforms.basic import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RandomHorizontalFlip,
    ToTorchImage,
)
from ..transforms.multiview import MultiCropPipeline

__all__ = ["ViewRecipe", "simclr", "ipcl", "lejepa", "multicrop", "multiview_pipeline"]


@dataclass(frozen=True)
class ViewRecipe:
    """One view: its crop and the probability of each augmentation (0 disables it)."""

    size: int
    scale: tuple[float, float]
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0


def _blur_kernel(size: int) -> int:
    """About 10% of the view size, odd (SimCLR's rule; 23 taps at 224)."""
    k = max(3, int(round(size * 0.1)))
    return k if k % 2 else k + 1


def _view_stages(r: ViewRecipe, seed: int | None, device: Any, dtype: torch.dtype,
                 normalize: bool) -> list[Any]:
    stages: list[Any] = [ToTorchImage(device, torch.uint8 if normalize else dtype)]
    if r.flip_p:
        stages.append(RandomHorizontalFlip(r.flip_p, seed=seed))
    if r.jitter_p:
        b, c, s, h = r.jitter
        stages.append(ColorJitter(b, c, s, h, p=r.jitter_p, seed=seed))
    if r.grayscale_p:
        stages.append(RandomGrayscale(r.grayscale_p, seed=seed))
    if r.blur_p:
        stages.append(RandomGaussianBlur(r.blur_p, kernel_size=_blur_kernel(r.size), seed=seed))
    if r.solarize_p:
        stages.append(RandomSolarization(r.solarize_p, seed=seed))
    if normalize:
        stages.append(Normalize(IMAGENET_MEAN, IMAGENET_STD, device, dtype))
    return stages


def multiview_pipeline(views: dict[str, ViewRecipe], seed: int | None = None,
                       device: Any = None, dtype: torch.dtype = torch.float32,
                       normalize: bool = True, ratio: Sequence[float] = (3 / 4, 4 / 3),
                       ) -> dict[str, list[Any]]:
    """A pipeline cutting every named view from one decode, each with its own recipe."""
    names = list(views)
    decoder = DecodeMultiRandomResizedCrop(
        [views[n].size for n in names], [views[n].scale for n in names], ratio, names, seed)
    per_view = {n: _view_stages(views[n], seed, device, dtype, normalize) for n in names}
    return {"image": [decoder, MultiCropPipeline(per_view)]}


def simclr(size: int = 224, seed: int | None = None, device: Any = None,
           dtype: torch.dtype = torch.float32, normalize: bool = True) -> dict[str, list[Any]]:
    """SimCLR (ImageNet settings, colour strength 1): ``view_0``, ``view_1``; crop scale
    (0.08, 1), flip 0.5, colour jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale 0.2,
    Gaussian blur 0.5."""
    r = ViewRecipe(size, (0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5)
    return multiview_pipeline({"view_0": r, "view_1": r}, seed, device, dtype, normalize)


def ipcl(size: int = 224, seed: int | None = None, device: Any = None,
         dtype: torch.dtype = torch.float32, normalize: bool = True,
         crops: int = 5) -> dict[str, list[Any]]:
    """IPCL: ``crop_0`` … ``crop_4``; crop scale (0.2, 1), grayscale 0.2, colour jitter
    (0.4, 0.4, 0.4, 0.4) always, flip 0.5 (the instance-prototype recipe)."""
    r = ViewRecipe(size, (0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0)
    return multiview_pipeline({f"crop_{i}": r for i in range(crops)}, seed, device, dtype,
                              normalize)


def _dino_views(global_crops: int, local_crops: int, global_size: int, local_size: int,
                global_scale: tuple[float, float], local_scale: tuple[float, float],
                ) -> dict[str, ViewRecipe]:
    views: dict[str, ViewRecipe] = {}
    for i in range(global_crops):
        # DINO: the first global view always blurred, the second rarely and solarised
        blur, solarize = (1.0, 0.0) if i % 2 == 0 else (0.1, 0.2)
        views[f"global_{i}"] = ViewRecipe(global_size, global_scale, blur_p=blur,
                                          solarize_p=solarize)
    for i in range(local_crops):
        views[f"local_{i}"] = ViewRecipe(local_size, local_scale, blur_p=0.5)
    return views


def lejepa(size: int = 224, seed: int | None = None, device: Any = None,
           dtype: torch.dtype = torch.float32, normalize: bool = True,
           local_size: int = 98, global_crops: int = 2, local_crops: int = 4,
           ) -> dict[str, list[Any]]:
    """L-JEPA: ``global_0``, ``global_1`` at ``size`` (scale 0.3–1) and ``local_0`` …
    ``local_3`` at ``local_size`` (scale 0.05–0.3), with DINO's augmentations."""
    views = _dino_views(global_crops, local_crops, size, local_size, (0.3, 1.0), (0.05, 0.3))
    return multiview_pipeline(views, seed, device, dtype, normalize)


def multicrop(global_crops: int = 2, local_crops: int = 6, size: int = 224,
              local_size: int = 96, global_scale: tuple[float, float] = (0.4, 1.0),
              local_scale: tuple[float, float] = (0.05, 0.4), seed: int | None = None,
              device: Any = None, dtype: torch.dtype = torch.float32,
              normalize: bool = True) -> dict[str, list[Any]]:
    """DINO-style multi-crop: ``global_0`` … at ``size`` and ``local_0`` … at
    ``local_size``, with the given crop scales and DINO's augmentations."""
    views = _dino_views(global_crops, local_crops, size, local_size, global_scale, local_scale)
    return multiview_pipeline(views, seed, device, dtype, normalize)
