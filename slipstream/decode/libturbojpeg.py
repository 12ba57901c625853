"""A minimal ctypes binding of libjpeg-turbo's TurboJPEG API, off the crop hot path.

Crops decode in the native kernel (:mod:`slipstream.decode.kernel`, the libjpeg API).
This binding serves the rest: reading headers at build time, whole-image decodes
(``DecodeOnly``) and the YUV 4:2:0 planes of the derived format. A worker decodes
straight into a buffer it owns; ctypes releases the GIL for each call. Only the 2.x
API is used, which every libjpeg-turbo since 1.4 has.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import JpegDecodeError, MissingDependencyError
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


def _find_library() -> str:
    """Where libturbojpeg is: ``SLIPSTREAM_TURBOJPEG_LIB``, else the system's."""
    explicit = os.environ.get(TURBOJPEG_LIB_ENV)
    if explicit:
        return explicit
    system = _system_libraries()
    if system:
        return system[0]
    raise MissingDependencyError(f"{_INSTALL_HINT} (platform {platform.platform()})")


_lib: ctypes.CDLL | None = None
_lib_path: str | None = None
_lib_lock = threading.Lock()


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
            _lib, _lib_path = lib, path
        return _lib


def library_path() -> str:
    """The file (or linker name) :func:`library` loaded."""
    library()
    assert _lib_path is not None
    return _lib_path


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
    """One TurboJPEG decompressor handle. Not thread-safe: one per thread."""

    def __init__(self, fast_dct: bool = False) -> None:
        self._lib = library()
        self._handle = self._lib.tjInitDecompress()
        if not self._handle:
            raise MemoryError("tjInitDecompress failed")
        self.flags = TJFLAG_FASTDCT if fast_dct else 0
        self._w, self._h = ctypes.c_int(), ctypes.c_int()
        self._ss, self._cs = ctypes.c_int(), ctypes.c_int()

    def _check(self, rc: int, what: str) -> None:
        if rc == 0:
            return
        code = self._lib.tjGetErrorCode(self._handle)
        message = self._lib.tjGetErrorStr2(self._handle)
        if code != TJERR_WARNING:
            # libjpeg-turbo 2.1's tjDecompressHeader3 leaves the decompressor inside the
            # header after an error, so every later call on this handle fails ("two SOI
            # markers"): start from a fresh handle
            self._reset()
        _raise_unless_ok(what, code, message)

    def _reset(self) -> None:
        self.close()
        self._handle = self._lib.tjInitDecompress()
        if not self._handle:
            raise MemoryError("tjInitDecompress failed")

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

    def close(self) -> None:
        if self._handle:
            self._lib.tjDestroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
