"""Real nginx as a static "CDN" for tests and benchmarks.

``NginxServer(root)`` serves a directory on a loopback port with a private configuration (it never
reads ``/etc/nginx``): sendfile, keep-alive, byte ranges, ETags, no gzip, an optional
per-connection ``limit_rate``, and a JSON-lines access log that tests read back with
``access_log()``. Everything nginx writes (config, pid, logs, temp files) lives in a private
temporary prefix directory, removed when the server object goes away.

    with NginxServer(tmp_path, limit_rate=4 * 1024 * 1024) as cdn:
        httpx.get(f"{cdn.url}/model.safetensors", headers={"Range": "bytes=0-99"})
        assert cdn.access_log(min_entries=1)[0]["status"] == 206
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from modelget.engines.aria2.process import pid_alive

log = logging.getLogger(__name__)

_NGINX_FALLBACK = "/usr/sbin/nginx"
_START_TIMEOUT_S = 10.0
_PORT_ATTEMPTS = 5

# One JSON object per request. Values are all strings (escape=json), typed by access_log().
_LOG_FIELDS = (
    ("time", "$msec"),
    ("remote_addr", "$remote_addr"),
    ("request_method", "$request_method"),
    ("uri", "$uri"),
    ("args", "$args"),
    ("status", "$status"),
    ("body_bytes_sent", "$body_bytes_sent"),
    ("bytes_sent", "$bytes_sent"),
    ("http_range", "$http_range"),
    ("http_if_range", "$http_if_range"),
    ("http_authorization", "$http_authorization"),
    ("http_user_agent", "$http_user_agent"),
    ("http_host", "$http_host"),
    ("request_time", "$request_time"),
    ("connection", "$connection"),
    ("connection_requests", "$connection_requests"),
    ("server_port", "$server_port"),
)
_INT_FIELDS = frozenset(
    {"status", "body_bytes_sent", "bytes_sent", "connection", "connection_requests", "server_port"}
)
_FLOAT_FIELDS = frozenset({"time", "request_time"})
_OPTIONAL_FIELDS = frozenset(
    {"args", "http_range", "http_if_range", "http_authorization", "http_user_agent", "http_host"}
)


def nginx_binary() -> str | None:
    """Path of the nginx executable (``PATH`` first, then Debian's ``/usr/sbin/nginx``)."""
    found = shutil.which("nginx")
    if found:
        return found
    if os.access(_NGINX_FALLBACK, os.X_OK):
        return _NGINX_FALLBACK
    return None


def nginx_available() -> bool:
    return nginx_binary() is not None


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the caller must still handle a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class NginxError(RuntimeError):
    """nginx could not be started, reloaded or stopped."""


def _quote(value: str) -> str:
    """``value`` as a double-quoted nginx config string."""
    if any(c in value for c in '"\\$\n\r;{}'):
        raise ValueError(f"unsupported character in nginx config value: {value!r}")
    return f'"{value}"'


def _format_rate(rate: int | None) -> str:
    return "0" if not rate else str(int(rate))


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (read from /proc; empty where /proc is missing)."""
    out: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 2 and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def _terminate(proc: subprocess.Popen[bytes], workers: list[int], graceful_s: float) -> None:
    """Stop an nginx master: SIGQUIT, then SIGTERM, then SIGKILL (workers too)."""
    if proc.poll() is None:
        workers = sorted(set(workers) | set(_children(proc.pid)))
        for sig, wait_s in ((signal.SIGQUIT, graceful_s), (signal.SIGTERM, 3.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    deadline = time.monotonic() + 2.0
    for pid in workers:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _finalize(proc_box: list[subprocess.Popen[bytes]], prefix: str) -> None:
    for proc in proc_box:
        _terminate(proc, [], graceful_s=1.0)
    shutil.rmtree(prefix, ignore_errors=True)


class NginxServer:
    """nginx serving ``root`` on ``127.0.0.1:<port>`` (a free port when ``port`` is 0).

    ``limit_rate`` (bytes/s) caps each connection after its first ``limit_rate_after`` bytes.
    Note nginx's rate limiter lets one second's worth of bytes through at once before it
    throttles. ``extra_config`` is pasted into the ``server`` block. Start with ``start()`` or
    ``with``; ``stop()`` (also run at interpreter exit) leaves no nginx process behind.
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int = 0,
        limit_rate: int | None = None,
        limit_rate_after: int = 0,
        name: str = "nginx",
        extra_config: str = "",
        workers: int = 1,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        binary = nginx_binary()
        if binary is None:
            raise NginxError("nginx is not installed (apt-get install nginx, or scripts/bootstrap)")
        self.binary = binary
        self.root = Path(root).resolve()
        self.name = name
        self.limit_rate = limit_rate
        self.limit_rate_after = limit_rate_after
        self.extra_config = extra_config
        self.workers = workers
        self.tls = tls
        """(certificate, key) PEM files: serve HTTPS (see ``modelget.testing.tls``)."""
        self._requested_port = port
        self._port = port
        self.prefix = Path(tempfile.mkdtemp(prefix=f"modelget-{name}-"))
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir()
        self.conf_path = self.prefix / "nginx.conf"
        self.pid_path = self.prefix / "nginx.pid"
        self.error_log_path = self.prefix / "logs" / "error.log"
        self.access_log_path = self.prefix / "logs" / "access.jsonl"
        self._stderr_path = self.prefix / "logs" / "stderr.log"
        self._proc_box: list[subprocess.Popen[bytes]] = []
        self._workers_seen: list[int] = []
        self._finalizer = weakref.finalize(self, _finalize, self._proc_box, str(self.prefix))

    # -- properties ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise NginxError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The nginx master's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc_box[0] if self._proc_box else None

    def worker_pids(self) -> list[int]:
        pid = self.pid
        return _children(pid) if pid is not None else []

    # -- configuration -------------------------------------------------------------------------

    def config_text(self) -> str:
        """The complete nginx.conf this server runs with."""
        p = self.prefix
        user = "user root root;\n" if os.geteuid() == 0 else ""
        log_format = ("{" + ",".join(f'"{key}":"{var}"' for key, var in _LOG_FIELDS) + "}").replace(
            "'", "\\'"
        )
        return f"""# Generated by modelget.testing.nginx for {self.name}; not read from /etc/nginx.
{user}daemon off;
master_process on;
worker_processes {int(self.workers)};
pid {_quote(str(self.pid_path))};
error_log {_quote(str(self.error_log_path))} warn;

events {{
    worker_connections 1024;
}}

http {{
    types {{
        application/octet-stream safetensors bin json;
    }}
    default_type application/octet-stream;
    charset off;
    server_tokens off;

    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    gzip off;
    etag on;
    autoindex off;

    client_body_temp_path {_quote(str(p / "tmp" / "client_body"))};
    proxy_temp_path {_quote(str(p / "tmp" / "proxy"))};
    fastcgi_temp_path {_quote(str(p / "tmp" / "fastcgi"))};
    uwsgi_temp_path {_quote(str(p / "tmp" / "uwsgi"))};
    scgi_temp_path {_quote(str(p / "tmp" / "scgi"))};

    log_format modelget_json escape=json '{log_format}';
    access_log {_quote(str(self.access_log_path))} modelget_json;

    server {{
        listen 127.0.0.1:{self._port}{" ssl" if self.tls else ""};
        server_name _;{self._tls_config()}
        root {_quote(str(self.root))};
        limit_rate {_format_rate(self.limit_rate)};
        limit_rate_after {int(self.limit_rate_after)};

        location / {{
        }}
{self.extra_config}
    }}
}}
"""

    def _tls_config(self) -> str:
        if self.tls is None:
            return ""
        cert, key = self.tls
        return (
            f"\n        ssl_certificate {_quote(str(Path(cert).resolve()))};"
            f"\n        ssl_certificate_key {_quote(str(Path(key).resolve()))};"
        )

    def _write_config(self) -> None:
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(self.config_text())
        os.replace(tmp, self.conf_path)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> NginxServer:
        if self.running:
            return self
        if not self.root.is_dir():
            raise NginxError(f"{self.root} is not a directory")
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or find_free_port()
            try:
                self._start_once()
                break
            except _PortInUseError as exc:
                if attempt == attempts:
                    raise NginxError(str(exc)) from None
                log.debug("nginx port %d was taken; retrying", self._port)
        log.debug("%s serving %s at %s (prefix %s)", self.name, self.root, self.url, self.prefix)
        return self

    def _start_once(self) -> None:
        self._write_config()
        for path in (self.pid_path, self.error_log_path, self._stderr_path):
            path.unlink(missing_ok=True)
        cmd = [
            self.binary,
            "-p",
            str(self.prefix) + "/",
            "-c",
            str(self.conf_path),
            "-e",
            str(self.error_log_path),
        ]
        with self._stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        self._proc_box[:] = [proc]
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc_box.clear()
                text = self.error_log_text()
                if "Address already in use" in text:
                    raise _PortInUseError(
                        f"nginx could not bind 127.0.0.1:{self._port}: address in use"
                    )
                raise NginxError(f"nginx exited with status {proc.returncode}:\n{text}")
            # nginx writes its pid file only after it has bound its listening sockets.
            if self.pid_path.exists() and _accepts(self._port):
                self._workers_seen = self.worker_pids()
                return
            time.sleep(0.01)
        text = self.error_log_text()
        _terminate(proc, [], graceful_s=0.5)
        self._proc_box.clear()
        raise NginxError(f"nginx did not accept connections within {_START_TIMEOUT_S} s:\n{text}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop nginx gracefully (SIGQUIT), forcefully after ``timeout`` s. Logs stay readable."""
        proc = self._proc
        if proc is None:
            return
        workers = sorted(set(self._workers_seen) | set(self.worker_pids()))
        _terminate(proc, workers, graceful_s=timeout)
        self._proc_box.clear()

    def close(self) -> None:
        """Stop nginx and delete its prefix directory (config and logs)."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reload(self, timeout: float = 10.0) -> None:
        """Rewrite the config and apply it (SIGHUP); returns once only new workers remain."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._write_config()
            return
        old = set(self.worker_pids())
        self._write_config()
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = set(self.worker_pids())
            if now and not (now & old):
                self._workers_seen = sorted(now)
                return
            if proc.poll() is not None:
                raise NginxError(f"nginx exited during reload:\n{self.error_log_text()}")
            time.sleep(0.01)
        raise NginxError(f"nginx did not reload within {timeout} s:\n{self.error_log_text()}")

    def set_limit_rate(self, limit_rate: int | None, limit_rate_after: int | None = None) -> None:
        """Change the per-connection rate limit (bytes/s; None or 0: unlimited) and reload."""
        self.limit_rate = limit_rate
        if limit_rate_after is not None:
            self.limit_rate_after = limit_rate_after
        self.reload()

    # -- logs ----------------------------------------------------------------------------------

    def error_log_text(self) -> str:
        parts = []
        for path in (self.error_log_path, self._stderr_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(text)
        return "\n".join(parts) or "(nginx wrote nothing to its error log)"

    def access_log(self, *, min_entries: int = 0, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The requests served since the last ``clear_access_log()``, oldest first.

        nginx writes a request's line just after its response went out, so a client can see the
        response first: pass ``min_entries`` to wait (up to ``timeout`` s) for the lines.
        Numbers come back as int/float; absent headers and empty args as None.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries = self._read_access_log()
            if len(entries) >= min_entries or time.monotonic() >= deadline:
                return entries
            time.sleep(0.01)

    def _read_access_log(self) -> list[dict[str, Any]]:
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if not line.endswith("}"):
                continue  # a line being written right now
            raw = json.loads(line)
            entry: dict[str, Any] = {}
            for key, value in raw.items():
                if key in _INT_FIELDS:
                    entry[key] = int(value) if value.isdigit() else None
                elif key in _FLOAT_FIELDS:
                    entry[key] = float(value) if value else None
                elif key in _OPTIONAL_FIELDS:
                    entry[key] = value or None
                else:
                    entry[key] = value
            out.append(entry)
        return out

    def clear_access_log(self) -> None:
        """Forget the requests logged so far (nginx appends, so truncating is safe)."""
        with contextlib.suppress(FileNotFoundError), self.access_log_path.open("r+b") as f:
            f.truncate(0)

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"NginxServer({self.name!r}, root={str(self.root)!r}, {where})"


class _PortInUseError(NginxError):
    pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError as exc:
        if exc.errno not in (None, errno.ECONNREFUSED, errno.ETIMEDOUT):
            log.debug("probe of 127.0.0.1:%d failed: %s", port, exc)
        return False
