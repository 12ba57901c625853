"""Every URL or path shape in the table of ``docs/sources.md`` goes to the source it names.

Each case builds the smallest input of that shape (locally, on the loopback S3 server,
or on the stand-in Hub) and checks which source auto-detection picks; forcing a source
inputs that match nothing and inputs that do not exist are checked at the end.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from slipstream import (
    MissingDependencyError,
    SlipstreamDataset,
    SourceDetectionError,
    SourceNotFoundError,
)
from slipstream.location import Location
from slipstream.plugins import get_plugin_host

from ..helpers import encode
from ..hf_hub import FakeHub

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _upload(s3_server, bucket: str, root: Path, prefix: str) -> None:
    client = s3_server.client()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        key = prefix if root.is_file() else f"{prefix}/{p.relative_to(root).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())


def _beton(tmp: Path, name: str) -> Path:
    path = tmp / name
    with gzip.open(FIXTURES / "ffcv" / "raw.beton.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def _tar(folder: Path, path: Path) -> Path:
    mode = {".tar": "w", ".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".tbz2": "w:bz2",
            ".tbz": "w:bz2", ".xz": "w:xz", ".txz": "w:xz"}[path.suffix]
    with tarfile.open(path, mode) as tf:
        tf.add(folder, arcname="train")
    return path


def _shard(path: Path) -> Path:
    """A WebDataset shard: ``KEY.jpg`` + ``KEY.cls`` members at the top level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for key, label in (("000000", 1), ("000001", 0)):
            for ext, data in (("jpg", encode(np.full((8, 8, 3), 90, np.uint8), "JPEG")),
                              ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _parquet(path: Path, n: int = 2) -> Path:
    pytest.importorskip("datasets", reason="the datasets library writes the parquet cases")
    from datasets import ClassLabel, Dataset, Features, Value

    path.parent.mkdir(parents=True, exist_ok=True)
    feats = Features({"label": ClassLabel(names=["a", "b"]), "text": Value("string")})
    Dataset.from_dict({"label": [i % 2 for i in range(n)], "text": ["x"] * n},
                      features=feats).to_parquet(str(path))
    return path


def _saved(path: Path, as_dict: bool) -> Path:
    pytest.importorskip("datasets", reason="the datasets library writes save_to_disk output")
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_dict({"label": [0, 1]})
    (DatasetDict(train=ds) if as_dict else ds).save_to_disk(str(path))
    return path


# case -> (row of the table in docs/sources.md, builder, expected source); a builder
# takes (tmp_path, image_folder, remote) and returns (url, storage_options)
Case = tuple[str, Callable[..., tuple[str, dict]], str]


def _local(p: Path) -> tuple[str, dict]:
    return str(p), {}


def _pq_dir(t: Path, rel: str, levels: int) -> Path:
    return _parquet(t / "p" / rel).parents[levels]


LITDATA = FIXTURES / "litdata" / "dataset"
CASES: dict[str, Case] = {
    "litdata dir": ("litdata-dir", lambda t, f, r: _local(LITDATA), "litdata"),
    "litdata s3 prefix": ("litdata-dir", lambda t, f, r: r.put(LITDATA, "ld"), "litdata"),
    ".beton file": ("ffcv-file", lambda t, f, r: _local(_beton(t, "x.beton")), "ffcv"),
    ".ffcv on s3": ("ffcv-file", lambda t, f, r: r.put(_beton(t, "x.ffcv"), "in.ffcv"), "ffcv"),
    "hf:// dataset": ("hf-url", lambda t, f, r: r.hub(_pq_dir(t, "data/train-0.parquet", 1)),
                      "huggingface"),
    "save_to_disk dict": ("hf-saved", lambda t, f, r: _local(_saved(t / "dd", True)),
                          "huggingface"),
    "save_to_disk dataset": ("hf-saved", lambda t, f, r: _local(_saved(t / "d", False)),
                             "huggingface"),
    "parquet at top": ("hf-parquet-dir", lambda t, f, r: _local(_pq_dir(t, "train.parquet", 0)),
                       "huggingface"),
    "parquet in data/": ("hf-parquet-dir", lambda t, f, r: _local(
        _pq_dir(t, "data/train-00000-of-00001.parquet", 1)), "huggingface"),
    "parquet in CONFIG/": ("hf-parquet-dir", lambda t, f, r: _local(
        _pq_dir(t, "cfg/train-00000-of-00001.parquet", 1)), "huggingface"),
    "parquet in CONFIG/SPLIT/": ("hf-parquet-dir", lambda t, f, r: _local(
        _pq_dir(t, "cfg/train/0000.parquet", 2)), "huggingface"),
    "parquet dir on s3": ("hf-parquet-dir", lambda t, f, r: r.put(
        _pq_dir(t, "data/train-00000-of-00001.parquet", 1), "hfdata"), "huggingface"),
    "one parquet file": ("parquet-file", lambda t, f, r: _local(_parquet(t / "x.parquet")),
                         "huggingface"),
    "imagefolder dir": ("imagefolder-dir", lambda t, f, r: _local(f), "imagefolder"),
    "imagefolder s3 prefix": ("imagefolder-dir", lambda t, f, r: r.put(f, "train"),
                              "imagefolder"),
    "webdataset shard": ("webdataset-shard", lambda t, f, r: _local(_shard(t / "s-000.tar")),
                         "webdataset"),
    "webdataset shard dir": ("webdataset-shard", lambda t, f, r: _local(
        _shard(t / "shards" / "s-000.tar").parent), "webdataset"),
    "archive .tar.gz on s3": ("tar-archive", lambda t, f, r: r.put(
        _tar(f, t / "train.tar.gz"), "imagenet/train.tar.gz"), "tar"),
}
for _suffix in (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz"):
    CASES[f"archive {_suffix}"] = (
        "tar-archive", lambda t, f, r, sx=_suffix: _local(_tar(f, t / f"train{sx}")), "tar")


class _Remote:
    """Puts an input on the loopback S3 server or the stand-in Hub; returns (url, options)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def put(self, path: Path, key: str) -> tuple[str, dict]:
        s3 = self.request.getfixturevalue("s3_server")
        bucket = self.request.getfixturevalue("s3_bucket")
        _upload(s3, bucket, path, key)
        return f"s3://{bucket}/{key}", s3.storage_options

    def hub(self, repo: Path) -> tuple[str, dict]:
        server = FakeHub().start()
        self.request.addfinalizer(server.stop)
        server.repos["tests/detect"] = repo
        return "hf://datasets/tests/detect", server.storage_options


@pytest.mark.parametrize("shape", list(CASES))
def test_shape_goes_to_its_source(shape, tmp_path, image_folder, request):
    _, build, expected = CASES[shape]
    if expected not in get_plugin_host().sources():
        pytest.skip(f"the {expected!r} source is a plugin that is not installed")
    url, options = build(tmp_path, image_folder, _Remote(request))
    ds = SlipstreamDataset(url, storage_options=options, cache_dir=tmp_path / "cache")
    try:
        assert ds.source.name == expected, f"{shape}: {url} went to {ds.source.name}"
        assert len(ds) > 0
    finally:
        ds.close()


def test_every_row_of_the_table_is_tested():
    """The first column of the table in docs/sources.md names each row (`id`)."""
    doc = (Path(__file__).parents[2] / "docs" / "sources.md").read_text()
    table = doc.split("## Which shape goes where", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", table, re.M))
    assert rows == {row for row, _, _ in CASES.values()}


@pytest.mark.parametrize("name", ["litdata", "ffcv", "huggingface", "imagefolder"])
def test_forcing_a_source_skips_detection(name, tmp_path, image_folder):
    """``source=NAME`` opens with that source even where detection would pick another;
    on input it cannot read, it says so, naming the input."""
    if name == "imagefolder":
        assert SlipstreamDataset(image_folder, source=name).source.name == name
        return
    with pytest.raises((SourceDetectionError, FileNotFoundError)) as err:
        SlipstreamDataset(image_folder, source=name)
    assert str(image_folder) in str(err.value)


def test_nothing_matches_lists_every_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceDetectionError) as err:
        SlipstreamDataset(tmp_path)
    msg = str(err.value)
    for line in ("litdata: no index.json", "ffcv: name does not end in .beton/.ffcv",
                 "huggingface: no parquet files or save_to_disk output",
                 "tar: name does not end in", "imagefolder: no class sub-directories"):
        assert line in msg
    assert "source=NAME" in msg and str(tmp_path) in msg


def test_forcing_an_unregistered_source_is_refused(image_folder):
    with pytest.raises(SourceDetectionError, match="source='nope' is not registered"):
        SlipstreamDataset(image_folder, source="nope")


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such file or directory"):
        SlipstreamDataset(tmp_path / "nope")


def test_a_protocol_without_its_fsspec_implementation_names_the_extra(monkeypatch):
    def no_impl(*a, **k):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr("fsspec.core.url_to_fs", no_impl)
    with pytest.raises(MissingDependencyError, match=r"slipstream\[s3\]"):
        Location.parse("s3://bucket/x", {"key": "SECRET"})
