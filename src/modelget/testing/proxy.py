"""A real forward HTTP proxy on loopback for the tests: absolute-URI requests (``GET
http://host/path``, what clients send for http:// URLs) and ``CONNECT host:port`` tunnels
(https://), each request logged (method, target, whether it carried ``Authorization`` or
``Proxy-Authorization``).

``route`` maps the host a client asks for to the address the proxy dials, so a test can
serve a mirror that only the proxy reaches: the simulator listens on 127.0.0.1 and is
named ``127.0.0.2`` in its URLs (Linux routes all of 127.0.0.0/8 to loopback, and nothing
listens on 127.0.0.2 at that port, so a direct connect is refused at once); the proxy dials
127.0.0.1. ``credentials`` (``user:password``): the proxy answers 407 to a request without
them, as a corporate proxy does.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ProxyRecord:
    method: str
    target: str
    """The absolute URL (``GET``) or ``host:port`` (``CONNECT``) asked for."""
    authorization: bool
    """An ``Authorization`` header went through the proxy in the clear (never for CONNECT)."""
    proxy_authorization: bool


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ForwardProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> bool:
        """Log the request; False (after a 407) when it lacks the proxy's credentials."""
        proxy = self.server.proxy
        auth = self.headers.get("Proxy-Authorization")
        proxy.record(
            ProxyRecord(self.command, self.path, "Authorization" in self.headers, auth is not None)
        )
        if proxy.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(proxy.credentials.encode()).decode()
        if auth == expected:
            return True
        proxy.refused += 1
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_CONNECT(self) -> None:
        if not self._record():
            return
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection(self.server.proxy.dial(host, int(port)), timeout=10)
        except (OSError, ValueError):
            self.send_error(502)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        _pipe(self.connection, upstream)

    def _forward(self) -> None:
        if not self._record():
            return
        parts = urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self.send_error(400, "absolute http:// URL expected")
            return
        try:
            upstream = socket.create_connection(
                self.server.proxy.dial(parts.hostname, parts.port or 80), timeout=10
            )
        except OSError:
            self.send_error(502)
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        lines = [f"{self.command} {path} HTTP/1.1"]
        for key, value in self.headers.items():
            if key.lower() not in ("proxy-authorization", "proxy-connection", "connection"):
                lines.append(f"{key}: {value}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        upstream.sendall(head + body)
        # The answer is relayed as it comes; the upstream closes it (Connection: close), and
        # so does this connection then, which its head now says (else the client could send
        # its next request on a connection about to close).
        self.close_connection = True
        with upstream:
            head_bytes, rest = _read_head(upstream)
            try:
                self.wfile.write(_closing(head_bytes) + rest)
            except OSError:
                return
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except OSError:
                    break

    do_GET = _forward
    do_HEAD = _forward
    do_POST = _forward


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """An answer's head (through the blank line) and the body bytes read with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _closing(head: bytes) -> bytes:
    """``head`` with ``Connection: close`` in place of any Connection header."""
    lines = [
        line
        for line in head.rstrip(b"\r\n").split(b"\r\n")
        if not line.lower().startswith((b"connection:", b"keep-alive:"))
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Relay bytes both ways until one side closes."""
    with b:
        sockets = [a, b]
        while True:
            readable, _, _ = select.select(sockets, [], [], 30)
            if not readable:
                return
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                (b if sock is a else a).sendall(data)


class ForwardProxy:
    """A logging forward proxy on 127.0.0.1 (see the module docstring). ``start()`` it, read
    :attr:`log`, ``stop()`` it (or use it as a context manager)."""

    def __init__(self, route: dict[str, str] | None = None, credentials: str | None = None) -> None:
        self.route = dict(route or {})
        self.credentials = credentials
        self.refused = 0
        self._log: list[ProxyRecord] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._port = 0

    def dial(self, host: str, port: int) -> tuple[str, int]:
        return self.route.get(host, host), port

    def record(self, rec: ProxyRecord) -> None:
        with self._lock:
            self._log.append(rec)

    @property
    def log(self) -> list[ProxyRecord]:
        with self._lock:
            return list(self._log)

    @property
    def port(self) -> int:
        """Its port (kept after ``stop()``, for the assertions)."""
        assert self._port, "start() the proxy first"
        return self._port

    def url(self, credentials: str | None = None) -> str:
        """``http://[credentials@]127.0.0.1:PORT``."""
        who = f"{credentials}@" if credentials else ""
        return f"http://{who}127.0.0.1:{self.port}"

    def start(self) -> ForwardProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self._port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="test-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            with contextlib.suppress(OSError):
                server.server_close()

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
