"""Hugging Face source: parquet on the Hub (a stand-in server on 127.0.0.1), the same
layout in a local directory, and ``datasets``' ``save_to_disk`` output.

Every dataset here is written by the ``datasets`` library from known values (JPEG bytes
made with Pillow, labels, scores, captions), so expectations come from those values.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("datasets", reason="the datasets library writes the fixtures (test extra)")
pytest.importorskip("huggingface_hub", reason="hf:// needs huggingface_hub (hf extra)")
pytest.importorskip("pyarrow", reason="the source reads parquet with pyarrow (hf extra)")

from PIL import Image  # noqa: E402

from slipstream import (  # noqa: E402
    MissingDependencyError,
    SampleError,
    SlipstreamDataset,
    SourceDetectionError,
    SourceNotFoundError,
)
from slipstream.sources import open_source  # noqa: E402
from slipstream.testing import SourceTests  # noqa: E402

from ..hf_hub import FakeHub  # noqa: E402
from ..source_checks import assert_center_crops_match, center_crops, column, decoded_full, pil_rgb  # noqa: E402

CLASSES = ["cat", "dog", "fox"]
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
- config_name: gray
  data_files:
  - split: train
    path: gray/train-*
---
# A tiny dataset for slipstream's tests
"""


def _image(i: int, mode: str = "RGB") -> bytes:
    h, w = 14 + i % 3, 18 + i % 4
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([30 + 6 * x + 5 * i, 40 + 7 * y, 180 - 3 * (x + y) - i], -1).astype(np.uint8)
    buf = io.BytesIO()
    if mode == "L":
        Image.fromarray(rgb[..., 0].copy()).save(buf, format="PNG")
    else:
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def rows(split: str, n: int, mode: str = "RGB") -> list[dict[str, Any]]:
    """The rows of a split, as the source must return them."""
    offset = {"train": 0, "test": 100}[split]
    return [{"image": _image(offset + i, mode), "label": (offset + i) % 3,
             "score": float(np.float32((offset + i) / 4)), "caption": f"{split} #{i}"}
            for i in range(n)]


def _dataset(values: list[dict[str, Any]]):
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as HFImage

    features = Features({"image": HFImage(), "label": ClassLabel(names=CLASSES),
                         "score": Value("float32"), "caption": Value("string")})
    columns = {k: [r[k] for r in values] for k in features}
    columns["image"] = [{"bytes": b, "path": None} for b in columns["image"]]
    return Dataset.from_dict(columns, features=features)


def _parquet(values: list[dict[str, Any]], path: Path, row_group: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _dataset(values).to_parquet(str(path), batch_size=row_group)  # a row group per batch


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository as ``push_to_hub`` lays it out: two configs, two splits, sharded."""
    root = tmp_path_factory.mktemp("hub") / "cats"
    train = rows("train", 10)
    _parquet(train[:7], root / "data" / "train-00000-of-00002.parquet")
    _parquet(train[7:], root / "data" / "train-00001-of-00002.parquet")
    _parquet(rows("test", 4), root / "data" / "test-00000-of-00001.parquet")
    _parquet(rows("train", 5, "L"), root / "gray" / "train-00000-of-00001.parquet")
    (root / "README.md").write_text(README)
    return root


@pytest.fixture(scope="module")
def saved_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets import DatasetDict

    root = tmp_path_factory.mktemp("saved") / "dict"
    DatasetDict(train=_dataset(rows("train", 6)),
                test=_dataset(rows("test", 3))).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def saved_one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("saved") / "one"
    _dataset(rows("test", 3)).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def hub(hub_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    server = FakeHub().start()
    server.repos["tests/cats"] = hub_repo
    empty = tmp_path_factory.mktemp("hub") / "empty"
    _parquet([], empty / "data" / "train-00000-of-00001.parquet")
    server.repos["tests/empty"] = empty
    yield server
    server.stop()


# -- conformance ------------------------------------------------------------------------------
class TestHubConformance(SourceTests):
    source_name = "huggingface"

    @pytest.fixture
    def source_url(self, hub) -> str:
        return "hf://datasets/tests/cats"

    @pytest.fixture
    def storage_options(self, hub) -> dict:
        return hub.storage_options

    @pytest.fixture
    def expected_samples(self) -> list[dict[str, Any]]:
        return rows("train", 10)


class TestLocalHubLayoutConformance(SourceTests):
    source_name = "huggingface"

    @pytest.fixture
    def source_url(self, hub_repo) -> str:
        return str(hub_repo)

    @pytest.fixture
    def open_options(self) -> dict:
        return {"split": "test"}

    @pytest.fixture
    def expected_samples(self) -> list[dict[str, Any]]:
        return rows("test", 4)


class TestSaveToDiskConformance(SourceTests):
    source_name = "huggingface"

    @pytest.fixture
    def source_url(self, saved_dict) -> str:
        return str(saved_dict)

    @pytest.fixture
    def expected_samples(self) -> list[dict[str, Any]]:
        return rows("train", 6)


# -- end to end -------------------------------------------------------------------------------
def _check_end_to_end(ds: SlipstreamDataset, want: list[dict[str, Any]]) -> None:
    got, images = decoded_full(ds, ["image"])
    assert column(got, "label") == [w["label"] for w in want]
    assert column(got, "caption") == [w["caption"] for w in want]
    assert np.allclose(column(got, "score"), [w["score"] for w in want])
    for i, w in enumerate(want):
        assert np.array_equal(images["image"][i], pil_rgb(w["image"])), i
    _, crops, ratio = center_crops(ds, "image", 24)
    assert_center_crops_match(crops, [pil_rgb(w["image"]) for w in want], 24, ratio)


def test_end_to_end_from_the_hub(hub, cache_root):
    ds = SlipstreamDataset(input_dir="hf://datasets/tests/cats", cache_dir=cache_root,
                           storage_options=hub.storage_options)
    assert ds.source.name == "huggingface"
    assert ds.source.classes == {"label": CLASSES}
    _check_end_to_end(ds, rows("train", 10))
    assert any(p.startswith("/datasets/tests/cats/resolve/main/data/") for _, p in hub.requests)


def test_end_to_end_config_and_split(hub, cache_root):
    ds = SlipstreamDataset("hf://datasets/tests/cats", cache_dir=cache_root,
                           storage_options=hub.storage_options, config="gray")
    assert (ds.source.config, ds.source.split) == ("gray", "train")
    _check_end_to_end(ds, rows("train", 5, "L"))
    ds = SlipstreamDataset("hf://datasets/tests/cats", cache_dir=cache_root,
                           storage_options=hub.storage_options, split="test")
    _check_end_to_end(ds, rows("test", 4))


def test_end_to_end_save_to_disk(saved_dict, saved_one, cache_root):
    ds = SlipstreamDataset(local_dir=saved_dict, cache_dir=cache_root, split="test")
    _check_end_to_end(ds, rows("test", 3))
    ds = SlipstreamDataset(saved_one, cache_dir=cache_root)
    assert ds.source.split == "train"  # save_to_disk of a Dataset built in memory: no split
    _check_end_to_end(ds, rows("test", 3))


def test_conventional_layout_without_readme(hub_repo, tmp_path):
    """No README: configs and splits from the paths, as the Hub's conventions lay them out."""
    import shutil

    root = tmp_path / "plain"
    shutil.copytree(hub_repo, root, ignore=shutil.ignore_patterns("README.md"))
    convert = root / "gray" / "validation"
    convert.mkdir()
    (root / "gray" / "train-00000-of-00001.parquet").rename(convert / "0000.parquet")
    with open_source(str(root), split="test") as src:
        assert (src.config, src.split, len(src)) == ("default", "test", 4)
    with open_source(str(root), config="gray", split="validation") as src:
        assert len(src) == 5


def test_a_single_parquet_file(hub_repo):
    path = hub_repo / "data" / "test-00000-of-00001.parquet"
    with open_source(str(path)) as src:
        assert src.name == "huggingface" and src.split == "train" and len(src) == 4


def test_columns_option(hub_repo):
    with open_source(str(hub_repo), columns=["label", "image"]) as src:
        assert [f.name for f in src.fields] == ["label", "image"]
        assert src.read(0) == {"label": 0, "image": rows("train", 1)[0]["image"]}
    with pytest.raises(ValueError, match="nope"):
        open_source(str(hub_repo), columns=["nope"])


def test_fingerprint_names_the_files_and_their_hashes(hub):
    with open_source("hf://datasets/tests/cats", storage_options=hub.storage_options) as src:
        fp = src.fingerprint()
    assert fp["split"] == "train"
    assert [f[0] for f in fp["files"]] == ["data/train-00000-of-00002.parquet",
                                           "data/train-00001-of-00002.parquet"]
    assert all(f[2].startswith("sha256=") for f in fp["files"])


# -- errors ----------------------------------------------------------------------------------
def test_split_that_does_not_exist(hub):
    with pytest.raises(SourceNotFoundError, match=r"no split 'validation'.*test, train"):
        SlipstreamDataset("hf://datasets/tests/cats", storage_options=hub.storage_options,
                          split="validation")


def test_config_that_does_not_exist(hub_repo):
    with pytest.raises(SourceNotFoundError, match=r"no config 'rgb'.*default, gray"):
        SlipstreamDataset(hub_repo, config="rgb")


def test_several_configs_without_a_default(hub_repo, tmp_path):
    import shutil

    root = tmp_path / "two"
    for name in ("a", "b"):
        shutil.copytree(hub_repo / "data", root / name)
    with pytest.raises(SourceDetectionError, match=r"several configs \(a, b\).*config=NAME"):
        open_source(str(root))


def test_missing_repository_and_revision(hub):
    for url in ("hf://datasets/tests/nope", "hf://datasets/tests/cats@v9"):
        with pytest.raises(SourceNotFoundError, match="no such file"):
            SlipstreamDataset(url, storage_options=hub.storage_options)
        with pytest.raises(SourceNotFoundError):
            SlipstreamDataset(url, storage_options=hub.storage_options, source="huggingface")


def test_wrong_format_under_the_parquet_suffix(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 but not really" * 9)
    with pytest.raises(SourceDetectionError, match=r"train-00000-of-00001.parquet: not a "
                                                   r"readable parquet file"):
        SlipstreamDataset(tmp_path)


def test_empty_dataset(hub, cache_root):
    ds = SlipstreamDataset("hf://datasets/tests/empty", storage_options=hub.storage_options,
                           cache_dir=cache_root)
    assert len(ds) == 0
    with pytest.raises(SampleError, match="holds no samples"):
        ds.build_cache(progress=False)


def test_unsupported_column_is_named(tmp_path):
    from datasets import Dataset, Features, Sequence, Value

    Dataset.from_dict({"x": [[1, 2]], "y": [3]},
                      features=Features({"x": Sequence(Value("int32")), "y": Value("int64")})
                      ).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(SourceDetectionError, match=r"x \(.*\).*columns=\[\.\.\.\]"):
        open_source(str(tmp_path))
    with open_source(str(tmp_path), columns=["y"]) as src:
        assert src.read(0) == {"y": 3}


def test_image_without_bytes(tmp_path):
    """An Image column that only names a file (never embedded) cannot be cached."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features
    from datasets import Image as HFImage

    schema = Features({"image": HFImage()}).arrow_schema
    table = pa.table({"image": [{"bytes": None, "path": "/elsewhere/x.jpg"}]}, schema=schema)
    pq.write_table(table, tmp_path / "train.parquet")
    with open_source(str(tmp_path)) as src, pytest.raises(SampleError, match="no image bytes"):
        src.read(0)


def test_missing_pyarrow_names_the_extra(hub_repo, monkeypatch):
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(MissingDependencyError, match=r"slipstream\[hf\]"):
        open_source(str(hub_repo))


def test_describe_is_plain_and_secret_free(hub):
    opts = {**hub.storage_options, "token": "hf_secret_token_value"}
    with open_source("hf://datasets/tests/cats", storage_options=opts) as src:
        text = json.dumps(src.describe())
    assert "hf_secret_token_value" not in text and hub.endpoint not in text


@pytest.mark.parametrize("url", ["hf://datasets/cifar10", "hf://cifar10",
                                 "hf://datasets/bad name/x"])
@pytest.mark.parametrize("source", [None, "huggingface"])
def test_a_malformed_hub_id_is_a_slipstream_error(url, source):
    """huggingface_hub refuses these ids before any request (HfUriError, ValueError);
    the user gets slipstream's error naming the URL and the expected form."""
    with pytest.raises(SourceDetectionError, match=r"not a Hugging Face Hub dataset path .*"
                                                   r"Expected hf://datasets/ORG/NAME") as info:
        open_source(url, source=source)
    assert str(info.value).startswith(url)
