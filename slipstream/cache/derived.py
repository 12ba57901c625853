"""Derived image formats (YUV 4:2:0) stored beside the encoded images in the same cache.

``FIELD/yuv420/`` holds a heap of packed planes (see :mod:`slipstream.decode.yuv`) with
its own ``offsets`` and ``sizes``; heights and widths are the field's. It is built from
the cached images in parallel and added like an index (listed under ``derived`` in the
root metadata once complete).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._parallel import bounded_map
from .._progress import progress_bar
from ..errors import SampleError
from .additions import add_group
from .arrays import DEFAULT_HEAP_CHUNK_BYTES, HeapWriter, write_array
from .layout import Codec, FileLedger, group_metadata

if TYPE_CHECKING:
    from .reader import Cache

__all__ = ["DERIVED_FORMATS", "ensure_format", "image_planes"]

#: Image formats derived from a cache's stored images.
DERIVED_FORMATS = ("yuv420",)

_local = threading.local()


def image_planes(data: np.ndarray, codec: int, height: int, width: int) -> np.ndarray:
    """Packed YUV 4:2:0 planes of one stored image."""
    from ..decode.libturbojpeg import TurboDecoder
    from ..decode.pixels import _pil_rgb
    from ..decode.yuv import jpeg_to_yuv420, rgb_to_yuv420

    if codec == Codec.JPEG:
        turbo = getattr(_local, "turbo", None)
        if turbo is None:
            turbo = _local.turbo = TurboDecoder()
        return jpeg_to_yuv420(turbo, data)
    if codec == Codec.RAW_RGB:
        return rgb_to_yuv420(data.reshape(height, width, 3))
    if codec == Codec.ENCODED:
        return rgb_to_yuv420(_pil_rgb(data))
    raise ValueError(f"cannot derive YUV planes from codec {codec}")


def ensure_format(cache: Cache, image_format: str, *, num_threads: int = 8,
                  progress: bool = True) -> None:
    """Make sure every image field of ``cache`` has ``image_format`` (derive it if not)."""
    if image_format == cache.image_format:
        return
    if image_format not in DERIVED_FORMATS:
        raise ValueError(f"image_format={image_format!r} is not supported; expected "
                         f"{cache.image_format!r} or one of {', '.join(DERIVED_FORMATS)}")
    for field in cache.image_fields:
        entry = f"{field}/{image_format}"
        if entry in cache.attrs.get("derived", ()):
            continue
        col = cache.column(field)
        src = cache.column("path") if "path" in cache.field_names else None

        def convert(i: int, col: Any = col, src: Any = src) -> np.ndarray:
            try:
                return image_planes(col.view(i), int(col.codecs[i]), int(col.heights[i]),
                                    int(col.widths[i]))
            except Exception as exc:
                name = src.value(i) if src is not None else f"sample {i}"
                raise SampleError(f"{name}: cannot convert to {image_format}: {exc}",
                                  index=i, path=name) from exc

        def write(ledger: FileLedger, directory: Path, col: Any = col,
                  convert: Any = convert, field: str = field) -> None:
            n = len(col)
            heap = HeapWriter(ledger, directory / "heap", DEFAULT_HEAP_CHUNK_BYTES)
            offsets = np.zeros(n, np.uint64)
            sizes = np.zeros(n, np.uint32)
            bar = progress_bar(n, f"deriving {image_format} for {field!r}", unit="img",
                               enabled=progress)
            try:
                for i, planes in bounded_map(convert, range(n), threads=num_threads,
                                             window=num_threads * 4, ordered=True,
                                             thread_name="slipstream-derive"):
                    offsets[i] = heap.append(planes)
                    sizes[i] = planes.nbytes
                    bar.update(1)
                heap.finish()
            except BaseException:
                heap.abort()
                raise
            finally:
                bar.close()
            write_array(ledger, directory / "offsets", offsets)
            write_array(ledger, directory / "sizes", sizes)
            ledger.write_json(directory / "zarr.json", group_metadata(
                {"kind": "derived_image_format", "format": image_format, "field": field}))

        add_group(cache.path, cache.writable_workspace(), entry, write, list_key="derived",
                  entry=entry)
        cache.refresh()
