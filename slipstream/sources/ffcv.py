"""FFCV ``.beton`` files (format version 2, as FFCV 1.0 writes them), local or at any URL.

Layout (little-endian), parsed with numpy from bytes read through fsspec:

- header (24 bytes): ``u2 version, u2 num_fields, u4 page_size, u8 num_samples,
  u8 alloc_table_ptr``;
- ``num_fields`` field descriptors of 1041 bytes: ``u1 type_id, u1 name[16], u1 arguments[1024]``;
- the metadata table: ``num_samples`` rows of an aligned struct with one member per field;
- the data region, in pages of ``page_size`` bytes (every allocation of a sample lies
  in one page);
- at ``alloc_table_ptr`` to the end: ``(u8 sample_id, u8 ptr, u8 size)`` per allocation,
  which gives the size of data a metadata row only points to.

============================ =========== =================================================
FFCV field (type id)         kind        value
============================ =========== =================================================
``FloatField`` (0)           FLOAT       ``float``
``IntField`` (1)             INT         ``int``
``RGBImageField`` (2)        IMAGE       JPEG bytes (``jpg`` mode) or :class:`RawImage`
                                         (``raw`` mode); a file may mix both
``BytesField`` (3)           BYTES       the bytes
``NDArrayField`` (4),        BYTES       the array's bytes in C order; dtype and shape
``TorchTensorField`` (6)                 are in :meth:`FFCVSource.describe`
``JSONField`` (5)            STR         the JSON text
============================ =========== =================================================

Custom fields (type id 255) are refused with an error naming them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SampleError, SourceDetectionError
from ..hookspecs import hookimpl
from ..location import Location
from ..schema import Field, FieldKind, RawImage, Sample, SampleValue
from ._fsinfo import version_tag
from ._remote import RangeReader, access_errors, iter_blocks
from .base import Detection, Source

__all__ = ["FFCVSource", "FFCV_SUFFIXES"]

FFCV_SUFFIXES = (".beton", ".ffcv")
FORMAT_VERSION = 2

_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                    ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
_FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)),
                        ("arguments", ("<u1", (1024,)))], align=True)
_ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
_PTR_SIZE = np.dtype([("ptr", "<u8"), ("size", "<u8")])
_RGB = np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])
_NDARRAY_ARGS = np.dtype([("shape", "<u8", 32), ("type_length", "<u8")])

_JPG, _RAW = 0, 1
_TYPES = {0: "FloatField", 1: "IntField", 2: "RGBImageField", 3: "BytesField",
          4: "NDArrayField", 5: "JSONField", 6: "TorchTensorField"}
_KINDS = {0: FieldKind.FLOAT, 1: FieldKind.INT, 2: FieldKind.IMAGE, 3: FieldKind.BYTES,
          4: FieldKind.BYTES, 5: FieldKind.STR, 6: FieldKind.BYTES}
_METADATA = {0: np.dtype("<f8"), 1: np.dtype("<i8"), 2: _RGB, 3: _PTR_SIZE,
             4: np.dtype("<u8"), 5: _PTR_SIZE, 6: np.dtype("<u8")}


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    type_id: int
    dtype: str | None = None  # NDArray fields
    shape: tuple[int, ...] | None = None

    @property
    def array_bytes(self) -> int:
        assert self.dtype is not None and self.shape is not None
        return np.dtype(self.dtype).itemsize * math.prod(self.shape)


class FFCVSource(Source):
    """An FFCV ``.beton`` file: its fields as FFCV wrote them, samples in file order."""

    name = "ffcv"
    priority = 40

    def __init__(self, location: Location, **options: Any) -> None:
        super().__init__(location, **options)
        self._where = location.describe()
        self._ranges = RangeReader(location)
        with access_errors(self._where, "the .beton file"):
            info = location.fs.info(location.path)
        if info.get("type") == "directory":
            raise SourceDetectionError(f"{self._where}: a directory, not an FFCV .beton file")
        self._info = info
        self._size = int(info.get("size") or 0)
        try:
            header = self._parse_header()
            self._num_samples = int(header["num_samples"])
            self._page_size = int(header["page_size"])
            self._specs = self._parse_fields(int(header["num_fields"]))
            self._metadata = self._read_metadata()
            self._alloc_ptrs, self._alloc_sizes = self._read_alloc_table(
                int(header["alloc_table_ptr"]))
        except BaseException:
            self._ranges.close()
            raise
        self._fields = tuple(Field(s.name, _KINDS[s.type_id]) for s in self._specs)

    @classmethod
    def detect(cls, location: Location) -> Detection:
        if not location.path.lower().endswith(FFCV_SUFFIXES):
            return Detection.no(f"name does not end in {'/'.join(FFCV_SUFFIXES)}")
        if not location.fs.isfile(location.path):
            return Detection.no("not a file")
        return Detection.yes("an FFCV file by its suffix")

    # -- parsing ----------------------------------------------------------------------
    def _foreign(self, what: str) -> SourceDetectionError:
        return SourceDetectionError(
            f"{self._where}: not a readable FFCV .beton file: {what}. Expected a file written "
            f"by ffcv.writer.DatasetWriter (format version {FORMAT_VERSION}); a truncated copy "
            f"or another format under this suffix cannot be read"
        )

    def _read(self, start: int, length: int, what: str) -> bytes:
        if start + length > self._size:
            raise self._foreign(f"the {what} (bytes {start}-{start + length}) lies past the end "
                                f"of the {self._size}-byte file (truncated?)")
        return self._ranges.read(self.location.path, start, start + length, name=self._where)

    def _parse_header(self) -> np.void:
        if self._size < _HEADER.itemsize:
            raise self._foreign(f"only {self._size} bytes, shorter than the header")
        header = np.frombuffer(self._read(0, _HEADER.itemsize, "header"), _HEADER)[0]
        version, page = int(header["version"]), int(header["page_size"])
        if version != FORMAT_VERSION:
            raise self._foreign(f"header version {version}, expected {FORMAT_VERSION}")
        if page <= 0 or page & (page - 1) or int(header["num_fields"]) == 0:
            raise self._foreign(f"page size {page} and {int(header['num_fields'])} fields")
        if int(header["alloc_table_ptr"]) > self._size:
            raise self._foreign(f"its allocation table starts at byte "
                                f"{int(header['alloc_table_ptr'])}, past the end (truncated?)")
        return header

    def _parse_fields(self, count: int) -> list[_FieldSpec]:
        raw = self._read(_HEADER.itemsize, count * _FIELD_DESC.itemsize, "field descriptors")
        specs = []
        for desc in np.frombuffer(raw, _FIELD_DESC):
            type_id = int(desc["type_id"])
            name = desc["name"].tobytes().split(b"\0", 1)[0].decode("ascii", "replace")
            if type_id == 255:
                raise SourceDetectionError(
                    f"{self._where}: field {name!r} is a custom FFCV field; slipstream reads "
                    f"only FFCV's built-in field types ({', '.join(_TYPES.values())})")
            if type_id not in _TYPES:
                raise self._foreign(f"field {name!r} has unknown type id {type_id}")
            if type_id in (4, 6):
                dtype, shape = self._ndarray_args(name, desc["arguments"])
                spec = _FieldSpec(name, type_id, dtype, shape)
                if spec.array_bytes > self._size:
                    raise self._foreign(f"array field {name!r} holds {dtype} arrays of shape "
                                        f"{shape}, {spec.array_bytes} bytes each, more than the "
                                        f"whole file")
                specs.append(spec)
            else:
                specs.append(_FieldSpec(name, type_id))
        try:
            for s in specs:
                Field(s.name, _KINDS[s.type_id])
        except ValueError as exc:
            raise SourceDetectionError(f"{self._where}: {exc}") from exc
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise self._foreign(f"its fields {names} repeat a name")
        return specs

    def _ndarray_args(self, name: str, args: np.ndarray) -> tuple[str, tuple[int, ...]]:
        try:
            head = args[: _NDARRAY_ARGS.itemsize].view(_NDARRAY_ARGS)[0]
            n = int(head["type_length"])
            descr = json.loads(args[_NDARRAY_ARGS.itemsize:][:n].tobytes().decode("ascii"))
            dtype = np.dtype([tuple(x) for x in descr])["f0"]
            shape = [int(d) for d in head["shape"]]
            while shape and shape[-1] == 0:
                shape.pop()
            if dtype.hasobject:
                raise ValueError(f"dtype {dtype} holds Python objects")
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise self._foreign(f"array field {name!r} has unreadable arguments ({exc})") from exc
        return dtype.str, tuple(shape)

    def _read_metadata(self) -> np.ndarray:
        dtype = np.dtype([("", _METADATA[s.type_id]) for s in self._specs], align=True)
        start = _HEADER.itemsize + len(self._specs) * _FIELD_DESC.itemsize
        raw = self._read(start, self._num_samples * dtype.itemsize, "metadata table")
        return np.frombuffer(raw, dtype)

    def _read_alloc_table(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        length = self._size - start
        if length % _ALLOC.itemsize:
            raise self._foreign(f"its allocation table ({length} bytes from byte {start}) is "
                                f"not whole {_ALLOC.itemsize}-byte entries (truncated?)")
        table = np.frombuffer(self._read(start, length, "allocation table"), _ALLOC)
        # compared as uint64 first: a huge pointer or size must not wrap when cast
        if np.any(table["ptr"] > start) or np.any(table["size"] > start):
            raise self._foreign("an allocation lies past the start of the allocation table")
        order = np.argsort(table["ptr"], kind="stable")
        ptrs, sizes = table["ptr"][order].astype(np.int64), table["size"][order].astype(np.int64)
        if np.any(ptrs + sizes > start):
            raise self._foreign("an allocation extends into the allocation table")
        return ptrs, sizes

    # -- Source API -------------------------------------------------------------------
    @property
    def fields(self) -> tuple[Field, ...]:
        return self._fields

    def __len__(self) -> int:
        return self._num_samples

    def fingerprint(self) -> Any:
        return {"file": self.location.basename, "size": self._size,
                "version": version_tag(self._info)}

    def describe(self) -> dict[str, Any]:
        ffcv_fields = {}
        for s in self._specs:
            entry: dict[str, Any] = {"type": _TYPES[s.type_id]}
            if s.dtype is not None:
                entry.update(dtype=s.dtype, shape=list(s.shape or ()))
            ffcv_fields[s.name] = entry
        return {**super().describe(), "ffcv_fields": ffcv_fields, "page_size": self._page_size}

    def sample_name(self, index: int) -> str:
        return f"{self._where}[{index}]"

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._num_samples:
            raise IndexError(f"sample {index} out of range for {self._where} "
                             f"({self._num_samples} samples)")

    def _spans(self, index: int) -> list[tuple[int, int] | None]:
        """Per field, the ``(ptr, size)`` of its data in the file, or None for inline values."""
        row = self._metadata[index]
        spans: list[tuple[int, int] | None] = []
        for j, s in enumerate(self._specs):
            meta = row[j]
            if s.type_id in (0, 1):
                spans.append(None)
                continue
            if s.type_id == 2:
                ptr = int(meta["data_ptr"])
                size = self._alloc_size(ptr, index)
                if int(meta["mode"]) == _RAW:
                    size = int(meta["height"]) * int(meta["width"]) * 3
            elif s.type_id in (3, 5):
                ptr, size = int(meta["ptr"]), int(meta["size"])
            else:
                ptr, size = int(meta), s.array_bytes
            if ptr + size > self._size:
                raise SampleError(f"{self.sample_name(index)}: field {s.name!r} points past the "
                                  f"end of the file (truncated?)", index=index,
                                  path=self.sample_name(index))
            spans.append((ptr, size))
        return spans

    def _alloc_size(self, ptr: int, index: int) -> int:
        k = int(np.searchsorted(self._alloc_ptrs, ptr))
        if k == len(self._alloc_ptrs) or int(self._alloc_ptrs[k]) != ptr:
            raise SampleError(f"{self.sample_name(index)}: its image data at byte {ptr} has no "
                              f"entry in the allocation table; the file is corrupt",
                              index=index, path=self.sample_name(index))
        return int(self._alloc_sizes[k])

    def read(self, index: int) -> Sample:
        self._check_index(index)
        spans = self._spans(index)
        used = [s for s in spans if s is not None]
        if not used:
            return self._decode(index, spans, b"", 0)
        lo = min(p for p, _ in used)
        hi = max(p + n for p, n in used)
        data = self._ranges.read(self.location.path, lo, hi, name=self.sample_name(index))
        return self._decode(index, spans, data, lo)

    def _decode(self, index: int, spans: list[tuple[int, int] | None], data: bytes,
                base: int) -> Sample:
        row = self._metadata[index]
        out: Sample = {}
        for j, (s, span) in enumerate(zip(self._specs, spans, strict=True)):
            value: SampleValue
            if span is None:
                value = float(row[j]) if s.type_id == 0 else int(row[j])
            else:
                chunk = data[span[0] - base: span[0] - base + span[1]]
                if len(chunk) != span[1]:
                    raise SampleError(f"{self.sample_name(index)}: field {s.name!r} is cut short "
                                      f"(truncated file?)", index=index,
                                      path=self.sample_name(index))
                value = self._value(s, row[j], chunk, index)
            out[s.name] = value
        return out

    def _value(self, s: _FieldSpec, meta: Any, chunk: bytes, index: int) -> SampleValue:
        if s.type_id == 2:
            if int(meta["mode"]) == _JPG:
                return chunk
            if int(meta["mode"]) != _RAW:
                raise SampleError(f"{self.sample_name(index)}: image mode {int(meta['mode'])} is "
                                  f"neither jpg (0) nor raw (1)", index=index,
                                  path=self.sample_name(index))
            h, w = int(meta["height"]), int(meta["width"])
            if not h or not w:
                raise SampleError(f"{self.sample_name(index)}: raw image of {w}x{h} pixels; "
                                  f"the file is corrupt", index=index,
                                  path=self.sample_name(index))
            return RawImage(np.frombuffer(chunk, np.uint8).reshape(h, w, 3))
        if s.type_id == 5:  # JSON text, NUL-terminated
            try:
                return chunk.split(b"\0", 1)[0].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SampleError(f"{self.sample_name(index)}: field {s.name!r} is not UTF-8 "
                                  f"JSON ({exc})", index=index,
                                  path=self.sample_name(index)) from exc
        return chunk

    # -- streaming: one read per page when remote ---------------------------------------
    def iter_samples(
        self, indices: Iterable[int] | None = None, *, num_threads: int = 8
    ) -> Iterator[tuple[int, Sample]]:
        if self.location.is_local:
            yield from super().iter_samples(indices, num_threads=num_threads)
            return
        by_page: dict[int, list[tuple[int, list[tuple[int, int] | None]]]] = {}
        for i in (range(len(self)) if indices is None else indices):
            self._check_index(i)
            spans = self._spans(i)
            used = [p for p in spans if p is not None]
            page = min(p for p, _ in used) // self._page_size if used else -1
            by_page.setdefault(page, []).append((i, spans))
        tasks = [self._page_task(page, items) for page, items in sorted(by_page.items())]
        yield from iter_blocks(tasks, min(num_threads, 4))

    def _page_task(self, page: int, items: list[tuple[int, list[tuple[int, int] | None]]]
                   ) -> Callable[[], list[tuple[int, Sample]]]:
        def run() -> list[tuple[int, Sample]]:
            if page < 0:
                return [(i, self._decode(i, spans, b"", 0)) for i, spans in items]
            lo = page * self._page_size
            hi = max(p + n for _, spans in items for p, n in filter(None, spans))
            data = self._ranges.read(self.location.path, lo, hi, name=self._where)
            return [(i, self._decode(i, spans, data, lo)) for i, spans in items]
        return run

    def close(self) -> None:
        self._ranges.close()


@hookimpl
def slipstream_sources() -> Sequence[type[Source]]:
    return [FFCVSource]
