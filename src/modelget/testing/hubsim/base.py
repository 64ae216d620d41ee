"""What every route of the simulator's request handler shares: the request's state, the log
record, sending a response (with the body faults and cuts), JSON and text answers, auth.

The handler is one class assembled from a mixin per concern, each a subclass of
:class:`HandlerBase`: ``files`` (file bodies with Range, the CDN), ``hf``, ``modelscope``,
``control``; ``handler`` puts them together and dispatches.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from modelget.testing.faults import (
    BodySource,
    Cut,
    Effects,
    MatchContext,
    Progress,
    Stopped,
    abort_with_rst,
    send_body,
    wait_drained,
)
from modelget.testing.hubsim.records import RequestRecord
from modelget.testing.repos import Repo

if TYPE_CHECKING:
    from modelget.testing.hubsim.server import Listener

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]


def truthy(value: str | None) -> bool:
    """A query flag (``1``, ``true``, ``yes``, ``on``)."""
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


class HandlerBase(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubsim/1"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: Listener

    # The request's state, set by Handler._handle before any route runs.
    _started: float
    _status: int
    _headers_sent: bool
    _body_taken: bool
    _logged: RequestRecord | None
    _progress: Progress
    _effects: Effects
    _raw_path: str
    _query: dict[str, str]
    _body: bytes
    _route: str
    _ctx: MatchContext

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("hubsim %s: " + format, self.server.listener, *args)

    # --- the log record -------------------------------------------------------------------------

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
        self.server.sim._reqlog.append(self._logged)

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
