"""Per-sample pixel work inside decode threads: bytes → RGB region → resized output.

Everything heavy here (libjpeg-turbo, Pillow's decoders, OpenCV's resize) runs with
the GIL released.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Sequence

import numpy as np

from ..cache.layout import Codec
from .libturbojpeg import TurboDecoder, scaled_size

__all__ = [
    "ThreadState",
    "thread_state",
    "decode_image",
    "crop_box",
    "scaled_box",
    "decode_region",
    "crop_resize_into",
    "resize_into",
    "antialiased_resize",
    "dct_denominator",
    "PARTIAL_DECODE_ENV",
    "partial_decode",
]

_DENOMS = (8, 4, 2)

#: ``0`` turns partial JPEG decoding off (see :data:`partial_decode`); ``1`` or unset: on.
PARTIAL_DECODE_ENV = "SLIPSTREAM_PARTIAL_DECODE"

#: Whether :func:`decode_region` decodes only a JPEG crop's region when libturbojpeg has
#: the TurboJPEG 3 API (same pixels, less work). ``None`` follows
#: :data:`PARTIAL_DECODE_ENV`; ``True``/``False`` override it for this process (benchmarks
#: compare both).
partial_decode: bool | None = None


_env_partial_decode: bool | None = None  # PARTIAL_DECODE_ENV, read once per process


def _partial_decode_on() -> bool:
    """Asked for every JPEG crop: the environment is read only the first time."""
    global _env_partial_decode
    if partial_decode is not None:
        return partial_decode
    if _env_partial_decode is None:
        value = os.environ.get(PARTIAL_DECODE_ENV) or "1"
        if value not in ("0", "1"):
            raise ValueError(f"{PARTIAL_DECODE_ENV}={value!r}: expected 0 (decode whole JPEGs) "
                             "or 1 (decode only the crop where libturbojpeg can)")
        _env_partial_decode = value == "1"
    return _env_partial_decode


def _ends_at_eoi(data: np.ndarray) -> bool:
    """The data's last bytes are JPEG's end-of-image marker: not visibly truncated."""
    return data.nbytes >= 2 and data[-2] == 0xFF and data[-1] == 0xD9


class ThreadState:
    """What one decode thread keeps between samples: its TurboJPEG handle and scratch."""

    def __init__(self, fast_dct: bool = False) -> None:
        self.turbo = TurboDecoder(fast_dct=fast_dct)
        self._scratch = np.empty(0, np.uint8)
        self._buffers: dict[str, np.ndarray] = {}

    def buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A named per-thread ``uint8`` buffer of ``shape``, reused while the shape holds."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = np.empty(shape, np.uint8)
        return buf

    def scratch(self, h: int, w: int) -> np.ndarray:
        n = h * w * 3
        if self._scratch.nbytes < n:
            self._scratch = np.empty(int(n * 1.25), np.uint8)
        return self._scratch[:n].reshape(h, w, 3)


_local = threading.local()


def thread_state() -> ThreadState:
    state = getattr(_local, "state", None)
    if state is None:
        state = _local.state = ThreadState()
    return state


def dct_denominator(box_h: int, box_w: int, out_h: int, out_w: int) -> int:
    """The largest power-of-two DCT scaling that still leaves the crop at least output size.

    Only 1/2, 1/4 and 1/8 are used: libjpeg-turbo's other factors cost more than a
    full decode (measured; see ARCHITECTURE.md).
    """
    for d in _DENOMS:
        if box_h >= out_h * d and box_w >= out_w * d:
            return d
    return 1


def _pil_rgb(data: np.ndarray) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data.tobytes())) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            # 16-bit modes span 0..65535; mode "I" (32-bit) is often 8- or 16-bit data
            peak = 65535.0 if im.mode != "I" or arr.max() > 255 else 255.0
            gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            # composite on white, as viewers show transparent pixels
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
        return np.asarray(im.convert("RGB"))


def decode_image(state: ThreadState, data: np.ndarray, codec: int, height: int, width: int,
                 denom: int = 1, fast: bool = False) -> np.ndarray:
    """The whole image as RGB, DCT-downscaled by ``1/denom`` when it is a JPEG (other codecs
    ignore ``denom``). A view into scratch memory: use it before the next call."""
    if codec == Codec.JPEG:
        img = state.scratch(scaled_size(height, denom), scaled_size(width, denom))
        state.turbo.decode_rgb(data, img, fast)
        return img
    if codec == Codec.RAW_RGB:
        return data.reshape(height, width, 3)
    if codec == Codec.ENCODED:
        return _pil_rgb(data)
    if codec == Codec.YUV420:
        out = np.empty((height, width, 3), np.uint8)
        crop_resize_into(state, data, codec, height, width, (0, 0, height, width), out)
        return out
    raise ValueError(f"unknown image codec {codec}")


def scaled_box(box: np.ndarray | Sequence[int], denom: int, scaled_h: int,
               scaled_w: int) -> tuple[int, int, int, int]:
    """``box`` (full-resolution ``(top, left, height, width)``) on the grid of the image
    decoded at 1/denom (``scaled_h x scaled_w``): rounded outwards, clipped to the image."""
    top, left, h, w = (int(v) for v in box)
    if denom == 1:
        return top, left, h, w
    y0, x0 = top // denom, left // denom
    y1 = min(scaled_h, -(-(top + h) // denom))
    x1 = min(scaled_w, -(-(left + w) // denom))
    return y0, x0, y1 - y0, x1 - x0


def crop_box(img: np.ndarray, box: np.ndarray | Sequence[int], denom: int) -> np.ndarray:
    """The pixels of ``box`` (full-resolution coordinates) in an image decoded at 1/denom."""
    top, left, h, w = scaled_box(box, denom, img.shape[0], img.shape[1])
    return img[top : top + h, left : left + w]


def crop_resize_into(state: ThreadState, data: np.ndarray, codec: int, height: int,
                     width: int, box: np.ndarray | Sequence[int], out: np.ndarray,
                     fast: bool = False) -> None:
    """The crop ``box`` of a stored image, resized into ``out`` (``uint8 [h, w, 3]``)."""
    if codec == Codec.YUV420:
        from .yuv import yuv420_crop_resize_into

        yuv420_crop_resize_into(data, height, width, box, out,
                                state.buffer("ycc", out.shape))
        return
    out_h, out_w = out.shape[:2]
    resize_into(decode_region(state, data, codec, height, width, box, out_h, out_w, fast=fast),
                out)


def decode_region(
    state: ThreadState,
    data: np.ndarray,
    codec: int,
    height: int,
    width: int,
    box: np.ndarray | Sequence[int] | None,
    out_h: int | None = None,
    out_w: int | None = None,
    fast: bool = False,
) -> np.ndarray:
    """The RGB pixels of ``box`` (or the whole image), possibly DCT-downscaled so that the
    region is still at least ``out_h x out_w``. A view into scratch memory: use it
    before the next call on this thread.

    A JPEG crop decodes only its region when :data:`partial_decode` allows and the
    library can (same pixels), except with ``fast`` (see
    :meth:`~slipstream.decode.libturbojpeg.TurboDecoder.decode_region_rgb`). Data that
    does not end at the end-of-image marker (truncated, or followed by other bytes) is
    decoded whole, so that truncation is an error whichever crop is asked for.
    """
    if box is None:
        return decode_image(state, data, codec, height, width)
    d = 1
    if codec == Codec.JPEG and out_h and out_w:
        d = dct_denominator(int(box[2]), int(box[3]), out_h, out_w)
    if (codec == Codec.JPEG and not fast and state.turbo.supports_crop
            and _partial_decode_on() and _ends_at_eoi(data)):
        region = scaled_box(box, d, scaled_size(height, d), scaled_size(width, d))
        return state.turbo.decode_region_rgb(data, region, d, state.scratch)
    return crop_box(decode_image(state, data, codec, height, width, d, fast), box, d)


def antialiased_resize(src: np.ndarray, out_h: int, out_w: int,
                       dst: np.ndarray | None = None) -> np.ndarray:
    """Resize ``src`` (one or three channels) to ``out_h × out_w``, anti-aliased.

    Enlarging: bilinear. Shrinking by less than 2x (what JPEG crops come to after DCT
    scaling): a Gaussian pre-blur of sigma ``0.5·sqrt(f² − 1)`` per axis for a shrink
    factor ``f``, then bilinear; this matches Pillow's anti-aliased bilinear filter as
    closely as OpenCV's area mode does (tests/test_decoders.py) at a third of its cost.
    Shrinking 2x or more both ways: area averaging.
    """
    import cv2

    rh, rw = src.shape[:2]
    fy, fx = rh / out_h, rw / out_w
    if fy >= 2 and fx >= 2:
        return cv2.resize(src, (out_w, out_h), dst=dst, interpolation=cv2.INTER_AREA)
    sy = 0.5 * math.sqrt(fy * fy - 1) if fy > 1 else 0.0
    sx = 0.5 * math.sqrt(fx * fx - 1) if fx > 1 else 0.0
    if max(sx, sy) > 0.2:
        # sigma stays under 0.87 here, where a 3-tap kernel holds 97%+ of the Gaussian
        src = cv2.GaussianBlur(src, (3, 3), sigmaX=max(sx, 1e-3), sigmaY=max(sy, 1e-3))
    return cv2.resize(src, (out_w, out_h), dst=dst, interpolation=cv2.INTER_LINEAR)


def resize_into(region: np.ndarray, out: np.ndarray) -> None:
    """Resize ``region`` into ``out`` with :func:`antialiased_resize` (copy if same size)."""
    oh, ow = out.shape[:2]
    if region.shape[0] == oh and region.shape[1] == ow:
        out[...] = region
        return
    antialiased_resize(region, oh, ow, dst=out)
