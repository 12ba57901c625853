"""``SourceTests``: the source contract as a pytest test class to subclass."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..cache.layout import MANIFEST_NAME
from ..caching import build_cache
from ..errors import SlipstreamError
from ..location import Location
from ..plugins import get_plugin_host
from ..schema import Field, FieldKind, Sample
from ..sources import Detection, Source, detect_source, open_source
from ._values import cached_form, canonical_json, kind_mismatch, sample_mismatch

__all__ = ["SourceTests"]

_THREAD_JOIN_WAIT_S = 5.0


class SourceTests:
    """Conformance tests for a :class:`~slipstream.sources.Source`, built-in or from a plugin.

    Subclass it in a test module (the name must start with ``Test`` so pytest collects
    it) and provide two fixtures::

        import pytest
        from slipstream.testing import SourceTests

        class TestMySource(SourceTests):
            source_name = "mysource"          # the name your plugin registers

            @pytest.fixture
            def source_url(self, tmp_path):
                # write a small dataset (a dozen samples is plenty) and return its URL
                ...
                return str(tmp_path / "data")

            @pytest.fixture
            def expected_samples(self, source_url):
                # every sample, in sample order, as {field: value}, worked out
                # independently of the source under test (from the files you wrote)
                return [{"image": b"...", "label": 0}, ...]

    Every ``test_*`` method of this class then runs against your source. The dataset
    needs at least two samples. Optional knobs:

    ``source_name``
        The name the source is registered under. When set, the kit checks that the
        plugin host lists it and that auto-detection picks it, and opens the source
        by that name for the other tests. When ``None``, those two checks are skipped
        and the other tests open the URL by auto-detection.
    ``storage_options`` fixture
        fsspec options to open the URL with (credentials, ``endpoint_url``); default
        ``{}``. Their string values must never appear in ``describe()``.
    ``open_options`` fixture
        Extra keyword options for the source's constructor; default ``{}``.

    The dataset is only read, never changed, so it may be shared by every test: write
    it in a module-scoped fixture (a plain function using ``tmp_path_factory``; pytest
    deprecates class-scoped fixtures defined as methods) and have ``source_url`` return
    its URL. Dataset and cache directories are kept apart, so ``tmp_path`` is free
    for the dataset.
    """

    #: The registered name of the source under test (``Source.name``), if known.
    source_name: ClassVar[str | None] = None

    # -- fixtures the subclass provides ----------------------------------------------------
    @pytest.fixture
    def source_url(self) -> str:
        pytest.fail(
            f"{type(self).__name__} must define a `source_url` fixture returning the URL "
            f"(or local path) of a small dataset the source under test reads"
        )

    @pytest.fixture
    def expected_samples(self) -> Sequence[Mapping[str, Any]]:
        pytest.fail(
            f"{type(self).__name__} must define an `expected_samples` fixture returning "
            f"every sample in order as a dict of field name to value"
        )

    @pytest.fixture
    def storage_options(self) -> Mapping[str, Any]:
        return {}

    @pytest.fixture
    def open_options(self) -> Mapping[str, Any]:
        return {}

    # -- fixtures the kit provides ---------------------------------------------------------
    @pytest.fixture
    def source_opener(
        self, source_url: str, storage_options: Mapping[str, Any],
        open_options: Mapping[str, Any],
    ) -> Iterator[Callable[..., Source]]:
        """A function opening a fresh instance of the source; every instance is closed after."""
        opened: list[Source] = []

        def _open(**extra_storage_options: Any) -> Source:
            src = open_source(
                source_url,
                source=self.source_name,
                storage_options={**storage_options, **extra_storage_options},
                **open_options,
            )
            opened.append(src)
            return src

        yield _open
        for src in opened:
            src.close()

    @pytest.fixture
    def source(self, source_opener: Callable[..., Source]) -> Source:
        """The source under test, opened once for the test."""
        return source_opener()

    @pytest.fixture
    def cache_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """A fresh cache store directory, apart from wherever the dataset lives."""
        return tmp_path_factory.mktemp("slipstream-conformance-cache")

    # -- discovery -------------------------------------------------------------------------
    def _require_name(self) -> str:
        if self.source_name is None:
            pytest.skip(f"set {type(self).__name__}.source_name to check plugin registration")
        return self.source_name

    def test_registered_with_plugin_host(self, source_opener: Callable[..., Source]) -> None:
        name = self._require_name()
        registry = get_plugin_host().sources()
        assert name in registry, (
            f"source {name!r} is not registered with the plugin host; registered: "
            f"{sorted(registry)}. Is the plugin installed, with an entry point in the "
            f"'slipstream' group whose module implements slipstream_sources()?"
        )
        cls = registry[name]
        assert cls.name == name, f"{cls!r} is registered as {name!r} but its `name` is {cls.name!r}"
        assert isinstance(cls.priority, int), f"{cls!r}.priority should be an int"
        source = source_opener()
        assert type(source) is cls, f"opening with source={name!r} gave {type(source)!r}"

    def test_auto_detection_picks_it(
        self, source_url: str, storage_options: Mapping[str, Any],
        open_options: Mapping[str, Any],
    ) -> None:
        name = self._require_name()
        cls = get_plugin_host().sources()[name]
        location = Location.parse(source_url, storage_options)
        own: Detection = cls.detect(location)
        assert isinstance(own, Detection), f"{cls!r}.detect() returned {own!r}, not a Detection"
        assert isinstance(own.reason, str) and own.reason, "Detection.reason should explain"
        assert own.matches, f"{cls!r}.detect() does not match its own data: {own.reason}"
        picked, tried = detect_source(location)
        assert picked is cls, (
            f"auto-detection picked {picked.name!r}, not {name!r}; answers: "
            f"{[(n, d.reason) for n, d in tried]}. Raise {cls.__name__}.priority or make the "
            f"other source's detect() stricter"
        )
        with open_source(source_url, storage_options=storage_options, **open_options) as src:
            assert type(src) is cls

    # -- schema ----------------------------------------------------------------------------
    def test_len(self, source: Source, expected_samples: Sequence[Mapping[str, Any]]) -> None:
        assert len(expected_samples) >= 2, "give the kit a dataset of at least two samples"
        assert len(source) == len(expected_samples)

    def test_fields(self, source: Source, expected_samples: Sequence[Mapping[str, Any]]) -> None:
        fields = source.fields
        assert isinstance(fields, tuple), f"fields should be a tuple of Field, got {fields!r}"
        assert all(isinstance(f, Field) and isinstance(f.kind, FieldKind) for f in fields)
        names = [f.name for f in fields]
        assert len(set(names)) == len(names), f"duplicate field names in {names}"
        assert source.fields == fields, "fields should be the same on every access"
        for i, want in enumerate(expected_samples):
            assert set(names) == set(want), (
                f"expected sample {i} has fields {sorted(want)}, the source declares {names}"
            )

    def test_field_kinds_match_values(self, source: Source) -> None:
        for i in range(len(source)):
            sample = source.read(i)
            for f in source.fields:
                assert f.name in sample, f"sample {i} lacks declared field {f.name!r}"
                problem = kind_mismatch(f.kind, sample[f.name])
                assert problem is None, f"sample {i}, field {f.name!r}: {problem}"

    # -- reading ---------------------------------------------------------------------------
    def test_read_matches_expected(
        self, source: Source, expected_samples: Sequence[Mapping[str, Any]]
    ) -> None:
        assert len(source) == len(expected_samples)
        for i, want in enumerate(expected_samples):
            problem = sample_mismatch(source.read(i), want)
            assert problem is None, f"read({i}) ({source.sample_name(i)}): {problem}"

    def test_read_is_repeatable(self, source: Source) -> None:
        n = len(source)
        first = [source.read(i) for i in range(n)]
        for i in reversed(range(n)):  # random access, not only a forward scan
            problem = sample_mismatch(source.read(i), first[i])
            assert problem is None, f"read({i}) changed between calls: {problem}"

    def test_read_out_of_range(self, source: Source) -> None:
        n = len(source)
        for bad in (n, n + 7, -n - 1):
            with pytest.raises((IndexError, SlipstreamError)):
                source.read(bad)

    def test_sample_name(self, source: Source) -> None:
        for i in range(len(source)):
            name = source.sample_name(i)
            assert isinstance(name, str) and name, f"sample_name({i}) should be a non-empty str"

    @pytest.mark.parametrize("num_threads", [1, 4])
    def test_iter_samples_all(self, source: Source, num_threads: int) -> None:
        seen = self._collect(source.iter_samples(num_threads=num_threads), source)
        assert sorted(seen) == list(range(len(source))), (
            f"iter_samples(num_threads={num_threads}) should yield every index once"
        )

    @pytest.mark.parametrize("num_threads", [1, 4])
    def test_iter_samples_subset(self, source: Source, num_threads: int) -> None:
        n = len(source)
        wanted = [n - 1, 0] + list(range(1, n - 1, 2))
        seen = self._collect(source.iter_samples(wanted, num_threads=num_threads), source)
        assert sorted(seen) == sorted(wanted), (
            f"iter_samples({wanted}) should yield exactly those indices, got {sorted(seen)}"
        )

    @staticmethod
    def _collect(pairs: Iterator[tuple[int, Sample]], source: Source) -> list[int]:
        seen: list[int] = []
        for i, sample in pairs:
            assert isinstance(i, int) and 0 <= i < len(source), f"yielded bad index {i!r}"
            assert i not in seen, f"index {i} yielded twice"
            seen.append(i)
            problem = sample_mismatch(sample, source.read(i))
            assert problem is None, f"iter_samples sample {i} differs from read({i}): {problem}"
        return seen

    def test_iter_samples_abandoned_leaves_no_threads(self, source: Source) -> None:
        before = set(threading.enumerate())
        it = source.iter_samples(num_threads=4)
        next(it)
        it.close()  # type: ignore[attr-defined]
        deadline = time.monotonic() + _THREAD_JOIN_WAIT_S
        while True:
            left = [t for t in threading.enumerate() if t not in before and not t.daemon]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert not left, f"an abandoned iter_samples() left threads running: {left}"

    # -- identity --------------------------------------------------------------------------
    def test_fingerprint(self, source: Source, source_opener: Callable[..., Source]) -> None:
        first = source.fingerprint()
        try:
            text = canonical_json(first)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"fingerprint() is not plain JSON (dicts, lists, str, finite numbers): "
                        f"{exc}: {first!r}")
        assert canonical_json(source.fingerprint()) == text, "fingerprint() changed between calls"
        again = source_opener()
        assert canonical_json(again.fingerprint()) == text, (
            "fingerprint() differs between two opens of the same unchanged data"
        )

    def test_describe(self, source: Source) -> None:
        info = source.describe()
        assert isinstance(info, Mapping), f"describe() should return a mapping, got {info!r}"
        try:
            json.dumps(info, allow_nan=False)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"describe() is not JSON-serialisable: {exc}: {info!r}")
        if "num_samples" in info:
            assert info["num_samples"] == len(source)

    def test_describe_has_no_secrets(
        self,
        source_url: str,
        storage_options: Mapping[str, Any],
        source_opener: Callable[..., Source],
    ) -> None:
        secrets = [v for v in _strings(storage_options) if len(v) >= 4]
        extra: dict[str, str] = {}
        if Location.parse(source_url, storage_options).is_local:
            # the local filesystem keeps any option it is given: plant a canary
            extra["slipstream_conformance_secret"] = canary = f"canary-{uuid.uuid4().hex}"
            secrets.append(canary)
        src = source_opener(**extra)
        text = json.dumps(src.describe(), default=repr)
        shown = [s for s in secrets if s in text]
        assert not shown, (
            "describe() exposes storage_options values (credentials must never be recorded): "
            f"{len(shown)} found in {text[:300]}"
        )

    # -- the cache -------------------------------------------------------------------------
    def test_cache_round_trip(self, source: Source, cache_dir: Path) -> None:
        with build_cache(source, cache_dir, progress=False, num_threads=4) as cache:
            assert len(cache) == len(source)
            assert cache.fields == source.fields
            for i in range(len(source)):
                sample = source.read(i)
                got = cache[i]
                for f in source.fields:
                    want = cached_form(f, sample[f.name])
                    problem = sample_mismatch({f.name: got[f.name]}, {f.name: want})
                    assert problem is None, f"cache[{i}] vs read({i}): {problem}"

    def test_cache_rebuild_is_a_hit(
        self, source: Source, cache_dir: Path, source_opener: Callable[..., Source]
    ) -> None:
        with build_cache(source, cache_dir, progress=False) as first:
            path = first.path
            manifest = path / MANIFEST_NAME
            stamp = manifest.stat().st_mtime_ns
        for again in (source, source_opener()):
            with build_cache(again, cache_dir, progress=False) as cache:
                assert cache.path == path, (
                    f"building again gave a new cache {cache.path.name}, not {path.name}: the "
                    f"fingerprint or fields are not stable"
                )
            assert manifest.stat().st_mtime_ns == stamp, "building again rebuilt the cache"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _strings(v)
