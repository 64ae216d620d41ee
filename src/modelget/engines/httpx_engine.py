"""The built-in engine: parallel HTTP range requests over httpx, from several mirrors at once.

One pull is one pool of work and one pool of connections (see :mod:`modelget.scheduler`):

* Every file's ``.incomplete`` is preallocated to its final size and every byte is written at
  its offset (``os.pwrite``), so memory stays flat whatever the file size. A ``.ranges``
  sidecar (see :mod:`modelget.engines.ranges`) records what is durably on disk; after a kill
  -9 or a reboot only the missing ranges are fetched. Requests carry ``If-Range`` with the
  ETag seen before, so a file that changed on a mirror restarts instead of mixing versions.
* Worker threads (one per connection) ask the pull-wide scheduler what to fetch next: small
  files all at once, then chunks of the big files that shrink toward the end, then the tail
  of the range that would finish last (work stealing). The scheduler grows each mirror's
  connection count while its rate rises, up to ``max_connections`` per mirror (the
  catalogue entry's own ``max_connections`` lowers it), and halves it on 429/503.
* A watchdog on bytes per second (not only the read timeout) drops a connection that is
  slower than ``lowest_speed_bps`` for ``stall_timeout_s``; its range, minus the bytes
  already written, goes back to the pool at once, where any mirror may take it. A mirror
  that keeps failing (``max_tries`` in a row, with exponential backoff and the server's
  Retry-After) or fails in a way retrying cannot fix (404, an HTML page, a wrong
  Content-Range, a 200 answer to a Range request) is dropped for the file.
* Each file's contiguous prefix is hashed as it grows, by one hashing thread that reads the
  bytes back from the page cache (:class:`modelget.verify.PrefixHasher`): when the last byte
  lands only the last stretch is left to hash, and the executor verifies against those
  digests without reading the file again.
* Redirects are followed by hand, by the one follower (:func:`modelget.http.follow`): the
  mirror's headers (its token) go only to its own origin, never to the signed CDN URL it
  redirects to. A signed URL that is refused later (expired) is resolved again from the
  mirror's own URL.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from modelget import http
from modelget.engines import (
    EngineOptions,
    FailureCode,
    FetchJob,
    FetchResult,
    OnComplete,
    SourceURL,
    failure_of_os_error,
    no_mirror_left,
    responses,
)
from modelget.engines.ranges import (
    RangeSet,
    Sidecar,
    load_sidecar,
    remove_sidecar,
    save_sidecar,
)
from modelget.events import Reporter, report_connections
from modelget.http import redact_url
from modelget.retry import (
    MAX_RETRY_AFTER_S,
    AttemptError,
    backoff_s,
)
from modelget.scheduler import Assign, Policy, Range, Scheduler, Takeover
from modelget.verify import PrefixHasher

_log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
FLUSH_INTERVAL_S = 0.5
TICK_S = 0.05
MAX_ATTEMPT_LINES = 20
MAX_WORKERS = 256
MAX_RENEWALS = 3
FINISHERS = 4
"""Complete files fsync'd at once (each in its own thread: one slow to reach the disk does
not hold the others' hand-over)."""
HASH_STEP = 64 * 1024 * 1024
HASH_BUFFER = 4 * 1024 * 1024


class _Cancelled(Exception):
    pass


class _FileFatal(Exception):
    """A problem that no mirror can fix in this run (disk full, I/O error, a file that
    changed under its partial download); ``failure`` says which, as data."""

    def __init__(self, message: str, failure: FailureCode = "local-io") -> None:
        super().__init__(message)
        self.failure: FailureCode = failure


def _os_fatal(exc: OSError, job: FetchJob) -> _FileFatal:
    return _FileFatal(_describe_os_error(exc, job), failure_of_os_error(exc))


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


READ_BYTES = 256 * 1024
"""The most one socket read may return. httpcore reads 64 KiB at a time, and every read is a
turn of the whole Python path (the read, ``pwrite``, the scheduler's bookkeeping under the
lock, the reporter): on a fast link that path, not the network, was the limit. Measured on
loopback, 4 GB in 8 shards, 2 cores, default connections: 10.2–10.4 s with 64 KiB reads,
7.1–7.7 s with 256 KiB, 7.6–8.4 s with 1 MiB (and in the bench's S2 10.4–11.1 s with 1 MiB,
8.8 s with 256 KiB); peak RSS at 64 connections (bench S8) 73 MB with 64 KiB, 101 MB with
256 KiB, 165 MB with 1 MiB. A read still returns whatever the socket holds (a trickling
mirror's few bytes come at once), so the stall watchdog sees the same bytes as before."""


def _read_bigger() -> None:
    """httpcore has no per-client read size, only a class attribute: raise it for the process
    (every httpx client here gains; nothing relies on 64 KiB reads). Left alone if httpcore
    moves it."""
    http.import_httpcore()
    from httpcore._sync import http11

    conn = getattr(http11, "HTTP11Connection", None)
    if conn is not None and getattr(conn, "READ_NUM_BYTES", READ_BYTES) < READ_BYTES:
        conn.READ_NUM_BYTES = READ_BYTES


TAKEN = "its range went to another connection"
STALLED_S = 0.25
"""A range taken over after this long without a byte was stalled, not merely slow."""
WORKER_GRACE_S = 0.5
"""When every file has ended, how long the run waits for workers still in a request."""


def _cut(response: httpx.Response) -> None:
    """Shut down the socket under ``response`` (from another thread: the blocked read in the
    worker then ends at once). Best effort: a response without a reachable socket is left."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def policy_for(options: EngineOptions) -> Policy:
    """The scheduler's knobs from the engine options."""
    return Policy(
        ceiling=max(1, options.max_connections),
        initial=max(1, min(options.max_connections, options.initial_connections)),
        max_tries=max(1, options.max_tries),
        max_files=max(1, options.max_concurrent_files),
        min_chunk=max(64 * 1024, options.min_split_bytes),
        retry_wait=lambda n: backoff_s(options.retry_wait_s, n),
    )


@dataclass
class _Src:
    """One mirror's URL for one file."""

    source: SourceURL
    final_url: str | None = None
    """Where the source URL last redirected to (a signed CDN URL), reused by later requests."""
    bytes: int = 0
    renewals: int = 0
    """Signed URLs renewed in a row with no byte between (see ``MAX_RENEWALS``)."""

    @property
    def name(self) -> str:
        return self.source.mirror


@dataclass
class _File:
    """One file of the pull: its descriptor, what is on disk, its hashing."""

    job: FetchJob
    srcs: dict[str, _Src]
    result: FetchResult
    fd: int = -1
    done: RangeSet = field(default_factory=RangeSet)
    validators: dict[str, str] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)
    fatal: str | None = None
    failure: FailureCode | None = None
    """With ``fatal``: its code."""
    discard: bool = False
    """Throw the partial file away instead of keeping it for resume."""
    fresh: bool = True
    """No sidecar from an earlier run: the file starts from nothing."""
    open_lock: threading.Lock = field(default_factory=threading.Lock)
    hasher: PrefixHasher | None = None
    hash_failed: bool = False
    reported: set[str] = field(default_factory=set)
    """Mirrors whose failure for this file was reported."""
    dirty: bool = False
    finishing: bool = False
    """Complete and hashed: handed to a finishing thread (its fsync and hand-over)."""
    finished: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> str:
        return self.job.key

    def complete(self) -> bool:
        return self.done.covers(self.job.size)


class _Pull:
    """One ``run``: the files, the scheduler, the workers, the hashing thread, the finishing
    threads."""

    def __init__(
        self,
        engine: HttpxEngine,
        jobs: Sequence[FetchJob],
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None,
    ) -> None:
        self.engine = engine
        self.options = engine.options
        self.client = engine.client
        self.limiter = engine.limiter
        self.reporter = reporter
        self.cancel = cancel
        self.on_complete = on_complete
        self.jobs = list(jobs)
        self.lock = threading.Condition(threading.Lock())
        self.hash_wake = threading.Event()
        self.files: dict[str, _File] = {}
        self.sched: Scheduler | None = None
        self.workers: list[threading.Thread] = []
        self.idle = 0
        self.first_byte: float | None = None
        self.streams: dict[int, httpx.Response] = {}
        """The response each range is being read from (to cut a silent one's socket)."""
        self.over = False
        """The run has returned: a worker still stuck in a read reports nothing any more."""
        self.finisher = ThreadPoolExecutor(FINISHERS, thread_name_prefix="modelget-finish")
        """Complete files' fsync and hand-over, off the hashing thread."""

    # --- set-up -----------------------------------------------------------------------------

    def _load(self, f: _File) -> None:
        """What an earlier run left (the sidecar); the data file is opened later (``_open``)."""
        job = f.job
        sidecar = load_sidecar(job.dest, job.key, job.size)
        if sidecar is not None:
            f.done = sidecar.done
            f.validators = dict(sidecar.validators)
            f.fresh = False

    def _open(self, f: _File) -> None:
        """Open the ``.incomplete`` file when its first range is due (so a repo of thousands of
        files holds only the open ones); on a fresh start, preallocate it."""
        with f.open_lock:
            if f.fd >= 0 or f.finished:
                return
            job = f.job
            if f.fresh:
                remove_sidecar(job.dest)
                with contextlib.suppress(FileNotFoundError):
                    job.dest.unlink()
            fd = os.open(job.dest, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size != job.size:
                    os.ftruncate(fd, job.size)
                if f.fresh and job.size > 0 and hasattr(os, "posix_fallocate"):
                    try:
                        os.posix_fallocate(fd, 0, job.size)
                    except OSError as exc:
                        if exc.errno == errno.ENOSPC:
                            raise
                        # EOPNOTSUPP / EINVAL on filesystems without fallocate: sparse is fine.
                if not f.complete():
                    # Even with nothing done yet: it marks the preallocated file as partial
                    # (a full-size ``.incomplete`` without one passes for a download aria2c
                    # finished, and an aria2 run would check its digest and blame the mirror).
                    _write_sidecar(f, fd)
            except OSError:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    job.dest.unlink()
                raise
            f.fd = fd

    def run(self) -> list[FetchResult]:
        mirrors: dict[str, int | None] = {}
        for job in self.jobs:
            f = _File(
                job,
                {s.mirror: _Src(s) for s in job.sources},
                FetchResult(job.key, job.path, ok=False),
            )
            self.files[job.key] = f
            if self.cancel.is_set():
                f.result.cancelled, f.result.error = True, "cancelled"
                f.result.failure = "cancelled"
                f.finished = True
                continue
            try:
                self._load(f)
                if f.complete() or not f.srcs:
                    self._open(f)  # nothing to fetch: hashed (or failed) at once
            except OSError as exc:
                f.result.error = _describe_os_error(exc, job)
                f.result.failure = failure_of_os_error(exc)
                f.finished = True
                continue
            if job.sha256 or job.git_sha1:
                f.hasher = PrefixHasher(job.size, sha256=bool(job.sha256), git_sha1=not job.sha256)
            resumed = f.done.total()
            f.result.resumed_bytes = resumed
            if resumed:
                self.reporter.on_file_resumed(job.path, resumed)
            for s in job.sources:
                mirrors.setdefault(s.mirror, s.max_connections)
        live = [f for f in self.files.values() if not f.finished]
        self.sched = Scheduler(
            [(f.key, f.job.size, f.done.missing(f.job.size), list(f.srcs)) for f in live],
            list(mirrors.items()),
            policy_for(self.options),
            now=time.monotonic(),
        )
        for f in live:
            if not f.srcs and not f.complete():
                f.result.error = "no mirror to fetch it from"
                f.result.failure = "no-mirror"
                self._end_file(f)
        hasher = threading.Thread(target=self._hash_loop, name="modelget-hash", daemon=True)
        hasher.start()
        self.hash_wake.set()
        try:
            self._supervise()
        finally:
            self.hash_wake.set()
            with self.lock:
                self.lock.notify_all()
                if all(f.finished for f in self.files.values()):
                    # Every file ended: a worker still waiting on a silent mirror (its range
                    # taken over) holds nothing; cut what can be cut and do not wait on it.
                    self.over = True
                    streams = list(self.streams.values())
                else:
                    streams = []
            for response in streams:
                _cut(response)
            deadline = time.monotonic() + (WORKER_GRACE_S if self.over else float("inf"))
            for t in self.workers:
                t.join(max(0.0, deadline - time.monotonic()) if self.over else None)
            self._stop_hashing = True
            self.hash_wake.set()
            hasher.join()
            self.finisher.shutdown(wait=True)  # before the files are closed below
            for f in self.files.values():
                self._close_file(f)
        self.engine.connections = self.sched.peaks()
        return [self.files[j.key].result for j in self.jobs]

    # --- supervision ------------------------------------------------------------------------

    _stop_hashing = False

    def _supervise(self) -> None:
        sched = self.sched
        assert sched is not None
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        reported = sched.targets()
        if reported:
            report_connections(self.reporter, reported)
        while True:
            now = time.monotonic()
            with self.lock:
                if sched.tick(now):
                    self.lock.notify_all()
                cut, sched.cut = [self.streams.get(i) for i in sched.cut], []
                targets = sched.targets()
                self._spawn(sched)
                alive = any(t.is_alive() for t in self.workers)
                unhashed = any(not f.finished for f in self.files.values())
            for response in cut:
                if response is not None:
                    _cut(response)  # its rest went back to the pool (the mirror paces it)
            if targets != reported:
                report_connections(self.reporter, targets)
                reported = targets
            if now >= next_flush:
                self._flush_all()
                next_flush = now + FLUSH_INTERVAL_S
            if self.cancel.is_set():
                with self.lock:
                    self.lock.notify_all()
                return
            if not unhashed:
                return  # every file ended (a worker may still wait on a silent mirror)
            self._cut_silent(now)
            if not alive:
                with self.lock:
                    if sched.finished():
                        # Files with bytes left and no mirror: they end now (failed).
                        for f in self.files.values():
                            if not f.finished and not f.complete():
                                self._end_file(f)
                self.hash_wake.set()
            time.sleep(TICK_S)

    def _cut_silent(self, now: float) -> None:
        """Close the connection of a request whose range was taken over whole because it went
        silent: its worker is freed now (and counts the failure), not at the read timeout."""
        sched = self.sched
        assert sched is not None
        with self.lock:
            cut = [
                resp
                for rid, resp in self.streams.items()
                if (r := sched.active.get(rid)) is not None
                and r.left() == 0
                and now - r.last >= sched.silence_budget(r.mirror)
            ]
        for response in cut:
            _cut(response)

    def _spawn(self, sched: Scheduler) -> None:
        """Enough workers for the mirrors' targets and the small files waiting (lock held)."""
        small = sum(
            1
            for f in sched.files.values()
            if f.queue and f.size <= sched.policy.small_file and f.live_mirrors()
        )
        want = min(MAX_WORKERS, sum(sched.targets().values()) + small)
        self.workers = [t for t in self.workers if t.is_alive()]
        if self.idle > 0 or sched.finished():
            return
        while len(self.workers) < want:
            t = threading.Thread(
                target=self._worker, name=f"modelget-httpx-{len(self.workers)}", daemon=True
            )
            self.workers.append(t)
            t.start()

    # --- workers ----------------------------------------------------------------------------

    def _over(self) -> bool:
        """Every file ended (set by the run's end, from another thread)."""
        return self.over

    def _worker(self) -> None:
        sched = self.sched
        assert sched is not None
        while True:
            with self.lock:
                while True:
                    if self.cancel.is_set() or self._over():
                        # Over: every file ended; ranges still on the books belong to requests
                        # cut at the end (waiting on for them held the pull 0.5 s, bench S10).
                        return
                    action = sched.next(time.monotonic())
                    if action is None:
                        self.lock.notify_all()
                        return
                    if isinstance(action, Assign):
                        break
                    self.idle += 1
                    self.lock.wait(action.seconds)
                    self.idle -= 1
                r = action.range
                f = self.files[r.file]
                src = f.srcs[r.mirror]
                taken, sched.taken_over = sched.taken_over, []
            for t in taken:
                self._taken_over(t)
            try:
                if f.fd < 0:
                    try:
                        self._open(f)
                    except OSError as exc:
                        raise _os_fatal(exc, f.job) from None
                self._fetch(f, src, r)
            except AttemptError as exc:
                if self.over:
                    return  # the run is over: nothing to tell (its range was served elsewhere)
                self._failed(f, src, r, exc)
            except _FileFatal as exc:
                with self.lock:
                    if f.fatal is None:
                        f.fatal, f.failure = str(exc), exc.failure
                    sched.release(r, time.monotonic())
                    sched.give_up(f.key)
                    self.lock.notify_all()
                self._maybe_end(f)
            except _Cancelled:
                with self.lock:
                    sched.release(r, time.monotonic())
                return
            except BaseException as exc:  # a bug: never leave the range held
                with self.lock:
                    if f.fatal is None:
                        f.fatal = f"internal error: {type(exc).__name__}: {exc}"
                        f.failure = "local-io"
                    sched.release(r, time.monotonic())
                    sched.give_up(f.key)
                    self.lock.notify_all()
                self._maybe_end(f)
                raise
            else:
                with self.lock:
                    sched.release(r, time.monotonic())
                    self.lock.notify_all()
                self._maybe_end(f)

    def _failed(self, f: _File, src: _Src, r: Range, exc: AttemptError) -> None:
        sched = self.sched
        assert sched is not None
        if self.cancel.is_set() or r.cut or exc.message == TAKEN:
            # Our own stop (Ctrl-C, SIGTERM) closed the connection: not the mirror's failure,
            # and nothing to tell (a "mirror failed" line after "interrupted" is false). Nor
            # is a request closed because its mirror paces requests that long, or because its
            # range was taken over (told then; a mirror that went silent as a whole is kept
            # from new work by the scheduler's suspicion, not by a retry wait per file: one
            # flow's hiccup kept two healthy 150 MB/s mirrors idle for 1-1.5 s that way).
            with self.lock:
                sched.release(r, time.monotonic())
                self.lock.notify_all()
            self._maybe_end(f)
            return
        with self.lock:
            if exc.renew and src.renewals < MAX_RENEWALS:
                # An expired signed URL: the range goes back as it is, the next request
                # resolves the mirror's own URL again.
                src.renewals += 1
                self._note(f, src.name, exc.message)
                sched.release(r, time.monotonic())
                self.lock.notify_all()
                return
            dropped = sched.failed(
                r,
                time.monotonic(),
                exc.message,
                permanent=not exc.retryable,
                throttled=exc.throttled,
                retry_after=None
                if exc.retry_after is None
                else min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER_S),
            )
            if exc.message != TAKEN:  # told when its range was taken over
                self._note(f, src.name, exc.message)
            self.lock.notify_all()
        if dropped is not None:
            f.reported.add(src.name)
            if dropped != exc.message:
                self._note(f, src.name, dropped)
            self.reporter.on_mirror_failed(f.job.path, src.name, dropped)
        elif (
            exc.message != TAKEN
            and src.name not in f.reported
            and src.name not in sched.files[f.key].dropped
        ):
            # The first failure of a mirror for a file is worth telling: its range went back
            # to the pool (another mirror may take it now); later ones only when it is dropped.
            # A range taken over was told (or, on its own mirror, deliberately not) when it
            # was taken: the cut that frees its worker afterwards is not news.
            f.reported.add(src.name)
            self.reporter.on_mirror_failed(f.job.path, src.name, exc.message)
        self._maybe_end(f)

    def _taken_over(self, t: Takeover) -> None:
        """Another connection took over the rest of a range of ``t.mirror``: say why."""
        f = self.files[t.file]
        if t.silent or t.quiet_s >= STALLED_S:
            message = f"stalled: no byte for {t.quiet_s:.1f} s; {TAKEN}"
        else:
            message = (
                f"too slow: {t.rate / 1024:.0f} KiB/s on a connection "
                f"(another does {t.thief_rate / 1024:.0f} KiB/s); {TAKEN}"
            )
        with self.lock:
            self._note(f, t.mirror, message)
            if t.by == t.mirror or t.hiccup:
                # Another connection to the same mirror took it, or the mirror's other
                # connections delivered meanwhile: one connection's hiccup (a TCP loss on a
                # full link stalls a flow for its retransmission timeout), not the mirror's
                # failure: told at debug level only, never as a warning.
                _log.debug("%s: %s (%s)", f.job.path, message, t.mirror)
                return
            first = t.mirror not in f.reported
            f.reported.add(t.mirror)
        if first and not self.cancel.is_set():
            self.reporter.on_mirror_failed(f.job.path, t.mirror, message)

    def _note(self, f: _File, mirror: str, message: str) -> None:
        line = f"{mirror}: {message}"
        if (not f.attempts or f.attempts[-1] != line) and len(f.attempts) < MAX_ATTEMPT_LINES:
            f.attempts.append(line)

    # --- one request ------------------------------------------------------------------------

    def _fetch(self, f: _File, src: _Src, r: Range) -> None:
        sched = self.sched
        assert sched is not None
        source = src.source
        url = src.final_url or source.url
        with self.lock:
            first, last = r.pos, r.end - 1
            validator = f.validators.get(src.name)
        if first > last:
            return
        headers = {"Range": f"bytes={first}-{last}", "Accept-Encoding": "identity"}
        if validator:
            headers["If-Range"] = validator

        def answered(response: httpx.Response) -> None:
            # Every answer, redirects included, is progress and can be cut by the watchdog.
            with self.lock:
                sched.answered(r, time.monotonic())
                self.streams[r.id] = response

        try:
            with http.follow(
                self.client,
                "GET",
                url,
                headers=headers,
                credentials=source.headers,
                credentials_origin=source.url,
                max_hops=MAX_REDIRECTS,
                on_response=answered,
            ) as got:
                if got.url != source.url:
                    src.final_url = got.url
                self._check_response(f, src, got.response, got.url, first, validator)
                self._consume(f, src, r, got.response, last + 1)
        except http.RedirectError as exc:
            raise _redirect_failure(exc) from None
        except httpx.TimeoutException as exc:
            raise AttemptError(
                f"stalled: {type(exc).__name__} after {_timeout_of(self.options)} s"
            ) from None
        except httpx.HTTPError as exc:
            if r.left() == 0:
                # Its range was taken over (it had gone silent) and the socket cut.
                raise AttemptError(TAKEN) from None
            raise AttemptError(f"{type(exc).__name__}: {exc}") from None
        finally:
            with self.lock:
                self.streams.pop(r.id, None)

    def _check_response(
        self,
        f: _File,
        mirror: _Src,
        response: httpx.Response,
        url: str,
        first: int,
        if_range: str | None,
    ) -> None:
        """Refuse an answer whose bytes do not belong at ``first`` of this file's version
        (the decision is :func:`modelget.engines.responses.check`'s; this carries it out).

        ``if_range``: the ETag sent as ``If-Range`` (seen earlier from this mirror)."""
        verdict = responses.check(
            response.status_code,
            response.headers,
            first=first,
            size=f.job.size,
            if_range=if_range,
            redirected=url != mirror.source.url,
            where=redact_url(url),
            path=f.job.path,
            mirror=mirror.name,
        )
        if isinstance(verdict, responses.Accept):
            if verdict.etag:
                with self.lock:
                    f.validators[mirror.name] = verdict.etag
            return
        if isinstance(verdict, responses.Renew):
            # A signed CDN URL that is refused now (it expired): resolve the mirror's own URL.
            mirror.final_url = None
            raise AttemptError(verdict.message, retry_after=0.0, renew=True)
        if isinstance(verdict, responses.Retry):
            raise AttemptError(
                verdict.message, retry_after=verdict.retry_after, throttled=verdict.throttled
            )
        if isinstance(verdict, responses.Discard):
            # The bytes on disk are from another version of the file: never mix the two.
            f.discard = True
            raise _FileFatal(verdict.message, "no-mirror")
        raise AttemptError(verdict.message, retryable=False)

    def _consume(
        self, f: _File, src: _Src, r: Range, response: httpx.Response, asked_end: int
    ) -> None:
        """Write the body's bytes where they belong while they are ``r``'s (``asked_end``:
        where the request's range ends)."""
        opts = self.options
        sched = self.sched
        assert sched is not None
        limiter = self.limiter
        window_start = time.monotonic()
        window_bytes = 0
        limited_s = 0.0
        got_any = False
        # Whatever each socket read returns (up to ``READ_BYTES``), not fixed-size chunks: httpx would
        # hold bytes back until a chunk is full, and a mirror trickling a few KB/s would then
        # never reach the watchdog below (it checks the speed as bytes arrive).
        chunks = response.iter_raw()
        for chunk in chunks:
            if self.cancel.is_set() or f.fatal is not None:
                raise _Cancelled()
            got_any = got_any or bool(chunk)
            offset = 0
            while offset < len(chunk):
                with self.lock:
                    pos = r.pos
                    n = sched.allowed(r, len(chunk) - offset)
                if n <= 0:
                    return  # the rest of this range was stolen, or it is complete
                if limiter is not None:
                    limited_s += limiter.take(n, self.cancel)
                data = memoryview(chunk)[offset : offset + n]
                try:
                    written = os.pwrite(f.fd, data, pos)
                except OSError as exc:
                    raise _os_fatal(exc, f.job) from None
                now = time.monotonic()
                with self.lock:
                    f.done.add(pos, pos + written)
                    sched.wrote(r, written, now)
                    src.bytes += written
                    src.renewals = 0
                    f.dirty = True
                    extends = pos <= f.done.prefix() and f.hasher is not None
                    if self.first_byte is None:
                        self.first_byte = now
                if extends:
                    self.hash_wake.set()
                offset += written
                window_bytes += written
                self.reporter.on_bytes(f.job.path, written, src.name)
            if r.pos >= r.end:
                with self.lock:
                    whole = r.end == asked_end
                if whole:
                    _finish_body(chunks)
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
            short = r.pos < r.end
            pos = r.pos
        if short and got_any:
            raise AttemptError(f"connection closed early, at byte {pos} of {f.job.size}")
        if short:
            raise AttemptError(f"empty answer (HTTP {response.status_code} with no body bytes)")

    # --- hashing and the end of a file --------------------------------------------------------

    def _hash_loop(self) -> None:
        """Hash each file's contiguous prefix as it grows; end the files that are complete."""
        buf = bytearray(HASH_BUFFER)
        while True:
            self.hash_wake.wait(0.25)
            self.hash_wake.clear()
            worked = True
            while worked:
                worked = False
                for f in list(self.files.values()):
                    if f.finished or f.finishing or f.fd < 0:
                        continue
                    with self.lock:
                        prefix = f.done.prefix()
                        complete = f.complete()
                    if f.hasher is not None and not f.hash_failed and f.hasher.pos < prefix:
                        try:
                            f.hasher.advance(f.fd, min(prefix, f.hasher.pos + HASH_STEP), buf)
                        except OSError:
                            f.hash_failed = True  # the executor hashes the file itself
                        worked = True
                    if complete and (
                        f.hasher is None or f.hash_failed or f.hasher.pos >= f.job.size
                    ):
                        self._finish_soon(f)
            if self._stop_hashing:
                return

    def _maybe_end(self, f: _File) -> None:
        """After a request: a complete file goes to the hashing thread; a file that can get
        no more bytes (fatal, or every mirror dropped) ends now as failed."""
        sched = self.sched
        assert sched is not None
        with self.lock:
            if f.finished:
                return
            if f.complete():
                self.hash_wake.set()
                return
            ended = f.fatal is not None and not any(r.file == f.key for r in sched.active.values())
            ended = ended or sched.stuck(f.key)
        if ended:
            self._end_file(f)

    def _finish_soon(self, f: _File) -> None:
        """Hand a complete, hashed file to a finishing thread: its fsync (tens of ms to
        seconds, the disk's pace) no longer holds the hashing of the other files (bench S2,
        7 files of 580 MB on loopback: 0.4 s of the pull)."""
        with self.lock:
            if f.finished or f.finishing:
                return
            f.finishing = True
        self.finisher.submit(self._finish_logged, f)

    def _finish_logged(self, f: _File) -> None:
        try:
            self._finish_ok(f)
        except BaseException:  # a bug: the executor would keep it in a future nobody reads
            _log.exception("finishing %s failed", f.job.path)
            raise

    def _finish_ok(self, f: _File) -> None:
        with self.lock:
            if f.finished:
                return
            f.finished = True
        result = f.result
        result.bytes_by_mirror = {n: s.bytes for n, s in f.srcs.items() if s.bytes}
        result.attempts = list(f.attempts)
        try:
            os.fsync(f.fd)
        except OSError as exc:
            result.error = _describe_os_error(exc, f.job)
            result.failure = failure_of_os_error(exc)
            _write_sidecar_quietly(f)
            result.seconds = time.perf_counter() - f.started
            return
        result.ok = True
        if f.hasher is not None and not f.hash_failed and f.hasher.done:
            result.digests = f.hasher.digests()
        result.seconds = time.perf_counter() - f.started
        with f.open_lock:  # not while a flush writes the sidecar
            remove_sidecar(f.job.dest)
            os.close(f.fd)  # complete: no request writes to it any more
            f.fd = -1
        if self.on_complete is not None:
            self.on_complete(f.job, result)

    def _end_file(self, f: _File) -> None:
        """``f`` gets no more bytes in this run: record why (lock not held)."""
        with self.lock:
            if f.finished:
                return
            f.finished = True
            sched = self.sched
            dropped = dict(sched.dropped(f.key)) if sched is not None else {}
        result = f.result
        result.bytes_by_mirror = {n: s.bytes for n, s in f.srcs.items() if s.bytes}
        for mirror, why in dropped.items():
            self._note(f, mirror, why)
        result.attempts = list(f.attempts)
        if f.fatal is not None:
            result.error, result.failure = f.fatal, f.failure or "local-io"
        elif self.cancel.is_set():
            result.cancelled, result.error, result.failure = True, "cancelled", "cancelled"
        elif result.error is None:
            result.error, result.failure = no_mirror_left(f.attempts), "no-mirror"
        result.seconds = time.perf_counter() - f.started

    def _flush_all(self) -> None:
        for f in list(self.files.values()):
            if f.dirty and not f.finished and f.fd >= 0:
                # Under the file's open lock, rechecked: a file that finished meanwhile had its
                # sidecar removed (``_finish_ok``), and writing it now would leave a stale
                # ``.ranges`` beside the blob (seen once in five pulls under load).
                with f.open_lock:
                    if f.finished or f.fd < 0:
                        continue
                    f.dirty = False
                    _write_sidecar_quietly(f, lock=self.lock)

    def _close_file(self, f: _File) -> None:
        if not f.finished:
            self._end_file(f)
        if f.fd < 0:
            return
        if f.discard:
            f.result.ok = False
            remove_sidecar(f.job.dest)
            with contextlib.suppress(FileNotFoundError):
                f.job.dest.unlink()
        elif not f.result.ok:
            _write_sidecar_quietly(f, lock=self.lock)
        os.close(f.fd)
        f.fd = -1


def _finish_body(chunks: Iterator[bytes]) -> None:
    """Read a response whose every asked byte came on to its end of message.

    httpcore hands a connection back to the pool for the next request only once it has read
    the end of the message; a response closed before that closes its connection. Without
    this, every request paid a new TCP (and TLS) handshake and a new slow start: a 4 GB pull
    in 4 MiB requests opened 1,022 connections for 1,022 requests (cProfile), 45 with it. A
    server that sends more than it was asked for loses the connection (not read on), and so
    does one whose end of message does not come: every asked byte is in, so that is no
    failure of the request."""
    with contextlib.suppress(httpx.HTTPError):
        for extra in chunks:
            if extra:
                return


def _write_sidecar(f: _File, fd: int, lock: threading.Condition | None = None) -> None:
    """Make the sidecar match what is durably on disk."""
    if lock is not None:
        with lock:
            snapshot = Sidecar(f.job.key, f.job.size, RangeSet(f.done), dict(f.validators))
    else:
        snapshot = Sidecar(f.job.key, f.job.size, RangeSet(f.done), dict(f.validators))
    if snapshot.done.total():
        os.fsync(fd)  # an empty sidecar claims no byte: nothing to make durable first
    save_sidecar(f.job.dest, snapshot)


def _write_sidecar_quietly(f: _File, lock: threading.Condition | None = None) -> None:
    with contextlib.suppress(OSError):
        _write_sidecar(f, f.fd, lock)


def _redirect_failure(exc: http.RedirectError) -> AttemptError:
    """A redirect walk the follower refused: not worth retrying on this mirror."""
    if exc.kind == "non-http":
        return AttemptError("redirected to a non-HTTP URL", retryable=False)
    if exc.kind == "too-many":
        return AttemptError(f"more than {MAX_REDIRECTS} redirects", retryable=False)
    return AttemptError(str(exc), retryable=False)  # no Location, or one that is not a URL


def _timeout_of(options: EngineOptions) -> float:
    return min(options.read_timeout_s, options.stall_timeout_s)


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
        _read_bigger()
        # Redirects by hand (the client follows none): headers must not cross origins.
        self.client = http.client(
            timeout=httpx.Timeout(_timeout_of(options), connect=options.connect_timeout_s),
            verify_tls=options.verify_tls,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=MAX_WORKERS),
            transport=transport,
        )
        self.limiter = RateLimiter(options.max_rate_bps) if options.max_rate_bps else None
        self.connections: dict[str, int] = {}
        """The most connections each mirror had at once in the last ``run``."""
        self.first_byte: float | None = None
        """``time.monotonic()`` of the last run's first byte."""

    def run(
        self,
        jobs: Sequence[FetchJob],
        *,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None = None,
    ) -> list[FetchResult]:
        if not jobs:
            return []
        pull = _Pull(self, jobs, reporter, cancel, on_complete)
        try:
            return pull.run()
        finally:
            if pull.first_byte is not None and self.first_byte is None:
                self.first_byte = pull.first_byte

    def prepare(self) -> None:
        """Nothing to start: connections open on first use."""

    def close(self) -> None:
        self.client.close()
