"""The chunk layouts litdata writes besides the classic pytree chunk, read without pickle.

A classic chunk is ``uint32 num_items``, ``uint32 offsets[num_items + 1]``, the items.
The current litdata (0.2.7x) also writes:

- **Arrow section**: when every item is a dict of plain leaves (bytes, int, float, str,
  bool, nested dicts and lists), the chunk is the classic header with every offset equal
  (no item bytes), then an Arrow IPC file (``ARROW1`` ...; older writers: an IPC stream),
  ``uint32 len(ipc)`` and the magic ``LDARW01\\0``. With ``compression="zstd"`` the IPC
  buffers are zstd-compressed by Arrow itself (``ipc_compression`` in the index).
- **Framed zstd** (``compression="zstd"``, ``compression_level="batch"``, the default for
  other items): ``LDFZ01\\0\\0``, ``uint16 version, flags``, ``uint32 num_items,
  frame_rows, n_frames``, ``uint32 offsets[num_items + 1]`` into the uncompressed item
  bytes, then per frame ``uint32 first_item, n_items, uint64 offset, uint32
  compressed_len, uncompressed_len``, then the zstd frames.
- **Per-item zstd** (``compression_level="sample"``): the classic layout, each item
  its own zstd frame.
- **Whole-file zstd** (``compression_level="chunk"``, and older datasets written with
  ``compression="zstd"``): ``chunk-R-I.zstd.bin``, one zstd frame holding a classic chunk.

Arrow IPC and zstd are read with pyarrow (``pip install 'slipstream[litdata]'``), imported
only when a dataset needs it: its IPC reader validates what it reads, which a hand-written
flatbuffer parser would have to re-implement.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ..errors import MissingDependencyError, SampleError

__all__ = ["ARROW_MAGIC", "FRAMED_MAGIC", "arrow_items", "framed_items", "zstd_decompress"]

ARROW_MAGIC = b"LDARW01\0"
FRAMED_MAGIC = b"LDFZ01\0\0"
_FRAMED_PREFIX = struct.Struct("<8sHHIII")
_FRAMED_FRAME = struct.Struct("<IIQII")
#: A chunk's item offsets are uint32: no chunk, or item, inflates past this.
_MAX_INFLATED = 1 << 32


def _pyarrow(why: str) -> Any:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401  (a submodule: imported for pyarrow.ipc below)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{why} needs pyarrow: pip install 'slipstream[litdata]' ({exc})") from exc
    return pyarrow


def zstd_decompress(data: bytes, name: str, size: int | None = None) -> bytes:
    """One zstd frame (or several, concatenated) inflated; ``size`` when it is known."""
    pa = _pyarrow(f"{name}: reading zstd-compressed LitData chunks")
    try:
        if size is not None:
            return bytes(pa.Codec("zstd").decompress(data, decompressed_size=size, asbytes=True))
        parts, total = [], 0
        with pa.input_stream(pa.py_buffer(data), compression="zstd") as stream:
            while piece := stream.read(1 << 24):
                total += len(piece)
                if total > _MAX_INFLATED:
                    raise SampleError(f"{name}: its zstd data inflates past {_MAX_INFLATED} "
                                      f"bytes, more than a chunk can hold; it is corrupt",
                                      path=name)
                parts.append(piece)
        return b"".join(parts)
    except SampleError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SampleError(f"{name}: its zstd data does not decompress ({exc}); the chunk is "
                          f"corrupt or truncated", path=name) from exc


def framed_items(data: bytes, num_items: int, name: str) -> list[bytes]:
    """The items of a framed-zstd chunk, each as the bytes a classic chunk would hold."""

    def corrupt(what: str) -> SampleError:
        return SampleError(f"{name}: {what}; the framed zstd chunk is corrupt or truncated",
                           path=name)

    if len(data) < _FRAMED_PREFIX.size:
        raise corrupt("shorter than its header")
    _, version, _, count, _, n_frames = _FRAMED_PREFIX.unpack_from(data, 0)
    if version != 1:
        raise SampleError(f"{name}: framed zstd version {version}; slipstream reads version 1 "
                          f"(a newer litdata wrote it: re-optimize, or update slipstream)",
                          path=name)
    if count != num_items:
        raise corrupt(f"holds {count} items but index.json says {num_items}")
    offsets_at = _FRAMED_PREFIX.size
    table_at = offsets_at + 4 * (count + 1)
    payload_at = table_at + _FRAMED_FRAME.size * n_frames
    if n_frames == 0 or payload_at > len(data):
        raise corrupt(f"its tables ({n_frames} frames) do not fit in {len(data)} bytes")
    offsets = struct.unpack_from(f"<{count + 1}I", data, offsets_at)
    frames = [_FRAMED_FRAME.unpack_from(data, table_at + f * _FRAMED_FRAME.size)
              for f in range(n_frames)]
    expected_first = 0
    for f, (first, n, at, clen, _) in enumerate(frames):
        if first != expected_first or at < payload_at or at + clen > len(data):
            raise corrupt(f"frame {f} is out of place")
        expected_first = first + n
    # checked before inflating anything: the frames' sizes must add up to the items'
    if expected_first != count or offsets[0] != 0 or any(
            b < a for a, b in zip(offsets, offsets[1:])) or sum(
            f[4] for f in frames) != offsets[-1]:
        raise corrupt("its item offsets do not match its frames")
    payload = b"".join(zstd_decompress(data[at:at + clen], name, ulen)
                       for _, _, at, clen, ulen in frames)
    return [payload[offsets[k]:offsets[k + 1]] for k in range(count)]


def arrow_items(data: bytes, header_len: int, num_items: int, names: list[str],
                name: str) -> list[list[Any]]:
    """Each item's leaves (Python values, in ``names`` order) from a chunk's Arrow section.

    ``names`` are the pytree leaf names (``meta.id`` for a nested dict); struct columns
    are flattened to match. Lists and other nested values come back as JSON text bytes.
    """
    if len(data) < header_len + 12 or data[-8:] != ARROW_MAGIC:
        raise SampleError(f"{name}: its header lists no item bytes and it has no Arrow section "
                          f"(LDARW01 footer); the chunk is truncated or not litdata's",
                          path=name)
    (ipc_len,) = struct.unpack_from("<I", data, len(data) - 12)
    start = len(data) - 12 - ipc_len
    if ipc_len == 0 or start < header_len:
        raise SampleError(f"{name}: its Arrow section claims {ipc_len} bytes, which do not fit "
                          f"in the chunk; the chunk is corrupt", path=name)
    pa = _pyarrow(f"{name}: reading LitData items stored in an Arrow section")
    ipc = pa.py_buffer(data[start:start + ipc_len])
    try:
        reader = (pa.ipc.open_file(ipc) if data[start:start + 6] == b"ARROW1"
                  else pa.ipc.open_stream(ipc))
        table = reader.read_all()
        table.validate(full=True)
        while any(pa.types.is_struct(field.type) for field in table.schema):
            table = table.flatten()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SampleError(f"{name}: its Arrow section is unreadable ({exc}); the chunk is "
                          f"corrupt", path=name) from exc
    if table.num_rows != num_items:
        raise SampleError(f"{name}: its Arrow section holds {table.num_rows} rows but "
                          f"index.json says {num_items} items", path=name)
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise SampleError(f"{name}: its Arrow section lacks the leaves {missing} that "
                          f"index.json lists (it has {table.column_names})", path=name)
    columns = []
    for n in names:
        values = table.column(n).to_pylist()
        if not _plain(pa, table.schema.field(n).type):  # a list, say: litdata's "json" leaf
            try:
                values = [None if v is None else json.dumps(v).encode() for v in values]
            except (TypeError, ValueError) as exc:  # bytes in a list: not JSON
                raise SampleError(f"{name}: the nested leaf {n!r} holds values JSON cannot "
                                  f"represent ({exc}); slipstream reads nested leaves as "
                                  f"JSON text", path=name) from exc
        columns.append(values)
    return [list(row) for row in zip(*columns)]


def _plain(pa: Any, arrow_type: Any) -> bool:
    """A number, bool, string or bytes column (not a list, map or union)."""
    t = pa.types
    return (t.is_primitive(arrow_type) or t.is_null(arrow_type) or t.is_binary(arrow_type)
            or t.is_large_binary(arrow_type) or t.is_string(arrow_type)
            or t.is_large_string(arrow_type))
