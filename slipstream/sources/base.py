"""The contract every source implements, built-in or from a plugin."""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .._parallel import bounded_map
from ..errors import SampleError
from ..location import Location
from ..schema import Field, Sample

__all__ = ["Source", "Detection"]


@dataclass(frozen=True)
class Detection:
    """A source's answer to "can you open this location?", with the reason either way."""

    matches: bool
    reason: str

    @classmethod
    def yes(cls, reason: str) -> Detection:
        return cls(True, reason)

    @classmethod
    def no(cls, reason: str) -> Detection:
        return cls(False, reason)


def _read_indexed(source: Source, index: int) -> Sample:
    """``source.read(index)``; a :class:`SampleError` that names no index gets ``index``,
    so that a build with ``on_error="skip"`` knows which sample to leave out."""
    try:
        return source.read(index)
    except SampleError as exc:
        if exc.index is None:
            exc.index = index
        raise


class Source(abc.ABC):
    """A dataset at a location, read as numbered samples.

    Contract (checked by :class:`slipstream.testing.SourceTests`):

    - ``len(source)`` samples, numbered ``0 … len-1`` in a stable order;
    - :attr:`fields` names every field each sample holds, with its kind;
    - :meth:`read` returns sample ``i`` as a dict of raw values (encoded image bytes,
      ints, floats, strings), the same every time;
    - :meth:`fingerprint` is a JSON-serialisable value that changes whenever the data
      does (names, sizes, mtimes or ETags, revision ids) and is cheap to compute: it
      must not read the samples' contents;
    - :meth:`iter_samples` yields ``(index, sample)`` for the requested indices, each
      exactly once, in any order (sources that stream sequentially override it).
    """

    #: Registry name, used to force a source: ``SlipstreamDataset(url, source=name)``.
    name: ClassVar[str]
    #: Detection order: higher is asked first.
    priority: ClassVar[int] = 0

    def __init__(self, location: Location, **options: Any) -> None:
        self.location = location

    # -- detection -------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def detect(cls, location: Location) -> Detection:
        """Say whether this source can open ``location`` (cheaply: list, don't read)."""

    # -- schema and identity -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def fields(self) -> tuple[Field, ...]:
        """The fields every sample holds."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def fingerprint(self) -> Any:
        """A JSON-serialisable value identifying the data (see the class contract)."""

    def describe(self) -> Mapping[str, Any]:
        """What to record about the source in a cache: no credentials."""
        return {"source": self.name, "url": self.location.describe(), "num_samples": len(self)}

    # -- reading ------------------------------------------------------------------------
    @abc.abstractmethod
    def read(self, index: int) -> Sample:
        """Sample ``index`` as raw values."""

    def sample_name(self, index: int) -> str:
        """A human-readable name for sample ``index`` (its path, say), for error messages."""
        return f"{self.location.describe()}[{index}]"

    def iter_samples(
        self, indices: Iterable[int] | None = None, *, num_threads: int = 8
    ) -> Iterator[tuple[int, Sample]]:
        """Yield ``(index, sample)`` pairs, reading up to ``num_threads`` samples at once."""
        wanted = range(len(self)) if indices is None else indices
        yield from bounded_map(functools.partial(_read_indexed, self), wanted,
                               threads=num_threads, window=num_threads * 4,
                               thread_name="slipstream-read")

    def close(self) -> None:
        """Release open files and connections. Idempotent."""

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location.describe()!r}, {len(self)} samples)"
