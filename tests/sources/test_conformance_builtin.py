"""The built-in sources pass the same conformance kit a plugin author uses."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from slipstream.sample_data import make_image_folder
from slipstream.testing import SourceTests


@pytest.fixture(scope="module")
def conformance_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder") / "d"
    return make_image_folder(root, num_classes=3, images_per_class=4)


@pytest.fixture(scope="module")
def tar_archive(conformance_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uncompressed archive with a top-level folder, as ``tar -cf d.tar d/`` makes."""
    archive = tmp_path_factory.mktemp("tar") / "d.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(conformance_folder, arcname="d")
    return archive


@pytest.fixture(scope="module")
def tar_gz_archive(conformance_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gzip-compressed archive whose members start at the class folders."""
    archive = tmp_path_factory.mktemp("targz") / "d.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for class_dir in sorted(conformance_folder.iterdir()):
            tf.add(class_dir, arcname=class_dir.name)
    return archive


def _expected_from_disk(root: Path) -> list[dict[str, Any]]:
    """ImageFolder's samples worked out from the files: sorted classes, then sorted names."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            samples.append({"image": f.read_bytes(), "label": label, "path": f"{name}/{f.name}"})
    return samples


class TestImageFolderConformance(SourceTests):
    source_name = "imagefolder"

    @pytest.fixture
    def source_url(self, conformance_folder: Path) -> str:
        return str(conformance_folder)

    @pytest.fixture
    def expected_samples(self, conformance_folder: Path) -> list[dict[str, Any]]:
        return _expected_from_disk(conformance_folder)


class TestTarConformance(SourceTests):
    """An uncompressed archive with a top-level folder (``tar -cf x.tar d/``)."""

    source_name = "tar"

    @pytest.fixture
    def source_url(self, tar_archive: Path) -> str:
        return str(tar_archive)

    @pytest.fixture
    def expected_samples(self, conformance_folder: Path) -> list[dict[str, Any]]:
        return _expected_from_disk(conformance_folder)


class TestTarGzConformance(SourceTests):
    """A gzip-compressed archive whose members start at the class folders."""

    source_name = "tar"

    @pytest.fixture
    def source_url(self, tar_gz_archive: Path) -> str:
        return str(tar_gz_archive)

    @pytest.fixture
    def expected_samples(self, conformance_folder: Path) -> list[dict[str, Any]]:
        return _expected_from_disk(conformance_folder)
