"""The store contract as pytest tests: subclass :class:`StoreTests` and give a store."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

from ..cache.manifest import encode_root
from ..errors import RemoteStoreError
from ..plugins import get_plugin_host
from ..stores.base import MARKER, CacheStore, is_cache_name

__all__ = ["StoreTests"]


def _key() -> str:
    """A fresh name of the shape of a content key."""
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


class StoreTests:
    """Every check of the store contract (``slipstream/stores/base.py``).

    Give a ``store`` fixture that returns an empty store of your class, opened as a user
    would (``open_remote_store(url, ...)``, so the entry point is what finds it)::

        class TestMyStore(StoreTests):
            @pytest.fixture
            def store(self, tmp_path):
                return open_remote_store(f"mystore://{tmp_path}/caches")

    ``secrets`` lists credential values that must never appear in what the store shows.
    """

    #: Credential values (from the store's storage options) that must never be shown.
    secrets: ClassVar[tuple[str, ...]] = ()

    # -- registration and capabilities -------------------------------------------------------
    def test_is_registered_for_its_protocols(self, store: CacheStore) -> None:
        assert isinstance(store, CacheStore)
        assert store.protocols, f"{type(store).__name__} declares no protocols"
        stores = get_plugin_host().stores()
        for protocol in store.protocols:
            assert stores.get(protocol) is type(store), (
                f"protocol {protocol!r} is served by {stores.get(protocol)!r}, not "
                f"{type(store).__name__}: register it with the slipstream_stores hook")

    def test_capabilities_are_declared_booleans(self, store: CacheStore) -> None:
        for name in ("supports_writes", "supports_put_if_absent", "supports_object_metadata",
                     "is_local"):
            assert isinstance(getattr(type(store), name), bool), name

    def test_describe_shows_no_credentials(self, store: CacheStore) -> None:
        shown = " ".join([store.describe(), repr(store), store.describe_url(),
                          store.object_url(_key(), "a/b")])
        for secret in self.secrets:
            assert secret not in shown
            assert secret not in store.scrub(f"failed with {secret}")

    # -- objects -----------------------------------------------------------------------------
    def test_put_then_get(self, store: CacheStore, tmp_path: Path) -> None:
        key = _key()
        data = bytes(range(256)) * 40
        store.put(key, "f/heap/c/0", data)
        assert store.exists(key, "f/heap/c/0")
        assert store.get(key, "f/heap/c/0") == data
        src = tmp_path / "src.bin"
        src.write_bytes(data[::-1])
        store.put(key, "f/sizes/c/0", src)
        dest = tmp_path / "out" / "deep" / "copy.bin"
        store.get_file(key, "f/sizes/c/0", dest)
        assert dest.read_bytes() == data[::-1]

    def test_get_range(self, store: CacheStore) -> None:
        key = _key()
        data = bytes(range(200))
        store.put(key, "heap", data)
        assert store.get_range(key, "heap", 0, 10) == data[:10]
        assert store.get_range(key, "heap", 150, 170) == data[150:170]
        assert store.get_range(key, "heap", 190, 400) == data[190:]  # short at the end
        assert store.get_range(key, "heap", 50, 50) == b""

    def test_put_replaces_whole(self, store: CacheStore) -> None:
        key = _key()
        store.put(key, "a", b"first version, longer")
        store.put(key, "a", b"second")
        assert store.get(key, "a") == b"second"

    def test_missing_objects_are_named(self, store: CacheStore, tmp_path: Path) -> None:
        key = _key()
        assert not store.exists(key, "nope")
        assert store.metadata(key, "nope") is None
        for call in (lambda: store.get(key, "nope"),
                     lambda: store.get_range(key, "nope", 0, 4),
                     lambda: store.get_file(key, "nope", tmp_path / "x")):
            with pytest.raises(RemoteStoreError) as info:
                call()
            assert isinstance(info.value, FileNotFoundError)
            assert f"{key}/nope" in str(info.value) and "\n" not in str(info.value)
        store.delete(key, "nope")  # deleting what is not there is no error

    def test_put_if_absent_writes_once(self, store: CacheStore) -> None:
        key = _key()
        assert store.put_if_absent(key, "once", b"first")
        assert not store.put_if_absent(key, "once", b"second")
        assert store.get(key, "once") == b"first"

    def test_put_if_absent_has_one_winner_where_atomic(self, store: CacheStore) -> None:
        if not store.supports_put_if_absent:
            pytest.skip(f"{type(store).__name__} declares put_if_absent not atomic")
        key = _key()
        n = 6
        go = threading.Barrier(n)
        won: list[int] = []

        def race(i: int) -> None:
            go.wait()
            if store.put_if_absent(key, MARKER, f"writer {i}".encode()):
                won.append(i)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        assert store.get(key, MARKER) == f"writer {won[0]}".encode()

    def test_metadata(self, store: CacheStore) -> None:
        key = _key()
        store.put(key, "m", b"x", metadata={"sha256": "ab" * 32, "slipstream-build": "b1"})
        meta = store.metadata(key, "m")
        if store.supports_object_metadata:
            assert meta is not None
            assert meta.get("sha256") == "ab" * 32 and meta.get("slipstream-build") == "b1"
        else:
            assert meta == {}

    def test_list_objects_and_delete(self, store: CacheStore) -> None:
        key = _key()
        assert store.list_objects(key) == {}
        files = {"zarr.json": b"{}", "label/zarr.json": b"{}!", "label/c/0": b"\0" * 64,
                 "image/heap/c/0": b"\1" * 1000}
        for rel, data in files.items():
            store.put(key, rel, data)
        listing = store.list_objects(key)
        assert {rel: info.size for rel, info in listing.items()} == {
            rel: len(d) for rel, d in files.items()}
        store.delete(key, "label/c/0")
        assert not store.exists(key, "label/c/0")
        assert set(store.list_objects(key)) == set(files) - {"label/c/0"}

    # -- caches --------------------------------------------------------------------------------
    def test_a_cache_is_present_only_once_committed(self, store: CacheStore) -> None:
        key = _key()
        store.put(key, "label/c/0", b"\0" * 8)
        assert key in store.names() and not store.has(key) and key not in store.keys()  # noqa: SIM118 (a store)
        assert store.read_commit(key) is None
        attrs = {"key": key, "format_version": 1,
                 "files": {"label/c/0": {"size": 8, "sha256": "0" * 64}}}
        assert store.write_marker(key, encode_root(attrs), create_only=True)
        assert store.has(key) and key in store.keys()  # noqa: SIM118 (a store)
        assert store.read_commit(key) == attrs
        assert not store.write_marker(key, encode_root(attrs), create_only=True)

    def test_names_are_key_shaped(self, store: CacheStore) -> None:
        key = _key()
        store.put(key, "a", b"1")
        store.put("not-a-key", "a", b"1")
        names = store.names()
        assert key in names and "not-a-key" not in names
        assert all(is_cache_name(n) for n in names)

    def test_push_then_pull_round_trip(self, store: CacheStore, tmp_path: Path) -> None:
        """A cache built here, pushed to the store and pulled into another directory
        reads back byte for byte: the store works with pull and push as they are."""
        from ..caching import build_cache
        from ..sample_data import make_image_folder
        from ..sources import open_source
        from ..stores.local import LocalStore
        from ..stores.pull import pull_cache
        from ..stores.push import push_cache

        folder = make_image_folder(tmp_path / "data", num_classes=2, images_per_class=3,
                                   size=(32, 40), seed=4)
        with open_source(str(folder)) as source:
            cache = build_cache(source, tmp_path / "built", progress=False, num_threads=2)
        with cache:
            report = push_cache(cache, store, threads=2, progress=False)
            assert report.committed and store.has(cache.key)
            assert not push_cache(cache, store, threads=2, progress=False).moved
            pulled = pull_cache(store, cache.key, LocalStore(tmp_path / "pulled"), threads=2,
                                progress=False)
            assert sorted(pulled.pulled) == sorted(cache.attrs["files"])
            with LocalStore(tmp_path / "pulled").open_cache(cache.key) as copy:
                assert copy.verify().ok
                for i in range(len(cache)):
                    assert copy[i] == cache[i]
