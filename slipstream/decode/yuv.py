"""YUV 4:2:0 planes: made once at cache time, cropped and resized at load time.

Planes hold full-range (JFIF) YCbCr, as JPEG stores it: ``Y`` is ``h × w``, ``Cb`` and
``Cr`` are ``ceil(h/2) × ceil(w/2)``, concatenated in that order. From a 4:2:0 JPEG
the planes come straight out of libjpeg-turbo (no colour conversion, no lossy step);
other subsamplings and formats are converted. At load time the three planes of the
crop are resized to the output size and converted to RGB by the native kernel
(:mod:`slipstream.decode.kernel`): no entropy decoding at all.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .libturbojpeg import library, refuse_undecodable

__all__ = ["yuv420_size", "jpeg_to_yuv420", "rgb_to_yuv420", "split_planes"]

_TJSAMP_420 = 2
_TJSAMP_GRAY = 3


def yuv420_size(height: int, width: int) -> int:
    ch, cw = (height + 1) // 2, (width + 1) // 2
    return height * width + 2 * ch * cw


def split_planes(data: np.ndarray, height: int, width: int):
    """Views of Y, Cb, Cr in a packed buffer."""
    ch, cw = (height + 1) // 2, (width + 1) // 2
    n = height * width
    y = data[:n].reshape(height, width)
    cb = data[n : n + ch * cw].reshape(ch, cw)
    cr = data[n + ch * cw : n + 2 * ch * cw].reshape(ch, cw)
    return y, cb, cr


def _chroma_420(plane: np.ndarray, ch: int, cw: int) -> np.ndarray:
    import cv2

    if plane.shape == (ch, cw):
        return plane
    return cv2.resize(plane, (cw, ch), interpolation=cv2.INTER_AREA)


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """Full-range YCbCr 4:2:0 planes of an RGB image (chroma averaged over 2×2)."""
    import cv2

    h, w = rgb.shape[:2]
    ycrcb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    out = np.empty(yuv420_size(h, w), np.uint8)
    y, cb, cr = split_planes(out, h, w)
    y[...] = ycrcb[..., 0]
    cb[...] = _chroma_420(np.ascontiguousarray(ycrcb[..., 2]), ch, cw)
    cr[...] = _chroma_420(np.ascontiguousarray(ycrcb[..., 1]), ch, cw)
    return out


def jpeg_to_yuv420(turbo, data: np.ndarray) -> np.ndarray:  # turbo: TurboDecoder
    """The JPEG's own YCbCr planes (4:2:0 as stored; other subsamplings resampled)."""
    refuse_undecodable(data)  # lossless, 12-bit: never handed to the library
    hdr = turbo.header(data)
    h, w, samp = hdr.height, hdr.width, hdr.subsampling
    if samp == _TJSAMP_420:
        out = np.empty(yuv420_size(h, w), np.uint8)
        ch, cw = (h + 1) // 2, (w + 1) // 2
        if h % 2 == 0 and w % 2 == 0:
            _decode_planes(turbo, data, [out[: h * w], out[h * w :], out[h * w + ch * cw :]],
                           [w, cw, cw], h, w)
            return out
        # TurboJPEG pads the luma plane of a 4:2:0 image to even width and height
        # (tjPlaneWidth/tjPlaneHeight): decode luma into a padded buffer, then pack
        luma = np.empty((2 * ch, 2 * cw), np.uint8)
        y, cb, cr = split_planes(out, h, w)
        _decode_planes(turbo, data, [luma, cb, cr], [2 * cw, cw, cw], h, w)
        y[...] = luma[:h, :w]
        return out
    if samp == _TJSAMP_GRAY:
        out = np.full(yuv420_size(h, w), 128, np.uint8)
        _decode_planes(turbo, data, [out[: h * w]], [w], h, w)
        return out
    # 4:4:4, 4:2:2, 4:4:0, 4:1:1: decode to RGB and convert (rare in photo datasets)
    rgb = np.empty((h, w, 3), np.uint8)
    turbo.decode_rgb(data, rgb)
    return rgb_to_yuv420(rgb)


def _decode_planes(turbo, data: np.ndarray, planes: list[np.ndarray], strides: list[int],
                   h: int, w: int) -> None:
    """libjpeg-turbo's YUV planes of ``data`` into ``planes`` (each at least as large as
    TurboJPEG's plane size for its stride)."""
    n = len(planes)
    ptrs = (ctypes.c_void_p * 3)(*[p.ctypes.data for p in planes], *([None] * (3 - n)))
    c_strides = (ctypes.c_int * 3)(*strides, *([0] * (3 - n)))
    rc = library().tjDecompressToYUVPlanes(turbo._handle, data.ctypes.data, data.nbytes, ptrs, w,
                                           c_strides, h, turbo.flags)
    turbo._check(rc, "decoding the JPEG to YUV planes")
