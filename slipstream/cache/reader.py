"""Opening a cache: memory-mapped heaps and in-memory numeric columns."""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CacheCorruptError, CacheError, CacheNotFoundError
from ..schema import Field, FieldKind
from .arrays import ByteHeap, read_array
from .layout import CHECKSUM, Codec, read_manifest
from .streamed import ChunkSource, StreamedByteHeap
from .workspace import CacheWorkspace

if TYPE_CHECKING:
    from .index import FieldIndex

__all__ = ["Cache", "ImageColumn", "HeapColumn", "DerivedImageColumn"]


#: ``0`` turns off hashing each heap chunk the first time a batch touches it (see
#: :meth:`Cache.check_unchanged` and docs/reliability.md); unset or ``1``: on.
CHECK_CHUNKS_ENV = "SLIPSTREAM_CHECK_CHUNKS"


class HeapColumn:
    """A bytes or str field: one memory-mapped heap. ``checksums`` (the manifest's digests
    by path) are checked for the arrays read whole (offsets, sizes, ...); with a
    ``chunk_source`` the heap's chunk files are streamed (mapped while pinned)."""

    def __init__(self, field_dir: Path, kind: FieldKind,
                 checksums: Mapping[Path, str] | None = None,
                 chunk_source: ChunkSource | None = None) -> None:
        self.kind = kind
        offsets = read_array(field_dir / "offsets", np.uint64, checksums)
        sizes = read_array(field_dir / "sizes", np.uint32, checksums)
        self.heap = (ByteHeap(field_dir / "heap", offsets, sizes) if chunk_source is None else
                     StreamedByteHeap(field_dir / "heap", offsets, sizes, chunk_source))

    def __len__(self) -> int:
        return len(self.heap)

    @property
    def sizes(self) -> np.ndarray:
        return self.heap.sizes

    def view(self, i: int) -> np.ndarray:
        return self.heap.view(i)

    def gather(self, indices: np.ndarray | list[int]) -> list[np.ndarray]:
        return self.heap.gather(indices)

    def value(self, i: int) -> Any:
        data = self.heap.view(i).tobytes()
        if self.kind is not FieldKind.STR:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CacheCorruptError(
                f"{self.heap.array_dir.parent}: value {i} is not UTF-8 text ({exc}); the cache "
                f"is damaged: run `slipstream verify`, then delete it and build it again"
            ) from exc

    def values(self, indices: np.ndarray | list[int]) -> list[Any]:
        return [self.value(int(i)) for i in indices]

    def close(self) -> None:
        self.heap.close()


class ImageColumn(HeapColumn):
    """An image field: its heap plus per-image height, width and codec."""

    def __init__(self, field_dir: Path, checksums: Mapping[Path, str] | None = None,
                 chunk_source: ChunkSource | None = None) -> None:
        super().__init__(field_dir, FieldKind.IMAGE, checksums, chunk_source)
        self.heights = read_array(field_dir / "heights", np.uint32, checksums)
        self.widths = read_array(field_dir / "widths", np.uint32, checksums)
        self.codecs = read_array(field_dir / "codecs", np.uint8, checksums)
        _check_image_table(field_dir, self.heights, self.widths, self.codecs, len(self))

    def value(self, i: int) -> Any:
        return self.heap.view(i).tobytes()


def _check_image_table(field_dir: Path, heights: np.ndarray, widths: np.ndarray,
                       codecs: np.ndarray, n: int) -> None:
    """Refuse image tables no build writes: decode buffers are sized from them, so a
    damaged or hostile cache must not make a thread allocate gigabytes per sample."""
    from .images import MAX_PIXELS

    if not len(heights) == len(widths) == len(codecs) == n:
        raise CacheCorruptError(
            f"{field_dir}: {len(heights)} heights, {len(widths)} widths and {len(codecs)} "
            f"codecs for {n} images; the cache is damaged: delete it and build again")
    if n == 0:
        return
    pixels = heights.astype(np.uint64) * widths.astype(np.uint64)
    worst = int(np.argmax(pixels))
    if int(pixels[worst]) > MAX_PIXELS:
        raise CacheCorruptError(
            f"{field_dir}: image {worst} claims {int(heights[worst])}x{int(widths[worst])} "
            f"pixels, more than the {MAX_PIXELS:,} a build accepts; the cache is damaged or "
            f"was not written by slipstream: delete it and build again")
    unknown = np.setdiff1d(np.unique(codecs), list(Codec.NAMES))
    if len(unknown):
        raise CacheCorruptError(
            f"{field_dir}: unknown image codec {int(unknown[0])} (known: "
            f"{sorted(Codec.NAMES)}); the cache is damaged or from a newer slipstream")


class DerivedImageColumn(HeapColumn):
    """A derived format of an image field (``FIELD/FORMAT/``): its own heap, the field's
    heights and widths, and one codec for every image."""

    def __init__(self, field_dir: Path, base: ImageColumn, codec: int,
                 checksums: Mapping[Path, str] | None = None,
                 chunk_source: ChunkSource | None = None) -> None:
        super().__init__(field_dir, FieldKind.IMAGE, checksums, chunk_source)
        if len(self) != len(base):
            raise CacheCorruptError(
                f"{field_dir}: {len(self)} images, but {len(base)} in {field_dir.parent}; the "
                f"cache is damaged: run `slipstream verify`, then delete it and build it again")
        self.heights = base.heights
        self.widths = base.widths
        self.codecs = np.full(len(base), codec, np.uint8)

    def value(self, i: int) -> Any:
        return self.heap.view(i).tobytes()


class Cache:
    """A complete cache on local disk, opened read-only.

    Numeric fields are loaded into memory; byte heaps are memory-mapped, and
    :meth:`ImageColumn.gather` hands out views into the maps with no per-sample copy.

    Integrity: every array read whole (numeric fields, offsets, sizes, image tables) is
    checked against the manifest's checksum when its column is opened, and each heap
    chunk is hashed the first time :meth:`check_unchanged` sees a batch touch it; a
    mismatch is a :class:`CacheCorruptError` naming the file.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 workspace: CacheWorkspace | None = None,
                 chunk_source: ChunkSource | None = None) -> None:
        self.path = Path(path)
        #: makes heap chunk files present on demand (a streamed cache); None: all present
        self.chunk_source = chunk_source
        #: given by the store that holds the cache: marks it in use (so that housekeeping
        #: leaves it alone) until the returned lock's ``release()``; None: no marking
        self.mark_in_use: Callable[[], Any] | None = None
        #: where changes to the cache (indexes, derived formats) are staged and locked,
        #: given by the store that holds it; None for a cache opened by path alone
        self.workspace = workspace
        if not self.path.is_dir():
            raise CacheNotFoundError(f"no cache at {self.path}: not a directory")
        self.attrs = read_manifest(self.path)
        self.key: str = self.attrs["key"]
        self.num_samples: int = int(self.attrs["num_samples"])
        self.fields = tuple(Field.from_json(f) for f in self.attrs["fields"])
        self.image_format: str = self.attrs.get("image_format", "jpeg")
        self._columns: dict[str, Any] = {}
        self._digests: dict[Path, str] | None = None

    @property
    def checksums(self) -> dict[Path, str]:
        """The manifest's digest of every file, by absolute path."""
        if self._digests is None:
            self._digests = {self.path / rel: entry[CHECKSUM]
                             for rel, entry in self.attrs["files"].items()}
        return self._digests

    # -- structure ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"cache {self.key} has no field {name!r}; it has {list(self.field_names)}")

    @property
    def image_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind is FieldKind.IMAGE)

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.attrs.get("source", {}))

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """The source's samples a build with ``on_error="skip"`` left out: ``{"index":
        source index, "error": why}`` each (empty for a complete cache)."""
        return [dict(e) for e in self.attrs.get("skipped", ())]

    # -- columns --------------------------------------------------------------------------
    def column(self, name: str) -> Any:
        """A field's column: an ndarray (numbers), :class:`HeapColumn` or :class:`ImageColumn`."""
        col = self._columns.get(name)
        if col is None:
            f = self.field(name)
            d = self.path / name
            if f.kind is FieldKind.IMAGE:
                col = ImageColumn(d, self.checksums, self.chunk_source)
            elif f.kind in (FieldKind.STR, FieldKind.BYTES):
                col = HeapColumn(d, f.kind, self.checksums, self.chunk_source)
            else:
                col = read_array(d, np.float64 if f.kind is FieldKind.FLOAT else np.int64,
                                 self.checksums)
                col.flags.writeable = False
            if len(col) != self.num_samples:
                raise CacheError(f"{d}: {len(col)} values, expected {self.num_samples}")
            self._columns[name] = col
        return col

    @property
    def image_formats(self) -> tuple[str, ...]:
        """The stored format and every derived one complete for all image fields."""
        derived = set(self.attrs.get("derived", ()))
        extra = sorted({e.split("/", 1)[1] for e in derived
                        if all(f"{f}/{e.split('/', 1)[1]}" in derived for f in self.image_fields)})
        return (self.image_format, *extra)

    def image_column(self, name: str, image_format: str | None = None) -> Any:
        """An image field in ``image_format`` (default: as stored)."""
        if image_format is None or image_format == self.image_format:
            return self.column(name)
        key = f"{name}/{image_format}"
        col = self._columns.get(key)
        if col is None:
            if key not in self.attrs.get("derived", ()):
                raise KeyError(
                    f"cache {self.key} has no {image_format} images for {name!r} (formats: "
                    f"{list(self.image_formats)}); derive them with "
                    f"SlipstreamDataset.build_cache(image_format={image_format!r})")
            col = DerivedImageColumn(self.path / name / image_format, self.column(name),
                                     Codec.YUV420, self.checksums, self.chunk_source)
            self._columns[key] = col
        return col

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as plain values (image bytes, ints, floats, strings)."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range for a cache of {self.num_samples}")
        index %= self.num_samples
        out: dict[str, Any] = {}
        for f in self.fields:
            col = self.column(f.name)
            out[f.name] = col[index].item() if isinstance(col, np.ndarray) else col.value(index)
        return out

    # -- change detection -----------------------------------------------------------------
    def check_unchanged(self, column: HeapColumn, indices: np.ndarray) -> None:
        """Raise :class:`CacheCorruptError` if a chunk file holding ``indices`` of ``column``
        was changed since it was opened (slipstream never rewrites a published file; an
        in-place rewrite means something else damaged the cache).

        A file whose inode, size or mtime moved is re-hashed against the manifest: same
        content (a ``touch``, an identical copy) is accepted. Changed content moves the
        cache aside (through its store's workspace) so that the next run builds
        or pulls a fresh one, and raises. A reader racing a truncation can still be
        killed by SIGBUS between this check and its read; the check narrows that window
        to one batch.

        Each chunk holding ``indices`` is also hashed the first time it is touched (as
        mapped: the bytes decoders will read), in parallel threads, and compared with
        the manifest, so that a bit flipped at rest never reaches a model; see
        docs/reliability.md for the cost. ``SLIPSTREAM_CHECK_CHUNKS=0`` turns that off.
        """
        from .verify import file_digest

        heap = column.heap
        chunks = heap.chunks_of(indices)
        self._verify_chunks(heap, chunks)
        for c in heap.changed_chunks(chunks):
            path = heap.chunk_path(c)
            rel = path.relative_to(self.path).as_posix()
            expected = self.attrs["files"].get(rel, {})
            try:
                size, digest = file_digest(path)
            except OSError:
                size, digest = -1, ""
            if size == expected.get("size") and digest == expected.get(CHECKSUM):
                heap.accept_chunk(c)
                continue
            aside = self._move_aside()
            then = (f"It was moved aside to {aside}; the next run builds (or pulls) a fresh "
                    f"cache." if aside else
                    f"Run `slipstream verify {self.path}`, then delete it and build again.")
            raise CacheCorruptError(
                f"{path} changed while it was being read (it no longer matches the cache's "
                f"manifest): something rewrote the cache in place, which slipstream never "
                f"does. {then}")

    def _verify_chunks(self, heap: Any, chunks: list[int]) -> None:
        todo = heap.unverified_chunks(chunks)
        if not todo or os.environ.get(CHECK_CHUNKS_ENV, "1") == "0":
            return
        digests = self.checksums
        jobs = [(c, digests.get(heap.chunk_path(c))) for c in todo]
        jobs = [(c, d) for c, d in jobs if d is not None]
        if len(jobs) == 1:
            heap.verify_chunk(*jobs[0])
            return
        with cf.ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1),
                                   thread_name_prefix="slipstream-verify") as pool:
            for future in [pool.submit(heap.verify_chunk, c, d) for c, d in jobs]:
                future.result()

    def _move_aside(self) -> Path | None:
        """Move this cache out of its store's view (None if it cannot be moved)."""
        return self.workspace.set_aside() if self.workspace is not None else None

    def writable_workspace(self) -> CacheWorkspace:
        """:attr:`workspace`, or an error naming the fix if the cache was opened without
        the store that holds it."""
        if self.workspace is None:
            raise CacheError(
                f"{self.path} was opened by path alone, so there is no place to stage a change "
                f"to it; open it through its store (slipstream.write_index and "
                f"SlipstreamLoader do), e.g. LocalStore(ROOT).open_cache(KEY)")
        return self.workspace

    # -- indexes --------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """Every file of the cache (but the root zarr.json) with its size and checksum."""
        return {"files": self.attrs["files"]}

    @property
    def index_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.attrs.get("indexes", ())))

    def refresh(self) -> None:
        """Re-read the root metadata (after ``write_index`` by this or another process)."""
        self.attrs = read_manifest(self.path)
        self._digests = None

    def index(self, field: str) -> FieldIndex:
        from .index import FieldIndex

        return FieldIndex.open(self, field)

    # -- reporting ------------------------------------------------------------------------
    def size_bytes(self) -> int:
        """Bytes the cache's data takes: every listed file, less the zero padding that
        ends each multi-chunk heap (a sparse-file hole, so not on disk)."""
        from .arrays import array_meta

        total = sum(int(f["size"]) for f in self.manifest["files"].values())
        heaps = {rel.rsplit("/c/", 1)[0] for rel in self.manifest["files"] if "/heap/c/" in rel}
        for heap in heaps:
            length, chunk, _ = array_meta(self.path / heap)
            if length > chunk:
                total -= -(-length // chunk) * chunk - length
        return total

    def info(self) -> dict[str, Any]:
        """A summary for ``slipstream info``: samples, fields, sizes, key, format."""
        images = {}
        for name in self.image_fields:
            col = self.column(name)
            counts = np.bincount(col.codecs, minlength=3)
            images[name] = {
                "bytes": int(col.sizes.sum(dtype=np.uint64)),
                "codecs": {Codec.NAMES[c]: int(n) for c, n in enumerate(counts) if n},
                "mean_height": float(col.heights.mean()) if len(col) else 0.0,
                "mean_width": float(col.widths.mean()) if len(col) else 0.0,
            }
        formats = {}
        for fmt in self.image_formats:
            size = sum(int(self.image_column(n, fmt).sizes.sum(dtype=np.uint64))
                       for n in self.image_fields)
            formats[fmt] = size
        base = formats.get(self.image_format) or 1
        return {
            "path": str(self.path),
            "image_formats": {fmt: {"bytes": b, "ratio_to_stored": b / base}
                              for fmt, b in formats.items()},
            "key": self.key,
            "format_version": self.attrs["format_version"],
            "image_format": self.image_format,
            "num_samples": self.num_samples,
            "fields": {f.name: f.kind.value for f in self.fields},
            "images": images,
            "indexes": list(self.index_names),
            "skipped": self.skipped,
            "files": len(self.manifest["files"]),
            "size_bytes": self.size_bytes(),
            "source": self.source,
        }

    def verify(self, progress: bool = False) -> Any:
        from .verify import verify_cache

        return verify_cache(self.path, progress=progress)

    def close(self) -> None:
        for col in self._columns.values():
            if not isinstance(col, np.ndarray):
                col.close()
        self._columns.clear()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, {self.num_samples} samples, fields={list(self.field_names)})"

