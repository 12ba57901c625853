"""Where the data of a Hugging Face dataset is: configs, splits and their files.

Three layouts, the first that fits wins:

1. ``datasets``' ``save_to_disk`` of a ``DatasetDict``: ``dataset_dict.json`` lists the
   splits, each a directory with ``state.json`` naming its Arrow stream files.
2. ``save_to_disk`` of a single ``Dataset``: ``state.json`` + ``dataset_info.json`` + Arrow
   files; the split is ``state.json``'s ``_split`` (``train`` when unset).
3. Parquet files as the Hub serves them. The ``configs:`` block of ``README.md``'s YAML
   header (what ``push_to_hub`` writes) maps each config's splits to file patterns; without
   it, paths are read the way the Hub's conventions lay them out::

       data/SPLIT-00000-of-00001.parquet      config "default"
       SPLIT-00000-of-00001.parquet, SPLIT.parquet
       CONFIG/SPLIT-00000-of-00001.parquet    config CONFIG
       CONFIG/SPLIT/0000.parquet              (the Hub's parquet conversion; also partial-SPLIT)
       SPLIT/0000.parquet                     config "default"

A single ``.parquet`` file is the split ``train`` of config ``default``.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MissingDependencyError, SourceDetectionError

__all__ = ["HFLayout", "find_layout", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "default"
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")


@dataclass
class HFLayout:
    """``configs[config][split]`` = the split's files (relative paths, in order)."""

    kind: str  # "parquet" or "arrow"
    configs: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def add(self, config: str, split: str, relpath: str) -> None:
        self.configs.setdefault(config, {}).setdefault(split, []).append(relpath)

    def sort(self) -> None:
        for splits in self.configs.values():
            for files in splits.values():
                files.sort()


def find_layout(
    files: Mapping[str, Mapping[str, Any]], read_text: Callable[[str], str], where: str
) -> HFLayout:
    """The layout of a dataset whose files (relative path → listing entry) are ``files``.

    ``read_text(relpath)`` reads a small file (``README.md``, ``state.json``).
    """
    if "dataset_dict.json" in files:
        return _saved_dict(files, read_text, where)
    if "state.json" in files:
        layout = HFLayout("arrow")
        for rel in _arrow_files(read_text("state.json"), "", where):
            layout.add(DEFAULT_CONFIG, _saved_split(read_text("state.json")), rel)
        return layout
    parquet = sorted(p for p in files if p.lower().endswith(".parquet"))
    if not parquet:
        raise SourceDetectionError(
            f"{where}: no parquet files and no save_to_disk output (dataset_dict.json or "
            f"state.json); expected a Hugging Face dataset"
        )
    layout = HFLayout("parquet")
    configs = _readme_configs(read_text, where) if "README.md" in files else None
    if configs:
        for name, splits in configs.items():
            for split, patterns in splits.items():
                for rel in parquet:
                    if any(fnmatch.fnmatchcase(rel, p) for p in patterns):
                        layout.add(name, split, rel)
    else:
        for rel in parquet:
            layout.add(*_conventional(rel), rel)
    layout.sort()
    return layout


def _saved_dict(files: Mapping[str, Any], read_text: Callable[[str], str],
                where: str) -> HFLayout:
    try:
        splits = json.loads(read_text("dataset_dict.json"))["splits"]
        if not isinstance(splits, list) or not all(_is_relpath(s) for s in splits):
            raise TypeError(f"'splits' is {splits!r:.80}, not a list of split names")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SourceDetectionError(f"{where}/dataset_dict.json: unreadable ({exc}); expected "
                                   f"the file datasets' save_to_disk writes") from exc
    layout = HFLayout("arrow")
    for split in splits:
        state = f"{split}/state.json"
        if state not in files:
            raise SourceDetectionError(f"{where}: split {split!r} has no {state}; the "
                                       f"save_to_disk output is incomplete")
        for rel in _arrow_files(read_text(state), f"{split}/", where):
            layout.add(DEFAULT_CONFIG, str(split), rel)
    return layout


def _arrow_files(state_text: str, prefix: str, where: str) -> list[str]:
    try:
        names = [f["filename"] for f in json.loads(state_text)["_data_files"]]
        if not all(_is_relpath(n) for n in names):
            raise ValueError(f"data files {names!r:.80} are not paths inside the dataset")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SourceDetectionError(f"{where}/{prefix}state.json: unreadable ({exc}); expected "
                                   f"the file datasets' save_to_disk writes") from exc
    return [prefix + n for n in names]


def _saved_split(state_text: str) -> str:
    state = json.loads(state_text)  # read by _arrow_files first: an object
    return str(state.get("_split") or "train")


def _is_relpath(value: Any) -> bool:
    """A relative path that stays inside the dataset (no ``..``, not absolute)."""
    return (isinstance(value, str) and bool(value) and not value.startswith("/")
            and "\\" not in value and ".." not in value.split("/"))


def _readme_configs(read_text: Callable[[str], str],
                    where: str) -> dict[str, dict[str, list[str]]] | None:
    """``configs:`` of README.md's YAML header: config → split → path patterns."""
    text = read_text("README.md")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match or "configs" not in match.group(1):
        return None
    try:
        import yaml
    except ImportError as exc:
        raise MissingDependencyError(
            f"{where}: README.md declares configs in YAML; reading them needs PyYAML: "
            f"pip install 'slipstream[hf]'") from exc
    try:
        header = yaml.safe_load(match.group(1)) or {}
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: a bad date
        raise SourceDetectionError(f"{where}/README.md: unreadable YAML header ({exc})") from exc
    configs = header.get("configs") if isinstance(header, dict) else None
    if configs is not None and not isinstance(configs, list):
        raise _bad_configs(where, f"configs is {configs!r:.80}, not a list")
    out: dict[str, dict[str, list[str]]] = {}
    for entry in configs or []:
        if not isinstance(entry, dict):
            raise _bad_configs(where, f"a config is {entry!r:.80}, not a mapping")
        name = str(entry.get("config_name", DEFAULT_CONFIG))
        data_files = entry.get("data_files")
        splits: dict[str, list[str]] = {}
        if isinstance(data_files, (str, list)) and not _is_split_list(data_files):
            splits["train"] = _patterns(data_files, where)
        elif isinstance(data_files, list):
            for item in data_files:
                if "split" not in item or "path" not in item:
                    raise _bad_configs(where, f"{item!r:.80} has no 'split' and 'path'")
                splits.setdefault(str(item["split"]), []).extend(_patterns(item["path"], where))
        elif isinstance(data_files, dict):
            for split, paths in data_files.items():
                splits[str(split)] = _patterns(paths, where)
        out[name] = splits
    return out or None


def _bad_configs(where: str, what: str) -> SourceDetectionError:
    return SourceDetectionError(
        f"{where}/README.md: unreadable configs in the YAML header ({what}); expected what "
        f"push_to_hub writes: configs: [{{config_name: NAME, data_files: [{{split: SPLIT, "
        f"path: PATTERN}}, ...]}}]")


def _is_split_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _patterns(value: Any, where: str) -> list[str]:
    if not isinstance(value, (str, list)):
        raise _bad_configs(where, f"data file patterns {value!r:.80} are not text or a list")
    values = [value] if isinstance(value, str) else value
    return [str(v).lstrip("./") for v in values]


def _split_of(stem: str) -> str:
    return _SHARD_SUFFIX.sub("", stem)


def _conventional(rel: str) -> tuple[str, str]:
    """(config, split) of a parquet file by the Hub's path conventions."""
    parts = rel.split("/")
    stem = posixpath.splitext(parts[-1])[0]
    if len(parts) == 1:
        return DEFAULT_CONFIG, _split_of(stem)
    if len(parts) == 2:
        if parts[0] == "data":
            return DEFAULT_CONFIG, _split_of(stem)
        if stem.isdigit():  # SPLIT/0000.parquet
            return DEFAULT_CONFIG, parts[0]
        return parts[0], _split_of(stem)
    split = parts[-2]
    return parts[0], split[len("partial-"):] if split.startswith("partial-") else split
