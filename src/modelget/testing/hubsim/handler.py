"""The simulator's request handler: the route mixins put together, and the dispatch that reads
a request, picks its route, applies the request-level faults (latency, an injected status, an
HTML error page, redirects) and logs it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from modelget.datatypes import RepoType
from modelget.testing.faults import BodySource, Effects, Fault, MatchContext, Progress, Stopped
from modelget.testing.hubsim.base import Headers
from modelget.testing.hubsim.control import ControlRoutes
from modelget.testing.hubsim.hf import HfRoutes, split_revision
from modelget.testing.hubsim.modelscope import MsRoutes, ms_envelope
from modelget.testing.hubsim.records import NOT_LOGGED

log = logging.getLogger(__name__)

_MAX_REQUEST_BODY = 16 * 1024 * 1024
_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class Handler(HfRoutes, MsRoutes, ControlRoutes):
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
        self._logged = None
        self._progress = Progress()
        self._effects = Effects()
        split = urlsplit(self.path)
        self._raw_path = split.path or "/"
        self._query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._body = self._read_request_body()
        if self.server.listener == "hub" and self._raw_path.startswith("/_sim/"):
            self._body_taken = True  # control requests: no faults, not logged
            self._logged = NOT_LOGGED
            self._control()
            return
        self._route = "other"
        sim._reqlog.begin(self)
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
            sim._reqlog.end(self)

    def _finish_log(self) -> None:
        logged = self._logged
        if logged is None:
            self._log_request(self._progress.sent)
        elif logged is not NOT_LOGGED and logged.bytes_sent != self._progress.sent:
            self.server.sim._reqlog.replace_bytes(logged, self._progress.sent)

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
        kind = {"datasets": "dataset", "spaces": "space"}.get(segs[0], "model")
        if kind != "model":  # /datasets/{repo}/resolve/...: the Hub's prefix for the type
            segs = segs[1:]
        repos = sim.repos_of(kind)
        if len(segs) >= 4 and segs[2] == "resolve":
            repo_id, rest = f"{segs[0]}/{segs[1]}", segs[3:]
        elif len(segs) >= 3 and segs[1] == "resolve" and segs[0] in repos:
            repo_id, rest = segs[0], segs[2:]
        else:
            return None
        repo = repos.get(repo_id)
        rev, path = split_revision(repo, rest)
        return "hf-resolve", path, lambda: self._hf_resolve(repo_id, repo, rev, path, kind)

    def _plan_ms(self, segs: list[str]) -> tuple[str, str | None, Callable[[], None]]:
        sim = self.server.sim
        # Models and datasets (ModelScope's studios, its spaces, have no download routes).
        types: dict[str, RepoType] = {"models": "model", "datasets": "dataset"}
        kind = types.get(segs[2]) if len(segs) > 2 else None
        if segs[:2] == ["api", "v1"] and kind is not None and len(segs) >= 5:
            ms_id = f"{segs[3]}/{segs[4]}"
            tail = segs[5:]
            repo = sim._repo_by_ms_id(ms_id, kind)
            if tail == ["repo"]:
                path = self._query.get("FilePath", "").lstrip("/")
                return "ms-file", path, lambda: self._ms_file(repo, ms_id, path, kind)
            return "ms-api", None, lambda: self._ms_api(repo, ms_id, tail, kind)
        return "ms-api", None, lambda: self._ms_error(404, f"{self._raw_path} not found")

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
                fault.status, ms_envelope(None, code=fault.status, message=message), headers
            )
        else:
            self._send_text(fault.status, message, headers)
