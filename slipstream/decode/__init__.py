"""Per-sample decoding: libjpeg-turbo through ctypes, crop geometry, resizing, YUV 4:2:0."""

from .turbo import TURBOJPEG_LIB_ENV

__all__ = ["TURBOJPEG_LIB_ENV"]
