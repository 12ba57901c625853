"""docs/plugins.md's worked example is real: its files are the store plugin in
plugins/slipstream-memorystore, and that plugin's tests pass when run as its author would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "plugins.md"


def example_files() -> dict[str, str]:
    """``{path: text}`` of every fenced block in the doc that starts ``# file: PATH``."""
    out = {}
    for body in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, rest = body.partition("\n")
        if first.startswith("# file: "):
            out[first.removeprefix("# file: ").strip()] = rest
    return out


def test_the_example_files_are_the_plugin_files():
    files = example_files()
    assert {"plugins/slipstream-memorystore/pyproject.toml",
            "plugins/slipstream-memorystore/slipstream_memorystore/__init__.py",
            "plugins/slipstream-memorystore/tests/test_memorystore.py"} <= set(files)
    for path, text in files.items():
        assert (REPO / path).read_text() == text, f"{path} differs from docs/plugins.md"


def test_the_example_plugin_imports_only_the_sdk():
    source = (REPO / "plugins/slipstream-memorystore/slipstream_memorystore/__init__.py")
    imports = re.findall(r"^\s*(?:from|import) (slipstream[\w.]*)", source.read_text(), re.M)
    assert imports and set(imports) == {"slipstream.plugin"}


def test_the_example_plugins_tests_pass():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "plugins/slipstream-memorystore"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 10, r.stdout[-500:]  # the whole kit ran
