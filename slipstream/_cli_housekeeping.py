"""``slipstream du / rm / prune``: what the local caches take, and freeing disk safely."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["add_housekeeping_commands"]


def _store(args: argparse.Namespace) -> Any:  # -> LocalStore
    from .stores.local import LocalStore, default_cache_dir

    return LocalStore(Path(args.cache_dir) if args.cache_dir else default_cache_dir())


def _ago(t: float) -> str:
    if not t:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def cmd_du(args: argparse.Namespace) -> int:
    from .cli import _human
    from .stores.housekeeping import usage

    store = _store(args)
    rows = usage(store)
    if args.json:
        print(json.dumps({"root": str(store.root), "caches": [
            {"key": u.key, "kind": u.kind, "path": str(u.path), "disk_bytes": u.disk_bytes,
             "cache_bytes": u.cache_bytes, "parts": u.parts, "last_use": u.last_use,
             "source": u.source} for u in rows]}, indent=2))
        return 0
    if not rows:
        print(f"no caches in {store.root}")
        return 0
    for u in rows:
        what = ("" if u.kind == "full" else
                f" (streamed: {_human(u.disk_bytes)} of {_human(u.cache_bytes)} here)")
        print(f"{u.key}  {_human(u.disk_bytes):>9}  last used {_ago(u.last_use)}  "
              f"{u.source}{what}")
        for part, size in sorted(u.parts.items()):
            print(f"    {part:<24} {_human(size):>9}")
    print(f"total {_human(sum(u.disk_bytes for u in rows))} in {store.root}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .errors import CacheNotFoundError
    from .stores.housekeeping import remove_cache

    if not args.key:
        raise SystemExit("slipstream rm: give a cache key or a key prefix (not an empty one)")
    store = _store(args)
    keys = sorted({k for k in (*store.names(), *store.streamed_keys())
                   if k.startswith(args.key)})
    if not keys:
        raise CacheNotFoundError(f"no cache in {store.root} has a key starting with "
                                 f"{args.key!r}; `slipstream du` lists them")
    busy = 0
    for key in keys:
        if remove_cache(store, key):
            print(f"removed {key}")
        else:
            busy += 1
            print(f"skipped {key}: in use by a running loader (try again once it ends)")
    return 1 if busy else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from .cli import _human
    from .stores.housekeeping import prune
    from .stores.streaming import parse_size

    store = _store(args)
    report = prune(store, parse_size(args.max_size, "--max-size"))
    for u in report.removed:
        print(f"removed {u.key} ({u.kind}, {_human(u.disk_bytes)}, last used "
              f"{_ago(u.last_use)})")
    for u in report.in_use:
        print(f"skipped {u.key} ({u.kind}, {_human(u.disk_bytes)}): in use by a running loader")
    print(f"{_human(report.total_after)} left in {store.root}")
    return 0


def add_housekeeping_commands(sub: Any) -> None:
    """Add du, rm and prune to the ``slipstream`` parser's subcommands."""

    def add_cache_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--cache-dir", help="cache root (default: $SLIPSTREAM_CACHE_DIR or "
                        "~/.slipstream)")

    d = sub.add_parser("du", help="disk used by each local cache, by field and format, "
                       "with its last use")
    d.add_argument("--json", action="store_true")
    add_cache_dir(d)
    d.set_defaults(func=cmd_du)

    r = sub.add_parser("rm", help="remove local caches by key or key prefix (skips caches "
                       "a running loader has open)")
    r.add_argument("key", help="a cache key or a prefix of keys")
    add_cache_dir(r)
    r.set_defaults(func=cmd_rm)

    p = sub.add_parser("prune", help="remove the least recently used local caches until "
                       "they fit a size (skips caches in use)")
    p.add_argument("--max-size", required=True, metavar="SIZE",
                   help="what all caches together may take, e.g. 200GB")
    add_cache_dir(p)
    p.set_defaults(func=cmd_prune)
