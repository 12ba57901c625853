"""The contract for places that hold caches."""

from __future__ import annotations

import abc
from typing import ClassVar

from ..location import Location

__all__ = ["CacheStore"]


class CacheStore(abc.ABC):
    """A place that holds committed caches, each under its content key.

    A store never shows a cache as present until it is complete: locally that is one
    atomic rename, remotely a commit marker written last.
    """

    #: URL protocols (as fsspec names them) this store serves, e.g. ``("file", "local")``.
    protocols: ClassVar[tuple[str, ...]]

    def __init__(self, location: Location) -> None:
        self.location = location

    @property
    def supports_writes(self) -> bool:
        return True

    @abc.abstractmethod
    def has(self, key: str) -> bool:
        """Whether a complete cache with this content key is in the store."""

    @abc.abstractmethod
    def keys(self) -> list[str]:
        """The content keys of every complete cache in the store."""

    def describe(self) -> str:
        return f"{type(self).__name__}({self.location.describe()!r})"
