"""FFCV source: ``.beton`` files written by FFCV's own writer, read locally and from S3.

The fixtures in ``tests/fixtures/ffcv`` were written by ``ffcv.writer.DatasetWriter``
(``tests/fixtures/make_ffcv_fixtures.py``, run in a separate environment because FFCV
does not install beside this project's torch) and gzip-compressed for the repository:
``jpg.beton`` (JPEG images + int, float, bytes, ndarray and JSON fields), ``raw.beton``
(raw pixels) and ``mixed.beton`` (``write_mode='proportion'``: some JPEG, some raw).
``expected.json`` says what was written and what FFCV's own ``Reader`` reports about
each sample; ``images/`` holds the source images.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from slipstream import (
    RawImage,
    SampleError,
    SlipstreamDataset,
    SourceDetectionError,
    SourceNotFoundError,
)
from slipstream.cache import Codec
from slipstream.sources import open_source
from slipstream.testing import SourceTests

from ..source_checks import assert_center_crops_match, center_crops, column, decoded_full, pil_rgb

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ffcv"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
KINDS = ("jpg", "raw", "mixed")
# JPEG (quality 90) of these smooth gradients against their source pixels (measured:
# mean <= 1.1, max 9); a red/blue swap would give a mean error above 30
JPEG_MEAN_ERR, JPEG_MAX_ERR = 2.0, 16


@pytest.fixture(scope="module")
def betons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture files, decompressed: ``{kind: path}``."""
    out = tmp_path_factory.mktemp("ffcv")
    paths = {}
    for kind in KINDS:
        path = out / f"{kind}.beton"
        with gzip.open(FIXTURES / f"{kind}.beton.gz", "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        assert path.stat().st_size == EXPECTED["files"][f"{kind}.beton"]["size"]
        paths[kind] = path
    return paths


def source_pixels(i: int) -> np.ndarray:
    with Image.open(FIXTURES / "images" / f"{i}.png") as im:
        return np.asarray(im)


def expected_samples(kind: str, beton: Path) -> list[dict[str, Any]]:
    """Every sample as the source must return it, from expected.json: JPEG images are the
    bytes FFCV's Reader locates (``data_ptr``, ``stored_size``), raw ones the source pixels."""
    raw = beton.read_bytes()
    spec = EXPECTED["files"][f"{kind}.beton"]
    out = []
    for s in spec["samples"]:
        img = s["image"]
        sample: dict[str, Any] = {
            "image": (raw[img["data_ptr"]:img["data_ptr"] + img["stored_size"]]
                      if img["mode"] == "jpg" else RawImage(source_pixels(s["index"]))),
            "label": s["label"],
        }
        if "value" in spec["fields"]:
            sample["value"] = s["value"]
        if "blob" in spec["fields"]:
            sample["blob"] = bytes.fromhex(s["blob"])
            sample["array"] = np.asarray(s["array"], np.float32).tobytes()
            sample["meta"] = json.dumps(s["meta"])  # FFCV's JSONField stores json.dumps()
        out.append(sample)
    return out


def upload(s3_server, bucket: str, path: Path, key: str) -> str:
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return f"s3://{bucket}/{key}"


@pytest.mark.parametrize("kind", KINDS)
class TestFFCVConformance(SourceTests):
    source_name = "ffcv"

    @pytest.fixture
    def source_url(self, betons, kind) -> str:
        return str(betons[kind])

    @pytest.fixture
    def expected_samples(self, betons, kind) -> list[dict[str, Any]]:
        return expected_samples(kind, betons[kind])


@pytest.mark.parametrize("kind", ["mixed"])  # both image modes; jpg.beton's fields: locally
class TestFFCVS3Conformance(SourceTests):
    source_name = "ffcv"

    @pytest.fixture
    def source_url(self, betons, kind, s3_server, s3_bucket) -> str:
        return upload(s3_server, s3_bucket, betons[kind], f"imagenet/{kind}.ffcv")

    @pytest.fixture
    def storage_options(self, s3_server) -> dict:
        return s3_server.storage_options

    @pytest.fixture
    def expected_samples(self, betons, kind) -> list[dict[str, Any]]:
        return expected_samples(kind, betons[kind])


def test_the_fixtures_cover_every_write_mode():
    modes = {k: {s["image"]["mode"] for s in EXPECTED["files"][f"{k}.beton"]["samples"]}
             for k in KINDS}
    assert modes == {"jpg": {"jpg"}, "raw": {"raw"}, "mixed": {"jpg", "raw"}}
    assert set(EXPECTED["files"]["jpg.beton"]["fields"].values()) == {
        "RGBImageField", "IntField", "FloatField", "BytesField", "NDArrayField", "JSONField"}


def test_fields_and_description(betons):
    with open_source(str(betons["jpg"])) as src:
        assert [(f.name, f.kind.value) for f in src.fields] == [
            ("image", "image"), ("label", "int"), ("value", "float"), ("blob", "bytes"),
            ("array", "bytes"), ("meta", "str")]
        info = src.describe()["ffcv_fields"]
        assert info["array"] == {"type": "NDArrayField", "dtype": "<f4", "shape": [2, 3]}
        assert info["image"] == {"type": "RGBImageField"}
        got = np.frombuffer(src.read(2)["array"], info["array"]["dtype"]).reshape(2, 3)
        assert got.tolist() == EXPECTED["files"]["jpg.beton"]["samples"][2]["array"]


def _check_end_to_end(ds: SlipstreamDataset, kind: str) -> None:
    spec = EXPECTED["files"][f"{kind}.beton"]["samples"]
    got, images = decoded_full(ds, ["image"])
    assert column(got, "label") == [s["label"] for s in spec]
    stored = [ds.source.read(i)["image"] for i in range(len(ds))]
    for i, s in enumerate(spec):
        src = source_pixels(i)
        out = images["image"][i]
        assert out.shape == (s["image"]["height"], s["image"]["width"], 3)
        if s["image"]["mode"] == "raw":
            assert np.array_equal(out, src), i  # raw pixels: unchanged
        else:
            assert np.array_equal(out, pil_rgb(stored[i])), i  # JPEG: exactly as Pillow
            err = np.abs(out.astype(np.int16) - src)
            assert err.mean() <= JPEG_MEAN_ERR and err.max() <= JPEG_MAX_ERR, (i, err.max())
            swapped = np.abs(out.astype(np.int16) - src[..., ::-1])
            assert swapped.mean() > 10 * JPEG_MEAN_ERR, "channel order"
    _, crops, ratio = center_crops(ds, "image", 40)
    refs = [source_pixels(i) if s["image"]["mode"] == "raw" else pil_rgb(stored[i])
            for i, s in enumerate(spec)]
    assert_center_crops_match(crops, refs, 40, ratio)


@pytest.mark.parametrize("kind", KINDS)
def test_end_to_end_local(betons, kind, cache_root):
    ds = SlipstreamDataset(local_dir=str(betons[kind]), cache_dir=cache_root)
    assert ds.source.name == "ffcv"
    _check_end_to_end(ds, kind)
    codecs = set(ds.build_cache(progress=False).column("image").codecs.tolist())
    modes = {s["image"]["mode"] for s in EXPECTED["files"][f"{kind}.beton"]["samples"]}
    assert codecs == {Codec.JPEG if m == "jpg" else Codec.RAW_RGB for m in modes}


def test_end_to_end_s3(betons, s3_server, s3_bucket, cache_root):
    url = upload(s3_server, s3_bucket, betons["mixed"], "imagenet.ffcv")
    ds = SlipstreamDataset(url, cache_dir=cache_root, storage_options=s3_server.storage_options)
    assert ds.source.name == "ffcv"
    _check_end_to_end(ds, "mixed")


def test_fingerprint_follows_the_file(betons, tmp_path):
    copy = tmp_path / "x.beton"
    shutil.copy(betons["raw"], copy)
    with open_source(str(copy)) as src:
        before = src.fingerprint()
    with open(copy, "ab") as f:
        f.write(b"\0" * 24)  # one more (empty) allocation entry
    with open_source(str(copy)) as src:
        assert src.fingerprint() != before


# -- errors ---------------------------------------------------------------------------------
def test_missing_file(tmp_path, s3_server, s3_bucket):
    with pytest.raises(SourceNotFoundError, match="no such file"):
        SlipstreamDataset(tmp_path / "nope.beton")
    with pytest.raises(SourceNotFoundError, match="nope.beton"):
        SlipstreamDataset(tmp_path / "nope.beton", source="ffcv")
    with pytest.raises(SourceNotFoundError, match="not found"):
        SlipstreamDataset(f"s3://{s3_bucket}/nope.beton", source="ffcv",
                          storage_options=s3_server.storage_options)
    with pytest.raises(SourceNotFoundError):
        SlipstreamDataset(f"s3://{s3_bucket}-missing/x.beton",
                          storage_options=s3_server.storage_options)


def test_missing_credentials(betons, s3_server, s3_bucket, monkeypatch, tmp_path):
    upload(s3_server, s3_bucket, betons["raw"], "d/raw.beton")
    for var, value in {"AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                       "AWS_CONFIG_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(var, value)
    opts = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"}}
    for forced in (None, "ffcv"):
        with pytest.raises(SourceNotFoundError, match="no usable credentials"):
            SlipstreamDataset(f"s3://{s3_bucket}/d/raw.beton", storage_options=opts,
                              source=forced)


@pytest.mark.parametrize("cut", [10, 600, 3000, 2_200_000, -10])
def test_truncated_file_is_named(betons, tmp_path, cut):
    data = betons["jpg"].read_bytes()
    bad = tmp_path / "cut.beton"
    bad.write_bytes(data[:cut])
    with pytest.raises((SourceDetectionError, SampleError), match=str(bad)), \
            open_source(str(bad)) as src:
        for i in range(len(src)):
            src.read(i)


@pytest.mark.parametrize("content", [b"", b"not an ffcv file at all, just text\n" * 40,
                                     b"\x89PNG\r\n\x1a\n" + bytes(2000)])
def test_foreign_file_under_the_suffix(tmp_path, content):
    bad = tmp_path / "foreign.beton"
    bad.write_bytes(content)
    with pytest.raises(SourceDetectionError, match=r"foreign\.beton: not a readable FFCV"):
        SlipstreamDataset(bad)
