"""Source → cache directory: read in parallel, write once.

Where the directory is and how it is published belong to the store that holds it;
``slipstream.build_cache`` (``slipstream/caching.py``) finds, locks, builds and publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._progress import progress_bar
from ..errors import SampleError
from ..schema import Field
from ..sources.base import Source
from ._space import out_of_space_errors
from .arrays import DEFAULT_HEAP_CHUNK_BYTES
from .derived import DERIVED_FORMATS
from .key import content_key
from .writer import CacheWriter

__all__ = ["write_cache", "cache_key_for", "select_fields", "stored_format"]


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
    source: Source, *, image_format: str = "jpeg", fields: Sequence[str] | None = None
) -> str:
    """The content key the cache of ``source`` has (without building anything)."""
    return content_key(
        source.name, source.fingerprint(), select_fields(source, fields),
        stored_format(image_format),
    )


def stored_format(image_format: str) -> str:
    """The format images are stored in for ``image_format``: derived formats (YUV420) live
    beside the stored JPEG bytes in the same cache, under the same key."""
    return "jpeg" if image_format in DERIVED_FORMATS else image_format


def write_cache(source: Source, build_dir: Path, key: str, selected: Sequence[Field], *,
                image_format: str = "jpeg", num_threads: int = 16, progress: bool = True,
                heap_chunk_bytes: int = DEFAULT_HEAP_CHUNK_BYTES) -> None:
    """Write the cache of ``source`` into the empty private directory ``build_dir``,
    root metadata (the manifest) last. Samples are read by ``num_threads`` I/O threads
    and written in arrival order. On failure the partial files are removed from
    ``build_dir`` (the caller removes the directory) and the error is raised; running
    out of space raises :class:`~slipstream.errors.CacheWriteError`."""
    n = len(source)
    if n == 0:
        raise SampleError(
            f"{source.location.describe()} holds no samples: nothing to cache. Check the path "
            f"and the layout the {source.name!r} source expects"
        )
    with out_of_space_errors(f"building the cache of {source.location.describe()}", build_dir):
        writer = CacheWriter(
            build_dir, tuple(selected), n, image_format=image_format,
            heap_chunk_bytes=heap_chunk_bytes
        )
        bar = progress_bar(n, f"building {source.name} cache", unit="img", enabled=progress)
        try:
            for index, sample in source.iter_samples(num_threads=num_threads):
                writer.add(index, sample, source.sample_name(index))
                bar.update(1)
            writer.finish(key, source.describe())
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
