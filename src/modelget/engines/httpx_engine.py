"""The built-in engine: parallel HTTP range requests over httpx, from several mirrors at once.

How one file is fetched:

* The ``.incomplete`` file is preallocated to its final size and every byte is written at its
  offset (``os.pwrite``), so memory stays flat whatever the file size. A ``.ranges`` sidecar
  (see :mod:`modelget.engines.ranges`) records what is on disk; after a kill -9 or a reboot
  only the missing ranges are fetched. Requests carry ``If-Range`` with the ETag seen before,
  so a file that changed on a mirror restarts instead of mixing two versions.
* The missing bytes are cut into segments. Workers (up to ``max_connections`` over all files,
  and each mirror's own ``max_connections``) take a mirror, the least loaded first in rank
  order, then a segment. An idle worker steals the second half of the largest segment still
  in flight, so a slow mirror's tail goes to a fast one.
* A watchdog on bytes per second (not only the read timeout) drops a connection that is
  slower than ``lowest_speed_bps`` for ``stall_timeout_s``; its segment, minus the bytes
  already written, goes back to the pool. A mirror that keeps failing (``max_tries``
  consecutive attempts, with tenacity's exponential backoff and the server's Retry-After) or
  fails in a way retrying cannot fix (404, an HTML page, a wrong Content-Range, a 200 answer
  to a Range request) is dropped for the file; the others finish it.
* Redirects are followed by hand: the mirror's headers (its token) go only to its own
  origin, never to the signed CDN URL it redirects to. A signed URL that is refused later
  (expired) is resolved again from the mirror's own URL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception

from modelget import __version__
from modelget.engines import EngineOptions, FetchJob, FetchResult, OnComplete, SourceURL
from modelget.engines.ranges import (
    RangeSet,
    Sidecar,
    load_sidecar,
    remove_sidecar,
    save_sidecar,
    split,
    steal_point,
)
from modelget.engines.redirects import redact_url, same_origin
from modelget.events import Reporter
from modelget.retry import (
    MAX_RETRY_AFTER_S,
    AttemptError,
    is_retryable,
    parse_retry_after,
    status_is_retryable,
    transfer_wait,
)

MAX_REDIRECTS = 5
FLUSH_INTERVAL_S = 0.5
STEAL_AFTER_S = 1.0
MAX_ATTEMPT_LINES = 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Cancelled(Exception):
    pass


class _FileFatal(Exception):
    """A local problem that no mirror can fix (disk full, I/O error)."""


class RateLimiter:
    """A shared bandwidth cap: callers ask for ``n`` bytes and sleep until they may have them.

    Virtual-clock token bucket: each grant moves the next free instant forward by
    ``n / rate``; up to ``burst_s`` of unused time may be banked.
    """

    def __init__(self, rate_bps: int, burst_s: float = 0.25) -> None:
        self.rate = float(rate_bps)
        self.burst_s = burst_s
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int, cancel: threading.Event) -> float:
        """Block until ``n`` bytes may be used; return the seconds slept."""
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - self.burst_s)
            self._next = start + n / self.rate
            wait = start - now
        if wait > 0:
            if cancel.wait(wait):
                raise _Cancelled()
            return wait
        return 0.0


class _Slots:
    """Connections in flight: per mirror (its ``max_connections``) and over all files."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.in_use: dict[str, int] = {}
        self.cond = threading.Condition()
        self.resume_at: dict[str, float] = {}
        """Per mirror: no new request before this ``time.monotonic()`` (its Retry-After)."""

    def busy(self) -> int:
        return sum(self.in_use.values())

    def backing_off(self, mirror: str, now: float) -> float:
        """Seconds ``mirror`` asked us to wait still (0 when none)."""
        return max(0.0, self.resume_at.get(mirror, 0.0) - now)

    def back_off(self, mirror: str, seconds: float) -> None:
        """``mirror`` said Retry-After: no connection of any file asks it again before then."""
        with self.cond:
            until = time.monotonic() + seconds
            if until > self.resume_at.get(mirror, 0.0):
                self.resume_at[mirror] = until


@dataclass
class _Segment:
    start: int
    pos: int
    end: int
    """Exclusive; lowered when another worker steals the tail."""
    since: float = field(default_factory=time.monotonic)
    """When its current owner started on it (``start`` was ``pos`` then)."""

    def left(self) -> int:
        return max(0, self.end - self.pos)

    def seconds_left(self, now: float) -> float:
        """At the owner's speed so far; infinite when nothing came yet."""
        got = self.pos - self.start
        elapsed = now - self.since
        if got <= 0 or elapsed <= 0:
            return float("inf")
        return self.left() / (got / elapsed)


@dataclass
class _Mirror:
    source: SourceURL
    final_url: str | None = None
    """Where the source URL last redirected to (a signed CDN URL), reused by later requests."""
    failures: int = 0
    """Consecutive failed attempts; reset by a success."""
    dropped: str | None = None
    bytes: int = 0

    @property
    def name(self) -> str:
        return self.source.mirror


@dataclass
class _Outcome:
    complete: bool
    error: str | None = None
    attempts: list[str] = field(default_factory=list)


class _Transfer:
    """One file: segments, workers, sidecar."""

    def __init__(
        self,
        engine: HttpxEngine,
        job: FetchJob,
        reporter: Reporter,
        cancel: threading.Event,
    ) -> None:
        self.engine = engine
        self.options = engine.options
        self.job = job
        self.reporter = reporter
        self.cancel = cancel
        self.mirrors = [_Mirror(s) for s in job.sources]
        self.lock = threading.Lock()
        self.queue: deque[_Segment] = deque()
        self.active: list[_Segment] = []
        self.done = RangeSet()
        self.validators: dict[str, str] = {}
        self.attempts: list[str] = []
        self.fatal: str | None = None
        self.discard = False
        """Throw the partial file away instead of keeping it for resume."""
        self.fd = -1
        self.steal_min = max(256 * 1024, self.options.min_split_bytes // 4)

    # --- bookkeeping ------------------------------------------------------------------------

    def _note(self, mirror: _Mirror, message: str) -> None:
        line = f"{mirror.name}: {message}"
        with self.lock:
            if (not self.attempts or self.attempts[-1] != line) and len(
                self.attempts
            ) < MAX_ATTEMPT_LINES:
                self.attempts.append(line)

    def _drop(self, mirror: _Mirror, reason: str) -> None:
        with self.lock:
            if mirror.dropped is not None:
                return
            mirror.dropped = reason
        self._note(mirror, reason)
        self.reporter.on_mirror_failed(self.job.path, mirror.name, reason)

    def _victim(self, now: float) -> tuple[_Segment | None, bool]:
        """The active segment an idle worker should split, and whether any may be split later.

        Stealing closes the owner's stream early, and what it had in flight (socket buffers:
        megabytes on a fast link) is wasted, so only a segment that would take its owner more
        than ``STEAL_AFTER_S`` longer is split, once the owner has had time to show its speed.
        """
        later = False
        best: _Segment | None = None
        best_left = 0.0
        for seg in self.active:
            if steal_point(seg.pos, seg.end, self.steal_min) is None:
                continue
            later = True
            if now - seg.since < STEAL_AFTER_S:
                continue
            left = seg.seconds_left(now)
            if left > STEAL_AFTER_S and left > best_left:
                best, best_left = seg, left
        return best, later

    def _work(self) -> str:
        """``now`` (a segment can be taken), ``later`` (one may become stealable) or ``none``."""
        with self.lock:
            if self.fatal is not None:
                return "none"
            if self.queue:
                return "now"
            victim, later = self._victim(time.monotonic())
            return "now" if victim is not None else "later" if later else "none"

    def _take(self) -> _Segment | None:
        with self.lock:
            if self.fatal is not None:
                return None
            if self.queue:
                seg = self.queue.popleft()
                seg.since = time.monotonic()
                self.active.append(seg)
                return seg
            victim, _ = self._victim(time.monotonic())
            if victim is None:
                return None
            cut = steal_point(victim.pos, victim.end, self.steal_min)
            if cut is None:
                return None
            seg = _Segment(cut, cut, victim.end)
            victim.end = cut
            self.active.append(seg)
            return seg

    def _give_back(self, seg: _Segment) -> None:
        with self.lock:
            if seg in self.active:
                self.active.remove(seg)
            if seg.pos < seg.end:
                self.queue.appendleft(_Segment(seg.pos, seg.pos, seg.end))

    def _finish(self, seg: _Segment) -> None:
        with self.lock:
            if seg in self.active:
                self.active.remove(seg)

    # --- mirrors and connections --------------------------------------------------------------

    def _acquire(self) -> _Mirror | None:
        """A healthy mirror with a free connection, the least loaded first (rank breaks ties);
        waits while all are busy; None when no mirror is left or no work is left."""
        slots = self.engine.slots
        with slots.cond:
            while True:
                if self.cancel.is_set():
                    raise _Cancelled()
                healthy = [m for m in self.mirrors if m.dropped is None]
                work = self._work()
                if not healthy or work == "none":
                    return None
                if work == "now" and slots.busy() < slots.total:
                    now = time.monotonic()
                    free = [
                        (slots.in_use.get(m.name, 0) / max(1, m.source.max_connections), i, m)
                        for i, m in enumerate(healthy)
                        if slots.in_use.get(m.name, 0) < max(1, m.source.max_connections)
                        and not slots.backing_off(m.name, now)
                    ]
                    if free:
                        _, _, mirror = min(free, key=lambda t: (t[0], t[1]))
                        slots.in_use[mirror.name] = slots.in_use.get(mirror.name, 0) + 1
                        return mirror
                slots.cond.wait(0.2)

    def _release(self, mirror: _Mirror) -> None:
        slots = self.engine.slots
        with slots.cond:
            slots.in_use[mirror.name] -= 1
            slots.cond.notify_all()

    def _sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise _Cancelled()

    def _stop(self, mirror: _Mirror) -> object:
        def stop(_: RetryCallState) -> bool:
            return (
                mirror.dropped is not None
                or self.fatal is not None
                or self.cancel.is_set()
                or mirror.failures >= self.options.max_tries
            )

        return stop

    # --- workers ----------------------------------------------------------------------------

    def _worker(self) -> None:
        try:
            while True:
                mirror = self._acquire()
                if mirror is None:
                    return
                try:
                    for attempt in Retrying(
                        stop=self._stop(mirror),  # type: ignore[arg-type]
                        wait=transfer_wait(self.options.retry_wait_s),
                        retry=retry_if_exception(is_retryable),
                        sleep=self._sleep,
                        reraise=True,
                    ):
                        with attempt:
                            # Another connection may have been told Retry-After meanwhile.
                            self._sleep(
                                self.engine.slots.backing_off(mirror.name, time.monotonic())
                            )
                            seg = self._take()
                            if seg is not None:
                                self._run_segment(mirror, seg)
                except AttemptError as exc:
                    self._drop(
                        mirror,
                        exc.message
                        if not exc.retryable
                        else f"{exc.message} (gave up after {mirror.failures} tries)",
                    )
                finally:
                    self._release(mirror)
        except _Cancelled:
            return
        except _FileFatal as exc:
            with self.lock:
                self.fatal = self.fatal or str(exc)

    def _run_segment(self, mirror: _Mirror, seg: _Segment) -> None:
        try:
            self._fetch(mirror, seg)
        except AttemptError as exc:
            self._give_back(seg)
            with self.lock:
                mirror.failures += 1
            if exc.retry_after:
                self.engine.slots.back_off(mirror.name, min(exc.retry_after, MAX_RETRY_AFTER_S))
            self._note(mirror, exc.message)
            raise
        except (_Cancelled, _FileFatal):
            self._give_back(seg)
            raise
        except BaseException:
            self._give_back(seg)
            raise
        self._finish(seg)
        with self.lock:
            mirror.failures = 0

    # --- one request ------------------------------------------------------------------------

    def _fetch(self, mirror: _Mirror, seg: _Segment) -> None:
        source = mirror.source
        url = mirror.final_url or source.url
        with self.lock:
            first, last = seg.pos, seg.end - 1
            validator = self.validators.get(mirror.name)
        if first > last:
            return
        for _hop in range(MAX_REDIRECTS + 1):
            headers = {"Range": f"bytes={first}-{last}", "Accept-Encoding": "identity"}
            if validator:
                headers["If-Range"] = validator
            if source.headers and same_origin(url, source.url):
                headers = {**source.headers, **headers}
            try:
                with self.engine.client.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise AttemptError(f"HTTP {status} without a Location", retryable=False)
                        url = str(httpx.URL(url).join(location))
                        if httpx.URL(url).scheme not in ("http", "https"):
                            raise AttemptError("redirected to a non-HTTP URL", retryable=False)
                        continue
                    if url != source.url:
                        mirror.final_url = url
                    self._check_response(mirror, response, url, first, validator)
                    self._consume(mirror, seg, response)
                    return
            except httpx.TimeoutException as exc:
                raise AttemptError(
                    f"stalled: {type(exc).__name__} after {_timeout_of(self.options)} s"
                ) from None
            except httpx.HTTPError as exc:
                raise AttemptError(f"{type(exc).__name__}: {exc}") from None
        raise AttemptError(f"more than {MAX_REDIRECTS} redirects", retryable=False)

    def _check_response(
        self,
        mirror: _Mirror,
        response: httpx.Response,
        url: str,
        first: int,
        if_range: str | None,
    ) -> None:
        """Refuse an answer whose bytes do not belong at ``first`` of this file's version.

        ``if_range``: the ETag sent as ``If-Range`` (seen earlier from this mirror)."""
        status = response.status_code
        where = redact_url(url)
        if status in (401, 403, 410) and url != mirror.source.url:
            # A signed CDN URL that is refused now (it expired): resolve the mirror's own URL again.
            mirror.final_url = None
            raise AttemptError(
                f"HTTP {status} from the redirect target {where} (signed URL expired?); resolving again",
                retry_after=0.0,
            )
        if status not in (200, 206):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise AttemptError(
                f"HTTP {status} from {where}",
                retryable=status_is_retryable(status),
                retry_after=retry_after,
            )
        content_type = response.headers.get("Content-Type", "").lower()
        if content_type.startswith("text/html") and not self.job.path.lower().endswith(
            (".html", ".htm")
        ):
            raise AttemptError(
                f"HTTP {status} with an HTML page instead of the file ({where})", retryable=False
            )
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise AttemptError(f"answered with Content-Encoding {encoding!r}", retryable=False)
        size = self.job.size
        if status == 200:
            etag = response.headers.get("ETag")
            if if_range is not None and etag is not None and etag != if_range:
                # The bytes on disk are from another version of the file: never mix the two.
                self.discard = True
                raise _FileFatal(
                    f"{self.job.path} changed on mirror {mirror.name} since the partial download "
                    "(If-Range failed); the partial file was discarded, run the pull again"
                )
            # A 200 with the same ETag (or none) is a server that ignores Range, not a changed
            # file; whatever it sends is checked against the digest before it lands anyway.
            if first != 0:
                raise AttemptError(
                    "answered a Range request with the whole file (HTTP 200): it ignores Range",
                    retryable=False,
                )
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != size:
                raise AttemptError(
                    f"serves {int(length)} bytes, the manifest says {size}", retryable=False
                )
        else:
            got = _parse_content_range(response.headers.get("Content-Range", ""))
            if got is None or got[0] != first or got[2] != size:
                raise AttemptError(
                    f"wrong Content-Range {response.headers.get('Content-Range')!r} "
                    f"for bytes {first}- of {size}",
                    retryable=False,
                )
        etag = response.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            with self.lock:
                self.validators[mirror.name] = etag

    def _consume(self, mirror: _Mirror, seg: _Segment, response: httpx.Response) -> None:
        opts = self.options
        limiter = self.engine.limiter
        window_start = time.monotonic()
        window_bytes = 0
        limited_s = 0.0
        got_any = False
        # Whatever each socket read returns (up to 64 KiB), not fixed-size chunks: httpx would
        # hold bytes back until a chunk is full, and a mirror trickling a few KB/s would then
        # never reach the watchdog below (it checks the speed as bytes arrive).
        for chunk in response.iter_raw():
            if self.cancel.is_set():
                raise _Cancelled()
            if self.fatal is not None:
                raise _Cancelled()
            got_any = got_any or bool(chunk)
            offset = 0
            while offset < len(chunk):
                with self.lock:
                    pos, end = seg.pos, seg.end
                n = min(len(chunk) - offset, end - pos)
                if n <= 0:
                    return  # the rest of this segment was stolen, or it is complete
                if limiter is not None:
                    limited_s += limiter.take(n, self.cancel)
                data = memoryview(chunk)[offset : offset + n]
                try:
                    written = os.pwrite(self.fd, data, pos)
                except OSError as exc:
                    raise _FileFatal(_describe_os_error(exc, self.job)) from None
                with self.lock:
                    self.done.add(pos, pos + written)
                    seg.pos = pos + written
                    mirror.bytes += written
                offset += written
                window_bytes += written
                self.reporter.on_bytes(self.job.path, written, mirror.name)
            with self.lock:
                if seg.pos >= seg.end:
                    return
            elapsed = time.monotonic() - window_start - limited_s
            if elapsed >= opts.stall_timeout_s:
                speed = window_bytes / max(elapsed, 1e-9)
                if speed < opts.lowest_speed_bps:
                    raise AttemptError(
                        f"too slow: {speed / 1024:.0f} KiB/s for {elapsed:.0f} s "
                        f"(below {opts.lowest_speed_bps / 1024:.0f} KiB/s)"
                    )
                window_start, window_bytes, limited_s = time.monotonic(), 0, 0.0
        with self.lock:
            short = seg.pos < seg.end
            pos = seg.pos
        if short and got_any:
            raise AttemptError(f"connection closed early, at byte {pos} of {self.job.size}")
        if short:
            raise AttemptError(f"empty answer (HTTP {response.status_code} with no body bytes)")

    # --- the file ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Make the sidecar match what is durably on disk."""
        with self.lock:
            snapshot = Sidecar(
                self.job.key, self.job.size, RangeSet(self.done), dict(self.validators)
            )
        os.fsync(self.fd)
        save_sidecar(self.job.dest, snapshot)

    def _open(self) -> int:
        """Open (and on a fresh start, preallocate) the ``.incomplete`` file; load the sidecar."""
        job = self.job
        sidecar = load_sidecar(job.dest, job.key, job.size)
        if sidecar is None:
            remove_sidecar(job.dest)
            with contextlib.suppress(FileNotFoundError):
                job.dest.unlink()
        else:
            self.done = sidecar.done
            self.validators = dict(sidecar.validators)
        fd = os.open(job.dest, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != job.size:
                os.ftruncate(fd, job.size)
            if sidecar is None and job.size > 0 and hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(fd, 0, job.size)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise
                    # EOPNOTSUPP / EINVAL on filesystems without fallocate: sparse is fine.
        except OSError:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                job.dest.unlink()
            raise
        return fd

    def run(self) -> FetchResult:
        job = self.job
        started = time.perf_counter()
        result = FetchResult(job.key, job.path, ok=False)
        try:
            self.fd = self._open()
        except OSError as exc:
            result.error = _describe_os_error(exc, job)
            return result
        try:
            resumed = self.done.total()
            result.resumed_bytes = resumed
            if resumed:
                self.reporter.on_file_resumed(job.path, resumed)
            missing = self.done.missing(job.size)
            if missing:
                if not self.mirrors:
                    result.error = "no mirror to fetch it from"
                    return result
                try:
                    self._flush()
                except OSError as exc:  # the disk filled up (or went away) since the open
                    result.error = _describe_os_error(exc, job)
                    return result
                self._transfer(missing)
            with self.lock:
                complete = self.done.covers(job.size)
            result.bytes_by_mirror = {m.name: m.bytes for m in self.mirrors if m.bytes}
            result.attempts = list(self.attempts)
            if complete:
                os.fsync(self.fd)
                remove_sidecar(job.dest)
                result.ok = True
            elif self.cancel.is_set() and self.fatal is None:
                result.cancelled = True
                result.error = "cancelled"
            elif self.fatal is not None:
                result.error = self.fatal
            else:
                result.error = "no mirror could serve the rest of the file: " + (
                    "; ".join(self.attempts) or "all mirrors failed"
                )
            return result
        finally:
            if self.discard:
                result.ok = False
                remove_sidecar(job.dest)
                with contextlib.suppress(FileNotFoundError):
                    job.dest.unlink()
            elif not result.ok:
                with contextlib.suppress(OSError):
                    self._flush()
            os.close(self.fd)
            result.seconds = time.perf_counter() - started

    def _transfer(self, missing: list[tuple[int, int]]) -> None:
        opts = self.options
        missing_bytes = sum(b - a for a, b in missing)
        capacity = sum(max(1, m.source.max_connections) for m in self.mirrors)
        by_size = -(-missing_bytes // max(1, opts.min_split_bytes))
        workers = max(1, min(opts.max_connections, capacity, by_size))
        self.queue.extend(
            _Segment(a, a, b) for a, b in split(missing, workers, opts.min_split_bytes)
        )
        threads = [
            threading.Thread(target=self._worker, name=f"modelget-httpx-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        for t in threads:
            while t.is_alive():
                t.join(0.1)
                if time.monotonic() >= next_flush:
                    with contextlib.suppress(OSError):
                        self._flush()
                    next_flush = time.monotonic() + FLUSH_INTERVAL_S


def _timeout_of(options: EngineOptions) -> float:
    return min(options.read_timeout_s, options.stall_timeout_s)


def _parse_content_range(value: str) -> tuple[int, int, int] | None:
    """``bytes a-b/total`` → (a, b, total)."""
    value = value.strip()
    if not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/", 1)
        a, b = span.split("-", 1)
        out = int(a), int(b), int(total)
    except ValueError:
        return None
    if out[0] > out[1] or out[1] >= out[2]:
        return None
    return out


def _describe_os_error(exc: OSError, job: FetchJob) -> str:
    if exc.errno == errno.ENOSPC:
        return f"No space left on device while writing {job.path} ({job.size} bytes) to {job.dest.parent}"
    return f"cannot write {job.dest}: {exc.strerror or exc}"


class HttpxEngine:
    """Parallel multi-mirror range downloads with httpx; see the module docstring."""

    name = "httpx"

    def __init__(
        self, options: EngineOptions, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.options = options
        self.client = httpx.Client(
            timeout=httpx.Timeout(_timeout_of(options), connect=options.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=options.max_connections * 2,
                max_keepalive_connections=options.max_connections * 2,
            ),
            verify=options.verify_tls,
            follow_redirects=False,  # by hand: headers must not cross to another origin
            headers={"User-Agent": f"modelget/{__version__}", "Accept-Encoding": "identity"},
            transport=transport,
        )
        self.slots = _Slots(options.max_connections)
        self.limiter = RateLimiter(options.max_rate_bps) if options.max_rate_bps else None

    def run(
        self,
        jobs: Sequence[FetchJob],
        *,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None = None,
    ) -> list[FetchResult]:
        def one(job: FetchJob) -> FetchResult:
            if cancel.is_set():
                return FetchResult(job.key, job.path, ok=False, cancelled=True, error="cancelled")
            result = _Transfer(self, job, reporter, cancel).run()
            if result.ok and on_complete is not None:
                on_complete(job, result)
            return result

        if not jobs:
            return []
        workers = max(1, min(self.options.max_concurrent_files, len(jobs)))
        with ThreadPoolExecutor(workers, thread_name_prefix="modelget-file") as pool:
            return list(pool.map(one, jobs))

    def prepare(self) -> None:
        """Nothing to start: connections open on first use."""

    def close(self) -> None:
        self.client.close()
