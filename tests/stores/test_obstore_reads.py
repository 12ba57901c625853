"""Downloads through obstore (``stores/_obstore_reads.py``): which options it takes over
from s3fs, and the store contract on a real server with each download client."""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle

import pytest

from slipstream.stores import S3Store, open_remote_store
from slipstream.stores._obstore_reads import READER_ENV, reader_for
from slipstream.testing import StoreTests

obstore = pytest.importorskip("obstore", reason="obstore is in the s3 and test extras")

EXPLICIT = {"key": "k", "secret": "s", "client_kwargs": {"region_name": "eu-west-1"}}


@pytest.fixture(autouse=True)
def _no_private_ca(monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # some machines set one globally


@pytest.mark.parametrize("options", [
    EXPLICIT,
    {"key": "k", "secret": "s", "token": "t", "endpoint_url": "http://127.0.0.1:9"},
    {"anon": True, "client_kwargs": {"endpoint_url": "https://minio.example"}},
    {**EXPLICIT, "config_kwargs": {"retries": {"total_max_attempts": 1}, "read_timeout": 1,
                                   "connect_timeout": 1}, "use_listings_cache": False},
])
def test_explicit_options_are_taken_over(options):
    assert reader_for(options, deadline=30) is not None


@pytest.mark.parametrize("options", [
    {"key": "k", "secret": "s"},  # plain AWS, bucket region unknown: botocore finds it
    {"profile": "team", "client_kwargs": {"region_name": "eu-west-1"}},
    {"client_kwargs": {"region_name": "eu-west-1"}},  # the default credential chain
    {**EXPLICIT, "client_kwargs": {"region_name": "eu-west-1", "verify": False}},
    {**EXPLICIT, "config_kwargs": {"proxies": {"https": "http://proxy:3128"}}},
    {**EXPLICIT, "requester_pays": True},
])
def test_anything_else_stays_with_s3fs(options):
    assert reader_for(options, deadline=30) is None


def test_the_environment_can_turn_it_off(monkeypatch):
    monkeypatch.setenv(READER_ENV, "s3fs")
    assert reader_for(EXPLICIT, deadline=30) is None


def test_a_private_ca_for_tls_stays_with_s3fs(monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/private-ca.pem")
    assert reader_for(EXPLICIT, deadline=30) is None
    assert reader_for({**EXPLICIT, "endpoint_url": "https://minio.lab"}, deadline=30) is None
    assert reader_for({**EXPLICIT, "endpoint_url": "http://minio.lab"}, deadline=30) is not None
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert reader_for(EXPLICIT, deadline=30) is not None


def test_a_download_is_the_object_byte_for_byte(s3_server, s3_bucket, tmp_path):
    data = bytes(range(256)) * 70_000  # 17.9 MB: several pieces of 8 MiB
    s3_server.client().put_object(Bucket=s3_bucket, Key=f"caches/{'ab' * 20}/image/heap/c/0",
                                  Body=data)
    store = open_remote_store(f"s3://{s3_bucket}/caches",
                              storage_options=s3_server.storage_options)
    assert store.download_client == "obstore"
    store.get_file("ab" * 20, "image/heap/c/0", tmp_path / "c0")
    got = (tmp_path / "c0").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    copy = pickle.loads(pickle.dumps(store))  # a store travels to other processes
    assert copy.download_client == "obstore"
    copy.get_file("ab" * 20, "image/heap/c/0", tmp_path / "c1")
    assert (tmp_path / "c1").read_bytes() == got


class TestS3StoreMotoThroughS3fs(StoreTests):
    """The kit with downloads through s3fs (the default is obstore where it is installed,
    and ``test_store_conformance.py`` runs the kit that way)."""

    secrets = ("testing-secret",)

    @pytest.fixture
    def store(self, s3_server, s3_bucket, monkeypatch):
        monkeypatch.setenv(READER_ENV, "s3fs")
        store = open_remote_store(f"s3://{s3_bucket}/caches",
                                  storage_options=s3_server.storage_options)
        assert isinstance(store, S3Store) and store.download_client == "s3fs"
        return store


def test_a_child_forked_after_obstore_was_used_downloads_through_s3fs(s3_server, s3_bucket,
                                                                       tmp_path):
    """obstore's runtime threads do not survive a fork: a forked child that used it would
    hang. A child (a DataLoader worker, a multiprocessing fork) downloads through s3fs."""
    data = b"chunk" * 50_000
    s3_server.client().put_object(Bucket=s3_bucket, Key=f"caches/{'ab' * 20}/image/heap/c/0",
                                  Body=data)
    url = f"s3://{s3_bucket}/caches"
    store = open_remote_store(url, storage_options=s3_server.storage_options)
    store.get_file("ab" * 20, "image/heap/c/0", tmp_path / "parent")  # obstore is running
    assert store.download_client == "obstore"
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child() -> None:
        mine = open_remote_store(url, storage_options=s3_server.storage_options)
        mine.get_file("ab" * 20, "image/heap/c/0", tmp_path / "child")
        results.put((mine.download_client, (tmp_path / "child").read_bytes() == data))

    process = ctx.Process(target=child)
    process.start()
    process.join(60)
    hung = process.is_alive()
    if hung:
        process.kill()
        process.join()
    assert not hung, "the forked child hung downloading"
    assert process.exitcode == 0
    assert results.get(timeout=10) == ("s3fs", True)
    assert store.download_client == "obstore"  # the parent goes on as before
