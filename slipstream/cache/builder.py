"""Source → cache: read in parallel, write once, publish atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .._progress import progress_bar
from ..errors import SampleError
from ..schema import Field
from ..sources.base import Source
from ..stores.local import LocalStore
from ._space import out_of_space_errors
from .arrays import DEFAULT_HEAP_CHUNK_BYTES
from .derived import DERIVED_FORMATS, ensure_format
from .key import content_key
from .reader import Cache
from .writer import CacheWriter

__all__ = ["build_cache", "cache_key_for", "stored_format"]


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
    source: Source, *, image_format: str = "jpeg", fields: Sequence[str] | None = None
) -> str:
    """The content key the cache of ``source`` has (without building anything)."""
    return content_key(
        source.name, source.fingerprint(), _select_fields(source, fields),
        stored_format(image_format),
    )


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
) -> Cache:
    """Find the cache of ``source`` in ``store``, or build it there.

    Samples are read by ``num_threads`` I/O threads and written in arrival order into a
    private directory, which is published with one atomic rename once its manifest is
    written: a reader never sees a partial cache, and a build killed at any point
    leaves only a private directory that the next build removes.

    Concurrent builders of the same key (processes of a distributed job, users sharing
    a directory) serialise on a lock: one builds, the others wait up to
    ``lock_timeout`` seconds (forever if None) and then use its cache.
    """
    if not isinstance(store, LocalStore):
        store = LocalStore(store)
    selected = _select_fields(source, fields)
    base_format = stored_format(image_format)
    key = content_key(source.name, source.fingerprint(), selected, base_format)
    if store.has(key):
        cache = Cache(store.path(key))
    else:
        with store.build_lock(key, timeout=lock_timeout):
            if store.has(key):  # another process built it while we waited
                cache = Cache(store.path(key))
            else:
                cache = _build(source, store, key, selected, base_format, num_threads,
                               progress, heap_chunk_bytes)
    ensure_format(cache, image_format, num_threads=num_threads, progress=progress)
    return cache


def _build(source: Source, store: LocalStore, key: str, selected: tuple[Field, ...],
           image_format: str, num_threads: int, progress: bool, heap_chunk_bytes: int) -> Cache:
    n = len(source)
    if n == 0:
        raise SampleError(
            f"{source.location.describe()} holds no samples: nothing to cache. Check the path "
            f"and the layout the {source.name!r} source expects"
        )
    with out_of_space_errors(f"building the cache of {source.location.describe()}",
                             store.root):
        build_dir = store.new_build_dir(key)
        writer = CacheWriter(
            build_dir, selected, n, image_format=image_format, heap_chunk_bytes=heap_chunk_bytes
        )
        bar = progress_bar(n, f"building {source.name} cache", unit="img", enabled=progress)
        try:
            for index, sample in source.iter_samples(num_threads=num_threads):
                writer.add(index, sample, source.sample_name(index))
                bar.update(1)
            writer.finish(key, source.describe())
            final = store.publish(build_dir, key)
        except BaseException:
            writer.abort()
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        finally:
            bar.close()
    return Cache(Path(final))
