"""A minimal ctypes binding of libjpeg-turbo's TurboJPEG API for the hot path.

PyTurboJPEG allocates a new array per decode; here a worker decodes straight into a
buffer it owns. ctypes releases the GIL for the duration of each call, so decoding
threads run in parallel. Whole images decode through the 2.x API, which every
libjpeg-turbo since 1.4 has; when the library also has the 3.x API (``tj3*``), crops
decode only their region (:meth:`TurboDecoder.decode_region_rgb`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import MissingDependencyError
from . import _tj3
from .jpeg_frame import read_frame, undecodable_reason
from .turbo import _INSTALL_HINT, TURBOJPEG_LIB_ENV

__all__ = ["JpegHeader", "TurboDecoder", "JpegDecodeError", "scaled_size", "library",
           "library_path"]

TJPF_RGB = 0
TJFLAG_FASTUPSAMPLE = 256
TJFLAG_FASTDCT = 2048
#: The "fast" decode: integer IDCT and plain chroma replication, ~7% faster than the
#: accurate defaults (measured on 500x375 JPEGs); colour edges get blockier.
FAST_FLAGS = TJFLAG_FASTDCT | TJFLAG_FASTUPSAMPLE
TJERR_WARNING = 0

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libturbojpeg.so.0",
    "/usr/lib/aarch64-linux-gnu/libturbojpeg.so.0",
    "/usr/lib64/libturbojpeg.so.0",
    "/usr/lib/libturbojpeg.so.0",
    "/opt/libjpeg-turbo/lib64/libturbojpeg.so",
    "/usr/local/lib/libturbojpeg.so",
    "/opt/homebrew/opt/jpeg-turbo/lib/libturbojpeg.dylib",
    "/usr/local/opt/jpeg-turbo/lib/libturbojpeg.dylib",
)

#: The PyPI distribution whose wheels vendor a libjpeg-turbo 3 library
#: (``turbojpeg.libs/libturbojpeg-<hash>.so.0.3.0``); only that library is used.
WHEEL_DISTRIBUTION = "turbojpeg"


class JpegDecodeError(ValueError):
    """libjpeg-turbo refused the data (corrupt, truncated or not a JPEG)."""


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    subsampling: int
    colorspace: int


def _system_libraries() -> list[str]:
    """The system's libturbojpeg candidates that exist, the linker's choice first."""
    found = ctypes.util.find_library("turbojpeg")
    return ([found] if found else []) + [p for p in _CANDIDATES if os.path.exists(p)]


def _wheel_library() -> str | None:
    """The libturbojpeg vendored by the ``turbojpeg`` wheel, if that distribution is
    installed. Found through its file record, not by import: PyTurboJPEG's module has
    the same name."""
    try:
        files = importlib.metadata.distribution(WHEEL_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libturbojpeg") and len(f.parts) > 1:
            path = str(f.locate())
            if os.path.exists(path):
                return path
    return None


def _has_tj3(path: str) -> bool:
    try:
        return hasattr(ctypes.CDLL(path), "tj3Init")
    except OSError:
        return False


def _find_library() -> str:
    """Where libturbojpeg is: ``SLIPSTREAM_TURBOJPEG_LIB``; else a system library with the
    TurboJPEG 3 API; else the ``turbojpeg`` wheel's; else a system 2.x library."""
    explicit = os.environ.get(TURBOJPEG_LIB_ENV)
    if explicit:
        return explicit
    system = _system_libraries()
    for path in system:
        if _has_tj3(path):
            return path
    wheel = _wheel_library()
    if wheel:
        return wheel
    if system:
        return system[0]
    raise MissingDependencyError(f"{_INSTALL_HINT} (platform {platform.platform()})")


_lib: ctypes.CDLL | None = None
_lib_path: str | None = None
_lib_lock = threading.Lock()
_tj3_checked = False


def library() -> ctypes.CDLL:
    """The loaded libturbojpeg, with argument types declared."""
    global _lib, _lib_path
    with _lib_lock:
        if _lib is None:
            path = _find_library()
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                raise MissingDependencyError(f"{_INSTALL_HINT} (loading {path}: {exc})") from exc
            c = ctypes
            lib.tjInitDecompress.restype = c.c_void_p
            lib.tjInitDecompress.argtypes = []
            lib.tjDestroy.argtypes = [c.c_void_p]
            lib.tjDecompressHeader3.argtypes = [
                c.c_void_p, c.c_void_p, c.c_ulong, c.POINTER(c.c_int), c.POINTER(c.c_int),
                c.POINTER(c.c_int), c.POINTER(c.c_int),
            ]
            lib.tjDecompress2.argtypes = [
                c.c_void_p, c.c_void_p, c.c_ulong, c.c_void_p, c.c_int, c.c_int, c.c_int,
                c.c_int, c.c_int,
            ]
            lib.tjDecompressToYUVPlanes.argtypes = [
                c.c_void_p, c.c_void_p, c.c_ulong, c.POINTER(c.c_void_p), c.c_int,
                c.POINTER(c.c_int), c.c_int, c.c_int,
            ]
            lib.tjGetErrorStr2.restype = c.c_char_p
            lib.tjGetErrorStr2.argtypes = [c.c_void_p]
            lib.tjGetErrorCode.argtypes = [c.c_void_p]
            if hasattr(lib, "tj3Init"):
                _tj3.declare(lib)
            _lib, _lib_path = lib, path
        return _lib


_quick: ctypes.PyDLL | None = None


def quick_library() -> ctypes.PyDLL:
    """The same library for the microsecond calls (header, parameters, errors), which
    keep the GIL: a ctypes ``CDLL`` call releases it and must win it back, which with
    many decode threads means waiting for another thread's Python. So a region decode,
    like a whole-image one, releases the GIL once, for the decode itself (through
    :func:`library`)."""
    global _quick
    lib = library()
    with _lib_lock:
        if _quick is None:
            quick = ctypes.PyDLL(_lib_path or "")
            if hasattr(lib, "tj3Init"):
                _tj3.declare(quick)
            _quick = quick
        return _quick


def library_path() -> str:
    """The file (or linker name) :func:`library` loaded."""
    library()
    assert _lib_path is not None
    return _lib_path


def _checked_tj3(lib: ctypes.CDLL) -> None:
    """Run :func:`_tj3.check_abi` once per process. A failure is a
    :class:`MissingDependencyError`, which the loader never skips as one bad sample."""
    global _tj3_checked
    with _lib_lock:
        if not _tj3_checked:
            try:
                _tj3.check_abi(lib, _lib_path or "libturbojpeg")
            except RuntimeError as exc:
                raise MissingDependencyError(str(exc)) from exc
            _tj3_checked = True


def scaled_size(size: int, denom: int) -> int:
    """A dimension after DCT scaling by 1/denom (libjpeg rounds up)."""
    return (size + denom - 1) // denom


def _raise_unless_ok(what: str, code: int, message: bytes) -> None:
    """The error policy: warnings pass, except a truncated image (libjpeg fills it with
    grey and calls that a warning); everything else is a :class:`JpegDecodeError`."""
    msg = message.decode(errors="replace")
    if code == TJERR_WARNING and "Premature end" not in msg:
        return
    raise JpegDecodeError(f"{what}: {msg}")


def refuse_undecodable(data: np.ndarray | bytes) -> None:
    """Raise :class:`JpegDecodeError` for a JPEG the build would have refused (lossless,
    12-bit, ...): a libjpeg-turbo that decodes lossless JPEGs ignores the DCT scaling
    factor for them and writes past the buffer, so such bytes (in a cache built before
    the build refused them, or a hostile one) never reach the library."""
    frame = read_frame(data.data if isinstance(data, np.ndarray) else data)
    reason = undecodable_reason(frame) if frame is not None else None
    if reason:
        raise JpegDecodeError(f"refused before decoding: {reason}")


class TurboDecoder:
    """One TurboJPEG decompressor handle (two with the 3.x API). Not thread-safe: one per
    thread."""

    def __init__(self, fast_dct: bool = False) -> None:
        self._lib = library()
        self._handle = self._lib.tjInitDecompress()
        if not self._handle:
            raise MemoryError("tjInitDecompress failed")
        self.flags = TJFLAG_FASTDCT if fast_dct else 0
        self._w, self._h = ctypes.c_int(), ctypes.c_int()
        self._ss, self._cs = ctypes.c_int(), ctypes.c_int()
        #: The library can decode a region (TurboJPEG 3 API).
        self.supports_crop = hasattr(self._lib, "tj3Init")
        self._handle3: int | None = None
        self._quick = quick_library()

    def _check(self, rc: int, what: str) -> None:
        if rc == 0:
            return
        _raise_unless_ok(what, self._lib.tjGetErrorCode(self._handle),
                         self._lib.tjGetErrorStr2(self._handle))

    def _check3(self, rc: int, what: str) -> None:
        if rc == 0:
            return
        _raise_unless_ok(what, self._quick.tj3GetErrorCode(self._handle3),
                         self._quick.tj3GetErrorStr(self._handle3))

    def header(self, data: np.ndarray | bytes) -> JpegHeader:
        buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
        rc = self._lib.tjDecompressHeader3(
            self._handle, buf.ctypes.data, buf.nbytes, ctypes.byref(self._w),
            ctypes.byref(self._h), ctypes.byref(self._ss), ctypes.byref(self._cs),
        )
        self._check(rc, "reading the JPEG header")
        return JpegHeader(self._w.value, self._h.value, self._ss.value, self._cs.value)

    def decode_rgb(self, data: np.ndarray, out: np.ndarray, fast: bool = False) -> None:
        """Decode into ``out`` (``uint8``, shape ``(h, w, 3)``, rows may be padded): the
        image is DCT-scaled to ``out``'s size, which must be a scaled size of the image.
        ``fast`` trades about a level of accuracy for ~7% speed (:data:`FAST_FLAGS`)."""
        h, w = out.shape[:2]
        pitch = out.strides[0]
        if out.strides[1] != 3 or out.strides[2] != 1:
            raise ValueError("decode_rgb needs pixel-contiguous rows")
        refuse_undecodable(data)
        rc = self._lib.tjDecompress2(
            self._handle, data.ctypes.data, data.nbytes, out.ctypes.data, w, pitch, h,
            TJPF_RGB, self.flags | (FAST_FLAGS if fast else 0),
        )
        self._check(rc, "decoding the JPEG")

    def decode_region_rgb(self, data: np.ndarray, region: tuple[int, int, int, int],
                          denom: int, scratch: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """The RGB pixels of ``region`` — ``(top, left, height, width)`` in the image
        DCT-scaled by ``1/denom`` (1, 2, 4 or 8) — decoding little more than the region.
        Only if :attr:`supports_crop`.

        Returns a view into ``scratch(h, w)``, which must return a contiguous ``uint8
        (h, w, 3)`` array the caller owns. The pixels equal those of the same region in
        :meth:`decode_rgb`'s output (``fast=False``): a few pixels of context are decoded
        around the region (:data:`_tj3.CONTEXT`). There is no ``fast``: libjpeg-turbo's
        row skipping with plain ("merged") chroma upsampling can write a row past the
        buffer (libjpeg-turbo issue #915; it crashed the process here).

        Errors as :meth:`decode_rgb`, except that damage below the region goes unseen:
        rows past the region are not decoded, so a truncated file whose data outlasts
        the region decodes without error.
        """
        top, left, h, w = region
        refuse_undecodable(data)
        if self._handle3 is None:
            self._open3()
        sh, sw, imcu = self._header3(data, denom)
        if not (0 <= top < top + h <= sh and 0 <= left < left + w <= sw):
            raise ValueError(f"region {tuple(region)} is not inside the {sw}x{sh} image "
                             f"(the JPEG scaled by 1/{denom})")
        if imcu is None:  # a subsampling TurboJPEG can't crop: all of it
            y0, x0, wh, ww = 0, 0, sh, sw
        else:
            y0, x0, wh, ww = _tj3.decode_window(region, sh, sw, imcu)
        out = scratch(wh, ww)
        rc = self._decompress3(data, _tj3.Region(x0, y0, ww, wh), out)
        if rc and x0 and b"Unexplained mismatch" in self._quick.tj3GetErrorStr(self._handle3):
            # TurboJPEG names the subsampling from the components' relative sampling, but
            # libjpeg crops on its real iMCU columns (2x1 sampling in all three
            # components is "4:4:4" with 16-pixel columns): decode whole rows instead
            self._header3(data, denom)
            x0, ww = 0, sw
            out = scratch(wh, ww)
            rc = self._decompress3(data, _tj3.Region(0, y0, ww, wh), out)
        self._check3(rc, "decoding the JPEG")
        return out[top - y0 : top - y0 + h, left - x0 : left - x0 + w]

    def _header3(self, data: np.ndarray, denom: int) -> tuple[int, int, int | None]:
        """Read the header into the tj3 handle and set the scaling: the scaled height and
        width, and the scaled iMCU width (``None`` if TurboJPEG cannot crop it)."""
        lib, handle = self._quick, self._handle3
        self._check3(lib.tj3DecompressHeader(handle, data.ctypes.data, data.nbytes),
                     "reading the JPEG header")
        self._check3(lib.tj3SetScalingFactor(handle, _tj3.ScalingFactor(1, denom)),
                     f"scaling the JPEG by 1/{denom}")
        return (scaled_size(lib.tj3Get(handle, _tj3.TJPARAM_JPEGHEIGHT), denom),
                scaled_size(lib.tj3Get(handle, _tj3.TJPARAM_JPEGWIDTH), denom),
                _tj3.imcu_width(lib.tj3Get(handle, _tj3.TJPARAM_SUBSAMP), denom))

    def _decompress3(self, data: np.ndarray, window: _tj3.Region, out: np.ndarray) -> int:
        """Decode ``window`` into ``out``; the return code, for :meth:`_check3`."""
        self._check3(self._quick.tj3SetCroppingRegion(self._handle3, window),
                     f"cropping the JPEG to x={window.x} y={window.y} w={window.w} h={window.h}")
        return int(self._lib.tj3Decompress8(self._handle3, data.ctypes.data, data.nbytes,
                                            out.ctypes.data, out.strides[0], TJPF_RGB))

    def _open3(self) -> None:
        if not self.supports_crop:
            raise RuntimeError(f"{_lib_path}: this libturbojpeg has no TurboJPEG 3 API, so it "
                               "cannot decode a region (check supports_crop)")
        _checked_tj3(self._lib)
        handle = self._lib.tj3Init(_tj3.TJINIT_DECOMPRESS)
        if not handle:
            raise MemoryError("tj3Init failed")
        self._handle3 = handle
        self._check3(self._lib.tj3Set(handle, _tj3.TJPARAM_FASTDCT, int(self.flags != 0)),
                     "setting TJPARAM_FASTDCT")
        self._check3(self._lib.tj3Set(handle, _tj3.TJPARAM_FASTUPSAMPLE, 0),
                     "setting TJPARAM_FASTUPSAMPLE")

    def close(self) -> None:
        if self._handle:
            self._lib.tjDestroy(self._handle)
            self._handle = None
        if self._handle3:
            self._lib.tj3Destroy(self._handle3)
            self._handle3 = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
