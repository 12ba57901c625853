"""``WebDatasetSource``: WebDataset tar shards (one shard, or a directory of them) at any URL."""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slipstream.plugin import (
    Detection,
    Field,
    FieldKind,
    SampleError,
    Source,
    SourceNotFoundError,
    version_tag,
)

from ._shards import SHARD_SUFFIX, ShardSample, peek_shard, scan_shard

if TYPE_CHECKING:
    from slipstream.plugin import Location, Sample

__all__ = ["WebDatasetSource"]

#: Bumped if the fingerprint's meaning changes, so old cache keys are not reused.
_FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class _Shard:
    path: str  # filesystem path, for location.fs
    name: str  # relative to the location, for fingerprints and messages
    size: int
    version: str


class WebDatasetSource(Source):
    """WebDataset image classification shards: fields ``image``, ``label`` and ``key``.

    The location is one ``.tar`` shard or a directory of them (read in sorted name
    order, not recursively). Each sample is the run of consecutive members sharing a
    key (``000017.jpg`` + ``000017.cls`` -> key ``000017``): ``image`` is the bytes of
    its ``.jpg``/``.jpeg``/``.png``/``.webp`` member, ``label`` the integer in its
    ``.cls`` member, ``key`` the key. Other members (``.json``, ``.txt``, ...) are
    ignored. Shards are read through the location's fsspec filesystem, member by byte
    range, so any URL fsspec reads works.
    """

    name = "webdataset"
    priority = 30  # before the ImageFolder ``tar`` source (20); detect() is strict

    _FIELDS = (
        Field("image", FieldKind.IMAGE),
        Field("label", FieldKind.INT),
        Field("key", FieldKind.STR),
    )

    def __init__(self, location: Location, **options: Any) -> None:
        if options:
            raise TypeError(
                f"the webdataset source takes no options; got {sorted(options)}"
            )
        super().__init__(location)
        self._shards = _list_shards(location)
        self._lock = threading.Lock()
        self._index: list[tuple[_Shard, ShardSample]] | None = None

    @classmethod
    def detect(cls, location: Location) -> Detection:
        fs, path = location.fs, location.path
        if path.lower().endswith(SHARD_SUFFIX) and fs.isfile(path):
            return peek_shard(fs, path, location.describe())
        if not fs.isdir(path):
            return Detection.no(f"neither a {SHARD_SUFFIX} file nor a directory")
        shards = _shard_entries(location)
        if not shards:
            return Detection.no(f"a directory with no {SHARD_SUFFIX} shards")
        first = shards[0]["name"]
        answer = peek_shard(fs, first, location.child(posixpath.basename(first)))
        if not answer.matches:
            return answer
        return Detection.yes(f"{len(shards)} shard(s); {posixpath.basename(first)}: "
                             f"{answer.reason}")

    # -- listing (lazy: a cache hit reads no shard) -------------------------------------
    def _ensure_indexed(self) -> list[tuple[_Shard, ShardSample]]:
        with self._lock:
            if self._index is None:
                index = []
                for shard in self._shards:
                    shown = self._shown(shard)
                    samples = scan_shard(self.location.fs, shard.path, shown)
                    index.extend((shard, s) for s in samples)
                self._index = index
            return self._index

    def _shown(self, shard: _Shard) -> str:
        """The shard as messages name it: no credentials."""
        where = self.location.describe()
        if where.lower().endswith(SHARD_SUFFIX):
            return where
        return f"{where.rstrip('/')}/{shard.name}"

    # -- Source API ---------------------------------------------------------------------
    @property
    def fields(self) -> tuple[Field, ...]:
        return self._FIELDS

    def __len__(self) -> int:
        return len(self._ensure_indexed())

    def fingerprint(self) -> Any:
        return {
            "webdataset": _FINGERPRINT_VERSION,
            "shards": [[s.name, s.size, s.version] for s in self._shards],
        }

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "shards": len(self._shards)}

    def sample_name(self, index: int) -> str:
        shard, sample = self._ensure_indexed()[index]
        return f"{self._shown(shard)}!{sample.key}"

    def read(self, index: int) -> Sample:
        entries = self._ensure_indexed()
        if not 0 <= index < len(entries):
            raise IndexError(
                f"sample {index} is out of range: {self.location.describe()} holds "
                f"{len(entries)} samples"
            )
        shard, sample = entries[index]
        end = sample.offset + sample.size
        try:
            data = self.location.fs.cat_file(shard.path, start=sample.offset, end=end)
        except OSError as exc:
            raise SampleError(
                f"{self.sample_name(index)}: cannot read the image ({exc})",
                index=index, path=self.sample_name(index),
            ) from exc
        if len(data) != sample.size:
            raise SampleError(
                f"{self.sample_name(index)}: the shard ends inside this image (read "
                f"{len(data)} of {sample.size} bytes); the shard is truncated or changed "
                f"since it was listed", index=index, path=self.sample_name(index),
            )
        return {"image": bytes(data), "label": sample.label, "key": sample.key}


def _shard_entries(location: Location) -> list[dict[str, Any]]:
    entries = location.fs.ls(location.path, detail=True)
    shards = [
        e for e in entries
        if e.get("type") == "file" and e["name"].lower().endswith(SHARD_SUFFIX)
        and not posixpath.basename(e["name"]).startswith(".")
    ]
    return sorted(shards, key=lambda e: posixpath.basename(e["name"]))


def _list_shards(location: Location) -> list[_Shard]:
    fs, path = location.fs, location.path
    try:
        if path.lower().endswith(SHARD_SUFFIX) and fs.isfile(path):
            info = fs.info(path)
            return [_Shard(path, location.basename, int(info["size"]), version_tag(info))]
        entries = _shard_entries(location)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"{location.describe()}: no such shard or directory") from exc
    if not entries:
        raise SourceNotFoundError(
            f"{location.describe()}: no WebDataset shards here; expected a {SHARD_SUFFIX} "
            f"file or a directory holding {SHARD_SUFFIX} files"
        )
    return [
        _Shard(e["name"], posixpath.basename(e["name"]), int(e["size"]), version_tag(e))
        for e in entries
    ]
