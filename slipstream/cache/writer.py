"""Writing one cache directory from a stream of ``(index, sample)`` pairs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SampleError
from ..schema import Field, FieldKind, RawImage, Sample
from . import layout
from .arrays import HeapWriter, write_array
from .images import (
    DEFAULT_MAX_PIXELS,
    apply_exif_orientation,
    check_exif_orientation,
    check_max_pixels,
    probe_image,
)
from .layout import (
    ChunkHook,
    FileLedger,
    group_metadata,
    write_root_metadata,
)

__all__ = ["CacheWriter", "SUPPORTED_IMAGE_FORMATS"]

SUPPORTED_IMAGE_FORMATS = ("jpeg",)
_NUMERIC_DTYPES = {FieldKind.INT: np.dtype("<i8"), FieldKind.FLOAT: np.dtype("<f8")}


class _HeapField:
    """One bytes, str or image field being written: its heap and per-value tables. Images
    over ``max_pixels`` are refused; ``apply_exif`` stores them upright."""

    def __init__(self, ledger: FileLedger, root: Path, field: Field, n: int, chunk_bytes: int,
                 max_pixels: int, apply_exif: bool):
        self.field = field
        self.max_pixels = max_pixels
        self.apply_exif = apply_exif
        self.dir = root / field.name
        self.heap = HeapWriter(ledger, self.dir / "heap", chunk_bytes)
        self.offsets = np.zeros(n, np.uint64)
        self.sizes = np.zeros(n, np.uint32)
        if field.kind is FieldKind.IMAGE:
            self.heights = np.zeros(n, np.uint32)
            self.widths = np.zeros(n, np.uint32)
            self.codecs = np.zeros(n, np.uint8)

    def prepare(self, i: int, value: Any, name: str) -> tuple[Any, Any]:
        """Check ``value`` and return what :meth:`commit` stores; raises
        :class:`SampleError` and changes nothing when the value is unusable."""
        kind = self.field.kind
        info = None
        if kind is FieldKind.IMAGE:
            if self.apply_exif and not isinstance(value, RawImage):
                value = apply_exif_orientation(bytes(value), name, self.max_pixels)
            info = probe_image(value, name, self.max_pixels)
            data = value.pixels if isinstance(value, RawImage) else value
        elif kind is FieldKind.STR:
            if not isinstance(value, str):
                raise SampleError(f"{name}: field {self.field.name!r} should be str, got "
                                  f"{type(value).__name__}", index=i, path=name)
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise SampleError(f"{name}: field {self.field.name!r} is not valid text "
                                  f"({exc.reason} at {exc.start})", index=i, path=name) from None
        else:
            if not isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
                raise SampleError(f"{name}: field {self.field.name!r} should be bytes, got "
                                  f"{type(value).__name__}", index=i, path=name)
            data = value
        size = memoryview(data).nbytes  # type: ignore[arg-type]
        if size >= 1 << 32:
            raise SampleError(f"{name}: field {self.field.name!r} is {size} bytes; the cache "
                              f"format holds values under 4 GiB", index=i, path=name)
        return data, info

    def commit(self, i: int, data: Any, info: Any) -> None:
        """Store what :meth:`prepare` returned as value ``i``."""
        if info is not None:
            self.heights[i], self.widths[i], self.codecs[i] = info.height, info.width, info.codec
        self.offsets[i] = self.heap.append(data)
        self.sizes[i] = memoryview(data).nbytes

    def finish(self, ledger: FileLedger, keep: np.ndarray) -> dict[str, Any]:
        """Write the tables of the samples ``keep`` selects (all but those left out)."""
        length = self.heap.finish()
        write_array(ledger, self.dir / "offsets", self.offsets[keep])
        write_array(ledger, self.dir / "sizes", self.sizes[keep])
        if self.field.kind is FieldKind.IMAGE:
            write_array(ledger, self.dir / "heights", self.heights[keep])
            write_array(ledger, self.dir / "widths", self.widths[keep])
            write_array(ledger, self.dir / "codecs", self.codecs[keep])
        ledger.write_json(self.dir / "zarr.json", group_metadata({"kind": self.field.kind.value}))
        return {"heap_bytes": length}

    def abort(self) -> None:
        self.heap.abort()


class CacheWriter:
    """Fills a fresh directory with a cache; :meth:`finish` writes the root metadata, which
    holds the manifest, last. ``on_chunk_file`` is called as each heap chunk file is final
    (:class:`~slipstream.cache.layout.FileLedger`)."""

    def __init__(
        self,
        directory: Path,
        fields: Sequence[Field],
        num_samples: int,
        *,
        image_format: str = "jpeg",
        heap_chunk_bytes: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        exif_orientation: str = "ignore",
        on_chunk_file: ChunkHook | None = None,
    ) -> None:
        if image_format not in SUPPORTED_IMAGE_FORMATS:
            raise ValueError(
                f"image_format={image_format!r} is not supported; expected one of "
                f"{', '.join(SUPPORTED_IMAGE_FORMATS)}"
            )
        self.directory = directory
        self.fields = tuple(fields)
        self.num_samples = num_samples
        self.image_format = image_format
        self.max_pixels = check_max_pixels(max_pixels)
        self.exif_orientation = check_exif_orientation(exif_orientation)
        self.ledger = FileLedger(directory, on_chunk_file)
        self._seen = np.zeros(num_samples, bool)
        #: source index -> why it was left out (:meth:`skip`)
        self.skipped: dict[int, str] = {}
        self._heaps: dict[str, _HeapField] = {}
        self._numbers: dict[str, np.ndarray] = {}
        for f in self.fields:
            if f.kind in _NUMERIC_DTYPES:
                self._numbers[f.name] = np.zeros(num_samples, _NUMERIC_DTYPES[f.kind])
            else:
                self._heaps[f.name] = _HeapField(
                    self.ledger, directory, f, num_samples, heap_chunk_bytes, self.max_pixels,
                    self.exif_orientation == "apply")

    def add(self, index: int, sample: Sample, name: str) -> None:
        """Store sample ``index``; ``name`` (its path, say) is used in errors. A sample
        that raises :class:`SampleError` is not stored at all (it may be :meth:`skip`-ped)."""
        if not 0 <= index < self.num_samples:
            raise SampleError(f"{name}: sample index {index} is outside 0..{self.num_samples - 1}",
                              index=index, path=name)
        if self._seen[index] or index in self.skipped:
            raise SampleError(f"{name}: the source produced sample {index} twice",
                              index=index, path=name)
        numbers: dict[str, int | float] = {}
        prepared: dict[str, tuple[Any, Any]] = {}
        for f in self.fields:
            try:
                value = sample[f.name]
            except KeyError:
                raise SampleError(f"{name}: the sample has no field {f.name!r} (it has "
                                  f"{sorted(sample)})", index=index, path=name) from None
            if f.name in self._numbers:
                numbers[f.name] = _number(value, f, name, index)
            else:
                prepared[f.name] = self._heaps[f.name].prepare(index, value, name)
        for field_name, number in numbers.items():
            self._numbers[field_name][index] = number
        for field_name, (data, info) in prepared.items():
            self._heaps[field_name].commit(index, data, info)
        self._seen[index] = True

    def skip(self, index: int, reason: str) -> None:
        """Leave sample ``index`` out of the cache (``on_error="skip"``); ``reason`` is
        recorded in the cache's metadata."""
        if 0 <= index < self.num_samples and not self._seen[index]:
            self.skipped[index] = reason

    def pending(self) -> list[int]:
        """The indices neither stored nor skipped yet."""
        done = self._seen.copy()
        done[list(self.skipped)] = True
        return np.flatnonzero(~done).tolist()

    def finish(self, key: str, source_description: Mapping[str, Any]) -> None:
        missing = self.pending()
        if missing:
            raise SampleError(
                f"the source produced {self.num_samples - len(missing)} of "
                f"{self.num_samples} samples; missing e.g. {missing[:5]}"
            )
        keep = self._seen
        field_info: dict[str, Any] = {}
        for name, values in self._numbers.items():
            write_array(self.ledger, self.directory / name, values[keep])
        for name, heap in self._heaps.items():
            field_info[name] = heap.finish(self.ledger, keep)
        attrs = {
            "format_version": layout.FORMAT_VERSION,
            "key": key,
            "num_samples": int(keep.sum()),
            "fields": [f.to_json() for f in self.fields],
            "image_format": self.image_format,
            "source": dict(source_description),
            "field_info": field_info,
            "max_pixels": self.max_pixels,
            "exif_orientation": self.exif_orientation,
            "created_unix": int(time.time()),
            "indexes": [],
            "files": self.ledger.files,  # the manifest: written last, with this file
        }
        if self.skipped:
            attrs["skipped"] = [{"index": i, "error": self.skipped[i]}
                                for i in sorted(self.skipped)]
        write_root_metadata(self.directory, attrs)

    def abort(self) -> None:
        for heap in self._heaps.values():
            heap.abort()


def _number(value: Any, field: Field, name: str, index: int) -> int | float:
    ok = (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if field.kind is FieldKind.INT
        else isinstance(value, (int, float, np.integer, np.floating))
    )
    if not ok:
        raise SampleError(
            f"{name}: field {field.name!r} should be {field.kind.value}, got {value!r}",
            index=index, path=name,
        )
    return value
