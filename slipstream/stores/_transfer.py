"""What pulls and pushes share: the report, the thread pool, and manifest helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._parallel import bounded_map
from .._progress import progress_bar
from ..cache import layout
from ..errors import CacheCorruptError

__all__ = ["SyncReport", "DEFAULT_THREADS", "ADDITION_LISTS", "run_parallel",
           "check_manifest_paths", "additions", "group_files", "base_files"]

#: Files moved at once: transfers wait on the network, not the CPU.
DEFAULT_THREADS = 16


@dataclass
class SyncReport:
    """What a pull, push or sync moved for one cache (paths relative to the cache)."""

    key: str
    remote: str  #: the remote store, described without credentials
    pushed: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    pushed_bytes: int = 0
    pulled_bytes: int = 0
    #: whether this call wrote the remote commit marker (a first push, or a manifest merge)
    committed: bool = False
    #: set when another build of the key was being pushed (its build id): that pusher
    #: commits the key, and this push stopped without writing anything more
    deferred_to: str | None = None

    @property
    def moved(self) -> bool:
        return bool(self.pushed or self.pulled)

    def summary(self) -> str:
        text = (f"{self.key}: pushed {len(self.pushed)} files ({self.pushed_bytes} bytes), "
                f"pulled {len(self.pulled)} files ({self.pulled_bytes} bytes)")
        if self.deferred_to:
            text += (f"; another build ({self.deferred_to}) of this key is being pushed by "
                     f"someone else and will be committed by them")
        return text


def run_parallel(
    jobs: Iterable[tuple[str, int]],
    work: Callable[[str], None],
    *,
    threads: int,
    desc: str,
    progress: bool,
) -> None:
    """``work(rel)`` for every ``(rel, size)`` job on up to ``threads`` threads, largest
    first; the progress bar counts bytes. The first failure cancels the jobs not yet
    started and is raised once the running ones have returned."""
    ordered = sorted(jobs, key=lambda j: (-j[1], j[0]))
    if not ordered:
        return
    total = sum(size for _, size in ordered)
    with progress_bar(total, desc, unit="B", unit_scale=True, enabled=progress) as bar:
        for (_, size), _ in bounded_map(lambda job: work(job[0]), ordered,
                                        threads=min(threads, len(ordered)), window=2 * threads,
                                        thread_name="slipstream-transfer"):
            bar.update(size)


def check_manifest_paths(files: Mapping[str, Any], where: str) -> None:
    """Refuse a manifest whose paths could land outside the cache directory, or whose
    entries are not ``{"size": int, "sha256": str}``: it came from shared storage."""
    problem = layout.manifest_problem(files)
    if problem:
        raise CacheCorruptError(f"{where}: {problem}; refusing to use it")


#: Root-attribute lists whose entries are groups added to a published cache (see
#: ``slipstream/cache/additions.py``): list -> (path prefix of an entry's group, the
#: attributes of the parent group when it may have to be created).
ADDITION_LISTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "indexes": (f"{layout.INDEXES_GROUP}/", {"kind": "indexes"}),
    "derived": ("", None),  # FIELD/FORMAT, e.g. image/yuv420
}


def additions(attrs: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """``{(list, entry): group path}`` of every addition the root attributes list."""
    out = {}
    for list_key, (prefix, _) in ADDITION_LISTS.items():
        for entry in attrs.get(list_key, ()) or ():
            if isinstance(entry, str) and entry:
                out[(list_key, entry)] = prefix + entry
    return out


def group_files(files: Mapping[str, Any], group: str) -> dict[str, Any]:
    """The manifest entries below ``group`` (a path inside the cache)."""
    prefix = group.rstrip("/") + "/"
    return {rel: e for rel, e in files.items() if rel.startswith(prefix)}


def base_files(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest entries of the cache as built (everything but its additions). Two
    copies with equal base entries are the same build, byte for byte; additions depend
    only on the samples, so they travel between builds."""
    groups = [g.rstrip("/") + "/" for g in additions(attrs).values()]
    groups.append(f"{layout.INDEXES_GROUP}/")
    return {rel: e for rel, e in attrs["files"].items()
            if not any(rel.startswith(g) for g in groups)}
