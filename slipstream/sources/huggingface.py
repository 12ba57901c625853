"""Hugging Face datasets: ``hf://datasets/ORG/NAME`` on the Hub, or the same files anywhere.

Reads the parquet files the Hub serves (through ``huggingface_hub``'s ``HfFileSystem``) or
a local or remote directory in the same layout, and ``datasets``' ``save_to_disk`` output
(Arrow stream files); :mod:`._hf_layout` finds configs, splits and files. Tables are read
with pyarrow (``pip install 'slipstream[hf]'``), a row group at a time.

Column types, from the ``datasets`` features stored in the files (or the Arrow types):

=================================== ========= =====================================
feature                             kind      value
=================================== ========= =====================================
``Image``                           IMAGE     the embedded encoded bytes
``ClassLabel``                      INT       the class index (names in ``classes``)
``Value`` int*, uint*, bool         INT       ``int``
``Value`` float*                    FLOAT     ``float``
``Value`` string                    STR       ``str``
``Value`` binary                    BYTES     ``bytes``
=================================== ========= =====================================

Other columns (sequences, arrays, audio, nested features) are refused unless left out
with ``columns=[...]``. Options: ``config=``, ``split=`` (defaults: the ``default`` config
or the only one; the ``train`` split or the only one), ``columns=`` (which columns, in
which order). ``storage_options`` go to fsspec: ``token`` and ``endpoint`` for the Hub.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import MissingDependencyError, SampleError, SourceDetectionError, SourceNotFoundError
from ..hookspecs import hookimpl
from ..location import Location
from ..schema import Field, FieldKind, Sample, SampleValue
from ._fsinfo import version_tag
from ._hf_layout import DEFAULT_CONFIG, HFLayout, find_layout
from ._remote import access_errors, iter_blocks
from .base import Detection, Source

__all__ = ["HuggingFaceSource"]

_PROBE_DIRS = 8
_ROW_GROUP_CACHE = 8
_FOOTER_THREADS = 8


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "reading Hugging Face datasets needs pyarrow: pip install 'slipstream[hf]'"
        ) from exc
    return pyarrow


def _hf_version(entry: dict[str, Any]) -> str:
    lfs = entry.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256"):
        return f"sha256={lfs['sha256']}"
    if lfs is not None and getattr(lfs, "sha256", None):
        return f"sha256={lfs.sha256}"
    if entry.get("blob_id"):
        return f"blob={entry['blob_id']}"
    return version_tag(entry)


@dataclass(frozen=True)
class _Column:
    name: str
    kind: FieldKind
    is_image: bool = False
    classes: tuple[str, ...] | None = None


@dataclass
class _File:
    relpath: str
    rows: int
    group_starts: list[int]  # first row of each row group (parquet), [0] for arrow
    metadata: Any = None  # pyarrow FileMetaData (parquet)
    table: Any = None  # the whole table (arrow files)


class HuggingFaceSource(Source):
    """One split of one config of a Hugging Face dataset, as rows of typed columns."""

    name = "huggingface"
    priority = 25

    def __init__(self, location: Location, *, config: str | None = None,
                 split: str | None = None, columns: Sequence[str] | None = None,
                 **options: Any) -> None:
        super().__init__(location, **options)
        self._pa = _pyarrow()
        self._where = location.describe()
        self._root, entries, single_file = self._list()
        layout = self._layout(entries, single_file)
        self.config, self.split = self._choose(layout, config, split)
        self._kind = layout.kind
        relpaths = layout.configs[self.config][self.split]
        self._entries = {r: entries[r] for r in relpaths}
        self._files = self._open_files(relpaths)
        self._starts = [0]
        for f in self._files:
            self._starts.append(self._starts[-1] + f.rows)
        self._columns = self._select_columns(columns)
        self._fields = tuple(Field(c.name, c.kind) for c in self._columns)
        self._cache: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    # -- detection ------------------------------------------------------------------------
    @classmethod
    def detect(cls, location: Location) -> Detection:
        if location.protocol == "hf":
            return Detection.yes("a Hugging Face Hub path (hf://)")
        fs, path = location.fs, location.path
        if path.lower().endswith(".parquet") and fs.isfile(path):
            return Detection.yes("a parquet file")
        if not fs.isdir(path):
            return Detection.no("not a directory, an hf:// path or a .parquet file")
        top = fs.ls(path, detail=True)
        names = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in top}
        if "dataset_dict.json" in names or {"state.json", "dataset_info.json"} <= set(names):
            return Detection.yes("datasets' save_to_disk output")
        if any(n.lower().endswith(".parquet") for n in names):
            return Detection.yes("parquet files")
        subdirs = sorted(e["name"] for e in top if e["type"] == "directory")
        for sub in subdirs[:_PROBE_DIRS]:
            inner = fs.ls(sub, detail=True)
            if any(e["name"].lower().endswith(".parquet") for e in inner):
                return Detection.yes(f"parquet files in {sub.rstrip('/').rsplit('/', 1)[-1]}/")
            for d in sorted(e["name"] for e in inner if e["type"] == "directory")[:2]:
                if any(n.lower().endswith(".parquet") for n in fs.ls(d, detail=False)):
                    return Detection.yes("parquet files in CONFIG/SPLIT/ directories")
        return Detection.no("no parquet files or save_to_disk output")

    # -- opening --------------------------------------------------------------------------
    def _list(self) -> tuple[str, dict[str, dict[str, Any]], bool]:
        """The root, its files (relative path → listing entry), and whether the location
        is a single parquet file."""
        fs, path = self.location.fs, self.location.path.rstrip("/")
        with access_errors(self._where, "the dataset"):
            if path.lower().endswith(".parquet") and fs.isfile(path):
                root, name = path.rsplit("/", 1) if "/" in path else ("", path)
                return root, {name: fs.info(path)}, True
            found = fs.find(path, detail=True)
        if not found:
            raise SourceNotFoundError(f"{self._where}: no such dataset, or it holds no files")
        prefix = path + "/"
        files = {n[len(prefix):]: e for n, e in found.items()
                 if n.startswith(prefix) and e.get("type") != "directory"}
        return path, files, False

    def _path(self, relpath: str) -> str:
        return f"{self._root}/{relpath}" if self._root else relpath

    def _read_text(self, relpath: str) -> str:
        with access_errors(self._where, relpath):
            data = bytes(self.location.fs.cat_file(self._path(relpath)))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceDetectionError(
                f"{self._where}/{relpath}: not UTF-8 text ({exc}); expected the JSON or "
                f"Markdown files a Hugging Face dataset holds") from exc

    def _layout(self, entries: dict[str, dict[str, Any]], single_file: bool) -> HFLayout:
        if single_file:
            layout = HFLayout("parquet")
            layout.add(DEFAULT_CONFIG, "train", next(iter(entries)))
            return layout
        return find_layout(entries, self._read_text, self._where)

    def _choose(self, layout: HFLayout, config: str | None,
                split: str | None) -> tuple[str, str]:
        configs = sorted(layout.configs)
        if config is None:
            if DEFAULT_CONFIG in layout.configs or len(configs) == 1:
                config = DEFAULT_CONFIG if DEFAULT_CONFIG in layout.configs else configs[0]
            else:
                raise SourceDetectionError(
                    f"{self._where} has several configs ({', '.join(configs)}) and none is "
                    f"'default': choose one with config=NAME")
        if config not in layout.configs:
            raise SourceNotFoundError(f"{self._where}: no config {config!r}; it has "
                                      f"{', '.join(configs)}")
        splits = sorted(layout.configs[config])
        if split is None:
            if "train" in splits or len(splits) == 1:
                split = "train" if "train" in splits else splits[0]
            else:
                raise SourceDetectionError(
                    f"{self._where} (config {config!r}) has splits {', '.join(splits)} and none "
                    f"is 'train': choose one with split=NAME")
        if split not in splits:
            raise SourceNotFoundError(
                f"{self._where}: config {config!r} has no split {split!r}; its splits are: "
                f"{', '.join(splits)}")
        return config, split

    def _open_files(self, relpaths: list[str]) -> list[_File]:
        if self._kind == "arrow":
            return [self._open_arrow(r) for r in relpaths]
        if len(relpaths) == 1:
            return [self._open_parquet(relpaths[0])]
        with ThreadPoolExecutor(min(_FOOTER_THREADS, len(relpaths)),
                                thread_name_prefix="slipstream-hf-footer") as pool:
            return list(pool.map(self._open_parquet, relpaths))

    def _not_readable(self, relpath: str, what: str, exc: Exception) -> SourceDetectionError:
        return SourceDetectionError(
            f"{self._where}/{relpath}: not a readable {what} file ({type(exc).__name__}: "
            f"{exc}); expected the files a Hugging Face dataset is made of")

    def _open_parquet(self, relpath: str) -> _File:
        pq = self._pa.parquet
        try:
            with access_errors(self._where, relpath), self._open_file(relpath) as f:
                meta = pq.ParquetFile(f).metadata
        except (self._pa.ArrowException, OSError) as exc:
            if isinstance(exc, SourceNotFoundError):
                raise
            raise self._not_readable(relpath, "parquet", exc) from exc
        starts, row = [], 0
        for g in range(meta.num_row_groups):
            starts.append(row)
            row += meta.row_group(g).num_rows
        return _File(relpath, meta.num_rows, starts or [0], metadata=meta)

    def _open_arrow(self, relpath: str) -> _File:
        pa = self._pa
        try:
            with access_errors(self._where, relpath):
                if self.location.is_local:
                    with pa.memory_map(self._path(relpath)) as src:
                        table = pa.ipc.open_stream(src).read_all()
                else:
                    data = self.location.fs.cat_file(self._path(relpath))
                    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, SourceNotFoundError):
                raise
            raise self._not_readable(relpath, "Arrow stream", exc) from exc
        return _File(relpath, table.num_rows, [0], table=table)

    def _open_file(self, relpath: str) -> Any:
        if self.location.is_local:
            return self._pa.memory_map(self._path(relpath))
        return self.location.fs.open(self._path(relpath), "rb")

    def _schema(self) -> Any:
        first = self._files[0]
        if first.table is not None:
            return first.table.schema
        return first.metadata.schema.to_arrow_schema()

    def _select_columns(self, wanted: Sequence[str] | None) -> list[_Column]:
        if not self._files:
            raise SampleError(f"{self._where} (split {self.split!r}) has no files",
                              path=self._where)
        schema = self._schema()
        features = _features(schema)
        columns = {}
        problems = []
        for name in schema.names:
            col = _column(name, schema.field(name).type, features.get(name), self._pa)
            if isinstance(col, str):
                problems.append(f"{name} ({col})")
            else:
                columns[name] = col
        names = list(schema.names) if wanted is None else list(wanted)
        unknown = [n for n in names if n not in schema.names]
        if unknown:
            raise ValueError(f"columns={unknown}: {self._where} has columns {schema.names}")
        refused = [p for p in problems if p.split(" ", 1)[0] in names]
        if refused:
            raise SourceDetectionError(
                f"{self._where}: columns slipstream cannot cache: {', '.join(refused)}. Choose "
                f"the columns to read with columns=[...] (readable: {sorted(columns)})")
        try:
            for n in names:
                Field(n, columns[n].kind)
        except ValueError as exc:
            raise SourceDetectionError(f"{self._where}: {exc}") from exc
        return [columns[n] for n in names]

    # -- Source API -----------------------------------------------------------------------
    @property
    def fields(self) -> tuple[Field, ...]:
        return self._fields

    @property
    def classes(self) -> dict[str, list[str]]:
        """Class names of each ``ClassLabel`` column."""
        return {c.name: list(c.classes) for c in self._columns if c.classes is not None}

    def __len__(self) -> int:
        return self._starts[-1]

    def fingerprint(self) -> Any:
        return {
            "config": self.config,
            "split": self.split,
            "files": [[r, self._entries[r].get("size"), _hf_version(self._entries[r])]
                      for r in (f.relpath for f in self._files)],
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config, "split": self.split,
                "columns": [c.name for c in self._columns], "classes": self.classes}

    def _locate(self, index: int) -> tuple[int, int, int]:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"sample {index} out of range for {self._where} ({n} samples)")
        f = bisect.bisect_right(self._starts, index) - 1
        row = index - self._starts[f]
        g = bisect.bisect_right(self._files[f].group_starts, row) - 1
        return f, g, row - self._files[f].group_starts[g]

    def sample_name(self, index: int) -> str:
        f, _, _ = self._locate(index)
        return f"{self._where}/{self._files[f].relpath}[{index - self._starts[f]}]"

    def read(self, index: int) -> Sample:
        f, g, r = self._locate(index)
        return self._row(self._group(f, g), r, index)

    def _group(self, f: int, g: int) -> Any:
        key = (f, g)
        with self._lock:
            table = self._cache.get(key)
            if table is not None:
                self._cache.move_to_end(key)
                return table
        table = self._load_group(f, g)
        with self._lock:
            self._cache[key] = table
            while len(self._cache) > _ROW_GROUP_CACHE:
                self._cache.popitem(last=False)
        return table

    def _load_group(self, f: int, g: int) -> Any:
        file = self._files[f]
        names = [c.name for c in self._columns]
        if file.table is not None:
            return file.table.select(names)
        try:
            with access_errors(self._where, file.relpath), self._open_file(file.relpath) as fh:
                pf = self._pa.parquet.ParquetFile(fh, metadata=file.metadata)
                return pf.read_row_group(g, columns=names)
        except (self._pa.ArrowException, OSError) as exc:
            if isinstance(exc, SourceNotFoundError):
                raise
            raise SampleError(f"{self._where}/{file.relpath}: row group {g} is unreadable "
                              f"({exc})", path=f"{self._where}/{file.relpath}") from exc

    def _row(self, table: Any, r: int, index: int) -> Sample:
        out: Sample = {}
        for col in self._columns:
            value = table.column(col.name)[r].as_py()
            out[col.name] = self._value(col, value, index)
        return out

    def _value(self, col: _Column, value: Any, index: int) -> SampleValue:
        if col.is_image:
            value = value.get("bytes") if isinstance(value, dict) else None
            if not value:
                raise SampleError(
                    f"{self.sample_name(index)}: column {col.name!r} holds no image bytes (only "
                    f"a path, or null); save the dataset with embedded images", index=index,
                    path=self.sample_name(index))
        if value is None:
            raise SampleError(f"{self.sample_name(index)}: column {col.name!r} is null; leave "
                              f"the column out with columns=[...]", index=index,
                              path=self.sample_name(index))
        if col.kind is FieldKind.INT:
            return int(value)
        if col.kind is FieldKind.FLOAT:
            return float(value)
        if col.kind is FieldKind.STR:
            return str(value)
        return bytes(value)

    def iter_samples(
        self, indices: Iterable[int] | None = None, *, num_threads: int = 8
    ) -> Iterator[tuple[int, Sample]]:
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i in (range(len(self)) if indices is None else indices):
            f, g, r = self._locate(i)
            groups.setdefault((f, g), []).append((i, r))
        tasks = [self._group_task(f, g, rows) for (f, g), rows in sorted(groups.items())]
        yield from iter_blocks(tasks, min(num_threads, 4))

    def _group_task(self, f: int, g: int, rows: list[tuple[int, int]]
                    ) -> Callable[[], list[tuple[int, Sample]]]:
        def run() -> list[tuple[int, Sample]]:
            table = self._load_group(f, g)
            return [(i, self._row(table, r, i)) for i, r in rows]
        return run


def _features(schema: Any) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        info = json.loads(raw)
        return dict(info.get("info", {}).get("features") or {})
    except (ValueError, AttributeError):
        return {}


def _column(name: str, arrow_type: Any, feature: Any, pa: Any) -> _Column | str:
    """The column's kind, or why it cannot be cached."""
    t = pa.types
    ftype = feature.get("_type") if isinstance(feature, dict) else None
    if ftype == "Image" or (ftype is None and t.is_struct(arrow_type)
                            and {arrow_type.field(i).name for i in range(arrow_type.num_fields)}
                            == {"bytes", "path"}):
        return _Column(name, FieldKind.IMAGE, is_image=True)
    if ftype == "ClassLabel":
        return _Column(name, FieldKind.INT, classes=tuple(feature.get("names") or ()))
    if ftype not in (None, "Value"):
        return f"a {ftype} feature"
    if t.is_integer(arrow_type) or t.is_boolean(arrow_type):
        return _Column(name, FieldKind.INT)
    if t.is_floating(arrow_type):
        return _Column(name, FieldKind.FLOAT)
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return _Column(name, FieldKind.STR)
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return _Column(name, FieldKind.BYTES)
    return f"arrow type {arrow_type}"


@hookimpl
def slipstream_sources() -> Sequence[type[Source]]:
    return [HuggingFaceSource]
