"""The TurboJPEG 3 API's part that decodes a region: declarations, an ABI self-check, and
the window a crop needs.

TurboJPEG 3 (libjpeg-turbo >= 3.0, exported as ``tj3*`` next to the 2.x functions) can
decode a region: rows below it are never decoded, and rows above it and columns outside
it skip the IDCT and colour conversion. Its parameters are an enum (``TJPARAM``) whose
values are compiled into callers, so :func:`check_abi` verifies the ones used here
against the library's own 2.x functions before the first region decode.
"""

from __future__ import annotations

import ctypes

import numpy as np

__all__ = [
    "Region",
    "ScalingFactor",
    "declare",
    "check_abi",
    "decode_window",
    "imcu_width",
    "TJINIT_DECOMPRESS",
    "TJPARAM_SUBSAMP",
    "TJPARAM_JPEGWIDTH",
    "TJPARAM_JPEGHEIGHT",
    "TJPARAM_FASTUPSAMPLE",
    "TJPARAM_FASTDCT",
    "CONTEXT",
]

TJINIT_DECOMPRESS = 1
# enum TJPARAM (turbojpeg.h, libjpeg-turbo 3.0 and later)
TJPARAM_SUBSAMP = 4
TJPARAM_JPEGWIDTH = 5
TJPARAM_JPEGHEIGHT = 6
TJPARAM_COLORSPACE = 8
TJPARAM_FASTUPSAMPLE = 9
TJPARAM_FASTDCT = 10

#: tjMCUWidth by TJSAMP (4:4:4, 4:2:2, 4:2:0, gray, 4:4:0, 4:1:1, 4:4:1): a region must
#: start on a multiple of this (scaled by the DCT scaling factor).
_MCU_WIDTH = (8, 16, 16, 8, 8, 32, 8)

#: Scaled pixels decoded beyond the crop on every side. Fancy (triangle) chroma
#: upsampling reads neighbouring chroma samples, which a region decode replaces with its
#: own edge: without a margin the crop's outer rows and columns differ from a full
#: decode by up to ~50 levels. One pixel leaves 2-pixel-wide 4:2:0 regions off; two
#: made every crop bit-identical to the full decode (~20000 random crops: every TJSAMP,
#: baseline and progressive, 1 to 700 pixels, scaling 1/1 to 1/8).
CONTEXT = 2


class Region(ctypes.Structure):
    """``tjregion``."""

    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int),
                ("h", ctypes.c_int)]


class ScalingFactor(ctypes.Structure):
    """``tjscalingfactor``."""

    _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


def declare(lib: ctypes.CDLL) -> None:
    """Declare the argument and result types of the tj3 functions used here."""
    c = ctypes
    lib.tj3Init.restype = c.c_void_p
    lib.tj3Init.argtypes = [c.c_int]
    lib.tj3Destroy.restype = None
    lib.tj3Destroy.argtypes = [c.c_void_p]
    lib.tj3DecompressHeader.argtypes = [c.c_void_p, c.c_void_p, c.c_size_t]
    lib.tj3Get.argtypes = [c.c_void_p, c.c_int]
    lib.tj3Set.argtypes = [c.c_void_p, c.c_int, c.c_int]
    lib.tj3SetScalingFactor.argtypes = [c.c_void_p, ScalingFactor]
    lib.tj3SetCroppingRegion.argtypes = [c.c_void_p, Region]
    lib.tj3Decompress8.argtypes = [c.c_void_p, c.c_void_p, c.c_size_t, c.c_void_p, c.c_int,
                                   c.c_int]
    lib.tj3GetErrorStr.restype = c.c_char_p
    lib.tj3GetErrorStr.argtypes = [c.c_void_p]
    lib.tj3GetErrorCode.argtypes = [c.c_void_p]
    lib.tjInitCompress.restype = c.c_void_p
    lib.tjInitCompress.argtypes = []
    lib.tjCompress2.argtypes = [
        c.c_void_p, c.c_void_p, c.c_int, c.c_int, c.c_int, c.c_int,
        c.POINTER(c.POINTER(c.c_ubyte)), c.POINTER(c.c_ulong), c.c_int, c.c_int, c.c_int,
    ]
    lib.tjFree.restype = None
    lib.tjFree.argtypes = [c.c_void_p]


def imcu_width(subsampling: int, denom: int) -> int | None:
    """The scaled iMCU width a region's left edge must be a multiple of, or ``None`` for a
    subsampling TurboJPEG cannot crop (``TJSAMP_UNKNOWN``)."""
    if not 0 <= subsampling < len(_MCU_WIDTH):
        return None
    return -(-_MCU_WIDTH[subsampling] // denom)


def decode_window(region: tuple[int, int, int, int], scaled_h: int, scaled_w: int,
                  imcu_w: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` to decode for ``region`` (same form, scaled pixels):
    :data:`CONTEXT` pixels wider on every side, clipped to the image, left edge moved
    down to a multiple of ``imcu_w``."""
    top, left, h, w = region
    y0 = max(0, top - CONTEXT)
    x0 = max(0, left - CONTEXT) // imcu_w * imcu_w
    y1 = min(scaled_h, top + h + CONTEXT)
    x1 = min(scaled_w, left + w + CONTEXT)
    return y0, x0, y1 - y0, x1 - x0


_TJPF_RGB = 0
_TJSAMP_420 = 2
_TJCS_YCBCR = 1
_TJFLAG_FASTDCT = 2048


def _probe_jpeg(lib: ctypes.CDLL) -> bytes:
    """A small noisy 4:2:0 JPEG of odd size, encoded by ``lib``'s 2.x API: the fast IDCT
    changes its decoded pixels."""
    rgb = np.random.default_rng(0).integers(0, 256, (21, 37, 3), dtype=np.uint8)
    handle = lib.tjInitCompress()
    if not handle:
        raise MemoryError("tjInitCompress failed")
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    try:
        if lib.tjCompress2(handle, rgb.ctypes.data, 37, 37 * 3, 21, _TJPF_RGB,
                           ctypes.byref(buf), ctypes.byref(size), _TJSAMP_420, 95, 0):
            raise RuntimeError(lib.tjGetErrorStr2(handle).decode(errors="replace"))
        return ctypes.string_at(buf, size.value)
    finally:
        if buf:
            lib.tjFree(buf)
        lib.tjDestroy(handle)


def check_abi(lib: ctypes.CDLL, where: str) -> None:
    """Raise ``RuntimeError`` (naming ``where``) unless ``lib``'s tj3 functions read the
    ``TJPARAM`` values this module uses as this module means them: the header values
    must match the 2.x API's, and decodes with and without the fast IDCT (smooth chroma
    upsampling set explicitly) must match ``tjDecompress2``'s, bit for bit."""
    data = np.frombuffer(_probe_jpeg(lib), np.uint8)
    old = lib.tjInitDecompress()
    new = lib.tj3Init(TJINIT_DECOMPRESS)
    try:
        if not old or not new:
            raise MemoryError("cannot create TurboJPEG decompressors")
        w, h, ss, cs = (ctypes.c_int() for _ in range(4))
        if (lib.tjDecompressHeader3(old, data.ctypes.data, data.nbytes, ctypes.byref(w),
                                    ctypes.byref(h), ctypes.byref(ss), ctypes.byref(cs))
                or lib.tj3DecompressHeader(new, data.ctypes.data, data.nbytes)):
            raise RuntimeError("cannot read the header of a JPEG it encoded itself")
        want = {"width": (TJPARAM_JPEGWIDTH, w.value), "height": (TJPARAM_JPEGHEIGHT, h.value),
                "subsampling": (TJPARAM_SUBSAMP, ss.value),
                "colorspace": (TJPARAM_COLORSPACE, cs.value)}
        got = {k: lib.tj3Get(new, p) for k, (p, _) in want.items()}
        if got != {k: v for k, (_, v) in want.items()} or ss.value != _TJSAMP_420 \
                or cs.value != _TJCS_YCBCR:
            raise RuntimeError(f"tj3Get reads {got}, the 2.x API "
                               f"{ {k: v for k, (_, v) in want.items()} }")
        for fast_dct in (0, 1):
            flags = _TJFLAG_FASTDCT * fast_dct
            a = np.zeros((21, 37, 3), np.uint8)
            b = np.ones((21, 37, 3), np.uint8)
            if lib.tjDecompress2(old, data.ctypes.data, data.nbytes, a.ctypes.data, 37, 37 * 3,
                                 21, _TJPF_RGB, flags):
                raise RuntimeError(lib.tjGetErrorStr2(old).decode(errors="replace"))
            for rc in (lib.tj3DecompressHeader(new, data.ctypes.data, data.nbytes),
                       lib.tj3Set(new, TJPARAM_FASTDCT, fast_dct),
                       lib.tj3Set(new, TJPARAM_FASTUPSAMPLE, 0),
                       lib.tj3SetScalingFactor(new, ScalingFactor(1, 1)),
                       lib.tj3SetCroppingRegion(new, Region(0, 0, 0, 0)),
                       lib.tj3Decompress8(new, data.ctypes.data, data.nbytes, b.ctypes.data,
                                          37 * 3, _TJPF_RGB)):
                if rc:
                    raise RuntimeError(lib.tj3GetErrorStr(new).decode(errors="replace"))
            if not np.array_equal(a, b):
                raise RuntimeError(f"a tj3 decode with FASTDCT={fast_dct} differs from "
                                   f"tjDecompress2 with flags {flags}")
    except RuntimeError as exc:
        raise RuntimeError(
            f"{where}: its TurboJPEG 3 API does not behave as slipstream expects ({exc}). "
            "Set SLIPSTREAM_PARTIAL_DECODE=0 to decode whole images, or point "
            "SLIPSTREAM_TURBOJPEG_LIB at another libturbojpeg") from exc
    finally:
        if old:
            lib.tjDestroy(old)
        if new:
            lib.tj3Destroy(new)
