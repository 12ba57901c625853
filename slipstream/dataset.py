"""``SlipstreamDataset``: a dataset anywhere, and the cache it is read from."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cache import Cache, cache_key_for
from .cache.builder import BUILD_ON_ERROR
from .cache.images import DEFAULT_MAX_PIXELS, check_exif_orientation, check_max_pixels
from .schema import Field, Sample
from .sources import Source, open_source
from .stores.base import CacheStore
from .stores.local import LocalStore, default_cache_dir

__all__ = ["SlipstreamDataset"]


class SlipstreamDataset:
    """A dataset at a URL or path, opened by the source that recognises it.

    Give the location one way: positionally, or as ``local_dir=`` (a local path),
    ``remote_dir=`` (a remote URL) or ``input_dir=`` (either); they mean the same.
    ``source=NAME`` skips detection. ``storage_options`` go to fsspec (credentials,
    ``endpoint_url``). Caches live in ``cache_dir``, else ``$SLIPSTREAM_CACHE_DIR``,
    else ``~/.slipstream``.

    How the cache is built (also when a loader builds it): ``max_pixels`` bounds one
    image's pixels, ``on_error="skip"`` leaves bad samples out instead of stopping, and
    ``exif_orientation="apply"`` stores images upright (the default ``"ignore"`` keeps
    them as stored, like torchvision); see :func:`slipstream.build_cache`.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        local_dir: str | os.PathLike[str] | None = None,
        remote_dir: str | None = None,
        input_dir: str | os.PathLike[str] | None = None,
        source: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        fields: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        on_error: str = "raise",
        exif_orientation: str = "ignore",
        **source_options: Any,
    ) -> None:
        given = {
            k: v
            for k, v in {"url": url, "local_dir": local_dir, "remote_dir": remote_dir,
                         "input_dir": input_dir}.items()
            if v is not None
        }
        if len(given) != 1:
            raise TypeError(
                "SlipstreamDataset needs exactly one location: a positional URL, local_dir=, "
                f"remote_dir= or input_dir= (got {', '.join(given) or 'none'})"
            )
        self.url = os.fspath(next(iter(given.values())))
        self.source: Source = open_source(
            self.url, source=source, storage_options=storage_options, **source_options
        )
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.selected_fields = tuple(fields) if fields is not None else None
        self.max_pixels = check_max_pixels(max_pixels)
        if on_error not in BUILD_ON_ERROR:
            raise ValueError(f"on_error must be one of {BUILD_ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.exif_orientation = check_exif_orientation(exif_orientation)

    @property
    def fields(self) -> tuple[Field, ...]:
        return self.source.fields

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample {index} out of range for a dataset of {n}")
        return self.source.read(index % n)

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.cache_dir)

    def cache_key(self, image_format: str = "jpeg") -> str:
        return cache_key_for(self.source, image_format=image_format, fields=self.selected_fields,
                             exif_orientation=self.exif_orientation)

    def find_cache(self, image_format: str = "jpeg") -> Cache | None:
        """The complete local cache for this dataset, if one exists."""
        key = self.cache_key(image_format)
        return self.store.open_cache(key) if self.store.has(key) else None

    def build_cache(
        self, image_format: str = "jpeg", *, progress: bool = True, num_threads: int = 16,
        max_pixels: int | None = None, on_error: str | None = None,
        remote: CacheStore | str | None = None, local_cache_limit: int | str | None = None,
    ) -> Cache:
        """Find this dataset's cache, or build it (once; later calls find it).
        ``max_pixels`` and ``on_error`` override the dataset's for this call; ``remote``
        and ``local_cache_limit`` build it into a remote store through a bounded local
        disk (:func:`slipstream.caching.build_cache`)."""
        from .caching import build_cache

        return build_cache(
            self.source,
            self.store,
            image_format=image_format,
            fields=self.selected_fields,
            num_threads=num_threads,
            progress=progress,
            max_pixels=self.max_pixels if max_pixels is None else max_pixels,
            on_error=self.on_error if on_error is None else on_error,
            exif_orientation=self.exif_orientation,
            remote=remote,
            local_cache_limit=local_cache_limit,
        )

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> SlipstreamDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SlipstreamDataset({self.source!r})"
