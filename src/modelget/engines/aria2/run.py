"""One ``run()`` of the aria2 engine (:class:`_Run`): the loop that hands every job to the
one aria2c, polls it, resolves each job's sources, shares the connection budget, hashes the
bytes as they arrive, and carries out the watchdog's decisions (:mod:`.watchdog`)."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelget import http, settings
from modelget.engines import (
    EngineOptions,
    FailureCode,
    FetchJob,
    FetchResult,
    OnComplete,
    failure_of_os_error,
    no_mirror_left,
)
from modelget.engines.aria2 import watchdog
from modelget.engines.aria2.budget import _Budget
from modelget.engines.aria2.files import CONTROL_SUFFIX, _prepare_dest, _unlink
from modelget.engines.aria2.hashing import _Hashing, _leading_pieces
from modelget.engines.aria2.limits import (
    GROW_BYTES_PER_CONNECTION,
    GROW_STEP,
    MIN_SPLIT,
    PER_HOST_MAX,
    SMALL_FILE,
    _need,
)
from modelget.engines.aria2.process import (
    _QUERY,
    _RPC_ERRORS,
    _Notifications,
)
from modelget.engines.aria2.proxy import proxy_conf
from modelget.engines.aria2.rpc import Aria2RPC, RPCError
from modelget.engines.aria2.sources import (
    RESOLVE_GRACE_MIN_S,
    RESOLVE_WORKERS,
    _DaemonPool,
    _group_sources,
    _needs_header,
    _recheck,
    _Resolving,
    _Source,
    _timed_resolve,
)
from modelget.engines.aria2.state import _Active
from modelget.engines.aria2.watchdog import Delivered
from modelget.engines.aria2.writeback import Writeback, datasync
from modelget.engines.redirects import ResolvedURL, ResolveURLError
from modelget.events import Reporter
from modelget.retry import MAX_RETRY_AFTER_S, status_is_retryable

POLL_INTERVAL_S = 0.2
"""One look at every download costs one RPC round trip for all of them together; aria2c's
WebSocket notifications (a download started, stopped, completed, failed) wake the loop in
between, so a small file's end is seen at once rather than at the next look."""
HEDGE_MIN_S = 1.0
HEDGE_LATENCIES = 4
"""The hedge budget: max(``HEDGE_MIN_S``, ``HEDGE_LATENCIES`` × the quickest resolution
seen in the run). A mirror whose connections to a download fall behind for that long is
taken out of it (see :meth:`_Run._watch`)."""
HASH_WORKERS = 2
FINISHERS = 4
"""Threads that make a complete file durable (its last fdatasync) and hand it over: one file
slow to reach the disk holds neither the hashing nor another file's hand-over."""
HASH_POLL_INTERVAL_S = 0.05
"""The look interval while a download is hashed as it arrives: each look hands its newly
finished pieces to the hashing thread, so what is left to hash after aria2's last byte is
about one interval's worth. At 0.2 s a 91 MB file on loopback (aria2c: 0.19 s) was hashed
entirely after its last byte (78 ms of tail); a look costs one RPC round trip for every
download together (~1 ms)."""
_KEYS = [
    "gid",
    "status",
    "completedLength",
    "totalLength",
    "errorCode",
    "errorMessage",
    "connections",
    "downloadSpeed",
    "bitfield",
    "pieceLength",
]
MAX_READDS_PER_JOB = 2
"""A download that ends in error is re-added (fresh URLs, resuming) at most this often in a
row without progress."""
_DIED = "aria2c exited unexpectedly"

# aria2 exit/error codes for which re-adding the same download cannot help (local problems).
_LOCAL_ERRORS = frozenset({"9", "13", "15", "16", "17", "18", "28"})
_DISK_FULL = "9"
"""aria2's "not enough disk space" error code."""


_log = logging.getLogger(__name__)


class _Run:
    """One ``run()``: every job handed to the one aria2c (small files at once, big files as the
    per-mirror connection budget allows), polled in one RPC round trip per look until done."""

    def __init__(
        self,
        client: Aria2RPC,
        proc: subprocess.Popen[bytes],
        options: EngineOptions,
        peaks: dict[str, int],
        jobs: Sequence[FetchJob],
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None,
    ) -> None:
        self.options = options
        self.client = client
        self.proc = proc
        self.jobs = list(jobs)
        self.reporter = reporter
        self.cancel = cancel
        self.on_complete = on_complete
        self.results = [FetchResult(j.key, j.path, ok=False) for j in self.jobs]
        o = self.options
        self.http = http.client(
            timeout=httpx.Timeout(o.read_timeout_s, connect=o.connect_timeout_s),
            verify_tls=o.verify_tls,
        )
        self.pools: dict[str, _DaemonPool] = {}
        """Per mirror: the threads that resolve its URLs."""
        self.best_latency: float | None = None
        """The quickest resolution seen in this run (seconds): the yardstick of the hedge
        budget (:meth:`_hedge_s`)."""
        self.delivered: dict[str, Delivered] = {}
        """Per mirror: the bytes it brought and its connection-seconds, over all its
        downloads (estimated; :meth:`_observe`)."""
        self.hash_pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="modelget-aria2-hash")
        self.finish_pool = ThreadPoolExecutor(FINISHERS, thread_name_prefix="modelget-aria2-finish")
        self.finishing: list[Future[None]] = []
        self.writeback = Writeback()
        """Flushes the files of the running big downloads (see :mod:`.writeback`)."""
        self.wake = threading.Event()
        self.budget = _Budget(o, reporter, peaks)
        self.forget: list[str] = []
        """gids of stopped downloads whose results are to be removed from aria2c."""
        self.pipelining = settings.aria2_pipelining() and not proxy_conf()
        """Whether a big file's range requests are pipelined (see :meth:`_add_call`)."""

    # --- lifecycle ---

    def go(self) -> list[FetchResult]:
        listener = _Notifications(self.client.port, self.wake)
        try:
            self._loop()
        finally:
            listener.stop()
            # Resolutions still in flight (a mirror that never answered, a cancel) end on
            # their own, in daemon threads: nothing waits for them.
            for pool in self.pools.values():
                pool.shutdown()
            self.writeback.stop()
            # Every hash first: a hashed file then has its future in ``finishing``.
            self.hash_pool.shutdown(wait=True)
            for fut in self.finishing:
                with contextlib.suppress(Exception):
                    fut.result()
            self.finish_pool.shutdown(wait=True)
            self.http.close()
        return self.results

    def _order(self) -> list[int]:
        """Small files first (each is one quick request, and they go out together), then the
        big ones, largest first (the last file to finish is then a small one, whose hash left
        at the end is short)."""
        small = [i for i, j in enumerate(self.jobs) if j.size <= SMALL_FILE]
        big = [i for i, j in enumerate(self.jobs) if j.size > SMALL_FILE]
        small.sort(key=lambda i: self.jobs[i].size)
        big.sort(key=lambda i: -self.jobs[i].size)
        return small + big

    def _loop(self) -> None:
        active: dict[int, _Active] = {}
        for i in self._order():
            state = self._begin(i)
            if state is not None:
                active[i] = state
        while True:
            if self.proc.poll() is not None:
                self._engine_died(active, [])
                return
            if self.cancel.is_set():
                self._cancel(active, [])
                return
            for state in active.values():
                self._resolution(state)
            added = [s for s in active.values() if s.gid is not None and not s.done]
            try:
                statuses, servers = self._poll(added)
            except _RPC_ERRORS as exc:
                if self.proc.poll() is not None:
                    continue
                for state in added:
                    self._fail(
                        state, f"aria2c RPC error: {type(exc).__name__}: {exc}", "engine-died"
                    )
                statuses, servers = {}, {}
            for state in added:
                assert state.gid is not None
                try:
                    self._step(state, statuses.get(state.gid), servers.get(state.gid))
                except _RPC_ERRORS as exc:
                    if self.proc.poll() is not None:
                        break
                    self._fail(
                        state, f"aria2c RPC error: {type(exc).__name__}: {exc}", "engine-died"
                    )
            self._flush_forget()
            for i, state in list(active.items()):
                if state.done:
                    del active[i]
            self.writeback.follow(
                s.job.dest for s in active.values() if s.gid is not None and s.job.size > SMALL_FILE
            )
            try:
                self._schedule([s for s in active.values() if not s.done])
            except _RPC_ERRORS as exc:
                if self.proc.poll() is None:
                    for state in active.values():
                        if state.gid is None and state.pending is not None:
                            self._fail(
                                state,
                                f"aria2c RPC error: {type(exc).__name__}: {exc}",
                                "engine-died",
                            )
            for i, state in list(active.items()):
                if state.done:
                    del active[i]
            if not active:
                return
            # Woken early when a job's sources are resolved (so it is added at once).
            if self.wake.wait(look_interval(active.values(), statuses, time.monotonic())):
                self.wake.clear()

    # --- starting a job ---

    def _begin(self, i: int) -> _Active | None:
        job = self.jobs[i]
        result = self.results[i]
        state = _Active(job, result, time.perf_counter())
        if job.size == 0:
            try:
                job.dest.open("wb").close()
                _unlink(Path(f"{job.dest}{CONTROL_SUFFIX}"))
            except OSError as exc:
                result.error = f"cannot create {job.dest}: {exc}"
                result.failure = failure_of_os_error(exc)
                return None
            result.ok = True
            self._completed(state)
            return None
        if not job.sources:
            result.error = "no source to fetch it from"
            result.failure = "no-mirror"
            return None
        self._resolve_later(state)
        return state

    def _hedge_s(self) -> float:
        """The hedge budget: how long a mirror may lag before the others take its work."""
        best = self.best_latency
        return max(HEDGE_MIN_S, HEDGE_LATENCIES * best) if best is not None else HEDGE_MIN_S

    def _submit(self, mirror: str, fn: Callable[[], Any]) -> Future[Any]:
        pool = self.pools.get(mirror)
        if pool is None:
            pool = self.pools[mirror] = _DaemonPool(RESOLVE_WORKERS, "modelget-aria2-resolve")
        fut = pool.submit(fn)
        fut.add_done_callback(lambda _f: self.wake.set())
        return fut

    def _resolve_later(self, state: _Active, indexes: Iterable[int] | None = None) -> None:
        """Start a round of resolving the job's sources (all of them, or ``indexes``), each at
        once on its mirror's threads; :meth:`_resolution` takes the answers as they come."""
        prev = state.resolving
        attempt = prev.attempt + 1 if prev is not None and indexes is not None else 1
        todo = range(len(state.job.sources)) if indexes is None else indexes
        sources = state.job.sources
        waiting = {
            i: self._submit(
                sources[i].mirror, functools.partial(_timed_resolve, self.http, sources[i])
            )
            for i in todo
        }
        state.resolving = _Resolving(attempt, waiting)

    def _resolution(self, state: _Active) -> None:
        """Take the answers of the job's resolution round that have come in.

        Every source is resolved at once. The first good answer starts the download (after
        a grace of ``RESOLVE_GRACE_MIN_S``, or that answer's own time, for the others to
        join); a source that answers later is added to the download (:meth:`_add_late`), and
        one that never answers holds nothing. Token-needing sources are held back (aria2c
        never gets a header: see the module doc); with no other source, the job is handed
        back.

        When no source resolves and some were refused with a status worth retrying (429, 5xx),
        those are asked again after their ``Retry-After`` (or a backoff), up to ``max_tries``
        rounds: a short burst of errors on the only mirror does not fail the file. With a
        source that did resolve, the download starts without the refused ones."""
        r = state.resolving
        if r is None or state.done:
            return
        job = state.job
        now = time.monotonic()
        if r.retry_at is not None:
            if self.cancel.is_set():
                r.retry_at = None
                self._give_up_resolving(state, r)
            elif now >= r.retry_at:
                self._resolve_later(state, [i for i, _ in r.busy])
            return
        fresh: list[tuple[int, ResolvedURL]] = []
        for i, fut in list(r.waiting.items()):
            if not fut.done():
                continue
            del r.waiting[i]
            src = job.sources[i]
            try:
                res, seconds = fut.result()
            except ResolveURLError as exc:
                if exc.status is not None and status_is_retryable(exc.status) and not r.started:
                    r.busy.append((i, exc))
                else:
                    self._mirror_failed(state, src.mirror, exc.message)
                continue
            except Exception as exc:  # a bug, a cancelled call, an unexpected library error
                self._mirror_failed(state, src.mirror, f"{type(exc).__name__}: {exc}")
                continue
            if res.size is not None and res.size != job.size:
                self._mirror_failed(
                    state, src.mirror, f"size mismatch: it serves {res.size} bytes, not {job.size}"
                )
                continue
            if self.best_latency is None or seconds < self.best_latency:
                self.best_latency = seconds
            fresh.append((i, res))
            if r.first_ok_at is None:
                r.first_ok_at = now
                r.grace_s = min(self._hedge_s(), max(RESOLVE_GRACE_MIN_S, seconds))
        if r.started:
            if fresh:
                self._add_late(state, fresh)
        else:
            r.ok.extend(fresh)
            free = [(i, x) for i, x in r.ok if not _needs_header(job.sources[i], x)]
            due = r.first_ok_at is not None and now >= r.first_ok_at + r.grace_s
            if free and (not r.waiting or due):
                self._start_sources(state, r)
            elif not r.waiting:
                self._give_up_resolving(state, r)
        if not r.waiting and state.resolving is r and r.retry_at is None:
            state.resolving = None

    def _start_sources(self, state: _Active, r: _Resolving) -> None:
        """The round has a source for aria2: the job's download gets what resolved so far."""
        r.started = True
        for i, error in r.busy:
            self._mirror_failed(state, state.job.sources[i].mirror, error.message)
        r.busy.clear()
        ok = sorted(r.ok)
        sources, state.held_back = _group_sources(
            [(state.job.sources[i], res) for i, res in ok], state.result.attempts
        )
        state.pending, state.parked = sources, []

    def _give_up_resolving(self, state: _Active, r: _Resolving) -> None:
        """Every source of the round has answered and none can go to aria2c: hand the job
        back (token-needing sources), ask the refused ones again, or fail it."""
        job = state.job
        if r.ok:  # only token-needing sources resolved
            _, state.held_back = _group_sources(
                [(job.sources[i], x) for i, x in r.ok], state.result.attempts
            )
            r.started = True
            self._hand_back(state)
            return
        tries = max(1, self.options.max_tries)
        if r.busy and r.attempt < tries and not self.cancel.is_set():
            backoff = self.options.retry_wait_s * 2 ** (r.attempt - 1)
            wait = max(
                backoff if e.retry_after is None else min(e.retry_after, MAX_RETRY_AFTER_S)
                for _, e in r.busy
            )
            for i, error in r.busy:
                state.result.attempts.append(
                    f"{job.sources[i].mirror}: {error.message}; asking again in {wait:.1f} s"
                )
            r.retry_at = time.monotonic() + wait
            return
        r.started = True
        for i, error in r.busy:
            self._mirror_failed(state, job.sources[i].mirror, error.message)
        r.busy.clear()
        self._fail(state, no_mirror_left(state.result.attempts))

    def _add_late(self, state: _Active, fresh: Sequence[tuple[int, ResolvedURL]]) -> None:
        """Sources that resolved after the download started join it: a token-needing one is
        held back with the others; a free one is added to aria2's URI list and, for a big file
        with enough left, the download gets connections for it (``changeOption``: aria2
        restarts it inside, keeping every finished piece; it opens no connection to a URI
        added to a running download otherwise)."""
        job = state.job
        new: list[_Source] = []
        for i, res in fresh:
            src = job.sources[i]
            if src.mirror in state.failed_mirrors:
                continue
            if _needs_header(src, res):
                state.held_back.append([_Source(src, res, True)])
                continue
            known = [*(state.pending if state.pending is not None else state.sources)]
            known += state.parked
            if any(x.src.mirror == src.mirror or x.resolved.url == res.url for x in known):
                continue
            new.append(_Source(src, res, False))
        if not new:
            return
        if state.pending is not None:  # not handed to aria2c yet
            state.pending.extend(new)
            return
        left = job.size - state.last_completed
        # The restart costs about 0.1 s of transfer: worth it with half a second left.
        restart = job.size > SMALL_FILE and left >= GROW_BYTES_PER_CONNECTION
        self._join(state, new, restart=restart and left > state.speed / 2)

    def _join(self, state: _Active, new: Sequence[_Source], *, restart: bool) -> None:
        """Add sources to a running download (``restart``: with connections for them:
        ``changeOption`` restarts it inside, keeping every finished piece; aria2 opens no
        connection to a URI added to a running download otherwise)."""
        gid = state.gid
        if gid is None:
            return
        state.sources.extend(new)
        for x in new:
            state.uri_mirror[x.resolved.url] = x.src.mirror
        calls: list[tuple[str, list[Any]]] = [
            ("aria2.changeUri", [gid, 1, [], [x.resolved.url for x in new]])
        ]
        if restart:
            calls.append(
                ("aria2.changeOption", [gid, self._split_options(state, state.per_server)])
            )
        with contextlib.suppress(*_RPC_ERRORS):
            self.client.multicall(calls)

    def _mirror_failed(self, state: _Active, mirror: str, reason: str) -> None:
        state.result.attempts.append(f"{mirror}: {reason}")
        state.failed_mirrors.add(mirror)
        self.reporter.on_mirror_failed(state.job.path, mirror, reason)

    def _hand_back(self, state: _Active) -> None:
        """The job's bytes are served only where its token must go with every request: aria2c
        never gets a token (it would send it on across any redirect), so the job goes back to
        the caller to be fetched by an engine that sends it to its own origin only."""
        result = state.result
        result.ok = False
        result.needs_headers = True
        result.error = "its mirrors serve it only with their token, which aria2c never gets"
        result.seconds = time.perf_counter() - state.started
        state.done = True

    # --- the connection budget and adding downloads ---

    def _schedule(self, states: Sequence[_Active]) -> None:
        """Grow the connection targets while they pay, give the big downloads their share of
        each mirror's target (more to a running one when one ends), and add what is ready:
        every small file at once, big files while their mirrors have connections to spare."""
        now = time.monotonic()
        big = [s for s in states if s.gid is not None and s.job.size > SMALL_FILE]
        waiting = [s for s in states if s.gid is None and s.pending is not None]
        self.budget.tick(now, self.results, big, waiting)
        free = dict(self.budget.targets())
        grow: list[tuple[_Active, int]] = []
        taken: set[str] = set()
        # Mirrors a big download runs on (or was just added on, below).
        for s in big:
            mirrors = s.mirrors()
            taken |= mirrors
            avail = min((free.get(m, 0) for m in mirrors), default=0)
            left = s.job.size - s.last_completed
            # No more connections than the download has left for (a change restarts it).
            want = max(1, min(PER_HOST_MAX, avail, left // GROW_BYTES_PER_CONNECTION))
            per = s.per_server
            if want >= per + max(GROW_STEP, per // 2):
                grow.append((s, want))
                per = want
            used = min(per, _need(left))
            for m in mirrors:
                free[m] = free.get(m, 0) - used
            # Joining restarts the download inside: only with plenty left for every connection
            # (S10: joining 16 MB files as soon as the slow mirror had room measured slower).
            if s.parked and left >= per * GROW_BYTES_PER_CONNECTION:
                join = [x for x in s.parked if free.get(x.src.mirror, 0) >= self._room(x, s)]
                if join:
                    s.parked = [x for x in s.parked if x not in join]
                    for x in join:
                        free[x.src.mirror] = free.get(x.src.mirror, 0) - used
                        taken.add(x.src.mirror)
                    self._join(s, join, restart=True)
        if grow:
            self._grow(grow)
        adds: list[tuple[_Active, int]] = []
        for s in waiting:
            if s.job.size <= SMALL_FILE:
                adds.append((s, 1))
                continue
            pending = s.pending or []
            for x in pending:
                free.setdefault(x.src.mirror, self.budget.target(x.src.mirror, s))
            # A big file starts on the mirrors that have connections to spare: one not busy
            # with a big download (also one added in this same pass: the first pass adds every
            # file that resolved), or one with a few connections left. The others join it when
            # they have some: aria2's connection limit is per host but the same for every
            # host of a download, so a file added on what is left of a saturated mirror would
            # get as few on a free one (S10: a file on one connection, to the slow mirror
            # listed first, for the whole file: 16 s).
            roomy = [
                x
                for x in pending
                if x.src.mirror not in taken or free[x.src.mirror] >= self._room(x, s)
            ]
            if not roomy:
                continue
            busy = [x for x in pending if x not in roomy]
            if busy and watchdog.wait_for_faster(
                [self._rate(x.src.mirror, now) for x in roomy],
                [self._rate(x.src.mirror, now) for x in busy],
            ):
                continue  # the much faster mirror starts it when it has room
            mirrors = {x.src.mirror for x in roomy}
            avail = min(free[m] for m in mirrors)
            per = max(1, min(PER_HOST_MAX, avail))
            s.pending, s.parked = roomy, [x for x in pending if x not in roomy]
            adds.append((s, per))
            taken |= mirrors
            for m in mirrors:
                free[m] -= min(per, _need(s.job.size))
        if adds:
            self._add_many(adds)
        self.budget.report(states)

    def _rate(self, mirror: str, now: float) -> float | None:
        """``mirror``'s rate per connection over its recent downloads (None: unmeasured)."""
        return watchdog.yardstick(self.delivered.get(mirror), now, self._hedge_s())

    def _room(self, x: _Source, state: _Active) -> int:
        """Spare connections a busy mirror needs to start a big file (or join one)."""
        return min(GROW_STEP, self.budget.target(x.src.mirror, state))

    def _grow(self, grow: Sequence[tuple[_Active, int]]) -> None:
        """More connections for running downloads (``aria2.changeOption``: aria2 restarts the
        download inside, keeping every finished piece; measured ~0.1 s of lost transfer)."""
        calls = []
        for s, per in grow:
            calls.append(("aria2.changeOption", [s.gid, self._split_options(s, per)]))
        answers = self.client.multicall(calls)
        for (s, per), answer in zip(grow, answers, strict=True):
            if not isinstance(answer, Exception):
                s.per_server = per

    def _split_options(self, state: _Active, per_server: int) -> dict[str, str]:
        hosts = {urlsplit(x.resolved.url).hostname for x in state.sources} or {None}
        return {
            "split": str(max(1, per_server * len(hosts))),
            "max-connection-per-server": str(per_server),
        }

    def _add_many(self, adds: Sequence[tuple[_Active, int]]) -> None:
        """Add downloads to aria2c, in one RPC round trip."""
        calls: list[tuple[str, list[Any]]] = []
        added: list[_Active] = []
        for state, per in adds:
            sources, state.pending = state.pending or [], None
            call = self._add_call(state, sources, per)
            if call is not None:
                calls.append(call)
                added.append(state)
        if not calls:
            return
        answers = self.client.multicall(calls)
        for state, answer in zip(added, answers, strict=True):
            if isinstance(answer, Exception):
                self._fail(state, f"aria2c refused the download: {answer}")
                continue
            state.gid = str(answer)

    def _add_call(
        self, state: _Active, sources: list[_Source], per_server: int
    ) -> tuple[str, list[Any]] | None:
        """The ``aria2.addUri`` call for a job (None: its bytes are all on disk already)."""
        job = state.job
        have = _prepare_dest(job)
        if have and state.readds == 0:
            state.result.resumed_bytes = have
            self.reporter.on_file_resumed(job.path, have)
        if state.hashing is not None:
            state.hashing.doubt()
        # Hashing as the bytes arrive only for a download that starts from nothing: bytes
        # resumed from an earlier run are hashed from the finished file instead.
        state.hashing = _Hashing.for_job(job) if have == 0 else None
        if have == job.size and job.size > 0:
            # Every byte is there already (aria2c finished it before a kill): on to
            # verification, once it is on the disk (it may still be only in the page cache).
            state.result.ok = True
            state.done = True
            self.finishing.append(self.finish_pool.submit(self._land_ready, state))
            return None
        state.baseline = state.last_completed = state.watched = have
        state.progress_at = time.monotonic()
        state.sources = sources
        state.per_server = per_server
        state.uri_mirror = {s.resolved.url: s.src.mirror for s in sources}
        uris = [s.resolved.url for s in sources]
        o = self.options
        opts: dict[str, Any] = {
            "dir": str(job.dest.parent),
            "out": job.dest.name,
            **self._split_options(state, per_server),
            "min-split-size": str(MIN_SPLIT),
            "continue": "true",
            "always-resume": "true",
            "allow-overwrite": "false",
            "auto-file-renaming": "false",
            "check-integrity": "false",
            "remote-time": "false",
            "uri-selector": "adaptive",
            # aria2 checks this per connection: a slower one is closed and its segment goes
            # back to the pool (to another mirror when there is one).
            "lowest-speed-limit": str(max(0, int(o.lowest_speed_bps))),
            "max-tries": str(max(1, o.max_tries)),
            "retry-wait": str(max(0, math.ceil(o.retry_wait_s))),
            "connect-timeout": str(max(1, math.ceil(o.connect_timeout_s))),
            # The read timeout is what notices a stalled connection.
            "timeout": str(max(1, math.ceil(min(o.read_timeout_s, o.stall_timeout_s)))),
            "max-file-not-found": str(max(1, len(uris))),
            "http-accept-gzip": "false",
        }
        if self.pipelining and job.size > SMALL_FILE:
            # Pipelined, aria2 asks for one segment (1 MiB) per request, two requests in
            # flight per connection; without it, each connection asks for all the bytes up to
            # the next busy segment at once. A CDN that paces each request after a head start
            # (nginx's limit_rate) gives every 1 MiB request its head start: MiniLM at 4 MB/s
            # per connection came in 0.5 s instead of 1.5 s. Only for a big file: aria2 closes
            # the first, range-less answer at once when pipelining, and asks again with a
            # range (a small file would be sent about twice on loopback). Off behind a proxy,
            # the classic place where pipelining breaks.
            opts["enable-http-pipelining"] = "true"
            # Every connection takes the first free segment, so the file fills from its start
            # and the hashing of its finished prefix keeps up (by default each connection
            # works through a region of its own, and 15/16 of a file was hashed after its last
            # byte: 0.8 s for two 1 GB files in bench S3).
            opts["stream-piece-selector"] = "inorder"
        # A big download goes before the small ones still waiting in aria2's queue.
        params: list[Any] = [uris, opts] + ([0] if job.size > SMALL_FILE else [])
        return ("aria2.addUri", params)

    # --- polling ---

    def _poll(
        self, added: Sequence[_Active]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, tuple[int, float]]]]:
        """Every download's status in one round trip (``tellActive`` + ``tellStopped``; one
        that is in neither is waiting in aria2's queue), then the servers of the running
        downloads that have more than one mirror (a second round trip, only then)."""
        if not added:
            return {}, {}
        active, stopped = self.client.multicall(
            [("aria2.tellActive", [_KEYS]), ("aria2.tellStopped", [0, 1 << 20, _KEYS])],
        )
        statuses: dict[str, dict[str, Any]] = {}
        for group in (active, stopped):
            if isinstance(group, Exception):
                raise RPCError(str(group), 1)
            for st in group:
                statuses[str(st.get("gid"))] = st
        servers: dict[str, dict[str, tuple[int, float]]] = {}
        multi = [
            s
            for s in added
            if s.gid in statuses
            and statuses[s.gid].get("status") == "active"
            and len(s.sources) > 1
        ]
        if multi:
            answers = self.client.multicall([("aria2.getServers", [s.gid]) for s in multi])
            for s, answer in zip(multi, answers, strict=True):
                assert s.gid is not None
                servers[s.gid] = {} if isinstance(answer, Exception) else self._by_mirror(s, answer)
        for s in added:
            st = statuses.get(s.gid or "")
            if st is not None and st.get("status") == "active" and len(s.sources) == 1:
                servers[str(s.gid)] = {
                    s.sources[0].src.mirror: (
                        int(st.get("connections", 0) or 0),
                        float(st.get("downloadSpeed", 0) or 0),
                    )
                }
        return statuses, servers

    def _by_mirror(self, state: _Active, entries: Any) -> dict[str, tuple[int, float]]:
        """Per mirror of the download: (connections open, their download speed in B/s)."""
        out: dict[str, tuple[int, float]] = {}
        for entry in entries or []:
            for server in entry.get("servers", []):
                mirror = state.uri_mirror.get(str(server.get("uri", "")))
                if mirror is None:
                    continue
                n, speed = out.get(mirror, (0, 0.0))
                out[mirror] = (n + 1, speed + float(server.get("downloadSpeed", 0) or 0))
        return out

    def _flush_forget(self) -> None:
        if self.forget:
            gids, self.forget = self.forget, []
            with contextlib.suppress(*_RPC_ERRORS):
                self.client.multicall([("aria2.removeDownloadResult", [g]) for g in gids])

    def _step(
        self,
        state: _Active,
        status: Mapping[str, Any] | None,
        servers: Mapping[str, tuple[int, float]] | None,
    ) -> None:
        if state.gid is None:
            return
        if status is None:  # waiting in aria2's queue (or paused)
            state.progress_at = time.monotonic()
            return
        completed = int(status.get("completedLength", 0) or 0)
        st = status.get("status")
        if st != "active":
            # Waiting in aria2's queue is not stalling: the watchdog's clock starts when the
            # download does.
            state.progress_at = time.monotonic()
        state.connections = int(status.get("connections", 0) or 0)
        state.speed = float(status.get("downloadSpeed", 0) or 0)
        self._account(state, completed, servers)
        if st == "complete":
            state.result.last_byte_at = time.perf_counter()
            self._account(state, state.job.size)
            self._forget(state)
            self._finish(state)
            return
        if st in ("error", "removed"):
            code = str(status.get("errorCode", "") or "")
            message = _QUERY.sub("?...", str(status.get("errorMessage", "") or "download failed"))
            self._forget(state)
            self._errored(state, code, message)
            return
        self._follow(state, status)
        if servers is not None and st == "active":
            self._watch(state, servers, completed)

    # --- hashing as the bytes arrive ---

    def _follow(self, state: _Active, status: Mapping[str, Any]) -> None:
        """Hash the download's contiguous run of finished pieces in the background."""
        h = state.hashing
        if h is None or not h.valid:
            return
        pieces = _leading_pieces(str(status.get("bitfield", "") or ""))
        if pieces < h.pieces:
            h.doubt()  # a finished piece is unfinished again: aria2 may write it anew
            return
        h.pieces = pieces
        upto = min(state.job.size, pieces * int(status.get("pieceLength", 0) or 0))
        if upto > h.hasher.pos and (h.future is None or h.future.done()):
            h.future = self.hash_pool.submit(h.advance, state.job.dest, upto)

    def _finish(self, state: _Active) -> None:
        """aria2 has every byte: hash what is left (in the background), make the file durable
        and hand it over."""
        state.result.ok = True
        state.done = True  # the loop lets go of it; the pools finish it
        h = state.hashing
        if h is None or not h.valid:
            self.finishing.append(self.finish_pool.submit(self._land_ready, state))
            return
        self.hash_pool.submit(self._hash_rest, state, h)

    def _hash_rest(self, state: _Active, h: _Hashing) -> None:
        try:
            h.advance(state.job.dest, state.job.size)
            state.result.digests = h.digests()
        finally:
            self.finishing.append(self.finish_pool.submit(self._land_ready, state))

    def _land_ready(self, state: _Active) -> None:
        """The file's last fdatasync, then its hand-over. aria2c fsyncs a data file only
        before it saves the control file, never at the end: without this, a power cut after
        the file landed could leave a verified blob with zeros (mostly flushed already by the
        writeback thread, so this is short). A file the disk refuses fails here."""
        try:
            datasync(state.job.dest)
        except OSError as exc:
            result = state.result
            result.ok = False
            result.digests = None
            result.error = f"cannot write {state.job.dest}: {exc.strerror or exc}"
            result.failure = failure_of_os_error(exc)
            result.seconds = time.perf_counter() - state.started
            state.done = True
            self.wake.set()
            return
        self._completed(state)

    def _account(
        self, state: _Active, completed: int, servers: Mapping[str, tuple[int, float]] | None = None
    ) -> None:
        """Report the bytes that arrived since the last poll and attribute them to mirrors.

        aria2 does not count bytes per URI. The split is an estimate: at a look at the
        download's servers, :meth:`_observe`'s (the speeds aria2 reports for each mirror's
        connections over the time since the last look; the rest to the mirrors whose
        connections closed meanwhile), else the last shares (or an even split before there
        are any). The shares always add up to the bytes transferred in this run."""
        delta = completed - state.last_completed
        split = self._observe(state, max(0, delta), servers) if servers is not None else None
        if delta <= 0:
            return
        state.last_completed = completed
        total = sum(split.values()) if split else 0.0
        if split and total > 0:
            state.shares = {m: v / total for m, v in split.items() if v > 0}
        # Before aria2 reports any speed: an even split over the download's mirrors.
        even = {s.src.mirror: 1.0 / len(state.sources) for s in state.sources}
        shares = state.shares or even
        if not shares:
            return
        counts = {m: int(delta * share) for m, share in shares.items()}
        top = max(shares, key=lambda m: shares[m])
        counts[top] += delta - sum(counts.values())
        for mirror, n in counts.items():
            if n <= 0:
                continue
            by = state.result.bytes_by_mirror
            by[mirror] = by.get(mirror, 0) + n
            self.reporter.on_bytes(state.job.path, n, mirror)

    def _observe(
        self, state: _Active, delta: int, servers: Mapping[str, tuple[int, float]]
    ) -> dict[str, float] | None:
        """Which mirror brought the download's ``delta`` new bytes since the last look, and
        each mirror's connection-seconds meanwhile (added to :attr:`delivered`, the
        yardsticks of the watchdog: :func:`watchdog.yardstick`).

        A mirror still connected is credited with the mean of the speeds aria2 reported for
        it at both looks, times the time between; the bytes beyond that go to the mirrors
        whose connections closed in between (they finished their segments: on a fast link a
        mirror can fetch its whole share between two looks, never seen at speed), in
        proportion to their connections, or else to the download's mirrors that had no
        connection at either look (theirs opened and closed in between); the result is
        scaled to ``delta``. Such an unseen mirror is charged ``PER_HOST_MAX`` connections
        for the whole time between the looks (at most that many were open, none longer), so
        its rate per connection is never overestimated, and its bytes still count for its
        yardstick. None before anything can be said (the first look; no speed and no closed
        connection)."""
        now = time.monotonic()
        last, state.look = state.look, (now, dict(servers))
        if last is None:
            return None
        at, prev = last
        dt = now - at
        if dt <= 0:
            return None
        got: dict[str, float] = {}
        for m, (n, speed) in servers.items():
            if n:
                got[m] = (speed + prev.get(m, (0, 0.0))[1]) / 2 * dt
        gone = {m: n for m, (n, _) in prev.items() if n and not servers.get(m, (0, 0.0))[0]}
        if not gone:
            # Connections can open and close between two looks, never seen: those of the
            # download's mirrors that had none at either look.
            gone = {
                s.src.mirror: 1
                for s in state.sources
                if not prev.get(s.src.mirror, (0, 0.0))[0]
                and not servers.get(s.src.mirror, (0, 0.0))[0]
            }
        expected = sum(got.values())
        if delta > expected and gone:
            rest, conns = delta - expected, sum(gone.values())
            for m, n in gone.items():
                got[m] = got.get(m, 0.0) + rest * n / conns
        total = sum(got.values())
        split = {m: v * delta / total for m, v in got.items()} if total > 0 else None
        for m in {*prev, *servers, *(split or {})}:
            conn_s = (prev.get(m, (0, 0.0))[0] + servers.get(m, (0, 0.0))[0]) / 2 * dt
            nbytes = split.get(m, 0.0) if split else 0.0
            if nbytes > 0 and conn_s <= 0:
                # Bytes of connections that opened and closed between the looks, never seen.
                conn_s = PER_HOST_MAX * dt
            if conn_s > 0 or nbytes > 0:
                self.delivered.setdefault(m, Delivered()).add(now, nbytes, conn_s)
        return split

    def _watch(
        self,
        state: _Active,
        servers: Mapping[str, tuple[int, float]],
        completed: int,
    ) -> None:
        """modelget's own watchdog over the mirrors of one download, beside aria2's: the
        decisions are :func:`watchdog.decide`'s (which mirror is stalled, behind, holding the
        end, too slow; which idle redirect URL to check), from a :class:`watchdog.Look` at
        the download; this carries them out. A source's URIs are removed with the download
        paused around the change (deleting a URI does not close aria2's connection to it,
        pausing the download does; the bytes are kept).

        aria2 keeps a URI that failed in the download's list, so a signed redirect URL that
        expired cannot be seen there: a redirected source idle for ``stall_timeout_s`` is
        checked, and if its URL is refused now, resolved again and the fresh URL swapped in
        (at most ``MAX_REREOLVES_PER_SOURCE`` times), with the download paused around the
        change so that aria2 opens connections to it (:meth:`_swap_resolved`)."""
        if state.gid is None or completed >= state.job.size:
            return
        now = time.monotonic()
        opts = self.options
        for s in state.sources:
            conns, speed = servers.get(s.src.mirror, (0, 0.0))
            watchdog.tick(s.clock, conns, speed, now, opts.lowest_speed_bps, opts.stall_timeout_s)
        if completed > state.watched:
            state.watched, state.progress_at = completed, now
        self._swap_resolved(state)
        sources = list(state.sources)
        verdict = watchdog.decide(
            self._look(state, servers, completed, now), now, lambda: self._used(state)
        )
        for t in verdict.take_out:
            self._remove_uris(state, sources[t.source], t.reason, pause=True, report=t.report)
        if verdict.restart_clock:
            state.progress_at = now
        for i in verdict.recheck:
            s = sources[i]
            state.rerolve[s.src.mirror] = self._submit(
                s.src.mirror, functools.partial(_recheck, self.http, s)
            )

    def _look(
        self,
        state: _Active,
        servers: Mapping[str, tuple[int, float]],
        completed: int,
        now: float,
    ) -> watchdog.Look:
        """The download as the watchdog sees it: plain data."""
        hedge_s = self._hedge_s()
        by_mirror = state.result.bytes_by_mirror
        mirrors = [
            watchdog.MirrorLook(
                s.src.mirror,
                s.clock,
                *servers.get(s.src.mirror, (0, 0.0)),
                bytes=by_mirror.get(s.src.mirror, 0),
                rate=watchdog.yardstick(self.delivered.get(s.src.mirror), now, hedge_s),
                rate_before=watchdog.yardstick(
                    self.delivered.get(s.src.mirror), now, hedge_s, lately=False
                ),
                recheckable=s.resolved.redirected
                and s.rerolves < watchdog.MAX_REREOLVES_PER_SOURCE
                and s.src.mirror not in state.rerolve,
            )
            for s in state.sources
        ]
        return watchdog.Look(
            size=state.job.size,
            completed=completed,
            progress_at=state.progress_at,
            connections=state.connections,
            per_server=state.per_server,
            sources=mirrors,
            hedge_s=hedge_s,
            lowest_speed_bps=self.options.lowest_speed_bps,
            stall_timeout_s=self.options.stall_timeout_s,
        )

    def _used(self, state: _Active) -> set[int]:
        """The download's sources (indexes) whose URIs aria2 lists as used."""
        if state.gid is None:
            return set()
        try:
            status = self.client.tell_status(state.gid, ["files"])
        except _RPC_ERRORS:
            return set()
        used = {
            str(u.get("uri"))
            for f in status.get("files") or []
            for u in f.get("uris") or []
            if u.get("status") == "used"
        }
        return {i for i, s in enumerate(state.sources) if s.resolved.url in used}

    def _swap_resolved(self, state: _Active) -> None:
        """Put the fresh URLs of sources resolved again into the download."""
        for s in list(state.sources):
            pending = state.rerolve.get(s.src.mirror)
            if pending is None or not pending.done():
                continue
            del state.rerolve[s.src.mirror]
            try:
                fresh = pending.result()
            except Exception as exc:
                self._remove_uris(state, s, f"its URL stopped working: {exc}")
                continue
            if fresh is None:  # idle by aria2's choice: its URL still works
                continue
            if fresh.url == s.resolved.url or fresh.url in state.uri_mirror or state.gid is None:
                continue
            s.rerolves += 1
            self._replace_uri(state, s, fresh)

    def _replace_uri(self, state: _Active, s: _Source, fresh: ResolvedURL) -> None:
        """Swap a source's expired URL for a fresh one, pausing the download around the change
        (aria2 opens no new connection to a URI added to a running download)."""
        gid = state.gid
        if gid is None:
            return
        old = s.resolved.url
        try:
            if state.hashing is not None:
                state.hashing.doubt()  # a pause and resume: see _Hashing
            if not self._pause(gid):
                return
            count = _uri_count(self.client.tell_status(gid, ["files"]), old)
            self.client.change_uri(gid, 1, [old] * count, [fresh.url])
            state.uri_mirror[fresh.url] = s.src.mirror
            s.resolved = fresh
            state.result.attempts.append(
                f"{s.src.mirror}: its URL was refused (a signed URL that expired?); "
                "resolved it again and carried on with the fresh one"
            )
        except _RPC_ERRORS:
            pass
        finally:
            self._unpause(gid)

    def _pause(self, gid: str) -> bool:
        """Force-pause a download; True once it is paused (False: it ended meanwhile)."""
        self.client.force_pause(gid)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            st = self.client.tell_status(gid, ["status"]).get("status")
            if st != "active":
                return st == "paused"
            time.sleep(0.02)
        return False

    def _unpause(self, gid: str) -> None:
        """Unpause, first in aria2's queue (a no-op for a download that is not paused)."""
        with contextlib.suppress(*_RPC_ERRORS):
            self.client.unpause(gid)
            self.client.change_position(gid, 0, "POS_SET")

    def _remove_uris(
        self,
        state: _Active,
        s: _Source,
        reason: str,
        *,
        pause: bool = False,
        report: bool = True,
    ) -> None:
        """Take a source's URIs out of the download (``pause``: also close its connections,
        by pausing the download around the change; the bytes on disk are kept; ``report``:
        as a failure of its mirror, with ``reason``)."""
        gid = state.gid
        _log.debug(
            "%s: %s taken out%s: %s",
            state.job.path,
            s.src.mirror,
            "" if report else " (not reported)",
            reason,
        )
        if report:
            self._drop_source(state, s, reason)
        elif s in state.sources:
            state.sources.remove(s)
        if gid is None:
            return
        uri = s.resolved.url
        try:
            if pause:
                if state.hashing is not None:
                    state.hashing.doubt()  # a pause and resume: see _Hashing
                if not self._pause(gid):
                    return  # it completed or failed meanwhile: the next poll sees it
            count = _uri_count(self.client.tell_status(gid, ["files"]), uri)
            if count:
                self.client.change_uri(gid, 1, [uri] * count, [])
        except _RPC_ERRORS:
            pass
        finally:
            if pause:
                self._unpause(gid)

    def _drop_source(self, state: _Active, s: _Source, reason: str) -> None:
        if s in state.sources:
            state.sources.remove(s)
        if s.src.mirror not in state.failed_mirrors:
            self._mirror_failed(state, s.src.mirror, reason)

    def _forget(self, state: _Active) -> None:
        if state.gid is not None:
            self.forget.append(state.gid)  # removed in one round trip, after this look
        state.gid = None

    def _errored(self, state: _Active, code: str, message: str) -> None:
        job = state.job
        text = f"{message} (aria2 error {code})" if code else message
        mirrors = "+".join(s.src.mirror for s in state.sources) or "aria2"
        state.result.attempts.append(f"{mirrors}: {text}")

        def report() -> None:
            # Only when the mirrors are really left behind: a download added again with fresh
            # URLs (below) keeps them, and saying "failed" then would be false (an expired
            # signed URL ends an aria2 download with "No URI available").
            for s in state.sources:
                if s.src.mirror not in state.failed_mirrors:
                    state.failed_mirrors.add(s.src.mirror)
                    self.reporter.on_mirror_failed(job.path, s.src.mirror, text)

        if state.last_completed > state.baseline:
            state.readds = 0  # it made progress: a fresh try is worth it (e.g. short-lived URLs)
        # aria2c 1.36 ends a download whose every URI was refused (an expired signed URL,
        # say) with code 17, its I/O-error code, and the message "No URI available.": that is
        # a mirror problem, fixed by fresh URLs, not a local one.
        if code in _LOCAL_ERRORS and not message.startswith("No URI available"):
            report()
            self._fail(state, text, _local_failure(code, message))
            return
        if state.readds >= MAX_READDS_PER_JOB:
            report()
            self._fail(state, no_mirror_left(state.result.attempts))
            return
        state.readds += 1
        if state.held_back:
            report()
            self._hand_back(state)  # its token-needing sources are left: another engine's
            return
        # Fresh URLs (a signed one may have expired), resuming from the control file.
        state.failed_mirrors.clear()
        self._resolve_later(state)

    def _fail(self, state: _Active, error: str, failure: FailureCode = "no-mirror") -> None:
        if state.gid is not None:
            with contextlib.suppress(*_RPC_ERRORS):
                self.client.force_remove(state.gid)
            self._wait_stopped(state)
            self._forget(state)
        state.result.ok = False
        state.result.error = error
        state.result.failure = failure
        state.result.seconds = time.perf_counter() - state.started
        state.done = True

    def _completed(self, state: _Active) -> None:
        state.result.seconds = time.perf_counter() - state.started
        state.done = True
        self.wake.set()
        if self.on_complete is not None:
            self.on_complete(state.job, state.result)

    def _wait_stopped(self, state: _Active, timeout: float = 5.0) -> None:
        """Wait until aria2 has stopped the download (and so saved its control file)."""
        if state.gid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                st = self.client.tell_status(state.gid, ["status", "completedLength"])
            except _RPC_ERRORS:
                return
            if st.get("status") in ("removed", "error", "complete", "paused"):
                self._account(state, int(st.get("completedLength", 0) or 0))
                return
            time.sleep(0.05)

    # --- endings ---

    def _cancel(self, active: dict[int, _Active], queue: list[int]) -> None:
        gids = [s.gid for s in active.values() if s.gid is not None]
        if gids:
            with contextlib.suppress(*_RPC_ERRORS):
                self.client.multicall([("aria2.forceRemove", [g]) for g in gids])
        for state in active.values():
            self._wait_stopped(state)
            self._forget(state)
            state.result.cancelled = True
            state.result.ok = False
            state.result.error = "cancelled"
            state.result.failure = "cancelled"
            state.result.seconds = time.perf_counter() - state.started
        for i in queue:
            self.results[i].cancelled = True
            self.results[i].error = "cancelled"
            self.results[i].failure = "cancelled"
        self._flush_forget()

    def _engine_died(self, active: dict[int, _Active], queue: list[int]) -> None:
        error = f"{_DIED} (code {self.proc.returncode})"
        for i in [*active, *queue]:
            result = self.results[i]
            result.ok = False
            result.error = error
            result.failure = "engine-died"


def look_interval(
    states: Iterable[_Active], statuses: Mapping[str, Mapping[str, Any]], now: float
) -> float:
    """How long until the run's next look at aria2c (pure). aria2c's notifications wake the
    loop at once when a download stops (so a small file's end costs no poll interval); short
    looks while a download is hashed as it arrives, so that hashing keeps pace with its bytes;
    none later than a source's retry or its grace period ends."""
    wait = POLL_INTERVAL_S
    for state in states:
        r = state.resolving
        if r is not None and r.retry_at is not None:
            wait = min(wait, max(0.0, r.retry_at - now))
        elif r is not None and not r.started and r.first_ok_at is not None:
            wait = min(wait, max(0.0, r.first_ok_at + r.grace_s - now))
        st = statuses.get(state.gid or "")
        if st is None or st.get("status") != "active":
            continue
        h = state.hashing
        if h is not None and h.valid and int(st.get("downloadSpeed", 0) or 0) > 0:
            wait = min(wait, HASH_POLL_INTERVAL_S)
    return wait


def _local_failure(code: str, message: str) -> FailureCode:
    """aria2's local error as a failure code (the boundary where its prose becomes data): a
    full disk is code 9, or a write that failed with ENOSPC (an I/O error, code 17/18)."""
    full = code == _DISK_FULL or "No space left" in message or f"errno={errno.ENOSPC}" in message
    return "disk-full" if full else "local-io"


def _uri_count(status: Mapping[str, Any], uri: str) -> int:
    """How often ``uri`` is in a download's URI list (aria2 lists a URI once per use)."""
    files = status.get("files") or []
    return sum(1 for f in files for u in (f.get("uris") or []) if str(u.get("uri")) == uri)
