"""Auto-detection picks the right source, and says what it tried when none fits."""

from __future__ import annotations

import tarfile

import pytest

from slipstream import SlipstreamDataset, SourceDetectionError, SourceNotFoundError


def test_imagefolder_and_tar_are_detected(image_folder, tmp_path):
    assert SlipstreamDataset(image_folder).source.name == "imagefolder"
    archive = tmp_path / "x.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(image_folder, arcname=".")
    assert SlipstreamDataset(archive).source.name == "tar"


def test_unrecognised_input_lists_what_was_tried(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "notes.txt").write_text("hello")
    with pytest.raises(SourceDetectionError) as err:
        SlipstreamDataset(tmp_path / "flat")
    msg = str(err.value)
    assert "imagefolder: no class sub-directories" in msg
    assert "tar: name does not end in" in msg
    assert "source=NAME" in msg and str(tmp_path / "flat") in msg


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such file or directory"):
        SlipstreamDataset(tmp_path / "nope")


def test_forcing_a_source(image_folder):
    assert SlipstreamDataset(image_folder, source="imagefolder").source.name == "imagefolder"
    with pytest.raises(SourceDetectionError, match="source='nope' is not registered"):
        SlipstreamDataset(image_folder, source="nope")


def test_unknown_protocol_names_the_extra(monkeypatch):
    from slipstream import MissingDependencyError
    from slipstream.location import Location

    def no_impl(*a, **k):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr("fsspec.core.url_to_fs", no_impl)
    with pytest.raises(MissingDependencyError, match=r"slipstream\[s3\]"):
        Location.parse("s3://bucket/x", {"key": "SECRET"})
