"""Benchmark: streaming a remote cache through a bounded local disk (docs/streaming.md).

Three questions, on the ImageNet-like corpus (2,000 JPEGs of ~100 KB over 20 classes;
see ``_corpus.py``), its cache built here with 4 MiB heap chunks (so that a quarter of it
is many chunks) and pushed to an S3 server on loopback in its own process:

1. *First batch from a cold remote*: seconds from creating a ``SlipstreamLoader`` with
   ``local_cache_limit`` (an empty local root) to its first batch, against the same
   loader that pulls the whole cache first (the behaviour without a limit). Goal: ≤ 2 s.
2. *Steady throughput*: images/s of an epoch (random resized crop 224, batches of 64)
   of the streamed loader with a limit of 25% of the cache, against the same loader over
   the fully local cache, in rotating rounds; median and spread of each, and the ratio
   of the medians. Goal: ≥ 0.9 with 2 decode threads. It is run with each download
   client (obstore, s3fs) and with 2 and 1 decode threads: on a 2-core machine 2
   threads leave the transfer and the S3 server no core of their own, so the run also
   reports the CPU both use and the ceiling the server's CPU alone sets
   (``cpu_ceiling_ratio``); 1 thread shows the ratio where the transfer has a core.
   *Steady* counts from the first batch to the last (the first batch's wait is
   question 1); the whole epoch, first batch included, is reported too. Both loaders
   are created before the clock starts (the streamed one has read the remote manifest
   and the small files by then).
3. *Bounded disk*: in one more streamed epoch per round (untimed: the watcher that
   samples the local area every 5 ms costs CPU the timed epochs should not pay), every
   sample is served exactly once, the area never exceeds the limit plus one chunk, and
   with the block shuffle each chunk is fetched at most twice.

    python benchmarks/bench_streaming.py                     # moto and weed (if installed)
    python benchmarks/bench_streaming.py --server moto --rounds 3 --json .bench/bench_streaming.json
    python benchmarks/bench_streaming.py --threads 2 --clients obstore   # the goal's setting only
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _corpus import BENCH_DIR, imagenet_like, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/_servers.py: the same loopback servers the tests use

from bench_pull import MotoProcess  # noqa: E402

from tests._servers import WeedS3, weed_binary  # noqa: E402

CHUNK = 4 << 20
BATCH = 64
THREADS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=("moto", "weed", "both"), default="both",
                   help="S3 server(s) on loopback (default both; weed only if installed)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--threads", type=int, nargs="+", default=[THREADS, 1],
                   help=f"decode threads of both loaders, one run each (default {THREADS} 1: "
                        f"the goal's setting, then one that leaves a core to the transfer)")
    p.add_argument("--clients", nargs="+", choices=("obstore", "s3fs"),
                   default=["obstore", "s3fs"],
                   help="download clients to stream through (default both; obstore only "
                        "where installed)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def build(folder: Path, root: Path):
    from slipstream.caching import build_cache
    from slipstream.sources import open_source
    from slipstream.stores.local import LocalStore

    with open_source(str(folder)) as source:
        return build_cache(source, LocalStore(root), heap_chunk_bytes=CHUNK, progress=False)


def pipelines():
    from slipstream import DecodeRandomResizedCrop

    return {"image": [DecodeRandomResizedCrop(224)]}


def area_bytes(area: Path) -> int:
    total = 0
    for p in area.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_blocks * 512
        except FileNotFoundError:
            pass
    return total


def process_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process, or by process ``pid``
    and its waited-for children (the S3 server)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def timed_epoch(loader, server_pid: int) -> dict:
    """Iterate one epoch of ``loader``: its paths, its rates (whole and steady), and the
    CPU seconds this process and the S3 server used meanwhile."""
    paths: list[str] = []
    cpu0, server0 = process_cpu(), process_cpu(server_pid)
    t0 = time.perf_counter()
    t_first = None
    for batch in loader:
        paths.extend(batch["path"])
        if t_first is None:
            t_first, first = time.perf_counter(), len(paths)
    seconds = time.perf_counter() - t0
    steady = (len(paths) - first) / (time.perf_counter() - t_first)
    return {"seconds": seconds, "images_per_s": len(paths) / seconds,
            "steady_images_per_s": steady, "paths": paths,
            "client_cpu_s": process_cpu() - cpu0,
            "server_cpu_s": process_cpu(server_pid) - server0}


def streamed_epoch(folder: Path, root: Path, remote, limit: int, seed: int, *,
                   watch: bool, threads: int, server_pid: int) -> dict:
    """One epoch streamed into a fresh local root: rates; with ``watch``, the local
    area's peak (sampled every 5 ms), fetches per chunk."""
    from slipstream import SlipstreamDataset, SlipstreamLoader

    loader = SlipstreamLoader(SlipstreamDataset(folder, cache_dir=root), batch_size=BATCH,
                              num_threads=threads, pipelines=pipelines(), progress=False,
                              remote_cache=remote, local_cache_limit=limit, seed=seed)
    cache = loader.cache
    area = cache.path
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], area_bytes(area))
            time.sleep(0.005)

    watcher = threading.Thread(target=sample, daemon=True)
    if watch:
        watcher.start()
    got = timed_epoch(loader, server_pid)
    stop.set()
    if watch:
        watcher.join()
    fetched = cache.chunk_source.fetched
    return {**got, "peak_bytes": peak[0], "max_fetches_per_chunk": max(fetched.values()),
            "chunks_fetched": len(fetched)}


def local_epoch(cache, seed: int, *, threads: int, server_pid: int) -> dict:
    from slipstream import SlipstreamLoader

    loader = SlipstreamLoader(cache, batch_size=BATCH, num_threads=threads,
                              pipelines=pipelines(), progress=False, seed=seed)
    return timed_epoch(loader, server_pid)


def first_batch(folder: Path, root: Path, remote, limit: int | None, threads: int) -> float:
    from slipstream import SlipstreamDataset, SlipstreamLoader

    t0 = time.perf_counter()
    loader = SlipstreamLoader(SlipstreamDataset(folder, cache_dir=root), batch_size=BATCH,
                              num_threads=threads, pipelines=pipelines(), progress=False,
                              remote_cache=remote, local_cache_limit=limit)
    it = iter(loader)
    next(it)
    seconds = time.perf_counter() - t0
    it.close()
    return seconds


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": values}


def start_server(kind: str, work: Path):
    """An S3 server (``moto`` or ``weed``) on loopback in its own process: its endpoint,
    a function that stops it, and its pid (for its CPU time)."""
    if kind == "weed":
        server = WeedS3(weed_binary() or "weed", work / "weed")
        server.start()
        return server.endpoint, server.stop, server.proc.pid
    moto = MotoProcess()
    return moto.endpoint, moto.stop, moto.proc.pid


def _remote_with_reader(bucket: str, endpoint, reader: str):
    """The bucket's store, its downloads through ``reader`` (the choice is made when a
    store is opened, from ``$SLIPSTREAM_S3_READER``)."""
    from slipstream.stores._obstore_reads import READER_ENV
    from slipstream.stores.sync import open_remote_store

    before = os.environ.get(READER_ENV)
    os.environ[READER_ENV] = reader
    try:
        return open_remote_store(f"s3://{bucket}/caches/", endpoint_url=endpoint.endpoint_url,
                                 storage_options=endpoint.storage_options)
    finally:
        if before is None:
            del os.environ[READER_ENV]
        else:
            os.environ[READER_ENV] = before


def run_on(kind: str, folder: Path, cache, work: Path, rounds: int, threads: list[int],
           clients: list[str]) -> dict:
    from slipstream.stores.sync import open_remote_store

    endpoint, stop, pid = start_server(kind, work)
    try:
        bucket = endpoint.new_bucket("bench-stream")
        remote = open_remote_store(f"s3://{bucket}/caches/", endpoint_url=endpoint.endpoint_url,
                                   storage_options=endpoint.storage_options)
        from slipstream.stores.push import push_cache

        push_cache(cache, remote, progress=False)
        total = sum(int(e["size"]) for e in cache.attrs["files"].values())
        limit = total // 4
        chunk = max(int(e["size"]) for rel, e in cache.attrs["files"].items()
                    if "/heap/c/" in rel)
        out: dict = {"server": kind, "cache_bytes": total, "limit_bytes": limit,
                     "chunk_bytes": chunk}
        cold, pulled = [], []
        for r in range(rounds):
            for what in (("stream", "pull") if r % 2 == 0 else ("pull", "stream")):
                root = work / f"{kind}-first-{what}-{r}"
                t = first_batch(folder, root, remote, limit if what == "stream" else None,
                                threads[0])
                (cold if what == "stream" else pulled).append(t)
                shutil.rmtree(root, ignore_errors=True)
        out["first_batch_streamed_s"] = spread(cold)
        out["first_batch_whole_pull_s"] = spread(pulled)
        remotes = {"obstore": remote, "s3fs": _remote_with_reader(bucket, endpoint, "s3fs")}
        remotes = {c: r for c, r in remotes.items()
                   if c in clients and getattr(r, "download_client", c) == c}
        expected = sorted(cache.column("path").values(range(len(cache))))
        out["steady"] = []
        checks = []
        for t in threads:
            sides = ["local", *remotes]
            rates: dict[str, list[float]] = {k: [] for k in sides}
            whole: dict[str, list[float]] = {k: [] for k in sides}
            cpu: dict[str, list[float]] = {k: [] for k in sides}
            server_cpu: dict[str, list[float]] = {k: [] for k in remotes}
            for r in range(rounds):
                for side in sides[r % len(sides):] + sides[:r % len(sides)]:  # rotate
                    if side == "local":
                        got = local_epoch(cache, seed=r, threads=t, server_pid=pid)
                    else:
                        root = work / f"{kind}-epoch-{t}-{side}-{r}"
                        got = streamed_epoch(folder, root, remotes[side], limit, seed=r,
                                             watch=False, threads=t, server_pid=pid)
                        shutil.rmtree(root, ignore_errors=True)
                        server_cpu[side].append(got["server_cpu_s"])
                    rates[side].append(got["steady_images_per_s"])
                    whole[side].append(got["images_per_s"])
                    cpu[side].append(got["client_cpu_s"])
            local = statistics.median(rates["local"])
            local_cpu = statistics.median(cpu["local"])
            row: dict = {"threads": t, "local_images_per_s": spread(rates["local"]),
                         "local_whole_epoch_images_per_s": spread(whole["local"]),
                         "local_client_cpu_s_per_epoch": spread(cpu["local"])}
            for side in remotes:
                server = statistics.median(server_cpu[side])
                row[side] = {
                    "streamed_images_per_s": spread(rates[side]),
                    "ratio_streamed_to_local": statistics.median(rates[side]) / local,
                    "streamed_whole_epoch_images_per_s": spread(whole[side]),
                    "ratio_whole_epoch": (statistics.median(whole[side])
                                          / statistics.median(whole["local"])),
                    "streamed_client_cpu_s_per_epoch": spread(cpu[side]),
                    "streamed_server_cpu_s_per_epoch": spread(server_cpu[side]),
                    # where both cores are busy decoding, the ratio a client costing no
                    # CPU at all could reach with this S3 server on the same cores
                    "cpu_ceiling_ratio": local_cpu / (local_cpu + server),
                }
            out["steady"].append(row)
        for r in range(rounds):
            root = work / f"{kind}-check-{r}"
            got = streamed_epoch(folder, root, remote, limit, seed=r, watch=True,
                                 threads=threads[0], server_pid=pid)
            checks.append({
                "every_sample_once": sorted(got["paths"]) == expected,
                "peak_bytes": got["peak_bytes"],
                "peak_within_limit_plus_chunk": got["peak_bytes"] <= limit + chunk,
                "max_fetches_per_chunk": got["max_fetches_per_chunk"],
            })
            shutil.rmtree(root, ignore_errors=True)
        out["bounded_disk_checks"] = checks
        return out
    finally:
        stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = imagenet_like(args.images)
    work = Path(tempfile.mkdtemp(prefix="bench-stream-", dir=BENCH_DIR))
    try:
        cache = build(folder, work / "source-cache")
        kinds = ["moto", "weed"] if args.server == "both" else [args.server]
        if "weed" in kinds and weed_binary() is None:
            print("no `weed` binary: skipping SeaweedFS")
            kinds.remove("weed")
        results = {"machine": platform.platform(), "images": len(cache), "batch": BATCH,
                   "clients": args.clients,
                   "threads": args.threads, "cpus": os.cpu_count(),
                   "load_average_at_start": os.getloadavg(), "runs": []}
        for kind in kinds:
            got = run_on(kind, folder, cache, work, args.rounds, args.threads, args.clients)
            results["runs"].append(got)
            print(f"[{kind}] cache {got['cache_bytes'] / 1e6:.0f} MB, limit "
                  f"{got['limit_bytes'] / 1e6:.0f} MB, chunks {got['chunk_bytes'] / 1e6:.1f} MB")
            print(f"  first batch: streamed {got['first_batch_streamed_s']['median']:.2f} s "
                  f"(range {got['first_batch_streamed_s']['min']:.2f}-"
                  f"{got['first_batch_streamed_s']['max']:.2f}), whole pull first "
                  f"{got['first_batch_whole_pull_s']['median']:.2f} s")
            for row in got["steady"]:
                loc = row["local_images_per_s"]
                print(f"  {row['threads']} decode thread(s): local {loc['median']:.0f} img/s "
                      f"({loc['min']:.0f}-{loc['max']:.0f}), "
                      f"{row['local_client_cpu_s_per_epoch']['median']:.2f} CPU-s per epoch")
                for client in args.clients:
                    if client not in row:
                        continue
                    c = row[client]
                    s = c["streamed_images_per_s"]
                    print(f"    streamed via {client:7}: {s['median']:.0f} img/s ({s['min']:.0f}-"
                          f"{s['max']:.0f}), ratio {c['ratio_streamed_to_local']:.2f} (whole "
                          f"epoch {c['ratio_whole_epoch']:.2f}); CPU per epoch "
                          f"{c['streamed_client_cpu_s_per_epoch']['median']:.2f} s + server "
                          f"{c['streamed_server_cpu_s_per_epoch']['median']:.2f} s"
                          + (f"; ceiling with a free client {c['cpu_ceiling_ratio']:.2f}"
                             if row["threads"] >= (os.cpu_count() or 1) else ""))
            for c in got["bounded_disk_checks"]:
                print(f"  25% limit: every sample once {c['every_sample_once']}, peak "
                      f"{c['peak_bytes'] / 1e6:.1f} MB (<= limit + chunk: "
                      f"{c['peak_within_limit_plus_chunk']}), max fetches per chunk "
                      f"{c['max_fetches_per_chunk']}")
        results["load_average_at_end"] = os.getloadavg()
        print(f"load average at start {results['load_average_at_start']}, at end "
              f"{results['load_average_at_end']}")
        write_results(Path(args.json) if args.json else None, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
