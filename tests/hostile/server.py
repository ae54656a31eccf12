"""A loopback HTTP server that misbehaves on purpose, for the avatar fetch tests.

Routes (all on 127.0.0.1, a port chosen by the OS):

``/file/<name>``             serves bytes registered in ``server.files``
``/status/<code>``           answers with that status
``/redirect?to=<url>``       302 to ``url``
``/chain/<n>/<name>``        302 to ``/chain/<n-1>/<name>``; ``/chain/0/<name>`` serves the file
``/drip-body``               headers at once, then one body byte per ``drip_interval`` seconds
``/drip-headers``            the status line and headers one byte per ``drip_interval`` seconds
``/big-chunked``             ``big_size`` bytes, chunked, no Content-Length
``/big-declared``            ``Content-Length: big_size`` then the bytes

Every loop is bounded (``drip_max_bytes``, ``big_size``) and stops when the client goes away, so
a test that gives up never leaves the server busy. ``hits`` counts requests per path.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.drip_interval = 1.0
        self.drip_max_bytes = 30
        self.big_size = 50 * 1024 * 1024
        self.sent_bytes: Counter[str] = Counter()
        self.scheme = "http"

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: HostileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        path = parts.path
        srv = self.server
        srv.hits[path] += 1
        try:
            if path.startswith("/file/"):
                name = path[len("/file/") :]
                if name in srv.files:
                    self._send(200, srv.files[name], {"Content-Type": "image/jpeg"})
                else:
                    self._send(404)
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]))
            elif path == "/redirect":
                target = parse_qs(parts.query)["to"][0]
                self._send(302, headers={"Location": target})
            elif path.startswith("/chain/"):
                _, _, n, name = path.split("/", 3)
                if int(n) <= 0:
                    self._send(200, srv.files.get(name, b""))
                else:
                    self._send(302, headers={"Location": f"/chain/{int(n) - 1}/{name}"})
            elif path == "/drip-body":
                self.send_response(200)
                self.send_header("Content-Length", str(srv.drip_max_bytes))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                for _ in range(srv.drip_max_bytes):
                    time.sleep(srv.drip_interval)
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    srv.sent_bytes[path] += 1
            elif path == "/drip-headers":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Pad: " + b"a" * 64
                for byte in head[: srv.drip_max_bytes]:
                    time.sleep(srv.drip_interval)
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    srv.sent_bytes[path] += 1
                self.close_connection = True
            elif path in ("/big-chunked", "/big-declared"):
                self.send_response(200)
                chunked = path == "/big-chunked"
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(srv.big_size))
                self.send_header("Connection", "close")
                self.end_headers()
                block = b"\xff\xd8\xff\xe0" + b"\x00" * (64 * 1024 - 4)
                sent = 0
                while sent < srv.big_size:
                    if chunked:
                        self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                    else:
                        self.wfile.write(block)
                    sent += len(block)
                    srv.sent_bytes[path] += len(block)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self._send(404)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


@contextmanager
def hostile_server(tls: ssl.SSLContext | None = None) -> Iterator[HostileServer]:
    """Run a :class:`HostileServer` in a thread for the duration of the block (HTTPS with
    ``tls``, a server-side context)."""
    server = HostileServer()
    if tls is not None:
        server.socket = tls.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        server.scheme = "https"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
