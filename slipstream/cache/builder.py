"""Source → cache directory: read in parallel, write once.

Where the directory is and how it is published belong to the store that holds it;
``slipstream.build_cache`` (``slipstream/caching.py``) finds, locks, builds and publishes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._progress import progress_bar
from ..errors import SampleError
from ..schema import Field
from ..sources.base import Source
from ._space import out_of_space_errors
from .arrays import DEFAULT_HEAP_CHUNK_BYTES
from .derived import DERIVED_FORMATS
from .images import DEFAULT_MAX_PIXELS, check_exif_orientation
from .key import KEY_HEX_DIGITS, content_key
from .layout import ChunkHook
from .writer import CacheWriter

__all__ = ["write_cache", "cache_key_for", "select_fields", "stored_format", "partial_key",
           "build_settings", "BUILD_ON_ERROR"]

log = logging.getLogger("slipstream.build")

#: What a build's ``on_error`` accepts: stop at the first bad sample, or leave it out.
BUILD_ON_ERROR = ("raise", "skip")


def partial_key(key: str) -> str:
    """The key a cache of ``key``'s source is published under when ``on_error="skip"`` left
    samples out: never the complete cache's key, so a build that must not skip anything
    never finds it."""
    return hashlib.sha256(f"{key}:partial".encode()).hexdigest()[:KEY_HEX_DIGITS]


def select_fields(source: Source, names: Sequence[str] | None) -> tuple[Field, ...]:
    if names is None:
        return source.fields
    by_name = {f.name: f for f in source.fields}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(
            f"fields {unknown} are not in {source.location.describe()}; it has "
            f"{sorted(by_name)}"
        )
    return tuple(by_name[n] for n in names)


def cache_key_for(
    source: Source, *, image_format: str = "jpeg", fields: Sequence[str] | None = None,
    exif_orientation: str = "ignore",
) -> str:
    """The content key the cache of ``source`` has (without building anything)."""
    return content_key(
        source.name, source.fingerprint(), select_fields(source, fields),
        stored_format(image_format), settings=build_settings(exif_orientation),
    )


def build_settings(exif_orientation: str) -> dict[str, str]:
    """The build settings that change the stored bytes, less their defaults (for the key)."""
    check_exif_orientation(exif_orientation)
    return {} if exif_orientation == "ignore" else {"exif_orientation": exif_orientation}


def stored_format(image_format: str) -> str:
    """The format images are stored in for ``image_format``: derived formats (YUV420) live
    beside the stored JPEG bytes in the same cache, under the same key."""
    return "jpeg" if image_format in DERIVED_FORMATS else image_format


def write_cache(source: Source, build_dir: Path, key: str, selected: Sequence[Field], *,
                image_format: str = "jpeg", num_threads: int = 16, progress: bool = True,
                heap_chunk_bytes: int = DEFAULT_HEAP_CHUNK_BYTES,
                max_pixels: int = DEFAULT_MAX_PIXELS, on_error: str = "raise",
                exif_orientation: str = "ignore",
                on_chunk_file: ChunkHook | None = None) -> str:
    """Write the cache of ``source`` into the empty private directory ``build_dir``,
    root metadata (the manifest) last, and return the key it is to be published under.

    Samples are read by ``num_threads`` I/O threads and written in arrival order. An image
    whose header claims more than ``max_pixels`` pixels, or that no decoder here handles
    (lossless or 12-bit JPEGs), is a bad sample. A bad sample stops the build with a
    :class:`SampleError` naming it (``on_error="raise"``); with ``on_error="skip"`` it is
    left out, a warning names it, the cache records it (``cache.skipped``) and the key
    returned is :func:`partial_key` of ``key``. ``exif_orientation="apply"`` stores images
    upright by their EXIF Orientation tag. ``on_chunk_file(path, rel, entry)`` is called
    in the writing thread as each heap chunk file is final (it may upload and remove it:
    nothing reads a chunk file back during the build).

    On failure the partial files are removed from ``build_dir`` (the caller removes the
    directory) and the error is raised; running out of space raises
    :class:`~slipstream.errors.CacheWriteError`."""
    if on_error not in BUILD_ON_ERROR:
        raise ValueError(f"on_error must be one of {BUILD_ON_ERROR}, got {on_error!r}")
    n = len(source)
    if n == 0:
        raise SampleError(
            f"{source.location.describe()} holds no samples: nothing to cache. Check the path "
            f"and the layout the {source.name!r} source expects"
        )
    with out_of_space_errors(f"building the cache of {source.location.describe()}", build_dir):
        writer = CacheWriter(build_dir, tuple(selected), n, image_format=image_format,
                             heap_chunk_bytes=heap_chunk_bytes, max_pixels=max_pixels,
                             exif_orientation=exif_orientation, on_chunk_file=on_chunk_file)
        bar = progress_bar(n, f"building {source.name} cache", unit="img", enabled=progress)
        try:
            _fill(writer, source, num_threads, on_error, bar)
            if len(writer.skipped) == n:
                raise SampleError(
                    f"every one of the {n} samples of {source.location.describe()} failed "
                    f"(on_error='skip'); the first: {writer.skipped[min(writer.skipped)]}")
            if writer.skipped:
                log.warning("build: on_error='skip' left out %d of %d samples of %s; the "
                            "cache lists them (Cache.skipped)", len(writer.skipped), n,
                            source.location.describe())
                key = partial_key(key)
            writer.finish(key, source.describe())
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
    return key


def _fill(writer: CacheWriter, source: Source, num_threads: int, on_error: str,
          bar: Any) -> None:
    """Read every sample into ``writer``; with ``on_error="skip"`` a sample that fails
    (in the source's read or in the writer's checks) is left out and named in a warning.
    A source error restarts the reading with the samples still pending."""
    indices: list[int] | None = None
    while True:
        try:
            for index, sample in source.iter_samples(indices, num_threads=num_threads):
                try:
                    writer.add(index, sample, source.sample_name(index))
                except SampleError as exc:
                    _skip_or_raise(writer, index, exc, on_error)
                bar.update(1)
            return
        except SampleError as exc:
            if exc.index is None or exc.index not in writer.pending():
                raise  # no sample to leave out: restarting would not get past it
            _skip_or_raise(writer, exc.index, exc, on_error)
            bar.update(1)
            indices = writer.pending()


def _skip_or_raise(writer: CacheWriter, index: int, exc: SampleError, on_error: str) -> None:
    if on_error != "skip":
        raise exc
    log.warning("build: leaving out sample %d (on_error='skip'): %s", index, exc)
    writer.skip(index, str(exc))
