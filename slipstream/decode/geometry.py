"""Crop geometry, planned for a whole batch at once before any pixel is decoded.

Boxes are integer ``(top, left, height, width)`` in the source image's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "random_resized_crop_boxes",
    "center_crop_boxes",
    "CropPlan",
    "plan_crops",
    "dct_denominators",
    "dct_denominator",
    "snap_to_dct_grid",
    "ATTEMPTS",
]

#: Attempts before falling back to a centre crop, as torchvision does.
ATTEMPTS = 10

#: The DCT scale denominators used: libjpeg-turbo's others cost more than a full decode.
_DENOMS = (2, 4, 8)


def random_resized_crop_boxes(
    heights: np.ndarray,
    widths: np.ndarray,
    u: np.ndarray,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """torchvision's ``RandomResizedCrop.get_params`` for every image, vectorised.

    ``u`` holds uniforms in [0, 1), shape ``(n, 4 * ATTEMPTS)``: per attempt the area
    fraction, the log aspect ratio, and the top and left positions. The first attempt
    whose box fits is taken; if none fits, the centre crop clamped to ``ratio``.
    """
    H = heights.astype(np.float64)[:, None]
    W = widths.astype(np.float64)[:, None]
    u = u.reshape(len(heights), ATTEMPTS, 4)
    area = H * W * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = np.rint(np.sqrt(area * aspect))
    h = np.rint(np.sqrt(area / aspect))
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    top = np.floor(u[..., 2] * (H - h + 1))
    left = np.floor(u[..., 3] * (W - w + 1))
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(heights))
    boxes = np.stack([top[rows, first], left[rows, first], h[rows, first], w[rows, first]], 1)

    fallback = ~ok.any(axis=1)
    if fallback.any():
        Hf, Wf = H[fallback, 0], W[fallback, 0]
        in_ratio = Wf / Hf
        # at least one pixel: a tiny image with an extreme ratio would round to nothing
        fw = np.where(in_ratio < min(ratio), Wf,
                      np.where(in_ratio > max(ratio), np.maximum(1, np.rint(Hf * max(ratio))), Wf))
        fh = np.where(in_ratio < min(ratio), np.maximum(1, np.rint(Wf / min(ratio))),
                      np.where(in_ratio > max(ratio), Hf, Hf))
        boxes[fallback] = np.stack([(Hf - fh) // 2, (Wf - fw) // 2, fh, fw], 1)
    return boxes.astype(np.int64)


def center_crop_boxes(heights: np.ndarray, widths: np.ndarray, ratio: float) -> np.ndarray:
    """A centred square of side ``ratio * min(height, width)`` (``Resize`` + ``CenterCrop``)."""
    H = heights.astype(np.int64)
    W = widths.astype(np.int64)
    side = np.maximum(1, np.rint(np.minimum(H, W) * ratio)).astype(np.int64)
    top = np.rint((H - side) / 2).astype(np.int64)
    left = np.rint((W - side) / 2).astype(np.int64)
    return np.stack([top, left, side, side], 1)


@dataclass(frozen=True)
class CropPlan:
    """A batch's crops, planned once before any pixel is decoded.

    ``boxes`` (``int64 (n, 4)``, C-contiguous): full-resolution ``(top, left, height,
    width)``; ``denoms`` (``int64 (n,)``): the DCT scale 1/d (d in 1, 2, 4, 8) a JPEG
    sample is decoded at. Each box lies on the grid of its scale, so the decoded region
    is exactly the box; the decode kernel obeys both and derives nothing itself. Reads
    like the boxes array (indexing, iteration, ``np.asarray``, ``.T``).
    """

    boxes: np.ndarray
    denoms: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, k: Any) -> np.ndarray:
        return self.boxes[k]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.boxes)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.boxes if dtype is None else self.boxes.astype(dtype)

    @property
    def T(self) -> np.ndarray:  # noqa: N802 (numpy's name)
        return self.boxes.T


def dct_denominators(box_h: np.ndarray, box_w: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Per box, the largest power-of-two DCT scaling (1/2, 1/4, 1/8) that still leaves the
    crop at least ``out_h x out_w``, else 1. libjpeg-turbo's other factors cost more than
    a full decode (measured; see ARCHITECTURE.md)."""
    d = np.ones(len(box_h), np.int64)
    for den in _DENOMS:
        d[(box_h >= out_h * den) & (box_w >= out_w * den)] = den
    return d


def dct_denominator(box_h: int, box_w: int, out_h: int, out_w: int) -> int:
    """:func:`dct_denominators` for one box."""
    return int(dct_denominators(np.array([box_h]), np.array([box_w]), out_h, out_w)[0])


def plan_crops(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray, out_h: int,
               out_w: int) -> CropPlan:
    """The :class:`CropPlan` of ``boxes`` resized to ``out_h x out_w``: each box's DCT
    scale 1/d (:func:`dct_denominators`), and the box grown outwards to the grid it is
    read on.

    A crop decoded at 1/d can only start and end on multiples of d; snapping the plan
    makes the decoded region exactly the planned box. Boxes decoded at full size snap to
    even coordinates, which aligns them with 4:2:0 chroma samples, so YUV420 crops need
    no sub-pixel resampling (a box grows by at most one pixel on each side).
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    H = np.asarray(heights, np.int64)
    W = np.asarray(widths, np.int64)
    top, left, h, w = boxes.T
    denoms = dct_denominators(h, w, out_h, out_w)
    g = np.maximum(2, denoms)
    y0, x0 = top // g * g, left // g * g
    y1 = np.minimum(H, -(-(top + h) // g) * g)
    x1 = np.minimum(W, -(-(left + w) // g) * g)
    snapped = np.ascontiguousarray(np.stack([y0, x0, y1 - y0, x1 - x0], 1))
    return CropPlan(snapped, denoms)


def snap_to_dct_grid(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray,
                     out_h: int, out_w: int) -> np.ndarray:
    """The boxes of :func:`plan_crops` (without their scales)."""
    return plan_crops(boxes, heights, widths, out_h, out_w).boxes
