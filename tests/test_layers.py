"""One-way layers, read from the source with ``ast`` (imports inside functions count too):
the cache format knows no store, and a store knows no dataset or loader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slipstream

PACKAGE = Path(slipstream.__file__).parent


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module ``path`` (in the package at ``root``) imports, relative imports
    resolved to absolute names."""
    package = ".".join(("slipstream", *path.relative_to(root).with_suffix("").parts))
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def offending(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = sorted(m for m in imported_modules(path)
                     if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


def test_the_resolver_sees_relative_and_absolute_imports(tmp_path):
    # the check below is only as good as this: a module of the cache package that
    # imports the stores three ways is caught three times
    probe = tmp_path / "slipstream" / "cache" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..stores import local\nimport slipstream.stores.s3\n"
                     "def f():\n    from ..stores.base import CacheStore\n")
    bad = imported_modules(probe, tmp_path / "slipstream")
    assert {"slipstream.stores", "slipstream.stores.s3", "slipstream.stores.base"} <= bad


def test_no_module_under_cache_imports_the_stores():
    assert offending("cache", ("slipstream.stores",)) == {}


@pytest.mark.parametrize("layer", ["cache", "stores"])
def test_lower_layers_know_no_dataset_loader_or_caching(layer):
    assert offending(layer, ("slipstream.loader", "slipstream.dataset", "slipstream.caching",
                             "slipstream.cli")) == {}


def test_every_exception_type_is_defined_in_errors_py():
    """One place for the error types users catch: a class named ``...Error``,
    ``...Exceeded`` or ``...Warning`` anywhere else in the package fails this test."""
    elsewhere = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(
                    ("Error", "Exception", "Exceeded", "Warning")):
                elsewhere.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert not elsewhere, elsewhere
