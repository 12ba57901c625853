"""write_index: value → sample indexes stored in the cache group, read by any zarr reader."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from slipstream import SlipstreamDataset, write_index
from slipstream.cache import Cache


def test_label_index_matches_numpy(image_folder, cache_root):
    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    index = write_index(cache, fields=["label"])["label"]
    labels = cache.column("label")
    for value in np.unique(labels):
        np.testing.assert_array_equal(index.samples_for(value), np.flatnonzero(labels == value))
    assert index.samples_for(12345).size == 0
    assert index.counts() == {0: 6, 1: 6, 2: 6}
    # persisted, listed in the manifest, verifiable, visible to a fresh reader and to zarr
    assert cache.verify().ok
    reopened = Cache(cache.path)
    assert reopened.index_names == ("label",)
    np.testing.assert_array_equal(reopened.index("label").samples, index.samples)
    g = zarr.open_group(str(cache.path), mode="r")
    np.testing.assert_array_equal(g["_indexes/label/values"][:], [0, 1, 2])
    # idempotent
    assert write_index(reopened, ["label"])["label"].counts() == index.counts()
    assert Cache(cache.path).verify().ok


def test_index_errors(image_folder, cache_root):
    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    with pytest.raises(TypeError, match="int and float fields"):
        write_index(cache, ["path"])
    with pytest.raises(KeyError, match="no field 'nope'"):
        write_index(cache, ["nope"])
    with pytest.raises(KeyError, match="write_index"):
        cache.index("label")


def test_index_left_unlisted_by_a_dead_writer_is_rebuilt(image_folder, cache_root):
    import shutil

    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    write_index(cache, ["label"])
    # simulate a writer killed after the rename but before the manifest update
    meta_path = cache.path / "zarr.json"
    import json

    meta = json.loads(meta_path.read_text())
    attrs = meta["attributes"]["slipstream"]
    attrs["indexes"] = []
    attrs["files"] = {k: v for k, v in attrs["files"].items() if not k.startswith("_indexes/label")}
    meta_path.write_text(json.dumps(meta))
    (cache.path / "_indexes" / "label" / "values" / "c" / "0").write_bytes(b"garbage")
    fresh = Cache(cache.path)
    assert fresh.index_names == ()
    index = write_index(fresh, ["label"])["label"]
    assert index.counts() == {0: 6, 1: 6, 2: 6}
    assert Cache(cache.path).verify().ok
    shutil.rmtree(cache.path / "_indexes")
    assert not Cache(cache.path).verify().ok
