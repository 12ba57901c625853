"""What the cache code needs from the store that holds a cache, given as an argument.

The cache code reads, writes and verifies one directory; it does not know where private
work happens or which lock serialises changes. The store that holds the cache does
(``slipstream.stores.LocalStore.workspace``) and hands them in as a
:class:`CacheWorkspace`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["CacheWorkspace"]


@runtime_checkable
class CacheWorkspace(Protocol):
    """Private room and a lock for changing one published cache."""

    def staging_dir(self, purpose: str) -> Path:
        """A fresh, empty, private directory on the cache's filesystem (so that a rename
        moves it into the cache), named after ``purpose``. The caller removes it; one left
        by a process that died is removed by the store."""
        ...

    def lock(self) -> AbstractContextManager[object]:
        """The lock serialising changes to the cache's root metadata, across processes."""
        ...

    def set_aside(self) -> Path | None:
        """Move the whole cache out of the store's view (it was found damaged), so the
        next run builds or fetches a fresh one; where it went, or None if it could not."""
        ...
