"""Bad input at build time: a clear error naming the sample, and no cache published."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from slipstream import SampleError, SlipstreamDataset
from slipstream.sample_data import natural_image

from .helpers import encode


def _sof_with_size(jpeg: bytes, height: int, width: int) -> bytes:
    """Rewrite the frame header (SOF0) of a baseline JPEG to claim another size."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


@pytest.mark.parametrize("name,content,message", [
    ("empty.jpg", b"", "empty"),
    ("notes.jpg", b"this is a text file, not a JPEG", "not an image"),
    ("truncated.png", None, "corrupt or truncated"),
    ("bomb.jpg", "bomb", "30000x30000"),
])
def test_bad_files_are_named_and_nothing_is_published(tmp_path, name, content, message):
    root = tmp_path / "data"
    good = encode(natural_image(np.random.default_rng(0), 40, 48), "JPEG", quality=90)
    (root / "a").mkdir(parents=True)
    (root / "a" / "good.jpg").write_bytes(good)
    if content is None:
        content = encode(natural_image(np.random.default_rng(1), 40, 48), "PNG")[:100]
    elif content == "bomb":
        content = _sof_with_size(good, 30000, 30000)
    (root / "a" / name).write_bytes(content)
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError, match=message) as err:
        ds.build_cache(progress=False)
    assert name in str(err.value)
    assert ds.find_cache() is None
    assert not [p for p in (tmp_path / "cache").glob("*") if p.name != ".tmp"]
    assert not [p for p in (tmp_path / "cache" / ".tmp").glob("*") if p.is_dir()]


def test_non_image_files_in_an_imagefolder_are_skipped(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.jpg").write_bytes(
        encode(natural_image(np.random.default_rng(0), 40, 48), "JPEG", quality=90))
    (root / "a" / "labels.csv").write_text("x,y\n")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)
    assert [cache[i]["path"] for i in range(len(cache))] == ["a/1.jpg"]


def _folder_with_one_good_image(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "good.jpg").write_bytes(
        encode(natural_image(np.random.default_rng(0), 40, 48), "JPEG", quality=90))
    return root


def test_a_broken_symlink_to_an_image_is_named_not_dropped(tmp_path):
    root = _folder_with_one_good_image(tmp_path)
    (root / "a" / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError, match="cannot read image") as err:
        ds.build_cache(progress=False)
    assert "gone.jpg" in str(err.value) and "No such file" in str(err.value)
    assert ds.find_cache() is None


def test_a_symlink_loop_in_an_imagefolder_is_listed_once(tmp_path):
    root = _folder_with_one_good_image(tmp_path)
    (root / "a" / "again").symlink_to(root / "a", target_is_directory=True)
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)
    assert [cache[i]["path"] for i in range(len(cache))] == ["a/good.jpg"]


_BUILD_AS_NOBODY = """
import os, sys
import PIL.Image, PIL.JpegImagePlugin, numpy, json, hashlib  # noqa: F401
from slipstream import SampleError, SlipstreamDataset
ds = SlipstreamDataset(sys.argv[1], cache_dir=sys.argv[2])
# root reads any file: drop to nobody so that permissions apply (after the imports: the
# interpreter's own files may be private to root)
os.setgid(65534)
os.setuid(65534)
try:
    ds.build_cache(progress=False)
except SampleError as exc:
    print("SampleError:", exc)
    sys.exit(3)
"""


def test_an_unreadable_file_is_named_and_nothing_is_published(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.geteuid() == 0:
        # root reads any file: build in a child running as nobody, over a directory
        # nobody can reach (pytest's tmp_path lives under a root-only directory)
        base = Path(tempfile.mkdtemp(prefix="slipstream-unreadable-"))
        base.chmod(0o755)
    else:
        base = tmp_path
    try:
        root = _folder_with_one_good_image(base)
        secret = root / "a" / "secret.jpg"
        secret.write_bytes((root / "a" / "good.jpg").read_bytes())
        secret.chmod(0)
        cache_dir = base / "cache"
        if os.geteuid() == 0:
            cache_dir.mkdir(mode=0o777)
            cache_dir.chmod(0o777)
            done = subprocess.run([sys.executable, "-c", _BUILD_AS_NOBODY, str(root),
                                   str(cache_dir)], capture_output=True, text=True,
                                  timeout=300, cwd="/")
            assert done.returncode == 3, done.stdout + done.stderr
            message = done.stdout
        else:
            with pytest.raises(SampleError) as err:
                SlipstreamDataset(root, cache_dir=cache_dir).build_cache(progress=False)
            message = str(err.value)
        assert "secret.jpg" in message and "Permission denied" in message
        assert SlipstreamDataset(root, cache_dir=cache_dir).find_cache() is None
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


# -- inputs a build takes in stride (issue 17, item 8) -----------------------------------------
def _jpeg(seed: int = 0) -> bytes:
    return encode(natural_image(np.random.default_rng(seed), 40, 48), "JPEG", quality=90)


def test_a_file_name_that_is_not_utf8_is_built_and_named_printably(tmp_path, capsys):
    import os

    from slipstream.cli import main as cli_main

    root = _folder_with_one_good_image(tmp_path)
    with open(os.path.join(os.fsencode(root / "a"), b"caf\xe9.jpg"), "wb") as f:
        f.write(_jpeg(1))
    cache = SlipstreamDataset(root, cache_dir=tmp_path / "cache").build_cache(progress=False)
    assert sorted(cache[i]["path"] for i in range(len(cache))) == ["a/caf\\xe9.jpg",
                                                                    "a/good.jpg"]
    assert cli_main(["build", str(root), "--cache-dir", str(tmp_path / "cache2"), "-q"]) == 0
    assert "2 samples" in capsys.readouterr().out


def test_an_empty_class_folder_is_refused_by_name_or_keeps_its_label(tmp_path):
    from slipstream.errors import SourceNotFoundError

    from .helpers import folder_expectation

    root = tmp_path / "data"
    for cls, n in (("ant", 1), ("bee", 0), ("cat", 2)):
        (root / cls).mkdir(parents=True)
        for k in range(n):
            (root / cls / f"{k}.jpg").write_bytes(_jpeg(k))
    (root / "bee" / "README.txt").write_text("no images here")
    with pytest.raises(SourceNotFoundError, match="'bee' hold no image file"):
        SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache", allow_empty_classes=True)
    assert ds.source.classes == ("ant", "bee", "cat")
    cache = ds.build_cache(progress=False)
    got = [(cache[i]["path"], cache[i]["label"]) for i in range(len(cache))]
    # torchvision's ImageFolder(allow_empty=True): classes are every folder, sorted
    want = [(s["path"], s["label"]) for s in folder_expectation(root)
            if s["path"].endswith(".jpg")]
    assert got == want == [("ant/0.jpg", 0), ("cat/0.jpg", 2), ("cat/1.jpg", 2)]


def test_a_build_with_on_error_skip_leaves_bad_samples_out_and_says_so(tmp_path, caplog):
    import logging
    import shutil as sh

    from .hostile import HOSTILE_DIR

    root = _folder_with_one_good_image(tmp_path)
    (root / "a" / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")  # the read fails
    sh.copy(HOSTILE_DIR / "lossless_rgb_48x40.jpg", root / "a" / "lossless.jpg")  # the probe
    (root / "a" / "more.jpg").write_bytes(_jpeg(2))
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(SampleError):
        ds.build_cache(progress=False)
    with caplog.at_level(logging.WARNING, logger="slipstream.build"):
        cache = ds.build_cache(progress=False, on_error="skip")
    assert [cache[i]["path"] for i in range(len(cache))] == ["a/good.jpg", "a/more.jpg"]
    assert [cache[i]["label"] for i in range(len(cache))] == [0, 0]
    left_out = {e["index"]: e["error"] for e in cache.skipped}
    assert sorted(left_out) == [0, 2]  # a/gone.jpg, a/lossless.jpg in the source's order
    assert "gone.jpg" in left_out[0] and "cannot read image" in left_out[0]
    assert "lossless" in left_out[2]
    assert "left out 2 of 4 samples" in caplog.text
    assert cache.verify().ok
    # a partial cache has a key of its own: a build that must not skip never finds it
    assert cache.key != ds.cache_key() and ds.find_cache() is None
    assert ds.build_cache(progress=False, on_error="skip").path == cache.path
    with pytest.raises(SampleError):
        ds.build_cache(progress=False)
    with pytest.raises(ValueError, match="on_error must be one of"):
        ds.build_cache(progress=False, on_error="ignore")


def test_a_cache_root_that_is_a_file_is_one_line(tmp_path, capsys):
    from slipstream.cli import main as cli_main
    from slipstream.errors import CacheRootError

    root = _folder_with_one_good_image(tmp_path)
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(CacheRootError, match="is not a directory"):
        SlipstreamDataset(root, cache_dir=tmp_path / "not-a-dir").build_cache(progress=False)
    assert cli_main(["build", str(root), "--cache-dir", str(tmp_path / "not-a-dir" / "sub"),
                     "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not-a-dir is not a directory" in err


_BUILD_INTO_READ_ONLY = """
import os, sys
import PIL.Image, PIL.JpegImagePlugin, numpy, json, hashlib  # noqa: F401
from slipstream.cli import main
os.setgid(65534)
os.setuid(65534)
sys.exit(main(["build", sys.argv[1], "--cache-dir", sys.argv[2], "-q"]))
"""


def test_a_read_only_cache_root_is_one_line(tmp_path):
    import os
    import shutil as sh
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0:
        from slipstream.errors import CacheRootError

        root = _folder_with_one_good_image(tmp_path)
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(CacheRootError, match="is not writable by this user"):
            SlipstreamDataset(root, cache_dir=tmp_path / "ro").build_cache(progress=False)
        return
    # root writes anywhere: build as nobody into a directory only root may write
    base = Path(tempfile.mkdtemp(prefix="slipstream-ro-"))
    try:
        base.chmod(0o755)
        root = _folder_with_one_good_image(base)
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (base / "ro").mkdir(mode=0o755)
        done = subprocess.run([sys.executable, "-c", _BUILD_INTO_READ_ONLY, str(root),
                               str(base / "ro")], capture_output=True, text=True, timeout=300,
                              cwd="/")
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "ro is not writable by this user" in done.stderr
    finally:
        sh.rmtree(base, ignore_errors=True)


def test_a_loader_builds_with_the_datasets_on_error(tmp_path):
    """``SlipstreamDataset(url, on_error="skip")``: the loader's first epoch builds the
    cache with that policy, and a second loader finds the same (partial) cache."""
    import shutil as sh

    from slipstream import DecodeCenterCrop, SlipstreamLoader

    from .hostile import HOSTILE_DIR

    root = _folder_with_one_good_image(tmp_path)
    sh.copy(HOSTILE_DIR / "12bit_gray_48x40.jpg", root / "a" / "twelve.jpg")
    ds = SlipstreamDataset(root, cache_dir=tmp_path / "cache", on_error="skip")
    paths = []
    for _ in range(2):
        with SlipstreamLoader(ds, batch_size=4, shuffle=False, seed=0, num_threads=1,
                              pipelines={"image": [DecodeCenterCrop(16)]},
                              progress=False) as loader:
            paths.append([p for b in loader for p in b["path"]])
            assert [e["index"] for e in loader.cache.skipped] == [1]
    assert paths == [["a/good.jpg"], ["a/good.jpg"]]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.name != ".tmp"]) == 1
