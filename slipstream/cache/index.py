"""Value → sample-index lookups stored in the cache group (``write_index``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CacheCorruptError
from ..schema import FieldKind
from .additions import add_group
from .arrays import read_array, write_array
from .layout import INDEXES_GROUP, FileLedger, group_metadata

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
        if field not in cache.index_names:
            raise KeyError(
                f"cache {cache.key} has no index for {field!r} (it has "
                f"{list(cache.index_names)}); create one with write_index(cache, fields=[{field!r}])"
            )
        dtype = np.float64 if cache.field(field).kind is FieldKind.FLOAT else np.int64
        sums = cache.checksums
        index = cls(field, read_array(d / "values", dtype, sums),
                    read_array(d / "offsets", np.int64, sums),
                    read_array(d / "samples", np.int64, sums))
        index._check(d, len(cache))
        return index

    def _check(self, where: Path, num_samples: int) -> None:
        """Refuse an index no ``write_index`` writes (docs/cache-format.md, section 9):
        ``samples_for`` slices by ``offsets`` and callers index samples by its values."""
        values, offsets, samples = self.values, self.offsets, self.samples
        problem = None
        if len(offsets) != len(values) + 1 or len(samples) != num_samples:
            problem = (f"{len(values)} values, {len(offsets)} offsets and {len(samples)} "
                       f"samples for {num_samples} samples")
        elif offsets[0] != 0 or offsets[-1] != num_samples or np.any(np.diff(offsets) < 0):
            problem = "its offsets do not run from 0 to the number of samples"
        elif not _ascending(values):
            problem = "its values are not distinct and ascending"
        elif len(samples) and (samples.min() < 0 or samples.max() >= num_samples
                               or np.any(np.bincount(samples, minlength=num_samples) != 1)):
            problem = "its samples are not each sample once"
        if problem:
            raise CacheCorruptError(f"{where}: {problem}; the index is damaged: delete the "
                                    f"cache and build it again")


def _ascending(values: np.ndarray) -> bool:
    """Distinct and ascending, as ``np.unique`` returns them (one NaN, last, allowed)."""
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        if nan.any() and (nan.sum() > 1 or not nan[-1]):
            return False
        values = values[~nan]
    return bool(np.all(values[1:] > values[:-1]))


def write_index(cache: Cache, fields: Sequence[str] = ("label",)) -> dict[str, FieldIndex]:
    """Store value → samples indexes for numeric ``fields`` in the cache group.

    Each index is written in a private directory, moved into ``_indexes/FIELD`` with one
    rename, then added to the manifest in the root metadata (replaced atomically, under
    a file lock). Readers list indexes from the manifest, so they never see half an
    index; an index directory the manifest does not list (a writer killed between the
    two steps) is rebuilt. A listed index is left as it is: a cache's data never
    changes, so neither does its index.
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
        cache.refresh()
        if name not in cache.index_names:
            _publish_index(cache, FieldIndex.build(name, cache.column(name)))
            cache.refresh()
        out[name] = cache.index(name)
    return out


def _publish_index(cache: Cache, index: FieldIndex) -> None:
    def write(ledger: FileLedger, directory: Path) -> None:
        write_array(ledger, directory / "values", index.values)
        write_array(ledger, directory / "offsets", index.offsets)
        write_array(ledger, directory / "samples", index.samples)
        ledger.write_json(directory / "zarr.json",
                          group_metadata({"kind": "index", "field": index.field}))

    add_group(cache.path, cache.writable_workspace(), f"{INDEXES_GROUP}/{index.field}", write,
              list_key="indexes", entry=index.field, parent_attrs={"kind": "indexes"})
