"""A stand-in for the Hugging Face Hub on 127.0.0.1: the HTTP API ``HfFileSystem`` reads.

Serves dataset repositories from local directories (``repos["ORG/NAME"] = Path``) at the
one revision ``main``, answering what ``huggingface_hub``'s ``HfFileSystem`` asks for
(shapes from ``hf_api.py`` and ``hf_file_system.py``):

- ``GET /api/datasets/ORG/NAME[/revision/REV]``: repository info (``id``, ``sha``);
- ``GET /api/datasets/ORG/NAME/tree/REV[/PATH]?recursive=...``: the listing, as
  ``{"type": "file"|"directory", "path", "size", "oid"[, "lfs"]}`` entries;
- ``POST /api/datasets/ORG/NAME/paths-info/REV``: the entries of the form's ``paths``;
- ``GET``/``HEAD /datasets/ORG/NAME/resolve/REV/PATH``: the file, honouring ``Range``.

Missing repositories, revisions and paths get 404 with the ``X-Error-Code`` header the
client maps to ``RepositoryNotFoundError`` / ``RevisionNotFoundError`` / ``EntryNotFoundError``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REVISION = "main"
_API = re.compile(r"^/api/datasets/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class FakeHub:
    """The server; ``endpoint`` is its base URL, ``requests`` counts what was asked."""

    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="Thread-fake-hf-hub")
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def storage_options(self) -> dict:
        return {"endpoint": self.endpoint, "token": False}


def _sha(data: bytes, kind: str = "sha1") -> str:
    return hashlib.new(kind, data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: FakeHub

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: object) -> None:
        self._send(200, json.dumps(value).encode())

    def _missing(self, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(404, body, {"X-Error-Code": code, "X-Error-Message": message})

    def _repo(self, repo_id: str, revision: str | None) -> Path | None:
        root = self.server_hub.repos.get(repo_id)
        if root is None:
            self._missing("RepoNotFound", f"Repository Not Found for url: {self.path}.")
            return None
        if revision is not None and unquote(revision) != REVISION:
            self._missing("RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
            return None
        return root

    @staticmethod
    def _entry(root: Path, p: Path) -> dict:
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            return {"type": "directory", "path": rel, "size": 0, "oid": _sha(rel.encode())}
        data = p.read_bytes()
        entry = {"type": "file", "path": rel, "size": len(data), "oid": _sha(data)}
        if p.suffix in (".parquet", ".arrow"):
            entry["lfs"] = {"oid": _sha(data, "sha256"), "size": len(data), "pointerSize": 130}
        return entry

    # -- requests --------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        self.server_hub.requests.append((self.command, url.path))
        m = _API.match(url.path)
        if m:
            return self._api(m, parse_qs(url.query))
        m = _RESOLVE.match(url.path)
        if m:
            return self._resolve(m.group(1), m.group(2), unquote(m.group(3)))
        self._send(404, b"{}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.server_hub.requests.append((self.command, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        m = _API.match(url.path)
        if not m or m.group(2) != "paths-info":
            return self._send(404, b"{}")
        root = self._repo(m.group(1), m.group(3))
        if root is None:
            return
        out = [self._entry(root, root / p) for p in form.get("paths", []) if (root / p).exists()]
        self._json(out)

    def _api(self, m: re.Match, query: dict) -> None:
        repo_id, what, revision, sub = m.groups()
        root = self._repo(repo_id, revision)
        if root is None:
            return
        if what in (None, "revision"):
            sha = _sha(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()))
            siblings = [{"rfilename": p.relative_to(root).as_posix()}
                        for p in sorted(root.rglob("*")) if p.is_file()]
            return self._json({"id": repo_id, "sha": sha, "private": False,
                               "siblings": siblings})
        if what != "tree":
            return self._send(404, b"{}")
        target = root / unquote(sub or "/").lstrip("/")
        if not target.is_dir():
            return self._missing("EntryNotFound", f"{unquote(sub or '')} does not exist")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        found = target.rglob("*") if recursive else target.iterdir()
        self._json([self._entry(root, p) for p in sorted(found)])

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        root = self._repo(repo_id, revision)
        if root is None:
            return
        f = root / path
        if not f.is_file():
            return self._missing("EntryNotFound", f"{path} does not exist")
        data = f.read_bytes()
        headers = {"ETag": f'"{_sha(data)}"', "Accept-Ranges": "bytes",
                   "X-Repo-Commit": _sha(b"commit")}
        rng = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if not rng:
            return self._send(200, data, headers, "application/octet-stream")
        start = int(rng.group(1))
        end = min(int(rng.group(2)) if rng.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, data[start:end + 1], headers, "application/octet-stream")
