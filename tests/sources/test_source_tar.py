"""Tar archives at remote URLs (the loopback S3 server): progress bars for the streaming
passes over a compressed archive, and the archive read end to end."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from slipstream import SlipstreamDataset, SourceNotFoundError
from slipstream.sources import open_source

from ..helpers import folder_expectation
from ..source_checks import column, decoded_full, pil_rgb


class _Bars:
    """Records every progress bar the tar source makes."""

    def __init__(self) -> None:
        self.made: list[dict] = []

    def __call__(self, total, desc, *, unit="it", enabled=True, unit_scale=False):
        bar = {"total": total, "desc": desc, "unit": unit, "enabled": enabled, "done": 0,
               "closed": False}
        self.made.append(bar)

        class Bar:
            def update(self, n: int = 1) -> None:
                bar["done"] += n

            def close(self) -> None:
                bar["closed"] = True

        return Bar()


@pytest.fixture
def bars(monkeypatch) -> _Bars:
    recorder = _Bars()
    monkeypatch.setattr("slipstream.sources.tar.progress_bar", recorder)
    return recorder


@pytest.fixture
def remote_tgz(image_folder, s3_server, s3_bucket, tmp_path):
    archive = tmp_path / "train.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(image_folder, arcname="train")
    s3_server.client().put_object(Bucket=s3_bucket, Key="imagenet/train.tar.gz",
                                  Body=archive.read_bytes())
    return f"s3://{s3_bucket}/imagenet/train.tar.gz", archive.stat().st_size


def test_remote_compressed_archive_shows_both_passes(remote_tgz, s3_server, bars, cache_root):
    url, size = remote_tgz
    ds = SlipstreamDataset(remote_dir=url, cache_dir=cache_root,
                           storage_options=s3_server.storage_options)
    assert len(ds) == 18  # the listing pass
    ds.build_cache(progress=False)  # the reading pass
    assert [b["desc"] for b in bars.made] == ["listing train.tar.gz", "reading train.tar.gz"]
    for bar in bars.made:
        assert bar["total"] == size and bar["unit"] == "B" and bar["enabled"]
        assert bar["closed"]
        assert 0.9 * size <= bar["done"] <= size  # the bar follows the bytes read


def test_progress_false_hides_the_bars(remote_tgz, s3_server, bars):
    url, _ = remote_tgz
    with open_source(url, storage_options=s3_server.storage_options, progress=False) as src:
        assert len(src) == 18
    assert [b["enabled"] for b in bars.made] == [False]


def test_local_and_uncompressed_archives_show_none(image_folder, tmp_path, bars):
    for name, mode in (("a.tar.gz", "w:gz"), ("b.tar", "w")):
        archive = tmp_path / name
        with tarfile.open(archive, mode) as tf:
            tf.add(image_folder, arcname="train")
        with open_source(str(archive)) as src:
            assert len(src) == 18
            list(src.iter_samples(num_threads=2))
    assert bars.made == []


def test_remote_archive_end_to_end(remote_tgz, s3_server, image_folder, cache_root):
    url, _ = remote_tgz
    ds = SlipstreamDataset(url, cache_dir=cache_root, storage_options=s3_server.storage_options)
    want = folder_expectation(image_folder)
    got, images = decoded_full(ds, ["image"], batch_size=5)
    assert column(got, "label") == [w["label"] for w in want]
    assert column(got, "path") == [w["path"] for w in want]
    for i, w in enumerate(want):
        assert np.array_equal(images["image"][i], pil_rgb(w["image"])), w["path"]


def test_missing_remote_archive(s3_server, s3_bucket):
    with pytest.raises(SourceNotFoundError, match="no such"):
        SlipstreamDataset(f"s3://{s3_bucket}/nope.tar.gz",
                          storage_options=s3_server.storage_options)
