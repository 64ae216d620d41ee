"""aria2c's JSON-RPC over HTTP on loopback (:class:`Aria2RPC`), and its one error
(:class:`RPCError`).

Why not aria2p's client (which ``Aria2Engine.api`` still hands out, for inspection): importing
aria2p costs 0.12 s of CPU on every pull (it loads its command-line interface, loguru, requests
and urllib3 at import), measured with ``python -X importtime``: a fifth of a 91 MB pull on
loopback, on the critical path (the engine cannot start aria2c before its client exists, and
Python runs the import under the same lock as the probe and plan). The calls the engine makes
are a handful of JSON-RPC methods; this speaks them with ``http.client`` (already loaded by
httpx), never through a proxy (the secret must reach our loopback aria2c only), one
keep-alive connection shared by the engine's threads under a lock."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Sequence
from typing import Any

RPC_TIMEOUT_S = 10.0


class RPCError(Exception):
    """aria2c refused a call (``code``: aria2's error code, 1 when it gave none), or it could
    not be reached (``code`` None)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Aria2RPC:
    """The JSON-RPC methods of one aria2c at ``127.0.0.1:port``, the secret added to each
    call. Thread-safe. ``timeout`` (seconds) may be changed between calls."""

    def __init__(self, port: int, secret: str, timeout: float = RPC_TIMEOUT_S) -> None:
        self.port = port
        self.secret = secret
        self.timeout = timeout
        self._token = f"token:{secret}"
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None

    # --- transport ---

    def _post(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode()
        with self._lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None:
                    conn = self._conn = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=self.timeout
                    )
                conn.timeout = self.timeout
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
                try:
                    conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    # A kept-alive connection aria2c closed meanwhile: one fresh try.
                    if attempt == 1 and isinstance(
                        exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                    ):
                        continue
                    raise RPCError(f"aria2c RPC unreachable: {type(exc).__name__}: {exc}") from exc
                break
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RPCError(f"aria2c RPC answered no JSON (HTTP {response.status})") from exc

    def post_raw(self, payload: str) -> dict[str, Any]:
        """POST a JSON-RPC payload as it is; its answer, decoded (for aria2p's client)."""
        answer = self._post(json.loads(payload))
        if not isinstance(answer, dict):
            raise RPCError("malformed answer")
        return answer

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One method's result; raises :class:`RPCError` for a refusal."""
        return self._invoke(method, [self._token, *params])

    def _invoke(self, method: str, params: list[Any]) -> Any:
        answer = self._post(
            # One answer per HTTP request: the id needs no counter.
            {"jsonrpc": "2.0", "id": "modelget", "method": method, "params": params}
        )
        if not isinstance(answer, dict):
            raise RPCError(f"{method}: malformed answer")
        error = answer.get("error")
        if error is not None:
            raise _refusal(error)
        return answer.get("result")

    def multicall(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """``system.multicall``: one round trip for many calls. Each answer is the call's
        result, or an :class:`RPCError` for a call aria2c refused."""
        # system.multicall itself takes no secret; each call in it does.
        answers = self._invoke(
            "system.multicall",
            [[{"methodName": m, "params": [self._token, *p]} for m, p in calls]],
        )
        out: list[Any] = []
        for answer in answers or []:
            if isinstance(answer, list) and answer:
                out.append(answer[0])
            elif isinstance(answer, dict):
                out.append(_refusal(answer))
            else:
                out.append(answer)
        return out

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- the methods the engine uses ---

    def get_version(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("aria2.getVersion")
        return result

    def get_global_stat(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("aria2.getGlobalStat")
        return result

    def tell_status(self, gid: str, keys: Sequence[str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call("aria2.tellStatus", [gid, list(keys)] if keys else [gid])
        return result

    def change_uri(
        self, gid: str, file_index: int, del_uris: Sequence[str], add_uris: Sequence[str]
    ) -> list[int]:
        result: list[int] = self.call(
            "aria2.changeUri", [gid, file_index, list(del_uris), list(add_uris)]
        )
        return result

    def change_position(self, gid: str, pos: int, how: str) -> int:
        result: int = self.call("aria2.changePosition", [gid, pos, how])
        return result

    def force_pause(self, gid: str) -> str:
        result: str = self.call("aria2.forcePause", [gid])
        return result

    def unpause(self, gid: str) -> str:
        result: str = self.call("aria2.unpause", [gid])
        return result

    def force_remove(self, gid: str) -> str:
        result: str = self.call("aria2.forceRemove", [gid])
        return result


def _refusal(error: Any) -> RPCError:
    if not isinstance(error, dict):
        return RPCError(str(error), 1)
    return RPCError(str(error.get("message", "")), int(error.get("code", 1) or 1))
