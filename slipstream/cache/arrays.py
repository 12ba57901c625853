"""Writing and memory-mapping the 1-D Zarr arrays a cache is made of.

Arrays are uncompressed, so a chunk file is the chunk's raw little-endian bytes (the
last chunk padded to full length, as Zarr expects). Writing the files directly is
much faster than going through the Zarr API, and the result opens with
``zarr.open_group`` all the same.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..decode.kernel import load as native
from ..errors import CacheCorruptError, CacheError
from ._regular import open_regular, read_regular
from .layout import CHECKSUM, FileLedger, array_metadata

__all__ = [
    "DEFAULT_HEAP_CHUNK_BYTES",
    "write_array",
    "HeapWriter",
    "read_array",
    "ByteHeap",
]

#: Heap chunk size: large enough for few files, small enough to move in parallel.
DEFAULT_HEAP_CHUNK_BYTES = 64 << 20
#: Numeric arrays are chunked by this many elements.
NUMERIC_CHUNK_LENGTH = 1 << 20


def _chunk_path(array_dir: Path, i: int) -> Path:
    return array_dir / "c" / str(i)


def write_array(
    ledger: FileLedger, array_dir: Path, values: np.ndarray, chunk_length: int | None = None
) -> None:
    """Write ``values`` (1-D) as a Zarr v3 array at ``array_dir``."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1:
        raise ValueError(f"cache arrays are 1-D, got shape {values.shape}")
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    n = len(values)
    chunk = chunk_length or max(1, min(n, NUMERIC_CHUNK_LENGTH))
    ledger.write_json(array_dir / "zarr.json", array_metadata(n, chunk, values.dtype))
    for c, start in enumerate(range(0, n, chunk)):
        part = values[start : start + chunk]
        if len(part) < chunk:
            part = np.concatenate([part, np.zeros(chunk - len(part), values.dtype)])
        ledger.write_bytes(_chunk_path(array_dir, c), part.tobytes())


class HeapWriter:
    """Appends byte strings to a ``uint8`` heap array, chunk file by chunk file.

    A value that fits in one chunk never straddles two: the writer pads to the next
    chunk instead, so a reader can hand out every such value as one zero-copy view.
    """

    def __init__(self, ledger: FileLedger, array_dir: Path, chunk_bytes: int) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.ledger = ledger
        self.array_dir = array_dir
        self.chunk_bytes = chunk_bytes
        self.length = 0  # bytes written so far, padding included
        self._chunk_index = -1
        self._file: Any = None
        self._hash: Any = None
        (array_dir / "c").mkdir(parents=True, exist_ok=True)

    def append(self, data: bytes | memoryview | np.ndarray) -> int:
        """Write ``data`` and return its offset in the heap."""
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        size = len(view)
        room = self.chunk_bytes - (self.length % self.chunk_bytes)
        if room < size <= self.chunk_bytes:
            self._write(memoryview(bytes(room)))  # pad: start the value in a fresh chunk
        offset = self.length
        self._write(view)
        return offset

    def _write(self, view: memoryview) -> None:
        while len(view):
            chunk_end = (self._chunk_index + 1) * self.chunk_bytes
            if self._file is None or self.length >= chunk_end:
                self._next_chunk()
                chunk_end += self.chunk_bytes
            piece = view[: chunk_end - self.length]
            self._file.write(piece)
            self._hash.update(piece)
            self.length += len(piece)
            view = view[len(piece) :]

    def _next_chunk(self) -> None:
        self._close_chunk()
        self._chunk_index += 1
        self._file = open(_chunk_path(self.array_dir, self._chunk_index), "wb")  # noqa: SIM115
        self._hash = hashlib.sha256()

    def _close_chunk(self) -> None:
        if self._file is None:
            return
        self._file.close()
        path = _chunk_path(self.array_dir, self._chunk_index)
        size = self.length - self._chunk_index * self.chunk_bytes
        self.ledger.record(path, size, self._hash.hexdigest())
        self._file = None
        self.ledger.chunk_final(path)

    def finish(self) -> int:
        """Pad the last chunk, write the array metadata; return the heap length.

        A heap that fits in one chunk gets a chunk exactly its size, so small heaps
        (paths, a small dataset) carry no padding.
        """
        used = self.length
        chunk = self.chunk_bytes
        if self._chunk_index <= 0:
            chunk = max(used, 1)
        elif used % chunk:
            # Zarr wants the last chunk full length; the padding is a hole in a sparse
            # file, so it costs no disk space (it still counts in the checksum).
            pad = chunk - used % chunk
            self._file.truncate(self._file.tell() + pad)
            _hash_zeros(self._hash, pad)
            self.length += pad
        self._close_chunk()
        self.length = used
        self.ledger.write_json(
            self.array_dir / "zarr.json", array_metadata(used, chunk, np.dtype("u1"))
        )
        return used

    def abort(self) -> None:
        """Close the open chunk file; the caller removes the directory. Never raises: a
        disk that is full fails the buffered write again on close."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


_libc: Any = None


def map_with_stamp(path: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A read-only ``uint8`` view of a whole file, memory-mapped without keeping a file
    descriptor open (Python's ``mmap`` keeps one per map, and a large cache has thousands
    of chunk files), and the file's :func:`file_stamp` as mapped. The mapping is released
    when the last view of it is freed."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = lib
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        size = st.st_size
        # the identity of the file mapped, for changed_chunks (from this fd: a path
        # could name another file by the time it is stat-ed again)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if size == 0:
            return np.empty(0, np.uint8), stamp
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap failed: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)
    buf = (ctypes.c_ubyte * size).from_address(addr)
    weakref.finalize(buf, _libc.munmap, addr, size)
    view = np.frombuffer(buf, np.uint8)  # type: ignore[call-overload]
    view.flags.writeable = False
    return view, stamp


def file_stamp(path: Path | str) -> tuple[int, int, int]:
    """``(inode, size, mtime_ns)``: what changes when a file is rewritten or replaced."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _hash_zeros(h: Any, n: int) -> None:
    block = bytes(min(n, 1 << 20))
    while n:
        take = min(n, len(block))
        h.update(block[:take])
        n -= take


#: The Zarr data types a cache's arrays use (docs/cache-format.md, section 6).
DATA_TYPES = ("uint8", "uint32", "uint64", "int64", "float64")


def _damaged(what: str) -> CacheCorruptError:
    return CacheCorruptError(f"{what}: the cache is damaged or was not written by slipstream; "
                             f"run `slipstream verify`, then delete it and build it again")


def array_meta(array_dir: Path) -> tuple[int, int, np.dtype[Any]]:
    """``(length, chunk length, dtype)`` of a cache array, checked to be one slipstream
    writes: 1-D, uncompressed little-endian bytes of a type in :data:`DATA_TYPES`."""
    import json

    where = array_dir / "zarr.json"
    try:
        meta = json.loads(read_regular(where))
    except CacheError:
        raise  # not a regular file, or not readable by this user: named as such
    except (OSError, ValueError, RecursionError) as exc:
        raise _damaged(f"{where} is missing or not JSON ({type(exc).__name__}: {exc})") from exc
    try:
        (length,) = meta["shape"]
        (chunk,) = meta["chunk_grid"]["configuration"]["chunk_shape"]
        data_type = meta["data_type"]
        codecs = meta["codecs"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(f"{where} is not a 1-D array's metadata ({type(exc).__name__}: "
                       f"{exc})") from exc
    if not (_is_count(length) and _is_count(chunk) and chunk > 0):
        raise _damaged(f"{where}: shape [{length!r:.40}] with chunks of [{chunk!r:.40}]; "
                       f"expected a length >= 0 and a chunk length >= 1")
    if data_type not in DATA_TYPES:
        raise _damaged(f"{where}: data type {data_type!r:.40}; expected one of {DATA_TYPES}")
    dtype = np.dtype(data_type).newbyteorder("<")
    little = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codecs != little and not (dtype.itemsize == 1 and codecs == [{"name": "bytes"}]):
        raise _damaged(f"{where}: codecs {codecs!r:.80}; slipstream reads uncompressed "
                       f"little-endian arrays only")
    return length, chunk, dtype


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_array(array_dir: Path, dtype: Any = None,
               checksums: Mapping[Path, str] | None = None) -> np.ndarray:
    """Read a whole (small) array into memory; ``dtype``, when given, is the one it must
    have. Every chunk file must be there and hold its values: what the metadata claims
    is checked against the files before anything is allocated. A chunk whose path is in
    ``checksums`` (the manifest's digests) must match it: small arrays are read whole
    anyway, so checking them costs one hash of bytes already in hand."""
    length, chunk, found = array_meta(array_dir)
    if dtype is not None and found != np.dtype(dtype).newbyteorder("<"):
        raise _damaged(f"{array_dir}/zarr.json: data type {found}, expected {np.dtype(dtype)}")
    parts = []
    for c, start in enumerate(range(0, length, chunk)):
        path = _chunk_path(array_dir, c)
        need = min(chunk, length - start)
        try:
            data = read_regular(path, limit=chunk * found.itemsize)
            if len(data) < need * found.itemsize:
                raise _damaged(f"{path} holds {len(data) // found.itemsize} values, "
                               f"expected {need}")
        except CacheError:
            raise
        except OSError as exc:  # a missing chunk is damage: writers write them all
            raise _damaged(f"{path}: chunk {c} of {array_dir} is unreadable ({exc})") from exc
        expected = checksums.get(path) if checksums is not None else None
        if expected is not None and hashlib.new(CHECKSUM, data).hexdigest() != expected:
            raise checksum_mismatch(path)
        parts.append(np.frombuffer(data, dtype=found, count=need))
    return np.concatenate(parts) if parts else np.zeros(0, found)


def checksum_mismatch(path: Path) -> CacheCorruptError:
    return CacheCorruptError(
        f"{path} does not match its {CHECKSUM} in the cache's manifest: its bytes changed "
        f"after the build (a bit flipped on disk or in transit, or the file was edited). "
        f"Nothing from it was used. Run `slipstream verify` on the cache, then delete it and "
        f"build (or pull) it again")


def _check_extents(array_dir: Path, offsets: np.ndarray, sizes: np.ndarray, length: int) -> None:
    """Every value ``[offsets[i], offsets[i] + sizes[i])`` must lie inside the heap."""
    if not (offsets.ndim == sizes.ndim == 1 and len(offsets) == len(sizes)
            and offsets.dtype.kind in "ui" and sizes.dtype.kind in "ui"):
        raise _damaged(f"{array_dir}: {len(offsets)} {offsets.dtype} offsets for "
                       f"{len(sizes)} {sizes.dtype} sizes; expected as many unsigned integers")
    if not len(offsets):
        return
    # compared before adding, so that huge or negative values cannot wrap around
    if (int(offsets.min()) < 0 or int(sizes.min()) < 0 or int(offsets.max()) > length
            or int(sizes.max()) > length
            or int((offsets.astype(np.uint64) + sizes.astype(np.uint64)).max()) > length):
        raise _damaged(f"{array_dir}: offsets and sizes point past the heap's end "
                       f"({length} bytes)")


class ByteHeap:
    """A read-only, memory-mapped ``uint8`` heap with per-value offsets and sizes."""

    def __init__(self, array_dir: Path, offsets: np.ndarray, sizes: np.ndarray) -> None:
        self.array_dir = array_dir
        self.length, self.chunk_bytes, dtype = array_meta(array_dir)
        if dtype != np.uint8:
            raise _damaged(f"{array_dir}: a heap of {dtype}, expected uint8")
        _check_extents(array_dir, offsets, sizes, self.length)
        self.offsets = offsets
        self.sizes = sizes
        self.num_chunks = -(-self.length // self.chunk_bytes) if self.length else 0
        #: chunk file names by chunk, made on first use: the per-batch change check stats
        #: them (not made up front: a damaged heap may claim any number of chunks)
        self._chunk_files: dict[int, str] = {}
        self._views: list[np.ndarray] = []
        self._bases: np.ndarray | None = None  # the maps' addresses, for locate()
        #: each chunk file's identity when it was mapped: see :meth:`changed_chunks`
        self._stamps: list[tuple[int, int, int] | None] = []
        #: which chunks' mapped bytes were hashed against the manifest (:meth:`verify_chunk`)
        self._verified: list[bool] = []
        self._map_chunks()

    def _map_chunks(self) -> None:
        """Map every chunk file now (a streamed heap maps them when pinned)."""
        for c in range(self.num_chunks):  # stops at the first missing chunk
            view, stamp = self._map_chunk(c)
            self._stamps.append(stamp)
            self._views.append(view)
            self._verified.append(False)

    def _map_chunk(self, c: int) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Chunk ``c``'s file, mapped and checked to be long enough."""
        path = _chunk_path(self.array_dir, c)
        try:
            view, stamp = map_with_stamp(path)
        except CacheError:
            raise  # not a regular file, or not readable by this user: already named
        except OSError as exc:
            raise _damaged(f"{path}: chunk {c} of the heap is unreadable ({exc})") from exc
        if len(view) < min(self.chunk_bytes, self.length - c * self.chunk_bytes):
            raise CacheCorruptError(
                f"{path} is {len(view)} bytes, shorter than its chunk: the cache is damaged; "
                f"run `slipstream verify` and rebuild it"
            )
        return view, stamp

    def __len__(self) -> int:
        return len(self.offsets)

    def view(self, i: int) -> np.ndarray:
        """Value ``i`` as a ``uint8`` array: a view into the map unless it straddles chunks."""
        off = int(self.offsets[i])
        size = int(self.sizes[i])
        c, start = divmod(off, self.chunk_bytes)
        if start + size <= self.chunk_bytes or size == 0:
            return self._views[c][start : start + size] if size else np.empty(0, np.uint8)
        parts = []
        while size:
            take = min(size, self.chunk_bytes - start)
            parts.append(self._views[c][start : start + take])
            size -= take
            c, start = c + 1, 0
        return np.concatenate(parts)

    def gather(self, indices: np.ndarray | list[int]) -> list[np.ndarray]:
        """Views of several values (no copy for values within one chunk)."""
        return [self.view(int(i)) for i in indices]

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The memory addresses (``uint64``) of values ``indices``, for native code, and the
        arrays that must stay alive while it reads them (the chunk maps, and a joined copy
        of each value that straddles chunks). Vectorised: no per-value Python."""
        indices = np.ascontiguousarray(indices, np.int64)
        bases, keep = self._chunk_bases()
        addresses = np.zeros(len(indices), np.uint64)
        if not len(bases) or not len(indices):
            return addresses, keep
        try:  # one native call: a chunk not mapped is refused, never address 0 + offset
            straddling = native().heap_locate(self.offsets, self.sizes, indices,
                                              self.chunk_bytes, bases, addresses)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.array_dir}: {exc}") from None
        self._join(indices, straddling, addresses, keep)
        return addresses, keep

    def sample_table(self, indices: np.ndarray, codecs: np.ndarray, heights: np.ndarray,
                     widths: np.ndarray, native_codecs: int
                     ) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
        """An image column's values ``indices`` as the decode kernel's table (``uint64
        (5, n)``: address, size, codec, height, width per value; ``codecs`` ``uint8``,
        ``heights``/``widths`` ``uint32`` per value of the heap), the positions whose
        codec is not in the bit mask ``native_codecs``, and what must stay alive while
        the addresses are read (as :meth:`locate`). One native call; ``indices`` are
        ``int64``, C-contiguous."""
        bases, keep = self._chunk_bases()
        table = np.empty((5, len(indices)), np.uint64)
        try:
            straddling, others = native().heap_gather(
                self.offsets, self.sizes, codecs, heights, widths, indices, self.chunk_bytes,
                bases, native_codecs, table)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.array_dir}: {exc}") from None
        self._join(indices, straddling, table[0], keep)
        return table, others, keep

    def _join(self, indices: np.ndarray, straddling: list[int], addresses: np.ndarray,
              keep: list[np.ndarray]) -> None:
        """Point the values that continue into the next chunk at joined copies."""
        for k in straddling:
            joined = self.view(int(indices[k]))
            keep.append(joined)
            addresses[k] = joined.ctypes.data

    def _chunk_bases(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each chunk's mapped address (0 where none is mapped) and the maps to keep alive.
        Every chunk of a plain heap is mapped at open and never moves: computed once."""
        keep: list[np.ndarray] = list(self._views)
        if self._bases is None or len(self._bases) != len(keep):
            self._bases = np.fromiter((v.ctypes.data for v in keep), np.uint64, len(keep))
        return self._bases, keep

    def chunk_path(self, c: int) -> Path:
        return _chunk_path(self.array_dir, c)

    def chunks_of(self, indices: np.ndarray) -> list[int]:
        """The chunk files holding values ``indices``, ascending, each once (every chunk a
        value spans, the middle ones of a value longer than a chunk included)."""
        if not len(indices) or not self.num_chunks:
            return []
        chunks: list[int] = native().heap_chunks(
            self.offsets, self.sizes, np.ascontiguousarray(indices, np.int64),
            self.chunk_bytes, self.num_chunks)
        return chunks

    def unverified_chunks(self, chunks: list[int]) -> list[int]:
        """Those of ``chunks`` whose bytes were not yet hashed."""
        return [c for c in chunks if not self._verified[c]]

    def verify_chunk(self, c: int, expected: str) -> None:
        """Hash chunk ``c`` as mapped (the very bytes decoders read) and compare it with
        the manifest's digest ``expected``; raise :class:`CacheCorruptError` naming the
        file if they differ. ``hashlib`` releases the GIL while it hashes."""
        if hashlib.new(CHECKSUM, self._views[c].data).hexdigest() != expected:
            raise checksum_mismatch(self.chunk_path(c))
        self._verified[c] = True

    def changed_chunks(self, chunks: list[int]) -> list[int]:
        """Those of ``chunks`` (:meth:`chunks_of`) whose files were changed in place (same
        inode, other size or mtime) since they were mapped, so the map may show other
        bytes. A file replaced or deleted is not a change: the map keeps the old inode,
        whose bytes nobody can write any more. One ``stat`` per chunk, all in one native
        call."""
        if not self._stamps:
            return []
        chunks = [c for c in chunks if self._stamps[c] is not None]
        changed = []
        # one call, the GIL released for the syscalls
        names = self._chunk_files
        for c in chunks:
            if c not in names:
                names[c] = str(_chunk_path(self.array_dir, c))
        for c, now in zip(chunks, native().stat_files([names[c] for c in chunks])):
            stamp = self._stamps[c]
            if stamp is None:  # unmapped meanwhile (a streamed heap's chunk)
                continue
            if now is None or now[0] != stamp[0]:
                self._stamps[c] = None  # detached from the path: immutable from now on
            elif now != stamp:
                changed.append(c)
        return changed

    def accept_chunk(self, c: int) -> None:
        """Take chunk ``c``'s current stamp as its own (its content was checked unchanged)."""
        self._stamps[c] = file_stamp(self.chunk_path(c))
        self._verified[c] = False  # the map may show the rewrite: hash it again

    def close(self) -> None:
        """Drop the maps; each is unmapped once no view handed out refers to it."""
        self._views.clear()
