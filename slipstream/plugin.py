"""Everything a plugin author imports, from one module (``docs/plugins.md``).

A source plugin subclasses :class:`Source`; a store plugin subclasses :class:`CacheStore`
(any storage) or :class:`RemoteStore` (any fsspec filesystem). Either returns its classes
from a :data:`hookimpl`-marked hook and names its module in the ``slipstream`` entry-point
group. The conformance kits :class:`SourceTests` and :class:`StoreTests` are imported
from here too; they need pytest, so they load only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CacheCorruptError,
    PluginError,
    RemoteAccessError,
    RemoteObjectNotFoundError,
    RemoteStoreError,
    RemoteTimeoutError,
    SampleError,
    SlipstreamError,
    SourceNotFoundError,
    UnsafeArchiveError,
)
from .hookspecs import hookimpl
from .location import Location, redact_url
from .schema import Field, FieldKind, RawImage, Sample, SampleValue
from .sources._fsinfo import version_tag
from .sources.base import Detection, Source
from .sources.tar import check_member_safe
from .stores._retry import RetryPolicy
from .stores.base import CacheStore, ObjectInfo, is_cache_name
from .stores.remote import RemoteStore
from .stores.sync import open_remote_store

if TYPE_CHECKING:
    from .testing import SourceTests, StoreTests

__all__ = [
    # hooks
    "hookimpl",
    # sources
    "Source", "Detection", "Location", "Field", "FieldKind", "RawImage", "Sample",
    "SampleValue", "check_member_safe", "version_tag", "redact_url",
    # stores
    "CacheStore", "RemoteStore", "ObjectInfo", "RetryPolicy", "is_cache_name",
    "open_remote_store",
    # errors
    "SlipstreamError", "PluginError", "SampleError", "SourceNotFoundError",
    "UnsafeArchiveError", "CacheCorruptError", "RemoteStoreError",
    "RemoteObjectNotFoundError", "RemoteAccessError", "RemoteTimeoutError",
    # conformance kits (need pytest)
    "SourceTests", "StoreTests",
]


def __getattr__(name: str) -> Any:
    if name in ("SourceTests", "StoreTests"):
        from . import testing

        return getattr(testing, name)
    raise AttributeError(f"module 'slipstream.plugin' has no attribute {name!r}")
