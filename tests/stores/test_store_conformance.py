"""The store conformance kit (``slipstream.testing.StoreTests``) on every built-in store:
the local directory store, and S3 on two real servers (moto and SeaweedFS). The in-memory
plugin store runs the same kit in ``plugins/slipstream-memorystore``."""

from __future__ import annotations

import importlib.util

import pytest

from slipstream.stores import LocalStore, S3Store, open_remote_store
from slipstream.testing import StoreTests

from .._servers import SECRET

_HAS_OBSTORE = importlib.util.find_spec("obstore") is not None


class TestLocalStore(StoreTests):
    @pytest.fixture
    def store(self, tmp_path):
        store = open_remote_store(str(tmp_path / "store"))
        assert isinstance(store, LocalStore)
        return store


class TestS3StoreMoto(StoreTests):
    secrets = ("testing-secret",)

    @pytest.fixture
    def store(self, s3_server, s3_bucket):
        store = open_remote_store(f"s3://{s3_bucket}/caches",
                                  storage_options=s3_server.storage_options)
        assert isinstance(store, S3Store)
        assert store.download_client == ("obstore" if _HAS_OBSTORE else "s3fs")
        return store


class TestS3StoreWeed(StoreTests):
    secrets = (SECRET,)

    @pytest.fixture
    def store(self, weed_server, request):
        endpoint = weed_server.endpoint
        bucket = endpoint.new_bucket(request.node.name)
        store = open_remote_store(f"s3://{bucket}/caches", endpoint_url=endpoint.endpoint_url,
                                  storage_options=endpoint.storage_options)
        assert store.download_client == ("obstore" if _HAS_OBSTORE else "s3fs")
        yield store
        endpoint.delete_bucket(bucket)
