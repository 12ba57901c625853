"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._servers import MotoS3


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    """A moto server of this test's own, on a fixed loopback port, so the test can stop it
    (the server going away) and start it again."""
    server = MotoS3()
    server.start()
    yield server
    server.stop()
