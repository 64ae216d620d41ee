"""A download's sources: resolving each source URL by hand to the URL that serves the bytes
(:func:`_resolve_one`, on its mirror's own threads: :class:`_DaemonPool`), checking an idle
redirect target again (:func:`_recheck`), and which of them aria2c gets (:func:`_group_sources`:
never one that needs its token where its bytes are; see the package doc)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelget.engines import SourceURL
from modelget.engines.aria2.watchdog import Clock
from modelget.engines.redirects import ResolvedURL, ResolveURLError, resolve_final_url

RESOLVE_WORKERS = 16
"""Resolutions under way at once, per mirror (each mirror has its own threads: one that
never answers cannot hold another's resolutions up)."""
RESOLVE_GRACE_MIN_S = 0.05
"""Once a job's first source has resolved, the others still out get this long, or as long
as that first answer took if more (never more than the hedge budget), to join the download
before it starts; a later answer is added to the running download."""


@dataclass
class _Source:
    src: SourceURL
    resolved: ResolvedURL
    header: bool
    """The source needs ``src.headers`` on its own origin (such a source never goes to
    aria2c: the job is handed back, see the package doc)."""
    rerolves: int = 0
    clock: Clock = field(default_factory=Clock)
    """What the watchdog keeps of it on this download between looks."""


class _DaemonPool:
    """A few daemon threads that run calls and hand back futures.

    Unlike ``ThreadPoolExecutor``, whose threads the interpreter joins at exit, a call that
    hangs here (a mirror that never answers, until the read timeout) holds nothing: not the
    run, which takes the first good answer, and not the process's exit."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(1, workers)
        self.name = name
        self.tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self.threads = 0
        self.pending = 0
        """Calls submitted and not finished (threads are started up to this many)."""
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self.lock:
            if self.closed:
                fut.cancel()
                return fut
            self.pending += 1
            self.tasks.put((fut, fn))
            if self.threads < min(self.workers, self.pending):
                self.threads += 1
                threading.Thread(
                    target=self._work, name=f"{self.name}-{self.threads}", daemon=True
                ).start()
        return fut

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            fut, fn = task
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # handed to whoever reads the future
                    fut.set_exception(exc)
            with self.lock:
                self.pending -= 1

    def shutdown(self) -> None:
        """Cancel what has not started; the threads end (a hung call: when it returns)."""
        with self.lock:
            self.closed = True
            threads = self.threads
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[0].cancel()
        for _ in range(threads):
            self.tasks.put(None)


@dataclass
class _Resolving:
    """One round of resolving a job's sources: all of them at once, each on its mirror's
    threads; the first good answer starts the download (``RESOLVE_GRACE_MIN_S``)."""

    attempt: int
    waiting: dict[int, Future[tuple[ResolvedURL, float]]]
    """Source index (in ``job.sources``) -> its resolution (the URL and seconds it took)."""
    ok: list[tuple[int, ResolvedURL]] = field(default_factory=list)
    busy: list[tuple[int, ResolveURLError]] = field(default_factory=list)
    """Sources refused with a status worth asking again (429, 5xx)."""
    first_ok_at: float | None = None
    grace_s: float = 0.0
    retry_at: float | None = None
    """When the busy sources are asked again (none of the round's sources resolved)."""
    started: bool = False
    """The download has its sources (or the job was handed back or failed): an answer that
    comes later is added to it."""


def _group_sources(
    ok: Sequence[tuple[SourceURL, ResolvedURL]], attempts: list[str]
) -> tuple[list[_Source], list[list[_Source]]]:
    """The URIs of the aria2 download (sources that need no header where their bytes are),
    and the sources held back because they do (aria2c never gets a header: it would send it
    to every URI of the download and on across redirects). With no URI for aria2, the job
    is handed back (:meth:`_Run._hand_back`); otherwise the held-back sources are used only
    if the download fails (each named in ``attempts``)."""
    free = [_Source(s, r, False) for s, r in ok if not (s.headers and r.same_origin)]
    needy = [_Source(s, r, True) for s, r in ok if s.headers and r.same_origin]
    if needy and free:
        attempts.extend(
            f"{g.src.mirror}: skipped, its token cannot go to aria2c; the other mirrors serve it"
            for g in needy
        )
    return free, [needy] if needy else []


def _needs_header(src: SourceURL, res: ResolvedURL) -> bool:
    return bool(src.headers) and res.same_origin


def _resolve_one(client: httpx.Client, src: SourceURL) -> ResolvedURL:
    return resolve_final_url(client, src.url, src.headers)


def _timed_resolve(client: httpx.Client, src: SourceURL) -> tuple[ResolvedURL, float]:
    t = time.monotonic()
    res = _resolve_one(client, src)
    return res, time.monotonic() - t


def _recheck(client: httpx.Client, s: _Source) -> ResolvedURL | None:
    """None while the redirect target ``s`` resolved to still answers (a one-byte Range,
    without the source's headers: they never go to another origin); else the source
    resolved again, to a fresh (signed) URL."""
    try:
        still = resolve_final_url(client, s.resolved.url, max_hops=0)
    except ResolveURLError:
        still = None
    if still is not None and still.status in (200, 206):
        return None
    return _resolve_one(client, s.src)
