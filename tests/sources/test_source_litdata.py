"""LitData source: datasets written by litdata's own ``optimize``, read locally and from S3.

The fixture in ``tests/fixtures/litdata/dataset`` was written by an older
``litdata.optimize`` (``tests/fixtures/make_litdata_fixtures.py``; 10 items in chunks of
4) from JPEG bytes, an RGB and a grayscale PIL image, an int, a float and a str per item;
``expected/`` holds those values, saved independently of litdata. The ``fresh`` tests write
datasets with the litdata that ``scripts/setup.sh test`` pins, in every layout it writes
(Arrow IPC section, classic pytree items; uncompressed, framed, per-item and whole-file
zstd), and compare every value with the generator's own.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
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

FIXTURE = Path(__file__).parents[1] / "fixtures" / "litdata"
DATASET = FIXTURE / "dataset"
IMAGE_FIELDS = ("image", "rgb", "gray")


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def expected_samples() -> list[dict[str, Any]]:
    """The items as the source must return them: JPEG bytes as stored, the RGB PIL image
    as raw pixels, the grayscale one as a lossless PNG."""
    exp = FIXTURE / "expected"
    values = json.loads((exp / "expected.json").read_text())
    return [{"image": (exp / f"{i}.jpg").read_bytes(),
             "rgb": RawImage(_pixels(exp / f"{i}-rgb.png")),
             "gray": _png(_pixels(exp / f"{i}-gray.png")),
             **v} for i, v in enumerate(values)]


def upload(s3_server, bucket: str, root: Path, prefix: str) -> str:
    client = s3_server.client()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(root).as_posix()}",
                              Body=p.read_bytes())
    return f"s3://{bucket}/{prefix}"


class TestLitDataConformance(SourceTests):
    source_name = "litdata"

    @pytest.fixture
    def source_url(self) -> str:
        return str(DATASET)

    @pytest.fixture
    def expected_samples(self) -> list[dict[str, Any]]:
        return expected_samples()


class TestLitDataS3Conformance(SourceTests):
    source_name = "litdata"

    @pytest.fixture
    def source_url(self, s3_server, s3_bucket) -> str:
        return upload(s3_server, s3_bucket, DATASET, "litdata/train")

    @pytest.fixture
    def storage_options(self, s3_server) -> dict:
        return s3_server.storage_options

    @pytest.fixture
    def expected_samples(self) -> list[dict[str, Any]]:
        return expected_samples()


def _check_end_to_end(ds: SlipstreamDataset) -> None:
    want = expected_samples()
    got, images = decoded_full(ds, IMAGE_FIELDS)
    assert column(got, "label") == [w["label"] for w in want]
    assert column(got, "score") == [w["score"] for w in want]
    assert column(got, "name") == [w["name"] for w in want]
    for i, w in enumerate(want):
        assert np.array_equal(images["image"][i], pil_rgb(w["image"])), i  # JPEG: exact
        assert np.array_equal(images["rgb"][i], w["rgb"].pixels), i  # raw pixels: unchanged
        gray = _pixels(FIXTURE / "expected" / f"{i}-gray.png")
        assert np.array_equal(images["gray"][i], np.repeat(gray[..., None], 3, 2)), i
    _, crops, ratio = center_crops(ds, "rgb", 32)
    assert_center_crops_match(crops, [w["rgb"].pixels for w in want], 32, ratio)
    _, crops, ratio = center_crops(ds, "image", 32)
    assert_center_crops_match(crops, [pil_rgb(w["image"]) for w in want], 32, ratio)


def test_end_to_end_local(cache_root):
    ds = SlipstreamDataset(str(DATASET), cache_dir=cache_root)
    assert ds.source.name == "litdata"
    _check_end_to_end(ds)
    cache = ds.build_cache(progress=False)
    assert set(cache.column("rgb").codecs.tolist()) == {Codec.RAW_RGB}
    assert set(cache.column("image").codecs.tolist()) == {Codec.JPEG}


def test_end_to_end_s3(s3_server, s3_bucket, cache_root):
    url = upload(s3_server, s3_bucket, DATASET, "litdata/train")
    ds = SlipstreamDataset(url + "/", cache_dir=cache_root,
                           storage_options=s3_server.storage_options)
    assert ds.source.name == "litdata"
    _check_end_to_end(ds)
    assert "testing-secret" not in json.dumps(ds.source.describe())


def test_profile_and_endpoint_url_options(s3_server, s3_bucket, monkeypatch, tmp_path):
    """Credentials from a named profile, the endpoint as a top-level option."""
    url = upload(s3_server, s3_bucket, DATASET, "by-profile")
    creds = tmp_path / "credentials"
    creds.write_text("[slipstream-test]\naws_access_key_id = testing-key\n"
                     "aws_secret_access_key = testing-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    opts = {"profile": "slipstream-test", "endpoint_url": s3_server.endpoint_url}
    with open_source(url, storage_options=opts) as src:
        assert src.name == "litdata" and len(src) == 10
        assert src.read(9)["name"] == "item-09"


def test_fields_and_kinds():
    with open_source(str(DATASET)) as src:
        assert [(f.name, f.kind.value) for f in src.fields] == [
            ("image", "image"), ("rgb", "image"), ("gray", "image"), ("label", "int"),
            ("score", "float"), ("name", "str")]
        assert src.describe()["leaf_formats"]["image"] == "bytes"
        assert src.sample_name(5).endswith("chunk-0-1.bin[1]")


def test_image_fields_option_overrides_sniffing():
    with open_source(str(DATASET), image_fields=[]) as src:
        assert {f.name: f.kind.value for f in src.fields}["image"] == "bytes"
    with pytest.raises(ValueError, match="no such 'bytes' leaves"):
        open_source(str(DATASET), image_fields=["label"])


def test_fingerprint_follows_the_chunks(tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(DATASET, copy)
    with open_source(str(copy)) as src:
        before = src.fingerprint()
    chunk = copy / "chunk-0-2.bin"
    chunk.write_bytes(chunk.read_bytes() + b"\0")
    with open_source(str(copy)) as src:
        assert src.fingerprint() != before


# -- errors ---------------------------------------------------------------------------------
def test_missing_directory(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such file"):
        SlipstreamDataset(tmp_path / "nope")
    with pytest.raises(SourceNotFoundError, match="index.json"):
        SlipstreamDataset(tmp_path, source="litdata")


def test_missing_bucket(s3_server, s3_bucket):
    opts = s3_server.storage_options
    with pytest.raises(SourceNotFoundError):
        SlipstreamDataset(f"s3://{s3_bucket}-missing/ds/", storage_options=opts)
    with pytest.raises(SourceNotFoundError, match="no index.json"):
        SlipstreamDataset(f"s3://{s3_bucket}-missing/ds/", storage_options=opts,
                          source="litdata")


def test_missing_credentials(s3_server, s3_bucket, monkeypatch, tmp_path):
    upload(s3_server, s3_bucket, DATASET, "ds")
    for var, value in {"AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                       "AWS_CONFIG_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(var, value)  # no credentials anywhere, and no metadata service
    opts = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url,
                              "region_name": "us-east-1"}}
    for forced in (None, "litdata"):
        with pytest.raises(SourceNotFoundError, match="no usable credentials") as err:
            SlipstreamDataset(f"s3://{s3_bucket}/ds/", storage_options=opts, source=forced)
        assert f"s3://{s3_bucket}/ds/" in str(err.value)


def test_missing_chunk(tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(DATASET, copy)
    (copy / "chunk-0-1.bin").unlink()
    with pytest.raises(SourceNotFoundError, match="chunk-0-1.bin"):
        open_source(str(copy))


def test_wrong_format_index(tmp_path):
    (tmp_path / "index.json").write_text("this is not json")
    with pytest.raises(SourceDetectionError, match=r"index.json: not a LitData index"):
        SlipstreamDataset(tmp_path)


def test_truncated_chunk(tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(DATASET, copy)
    chunk = copy / "chunk-0-1.bin"
    chunk.write_bytes(chunk.read_bytes()[:2000])
    with open_source(str(copy)) as src:
        src.read(0)  # other chunks are fine
        with pytest.raises(SampleError, match="chunk-0-1.bin"):
            for i in range(4, 8):
                src.read(i)


def test_empty_dataset(tmp_path):
    index = json.loads((DATASET / "index.json").read_text())
    index["chunks"] = []
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(SampleError, match="holds no samples"):
        SlipstreamDataset(tmp_path)


@pytest.mark.parametrize("config,match", [
    ({"compression": "lz4"}, r"compression='lz4'; slipstream reads zstd-compressed or "
                             r"uncompressed chunks"),
    ({"encryption": "fernet"}, "encryption='fernet', which slipstream does not read"),
    ({"compression": "zstd", "compression_level": "frame"}, "compression_level='frame'"),
])
def test_unreadable_compression_and_encryption_are_refused(tmp_path, config, match):
    index = json.loads((DATASET / "index.json").read_text())
    index["config"].update(config)
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(SourceDetectionError, match=match):
        SlipstreamDataset(tmp_path)


# -- fresh datasets from the pinned litdata, in every layout it writes -------------------------
# VARIANT:COMPRESSION (tests/fixtures/make_litdata_fixtures.py) -> how litdata lays it out
FRESH = {
    "jpeg:none": "arrow", "jpeg:zstd": "arrow", "mixed:none": "arrow", "mixed:zstd": "arrow",
    "text:zstd": "arrow",
    "numpy:none": "classic", "numpy:zstd": "framed", "numpy:zstd-item": "classic",
    "pil:none": "classic", "pil:zstd": "framed", "pil:zstd-file": "file",
}
GENERATOR = Path(__file__).parents[1] / "fixtures" / "make_litdata_fixtures.py"


def _generator():
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        import make_litdata_fixtures
    finally:
        sys.path.remove(str(GENERATOR.parent))
    return make_litdata_fixtures


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every variant written by ``litdata.optimize`` now, in one subprocess."""
    assert importlib.util.find_spec("litdata") is not None, (
        "litdata is not installed: run scripts/setup.sh test (it installs the pinned "
        "litdata without torchvision)")
    out = tmp_path_factory.mktemp("litdata-fresh")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # litdata needs its bars
    run = subprocess.run([sys.executable, str(GENERATOR), str(out), *FRESH], capture_output=True,
                         text=True, timeout=600, check=False, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _layout(dataset: Path) -> str:
    """How litdata laid out the first chunk, read from its bytes (the test's premise)."""
    chunk = sorted(dataset.glob("chunk-*.bin"))[0]
    data = chunk.read_bytes()
    if chunk.name.endswith(".zstd.bin"):
        return "file"
    if data.startswith(b"LDFZ01\0\0"):
        return "framed"
    return "arrow" if data.endswith(b"LDARW01\0") and b"ARROW1" in data else "classic"


def _expected(gen, variant: str, i: int) -> dict[str, Any]:
    """Item ``i`` as the source must return it, from the generator's own values."""
    item = gen.variant_item(variant, i)
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, list):
            out[key] = json.dumps(value).encode()  # a nested leaf in an Arrow section: JSON
        elif isinstance(value, np.ndarray):
            out[key] = value.tobytes()  # a numpy leaf: its raw bytes, as litdata stored them
        elif isinstance(value, Image.Image):
            pixels = np.asarray(value)
            out[key] = RawImage(pixels) if value.mode == "RGB" else _png(pixels)
        else:
            out[key] = value
    return out


def _assert_same(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert set(got) == set(want), where
    for key, w in want.items():
        if isinstance(w, RawImage):
            assert np.array_equal(got[key].pixels, w.pixels), (where, key)
        else:
            assert got[key] == w and type(got[key]) is type(w), (where, key, got[key], w)


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(FRESH))
def test_fresh_dataset_reads_back_every_value(fresh, spec):
    gen, (variant, how) = _generator(), spec.split(":")
    dataset = fresh / f"{variant}-{how}"
    assert _layout(dataset) == FRESH[spec]
    if spec == "text:zstd":  # litdata compressed the Arrow IPC buffers themselves
        assert json.loads((dataset / "index.json").read_text())["config"]["ipc_compression"] == "zstd"
    with open_source(str(dataset)) as src:
        assert src.name == "litdata" and len(src) == gen.NUM_ITEMS
        kinds = {f.name: f.kind.value for f in src.fields}
        assert kinds.get("image", "image") == "image" and kinds.get("label") == "int"
        for i in range(len(src)):
            _assert_same(src.read(i), _expected(gen, variant, i), f"{spec}[{i}]")
        streamed = dict(src.iter_samples(num_threads=2))
        for i in range(len(src)):
            _assert_same(streamed[i], _expected(gen, variant, i), f"{spec} streamed [{i}]")


class TestFreshArrowConformance(SourceTests):
    """The conformance kit on a dataset whose items are in an Arrow section."""

    source_name = "litdata"

    @pytest.fixture
    def source_url(self, fresh) -> str:
        return str(fresh / "mixed-zstd")

    @pytest.fixture
    def expected_samples(self) -> list[dict[str, Any]]:
        gen = _generator()
        return [_expected(gen, "mixed", i) for i in range(gen.NUM_ITEMS)]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["jpeg:zstd", "numpy:zstd", "pil:zstd-file"])
def test_fresh_dataset_end_to_end_local_and_s3(fresh, spec, s3_server, s3_bucket, cache_root):
    """Through the cache and the loader: labels as written, JPEGs decoded as Pillow does."""
    gen, (variant, how) = _generator(), spec.split(":")
    dataset = fresh / f"{variant}-{how}"
    want = [_expected(gen, variant, i) for i in range(gen.NUM_ITEMS)]
    url = upload(s3_server, s3_bucket, dataset, f"fresh/{variant}-{how}")
    for where, opts in ((str(dataset), None), (url + "/", s3_server.storage_options)):
        ds = SlipstreamDataset(where, cache_dir=cache_root / where.replace("/", "_"),
                               storage_options=opts)
        assert ds.source.name == "litdata"
        got, images = decoded_full(ds, ["image"])
        assert column(got, "label") == [w["label"] for w in want]
        for i, w in enumerate(want):
            assert np.array_equal(images["image"][i], pil_rgb(w["image"])), (where, i)


def test_truncated_arrow_chunk_names_the_chunk(fresh, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(fresh / "jpeg-none", copy)
    chunk = copy / "chunk-0-1.bin"
    chunk.write_bytes(chunk.read_bytes()[:-40])
    with open_source(str(copy)) as src:
        assert src.read(0)["label"] == 0  # other chunks are fine
        with pytest.raises(SampleError, match=r"chunk-0-1.bin: .*(Arrow section|LDARW01)"):
            src.read(5)


def test_corrupt_zstd_frame_names_the_chunk(fresh, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(fresh / "numpy-zstd", copy)
    chunk = copy / "chunk-0-2.bin"
    data = bytearray(chunk.read_bytes())
    data[-20:] = bytes(20)  # zero the end of the last zstd frame
    chunk.write_bytes(bytes(data))
    with open_source(str(copy)) as src:
        assert src.read(0)["label"] == 0
        with pytest.raises(SampleError, match=r"chunk-0-2.bin: its zstd data does not "
                                              r"decompress"):
            src.read(9)
