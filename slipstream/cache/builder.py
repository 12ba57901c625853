"""Source → cache: read in parallel, write once, publish atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._progress import progress_bar
from ..errors import CacheRootError, SampleError
from ..schema import Field
from ..sources.base import Source
from ..stores.local import LocalStore
from ._space import out_of_space_errors
from .arrays import DEFAULT_HEAP_CHUNK_BYTES
from .derived import DERIVED_FORMATS, ensure_format
from .images import DEFAULT_MAX_PIXELS, check_exif_orientation, check_max_pixels
from .key import KEY_HEX_DIGITS, content_key
from .reader import Cache
from .writer import CacheWriter

__all__ = ["build_cache", "cache_key_for", "stored_format", "partial_key", "BUILD_ON_ERROR"]

log = logging.getLogger("slipstream.build")

#: What a build's ``on_error`` accepts: stop at the first bad sample, or leave it out.
BUILD_ON_ERROR = ("raise", "skip")


def partial_key(key: str) -> str:
    """The key a cache of ``key``'s source is published under when ``on_error="skip"`` left
    samples out: never the complete cache's key, so a build that must not skip anything
    never finds it."""
    return hashlib.sha256(f"{key}:partial".encode()).hexdigest()[:KEY_HEX_DIGITS]


def _select_fields(source: Source, names: Sequence[str] | None) -> tuple[Field, ...]:
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
        source.name, source.fingerprint(), _select_fields(source, fields),
        stored_format(image_format), settings=_settings(exif_orientation),
    )


def _settings(exif_orientation: str) -> dict[str, str]:
    """The build settings that change the stored bytes, less their defaults (for the key)."""
    check_exif_orientation(exif_orientation)
    return {} if exif_orientation == "ignore" else {"exif_orientation": exif_orientation}


def stored_format(image_format: str) -> str:
    """The format images are stored in for ``image_format``: derived formats (YUV420) live
    beside the stored JPEG bytes in the same cache, under the same key."""
    return "jpeg" if image_format in DERIVED_FORMATS else image_format


def build_cache(
    source: Source,
    store: LocalStore | str | os.PathLike[str],
    *,
    image_format: str = "jpeg",
    fields: Sequence[str] | None = None,
    num_threads: int = 16,
    progress: bool = True,
    heap_chunk_bytes: int = DEFAULT_HEAP_CHUNK_BYTES,
    lock_timeout: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_error: str = "raise",
    exif_orientation: str = "ignore",
) -> Cache:
    """Find the cache of ``source`` in ``store``, or build it there.

    Samples are read by ``num_threads`` I/O threads and written in arrival order into a
    private directory, which is published with one atomic rename once its manifest is
    written: a reader never sees a partial cache, and a build killed at any point
    leaves only a private directory that the next build removes.

    Concurrent builders of the same key (processes of a distributed job, users sharing
    a directory) serialise on a lock: one builds, the others wait up to
    ``lock_timeout`` seconds (forever if None) and then use its cache.

    An image whose header claims more than ``max_pixels`` pixels, or that no decoder here
    handles (lossless or 12-bit JPEGs), is a bad sample. A bad sample stops the build
    with a :class:`SampleError` naming it (``on_error="raise"``); with ``on_error="skip"``
    it is left out, a warning names it, and the cache records it (``cache.skipped``). A
    cache that left samples out is published under :func:`partial_key`, so it is found
    only by builds that also skip.

    ``exif_orientation="apply"`` stores images upright by their EXIF Orientation tag
    (re-encoding the rotated ones, see :func:`~slipstream.cache.images.apply_exif_orientation`);
    the default ``"ignore"`` keeps pixels as stored, as torchvision's loader does. The
    two are different caches (different keys).
    """
    if on_error not in BUILD_ON_ERROR:
        raise ValueError(f"on_error must be one of {BUILD_ON_ERROR}, got {on_error!r}")
    check_max_pixels(max_pixels)
    if not isinstance(store, LocalStore):
        store = LocalStore(store)
    selected = _select_fields(source, fields)
    base_format = stored_format(image_format)
    key = content_key(source.name, source.fingerprint(), selected, base_format,
                      settings=_settings(exif_orientation))
    cache = _find(store, key, on_error)
    if cache is None:
        _check_root(store.root)
        with store.build_lock(key, timeout=lock_timeout):
            cache = _find(store, key, on_error)  # another process built it while we waited
            if cache is None:
                cache = _build(source, store, key, selected, base_format, num_threads,
                               progress, heap_chunk_bytes, max_pixels, on_error,
                               exif_orientation)
    ensure_format(cache, image_format, num_threads=num_threads, progress=progress)
    return cache


def _find(store: LocalStore, key: str, on_error: str) -> Cache | None:
    """The complete cache of ``key``, else (when skipping is allowed) its partial one."""
    for k in (key, partial_key(key)) if on_error == "skip" else (key,):
        if store.has(k):
            return Cache(store.path(k))
    return None


def _check_root(root: Path) -> None:
    """Refuse, in one line, a cache root that is not a writable directory."""
    what = None
    if root.exists() and not root.is_dir():
        what = "is not a directory"
    else:
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            what = f"cannot be created: {probe} is not a directory"
        elif not os.access(probe, os.W_OK | os.X_OK):
            what = ("is not writable by this user" if probe == root else
                    f"cannot be created: {probe} is not writable by this user")
    if what:
        raise CacheRootError(f"cache directory {root} {what}; choose another with cache_dir= "
                             f"(or --cache-dir, or $SLIPSTREAM_CACHE_DIR)")


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


def _build(source: Source, store: LocalStore, key: str, selected: tuple[Field, ...],
           image_format: str, num_threads: int, progress: bool, heap_chunk_bytes: int,
           max_pixels: int, on_error: str, exif_orientation: str) -> Cache:
    n = len(source)
    if n == 0:
        raise SampleError(
            f"{source.location.describe()} holds no samples: nothing to cache. Check the path "
            f"and the layout the {source.name!r} source expects"
        )
    with out_of_space_errors(f"building the cache of {source.location.describe()}",
                             store.root):
        build_dir = store.new_build_dir(key)
        writer = CacheWriter(build_dir, selected, n, image_format=image_format,
                             heap_chunk_bytes=heap_chunk_bytes, max_pixels=max_pixels,
                             exif_orientation=exif_orientation)
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
            final = store.publish(build_dir, key)
        except BaseException:
            writer.abort()
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        finally:
            bar.close()
    return Cache(Path(final))
