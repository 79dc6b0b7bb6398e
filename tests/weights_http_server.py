"""A real HTTP server on 127.0.0.1 that serves files from a folder and injects faults.

Used by the download tests: each request for ``/files/<name>`` takes the next mode from
``server.plan[name]`` (``"ok"`` once the plan is empty) and is logged in ``server.log``.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


@dataclass
class Request:
    name: str
    mode: str
    range: str | None
    status: int


@dataclass
class FaultServer:
    root: Path
    plan: dict[str, list[str]] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    chunk_delay: float = 0.0
    # "hold": sends half the file, signals `holding`, then waits for `gate` before the rest.
    # "stall"/"stall_1k": headers (and 1 KB), then silence until `release` (set at teardown).
    gate: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)  # ends stalls at teardown
    _httpd: ThreadingHTTPServer | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)  # notified on each request

    @property
    def base(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, name: str, prefix: str = "files") -> str:
        return f"{self.base}/{prefix}/{name}"

    def requests_for(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if r.name == name]

    def next_mode(self, name: str) -> str:
        with self._lock:
            queue = self.plan.get(name)
            return queue.pop(0) if queue else "ok"

    def record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)
            self._lock.notify_all()

    def wait_for_requests(self, name: str, count: int, timeout: float = 60) -> list[Request]:
        """The requests for ``name`` once there are ``count`` of them: the client may give up
        (a timeout) before a loaded server thread has even logged its request."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self.log if r.name == name]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the server saw {len(got)} of {count} requests for {name} "
                                         f"within {timeout:.0f} s: {got}")
                self._lock.wait(left)

    def start(self) -> FaultServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                return

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.gate.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # ---- request handling ---------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = h.path.split("/", 2)
        if len(parts) != 3 or parts[1] not in {"files", "redirect"}:
            self._plain(h, 404, b"not found")
            return
        name = unquote(parts[2])
        if parts[1] == "redirect":
            self.record(Request(name, "redirect", h.headers.get("Range"), 302))
            h.send_response(302)
            h.send_header("Location", f"/files/{parts[2]}")
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.end_headers()
            return
        path = self.root / name
        range_header = h.headers.get("Range")
        if not path.is_file():
            self.record(Request(name, "missing", range_header, 404))
            self._plain(h, 404, b"not found")
            return
        mode = self.next_mode(name)
        data = path.read_bytes()
        if mode in {"500", "503", "404"}:
            self.record(Request(name, mode, range_header, int(mode)))
            self._plain(h, int(mode), b"fault")
            return
        if mode == "wrong":
            data = hashlib.sha256(data).digest() * (len(data) // 32 + 1)
            data = data[: path.stat().st_size]
        start = 0
        if range_header and mode not in {"ignore_range", "wrong"}:
            start = int(range_header.split("=")[1].split("-")[0])
        body = data[start:]
        status = 206 if start else 200
        self.record(Request(name, mode, range_header, status))
        h.send_response(status)
        declared = len(body) + (1000 if mode == "big" else 0)
        h.send_header("Content-Length", str(declared))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            if mode == "cut":
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
            elif mode in {"stall", "stall_1k"}:  # headers (and 1 KB), then silence
                if mode == "stall_1k":
                    h.wfile.write(body[:1024])
                h.wfile.flush()
                self.release.wait(60)  # far beyond any client timeout the tests use; ends at teardown
            elif mode == "hold":
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                self.holding.set()
                self.gate.wait(300)  # the test opens the gate; teardown does too
                h.wfile.write(body[len(body) // 2 :])
            elif mode == "big":
                h.wfile.write(body)
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
            else:
                step = 64 * 1024
                for i in range(0, len(body), step):
                    h.wfile.write(body[i : i + step])
                    if self.chunk_delay:
                        time.sleep(self.chunk_delay)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up (timeout tests): nothing to do
        h.close_connection = True

    @staticmethod
    def _plain(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)
        h.close_connection = True


def make_file(folder: Path, name: str, size: int) -> tuple[Path, str]:
    """A file of random bytes; returns its path and sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def write_manifest(path: Path, entries: list[dict[str, object]]) -> Path:
    """A schema-1 manifest with the given [[file]] tables."""
    lines = ["schema = 1", ""]
    for entry in entries:
        lines.append("[[file]]")
        for key, value in entry.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int):
                lines.append(f"{key} = {value}")
            else:  # strings and lists of strings: JSON escapes are valid TOML basic strings
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
