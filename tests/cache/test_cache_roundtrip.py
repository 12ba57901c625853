"""Sources → cache → reader: every value comes back exactly, and zarr reads the same."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import zarr

from slipstream import SlipstreamDataset, build_cache
from slipstream.cache import Cache, Codec
from slipstream.sources import open_source

from ..helpers import folder_expectation


def assert_cache_matches(cache: Cache, expected: list[dict]) -> None:
    assert len(cache) == len(expected)
    for i, exp in enumerate(expected):
        got = cache[i]
        assert got["image"] == exp["image"], f"sample {i} ({exp['path']}): image bytes differ"
        assert got["label"] == exp["label"], f"sample {i}: label"
        assert got["path"] == exp["path"], f"sample {i}: path"


def test_imagefolder_round_trip_is_byte_identical(image_folder, cache_root):
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    cache = ds.build_cache(progress=False)
    assert_cache_matches(cache, folder_expectation(image_folder))
    assert ds.source.classes == ("class_000", "class_001", "class_002")


@pytest.mark.parametrize("suffix,mode", [
    (".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.bz2", "w:bz2"),
    (".tar.xz", "w:xz"),
])
def test_tar_round_trip_is_byte_identical(image_folder, tmp_path, cache_root, suffix, mode):
    archive = tmp_path / f"train{suffix}"
    with tarfile.open(archive, mode) as tf:  # with a top-level "train/" as `tar -cf` makes
        tf.add(image_folder, arcname="train")
    ds = SlipstreamDataset(archive, cache_dir=cache_root)
    assert ds.source.name == "tar"
    cache = ds.build_cache(progress=False)
    assert_cache_matches(cache, folder_expectation(image_folder))


def test_heap_values_never_straddle_chunks_and_large_values_still_read(image_folder, cache_root):
    source = open_source(str(image_folder))
    sizes = [len(source.read(i)["image"]) for i in range(len(source))]
    chunk = int(np.median(sizes) * 2.5)  # several images a chunk, some padding needed
    cache = build_cache(source, cache_root, progress=False, heap_chunk_bytes=chunk)
    col = cache.column("image")
    for i in range(len(cache)):
        off, size = int(col.heap.offsets[i]), int(col.heap.sizes[i])
        assert off // chunk == (off + size - 1) // chunk, f"sample {i} straddles two chunks"
        assert np.shares_memory(col.view(i), col.heap._views[off // chunk])  # zero-copy view
    assert_cache_matches(cache, folder_expectation(image_folder))

    small = build_cache(source, cache_root / "small", progress=False, heap_chunk_bytes=1000)
    assert_cache_matches(small, folder_expectation(image_folder))  # values span chunks


def test_plain_zarr_reads_the_same_data(image_folder, cache_root):
    cache = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    g = zarr.open_group(str(cache.path), mode="r")
    assert g.attrs["slipstream"]["num_samples"] == len(cache)
    # every file in the group is a zarr node: listing raises no "unrecognized object" warning
    assert sorted(g.group_keys()) == ["image", "path"] and sorted(g.array_keys()) == ["label"]
    np.testing.assert_array_equal(g["label"][:], cache.column("label"))
    heap = g["image/heap"][:]
    offsets, sizes = g["image/offsets"][:], g["image/sizes"][:]
    for i in range(len(cache)):
        assert heap[offsets[i] : offsets[i] + sizes[i]].tobytes() == cache[i]["image"]
    np.testing.assert_array_equal(g["image/heights"][:], cache.column("image").heights)
    paths = g["path/heap"][:]
    po, ps = g["path/offsets"][:], g["path/sizes"][:]
    assert [paths[o : o + s].tobytes().decode() for o, s in zip(po, ps)] == [
        cache[i]["path"] for i in range(len(cache))
    ]


def test_codec_is_decided_per_sample(mixed_folder, cache_root):
    cache = SlipstreamDataset(mixed_folder, cache_dir=cache_root).build_cache(progress=False)
    col = cache.column("image")
    codec_of = {cache[i]["path"]: int(col.codecs[i]) for i in range(len(cache))}
    assert codec_of == {
        "a/cmyk.jpg": Codec.ENCODED, "a/gray.jpg": Codec.JPEG, "a/rgb.jpg": Codec.JPEG,
        "b/gray.png": Codec.ENCODED, "b/rgb.png": Codec.ENCODED, "b/rgba.png": Codec.ENCODED,
    }
    assert set(col.heights.tolist()) == {90} and set(col.widths.tolist()) == {120}
    assert_cache_matches(cache, folder_expectation(mixed_folder))


def test_fsspec_url_source(image_folder, cache_root):
    """Any fsspec URL: here the in-memory filesystem, read through fsspec only."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in image_folder.rglob("*.jpg"):
        fs.pipe_file(f"/ds/{p.relative_to(image_folder).as_posix()}", p.read_bytes())
    try:
        ds = SlipstreamDataset("memory://ds", cache_dir=cache_root)
        assert ds.source.name == "imagefolder"
        assert_cache_matches(ds.build_cache(progress=False), folder_expectation(image_folder))
    finally:
        fs.rm("/ds", recursive=True)


def test_second_build_is_a_cache_hit(image_folder, cache_root):
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root)
    first = ds.build_cache(progress=False)
    manifest = first.path / "zarr.json"  # root metadata, written last
    mtime = manifest.stat().st_mtime_ns
    again = SlipstreamDataset(image_folder, cache_dir=cache_root).build_cache(progress=False)
    assert again.path == first.path and manifest.stat().st_mtime_ns == mtime
    assert ds.find_cache() is not None


def test_field_selection(image_folder, cache_root):
    ds = SlipstreamDataset(image_folder, cache_dir=cache_root, fields=["image", "label"])
    cache = ds.build_cache(progress=False)
    assert cache.field_names == ("image", "label")
    assert ds.cache_key() != SlipstreamDataset(image_folder, cache_dir=cache_root).cache_key()
    with pytest.raises(ValueError, match="nope"):
        SlipstreamDataset(image_folder, fields=["nope"]).cache_key()


def test_empty_folder_is_a_clear_error(tmp_path, cache_root):
    (tmp_path / "d" / "cls").mkdir(parents=True)
    (tmp_path / "d" / "cls" / "notes.txt").write_text("not an image")
    from slipstream.errors import SourceNotFoundError

    with pytest.raises(SourceNotFoundError, match="'cls' hold no image file"):
        SlipstreamDataset(tmp_path / "d", source="imagefolder", cache_dir=cache_root)
    ds = SlipstreamDataset(tmp_path / "d", source="imagefolder", cache_dir=cache_root,
                           allow_empty_classes=True)
    with pytest.raises(ValueError, match="no samples"):
        ds.build_cache(progress=False)
    assert not any(cache_root.iterdir()) or not any((cache_root / ".tmp").glob("*.*.*"))


def test_constructor_forms(image_folder, cache_root):
    keys = {
        SlipstreamDataset(image_folder, cache_dir=cache_root).cache_key(),
        SlipstreamDataset(local_dir=image_folder, cache_dir=cache_root).cache_key(),
        SlipstreamDataset(input_dir=str(image_folder), cache_dir=cache_root).cache_key(),
        SlipstreamDataset(remote_dir=f"file://{image_folder}", cache_dir=cache_root).cache_key(),
    }
    assert len(keys) == 1
    with pytest.raises(TypeError, match="exactly one location"):
        SlipstreamDataset(image_folder, local_dir=image_folder)
    with pytest.raises(TypeError, match="exactly one location"):
        SlipstreamDataset()
    ds = SlipstreamDataset(image_folder)
    assert len(ds) == 18 and ds[0]["label"] == 0 and ds[-1]["label"] == 2
    with pytest.raises(IndexError):
        ds[18]


def test_default_cache_dir_from_environment(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIPSTREAM_CACHE_DIR", str(tmp_path / "envcache"))
    cache = SlipstreamDataset(image_folder).build_cache(progress=False)
    assert cache.path.parent == tmp_path / "envcache"
    monkeypatch.delenv("SLIPSTREAM_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert SlipstreamDataset(image_folder).cache_dir == tmp_path / "home" / ".slipstream"


def test_size_excludes_the_sparse_padding_of_the_last_chunk(image_folder, cache_root):
    source = open_source(str(image_folder))
    cache = build_cache(source, cache_root, progress=False, heap_chunk_bytes=40_000)
    col = cache.column("image")
    files = cache.manifest["files"]
    listed = sum(int(f["size"]) for f in files.values())
    assert col.heap.length > col.heap.chunk_bytes  # several chunks, the last one padded
    padding = -(-col.heap.length // col.heap.chunk_bytes) * col.heap.chunk_bytes - col.heap.length
    assert padding > 0 and cache.size_bytes() == listed - padding
