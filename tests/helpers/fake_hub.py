"""A local stand-in for the Hugging Face Hub: the few endpoints ``huggingface_hub`` downloads through.

Point ``HF_ENDPOINT`` at :func:`serve_hub`'s URL. Each repository is a folder
of files; the server records every file it was asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_API = re.compile(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/[^/?]+")
_FILE = re.compile(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$")


class _Hub(BaseHTTPRequestHandler):
    # Set per server by serve_hub, on a subclass of its own.
    repos: ClassVar[dict[str, Path]] = {}
    asked: ClassVar[list[str]] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._answer(body=True)

    def do_HEAD(self):
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?")[0]
        if match := _API.match(path):
            return self._api(match.group(1), match.group(2))
        if (match := _FILE.match(path)) and (file := self._file(match.group(1), match.group(2))):
            self.asked.append(f"{match.group(1)}/{match.group(2)}")
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return None
        self.send_error(404)
        return None

    def _file(self, repo: str, name: str) -> Path | None:
        root = self.repos.get(repo)
        return root / name if root is not None and (root / name).is_file() else None

    def _api(self, repo: str, kind: str) -> None:
        root = self.repos.get(repo)
        if root is None:
            self.send_error(404)
            return
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if kind == "revision":
            answer = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
        else:
            answer = [{"type": "file", "path": f, "size": (root / f).stat().st_size, "oid": "0" * 40} for f in files]
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def serve_hub(repos: dict[str, Path]) -> Iterator[tuple[str, list[str]]]:
    """``(endpoint URL, the files asked for so far)`` while the block runs."""
    handler = type("Hub", (_Hub,), {"repos": dict(repos), "asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.asked
    finally:
        server.shutdown()
        server.server_close()
