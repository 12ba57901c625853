"""Per-sample pixel work outside the native kernel: whole-image decodes (``DecodeOnly``)
and the codecs the kernel leaves to Python (Pillow's formats, raw RGB).

JPEG and YUV 4:2:0 crops go through :mod:`slipstream.decode.kernel`, a slice of a batch
per call. Everything heavy here (libjpeg-turbo, Pillow's decoders, the kernel's resize)
runs with the GIL released.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence

import numpy as np

from ..cache.layout import Codec
from . import kernel
from .geometry import dct_denominator
from .libturbojpeg import TurboDecoder, scaled_size

__all__ = [
    "ThreadState",
    "thread_state",
    "decode_image",
    "crop_box",
    "resize_into",
    "dct_denominator",
    "PARTIAL_DECODE_ENV",
    "partial_decode",
    "partial_decode_on",
]

#: ``0`` turns partial JPEG decoding off (see :data:`partial_decode`); ``1`` or unset: on.
PARTIAL_DECODE_ENV = "SLIPSTREAM_PARTIAL_DECODE"

#: Whether the kernel decodes only a JPEG crop's region (same pixels, less work). ``None``
#: follows :data:`PARTIAL_DECODE_ENV`; ``True``/``False`` override it for this process
#: (benchmarks compare both).
partial_decode: bool | None = None

_env_partial_decode: bool | None = None  # PARTIAL_DECODE_ENV, read once per process


def partial_decode_on() -> bool:
    """Asked once per batch slice: the environment is read only the first time."""
    global _env_partial_decode
    if partial_decode is not None:
        return partial_decode
    if _env_partial_decode is None:
        value = os.environ.get(PARTIAL_DECODE_ENV) or "1"
        if value not in ("0", "1"):
            raise ValueError(f"{PARTIAL_DECODE_ENV}={value!r}: expected 0 (decode whole JPEGs) "
                             "or 1 (decode only the crop's region)")
        _env_partial_decode = value == "1"
    return _env_partial_decode


class ThreadState:
    """What one decode thread keeps between samples: a TurboJPEG handle (made on first use)
    and scratch memory."""

    def __init__(self, fast_dct: bool = False) -> None:
        self._fast_dct = fast_dct
        self._turbo: TurboDecoder | None = None
        self._scratch = np.empty(0, np.uint8)

    @property
    def turbo(self) -> TurboDecoder:
        if self._turbo is None:
            self._turbo = TurboDecoder(fast_dct=self._fast_dct)
        return self._turbo

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
    ignore ``denom``). A JPEG's pixels are a view into scratch memory: use them before
    the next call."""
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
        kernel.decode_sample(data, codec, height, width, [(0, 0, height, width)], 1, [out])
        return out
    raise ValueError(f"unknown image codec {codec}")


def crop_box(img: np.ndarray, box: np.ndarray | Sequence[int]) -> np.ndarray:
    """The pixels of ``box`` (``(top, left, height, width)``) of ``img``."""
    top, left, h, w = (int(v) for v in box)
    return img[top : top + h, left : left + w]


def resize_into(region: np.ndarray, out: np.ndarray) -> None:
    """Resize ``region`` into ``out`` with Pillow's anti-aliased bilinear filter (the
    kernel's resize, as for JPEG and YUV420 crops); copy if the size is the same."""
    oh, ow = out.shape[:2]
    if region.shape[0] == oh and region.shape[1] == ow:
        out[...] = region
        return
    kernel.resize(region, out)
