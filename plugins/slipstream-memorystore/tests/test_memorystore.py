"""The in-memory store passes the store conformance kit, found through its entry point."""

from __future__ import annotations

import uuid
from importlib.metadata import entry_points

import pytest
from slipstream_memorystore import MemoryStore

from slipstream.plugin import StoreTests, open_remote_store


class TestMemoryStore(StoreTests):
    @pytest.fixture
    def store(self):
        return open_remote_store(f"memory://slipstream-tests/{uuid.uuid4().hex}/caches")


def test_found_only_through_its_entry_point():
    eps = {ep.name: ep for ep in entry_points(group="slipstream")}
    assert eps["memorystore"].value == "slipstream_memorystore"
    assert eps["memorystore"].dist is not None
    assert eps["memorystore"].dist.name == "slipstream-memorystore"
    assert isinstance(open_remote_store("memory://elsewhere/x"), MemoryStore)
