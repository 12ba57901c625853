"""slipstream-webdataset: the conformance kit on real shards, detection, entry point, bad shards."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from PIL import Image
from slipstream_webdataset import WebDatasetSource

from slipstream.plugin import (
    Location,
    SampleError,
    SourceNotFoundError,
    SourceTests,
    UnsafeArchiveError,
)
from slipstream.plugins import get_plugin_host
from slipstream.sample_data import make_image_folder, natural_image
from slipstream.sources import open_source


# -- writing shards ----------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    key: str
    image: bytes
    image_ext: str
    label: int

    def expected(self) -> dict[str, Any]:
        return {"image": self.image, "label": self.label, "key": self.key}


def encode(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (48, 64)) -> bytes:
    pixels = natural_image(np.random.default_rng(seed), *size)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def make_items(start: int, count: int) -> list[Item]:
    items = []
    for i in range(start, start + count):
        ext, fmt = ("png", "PNG") if i % 5 == 4 else ("jpg", "JPEG")
        items.append(Item(f"{i:06d}", encode(i, fmt), ext, i % 3))
    return items


def add_member(tf: tarfile.TarFile, name: str, data: bytes, **attrs: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data))


def write_shard(path: Path, items: Sequence[Item], *, extras: bool = True) -> Path:
    """A shard as WebDataset's TarWriter lays it out: each sample's members together."""
    with tarfile.open(path, "w") as tf:
        for item in items:
            if extras:
                add_member(tf, f"{item.key}.json", b'{"source": "test"}')
            add_member(tf, f"{item.key}.{item.image_ext}", item.image)
            add_member(tf, f"{item.key}.cls", f"{item.label}\n".encode())
    return path


# -- datasets, written once per module -------------------------------------------------------
@pytest.fixture(scope="module")
def shard_items() -> list[Item]:
    return make_items(0, 6)


@pytest.fixture(scope="module")
def shard_path(shard_items: list[Item], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shard(tmp_path_factory.mktemp("wds") / "train-000000.tar", shard_items)


@pytest.fixture(scope="module")
def shard_dir_items() -> list[list[Item]]:
    return [make_items(0, 4), make_items(4, 5), make_items(9, 3)]


@pytest.fixture(scope="module")
def shard_dir(shard_dir_items: list[list[Item]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wds-dir")
    # written out of order: the source reads shards by sorted name
    for n in (2, 0, 1):
        write_shard(root / f"shard-{n:06d}.tar", shard_dir_items[n], extras=n != 1)
    (root / "README.txt").write_text("not a shard")
    return root


@pytest.fixture(scope="module")
def memory_url(shard_dir: Path) -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/wds-{uuid.uuid4().hex[:8]}"
    for shard in sorted(shard_dir.glob("*.tar")):
        fs.pipe_file(f"{root}/{shard.name}", shard.read_bytes())
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


# -- the conformance kit ---------------------------------------------------------------------
class TestSingleShardConformance(SourceTests):
    source_name = "webdataset"

    @pytest.fixture
    def source_url(self, shard_path: Path) -> str:
        return str(shard_path)

    @pytest.fixture
    def expected_samples(self, shard_items: list[Item]) -> list[dict[str, Any]]:
        return [item.expected() for item in shard_items]


class TestShardDirectoryConformance(SourceTests):
    source_name = "webdataset"

    @pytest.fixture
    def source_url(self, shard_dir: Path) -> str:
        return str(shard_dir)

    @pytest.fixture
    def expected_samples(self, shard_dir_items: list[list[Item]]) -> list[dict[str, Any]]:
        return [item.expected() for shard in shard_dir_items for item in shard]


class TestFsspecUrlConformance(SourceTests):
    """The same shards at a non-local fsspec URL: nothing assumes a local file."""

    source_name = "webdataset"

    @pytest.fixture
    def source_url(self, memory_url: str) -> str:
        return memory_url

    @pytest.fixture
    def expected_samples(self, shard_dir_items: list[list[Item]]) -> list[dict[str, Any]]:
        return [item.expected() for shard in shard_dir_items for item in shard]


# -- the plugin is found the way a third party's is ---------------------------------------
def test_entry_point_is_installed() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="slipstream")}
    assert found.get("webdataset") == "slipstream_webdataset"


def test_plugin_host_lists_the_distribution() -> None:
    infos = [p for p in get_plugin_host().plugins() if p.distribution == "slipstream-webdataset"]
    assert len(infos) == 1, get_plugin_host().plugins()
    assert infos[0].sources == ("webdataset",)
    assert infos[0].module == "slipstream_webdataset"
    assert get_plugin_host().sources()["webdataset"] is WebDatasetSource


# -- detection leaves other tars alone ---------------------------------------------------------
def test_imagefolder_tar_is_left_to_the_tar_source(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "d", num_classes=2, images_per_class=3, size=(48, 64))
    archive = tmp_path / "d.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(folder, arcname="d")
    answer = WebDatasetSource.detect(Location.parse(str(archive)))
    assert not answer.matches, answer.reason
    with open_source(str(archive)) as src:
        assert src.name == "tar"


def test_flat_tar_of_images_without_labels_is_not_detected(tmp_path: Path) -> None:
    archive = tmp_path / "flat.tar"
    with tarfile.open(archive, "w") as tf:
        for i in range(3):
            add_member(tf, f"{i:06d}.jpg", encode(i))
    assert not WebDatasetSource.detect(Location.parse(str(archive))).matches


def test_directory_without_shards_is_not_detected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert not WebDatasetSource.detect(Location.parse(str(tmp_path))).matches
    with pytest.raises(SourceNotFoundError, match="no WebDataset shards"):
        open_source(str(tmp_path), source="webdataset")


def test_unknown_option_is_refused(shard_path: Path) -> None:
    with pytest.raises(TypeError, match="no options"):
        open_source(str(shard_path), source="webdataset", decode=True)


# -- unsafe and malformed shards -------------------------------------------------------------
def _shard_with(tmp_path: Path, build: Any) -> str:
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tf:
        build(tf)
    return str(path)


def test_link_member_is_refused(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "000000.jpg", encode(0))
        add_member(tf, "000000.cls", b"1")
        add_member(tf, "000001.jpg", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_member(tf, "000001.cls", b"2")

    url = _shard_with(tmp_path, build)
    src = open_source(url, source="webdataset")
    with pytest.raises(UnsafeArchiveError, match="link"):
        len(src)


def test_member_escaping_the_root_is_refused(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "000000.jpg", encode(0))
        add_member(tf, "000000.cls", b"1")
        add_member(tf, "../000001.jpg", encode(1))

    url = _shard_with(tmp_path, build)
    # detection only peeks at the first sample; listing the shard refuses it
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        len(open_source(url))


def test_sample_without_label_names_its_key(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "000000.jpg", encode(0))
        add_member(tf, "000000.cls", b"1")
        add_member(tf, "000001.jpg", encode(1))

    url = _shard_with(tmp_path, build)
    with pytest.raises(SampleError, match="'000001'.*no a .cls label"):
        len(open_source(url))


def test_label_that_is_not_an_integer(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "000000.jpg", encode(0))
        add_member(tf, "000000.cls", b"cat")

    url = _shard_with(tmp_path, build)
    with pytest.raises(SampleError, match="integer class index"):
        len(open_source(url, source="webdataset"))


def test_scattered_sample_members_are_an_error(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "000000.jpg", encode(0))
        add_member(tf, "000000.cls", b"0")
        add_member(tf, "000001.jpg", encode(1))
        add_member(tf, "000001.cls", b"1")
        add_member(tf, "000000.json", b"{}")

    url = _shard_with(tmp_path, build)
    with pytest.raises(SampleError, match="not consecutive"):
        len(open_source(url, source="webdataset"))


def test_sample_with_two_image_formats_prefers_jpeg(tmp_path: Path) -> None:
    jpg, png = encode(0), encode(0, "PNG")

    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "000000.png", png)
        add_member(tf, "000000.jpg", jpg)
        add_member(tf, "000000.cls", b"4")

    with open_source(_shard_with(tmp_path, build)) as src:
        assert src.read(0) == {"image": jpg, "label": 4, "key": "000000"}


def test_keys_may_hold_directories_when_forced(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add_member(tf, "train/000000.jpg", encode(0))
        add_member(tf, "train/000000.cls", b"2")

    url = _shard_with(tmp_path, build)
    assert not WebDatasetSource.detect(Location.parse(url)).matches
    with open_source(url, source="webdataset") as src:
        assert src.read(0)["key"] == "train/000000"


def test_fingerprint_follows_the_shards(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "s.tar", make_items(0, 2))
    with open_source(str(path)) as src:
        before = src.fingerprint()
    write_shard(path, make_items(0, 3))
    with open_source(str(path)) as src:
        assert src.fingerprint() != before
        assert len(src) == 3
