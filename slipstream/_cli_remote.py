"""``slipstream push / pull / sync / ls-remote``: caches shared through a remote store."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["add_remote_commands"]

REMOTE_ENV = "SLIPSTREAM_REMOTE_CACHE"


def _remote(args: argparse.Namespace) -> Any:  # -> CacheStore
    from .cli import _storage_options
    from .stores.sync import open_remote_store

    if not args.remote:
        raise SystemExit(f"slipstream {args.command}: give --remote URL (or set ${REMOTE_ENV})")
    return open_remote_store(args.remote, endpoint_url=args.endpoint_url,
                             storage_options=_storage_options(args.storage_option))


def _print_report(report: Any) -> None:
    from .cli import _human

    print(f"{report.key}  pushed {len(report.pushed)} files ({_human(report.pushed_bytes)}), "
          f"pulled {len(report.pulled)} files ({_human(report.pulled_bytes)})  "
          f"[{report.remote}]")
    if report.deferred_to:
        print(f"  another build ({report.deferred_to}) of this cache is being pushed by someone "
              f"else; they will commit it. Run `slipstream sync` later to add your indexes.")


def cmd_push(args: argparse.Namespace) -> int:
    from .cli import _open_cache
    from .stores.push import push_cache

    cache = _open_cache(args.cache, args.cache_dir)
    _print_report(push_cache(cache, _remote(args), threads=args.threads,
                             progress=not args.quiet, repair=args.repair))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from .cli import _open_cache
    from .stores.sync import sync_remote_cache

    cache = _open_cache(args.cache, args.cache_dir)
    _print_report(sync_remote_cache(cache, _remote(args), threads=args.threads,
                                    progress=not args.quiet))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .errors import CacheNotFoundError
    from .stores.local import LocalStore, default_cache_dir
    from .stores.pull import pull_cache
    from .stores.streaming import local_cache_limit, open_streamed, should_stream
    from .stores.sync import pull_additions

    remote = _remote(args)
    store = LocalStore(Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    matches = [k for k in remote.names() if k.startswith(args.key)]
    if len(matches) != 1:
        raise CacheNotFoundError(
            f"{args.key!r} matches {len(matches)} caches in {remote.describe_url()}; give a "
            f"unique key prefix (`slipstream ls-remote` lists them)"
        )
    key = matches[0]
    limit = local_cache_limit(args.local_cache_limit)
    if limit is not None and not store.has(key) and should_stream(remote, key, limit):
        cache = open_streamed(remote, key, store, limit, threads=args.threads,
                              progress=not args.quiet)
        print(cache.path)
        print(f"{key}  streamed: its metadata is here; loaders with local_cache_limit fetch "
              f"its chunks on demand, keeping at most {limit} bytes  [{remote.describe_url()}]")
        cache.close()
        return 0
    report = pull_cache(remote, key, store, threads=args.threads, progress=not args.quiet)
    if not report.pulled:  # it was here already: fetch the indexes others added
        pull_additions(store.open_cache(key), remote, report, threads=args.threads,
                     progress=not args.quiet)
    print(store.path(key))
    _print_report(report)
    return 0


def cmd_ls_remote(args: argparse.Namespace) -> int:
    from .cache.manifest import parse_committed
    from .cli import _human

    args.remote = args.remote_url or args.remote
    remote = _remote(args)
    rows = []
    for key in remote.names():
        attrs = parse_committed(remote.read_marker(key))
        if attrs is None:
            objects = remote.list_objects(key)
            rows.append({"key": key, "complete": False, "objects": len(objects),
                         "size_bytes": sum(o.size for o in objects.values())})
            continue
        source = attrs.get("source") or {}
        rows.append({
            "key": key, "complete": True,
            "num_samples": attrs.get("num_samples"),
            "size_bytes": sum(int(e.get("size", 0)) for e in attrs["files"].values()),
            "files": len(attrs["files"]),
            "fields": {f.get("name"): f.get("kind") for f in attrs.get("fields", ())},
            "image_format": attrs.get("image_format", "jpeg"),
            "indexes": list(attrs.get("indexes", ())),
            "format_version": attrs.get("format_version"),
            "source": {"source": source.get("source"), "url": source.get("url")},
        })
    if args.json:
        print(json.dumps({"remote": remote.describe_url(), "caches": rows}, indent=2))
        return 0
    if not rows:
        print(f"no caches in {remote.describe_url()}")
    for r in rows:
        if not r["complete"]:
            print(f"{r['key']}  (incomplete: {r['objects']} objects, {_human(r['size_bytes'])}; "
                  f"a push that has not finished)")
            continue
        fields = ", ".join(f"{k} ({v})" for k, v in r["fields"].items())
        print(f"{r['key']}  {r['num_samples']:>9} samples  {_human(r['size_bytes']):>9}  "
              f"{r['source']['source']}: {r['source']['url']}")
        print(f"    fields: {fields}; images as {r['image_format']}; indexes: "
              f"{', '.join(r['indexes']) or '(none)'}; {r['files']} files")
    return 0


def add_remote_commands(sub: Any) -> None:
    """Add push, pull, sync and ls-remote to the ``slipstream`` parser's subcommands."""

    def add_remote(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--remote", default=os.environ.get(REMOTE_ENV),
                        help=f"remote cache store, e.g. s3://bucket/caches/ "
                        f"(default ${REMOTE_ENV})")
        sp.add_argument("--endpoint-url", help="S3-compatible endpoint (Wasabi, MinIO, ...)")
        sp.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec/s3fs option, repeatable (profile=..., key=..., secret=...); "
                        "never printed")

    def add_common(sp: argparse.ArgumentParser) -> None:
        add_remote(sp)
        sp.add_argument("--cache-dir", help="cache root (default: $SLIPSTREAM_CACHE_DIR or "
                        "~/.slipstream)")
        sp.add_argument("--threads", type=int, default=16, help="files moved at once (default 16)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("push", help="upload a local cache to a remote store (commit marker last)")
    p.add_argument("cache", help="cache directory, or a key (prefix) in the cache root")
    p.add_argument("--repair", action="store_true", help="check every remote object against "
                   "its manifest and replace what is missing or damaged with this copy")
    add_common(p)
    p.set_defaults(func=cmd_push)

    q = sub.add_parser("pull", help="download a cache from a remote store (verified)")
    q.add_argument("key", help="the cache's key, or a unique prefix of it")
    q.add_argument("--local-cache-limit", metavar="SIZE", help="if the cache is larger than "
                   "SIZE (e.g. 50GB), set it up to be streamed instead of pulled whole "
                   "(default $SLIPSTREAM_LOCAL_CACHE_LIMIT; docs/streaming.md)")
    add_common(q)
    q.set_defaults(func=cmd_pull)

    s = sub.add_parser("sync", help="push what the remote copy lacks, pull the indexes it has")
    s.add_argument("cache", help="cache directory, or a key (prefix) in the cache root")
    add_common(s)
    s.set_defaults(func=cmd_sync)

    ls = sub.add_parser("ls-remote", help="list the caches in a remote store")
    ls.add_argument("remote_url", nargs="?", help="the store (default --remote or "
                    f"${REMOTE_ENV})")
    ls.add_argument("--json", action="store_true")
    add_remote(ls)
    ls.set_defaults(func=cmd_ls_remote)
