"""Looking at an image's bytes at build time: its size, how it must be decoded, whether it
must be refused, and (on request) storing it upright by its EXIF orientation."""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

from ..decode.jpeg_frame import read_frame, undecodable_reason
from ..decode.libturbojpeg import JpegDecodeError, TurboDecoder
from ..errors import SampleError
from ..schema import RawImage
from .layout import Codec

__all__ = ["ImageInfo", "probe_image", "header_reader", "DEFAULT_MAX_PIXELS", "MAX_PIXELS",
           "check_max_pixels", "EXIF_ORIENTATION_POLICIES", "check_exif_orientation",
           "apply_exif_orientation"]

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


#: The most pixels ``max_pixels`` may allow, and the most a cache's image table may
#: claim (Pillow's decompression-bomb error threshold): past it one decode needs more
#: than half a gigabyte of RGB in a decode thread, before any intermediate copy.
MAX_PIXELS = 178_956_970

#: The default bound on one image's pixels at build time (``max_pixels``): 50 megapixels,
#: above any common camera's output (a 45-megapixel sensor gives 8256x5504), so that one
#: decode needs at most ~150 MB of RGB per decode thread. A header that claims more is a
#: corrupt file, a decompression bomb or an image to shrink before training on it.
DEFAULT_MAX_PIXELS = 50_000_000


def check_max_pixels(max_pixels: int) -> int:
    """``max_pixels`` itself, checked to be a positive int no larger than :data:`MAX_PIXELS`."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) \
            or not 0 < max_pixels <= MAX_PIXELS:
        raise ValueError(f"max_pixels={max_pixels!r}: expected an int from 1 to {MAX_PIXELS:,} "
                         f"(default {DEFAULT_MAX_PIXELS:,})")
    return max_pixels


#: What a build does with an image's EXIF Orientation tag: ``"ignore"`` it (the default,
#: as torchvision's ``ImageFolder`` loader does: pixels as stored) or ``"apply"`` it (the
#: image is stored upright; see :func:`apply_exif_orientation`).
EXIF_ORIENTATION_POLICIES = ("ignore", "apply")
_ORIENTATION_TAG = 0x0112
#: JPEG quality of an image re-encoded upright (``exif_orientation="apply"``).
REORIENTED_JPEG_QUALITY = 95


def check_exif_orientation(policy: str) -> str:
    if policy not in EXIF_ORIENTATION_POLICIES:
        raise ValueError(f"exif_orientation={policy!r}: expected one of "
                         f"{EXIF_ORIENTATION_POLICIES}")
    return policy


def apply_exif_orientation(data: bytes, name: str, max_pixels: int) -> bytes:
    """``data`` stored upright: an image whose EXIF Orientation tag is 2-8 is decoded,
    flipped or rotated as the tag says, and re-encoded without the tag (a JPEG as a JPEG
    of quality :data:`REORIENTED_JPEG_QUALITY`: one generation of JPEG loss; anything
    else as a PNG: lossless). Any other image is returned as it is, unread past its
    header. An image over ``max_pixels`` is left for :func:`probe_image` to refuse."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(_ORIENTATION_TAG)
            if orientation not in range(2, 9) or im.width * im.height > max_pixels:
                return data
            source_format = im.format
            upright = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return data  # not an image Pillow reads: probe_image names the problem
    except (OSError, SyntaxError, ValueError) as exc:
        raise SampleError(f"{name}: cannot apply its EXIF orientation: corrupt or truncated "
                          f"image ({exc})", path=name) from exc
    buf = io.BytesIO()
    if source_format == "JPEG" and upright.mode in ("L", "RGB", "CMYK"):
        # 4:4:4: no second chroma subsampling on top of the first generation's
        upright.save(buf, format="JPEG", quality=REORIENTED_JPEG_QUALITY, subsampling=0)
    else:
        upright.save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class ImageInfo:
    codec: int
    height: int
    width: int


def probe_image(value: bytes | RawImage | memoryview, name: str,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Size and codec of one image, reading only its header.

    JPEGs libjpeg-turbo can decode straight to RGB get :attr:`Codec.JPEG`; every other
    image Pillow can read (PNG, CMYK JPEG, WebP, 16-bit, ...) gets :attr:`Codec.ENCODED`
    and is converted to RGB at decode time. Refused with a :class:`SampleError` naming
    ``name``: JPEGs no decoder here handles (lossless, 12-bit, hierarchical; see
    :func:`~slipstream.decode.jpeg_frame.undecodable_reason`) and images whose header
    claims more than ``max_pixels`` pixels.
    """
    if isinstance(value, RawImage):
        h, w, _ = value.pixels.shape
        return _checked(ImageInfo(Codec.RAW_RGB, h, w), name, max_pixels)
    data = bytes(value) if not isinstance(value, bytes) else value
    if not data:
        raise SampleError(f"{name}: the image file is empty (0 bytes)", path=name)
    if data.startswith(_JPEG_SOI):
        frame = read_frame(data)
        reason = undecodable_reason(frame) if frame is not None else None
        if reason:
            raise SampleError(f"{name}: {reason}", path=name)
        try:
            head = header_reader().header(data)
        except JpegDecodeError:
            pass  # libjpeg-turbo can't parse the header: let Pillow judge it below
        else:
            if head.colorspace not in (_TJCS_CMYK, _TJCS_YCCK) and head.width > 0 \
                    and head.height > 0:
                return _checked(ImageInfo(Codec.JPEG, head.height, head.width), name,
                                max_pixels)
    return _checked(_probe_with_pillow(data, name), name, max_pixels)


def _checked(info: ImageInfo, name: str, max_pixels: int) -> ImageInfo:
    if info.height * info.width > max_pixels:
        raise SampleError(
            f"{name}: the image claims {info.width}x{info.height} = "
            f"{info.width * info.height:,} pixels, more than max_pixels={max_pixels:,} (a "
            f"corrupt header, a decompression bomb, or an image to shrink); remove or shrink "
            f"it, or raise max_pixels (up to {MAX_PIXELS:,}) if you mean to decode images "
            f"this large", path=name)
    return info


def _probe_with_pillow(data: bytes, name: str) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow's warning threshold is not ours: max_pixels decides (in _checked)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                im.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise SampleError(f"{name}: not an image slipstream can decode ({exc})", path=name) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise SampleError(f"{name}: corrupt or truncated image ({exc})", path=name) from exc
    return ImageInfo(Codec.ENCODED, int(height), int(width))
