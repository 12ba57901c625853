"""Value → sample-index lookups stored in the cache group (``write_index``)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CacheError
from ..schema import FieldKind
from .arrays import read_array, write_array
from .layout import INDEXES_GROUP, MANIFEST_NAME, FileLedger, group_metadata, read_manifest

if TYPE_CHECKING:
    from .reader import Cache

__all__ = ["FieldIndex", "write_index"]


@dataclass(frozen=True)
class FieldIndex:
    """For one numeric field: each distinct value and the samples that hold it.

    ``samples[offsets[k]:offsets[k+1]]`` are the sample indices (ascending) whose field
    equals ``values[k]``; ``values`` is sorted.
    """

    field: str
    values: np.ndarray
    offsets: np.ndarray
    samples: np.ndarray

    def samples_for(self, value: int | float) -> np.ndarray:
        k = int(np.searchsorted(self.values, value))
        if k == len(self.values) or self.values[k] != value:
            return np.empty(0, np.int64)
        return self.samples[self.offsets[k] : self.offsets[k + 1]]

    def counts(self) -> dict[int | float, int]:
        return {v.item(): int(n) for v, n in zip(self.values, np.diff(self.offsets))}

    def to_dict(self) -> dict[int | float, np.ndarray]:
        return {v.item(): self.samples_for(v) for v in self.values}

    @classmethod
    def build(cls, field: str, column: np.ndarray) -> FieldIndex:
        order = np.argsort(column, kind="stable")
        values, starts = np.unique(column[order], return_index=True)
        offsets = np.append(starts, len(column)).astype(np.int64)
        return cls(field, values, offsets, order.astype(np.int64))

    @classmethod
    def open(cls, cache: Cache, field: str) -> FieldIndex:
        d = cache.path / INDEXES_GROUP / field
        if not (d / "zarr.json").is_file():
            raise KeyError(
                f"cache {cache.key} has no index for {field!r} (it has "
                f"{list(cache.index_names)}); create one with write_index(cache, fields=[{field!r}])"
            )
        return cls(field, read_array(d / "values"), read_array(d / "offsets"),
                   read_array(d / "samples"))


def write_index(cache: Cache, fields: Sequence[str] = ("label",)) -> dict[str, FieldIndex]:
    """Store value → samples indexes for numeric ``fields`` in the cache group.

    Each index is written in a private directory, moved into ``_indexes/FIELD`` with one
    rename, and added to the manifest (rewritten atomically under a file lock), so
    concurrent writers and readers never see half an index. An index that exists is
    left as it is: a cache's data never changes, so neither does its index.
    """
    if isinstance(fields, str):
        fields = [fields]
    out: dict[str, FieldIndex] = {}
    for name in fields:
        f = cache.field(name)
        if f.kind not in (FieldKind.INT, FieldKind.FLOAT):
            raise TypeError(
                f"write_index: field {name!r} is {f.kind.value}; indexes are built for int and "
                f"float fields"
            )
        if name in cache.index_names:
            out[name] = cache.index(name)
            continue
        index = FieldIndex.build(name, cache.column(name))
        _publish_index(cache.path, index)
        out[name] = index
    cache.manifest = read_manifest(cache.path)
    return out


def _publish_index(cache_dir: Path, index: FieldIndex) -> None:
    group = cache_dir / INDEXES_GROUP
    tmp = cache_dir.parent / ".tmp" / f"index-{index.field}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        ledger = FileLedger(tmp)
        write_array(ledger, tmp / "values", index.values)
        write_array(ledger, tmp / "offsets", index.offsets)
        write_array(ledger, tmp / "samples", index.samples)
        ledger.write_json(tmp / "zarr.json", group_metadata({"kind": "index", "field": index.field}))
        with _manifest_lock(cache_dir):
            if not (group / "zarr.json").exists():
                group.mkdir(exist_ok=True)
                gl = FileLedger(cache_dir)
                gl.write_json(group / "zarr.json", group_metadata({"kind": "indexes"}))
                _add_to_manifest(cache_dir, gl.files)
            target = group / index.field
            if target.exists():
                return
            os.rename(tmp, target)
            prefix = f"{INDEXES_GROUP}/{index.field}/"
            _add_to_manifest(cache_dir, {prefix + k: v for k, v in ledger.files.items()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _manifest_lock:
    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir.parent / ".tmp" / f"{cache_dir.name}.lock"

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o664)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _add_to_manifest(cache_dir: Path, files: dict[str, dict[str, object]]) -> None:
    manifest = read_manifest(cache_dir)
    manifest["files"].update(files)
    tmp = cache_dir / f".{MANIFEST_NAME}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    try:
        os.replace(tmp, cache_dir / MANIFEST_NAME)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CacheError(f"could not update {cache_dir / MANIFEST_NAME}: {exc}") from exc
