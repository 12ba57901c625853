"""Adding a sub-group (an index, a derived image format) to a published cache.

The group is written in a private directory, moved into place with one rename, and
then listed in the root metadata (rewritten atomically, under the cache's lock).
Readers only use what the root metadata lists, so they never see half an addition; a
directory left unlisted by a writer that died in between is replaced by the next one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ._space import is_out_of_space, out_of_space_errors
from .layout import CHECKSUM, FileLedger, group_metadata, read_manifest, write_root_metadata
from .workspace import CacheWorkspace

__all__ = ["add_group"]


def add_group(cache_dir: Path, workspace: CacheWorkspace, rel_path: str,
              write: Callable[[FileLedger, Path], None], *, list_key: str, entry: str,
              parent_attrs: Mapping[str, Any] | None = None) -> bool:
    """Write ``rel_path`` (e.g. ``_indexes/label``) with ``write(ledger, directory)`` and add
    ``entry`` to the list ``attrs[list_key]``. Returns False if another process added it
    first. ``workspace`` (from the store holding the cache) gives the private directory
    it is written in and the lock taken to change the root metadata.

    ``parent_attrs`` are the attributes of the parent group, created if it is missing.
    Running out of disk space raises :class:`~slipstream.errors.CacheWriteError` and
    leaves the cache as it was.
    """
    with out_of_space_errors(f"adding {rel_path} to the cache {cache_dir.name}", cache_dir):
        return _add_group(cache_dir, workspace, rel_path, write, list_key=list_key,
                          entry=entry, parent_attrs=parent_attrs)


def _add_group(cache_dir: Path, workspace: CacheWorkspace, rel_path: str,
               write: Callable[[FileLedger, Path], None], *, list_key: str, entry: str,
               parent_attrs: Mapping[str, Any] | None) -> bool:
    tmp = workspace.staging_dir(rel_path)
    try:
        ledger = FileLedger(tmp)
        write(ledger, tmp)
        with workspace.lock():
            attrs = read_manifest(cache_dir)
            if entry in attrs.get(list_key, ()):
                return False
            parent_rel, _, _ = rel_path.rpartition("/")
            new_files: dict[str, dict[str, Any]] = {}
            parent_meta = cache_dir / parent_rel / "zarr.json"
            if parent_rel and not parent_meta.exists():
                gl = FileLedger(cache_dir)
                gl.write_json(parent_meta, group_metadata(parent_attrs or {}))
                new_files.update(gl.files)
            elif parent_rel and f"{parent_rel}/zarr.json" not in attrs["files"]:
                new_files[f"{parent_rel}/zarr.json"] = _describe(parent_meta)
            target = cache_dir / rel_path
            if target.exists():  # left by a writer that died before updating the manifest
                shutil.rmtree(target)
            os.rename(tmp, target)
            new_files.update({f"{rel_path}/{k}": v for k, v in ledger.files.items()})
            attrs["files"].update(new_files)
            attrs[list_key] = sorted({*attrs.get(list_key, ()), entry})
            try:
                write_root_metadata(cache_dir, attrs)
            except OSError as exc:
                if is_out_of_space(exc):
                    raise
                raise CacheError(f"could not update {cache_dir / 'zarr.json'}: {exc}") from exc
            return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _describe(path: Path) -> dict[str, Any]:
    from .verify import file_digest

    size, digest = file_digest(path)
    return {"size": size, CHECKSUM: digest}
