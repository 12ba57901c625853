"""The ``slipstream`` command line: the same API, from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._redact import scrub
from .errors import SlipstreamError, UsageError

__all__ = ["main"]


def _storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--storage-option KEY=VALUE`` arguments as fsspec options: JSON values (numbers,
    true/false/null, objects, lists) are parsed, anything else is a string. Errors never
    echo a value: it may be a credential."""
    out: dict[str, Any] = {}
    for n, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option expects KEY=VALUE; the {_ordinal(n)} one has "
                             f"no KEY= (the value is not shown: it may be a credential)")
        out[key] = _option_value(key, value)
    return out


def _option_value(key: str, value: str) -> Any:
    if value in ("true", "false", "null") or value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError as exc:
            raise UsageError(
                f"--storage-option {key}=...: the value starts like JSON but is not valid JSON "
                f"({getattr(exc, 'msg', exc)} at character {getattr(exc, 'pos', '?')}); fix "
                f"it, or quote it for the shell") from None
    if value[:1] in "-0123456789":
        try:
            return json.loads(value)
        except ValueError:
            return value  # 127.0.0.1:9000, 007, ...: text
    return value


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _open_cache(spec: str, cache_dir: str | None):  # -> Cache
    from .caching import open_cache
    from .stores.local import LocalStore, default_cache_dir

    path = Path(spec).expanduser()
    if path.is_dir():
        return open_cache(path)
    store = LocalStore(Path(cache_dir) if cache_dir else default_cache_dir())
    matches = [k for k in store.keys() if k.startswith(spec)]  # noqa: SIM118 (a store)
    if len(matches) == 1:
        return store.open_cache(matches[0])
    from .errors import CacheNotFoundError

    raise CacheNotFoundError(
        f"{spec!r} is neither a cache directory nor a unique key prefix in {store.root} "
        f"({len(matches)} keys match); `slipstream ls` lists the caches there"
    )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"


def cmd_build(args: argparse.Namespace) -> int:
    from .cache.images import check_max_pixels
    from .dataset import SlipstreamDataset

    if args.threads <= 0:
        raise UsageError(f"--threads must be positive, got {args.threads}")
    try:
        check_max_pixels(args.max_pixels)
    except ValueError as exc:
        raise UsageError(f"--max-pixels: {exc}") from None
    remote, limit = _build_remote(args)
    ds = SlipstreamDataset(
        args.url, source=args.source, cache_dir=args.cache_dir,
        storage_options=_storage_options(args.storage_option),
        exif_orientation=args.exif_orientation,
    )
    with ds:
        cache = ds.build_cache(args.format, num_threads=args.threads, progress=not args.quiet,
                               max_pixels=args.max_pixels, on_error=args.on_error,
                               remote=remote, local_cache_limit=limit)
        left_out = f", {len(cache.skipped)} left out (on_error=skip)" if cache.skipped else ""
        print(f"{cache.path}  ({cache.num_samples} samples, {_human(cache.size_bytes())}"
              f"{left_out})")
        if cache.chunk_source is not None:
            print(f"{cache.key}  built into {remote.describe_url()}; streamed here within "
                  f"{_human(limit or 0)} of local disk")
    return 0


def _build_remote(args: argparse.Namespace) -> tuple[Any, int | None]:
    """``build --remote URL [--local-cache-limit SIZE]``: the remote store and the limit."""
    from .stores.streaming import local_cache_limit
    from .stores.sync import open_remote_store

    if args.remote is None:
        if args.local_cache_limit is not None:
            raise UsageError("--local-cache-limit needs --remote URL: it bounds the local "
                             "disk of a build uploaded to a remote store as it goes")
        return None, None
    remote = open_remote_store(args.remote, endpoint_url=args.endpoint_url,
                               storage_options=_storage_options(args.remote_storage_option))
    return remote, local_cache_limit(args.local_cache_limit)


def cmd_info(args: argparse.Namespace) -> int:
    cache = _open_cache(args.cache, args.cache_dir)
    info = cache.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"cache        {info['path']}")
    print(f"key          {info['key']}")
    print(f"format       v{info['format_version']}, images as {info['image_format']}")
    print(f"samples      {info['num_samples']}")
    if cache.skipped:
        print(f"left out     {len(cache.skipped)} source samples (built with on_error=skip; "
              f"`info --json` lists them)")
    print(f"size         {_human(info['size_bytes'])} in {info['files']} files")
    print("fields       " + ", ".join(f"{k} ({v})" for k, v in info["fields"].items()))
    for name, im in info["images"].items():
        codecs = ", ".join(f"{k}: {v}" for k, v in im["codecs"].items())
        print(f"  {name:10s} {_human(im['bytes'])}, mean {im['mean_width']:.0f}x"
              f"{im['mean_height']:.0f}, {codecs}")
    for fmt, f in info["image_formats"].items():
        print(f"format       {fmt:8s} {_human(f['bytes'])}  ({f['ratio_to_stored']:.2f}x the "
              f"stored images)")
    print("indexes      " + (", ".join(info["indexes"]) or "(none)"))
    src = info["source"]
    print(f"source       {src.get('source')}: {src.get('url')}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    cache = _open_cache(args.cache, args.cache_dir)
    report = cache.verify(progress=not args.quiet)
    if report.ok:
        print(f"OK: {report.files_checked} files, {_human(report.bytes_checked)} match the manifest")
        return 0
    print(f"FAILED: {len(report.problems)} problem(s) in {cache.path}:", file=sys.stderr)
    for p in report.problems:
        print(f"  {p}", file=sys.stderr)
    return 1


def cmd_ls(args: argparse.Namespace) -> int:
    from .cache import Cache
    from .stores.local import LocalStore, default_cache_dir

    store = LocalStore(Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    keys = store.keys()
    if not keys:
        print(f"no caches in {store.root}")
    for key in keys:
        c = Cache(store.path(key))
        print(f"{key}  {c.num_samples:>9} samples  {_human(c.size_bytes()):>9}  "
              f"{c.source.get('source')}: {c.source.get('url')}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_plugin_host

    host = get_plugin_host()
    infos = host.plugins()
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    for i in infos:
        provides = [f"source {s}" for s in i.sources] + [f"store {s}" for s in i.stores]
        print(f"{i.name:14s} {i.distribution} {i.version:10s} {i.module:36s} "
              f"{', '.join(provides) or '-'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    directory = Path(args.dir)
    blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"--dir {directory}: {blocker} is a file, not a directory; give a "
                         f"directory (it is created if missing)")
    if args.images <= 0 or args.threads < 0:
        raise UsageError(f"--images must be positive and --threads at least 0 (0: one per "
                         f"core), got --images {args.images} --threads {args.threads}")
    run_demo(directory, images=args.images, threads=args.threads)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .show import check_pipeline_name, show_pipeline

    check_pipeline_name(args.pipeline)
    for opt, value in (("--batch", args.batch), ("--size", args.size)):
        if value is not None and value <= 0:
            print(f"slipstream show: error: {opt} must be positive, got {value}",
                  file=sys.stderr)
            return 2
    grid = show_pipeline(_open_cache(args.cache, args.cache_dir), args.pipeline, args.out,
                         batch_size=args.batch, seed=args.seed, size=args.size)
    print(f"{args.out}  ({args.pipeline}, {grid.width}x{grid.height} px)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .cache.images import DEFAULT_MAX_PIXELS

    p = argparse.ArgumentParser(prog="slipstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add_cache_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--cache-dir", help="cache root (default: $SLIPSTREAM_CACHE_DIR or "
                        "~/.slipstream)")

    b = sub.add_parser("build", help="build (or find) the cache of a dataset")
    b.add_argument("url", help="dataset path or URL")
    b.add_argument("--format", default="jpeg", choices=["jpeg", "yuv420"],
                   help="image format to prepare: jpeg (stored as-is, default) or yuv420 "
                        "(also derive YUV 4:2:0 planes: several times faster to load)")
    b.add_argument("--source", help="force a source by name (see `slipstream plugins`)")
    b.add_argument("--threads", type=int, default=16, help="parallel reads (default 16)")
    b.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option, repeatable (endpoint_url=..., anon=true)")
    b.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images whose header claims more pixels than this (default "
                        f"{DEFAULT_MAX_PIXELS:,}): bounds decode memory per thread")
    b.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="a sample that cannot be read or decoded stops the build (raise, "
                        "default) or is left out and listed (skip)")
    b.add_argument("--exif-orientation", choices=["ignore", "apply"], default="ignore",
                   help="ignore EXIF orientation tags (default, as torchvision) or store "
                        "images upright (rotated ones are re-encoded; another cache)")
    b.add_argument("--remote", help="also put the cache in this remote store (e.g. "
                   "s3://bucket/caches/): pushed once built, or with --local-cache-limit "
                   "built straight into it")
    b.add_argument("--local-cache-limit", metavar="SIZE", help="with --remote: upload the "
                   "cache chunk by chunk as it is built, keeping at most SIZE (e.g. 20GB) on "
                   "local disk, for a cache larger than the disk (default "
                   "$SLIPSTREAM_LOCAL_CACHE_LIMIT; docs/streaming.md)")
    b.add_argument("--endpoint-url", help="the remote's S3-compatible endpoint")
    b.add_argument("--remote-storage-option", action="append", default=[],
                   metavar="KEY=VALUE", help="fsspec/s3fs option of the remote, repeatable "
                   "(profile=..., key=..., secret=...); never printed")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_cache_dir(b)
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("info", help="what a cache holds")
    i.add_argument("cache", help="cache directory, or a key (prefix) in the cache root")
    i.add_argument("--json", action="store_true")
    add_cache_dir(i)
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="recompute every checksum of a cache")
    v.add_argument("cache", help="cache directory, or a key (prefix) in the cache root")
    v.add_argument("-q", "--quiet", action="store_true")
    add_cache_dir(v)
    v.set_defaults(func=cmd_verify)

    ls = sub.add_parser("ls", help="list the caches in the cache root")
    add_cache_dir(ls)
    ls.set_defaults(func=cmd_ls)

    pl = sub.add_parser("plugins", help="list loaded plugins, their distributions and versions")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    d = sub.add_parser("demo", help="make a sample dataset, cache it, load it, print throughput")
    d.add_argument("--dir", default=".slipstream-demo", help="where to put the sample data "
                   "and its cache (default ./.slipstream-demo)")
    d.add_argument("--images", type=int, default=1000, help="sample images (default 1000)")
    d.add_argument("--threads", type=int, default=0, help="decode threads (default: cores)")
    d.set_defaults(func=cmd_demo)
    from ._cli_remote import add_remote_commands  # push, pull, sync, ls-remote
    add_remote_commands(sub)
    from ._cli_housekeeping import add_housekeeping_commands  # du, rm, prune
    add_housekeeping_commands(sub)

    from .show import PRESET_NAMES

    sh = sub.add_parser("show", help="draw one batch of a pipeline preset as a PNG grid "
                        "(a row per sample, a column per view)")
    sh.add_argument("cache", help="cache directory, or a key (prefix) in the cache root")
    sh.add_argument("--pipeline", required=True, metavar="NAME",
                    help="preset: " + ", ".join(PRESET_NAMES))
    sh.add_argument("--out", required=True, help="PNG file to write")
    sh.add_argument("--batch", type=int, default=4, help="samples, one row each (default 4)")
    sh.add_argument("--seed", type=int, default=0, help="loader seed (default 0)")
    sh.add_argument("--size", type=int, default=None, metavar="PX",
                    help="draw the tallest view PX pixels high, the others scaled alike "
                    "(default: native size)")
    add_cache_dir(sh)
    sh.set_defaults(func=cmd_show)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SlipstreamError as exc:
        secrets = _given_options(args)
        print(f"slipstream {args.command}: error: {scrub(str(exc), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The storage options on the command line, for masking their credentials in errors."""
    options: dict[str, Any] = {}
    for pair in getattr(args, "storage_option", None) or ():
        key, _, value = pair.partition("=")
        options[key] = value
    return options


if __name__ == "__main__":
    sys.exit(main())
