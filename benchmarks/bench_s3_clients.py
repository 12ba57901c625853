"""Benchmark: the S3 store's two download clients, object by object (docs/streaming.md).

``S3Store.get_file`` downloads through obstore where it can and through s3fs otherwise
(``stores/_obstore_reads.py``). This measures both on the same objects: 48 objects of
4.2 MB (a streamed chunk's size in ``bench_streaming.py``) on an S3 server on loopback in
its own process, 4 downloads at a time as the streaming read-ahead runs them, in
alternating rounds. Per object: CPU milliseconds of this process (the client, file write
included) and of the server, and wall time per round. With ``--gil`` it also samples,
with ``py-spy record --gil --nonblocking``, how long this process holds the GIL per
object while downloading (py-spy must be installed; the sampler may fall behind its
rate on a busy machine, so this figure is an estimate).

    python benchmarks/bench_s3_clients.py --server both --rounds 5 --gil
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _corpus import BENCH_DIR, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_streaming import (  # noqa: E402
    _remote_with_reader,
    process_cpu,
    spread,
    start_server,
)

from tests._servers import weed_binary  # noqa: E402

OBJECTS, SIZE, THREADS = 48, 4_200_000, 4
KEY = "ab" * 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=("moto", "weed", "both"), default="both")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--gil", action="store_true", help="also sample the GIL with py-spy")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def download_all(store, work: Path) -> None:
    def one(i: int) -> None:
        dest = work / f"o{i}"
        store.get_file(KEY, f"image/heap/c/{i}", dest)
        dest.unlink()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(OBJECTS)))


def gil_ms_per_object(store, work: Path, seconds: float = 6.0) -> float | None:
    """Milliseconds of GIL held per object while downloading for ``seconds``."""
    beside = Path(sys.executable).parent / "py-spy"  # a venv's, when it is not on PATH
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        return None
    out = work / "gil.txt"
    sampler = subprocess.Popen(
        [spy, "record", "--gil", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(out),
         "-p", str(os.getpid()), "-d", str(int(seconds) + 2)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        download_all(store, work)
        n += OBJECTS
    sampler.wait()
    samples = 0
    for line in out.read_text().splitlines():
        samples += int(line.rsplit(" ", 1)[1])
    # the sampler ran 1 s before and after the downloads: those samples hold no GIL
    return samples / 200 * 1000 / n


def run_on(kind: str, work: Path, rounds: int, gil: bool) -> dict:
    endpoint, stop, pid = start_server(kind, work)
    try:
        bucket = endpoint.new_bucket("bench-clients")
        client = endpoint.client()
        data = os.urandom(SIZE)
        for i in range(OBJECTS):
            client.put_object(Bucket=bucket, Key=f"caches/{KEY}/image/heap/c/{i}", Body=data)
        stores = {c: _remote_with_reader(bucket, endpoint, c) for c in ("obstore", "s3fs")}
        stores = {c: s for c, s in stores.items() if s.download_client == c}
        got: dict[str, dict[str, list[float]]] = {
            c: {"client_cpu_ms": [], "server_cpu_ms": [], "seconds": []} for c in stores}
        for store in stores.values():
            download_all(store, work)  # connections, imports
        for r in range(rounds):
            order = list(stores) if r % 2 == 0 else list(reversed(stores))
            for c in order:
                cpu0, server0, t0 = process_cpu(), process_cpu(pid), time.perf_counter()
                download_all(stores[c], work)
                got[c]["seconds"].append(time.perf_counter() - t0)
                got[c]["client_cpu_ms"].append((process_cpu() - cpu0) * 1000 / OBJECTS)
                got[c]["server_cpu_ms"].append((process_cpu(pid) - server0) * 1000 / OBJECTS)
        out: dict = {"server": kind, "objects": OBJECTS, "object_bytes": SIZE,
                     "threads": THREADS}
        for c, values in got.items():
            out[c] = {k: spread(v) for k, v in values.items()}
            if gil:
                out[c]["gil_ms_per_object"] = gil_ms_per_object(stores[c], work)
        return out
    finally:
        stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-clients-", dir=BENCH_DIR))
    try:
        kinds = ["moto", "weed"] if args.server == "both" else [args.server]
        if "weed" in kinds and weed_binary() is None:
            print("no `weed` binary: skipping SeaweedFS")
            kinds.remove("weed")
        results = {"machine": platform.platform(), "cpus": os.cpu_count(),
                   "load_average_at_start": os.getloadavg(), "runs": []}
        for kind in kinds:
            got = run_on(kind, work, args.rounds, args.gil)
            results["runs"].append(got)
            print(f"[{kind}] {OBJECTS} objects of {SIZE / 1e6:.1f} MB, {THREADS} at a time, "
                  f"{args.rounds} rounds (median, range)")
            for c in ("obstore", "s3fs"):
                if c not in got:
                    continue
                m = got[c]
                gil = m.get("gil_ms_per_object")
                print(f"  {c:7}: client {m['client_cpu_ms']['median']:.2f} ms/object "
                      f"({m['client_cpu_ms']['min']:.2f}-{m['client_cpu_ms']['max']:.2f}), "
                      f"server {m['server_cpu_ms']['median']:.2f} ms/object, "
                      f"{OBJECTS * SIZE / 1e6 / m['seconds']['median']:.0f} MB/s"
                      + (f", GIL {gil:.2f} ms/object" if gil is not None else ""))
        results["load_average_at_end"] = os.getloadavg()
        write_results(Path(args.json) if args.json else None, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
