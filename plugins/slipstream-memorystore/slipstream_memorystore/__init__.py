"""A slipstream cache store in fsspec's in-memory filesystem: ``memory://NAME/prefix``.

Written from ``docs/plugins.md`` alone, importing only ``slipstream.plugin``. Caches put
here live as long as the process: use it to test code that pushes and pulls caches, or
to share a cache between loaders of one process without touching disk twice.

    loader = SlipstreamLoader(dataset, remote_cache="memory://team/caches")
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slipstream.plugin import CacheStore, RemoteStore, hookimpl

__all__ = ["MemoryStore"]

#: One process holds the whole filesystem, so one lock makes a check-then-write atomic.
_WRITES = threading.Lock()


class MemoryStore(RemoteStore):
    """Caches under ``memory://NAME/prefix`` (fsspec's ``MemoryFileSystem``)."""

    protocols = ("memory",)
    supports_put_if_absent = True

    def write_object(self, timeout: float, path: str, data: bytes | Path, *, if_absent: bool,
                     options: Mapping[str, Any]) -> bool:
        with _WRITES:
            return super().write_object(timeout, path, data, if_absent=if_absent,
                                        options=options)


@hookimpl
def slipstream_stores() -> Sequence[type[CacheStore]]:
    return [MemoryStore]
