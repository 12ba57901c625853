"""``slipstream du / rm / prune``: sizes by cache and part, removal that skips a cache a
loader is reading (mid-epoch, in another process or this one), least-recently-used pruning, and a pruned
cache built again on next use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from slipstream import SlipstreamDataset, SlipstreamLoader
from slipstream.caching import write_index
from slipstream.cli import main
from slipstream.sample_data import make_image_folder
from slipstream.stores.local import LocalStore

from ..helpers import sigkill

HOLDER = """
import sys
from slipstream import SlipstreamDataset, SlipstreamLoader
loader = SlipstreamLoader(SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2]), batch_size=2,
                          num_threads=1, progress=False)
epoch = iter(loader)
next(epoch)  # mid-epoch: the cache is in use
print("ready", flush=True)
sys.stdin.read()
"""


def folder(root: Path, seed: int) -> Path:
    return make_image_folder(root / f"data{seed}", num_classes=2, images_per_class=3,
                             size=(48, 64), seed=seed)


def du(capsys, cache_dir: Path) -> list[dict]:
    assert main(["du", "--json", "--cache-dir", str(cache_dir)]) == 0
    return json.loads(capsys.readouterr().out)["caches"]


def test_du_shows_each_cache_by_part_with_its_last_use(tmp_path, capsys):
    root = tmp_path / "root"
    ds = SlipstreamDataset(folder(tmp_path, 1), cache_dir=root)
    cache = ds.build_cache("yuv420", progress=False)
    write_index(cache, ["label"])
    (row,) = du(capsys, root)
    assert row["key"] == cache.key and row["kind"] == "full"
    assert set(row["parts"]) == {"image (jpeg)", "image (yuv420)", "label", "path", "indexes"}
    on_disk = sum(p.stat().st_blocks * 512 for p in cache.path.rglob("*")
                  if p.is_file() and not p.name.startswith("."))
    assert row["disk_bytes"] == on_disk
    assert sum(row["parts"].values()) == on_disk - (cache.path / "zarr.json").stat().st_blocks * 512
    assert row["last_use"] > 0
    assert main(["du", "--cache-dir", str(root)]) == 0
    text = capsys.readouterr().out
    assert cache.key in text and "image (yuv420)" in text


def test_rm_skips_a_cache_a_running_loader_has_open(tmp_path, capsys):
    root = tmp_path / "root"
    data = folder(tmp_path, 2)
    key = SlipstreamDataset(data, cache_dir=root).build_cache(progress=False).key
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(data), str(root)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        assert child.stdout.readline().strip() == "ready"
        assert main(["rm", key[:10], "--cache-dir", str(root)]) == 1
        assert "in use by a running loader" in capsys.readouterr().out
        assert LocalStore(root).has(key)
    finally:
        sigkill(child)
        child.stdin.close()
    # the holder is gone (killed): its lock went with it
    assert main(["rm", key[:10], "--cache-dir", str(root)]) == 0
    assert f"removed {key}" in capsys.readouterr().out
    assert not LocalStore(root).has(key) and not (root / key).exists()


def test_prune_removes_the_least_recently_used_and_a_pruned_cache_comes_back(
        tmp_path, capsys):
    root = tmp_path / "root"
    datasets = [SlipstreamDataset(folder(tmp_path, s), cache_dir=root) for s in (3, 4, 5)]
    keys = []
    for ds in datasets:
        loader = SlipstreamLoader(ds, batch_size=2, num_threads=1, progress=False)
        keys.append(loader.cache.key)
        del loader
        time.sleep(0.02)  # distinct last-use times, oldest first
    rows = {r["key"]: r for r in du(capsys, root)}
    newest = rows[keys[2]]["disk_bytes"]
    held = SlipstreamLoader(datasets[0], batch_size=2, num_threads=1, progress=False)
    epoch = iter(held)
    next(epoch)  # the oldest is in use again, mid-epoch (and so now the most recent)
    assert main(["prune", "--max-size", str(newest + rows[keys[0]]["disk_bytes"]),
                 "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"removed {keys[1]}" in out and keys[2] not in out and keys[0] not in out
    store = LocalStore(root)
    assert store.has(keys[0]) and not store.has(keys[1]) and store.has(keys[2])
    assert main(["prune", "--max-size", "1", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"skipped {keys[0]}" in out and "in use" in out and f"removed {keys[2]}" in out
    assert store.has(keys[0]) and store.keys() == [keys[0]]
    # a pruned cache needed again is built again, without error
    again = SlipstreamLoader(datasets[1], batch_size=2, num_threads=1, progress=False)
    assert sum(len(b["label"]) for b in again) == 6 and store.has(keys[1])
    epoch.close()  # the epoch is over: the cache is free to remove
    assert main(["rm", keys[0][:12], "--cache-dir", str(root)]) == 0
    assert not store.has(keys[0])
    for ds in datasets:
        ds.close()
