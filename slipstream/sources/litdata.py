"""LitData: a directory written by ``litdata.optimize`` (``index.json`` + ``chunk-*.bin``).

The format is read directly through fsspec, without litdata's runtime reader:

- ``index.json`` lists the chunks in sample order (``filename``, ``chunk_size`` items,
  ``chunk_bytes``) and the ``config``: ``data_format`` (the serializer of each leaf of
  an item) and ``data_spec`` (the torch pytree spec of an item: which leaf is which key).
- A chunk is ``uint32 num_items``, ``uint32 offsets[num_items + 1]`` (absolute byte
  positions of each item in the chunk), then the items.
- An item is ``uint32 sizes[num_leaves]`` followed by each leaf's bytes, in pytree
  leaf order.

Chunks whose items live in an Arrow IPC section, and zstd-compressed chunks (framed,
per item or whole file), are read as described in :mod:`._litdata_chunks` (with pyarrow,
the ``litdata`` extra).

Leaves become fields named by their key path (``label``, ``meta.id``; list and tuple
positions are numbers; an item that is a single leaf is the field ``item``):

======================== ============ =================================================
litdata leaf format      field kind   value
======================== ============ =================================================
``pil``                  IMAGE        an RGB PIL image as :class:`RawImage`; other modes
                                      as lossless PNG bytes (``RGB`` conversion at decode)
``jpeg``, ``image:EXT``  IMAGE        the encoded bytes as stored
``bytes``                IMAGE/BYTES  IMAGE when the first sample's bytes are an encoded
                                      image (JPEG, PNG, ...), else BYTES; force with
                                      ``image_fields=[...]``
``int``, ``bool``        INT          ``int``
``float``                FLOAT        ``float``
``str``, ``text``        STR          ``str``
anything else            BYTES        the serialized bytes, as litdata stored them
======================== ============ =================================================

In an Arrow section, a leaf that is a list or another nested value (litdata's ``json``
format) comes back as BYTES holding its JSON text. Encrypted datasets, codecs other than
zstd and non-pytree item loaders are refused with an error that says so. Nothing is
unpickled.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import itertools
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SampleError, SourceDetectionError, SourceNotFoundError
from ..hookspecs import hookimpl
from ..location import Location
from ..schema import Field, FieldKind, RawImage, Sample, SampleValue
from ._fsinfo import version_tag
from ._litdata_chunks import FRAMED_MAGIC, arrow_items, framed_items, zstd_decompress
from ._remote import RangeReader, access_error, access_errors, iter_blocks
from .base import Detection, Source

__all__ = ["LitDataSource", "looks_like_image"]

INDEX_NAME = "index.json"

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*")
_IMAGE_FORMATS = ("pil", "jpeg")
_PNG_MODES = frozenset({"1", "L", "LA", "I;16", "RGBA"})

# How a chunk stores its items (see _litdata_chunks); the first two are read by item.
_CLASSIC, _ITEM_ZSTD, _ARROW, _FRAMED, _FILE_ZSTD = (
    "classic", "zstd per item", "arrow", "framed zstd", "zstd file")
_BY_ITEM = (_CLASSIC, _ITEM_ZSTD)
#: Decoded whole chunks kept for reads by index (Arrow, framed and whole-file zstd).
_DECODED_CHUNKS = 4


def looks_like_image(data: bytes) -> bool:
    """True when ``data`` starts like an encoded image file Pillow reads."""
    head = bytes(data[:12])
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _leaf_kind(fmt: str) -> FieldKind:
    base = fmt.split(":", 1)[0]
    if base in _IMAGE_FORMATS or base == "image":
        return FieldKind.IMAGE
    if base in ("int", "bool"):
        return FieldKind.INT
    if base == "float":
        return FieldKind.FLOAT
    if base in ("str", "text"):
        return FieldKind.STR
    return FieldKind.BYTES


@dataclass(frozen=True)
class _Chunk:
    filename: str
    num_items: int
    num_bytes: int | None


def _bad_spec(where: str, what: str) -> SourceDetectionError:
    return SourceDetectionError(
        f"{where}/{INDEX_NAME}: unreadable data_spec ({what}); expected the torch pytree spec "
        f"litdata.optimize writes. The index is corrupt: re-optimize the dataset"
    )


def _leaf_names(spec: Any, prefix: str, where: str) -> list[str]:
    """Field names of the leaves of a torch pytree spec (``treespec_dumps`` JSON)."""
    if not isinstance(spec, dict):
        raise _bad_spec(where, f"a node is {type(spec).__name__}, not an object")
    kind = spec.get("type")
    children = spec.get("children_spec") or []
    if not isinstance(children, list):
        raise _bad_spec(where, f"children_spec is {type(children).__name__}, not a list")
    if kind is None:
        return [prefix or "item"]
    if kind in ("builtins.dict", "collections.OrderedDict"):
        try:
            keys = json.loads(spec.get("context") or "[]")
        except (TypeError, ValueError, RecursionError) as exc:
            raise _bad_spec(where, f"dict keys {spec.get('context')!r:.80}: {exc}") from exc
        if not isinstance(keys, list) or len(keys) != len(children):
            raise SourceDetectionError(f"{where}: data_spec dict has keys {keys!r:.80} for "
                                       f"{len(children)} children; index.json is corrupt")
        names = [str(k) for k in keys]
    elif kind in ("builtins.list", "builtins.tuple"):
        names = [str(i) for i in range(len(children))]
    else:
        raise SourceDetectionError(
            f"{where}: items are {kind!r:.80} containers, which slipstream does not read; "
            f"re-optimize with items that are dicts, lists or tuples of leaves"
        )
    out: list[str] = []
    for name, child in zip(names, children, strict=True):
        out.extend(_leaf_names(child, f"{prefix}.{name}" if prefix else name, where))
    return out


class LitDataSource(Source):
    """A LitData dataset (``litdata.optimize`` output) in a local directory or at any URL.

    Options: ``image_fields`` names the ``bytes`` leaves that hold encoded images
    (default: sniffed from the first sample).
    """

    name = "litdata"
    priority = 40

    def __init__(self, location: Location, *, image_fields: Sequence[str] | None = None,
                 **options: Any) -> None:
        super().__init__(location, **options)
        self._where = location.describe()
        self._ranges = RangeReader(location)
        try:
            self._index_bytes = self._read_index()
            config, self._chunks = self._parse_index(self._index_bytes)
            self._formats: list[str] = config["data_format"]
            try:
                self._names = _leaf_names(self._parse_spec(config), "", self._where)
            except RecursionError as exc:
                raise _bad_spec(self._where, "nested too deeply") from exc
            if len(self._names) != len(self._formats):
                raise SourceDetectionError(
                    f"{self._where}: index.json's data_spec has {len(self._names)} leaves but "
                    f"its data_format lists {len(self._formats)}; the index is corrupt"
                )
            self._starts = list(itertools.accumulate((c.num_items for c in self._chunks),
                                                     initial=0))
            self._files = self._list_chunk_files()
            self._offsets: dict[int, np.ndarray] = {}
            self._kinds: dict[int, str] = {}
            self._decoded: OrderedDict[int, list[tuple[list[Any], bool]]] = OrderedDict()
            self._lock = threading.Lock()
            self._fields = self._make_fields(image_fields)
        except BaseException:
            self._ranges.close()
            raise

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def detect(cls, location: Location) -> Detection:
        fs, path = location.fs, location.path
        if not fs.isdir(path):
            return Detection.no("not a directory")
        if not fs.isfile(location.child(INDEX_NAME)):
            return Detection.no(f"no {INDEX_NAME}")
        return Detection.yes(f"a directory with a LitData {INDEX_NAME}")

    def _read_index(self) -> bytes:
        path = self.location.child(INDEX_NAME)
        try:
            return bytes(self.location.fs.cat_file(path))
        except FileNotFoundError as exc:
            raise SourceNotFoundError(
                f"{self._where}: no {INDEX_NAME} ({exc}); a LitData dataset is the directory "
                f"litdata.optimize(output_dir=...) wrote. Check the path (and the bucket name)"
            ) from exc
        except Exception as exc:
            mapped = access_error(exc, self._where, INDEX_NAME)
            if mapped is None:
                raise
            raise mapped from exc

    def _parse_index(self, raw: bytes) -> tuple[dict[str, Any], list[_Chunk]]:
        where = f"{self._where}/{INDEX_NAME}"
        try:
            index = json.loads(raw)
            config = index["config"]
            if not isinstance(config, dict) or not isinstance(index["chunks"], list):
                raise TypeError("'config' must be an object and 'chunks' a list")
            chunks = [_Chunk(_chunk_name(c["filename"]), _count(c["chunk_size"], "chunk_size"),
                             _count(c.get("chunk_bytes"), "chunk_bytes", optional=True))
                      for c in index["chunks"]]
            formats = config.get("data_format")
            if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
                raise TypeError(f"config.data_format must be a list of strings, got "
                                f"{formats!r:.80}")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise SourceDetectionError(
                f"{where}: not a LitData index ({type(exc).__name__}: {exc}); expected the JSON "
                f"litdata.optimize writes, with 'chunks' and 'config'"
            ) from exc
        loader = config.get("item_loader") or "PyTreeLoader"
        if loader != "PyTreeLoader":
            raise SourceDetectionError(f"{where}: written with item_loader={loader!r:.80}; "
                                       f"slipstream reads the default PyTreeLoader layout only")
        if config.get("encryption"):
            raise SourceDetectionError(
                f"{where}: the chunks use encryption={config['encryption']!r:.80}, which "
                f"slipstream does not read; re-optimize without encryption")
        compression = config.get("compression")
        if compression and str(compression).split(":", 1)[0] != "zstd":
            raise SourceDetectionError(
                f"{where}: the chunks use compression={compression!r:.80}; slipstream reads "
                f"zstd-compressed or uncompressed chunks: re-optimize with one of those")
        level = config.get("compression_level") or "chunk"
        if compression and level not in ("chunk", "batch", "sample"):
            raise SourceDetectionError(
                f"{where}: compression_level={level!r:.80} is not one litdata writes "
                f"('chunk', 'batch' or 'sample'); the index is corrupt")
        #: the layout every chunk has when the index alone says so (else: read its header)
        self._layout = (None if not compression else
                        {"chunk": _FILE_ZSTD, "sample": _ITEM_ZSTD, "batch": None}[level])
        if not chunks or sum(c.num_items for c in chunks) == 0 or not config.get("data_format"):
            raise SampleError(f"{self._where} holds no samples: {INDEX_NAME} lists no items. "
                              f"Check that litdata.optimize finished writing", path=self._where)
        return config, chunks

    def _parse_spec(self, config: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = json.loads(config["data_spec"])
            if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], dict)):
                raise ValueError(f"unexpected shape {str(spec)[:80]}")
            return spec[1]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise _bad_spec(self._where, f"{type(exc).__name__}: {exc}") from exc

    def _list_chunk_files(self) -> dict[str, dict[str, Any]]:
        with access_errors(self._where, "the dataset directory"):
            entries = self.location.fs.ls(self.location.path, detail=True)
        by_name = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in entries}
        missing = [c.filename for c in self._chunks if c.filename not in by_name]
        if missing:
            raise SourceNotFoundError(
                f"{self._where}: {INDEX_NAME} lists chunks that are not there: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the dataset is "
                f"incomplete (an interrupted upload or optimize?)"
            )
        for c in self._chunks:  # a count the file cannot hold is refused before any read
            size = by_name[c.filename].get("size")
            if self._layout == _FILE_ZSTD:
                break  # a compressed header can be smaller than the counts say
            if size is not None and _header_bytes(c.num_items) > int(size):
                raise SourceDetectionError(
                    f"{self._where}/{c.filename}: {INDEX_NAME} says it holds {c.num_items} "
                    f"items, but the file has {size} bytes, fewer than the "
                    f"{_header_bytes(c.num_items)} bytes of that many items' header; the index "
                    f"does not match the chunks (re-optimize, or restore the right index.json)"
                )
        return {c.filename: by_name[c.filename] for c in self._chunks}

    def _make_fields(self, image_fields: Sequence[str] | None) -> tuple[Field, ...]:
        repeated = sorted({n for n in self._names if self._names.count(n) > 1})
        if repeated:
            raise SourceDetectionError(
                f"{self._where}/{INDEX_NAME}: data_spec names leaves {repeated} more than once; "
                f"the index is corrupt")
        kinds = [_leaf_kind(f) for f in self._formats]
        is_bytes = [f.split(":", 1)[0] == "bytes" for f in self._formats]
        if image_fields is not None:
            wanted = set(image_fields)
            unknown = wanted - {n for n, b in zip(self._names, is_bytes, strict=True) if b}
            if unknown:
                raise ValueError(
                    f"image_fields={sorted(unknown)}: {self._where} has no such 'bytes' leaves; "
                    f"its leaves are {dict(zip(self._names, self._formats, strict=True))}"
                )
            kinds = [FieldKind.IMAGE if n in wanted else k
                     for n, k in zip(self._names, kinds, strict=True)]
        elif any(is_bytes):
            first, _ = self._item(0)
            kinds = [
                FieldKind.IMAGE if b and isinstance(first[j], bytes) and looks_like_image(first[j])
                else k
                for j, (k, b) in enumerate(zip(kinds, is_bytes, strict=True))
            ]
        try:
            return tuple(Field(n, k) for n, k in zip(self._names, kinds, strict=True))
        except ValueError as exc:
            raise SourceDetectionError(f"{self._where}: {exc}") from exc

    # -- Source API -----------------------------------------------------------------------
    @property
    def fields(self) -> tuple[Field, ...]:
        return self._fields

    def __len__(self) -> int:
        return int(self._starts[-1])

    def fingerprint(self) -> Any:
        return {
            "index_sha256": hashlib.sha256(self._index_bytes).hexdigest(),
            "chunks": [[c.filename, self._files[c.filename].get("size"),
                        version_tag(self._files[c.filename])] for c in self._chunks],
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chunks": len(self._chunks),
                "leaf_formats": dict(zip(self._names, self._formats, strict=True))}

    def _locate(self, index: int) -> tuple[int, int]:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"sample {index} out of range for {self._where} ({n} samples)")
        c = bisect.bisect_right(self._starts, index) - 1
        return c, index - self._starts[c]

    def sample_name(self, index: int) -> str:
        c, k = self._locate(index)
        return f"{self._where}/{self._chunks[c].filename}[{k}]"

    def read(self, index: int) -> Sample:
        return self._decode(*self._item(index), index)

    def _item(self, index: int) -> tuple[list[Any], bool]:
        """Sample ``index``'s leaves, and whether they are litdata-serialized bytes (else
        Python values from an Arrow section)."""
        c, k = self._locate(index)
        kind = self._chunk_kind(c)
        if kind not in _BY_ITEM:
            return self._decoded_chunk(c)[k]
        offsets = self._chunk_offsets(c)
        start, end = int(offsets[k]), int(offsets[k + 1])
        item = self._ranges.read(self._chunk_path(c), start, end, name=self.sample_name(index))
        return self._split_item(self._unwrap(item, kind, index), index), True

    def _unwrap(self, item: bytes, kind: str, index: int) -> bytes:
        return zstd_decompress(item, self.sample_name(index)) if kind == _ITEM_ZSTD else item

    def _chunk_path(self, c: int) -> str:
        return self.location.child(self._chunks[c].filename)

    def _chunk_name(self, c: int) -> str:
        return f"{self._where}/{self._chunks[c].filename}"

    def _chunk_kind(self, c: int, data: bytes | None = None) -> str:
        """How chunk ``c`` stores its items: from the index, else from its first bytes."""
        if self._layout is not None:
            return self._layout
        with self._lock:
            kind = self._kinds.get(c)
        if kind is None:
            head = (data[:8] if data is not None else
                    self._ranges.read(self._chunk_path(c), 0, 8, name=self._chunk_name(c)))
            if head == FRAMED_MAGIC:
                kind = _FRAMED
            else:
                offsets = self._chunk_offsets(c, data)
                kind = _ARROW if offsets[-1] == offsets[0] else _CLASSIC
            with self._lock:
                self._kinds[c] = kind
        return kind

    def _chunk_offsets(self, c: int, data: bytes | None = None) -> np.ndarray:
        with self._lock:
            cached = self._offsets.get(c)
        if cached is not None:
            return cached
        chunk = self._chunks[c]
        name = self._chunk_name(c)
        header_len = _header_bytes(chunk.num_items)
        head = (data[:header_len] if data is not None
                else self._ranges.read(self._chunk_path(c), 0, header_len, name=name))
        if len(head) < header_len:
            raise SampleError(f"{name}: shorter than its header; the chunk is truncated", path=name)
        (count,) = struct.unpack_from("<I", head, 0)
        offsets = np.frombuffer(head, "<u4", chunk.num_items + 1, 4).astype(np.int64)
        size = len(data) if data is not None else self._files[chunk.filename].get("size")
        if count != chunk.num_items:
            raise SampleError(f"{name}: holds {count} items but {INDEX_NAME} says "
                              f"{chunk.num_items}; not a chunk of this dataset", path=name)
        if offsets[0] != header_len or np.any(np.diff(offsets) < 0) or (
                size is not None and offsets[-1] > size):
            raise SampleError(f"{name}: its item offsets are inconsistent (a truncated or "
                              f"foreign chunk file)", path=name)
        with self._lock:
            self._offsets[c] = offsets
        return offsets

    def _decoded_chunk(self, c: int, data: bytes | None = None) -> list[tuple[list[Any], bool]]:
        """Every item of a chunk that is read whole (Arrow, framed or whole-file zstd);
        the last few are kept, so reads in index order decode each chunk once."""
        with self._lock:
            items = self._decoded.get(c)
            if items is not None:
                self._decoded.move_to_end(c)
                return items
        chunk, name = self._chunks[c], self._chunk_name(c)
        if data is None:
            data = self._ranges.read_all(self._chunk_path(c), name=name)
        kind = self._chunk_kind(c, data)
        if kind == _FILE_ZSTD:  # litdata compresses whole files of classic chunks only
            data, kind = zstd_decompress(data, name), _CLASSIC
        if kind == _ARROW:
            rows = arrow_items(data, _header_bytes(chunk.num_items), chunk.num_items,
                               self._names, name)
            items = [(row, False) for row in rows]
        elif kind == _FRAMED:
            items = [(self._split_item(raw, self._starts[c] + k), True)
                     for k, raw in enumerate(framed_items(data, chunk.num_items, name))]
        else:
            first = self._starts[c]
            items = [(self._split_item(self._unwrap(raw, kind, first + k), first + k), True)
                     for k, raw in enumerate(self._classic_items(c, data))]
        with self._lock:
            self._decoded[c] = items
            while len(self._decoded) > _DECODED_CHUNKS:
                self._decoded.popitem(last=False)
        return items

    def _classic_items(self, c: int, data: bytes) -> list[bytes]:
        """The items of a classic chunk held whole in memory."""
        offsets = self._chunk_offsets(c, data)
        if int(offsets[-1]) > len(data):
            name = self._chunk_name(c)
            raise SampleError(f"{name}: the chunk file is truncated", path=name)
        return [data[int(offsets[k]):int(offsets[k + 1])] for k in range(len(offsets) - 1)]

    def _split_item(self, item: bytes, index: int) -> list[bytes]:
        n = len(self._formats)
        if len(item) < 4 * n:
            raise SampleError(f"{self.sample_name(index)}: item shorter than its header",
                              index=index, path=self.sample_name(index))
        sizes = struct.unpack_from(f"<{n}I", item, 0)
        pos, leaves = 4 * n, []
        for size in sizes:
            leaves.append(item[pos:pos + size])
            pos += size
        if pos != len(item):
            raise SampleError(
                f"{self.sample_name(index)}: leaf sizes add up to {pos} bytes, the item has "
                f"{len(item)}; the chunk is corrupt", index=index, path=self.sample_name(index))
        return leaves

    def _decode(self, leaves: list[Any], serialized: bool, index: int) -> Sample:
        out: Sample = {}
        convert = _leaf_value if serialized else _plain_value
        for field, fmt, data in zip(self._fields, self._formats, leaves, strict=True):
            try:
                out[field.name] = convert(field.kind, fmt, data)
            except (struct.error, ValueError, TypeError, UnicodeDecodeError) as exc:
                name = self.sample_name(index)
                raise SampleError(f"{name}: field {field.name!r} ({fmt}) is unreadable ({exc})",
                                  index=index, path=name) from exc
        return out

    # -- streaming: chunk by chunk, one whole-chunk read per chunk ------------------------
    def iter_samples(
        self, indices: Iterable[int] | None = None, *, num_threads: int = 8
    ) -> Iterator[tuple[int, Sample]]:
        wanted = range(len(self)) if indices is None else list(indices)
        by_chunk: dict[int, list[int]] = {}
        for i in wanted:
            by_chunk.setdefault(self._locate(i)[0], []).append(i)
        tasks = [self._chunk_task(c, idx) for c, idx in sorted(by_chunk.items())]
        yield from iter_blocks(tasks, num_threads if self.location.is_local else min(num_threads, 4))

    def _chunk_task(self, c: int, indices: list[int]) -> Callable[[], list[tuple[int, Sample]]]:
        def run() -> list[tuple[int, Sample]]:
            if 2 * len(indices) < self._chunks[c].num_items and self._chunk_kind(c) in _BY_ITEM:
                return [(i, self.read(i)) for i in indices]  # a few items: ranged reads
            items = self._decoded_chunk(c)
            return [(i, self._decode(*items[i - self._starts[c]], i)) for i in indices]
        return run

    def close(self) -> None:
        self._ranges.close()


def _leaf_value(kind: FieldKind, fmt: str, data: bytes) -> SampleValue:
    base = fmt.split(":", 1)[0]
    if base == "pil":
        return _pil_value(data)
    if kind is FieldKind.INT:
        if base == "bool":
            if len(data) != 1:
                raise ValueError(f"a bool is 1 byte, got {len(data)}")
            return int(data[0] != 0)
        return int(struct.unpack("<q", data)[0])
    if kind is FieldKind.FLOAT:
        return float(struct.unpack("<d", data)[0])
    if kind is FieldKind.STR:
        return data.decode("utf-8")
    return bytes(data)


def _plain_value(kind: FieldKind, fmt: str, value: Any) -> SampleValue:
    """A leaf read from an Arrow section (already a Python value) as the field's kind."""
    if value is None:
        raise ValueError("the value is missing (null)")
    if kind is FieldKind.INT:
        if isinstance(value, float) or not isinstance(value, (int, bool)):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        return int(value)
    if kind is FieldKind.FLOAT:
        return float(value)
    if kind is FieldKind.STR:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _pil_value(data: bytes) -> bytes | RawImage:
    """litdata's PIL layout: ``uint32 width, height, len(mode)``, mode, ``Image.tobytes()``."""
    width, height, mode_len = struct.unpack_from("<3I", data, 0)
    mode = data[12:12 + mode_len].decode("ascii")
    raw = data[12 + mode_len:]
    if not width or not height:
        raise ValueError(f"a {width}x{height} {mode} image has no pixels")
    if mode == "RGB":
        if len(raw) != width * height * 3:
            raise ValueError(f"{width}x{height} RGB image with {len(raw)} bytes of pixels")
        return RawImage(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
    from PIL import Image

    # checked before Pillow allocates width x height pixels: the header is untrusted
    expected = -(-width * _bits_per_pixel(mode) // 8) * height
    if len(raw) != expected:
        raise ValueError(f"{width}x{height} {mode} image with {len(raw)} bytes of pixels "
                         f"(expected {expected})")

    image = Image.frombytes(mode, (width, height), raw)
    if mode in _PNG_MODES:  # kept exact; decoded to RGB like any PNG
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    return RawImage(np.asarray(image.convert("RGB")))


@functools.cache
def _bits_per_pixel(mode: str) -> int:
    """Bits per pixel of a Pillow mode as ``Image.tobytes()`` packs it (``1`` is 1 bit)."""
    from PIL import Image

    try:
        return len(Image.new(mode, (8, 1)).tobytes())
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"unknown image mode {mode!r}") from exc


def _header_bytes(num_items: int) -> int:
    """Length of a chunk's header: ``uint32 num_items, uint32 offsets[num_items + 1]``."""
    return 4 + 4 * (num_items + 1)


def _count(value: Any, what: str, *, optional: bool = False) -> Any:
    """A non-negative JSON integer from the index (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r:.40}")
    return value


def _chunk_name(value: Any) -> str:
    """A chunk's file name from the index: a plain name in the dataset directory."""
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"chunk filename {value!r:.80} is not a file name in the dataset "
                         f"directory")
    return value


@hookimpl
def slipstream_sources() -> Sequence[type[Source]]:
    return [LitDataSource]
