"""Security properties of the code itself, checked on its syntax tree: nothing that
deserialises code from data (pickle, marshal, torch.load, unsafe YAML, numpy pickles),
no shell commands built from strings, no eval/exec, and plugins only from installed
entry points. These walk every module of the package and of the bundled plugins, so a
new violation anywhere fails here with its file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(REPO / "slipstream").rglob("*.py"), *(REPO / "plugins").rglob("*.py")])
SOURCES = [p for p in SOURCES if "/tests/" not in p.as_posix()]

FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
FORBIDDEN_CALLS = {
    ("os", "system"), ("os", "popen"), ("torch", "load"), ("yaml", "load"),
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def violations(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            parts = tuple(name.split(".")[-2:])
            if name in ("eval", "exec", "compile", "__import__"):
                found.append((node.lineno, f"{name}()"))
            if parts in FORBIDDEN_CALLS:
                found.append((node.lineno, f"{name}()"))
            if name.endswith("import_module"):
                found.append((node.lineno, "importlib.import_module() (plugins come from "
                                           "entry points only)"))
            for kw in node.keywords:
                truthy = not (isinstance(kw.value, ast.Constant) and not kw.value.value)
                if kw.arg == "shell" and truthy:
                    found.append((node.lineno, f"{name}(shell=...)"))
                if kw.arg == "allow_pickle" and truthy:
                    found.append((node.lineno, f"{name}(allow_pickle=...)"))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_code_from_data_no_shell_no_eval(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    assert violations(tree) == [], path.relative_to(REPO)


def test_the_checker_catches_what_it_looks_for():
    bad = """
import pickle
from marshal import loads
import os, subprocess, numpy as np, torch, yaml
os.system("ls " + name)
subprocess.run(cmd, shell=True)
np.load(f, allow_pickle=True)
torch.load(path)
yaml.load(text)
eval(expr)
importlib.import_module(user_string)
"""
    lines = sorted(line for line, _ in violations(ast.parse(bad)))
    assert lines == [2, 3, 5, 6, 7, 8, 9, 10, 11]
    ok = "subprocess.run(['ls', name], shell=False)\nnp.load(f)\nyaml.safe_load(t)\n"
    assert violations(ast.parse(ok)) == []


def test_plugins_come_only_from_the_entry_point_group():
    """The plugin host loads setuptools entry points of the ``slipstream`` group and
    nothing else: no module paths from environment variables or configuration."""
    source = (REPO / "slipstream" / "plugins.py").read_text()
    tree = ast.parse(source)
    # one walk over the installed distributions' entry points, filtered by the group
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and _dotted(n.func) == "importlib.metadata.distributions"]
    assert len(loads) == 1
    assert "ep.group != ENTRY_POINT_GROUP" in source
    assert "environ" not in source and "getenv" not in source
    from slipstream.plugins import ENTRY_POINT_GROUP

    assert ENTRY_POINT_GROUP == "slipstream"
