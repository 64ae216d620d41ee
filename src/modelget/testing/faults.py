"""Fault injection for the hub simulator: what a fault matches, what it does, and the body writer.

A :class:`Fault` names the requests it applies to (route, listener, method, a glob on the file
path, ``skip`` and ``times``) and the effects to inflict. Effects fall in two phases:

* request effects (``latency_s``, ``status``, ``html_error_200``, ``redirect_loop``,
  ``redirect_to``, ``expire_signed_urls``) are decided when the request arrives, HEAD requests included;
* body effects (``rate_bps``, ``reset_after_bytes``, ``truncate_after_bytes``,
  ``stall_after_bytes``, ``corrupt_offsets``, ``corrupt_every``, ``ignore_range``,
  ``wrong_content_range``) only touch bytes of a response body.

A fault with only body effects applies (and counts against ``skip``/``times``) only to GET
requests answered 200/206 with a non-empty body; one whose only effects are ``ignore_range`` or
``wrong_content_range`` only to requests that carry a ``Range`` header. So ``times=1`` means
"the first transfer", not "the HEAD before it". Byte counts and corruption offsets are in body
bytes and file offsets respectively: a Range request that covers a corrupted offset sees the
same flipped byte as a full download.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

Route = Literal["hf-api", "hf-resolve", "cdn", "ms-api", "ms-file", "*"]
Listener = Literal["hub", "cdn"]
CutKind = Literal["reset", "truncate", "stall"]

ROUTES: tuple[str, ...] = get_args(Route)
FILE_ROUTES = frozenset({"hf-resolve", "cdn", "ms-file"})
"""Routes whose ``path_glob`` is matched on the repo-relative file path (else the URL path)."""

_REQUEST_EFFECTS = (
    "latency_s",
    "status",
    "html_error_200",
    "redirect_loop",
    "redirect_to",
    "expire_signed_urls",
)
_RANGE_EFFECTS = ("ignore_range", "wrong_content_range")
_BODY_EFFECTS = (
    "rate_bps",
    "reset_after_bytes",
    "truncate_after_bytes",
    "stall_after_bytes",
    "corrupt_offsets",
    "corrupt_every",
    *_RANGE_EFFECTS,
)


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected misbehaviour. All fields are optional; the default matches every request.

    Matching: ``route`` (``"hf-api"``, ``"hf-resolve"``, ``"cdn"``, ``"ms-api"``,
    ``"ms-file"`` or ``"*"``), ``path_glob`` (fnmatch on the repo-relative file path for file
    routes, on the URL path otherwise), ``method``, ``listener`` (``"hub"``/``"cdn"``);
    ``skip`` lets the first N applicable requests through, then ``times`` requests are affected
    (None: all of them).
    """

    route: Route = "*"
    path_glob: str | None = None
    method: str | None = None
    listener: Listener | None = None
    times: int | None = None
    skip: int = 0

    latency_s: float = 0.0
    """Sleep this long before answering."""
    status: int | None = None
    """Answer with this status (and a small JSON/text body) instead of the real response."""
    retry_after: int | None = None
    """With ``status``: a ``Retry-After`` header (seconds)."""
    error_code: str | None = None
    """With ``status`` on Hugging Face routes: the ``X-Error-Code`` header."""
    error_message: str | None = None
    html_error_200: bool = False
    """Answer 200 with an nginx-style HTML error page."""
    redirect_loop: bool = False
    """Answer 302 to the very same URL."""
    redirect_to: str | None = None
    """Answer 302 to this URL (e.g. another simulator's: a server that sends clients elsewhere)."""
    expire_signed_urls: bool = False
    """The hub issues already-expired CDN URLs; the CDN rejects valid ones as expired."""

    rate_bps: float | None = None
    """Throttle the body to this many bytes per second (smooth token bucket)."""
    reset_after_bytes: int | None = None
    """Send this many body bytes, then abort the connection with a TCP RST."""
    truncate_after_bytes: int | None = None
    """Send this many body bytes, then close cleanly (early EOF)."""
    stall_after_bytes: int | None = None
    """Send this many body bytes, then go silent for ``stall_s`` and close."""
    stall_s: float = 0.0
    corrupt_offsets: tuple[int, ...] = ()
    """XOR 0xFF the bytes at these file offsets."""
    corrupt_every: int | None = None
    """XOR 0xFF the byte at every file offset that is a multiple of this (0, N, 2N, ...)."""
    ignore_range: bool = False
    """Answer 200 with the whole file even when a Range was asked for."""
    wrong_content_range: int = 0
    """Answer a Range request with a 206 whose range is shifted by this many bytes."""

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {self.route!r}")
        if self.listener not in (None, "hub", "cdn"):
            raise ValueError(f"listener must be 'hub', 'cdn' or None, not {self.listener!r}")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")
        for name in ("skip", "latency_s", "stall_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("reset_after_bytes", "truncate_after_bytes", "stall_after_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError("rate_bps must be > 0")
        if self.corrupt_every is not None and self.corrupt_every <= 0:
            raise ValueError("corrupt_every must be > 0")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if any(o < 0 for o in self.corrupt_offsets):
            raise ValueError("corrupt_offsets must be >= 0")
        if self.method is not None:
            object.__setattr__(self, "method", self.method.upper())
        object.__setattr__(self, "corrupt_offsets", tuple(self.corrupt_offsets))

    def _set_effects(self, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if getattr(self, n) != _DEFAULTS[n]]

    @property
    def has_request_effects(self) -> bool:
        return bool(self._set_effects(_REQUEST_EFFECTS))

    @property
    def is_body_fault(self) -> bool:
        """Only body effects: it applies to (and is counted on) responses with a body."""
        return not self.has_request_effects and bool(self._set_effects(_BODY_EFFECTS))

    @property
    def needs_range(self) -> bool:
        """Only range effects: it applies to (and is counted on) requests with a Range header."""
        body = self._set_effects(_BODY_EFFECTS)
        return self.is_body_fault and set(body) <= set(_RANGE_EFFECTS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with only the non-default fields."""
        out = {k: v for k, v in asdict(self).items() if v != _DEFAULTS[k]}
        if "corrupt_offsets" in out:
            out["corrupt_offsets"] = list(out["corrupt_offsets"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Fault fields: {sorted(unknown)}")
        kwargs = dict(data)
        if "corrupt_offsets" in kwargs:
            kwargs["corrupt_offsets"] = tuple(int(o) for o in kwargs["corrupt_offsets"])
        if isinstance(kwargs.get("wrong_content_range"), bool):
            kwargs["wrong_content_range"] = int(kwargs["wrong_content_range"])
        return cls(**kwargs)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Fault)}


@dataclass(frozen=True)
class MatchContext:
    """What a fault is matched against."""

    route: str
    listener: str
    method: str
    url_path: str
    file_path: str | None = None
    has_range: bool = False


@dataclass(frozen=True)
class Cut:
    kind: CutKind
    after: int
    stall_s: float = 0.0


@dataclass
class Effects:
    """The merged effects of every fault that applies to one request."""

    latency_s: float = 0.0
    status_fault: Fault | None = None
    html_error_200: bool = False
    redirect_loop: bool = False
    redirect_to: str | None = None
    expire_signed_urls: bool = False
    ignore_range: bool = False
    wrong_content_range: int = 0
    rate_bps: float | None = None
    cut: Cut | None = None
    corrupt_offsets: frozenset[int] = frozenset()
    corrupt_every: tuple[int, ...] = ()
    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)
        self.latency_s += fault.latency_s
        if fault.status is not None and self.status_fault is None:
            self.status_fault = fault
        self.html_error_200 |= fault.html_error_200
        self.redirect_loop |= fault.redirect_loop
        self.redirect_to = self.redirect_to or fault.redirect_to
        self.expire_signed_urls |= fault.expire_signed_urls
        self.ignore_range |= fault.ignore_range
        self.wrong_content_range = self.wrong_content_range or fault.wrong_content_range
        if fault.rate_bps is not None:
            self.rate_bps = min(self.rate_bps or fault.rate_bps, fault.rate_bps)
        for kind, after in (
            ("reset", fault.reset_after_bytes),
            ("truncate", fault.truncate_after_bytes),
            ("stall", fault.stall_after_bytes),
        ):
            if after is not None and (self.cut is None or after < self.cut.after):
                self.cut = Cut(kind, after, fault.stall_s)  # type: ignore[arg-type]
        if fault.corrupt_offsets:
            self.corrupt_offsets = self.corrupt_offsets | frozenset(fault.corrupt_offsets)
        if fault.corrupt_every is not None:
            self.corrupt_every = (*self.corrupt_every, fault.corrupt_every)

    @property
    def corrupts(self) -> bool:
        return bool(self.corrupt_offsets or self.corrupt_every)

    def corrupt(self, buf: bytearray, file_offset: int) -> None:
        """Flip (XOR 0xFF) the bytes of ``buf`` that sit at corrupted file offsets."""
        end = file_offset + len(buf)
        for off in self.corrupt_offsets:
            if file_offset <= off < end:
                buf[off - file_offset] ^= 0xFF
        flipped: set[int] = set()
        for period in self.corrupt_every:
            first = -(-file_offset // period) * period
            for off in range(first, end, period):
                if off not in flipped and off not in self.corrupt_offsets:
                    flipped.add(off)
                    buf[off - file_offset] ^= 0xFF


@dataclass
class _Entry:
    fault: Fault
    seen: int = 0
    applied: int = 0


class FaultRegistry:
    """Thread-safe list of active faults with their skip/times counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._next_id = 1

    def add(self, fault: Fault) -> int:
        with self._lock:
            handle = self._next_id
            self._next_id += 1
            self._entries[handle] = _Entry(fault)
            return handle

    def remove(self, handle: int) -> bool:
        with self._lock:
            return self._entries.pop(handle, None) is not None

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            return n

    def snapshot(self) -> list[dict[str, Any]]:
        """``[{"id", "fault", "seen", "applied"}]`` for every registered fault."""
        with self._lock:
            return [
                {"id": h, "fault": e.fault.to_dict(), "seen": e.seen, "applied": e.applied}
                for h, e in self._entries.items()
            ]

    def applied(self, handle: int) -> int:
        """How many requests the fault has affected so far (0 if unknown)."""
        with self._lock:
            entry = self._entries.get(handle)
            return entry.applied if entry else 0

    def take(self, ctx: MatchContext, *, body: bool) -> list[Fault]:
        """Faults of one phase that apply to this request; counts them."""
        out: list[Fault] = []
        with self._lock:
            for entry in self._entries.values():
                fault = entry.fault
                if fault.is_body_fault != body or not _matches(fault, ctx):
                    continue
                if fault.needs_range and not ctx.has_range:
                    continue
                entry.seen += 1
                if entry.seen <= fault.skip:
                    continue
                if fault.times is not None and entry.applied >= fault.times:
                    continue
                entry.applied += 1
                out.append(fault)
        return out


def _matches(fault: Fault, ctx: MatchContext) -> bool:
    if fault.route != "*" and fault.route != ctx.route:
        return False
    if fault.listener is not None and fault.listener != ctx.listener:
        return False
    if fault.method is not None and fault.method != ctx.method:
        return False
    if fault.path_glob is not None:
        target = ctx.file_path if ctx.file_path is not None else ctx.url_path
        if not fnmatch.fnmatchcase(target, fault.path_glob):
            return False
    return True


# --- body writer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BodySource:
    """A response body: ``length`` bytes of ``data``, or of the file ``path`` from ``offset``."""

    length: int
    data: bytes | None = None
    path: Path | None = None
    offset: int = 0
    """File offset of the first body byte (corruption offsets are file offsets)."""


@dataclass
class Progress:
    sent: int = 0


class Stopped(ConnectionAbortedError):
    """The simulator is stopping: abandon the response."""


def send_body(
    sock: socket.socket,
    source: BodySource,
    effects: Effects,
    stop: threading.Event,
    progress: Progress,
) -> Cut | None:
    """Write the body (with the effects) to ``sock``; return the cut to apply, if any.

    Unthrottled, uncorrupted file bodies go through ``os.sendfile``. ``progress.sent`` counts
    the bytes handed to the socket, also when a connection error interrupts the transfer.
    """
    limit = source.length
    cut = effects.cut
    if cut is not None and cut.after < limit:
        limit = cut.after
    else:
        cut = None
    if source.path is not None and effects.rate_bps is None and not effects.corrupts:
        _sendfile(sock, source.path, source.offset, limit, progress)
    else:
        _send_slices(sock, source, limit, effects, stop, progress)
    return cut


def _sendfile(sock: socket.socket, path: Path, offset: int, count: int, progress: Progress) -> None:
    with path.open("rb") as fh:
        in_fd, out_fd = fh.fileno(), sock.fileno()
        while progress.sent < count:
            n = os.sendfile(out_fd, in_fd, offset + progress.sent, count - progress.sent)
            if n == 0:
                raise ConnectionAbortedError(f"{path} shrank while it was being served")
            progress.sent += n


def _send_slices(
    sock: socket.socket,
    source: BodySource,
    limit: int,
    effects: Effects,
    stop: threading.Event,
    progress: Progress,
) -> None:
    rate = effects.rate_bps
    slice_size = 1 << 20 if rate is None else int(max(1024, min(64 * 1024, rate / 20)))
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(source.path.open("rb")) if source.path is not None else None
        pos = 0
        while pos < limit:
            n = min(slice_size, limit - pos)
            if fh is not None:
                chunk = os.pread(fh.fileno(), n, source.offset + pos)
                if len(chunk) != n:
                    raise ConnectionAbortedError(f"{source.path} shrank while it was being served")
            else:
                assert source.data is not None
                chunk = source.data[pos : pos + n]
            buf = bytearray(chunk)
            if effects.corrupts:
                effects.corrupt(buf, source.offset + pos)
            sock.sendall(buf)
            pos += n
            progress.sent = pos
            if rate is not None:
                delay = start + pos / rate - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    raise Stopped("simulator stopped")
            elif stop.is_set():
                raise Stopped("simulator stopped")


def wait_drained(sock: socket.socket, stop: threading.Event, timeout: float = 5.0) -> None:
    """Wait until the peer has acknowledged everything sent (Linux ``TIOCOUTQ``), bounded."""
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline and not stop.is_set():
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
        except OSError:
            return
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(0.002)


def abort_with_rst(sock: socket.socket) -> None:
    """Make the next close of ``sock`` send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
