"""What slipstream needs at run time, and what its install hints promise.

- zarr is the cache's interop format, not a runtime dependency: importing slipstream,
  building a cache, a full epoch and a verification never import it (checked in a fresh
  interpreter, so that no other test's imports count).
- Every extra an error message tells the user to install exists in the package metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

import pytest

from slipstream import MissingDependencyError
from slipstream.location import _EXTRA_FOR_PROTOCOL, Location

_EPOCH_WITHOUT_ZARR = r"""
import json, sys
from pathlib import Path
import slipstream
from slipstream import DecodeRandomResizedCrop, SlipstreamDataset, SlipstreamLoader, ToTorchImage
from slipstream.sample_data import make_image_folder

root = Path(sys.argv[1])
after_import = sorted(m for m in sys.modules if m.split(".")[0] in ("zarr", "numcodecs"))
data = make_image_folder(root / "data", num_classes=2, images_per_class=3, size=(32, 40),
                         num_threads=1)
loader = SlipstreamLoader(SlipstreamDataset(data, cache_dir=root / "cache"), batch_size=4,
                          seed=0, num_threads=1, progress=False,
                          pipelines={"image": [DecodeRandomResizedCrop(16), ToTorchImage()]})
served = sum(len(b["label"]) for b in loader)
assert slipstream.verify_cache(loader.cache.path).ok
after_epoch = sorted(m for m in sys.modules if m.split(".")[0] in ("zarr", "numcodecs"))
print(json.dumps({"served": served, "after_import": after_import, "after_epoch": after_epoch}))
"""


def test_import_and_an_epoch_never_import_zarr(tmp_path):
    assert importlib.util.find_spec("zarr") is not None  # the test extra has it: a real check
    run = subprocess.run([sys.executable, "-c", _EPOCH_WITHOUT_ZARR, str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got == {"served": 6, "after_import": [], "after_epoch": []}


def test_zarr_is_not_a_runtime_requirement():
    requires = importlib.metadata.requires("slipstream") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in runtime if r.lower().startswith(("zarr", "numcodecs"))], runtime
    assert any(r.startswith("zarr") and 'extra == "zarr"' in r for r in requires)


def test_every_install_hint_names_an_extra_that_exists():
    extras = set(importlib.metadata.metadata("slipstream").get_all("Provides-Extra") or [])
    assert set(_EXTRA_FOR_PROTOCOL.values()) <= extras, set(_EXTRA_FOR_PROTOCOL.values()) - extras
    assert {"gcs", "azure", "s3", "hf", "zarr"} <= extras


@pytest.mark.parametrize("url,extra,module", [
    ("gs://bucket/data", "gcs", "gcsfs"),
    ("az://container/data", "azure", "adlfs"),
    ("abfs://container/data", "azure", "adlfs"),
])
def test_a_missing_filesystem_names_its_extra(url, extra, module):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here, so {url} does not fail")
    with pytest.raises(MissingDependencyError, match=rf"pip install 'slipstream\[{extra}\]'"):
        Location.parse(url)


def test_a_protocol_without_an_extra_names_no_extra():
    if importlib.util.find_spec("paramiko") is not None:
        pytest.skip("paramiko is installed here, so sftp:// does not fail")
    with pytest.raises(MissingDependencyError, match="install the package that fsspec asks "
                                                     "for.*paramiko") as info:
        Location.parse("sftp://host/data")
    assert "slipstream[" not in str(info.value)
