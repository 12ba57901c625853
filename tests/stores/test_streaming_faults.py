"""A streamed cache under faults, with real servers and real signals: the server stopped
mid-epoch, an object tampered with on the server, a streaming loader SIGKILLed; and the
main streaming case against SeaweedFS too."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from slipstream.errors import CacheCorruptError, RemoteStoreError
from slipstream.stores.streaming import is_chunk_file

from ..helpers import sigkill
from .test_sharing_faults import fast_remote
from .test_streaming import all_good, area_files, chunk_files, loader_for, streamed_setup


def setup_on(endpoint, tmp_path, bucket_hint):
    bucket = endpoint.new_bucket(bucket_hint)
    folder, full, _ = streamed_setup(tmp_path, endpoint.endpoint_url, endpoint.storage_options,
                                     bucket)
    return folder, full, fast_remote(endpoint, f"s3://{bucket}/caches/")


def quarter(full) -> int:
    return sum(e["size"] for e in full.attrs["files"].values()) // 4


def test_the_server_going_away_mid_epoch_is_a_remote_error_naming_the_chunk(moto, tmp_path):
    folder, full, remote = setup_on(moto.endpoint, tmp_path, "gone")
    loader = loader_for(folder, tmp_path / "B", remote, quarter(full), shuffle=True, seed=1,
                        batch_size=4, prefetch=2)
    it = iter(loader)
    next(it)
    moto.stop()
    with pytest.raises(RemoteStoreError) as info:
        for _ in it:
            pass
    message = str(info.value)
    assert "/heap/c/" in message and full.key in message and "testing-secret" not in message
    area = loader.cache.path
    all_good(area, full.attrs["files"])  # what is there is good ...
    assert not [p for p in area.rglob(".*.part.*")]  # ... and no partial download is left
    moto.start()  # back again: the same loader carries on from a fresh epoch
    assert sum(len(b["path"]) for b in loader) == len(full)


def test_a_chunk_failing_its_checksum_never_enters_the_local_area(moto, tmp_path):
    folder, full, remote = setup_on(moto.endpoint, tmp_path, "tampered")
    bad = "image/heap/c/2"
    client = moto.endpoint.client()
    bucket = remote.location.path.split("/")[0]
    original = client.get_object(Bucket=bucket, Key=f"caches/{full.key}/{bad}")["Body"].read()
    client.put_object(Bucket=bucket, Key=f"caches/{full.key}/{bad}",
                      Body=bytes(reversed(original)))  # same size, other bytes
    loader = loader_for(folder, tmp_path / "B", remote, quarter(full), shuffle=False,
                        batch_size=4, prefetch=2)
    with pytest.raises(CacheCorruptError, match=f"{full.key}/{bad} is corrupt"):
        for _ in loader:
            pass
    area = loader.cache.path
    assert not (area / bad).exists()
    assert not [p for p in area.rglob(".*.part.*")]
    all_good(area, full.attrs["files"])


KILLED = """
import sys
from slipstream import SlipstreamDataset, SlipstreamLoader
from slipstream.decoders import ReadBytes
from slipstream.stores.sync import open_remote_store
import json
opts = json.loads(sys.argv[4])
remote = open_remote_store(sys.argv[3], endpoint_url=sys.argv[6], storage_options=opts)
loader = SlipstreamLoader(SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2]), batch_size=4,
                          num_threads=1, progress=False, remote_cache=remote, prefetch=2,
                          local_cache_limit=int(sys.argv[5]), pipelines={"image": [ReadBytes()]})
while True:
    for i, _ in enumerate(loader):
        print("batch", i, flush=True)
"""


def test_a_sigkilled_streaming_loader_leaves_nothing_taken_for_a_good_chunk(moto, tmp_path):
    import json

    folder, full, remote = setup_on(moto.endpoint, tmp_path, "killed")
    url = f"s3://{remote.location.path}"
    opts = {**moto.endpoint.storage_options}
    for round_ in range(3):  # kill at a few different moments
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(folder), str(tmp_path / "B"), url,
             json.dumps(opts), str(quarter(full)), moto.endpoint.endpoint_url],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        try:
            for _ in range(2 + 3 * round_):
                assert child.stdout.readline().startswith("batch")
            time.sleep(0.01 * round_)
        finally:
            assert sigkill(child) == -9
        area = tmp_path / "B" / ".stream" / full.key
        all_good(area, full.attrs["files"])
    # a later run removes what the killed ones left half-written and serves a full epoch
    loader = loader_for(folder, tmp_path / "B", remote, quarter(full), shuffle=False)
    batches = [b["path"] for b in loader]
    assert sum(len(b) for b in batches) == len(full)
    assert not [p for p in area.rglob(".*.part.*")]
    all_good(area, full.attrs["files"])
    assert {p.relative_to(area).as_posix() for p in area_files(area)
            if is_chunk_file(p.relative_to(area).as_posix())} <= set(chunk_files(full))


def test_streaming_through_seaweedfs(weed_server, tmp_path):
    folder, full, remote = setup_on(weed_server.endpoint, tmp_path, "weed")
    loader = loader_for(folder, tmp_path / "B", remote, quarter(full), shuffle=True, seed=2,
                        batch_size=4, prefetch=2)
    seen = sorted(p for b in loader for p in b["path"])
    assert seen == sorted(full.column("path").values(range(len(full))))
    assert max(loader.cache.chunk_source.fetched.values()) <= 2
    all_good(loader.cache.path, full.attrs["files"])
