"""The simulator's request log: one :class:`RequestRecord` per request, and the requests still
in progress (so that :meth:`RequestLog.file_bytes_sent` counts bytes that are on their way)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote


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


NOT_LOGGED = RequestRecord(0.0, "", 0, "", "", {}, None, None, None, 0, 0, None, "", None)
"""The record of a request that is not logged (the control API)."""

FILE_ROUTES = ("hf-resolve", "cdn", "ms-file")
"""The routes whose responses carry file bodies."""


class RequestLog:
    """The records, oldest first, and the handlers with a request in progress."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._live: set[Any] = set()
        """Handlers with a request in progress (for ``file_bytes_sent``)."""

    def records(self) -> list[RequestRecord]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def replace_bytes(self, record: RequestRecord, bytes_sent: int) -> None:
        """Correct the byte count of ``record`` (the transfer ended otherwise than announced)."""
        with self._lock:
            for i in range(len(self._records) - 1, -1, -1):
                if self._records[i] is record:
                    self._records[i] = replace(record, bytes_sent=bytes_sent)
                    return

    def begin(self, handler: Any) -> None:
        """``handler`` has a request in progress."""
        with self._lock:
            self._live.add(handler)

    def end(self, handler: Any) -> None:
        with self._lock:
            self._live.discard(handler)

    def file_bytes_sent(self, path_contains: str = "") -> int:
        """File body bytes sent so far on paths containing ``path_contains`` (see
        :meth:`HubSimulator.file_bytes_sent <modelget.testing.hubsim.HubSimulator.file_bytes_sent>`)."""
        with self._lock:
            live = {id(getattr(h, "_logged", None)): h for h in self._live}
            total = 0
            for r in self._records:
                if r.route not in FILE_ROUTES or path_contains not in r.path:
                    continue
                handler = live.pop(id(r), None)
                total += handler._progress.sent if handler is not None else r.bytes_sent
            for handler in live.values():
                if getattr(handler, "_route", "") in FILE_ROUTES and path_contains in getattr(
                    handler, "_raw_path", ""
                ):
                    total += handler._progress.sent
        return total

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is in progress; True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._live:
                    return True
            time.sleep(0.02)
        return False


def select(
    records: list[RequestRecord],
    *,
    route: str | None = None,
    listener: str | None = None,
    method: str | None = None,
    path_glob: str | None = None,
    status: int | None = None,
) -> list[RequestRecord]:
    """The records matching every given filter (``path_glob``: on the URL path)."""
    return [
        r
        for r in records
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
