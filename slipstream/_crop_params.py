"""``<field>_params``: where each sample's crop came from, for decoders made with
``return_params=True``.

One ``int64`` row per sample: ``top, left, height, width`` of the region of the stored
image that was read (the decoder's plan, snapped to the pixel grid it decodes on), and
``flip``, 1 when the pipeline's :class:`RandomHorizontalFlip` stages mirrored the sample
(an odd number of them). Multi-view pipelines give a dict of such tensors, one per view.
Other geometric transforms (``RandomZoom``, a ``Lambda``) are not described.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .decoders import ImageDecoder
from .transforms.base import BatchContext
from .transforms.basic import RandomHorizontalFlip
from .transforms.multiview import MultiCropPipeline, NamedCopies

__all__ = ["CROP_PARAMS_COLUMNS", "crop_params"]

#: The columns of a ``<field>_params`` tensor.
CROP_PARAMS_COLUMNS = ("top", "left", "height", "width", "flip")


def _flips(stages: Sequence[Any], ctx: BatchContext) -> np.ndarray:
    flipped = np.zeros(len(ctx.indices), bool)
    for stage in stages:
        if isinstance(stage, RandomHorizontalFlip):
            flipped ^= stage.flags(ctx)
    return flipped


def _table(boxes: torch.Tensor, flipped: np.ndarray) -> torch.Tensor:
    return torch.cat([boxes, torch.from_numpy(flipped.astype(np.int64))[:, None]], 1)


def crop_params(decoder: ImageDecoder, transforms: Sequence[Any], plan: Any, n: int,
                ctx: BatchContext, keep: np.ndarray | None) -> Any:
    """The ``<field>_params`` value of a batch of ``n`` planned samples (of which ``keep``
    are served; ``ctx`` is the served samples' context), or ``None`` when not asked for."""
    boxes = decoder.params(plan, n)
    if boxes is None:
        return None

    def served(b: torch.Tensor) -> torch.Tensor:
        return b if keep is None else b[torch.from_numpy(keep)]

    copies = [t.names for t in transforms if isinstance(t, NamedCopies)]
    names = list(boxes) if isinstance(boxes, dict) else (copies[0] if copies else None)
    if names is None:
        return _table(served(boxes), _flips(transforms, ctx))
    views = [t for t in transforms if isinstance(t, MultiCropPipeline)]
    out = {}
    for name in names:
        flipped = np.zeros(len(ctx.indices), bool)
        for multi in views:  # the k-th view of a MultiCropPipeline draws as view k
            if name in multi.pipelines:
                k = list(multi.pipelines).index(name)
                flipped ^= _flips(multi.pipelines[name], ctx.for_view(k))
        out[name] = _table(served(boxes[name] if isinstance(boxes, dict) else boxes), flipped)
    return out
