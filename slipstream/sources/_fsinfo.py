"""Small helpers over fsspec listings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["version_tag"]

# The first of these a listing entry has identifies the object's version.
_VERSION_KEYS = ("ETag", "etag", "md5", "checksum", "mtime", "LastModified", "last_modified",
                 "updated", "modified")


def version_tag(entry: Mapping[str, Any]) -> str:
    """A string that changes when the object does (its ETag, checksum or modification time)."""
    for key in _VERSION_KEYS:
        value = entry.get(key)
        if value is not None:
            return f"{key}={value}"
    return ""
