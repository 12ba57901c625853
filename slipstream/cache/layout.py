"""The on-disk layout of a cache: names, format version, Zarr v3 metadata, manifest.

See ``docs/cache-format.md`` for the specification this module implements.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheCorruptError, CacheError, CacheFormatError, CacheNotFoundError
from ._regular import read_regular
from .manifest import ATTRS_KEY, MANIFEST_NAME, decode_root, group_metadata, is_complete
from .manifest import write_root as write_root_metadata

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
    "check_attrs",
    "write_root_metadata",
    "FileLedger",
    "ChunkHook",
]

#: Bumped whenever a reader of the previous version would misread a new cache.
FORMAT_VERSION = 1
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


def read_attrs(cache_dir: Path) -> dict[str, Any]:
    """The slipstream attributes of a cache, checked for a format version we can read."""
    meta_path = cache_dir / MANIFEST_NAME
    try:
        attrs = decode_root(read_regular(meta_path))
    except FileNotFoundError as exc:
        raise CacheNotFoundError(f"{cache_dir} is not a slipstream cache: no zarr.json") from exc
    except CacheError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise CacheCorruptError(f"{meta_path} is not readable JSON ({type(exc).__name__}: "
                                f"{exc}); rebuild the cache") from exc
    if not isinstance(attrs, dict):
        raise CacheFormatError(
            f"{cache_dir} is a Zarr group but not a slipstream cache: its attributes have no "
            f"{ATTRS_KEY!r} entry"
        )
    version = attrs.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
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
    check_attrs(cache_dir, attrs)
    return attrs


def check_attrs(cache_dir: Path, attrs: Mapping[str, Any]) -> None:
    """Refuse root attributes no build writes (section 4 of docs/cache-format.md): every
    value a reader uses has its type and range, every path stays inside the cache."""
    from ..schema import Field

    def bad(what: str) -> CacheCorruptError:
        return CacheCorruptError(
            f"{cache_dir / MANIFEST_NAME}: {what}; the cache's metadata is damaged or was not "
            f"written by slipstream: delete the cache and build it again")

    key = attrs.get("key")
    if not isinstance(key, str) or not _is_name(key):
        raise bad(f"key {key!r:.80} is not a cache key")
    n = attrs.get("num_samples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise bad(f"num_samples {n!r:.40} is not a count")
    fields = attrs.get("fields")
    if not isinstance(fields, list) or not fields:
        raise bad(f"fields {fields!r:.80} is not a list of fields")
    try:
        parsed = [Field.from_json(f) for f in fields]
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"a field is unreadable ({type(exc).__name__}: {exc})") from exc
    names = [f.name for f in parsed]
    if len(set(names)) != len(names) or INDEXES_GROUP in names:
        raise bad(f"fields {names} repeat a name or use {INDEXES_GROUP!r}")
    if not isinstance(attrs.get("image_format", ""), str):
        raise bad(f"image_format {attrs['image_format']!r:.40} is not a string")
    for name in ("source", "field_info"):
        if not isinstance(attrs.get(name, {}), dict):
            raise bad(f"{name} {attrs[name]!r:.40} is not an object")
    images = {f.name for f in parsed if f.kind.value == "image"}
    for list_key, valid in (("indexes", set(names).__contains__),
                            ("derived", lambda e: e.partition("/")[0] in images
                             and _is_name(e.partition("/")[2]))):
        entries = attrs.get(list_key, [])
        if not isinstance(entries, list) or not all(
                isinstance(e, str) and valid(e) for e in entries):
            raise bad(f"{list_key} {entries!r:.80} lists something that is not in the cache")
    skipped = attrs.get("skipped", [])
    if not isinstance(skipped, list) or not all(
            isinstance(e, dict) and _is_count(e.get("index")) and isinstance(e.get("error"), str)
            for e in skipped):
        raise bad(f"skipped {skipped!r:.80} is not a list of {{'index': int, 'error': str}}")
    problem = manifest_problem(attrs["files"])
    if problem:
        raise bad(problem)


def manifest_problem(files: Mapping[str, Any]) -> str | None:
    """What is wrong with a manifest's ``files`` table, or None: every path must stay
    inside the cache, every entry be ``{"size": int >= 0, "sha256": str}``. Manifests
    come from shared storage too, so this is checked before any path is used."""
    for rel, entry in files.items():
        parts = rel.split("/") if isinstance(rel, str) else [""]
        if rel == MANIFEST_NAME or not all(_is_name(p) for p in parts):
            return f"the manifest lists {rel!r:.80}, not a relative path inside the cache"
        size = entry.get("size") if isinstance(entry, dict) else None
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0
                or not isinstance(entry.get(CHECKSUM), str)):
            return (f"the manifest entry of {rel!r} is {entry!r:.80}, expected "
                    f"{{'size': int >= 0, {CHECKSUM!r}: str}}")
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_name(part: str) -> bool:
    """A single path component: no separator, not empty, ``.`` or ``..``."""
    return part not in ("", ".", "..") and "/" not in part and "\\" not in part


#: Called with a heap chunk file's path and its manifest entry once the file is final.
ChunkHook = Callable[[Path, str, dict[str, Any]], None]


class FileLedger:
    """Records each file written into a cache with its size and checksum.

    ``on_chunk_file(path, rel, entry)``, if given, is called as each heap chunk file is
    final (closed, recorded; its bytes never change again), in the writing thread: it
    may move the file elsewhere (a build uploading as it goes) or block to slow the
    build down. An exception it raises stops the build.
    """

    def __init__(self, root: Path, on_chunk_file: ChunkHook | None = None) -> None:
        self.root = root
        self.files: dict[str, dict[str, Any]] = {}
        self.on_chunk_file = on_chunk_file

    def record(self, path: Path, size: int, digest: str) -> None:
        rel = path.relative_to(self.root).as_posix()
        self.files[rel] = {"size": size, CHECKSUM: digest}

    def chunk_final(self, path: Path) -> None:
        """Heap chunk file ``path`` (already recorded) is final: call the hook."""
        if self.on_chunk_file is not None:
            rel = path.relative_to(self.root).as_posix()
            self.on_chunk_file(path, rel, self.files[rel])

    def write_bytes(self, path: Path, data: bytes | memoryview) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.record(path, len(data), hashlib.sha256(data).hexdigest())

    def write_json(self, path: Path, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())
