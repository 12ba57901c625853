"""Archives whose members could escape an extraction target are refused by name."""

from __future__ import annotations

import io
import tarfile

import pytest

from slipstream import SlipstreamDataset, UnsafeArchiveError


def _archive(path, members):
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"\xff\xd8\xff\xe0fake"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


@pytest.mark.parametrize("bad,what", [
    (_file("../evil/x.jpg"), "'..'"),
    (_file("train/../../x.jpg"), "'..'"),
    (_file("/etc/x.jpg"), "absolute"),
    (_special("train/a/link.jpg", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
    (_special("train/a/hard.jpg", tarfile.LNKTYPE, "train/a/ok.jpg"), "a link"),
    (_special("train/a/dev", tarfile.CHRTYPE), "a device"),
    (_special("train/a/fifo", tarfile.FIFOTYPE), "a device"),
])
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_unsafe_members_are_refused(tmp_path, cache_root, bad, what, suffix):
    path = tmp_path / f"bad{suffix}"
    mode = "w:gz" if suffix.endswith("gz") else "w"
    with tarfile.open(path, mode) as tf:
        for info, data in [_file("train/a/ok.jpg"), bad]:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    ds = SlipstreamDataset(path, cache_dir=cache_root)
    with pytest.raises(UnsafeArchiveError) as err:
        ds.build_cache(progress=False)
    msg = str(err.value)
    assert repr(bad[0].name) in msg and what in msg and str(path) in msg
    assert not list(cache_root.glob("[0-9a-f]*"))  # nothing published
    assert not (tmp_path / "evil").exists()


def test_not_a_tar_under_a_tar_name(tmp_path, cache_root):
    path = tmp_path / "fake.tar.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match="not a readable tar archive"):
        SlipstreamDataset(path, cache_dir=cache_root).build_cache(progress=False)
