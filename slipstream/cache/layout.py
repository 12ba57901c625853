"""The on-disk layout of a cache: names, format version, Zarr v3 metadata, manifest.

See ``docs/cache-format.md`` for the specification this module implements.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheCorruptError, CacheFormatError, CacheNotFoundError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ATTRS_KEY",
    "INDEXES_GROUP",
    "Codec",
    "is_complete",
    "array_metadata",
    "group_metadata",
    "read_manifest",
    "read_attrs",
    "write_root_metadata",
    "FileLedger",
]

#: Bumped whenever a reader of the previous version would misread a new cache.
FORMAT_VERSION = 1
#: The root group's metadata. Written last, it carries the manifest (every other file
#: with its size and checksum) in its attributes: a cache is complete once it exists.
MANIFEST_NAME = "zarr.json"
#: The key under the root group's attributes that holds slipstream's metadata.
ATTRS_KEY = "slipstream"
#: The sub-group holding value -> samples indexes written by ``write_index``.
INDEXES_GROUP = "_indexes"
CHECKSUM = "sha256"


class Codec:
    """How an image's bytes in the heap are encoded (the ``codecs`` array)."""

    JPEG = 0  #: baseline/progressive JPEG, YCbCr or grayscale: libjpeg-turbo decodes to RGB
    ENCODED = 1  #: any other format Pillow reads (PNG, CMYK JPEG, WebP, ...): decode with Pillow
    RAW_RGB = 2  #: height x width x 3 uint8 pixels, row-major
    YUV420 = 3  #: full-range YCbCr planes Y, Cb, Cr (4:2:0); only in the derived yuv420 heap

    NAMES = {JPEG: "jpeg", ENCODED: "encoded", RAW_RGB: "raw_rgb", YUV420: "yuv420"}


def is_complete(path: str | os.PathLike[str]) -> bool:
    """A cache directory is complete once its root metadata, with the manifest, exists
    (it is written last)."""
    try:
        meta = json.loads((Path(path) / MANIFEST_NAME).read_bytes())
        return isinstance(meta["attributes"][ATTRS_KEY]["files"], dict)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def array_metadata(length: int, chunk_length: int, dtype: np.dtype[Any]) -> dict[str, Any]:
    """Zarr v3 metadata of an uncompressed 1-D array: chunk files are raw little-endian bytes."""
    dtype = np.dtype(dtype)
    codec: dict[str, Any] = {"name": "bytes"}
    if dtype.itemsize > 1:
        codec["configuration"] = {"endian": "little"}
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [int(length)],
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [int(chunk_length)]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dtype.kind == "f" else 0,
        "codecs": [codec],
        "attributes": {},
        "storage_transformers": [],
    }


def group_metadata(attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes or {})}


def read_attrs(cache_dir: Path) -> dict[str, Any]:
    """The slipstream attributes of a cache, checked for a format version we can read."""
    meta_path = cache_dir / "zarr.json"
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError as exc:
        raise CacheNotFoundError(f"{cache_dir} is not a slipstream cache: no zarr.json") from exc
    except ValueError as exc:
        raise CacheCorruptError(f"{meta_path} is not valid JSON ({exc}); rebuild the cache") from exc
    attrs = meta.get("attributes", {}).get(ATTRS_KEY) if isinstance(meta, dict) else None
    if not isinstance(attrs, dict):
        raise CacheFormatError(
            f"{cache_dir} is a Zarr group but not a slipstream cache: its attributes have no "
            f"{ATTRS_KEY!r} entry"
        )
    version = attrs.get("format_version")
    if not isinstance(version, int):
        raise CacheFormatError(
            f"{cache_dir}: the cache records no integer format_version (got {version!r}); "
            f"rebuild it with `slipstream build`"
        )
    if version > FORMAT_VERSION:
        raise CacheFormatError(
            f"{cache_dir} was written in cache format {version}, newer than the {FORMAT_VERSION} "
            f"this slipstream reads; upgrade slipstream (pip install -U slipstream)"
        )
    if version < 1:
        raise CacheFormatError(f"{cache_dir}: unknown cache format version {version}")
    return attrs


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    """The cache's attributes, checked to hold the manifest (``files``) of a finished build."""
    attrs = read_attrs(cache_dir)
    if not isinstance(attrs.get("files"), dict):
        raise CacheNotFoundError(
            f"{cache_dir} is not a complete cache: its metadata has no manifest (a build that "
            f"did not finish, or not a slipstream cache); delete it and build again"
        )
    return attrs


def write_root_metadata(cache_dir: Path, attrs: dict[str, Any]) -> None:
    """Replace the root ``zarr.json`` atomically (write aside, then rename over)."""
    data = json.dumps(group_metadata({ATTRS_KEY: attrs}), indent=2, sort_keys=True).encode()
    tmp = cache_dir / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, cache_dir / MANIFEST_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileLedger:
    """Records each file written into a cache with its size and checksum."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, dict[str, Any]] = {}

    def record(self, path: Path, size: int, digest: str) -> None:
        rel = path.relative_to(self.root).as_posix()
        self.files[rel] = {"size": size, CHECKSUM: digest}

    def write_bytes(self, path: Path, data: bytes | memoryview) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.record(path, len(data), hashlib.sha256(data).hexdigest())

    def write_json(self, path: Path, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())
