"""The root ``zarr.json`` of a cache: the one place it is serialised and parsed.

Its attributes hold slipstream's metadata under ``"slipstream"``, among them the
``files`` manifest (every other file with its size and SHA-256). Written last, it is
the commit marker of a cache, locally and in a store (``docs/cache-format.md``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CacheCorruptError
from ._regular import read_regular

__all__ = ["MANIFEST_NAME", "ATTRS_KEY", "group_metadata", "encode_root", "decode_root",
           "parse_committed", "is_complete", "write_root"]

#: The root group's metadata file.
MANIFEST_NAME = "zarr.json"
#: The key under the root group's attributes that holds slipstream's metadata.
ATTRS_KEY = "slipstream"


def group_metadata(attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Zarr v3 metadata of a group with ``attributes``."""
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes or {})}


def encode_root(attrs: Mapping[str, Any]) -> bytes:
    """The root ``zarr.json`` for slipstream attributes ``attrs``, as slipstream writes it."""
    return json.dumps(group_metadata({ATTRS_KEY: dict(attrs)}), indent=2,
                      sort_keys=True).encode()


def decode_root(data: bytes) -> Any:
    """The slipstream attributes in root metadata ``data``: a dict, None if the group
    has none; raises ``ValueError`` (or ``RecursionError``) if ``data`` is not JSON."""
    meta = json.loads(data)
    group_attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return group_attrs.get(ATTRS_KEY) if isinstance(group_attrs, dict) else None


def parse_committed(data: bytes | None) -> dict[str, Any] | None:
    """The slipstream attributes in a root ``zarr.json`` if it commits a cache (holds a
    ``files`` manifest), else None. The format version is checked when the cache is
    opened (:func:`slipstream.cache.layout.read_manifest`)."""
    if data is None:
        return None
    try:
        attrs = decode_root(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(attrs, dict) or not isinstance(attrs.get("files"), dict):
        return None
    return attrs


def is_complete(path: str | os.PathLike[str]) -> bool:
    """A cache directory is complete once its root metadata, with the manifest, exists
    (it is written last)."""
    try:
        data = read_regular(Path(path) / MANIFEST_NAME)
    except (OSError, CacheCorruptError):
        return False
    return parse_committed(data) is not None


def write_root(cache_dir: Path, attrs: Mapping[str, Any]) -> None:
    """Replace the root ``zarr.json`` atomically (write aside, then rename over)."""
    tmp = cache_dir / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(encode_root(attrs))
        os.replace(tmp, cache_dir / MANIFEST_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
