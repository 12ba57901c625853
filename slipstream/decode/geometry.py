"""Crop geometry, planned for a whole batch at once before any pixel is decoded.

Boxes are integer ``(top, left, height, width)`` in the source image's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["random_resized_crop_boxes", "center_crop_boxes", "snap_to_dct_grid", "ATTEMPTS"]

#: Attempts before falling back to a centre crop, as torchvision does.
ATTEMPTS = 10


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
        fw = np.where(in_ratio < min(ratio), Wf,
                      np.where(in_ratio > max(ratio), np.rint(Hf * max(ratio)), Wf))
        fh = np.where(in_ratio < min(ratio), np.rint(Wf / min(ratio)),
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


def snap_to_dct_grid(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray,
                     out_h: int, out_w: int) -> np.ndarray:
    """Grow each box outwards to the pixel grid it will be read on.

    A crop decoded at 1/d can only start and end on multiples of d; snapping the plan
    makes the decoded region exactly the planned box. Boxes decoded at full size snap to
    even coordinates, which aligns them with 4:2:0 chroma samples, so YUV420 crops need
    no sub-pixel resampling (a box grows by at most one pixel on each side). See
    :func:`slipstream.decode.pixels.dct_denominator` for the choice of d.
    """
    from .pixels import dct_denominator

    out = boxes.copy()
    for k, (top, left, h, w) in enumerate(boxes):
        d = max(2, dct_denominator(int(h), int(w), out_h, out_w))
        y0, x0 = top // d * d, left // d * d
        y1 = min(int(heights[k]), -(-(top + h) // d) * d)
        x1 = min(int(widths[k]), -(-(left + w) // d) * d)
        out[k] = (y0, x0, y1 - y0, x1 - x0)
    return out
