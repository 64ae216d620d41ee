"""A local Hugging Face Hub + ModelScope simulator for tests, benchmarks and the offline demo.

:class:`HubSimulator` serves model repositories from directories over real HTTP on 127.0.0.1,
well enough that the real ``huggingface_hub`` and ``modelscope_hub`` clients download from it:

* Hugging Face: ``/api/models/{repo}[/revision/{rev}]``, ``/api/models/{repo}/tree/{rev}[/{path}]``,
  ``/api/models/{repo}/refs`` and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``. LFS files are
  served directly, or (``cdn=True``) through a 302 to a signed URL on a second listener, the
  "CDN", like the real Hub.
* ModelScope: ``/api/v1/models/{owner}/{name}[/repo/files|/repo|/revisions]`` with the usual
  JSON envelope; every other ``/api/v1/`` and ``/openapi/`` path answers a JSON 404.

Faults (:class:`~modelget.testing.faults.Fault`) can be switched on and off at run time, also
from another process through ``/_sim/faults``; every request is recorded (:class:`RequestRecord`,
``/_sim/log``). Range requests follow RFC 7233 for single ranges; plain file bodies go out with
``os.sendfile`` so multi-GB files stream at disk speed with flat memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from modelget.testing.faults import (
    BodySource,
    Cut,
    Effects,
    Fault,
    FaultRegistry,
    MatchContext,
    Progress,
    Stopped,
    abort_with_rst,
    send_body,
    wait_drained,
)
from modelget.testing.repos import (
    Repo,
    RepoFile,
    Snapshot,
    TreeEntry,
    derive_commit,
    is_commit_id,
    scan_directory,
)

__all__ = ["Fault", "HubSimulator", "RequestRecord"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
Tamper = Callable[[str, str, Any], Any]
"""``(route, url_path, data) -> data``: see :meth:`HubSimulator.tamper`."""

_MAX_REQUEST_BODY = 16 * 1024 * 1024
_TAG_CREATED_AT = 4102444800  # 2100-01-01: legacy ModelScope clients never auto-pick these tags
_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_UNSATISFIABLE = (-1, -1)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it (``path`` raw, without the query)."""

    ts: float
    listener: str
    port: int
    method: str
    path: str
    query: dict[str, str]
    range: str | None
    authorization: str | None
    cookie: str | None
    status: int
    bytes_sent: int
    user_agent: str | None
    route: str
    """``hf-api``, ``hf-resolve``, ``cdn``, ``ms-api``, ``ms-file`` or ``other``."""
    host: str | None
    """The ``Host`` header."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NOT_LOGGED = RequestRecord(0.0, "", 0, "", "", {}, None, None, None, 0, 0, None, "", None)


class HubSimulator:
    """Hugging Face + ModelScope hub on 127.0.0.1, for tests. Use as a context manager.

    ``cdn``: also start a second listener and redirect LFS downloads to signed URLs on it.
    ``page_size``: paginate HF tree listings (``Link: <...>; rel="next"``).
    ``host_name``: the host name used in :attr:`url` (e.g. ``localhost``, so that the hub and
    the CDN, always addressed as 127.0.0.1, are different hosts); listeners bind 127.0.0.1.
    """

    def __init__(
        self,
        *,
        cdn: bool = False,
        name: str = "hub",
        signed_url_ttl_s: float = 3600,
        page_size: int | None = None,
        host_name: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
    ) -> None:
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.name = name
        self.cdn = cdn
        self.signed_url_ttl_s = signed_url_ttl_s
        self.page_size = page_size
        self.host_name = host_name
        self._want_ports = (port, cdn_port)
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        self._ms_ids: dict[str, str] = {}
        self._blobs: dict[str, tuple[RepoFile, str]] = {}
        self._faults = FaultRegistry()
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._live: set[Any] = set()
        """Handlers with a request in progress (for ``file_bytes_sent``)."""
        self._key = secrets.token_bytes(32)
        self._min_expires = 0
        """Signed URLs that expire before this are refused (see expire_signed_urls_now)."""
        self._stop = threading.Event()
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        self._tamper: Tamper | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> HubSimulator:
        """Bind the listeners and serve in background threads."""
        with self._lock:
            if self._servers:
                raise RuntimeError("simulator already started")
            self._stop.clear()
            servers = {"hub": _Server(("127.0.0.1", self._want_ports[0]), self, "hub")}
            try:
                if self.cdn:
                    servers["cdn"] = _Server(("127.0.0.1", self._want_ports[1]), self, "cdn")
            except OSError:
                servers["hub"].server_close()
                raise
            for listener, srv in servers.items():
                thread = threading.Thread(
                    target=srv.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"hubsim-{self.name}-{listener}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
            self._servers = servers
        return self

    def stop(self) -> None:
        """Stop serving, abort open connections (stalls included) and join the threads."""
        with self._lock:
            servers, threads = list(self._servers.values()), self._threads
            self._servers, self._threads = {}, []
        if not servers:
            return
        self._stop.set()
        for srv in servers:
            srv.shutdown()
        for srv in servers:
            srv.abort_connections()
            srv.server_close()
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for srv in servers:
            srv.join_handlers(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> HubSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<HubSimulator {self.name} {where} repos={sorted(self._repos)}>"

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def _server(self, listener: str) -> _Server:
        srv = self._servers.get(listener)
        if srv is None:
            raise RuntimeError(f"simulator {listener} listener is not running")
        return srv

    @property
    def port(self) -> int:
        return self._server("hub").server_port

    @property
    def cdn_port(self) -> int | None:
        return self._server("cdn").server_port if self.cdn else None

    @property
    def url(self) -> str:
        """Base URL of the hub, e.g. ``http://127.0.0.1:40123`` (the HF and MS endpoint)."""
        return f"http://{self.host_name}:{self.port}"

    @property
    def cdn_url(self) -> str | None:
        """Base URL of the CDN listener, or None without ``cdn=True``."""
        return f"http://127.0.0.1:{self.cdn_port}" if self.cdn else None

    # --- repositories ---------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        directory: str | Path,
        *,
        branch: str = "main",
        commit: str | None = None,
        tags: Iterable[str] = (),
        gated: bool = False,
        token: str | None = None,
        ms_id: str | None = None,
    ) -> str:
        """Serve ``directory`` as ``repo_id`` at ``branch``; return the commit id.

        Adding the same ``repo_id`` again adds another revision (point another branch at it).
        The default commit id is derived from the files (paths, sizes, sha256). ``gated``
        (needs ``token``): metadata is public, downloads need ``Authorization: Bearer token``.
        ``token`` alone: a private repo. ``ms_id``: the id on the ModelScope routes.
        """
        if not repo_id or repo_id.startswith("/") or repo_id.endswith("/"):
            raise ValueError(f"invalid repo id {repo_id!r}")
        if gated and token is None:
            raise ValueError("a gated repo needs the token that unlocks it")
        if commit is not None and not is_commit_id(commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, not {commit!r}")
        files = scan_directory(Path(directory))
        commit = commit or derive_commit(files)
        created = time.time()
        snapshot = Snapshot.build(commit, files, created)
        tags = (tags,) if isinstance(tags, str) else tuple(tags)
        with self._lock:
            existing = self._repos.get(repo_id)
            if existing is None:
                repo = Repo(
                    repo_id=repo_id,
                    ms_id=ms_id or repo_id,
                    created_at=created,
                    branches={branch: commit},
                    tags=dict.fromkeys(tags, commit),
                    snapshots={commit: snapshot},
                    gated=gated,
                    token=token,
                )
            else:
                old = existing.snapshots.get(commit)
                if old is not None and {p: f.sha256 for p, f in old.files.items()} != {
                    p: f.sha256 for p, f in snapshot.files.items()
                }:
                    raise ValueError(f"commit {commit} already exists with other files")
                repo = existing.with_revision(branch, snapshot, tags, created)
                if gated or token is not None or ms_id is not None:
                    self._ms_ids.pop(repo.ms_id, None)
                    repo = Repo(
                        repo_id=repo.repo_id,
                        ms_id=ms_id or repo.ms_id,
                        created_at=repo.created_at,
                        branches=repo.branches,
                        tags=repo.tags,
                        snapshots=repo.snapshots,
                        gated=gated or repo.gated,
                        token=token if token is not None else repo.token,
                    )
            self._repos[repo_id] = repo
            self._ms_ids[repo.ms_id] = repo_id
            for f in snapshot.files.values():
                if f.lfs:
                    self._blobs.setdefault(f.sha256, (f, commit))
        return commit

    def repo(self, repo_id: str) -> Repo:
        """The repository served as ``repo_id`` (KeyError if none)."""
        return self._repos[repo_id]

    def commit(self, repo_id: str, revision: str | None = None) -> str:
        """The commit a revision (default: the default branch) of ``repo_id`` resolves to."""
        snap = self._repos[repo_id].resolve(revision)
        if snap is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return snap.commit

    def _repo_by_ms_id(self, ms_id: str) -> Repo | None:
        repo_id = self._ms_ids.get(ms_id)
        return self._repos.get(repo_id) if repo_id is not None else None

    # --- URLs -----------------------------------------------------------------------------------

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The HF download URL of a file."""
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def ms_file_url(self, ms_id: str, path: str, revision: str = "master") -> str:
        """The ModelScope download URL of a file."""
        return (
            f"{self.url}/api/v1/models/{ms_id}/repo"
            f"?Revision={quote(revision, safe='')}&FilePath={quote(path, safe='')}"
        )

    def signed_cdn_url(self, sha256: str, *, expires: float | None = None) -> str:
        """A CDN URL for an LFS blob, signed with this simulator's key."""
        if self.cdn_url is None:
            raise RuntimeError("the simulator has no CDN (cdn=False)")
        exp = int(expires if expires is not None else time.time() + self.signed_url_ttl_s)
        if expires is None:
            exp = max(exp, self._min_expires)
        return f"{self.cdn_url}/cdn/{sha256}?expires={exp}&sig={self._sign(sha256, exp)}"

    def expire_signed_urls_now(self) -> None:
        """Every CDN URL issued so far is refused as expired from now on (the CDN answers
        403 ``Request has expired``, as for a URL past its time); URLs issued later work.
        Lets a test make signed URLs expire at a chosen point of a download."""
        with self._lock:
            self._min_expires = int(time.time() + self.signed_url_ttl_s) + 1

    def _sign(self, sha256: str, expires: int) -> str:
        return hmac.new(self._key, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()

    # --- faults ---------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> int:
        """Activate a fault; returns a handle for :meth:`remove_fault`."""
        return self._faults.add(fault)

    def remove_fault(self, handle: int) -> bool:
        return self._faults.remove(handle)

    def clear_faults(self) -> int:
        """Remove every fault; returns how many there were."""
        return self._faults.clear()

    def fault_hits(self, handle: int) -> int:
        """How many requests the fault has affected so far."""
        return self._faults.applied(handle)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """``[{"id", "fault", "seen", "applied"}]``."""
        return self._faults.snapshot()

    # --- a hostile mirror -----------------------------------------------------------------------

    def tamper(self, fn: Tamper | None) -> None:
        """Rewrite the JSON the hub answers with (None: stop): ``fn(route, path, data)`` gets
        the route (``hf-api`` or ``ms-api``), the decoded URL path and the data about to be
        sent (HF model info or tree page, ModelScope envelope) and returns what to send
        instead, so tests can play a mirror that lists hostile paths, digests or sizes."""
        self._tamper = fn

    # --- request log ----------------------------------------------------------------------------

    @property
    def log(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def file_bytes_sent(self, path_contains: str = "") -> int:
        """File body bytes sent so far (routes hf-resolve, cdn, ms-file) on paths containing
        ``path_contains``. Responses still being sent count what has left so far (a throttled
        response is logged up front with the count it is about to send)."""
        routes = ("hf-resolve", "cdn", "ms-file")
        with self._log_lock:
            live = {id(getattr(h, "_logged", None)): h for h in self._live}
            total = 0
            for r in self._log:
                if r.route not in routes or path_contains not in r.path:
                    continue
                handler = live.pop(id(r), None)
                total += handler._progress.sent if handler is not None else r.bytes_sent
            for handler in live.values():
                if getattr(handler, "_route", "") in routes and path_contains in getattr(
                    handler, "_raw_path", ""
                ):
                    total += handler._progress.sent
        return total

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is in progress (e.g. after killing a client); True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._log_lock:
                if not self._live:
                    return True
            time.sleep(0.02)
        return False

    def requests(
        self,
        *,
        route: str | None = None,
        listener: str | None = None,
        method: str | None = None,
        path_glob: str | None = None,
        status: int | None = None,
    ) -> list[RequestRecord]:
        """The logged requests matching every given filter (``path_glob``: on the URL path)."""
        return [
            r
            for r in self.log
            if (route is None or r.route == route)
            and (listener is None or r.listener == listener)
            and (method is None or r.method == method.upper())
            and (status is None or r.status == status)
            and (
                path_glob is None
                or fnmatchcase(r.path, path_glob)
                or fnmatchcase(unquote(r.path), path_glob)
            )
        ]

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(record)

    def _replace_record(self, record: RequestRecord, bytes_sent: int) -> None:
        with self._log_lock:
            for i in range(len(self._log) - 1, -1, -1):
                if self._log[i] is record:
                    self._log[i] = replace(record, bytes_sent=bytes_sent)
                    return


# --- HTTP plumbing ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """One listener; tracks its connections so that stop() can abort them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: HubSimulator, listener: str) -> None:
        self.sim = sim
        self.listener = listener
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.socket.getsockname()[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._process,
            args=(request, client_address),
            name=f"hubsim-{self.sim.name}-{self.listener}-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._conns[request] = thread
        thread.start()

    def _process(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            log.debug("hubsim %s: connection error", self.listener, exc_info=True)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("hubsim %s: request error from %s", self.listener, client_address)

    def abort_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            threads = list(self._conns.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (first, last) inclusive; ``(-1, -1)`` if unsatisfiable;
    None when the header is to be ignored (malformed or multi-range: answer 200)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if not first_s:
        if not last_s.isdigit():
            return None
        n = int(last_s)
        if n == 0 or size == 0:
            return _UNSATISFIABLE
        return max(0, size - n), size - 1
    if not first_s.isdigit() or (last_s and not last_s.isdigit()):
        return None
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    if first >= size:
        return _UNSATISFIABLE
    return first, min(int(last_s), size - 1) if last_s else size - 1


def _ms_envelope(data: Any, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {
        "Code": code,
        "Data": data,
        "Message": message,
        "RequestId": str(uuid.uuid4()),
        "Success": code == 200,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubsim/1"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("hubsim %s: " + format, self.server.listener, *args)

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET
    do_OPTIONS = do_GET

    # --- dispatch -------------------------------------------------------------------------------

    def _handle(self) -> None:
        sim = self.server.sim
        self._started = time.time()
        self._status = 0
        self._headers_sent = False
        self._body_taken = False
        self._logged: RequestRecord | None = None
        self._progress = Progress()
        self._effects = Effects()
        split = urlsplit(self.path)
        self._raw_path = split.path or "/"
        self._query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._body = self._read_request_body()
        if self.server.listener == "hub" and self._raw_path.startswith("/_sim/"):
            self._body_taken = True  # control requests: no faults, not logged
            self._logged = _NOT_LOGGED
            self._control()
            return
        self._route = "other"
        with sim._log_lock:
            sim._live.add(self)
        try:
            self._route, file_path, action = self._plan()
            self._ctx = MatchContext(
                route=self._route,
                listener=self.server.listener,
                method=self.command,
                url_path=unquote(self._raw_path),
                file_path=file_path,
                has_range="Range" in self.headers,
            )
            for fault in sim._faults.take(self._ctx, body=False):
                self._effects.add(fault)
            eff = self._effects
            if eff.latency_s and sim._stop.wait(eff.latency_s):
                raise Stopped("simulator stopped")
            if eff.status_fault is not None:
                self._send_fault_status(eff.status_fault)
            elif eff.html_error_200:
                self._respond(
                    200, [("Content-Type", "text/html")], BodySource(len(_NGINX_502), _NGINX_502)
                )
            elif eff.redirect_loop:
                host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
                self._respond(302, [("Location", f"http://{host}{self.path}")], None)
            elif eff.redirect_to:
                self._respond(302, [("Location", eff.redirect_to)], None)
            else:
                action()
        except OSError as exc:  # the client went away, a cut, or stop()
            log.debug("hubsim %s %s %s: %s", self.server.listener, self.command, self.path, exc)
            self.close_connection = True
        except Exception:
            log.exception("hubsim: error handling %s %s", self.command, self.path)
            self.close_connection = True
            if not self._headers_sent:
                with contextlib.suppress(OSError):
                    self._send_json(500, {"error": "hubsim internal error"})
        finally:
            self._finish_log()
            with sim._log_lock:
                sim._live.discard(self)

    def _finish_log(self) -> None:
        logged = self._logged
        if logged is None:
            self._log_request(self._progress.sent)
        elif logged is not _NOT_LOGGED and logged.bytes_sent != self._progress.sent:
            self.server.sim._replace_record(logged, self._progress.sent)

    def _log_request(self, bytes_sent: int) -> None:
        """Append this request to the log, *before* the response's last bytes are written (with
        the byte count about to be sent): a client holding its response always finds the
        record. The count is corrected afterwards if the transfer ends otherwise."""
        self._logged = RequestRecord(
            ts=self._started,
            listener=self.server.listener,
            port=self.server.server_port,
            method=self.command,
            path=self._raw_path,
            query=self._query,
            range=self.headers.get("Range"),
            authorization=self.headers.get("Authorization"),
            cookie=self.headers.get("Cookie"),
            status=self._status,
            bytes_sent=bytes_sent,
            user_agent=self.headers.get("User-Agent"),
            route=self._route,
            host=self.headers.get("Host"),
        )
        self.server.sim._record(self._logged)

    def _read_request_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True  # not supported: do not reuse the connection
            return b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > _MAX_REQUEST_BODY:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _plan(self) -> tuple[str, str | None, Callable[[], None]]:
        """(route, repo-relative file path or None, the handler) for this request."""
        sim = self.server.sim
        segs = [unquote(s) for s in self._raw_path.split("/")[1:]]
        if self.server.listener == "cdn":
            if len(segs) == 2 and segs[0] == "cdn":
                blob = sim._blobs.get(segs[1])
                return "cdn", blob[0].path if blob else None, lambda: self._cdn(segs[1], blob)
            return "cdn", None, lambda: self._send_text(404, "Not Found")
        if segs[0] == "openapi" or segs[:2] == ["api", "v1"]:
            return self._plan_ms(segs)
        if segs[0] == "api":
            return "hf-api", None, lambda: self._hf_api(segs[1:])
        resolved = self._plan_resolve(segs)
        if resolved is not None:
            return resolved
        return "other", None, lambda: self._send_json(404, {"error": "Not Found"})

    def _plan_resolve(self, segs: list[str]) -> tuple[str, str, Callable[[], None]] | None:
        sim = self.server.sim
        if len(segs) >= 4 and segs[2] == "resolve":
            repo_id, rest = f"{segs[0]}/{segs[1]}", segs[3:]
        elif len(segs) >= 3 and segs[1] == "resolve" and segs[0] in sim._repos:
            repo_id, rest = segs[0], segs[2:]
        else:
            return None
        repo = sim._repos.get(repo_id)
        rev, path = _split_revision(repo, rest)
        return "hf-resolve", path, lambda: self._hf_resolve(repo_id, repo, rev, path)

    def _plan_ms(self, segs: list[str]) -> tuple[str, str | None, Callable[[], None]]:
        sim = self.server.sim
        if segs[:3] == ["api", "v1", "models"] and len(segs) >= 5:
            ms_id = f"{segs[3]}/{segs[4]}"
            tail = segs[5:]
            repo = sim._repo_by_ms_id(ms_id)
            if tail == ["repo"]:
                path = self._query.get("FilePath", "").lstrip("/")
                return "ms-file", path, lambda: self._ms_file(repo, ms_id, path)
            return "ms-api", None, lambda: self._ms_api(repo, ms_id, tail)
        return "ms-api", None, lambda: self._ms_error(404, f"{self._raw_path} not found")

    # --- responses ------------------------------------------------------------------------------

    def _respond(self, status: int, headers: Headers, body: BodySource | None) -> None:
        length = body.length if body is not None else 0
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self._status = status
        if self.command == "HEAD" or body is None or length == 0:
            body = None
        elif self.command == "GET" and status in (200, 206):
            self._take_body_faults()
        if self._logged is None:
            cut = self._effects.cut
            expected = 0 if body is None else length
            self._log_request(min(expected, cut.after) if cut is not None else expected)
        self.end_headers()
        self._headers_sent = True
        if body is None:
            return
        applied = send_body(
            self.connection, body, self._effects, self.server.sim._stop, self._progress
        )
        if applied is not None:
            self._apply_cut(applied)

    def _take_body_faults(self) -> None:
        if not self._body_taken:
            self._body_taken = True
            for fault in self.server.sim._faults.take(self._ctx, body=True):
                self._effects.add(fault)

    def _apply_cut(self, cut: Cut) -> None:
        self.close_connection = True
        sock = self.connection
        stop = self.server.sim._stop
        if cut.kind == "stall" and stop.wait(cut.stall_s):
            raise Stopped("simulator stopped")
        if cut.kind == "reset":
            wait_drained(sock, stop)
            abort_with_rst(sock)
            self.rfile.close()
            sock.close()
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    def _send_json(self, status: int, obj: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        tamper = self.server.sim._tamper
        route = getattr(self, "_route", "other")
        if tamper is not None and status == 200 and route in ("hf-api", "ms-api"):
            obj = tamper(route, unquote(self._raw_path), obj)
        data = json.dumps(obj, separators=(",", ":")).encode()
        hdrs = [("Content-Type", "application/json; charset=utf-8"), *headers]
        self._respond(status, hdrs, BodySource(len(data), data))

    def _send_text(self, status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        data = text.encode()
        hdrs = [("Content-Type", "text/plain; charset=utf-8"), *headers]
        self._respond(status, hdrs, BodySource(len(data), data))

    def _send_fault_status(self, fault: Fault) -> None:
        assert fault.status is not None
        message = fault.error_message or f"hubsim injected HTTP {fault.status}"
        headers: Headers = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", str(fault.retry_after)))
        route = self._ctx.route
        if route.startswith("hf-") or route == "other":
            if fault.error_code:
                headers.append(("X-Error-Code", fault.error_code))
            headers.append(("X-Error-Message", message))
            self._send_json(fault.status, {"error": message}, headers)
        elif route.startswith("ms-"):
            self._send_json(
                fault.status, _ms_envelope(None, code=fault.status, message=message), headers
            )
        else:
            self._send_text(fault.status, message, headers)

    def _serve_file(self, f: RepoFile, etag: str, headers: Headers) -> None:
        """200 / 206 / 416 for a file, honouring Range, If-Range and the range faults."""
        headers = [
            *headers,
            ("ETag", f'"{etag}"'),
            ("Accept-Ranges", "bytes"),
            ("Content-Type", "application/octet-stream"),
        ]
        if self.command == "GET" and f.size > 0:
            self._take_body_faults()
        eff = self._effects
        range_header = self.headers.get("Range")
        if range_header is not None and not eff.ignore_range and self._if_range_matches(etag):
            rng = parse_range(range_header, f.size)
            if rng == _UNSATISFIABLE:
                self._respond(416, [*headers, ("Content-Range", f"bytes */{f.size}")], None)
                return
            if rng is not None:
                first, last = rng
                if eff.wrong_content_range:
                    first = min(max(0, first + eff.wrong_content_range), f.size - 1)
                    last = min(max(first, last + eff.wrong_content_range), f.size - 1)
                headers.append(("Content-Range", f"bytes {first}-{last}/{f.size}"))
                body = BodySource(last - first + 1, path=f.source, offset=first)
                self._respond(206, headers, body)
                return
        self._respond(200, headers, BodySource(f.size, path=f.source))

    def _if_range_matches(self, etag: str) -> bool:
        validator = self.headers.get("If-Range")
        # Strong comparison; we send no Last-Modified, so a date never matches.
        return validator is None or validator.strip() == f'"{etag}"'

    # --- auth -----------------------------------------------------------------------------------

    def _presented_token(self, *, cookie: bool) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        if cookie:
            for part in (self.headers.get("Cookie") or "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == "m_session_id" and value:
                    return value
        return None

    def _auth_status(self, repo: Repo, *, cookie: bool = False) -> int:
        """200 if allowed, 401 when no token was presented, 403 for a wrong one."""
        if repo.token is None:
            return 200
        token = self._presented_token(cookie=cookie)
        if token is None:
            return 401
        return 200 if hmac.compare_digest(token, repo.token) else 403

    # --- Hugging Face ---------------------------------------------------------------------------

    def _hf_error(
        self, status: int, code: str | None, message: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        hdrs: Headers = [("X-Error-Message", message), *headers]
        if code:
            hdrs.append(("X-Error-Code", code))
        self._send_json(status, {"error": message}, hdrs)

    def _hf_repo_not_found(self, repo_id: str) -> None:
        status = 404 if repo_id not in self.server.sim._repos else 401
        message = (
            "Repository Not Found for url: "
            f"{self._raw_path}. Please make sure you specified the correct `repo_id` and "
            "`repo_type`. If you are trying to access a private or gated repo, make sure you "
            "are authenticated."
        )
        self._hf_error(status, "RepoNotFound", message)

    def _hf_api(self, segs: list[str]) -> None:
        sim = self.server.sim
        if segs == ["agent-harnesses"]:
            self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
            return
        if len(segs) < 2 or segs[0] != "models":
            if segs and segs[0] in ("datasets", "spaces", "kernels") and len(segs) >= 2:
                self._hf_repo_not_found("/".join(segs[1:3]))
            else:
                self._hf_error(404, None, "Not Found")
            return
        rest = segs[1:]
        if len(rest) >= 2 and f"{rest[0]}/{rest[1]}" in sim._repos:
            repo_id, tail = f"{rest[0]}/{rest[1]}", rest[2:]
        elif rest[0] in sim._repos:
            repo_id, tail = rest[0], rest[1:]
        else:
            self._hf_repo_not_found("/".join(rest[:2]))
            return
        repo = sim._repos[repo_id]
        if repo.private and self._auth_status(repo) != 200:
            self._hf_repo_not_found(repo_id)
        elif not tail:
            self._hf_model_info(repo, None)
        elif tail[0] == "revision" and len(tail) >= 2:
            self._hf_model_info(repo, "/".join(tail[1:]))
        elif tail[0] == "tree" and len(tail) >= 2:
            rev, path = _split_revision(repo, tail[1:])
            self._hf_tree(repo, rev, path)
        elif tail == ["refs"]:
            self._hf_refs(repo)
        else:
            self._hf_error(404, None, "Not Found")

    def _hf_model_info(self, repo: Repo, revision: str | None) -> None:
        snap = repo.resolve(revision)
        if snap is None:
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        blobs = _truthy(self._query.get("blobs"))
        siblings: list[dict[str, Any]] = []
        for f in snap.files.values():
            sib: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sib["size"] = f.size
                sib["blobId"] = f.oid
                if f.lfs:
                    sib["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sib)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": snap.commit,
            "lastModified": _iso(snap.created_at),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "disabled": False,
            "gated": "auto" if repo.gated else False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "library_name": None,
            "siblings": siblings,
            "usedStorage": snap.total_size,
        }
        self._send_json(200, info)

    def _hf_tree(self, repo: Repo, revision: str, path: str) -> None:
        snap = repo.resolve(revision)
        if snap is None:
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        entries = snap.entries(path, recursive=_truthy(self._query.get("recursive")))
        if entries is None:
            self._hf_error(
                404,
                "EntryNotFound",
                f"{path} does not exist on {revision}",
                [("X-Repo-Commit", snap.commit)],
            )
            return
        expand = _truthy(self._query.get("expand"))
        items = [_hf_tree_item(e, snap, expand) for e in entries]
        headers: Headers = []
        page = self.server.sim.page_size
        if page is not None:
            try:
                cursor = max(0, int(self._query.get("cursor", "0")))
            except ValueError:
                cursor = 0
            if cursor + page < len(items):
                query = {k: v for k, v in self._query.items() if k != "cursor"}
                query["cursor"] = str(cursor + page)
                qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
                host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
                headers.append(("Link", f'<http://{host}{self._raw_path}?{qs}>; rel="next"'))
            items = items[cursor : cursor + page]
        self._send_json(200, items, headers)

    def _hf_refs(self, repo: Repo) -> None:
        def refs(names: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in names.items()
            ]

        self._send_json(
            200,
            {
                "branches": refs(dict(repo.branches), "heads"),
                "converts": [],
                "tags": refs(dict(repo.tags), "tags"),
            },
        )

    def _hf_resolve(self, repo_id: str, repo: Repo | None, revision: str, path: str) -> None:
        if repo is None or (repo.private and self._auth_status(repo) != 200):
            self._hf_repo_not_found(repo_id)
            return
        snap = repo.resolve(revision)
        if snap is None:
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        commit = [("X-Repo-Commit", snap.commit)]
        if repo.gated and (status := self._auth_status(repo)) != 200:
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            self._hf_error(status, "GatedRepo", message, commit)
            return
        f = snap.files.get(path)
        if f is None:
            self._hf_error(404, "EntryNotFound", f"Entry not found: {path}", commit)
            return
        if not f.lfs:
            self._serve_file(f, f.git_sha1, commit)
            return
        headers = [
            *commit,
            ("X-Linked-Etag", f'"{f.sha256}"'),
            ("X-Linked-Size", str(f.size)),
        ]
        if self.server.sim.cdn:
            location = self._signed_location(f.sha256)
            self._respond(302, [*headers, ("ETag", f'"{f.oid}"'), ("Location", location)], None)
            return
        self._serve_file(f, f.sha256, headers)

    def _signed_location(self, sha256: str) -> str:
        sim = self.server.sim
        expired = self._effects.expire_signed_urls
        return sim.signed_cdn_url(sha256, expires=time.time() - 60 if expired else None)

    # --- CDN ------------------------------------------------------------------------------------

    def _cdn(self, sha256: str, blob: tuple[RepoFile, str] | None) -> None:
        sim = self.server.sim
        if self.command not in ("GET", "HEAD"):
            self._send_text(405, "Method Not Allowed")
            return
        expires, sig = self._query.get("expires", ""), self._query.get("sig", "")
        if not expires.isdigit() or not hmac.compare_digest(sim._sign(sha256, int(expires)), sig):
            self._send_s3_error(403, "SignatureDoesNotMatch", "The request signature is invalid")
            return
        if (
            int(expires) < time.time()
            or int(expires) < sim._min_expires
            or self._effects.expire_signed_urls
        ):
            self._send_s3_error(403, "AccessDenied", "Request has expired")
            return
        if blob is None:
            self._send_s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        f, commit = blob
        headers = [("X-Repo-Commit", commit), ("X-Linked-Etag", f'"{f.sha256}"')]
        self._serve_file(f, f.sha256, headers)

    def _send_s3_error(self, status: int, code: str, message: str) -> None:
        data = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()
        self._respond(status, [("Content-Type", "application/xml")], BodySource(len(data), data))

    # --- ModelScope -----------------------------------------------------------------------------

    def _ms_error(self, status: int, message: str) -> None:
        self._send_json(status, _ms_envelope(None, code=status, message=message))

    def _ms_api(self, repo: Repo | None, ms_id: str, tail: list[str]) -> None:
        if repo is None:
            self._ms_error(404, f"model {ms_id} not found")
            return
        if repo.private and (status := self._auth_status(repo, cookie=True)) != 200:
            self._ms_error(status, "Unauthorized: please log in")
            return
        if self.command not in ("GET", "HEAD"):
            self._ms_error(405, "method not allowed")
        elif not tail:
            self._ms_model_info(repo, ms_id)
        elif tail == ["repo", "files"]:
            self._ms_files(repo)
        elif tail == ["revisions"]:
            self._ms_revisions(repo)
        else:
            self._ms_error(404, f"{self._raw_path} not found")

    def _ms_model_info(self, repo: Repo, ms_id: str) -> None:
        owner, name = ms_id.split("/", 1)
        snap = repo.resolve(None)
        assert snap is not None
        data = {
            "Id": int(hashlib.sha1(ms_id.encode()).hexdigest()[:8], 16),
            "Name": name,
            "Path": owner,
            "ChineseName": "",
            "Description": "",
            "CreatedTime": int(repo.created_at),
            "LastUpdatedTime": int(snap.created_at),
            "Downloads": 0,
            "Stars": 0,
            "IsPublished": 1,
            "Visibility": 1 if repo.private else 5,
            "Revision": snap.commit,
            "Tasks": [],
            "License": "",
        }
        self._send_json(200, _ms_envelope(data))

    def _ms_files(self, repo: Repo) -> None:
        revision = self._query.get("Revision")
        snap = repo.resolve_ms(revision)
        if snap is None:
            self._ms_error(404, f"revision {revision} not found")
            return
        root = self._query.get("Root", "").strip("/")
        entries = snap.entries(root, recursive=_truthy(self._query.get("Recursive")))
        if entries is None:
            self._ms_error(404, f"path {root} not found")
            return
        files = [_ms_file_item(e, snap) for e in entries]
        self._send_json(200, _ms_envelope({"Files": files}))

    def _ms_revisions(self, repo: Repo) -> None:
        def created(commit: str) -> int:
            return int(repo.snapshots[commit].created_at)

        branches = [
            {"Revision": n, "CreatedAt": created(c), "CommitId": c}
            for n, c in repo.branches.items()
        ]
        if "master" not in repo.branches:
            default = repo.branches[repo.default_branch]
            branches.insert(
                0, {"Revision": "master", "CreatedAt": created(default), "CommitId": default}
            )
        tags = [
            {"Revision": n, "CreatedAt": _TAG_CREATED_AT, "CommitId": c}
            for n, c in repo.tags.items()
        ]
        self._send_json(200, _ms_envelope({"RevisionMap": {"Branches": branches, "Tags": tags}}))

    def _ms_file(self, repo: Repo | None, ms_id: str, path: str) -> None:
        if self.command not in ("GET", "HEAD"):
            self._ms_error(405, "method not allowed")
            return
        if repo is None:
            self._ms_error(404, f"model {ms_id} not found")
            return
        if (status := self._auth_status(repo, cookie=True)) != 200:
            self._ms_error(status, "Unauthorized: please log in")
            return
        revision = self._query.get("Revision")
        snap = repo.resolve_ms(revision)
        if snap is None:
            self._ms_error(404, f"revision {revision} not found")
            return
        if not path:
            self._ms_error(400, "FilePath is required")
            return
        f = snap.files.get(path)
        if f is None:
            self._ms_error(404, f"file {path} not found")
            return
        headers = [("X-Linked-ETag", f'"{f.sha256}"')]
        if self.server.sim.cdn and f.lfs:
            self._respond(302, [*headers, ("Location", self._signed_location(f.sha256))], None)
            return
        self._serve_file(f, f.sha256, headers)

    # --- control API ----------------------------------------------------------------------------

    def _control(self) -> None:
        sim = self.server.sim
        path, method = self._raw_path.rstrip("/"), self.command
        try:
            if path == "/_sim/faults" and method == "POST":
                data = json.loads(self._body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("a fault is a JSON object")
                self._send_json(200, {"id": sim.add_fault(Fault.from_dict(data))})
            elif path == "/_sim/faults" and method == "DELETE":
                self._send_json(200, {"cleared": sim.clear_faults()})
            elif path == "/_sim/faults" and method == "GET":
                self._send_json(200, {"faults": sim.faults})
            elif path.startswith("/_sim/faults/") and method == "DELETE":
                removed = sim.remove_fault(int(path.rsplit("/", 1)[1]))
                self._send_json(200 if removed else 404, {"removed": removed})
            elif path == "/_sim/log" and method == "GET":
                self._send_json(200, {"requests": [r.to_dict() for r in sim.log]})
            elif path == "/_sim/log" and method == "DELETE":
                sim.clear_log()
                self._send_json(200, {"cleared": True})
            elif path == "/_sim/repos" and method == "GET":
                repos = {
                    rid: {"ms_id": r.ms_id, "branches": dict(r.branches), "tags": dict(r.tags)}
                    for rid, r in sim._repos.items()
                }
                self._send_json(200, {"repos": repos})
            else:
                self._send_json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
        except OSError:
            self.close_connection = True


def _split_revision(repo: Repo | None, segs: list[str]) -> tuple[str, str]:
    """Split decoded path segments into (revision, path); the revision may hold slashes."""
    if not segs:
        return "", ""
    if repo is not None:
        for k in range(1, len(segs) + 1):
            candidate = "/".join(segs[:k])
            if repo.resolve(candidate) is not None:
                return candidate, "/".join(segs[k:])
    return segs[0], "/".join(segs[1:])


def _hf_tree_item(entry: TreeEntry, snap: Snapshot, expand: bool) -> dict[str, Any]:
    f = entry.file
    item: dict[str, Any]
    if f is None:
        item = {"type": "directory", "oid": entry.oid, "size": 0, "path": entry.path}
    else:
        item = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
        if f.lfs:
            item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    if expand:
        item["lastCommit"] = {"id": snap.commit, "title": "Upload", "date": _iso(snap.created_at)}
    return item


def _ms_file_item(entry: TreeEntry, snap: Snapshot) -> dict[str, Any]:
    f = entry.file
    common = {
        "CommitMessage": "Upload",
        "CommittedDate": int(snap.created_at),
        "CommitterName": "hubsim",
        "InCheck": False,
        "Id": entry.oid,
        "Name": entry.path.rsplit("/", 1)[-1],
        "Path": entry.path,
        "Revision": snap.commit,
    }
    if f is None:
        return {**common, "IsLFS": False, "Mode": "16384", "Sha256": "", "Size": 0, "Type": "tree"}
    return {
        **common,
        "IsLFS": f.lfs,
        "Mode": "33188",
        "Sha256": f.sha256,
        "Size": f.size,
        "Type": "blob",
    }
