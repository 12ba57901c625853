"""Content keys change exactly when the data, the fields or the format change."""

from __future__ import annotations

import os
import shutil

import pytest

from slipstream import SlipstreamDataset
from slipstream.cache import content_key
from slipstream.cache import layout as cache_layout
from slipstream.schema import Field, FieldKind


def key_of(path) -> str:
    return SlipstreamDataset(path, source="imagefolder").cache_key()


def test_key_is_stable_when_nothing_changed(writable_folder, tmp_path):
    k = key_of(writable_folder)
    assert key_of(writable_folder) == k
    # a copy elsewhere with the same files, sizes and mtimes is the same data
    copy = tmp_path / "copy"
    shutil.copytree(writable_folder, copy, copy_function=shutil.copy2)
    assert key_of(copy) == k


def test_key_changes_when_a_file_changes(writable_folder):
    k = key_of(writable_folder)
    victim = next(writable_folder.rglob("*.jpg"))
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF  # same size, different content, written later
    st = victim.stat()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert key_of(writable_folder) != k


def test_key_changes_when_a_file_is_added_or_removed(writable_folder):
    k0 = key_of(writable_folder)
    src = next(writable_folder.rglob("*.jpg"))
    added = src.parent / "zz_new.jpg"
    shutil.copy2(src, added)
    k1 = key_of(writable_folder)
    assert k1 != k0
    added.unlink()
    assert key_of(writable_folder) == k0
    src.unlink()
    assert key_of(writable_folder) not in (k0, k1)


def test_key_ignores_non_image_files(writable_folder):
    k = key_of(writable_folder)
    (writable_folder / "class_000" / "README.txt").write_text("notes")
    assert key_of(writable_folder) == k


def test_key_changes_with_format_version_fields_and_image_format():
    fields = [Field("image", FieldKind.IMAGE), Field("label", FieldKind.INT)]
    base = content_key("imagefolder", {"files": [["a/1.jpg", "10:1"]]}, fields, "jpeg")
    assert base == content_key("imagefolder", {"files": [["a/1.jpg", "10:1"]]}, fields, "jpeg")
    assert base != content_key("imagefolder", {"files": [["a/1.jpg", "10:1"]]}, fields, "jpeg",
                               format_version=cache_layout.FORMAT_VERSION + 1)
    assert base != content_key("imagefolder", {"files": [["a/1.jpg", "10:1"]]}, fields[:1], "jpeg")
    assert base != content_key("imagefolder", {"files": [["a/1.jpg", "10:1"]]}, fields, "yuv420")
    assert base != content_key("tar", {"files": [["a/1.jpg", "10:1"]]}, fields, "jpeg")


def test_format_version_bump_gives_a_new_cache(writable_folder, cache_root, monkeypatch):
    first = SlipstreamDataset(writable_folder, cache_dir=cache_root).build_cache(progress=False)
    monkeypatch.setattr(cache_layout, "FORMAT_VERSION", cache_layout.FORMAT_VERSION + 1)
    assert SlipstreamDataset(writable_folder, cache_dir=cache_root).cache_key() != first.key


def test_fingerprint_must_be_json():
    with pytest.raises(TypeError, match="not plain JSON"):
        content_key("x", {"t": object()}, [], "jpeg")


def test_field_order_does_not_matter():
    a, b = Field("image", FieldKind.IMAGE), Field("label", FieldKind.INT)
    assert content_key("x", [], [a, b], "jpeg") == content_key("x", [], [b, a], "jpeg")


@pytest.mark.parametrize("bad", ["", "_indexes", "a/b", "..", "zarr.json", ".hidden"])
def test_field_names_that_would_break_the_layout_are_refused(bad):
    with pytest.raises(ValueError, match="not allowed"):
        Field(bad, FieldKind.INT)
