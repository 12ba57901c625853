"""Looking at an image's bytes at build time: its size and how it must be decoded."""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

from ..decode.libturbojpeg import JpegDecodeError, TurboDecoder
from ..errors import SampleError
from ..schema import RawImage
from .layout import Codec

__all__ = ["ImageInfo", "probe_image", "header_reader"]

_JPEG_SOI = b"\xff\xd8\xff"
# TurboJPEG colourspace codes (TJCS_*): CMYK and YCCK images can't be decoded to RGB
_TJCS_CMYK = 3
_TJCS_YCCK = 4

_local = threading.local()


def header_reader() -> TurboDecoder:
    """This thread's TurboJPEG handle for reading headers (a precise error when
    libturbojpeg is missing)."""
    tj = getattr(_local, "tj", None)
    if tj is None:
        tj = _local.tj = TurboDecoder()
    return tj


#: Images larger than this are refused at build time (Pillow's decompression-bomb error
#: threshold): decoding one would need gigabytes of memory in a decode thread.
MAX_PIXELS = 178_956_970


@dataclass(frozen=True)
class ImageInfo:
    codec: int
    height: int
    width: int


def probe_image(value: bytes | RawImage | memoryview, name: str) -> ImageInfo:
    """Size and codec of one image, reading only its header.

    JPEGs libjpeg-turbo can decode straight to RGB get :attr:`Codec.JPEG`; every other
    image Pillow can read (PNG, CMYK JPEG, WebP, 16-bit, ...) gets :attr:`Codec.ENCODED`
    and is converted to RGB at decode time. ``name`` is used in errors.
    """
    if isinstance(value, RawImage):
        h, w, _ = value.pixels.shape
        return ImageInfo(Codec.RAW_RGB, h, w)
    data = bytes(value) if not isinstance(value, bytes) else value
    if not data:
        raise SampleError(f"{name}: the image file is empty (0 bytes)", path=name)
    if data.startswith(_JPEG_SOI):
        try:
            head = header_reader().header(data)
        except JpegDecodeError:
            pass  # libjpeg-turbo can't parse the header: let Pillow judge it below
        else:
            if head.colorspace not in (_TJCS_CMYK, _TJCS_YCCK) and head.width > 0 \
                    and head.height > 0:
                return _checked(ImageInfo(Codec.JPEG, head.height, head.width), name)
    return _checked(_probe_with_pillow(data, name), name)


def _checked(info: ImageInfo, name: str) -> ImageInfo:
    if info.height * info.width > MAX_PIXELS:
        raise SampleError(
            f"{name}: the image claims {info.width}x{info.height} pixels, more than the "
            f"{MAX_PIXELS:,} slipstream decodes (a corrupt header or a decompression bomb); "
            f"remove or shrink it", path=name)
    return info


def _probe_with_pillow(data: bytes, name: str) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                im.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise SampleError(f"{name}: not an image slipstream can decode ({exc})", path=name) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise SampleError(f"{name}: corrupt or truncated image ({exc})", path=name) from exc
    return ImageInfo(Codec.ENCODED, int(height), int(width))
