"""Carry out a plan: lock, fetch (engine), verify, place. Nothing wrong ever lands.

For each file to fetch: take huggingface_hub's own per-blob lock (so two processes, modelget
or hf, never fetch one blob twice: one fetches, the other waits and reuses), hand the engine
a job writing ``blobs/<etag>.incomplete``, verify the bytes as soon as the engine says a file
is complete (in a small thread pool, overlapped with the other transfers), then rename into
``blobs/<etag>`` and link it from the snapshot (and the ``--local-dir``). A file that fails its
digest is quarantined, its mirror is named, and it is fetched again from the others.

Where the mirrors tie on a file (``PlanItem.alternatives``), a copy that cannot be fetched
and verified from its own mirrors gives way to the next copy, with its own mirrors, until one
verifies; the mirrors whose listing did not match the verified bytes are then named
(``Executor.disagreements`` and a warning).
"""

from __future__ import annotations

import errno
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from modelget import layout
from modelget.auth import mirror_token
from modelget.datatypes import (
    Alternative,
    Disagreement,
    FileEntry,
    FileOutcome,
    Mirror,
    Plan,
    PlanItem,
    PullResult,
    RepoType,
)
from modelget.engines import (
    SWARM_PEERS,
    Engine,
    EngineName,
    EngineOptions,
    FetchJob,
    FetchResult,
    OnComplete,
    SourceURL,
)
from modelget.errors import (
    InsufficientDiskSpaceError,
    Interrupted,
    LayoutError,
    ModelgetError,
    VerificationError,
)
from modelget.events import Reporter, report_lock_wait
from modelget.manifest import Copy, settle
from modelget.verify import check

VERIFY_WORKERS = 2
TRANSFER_RETRIES = 2
"""A file whose transfer failed (every mirror gave up) but that got new bytes in that round
gets up to this many more rounds: the mirrors may be back (a blip longer than the engines'
retries), and the bytes are kept."""


@dataclass
class _State:
    """Bookkeeping for one file across rounds."""

    item: PlanItem
    sources: list[SourceURL]
    bytes_by_mirror: dict[str, int] = field(default_factory=dict)
    bytes_from_peers: int = 0
    """Bytes a swarm's peers brought (``pull --swarm``)."""
    bad_mirrors: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outcome: FileOutcome | None = None
    lock: FileLock | None = None
    retry_single: bool = False
    transfer_retries: int = 0
    """Extra rounds given to a file whose transfer failed after making progress."""
    rounds: int = 0
    """Rounds run for the current copy."""
    copies: tuple[Alternative, ...] = ()
    """Every copy to try (the plan's entry first, then its alternatives); ``item`` holds the
    one being tried, ``copy`` its index."""
    copy: int = 0
    copy_errors: list[str] = field(default_factory=list)
    """Why each copy tried before the current one failed."""
    verified: bool = False
    """Its digest was checked in this run (fetched, or reused after hashing what was there)."""


@dataclass(frozen=True)
class Target:
    """Where the files land: the Hugging Face cache (blobs, snapshot links, refs), or, with
    ``local_dir``, that directory alone in huggingface_hub's local-dir layout (the cache is
    only read: a blob already there is copied, never fetched again).

    The ModelScope layout is a ``local_dir``: the snapshot directory the ModelScope client
    reads (``layout.ms_snapshot_dir``), whose metadata, partial files, locks and quarantine
    ``layout.local_meta_dir`` puts beside it (``.modelget/{revision}/``), not inside it."""

    cache_dir: Path
    repo_id: str
    commit: str
    local_dir: Path | None
    repo_type: RepoType = "model"

    def final(self, entry: FileEntry) -> Path:
        """Where the verified file ends up: its blob, or ``local_dir/path``."""
        if self.local_dir is not None:
            return layout.local_file_path(self.local_dir, entry)
        return layout.blob_path(self.cache_dir, self.repo_id, entry, self.repo_type)

    def incomplete(self, entry: FileEntry) -> Path:
        if self.local_dir is not None:
            return layout.local_incomplete_path(self.local_dir, entry)
        return layout.incomplete_path(self.cache_dir, self.repo_id, entry, self.repo_type)

    def lock(self, entry: FileEntry) -> Path:
        """The lock huggingface_hub takes for the same file (blob, or local-dir path)."""
        if self.local_dir is not None:
            return layout.local_lock_path(self.local_dir, entry)
        return layout.lock_path(self.cache_dir, self.repo_id, entry, self.repo_type)

    def quarantine_dir(self) -> Path:
        if self.local_dir is not None:
            return layout.local_quarantine_dir(self.local_dir)
        return layout.cache_quarantine_dir(self.cache_dir, self.repo_id, self.repo_type)

    def cached_blob(self, entry: FileEntry) -> Path | None:
        """A local-dir download's copy in the HF cache, which may spare the transfer."""
        if self.local_dir is None:
            return None
        return layout.blob_path(self.cache_dir, self.repo_id, entry, self.repo_type)


def source_urls(item: PlanItem, mirrors: Mapping[str, Mirror]) -> list[SourceURL]:
    """The plan's sources as engine sources, each with its own mirror's token (if any)."""
    out = []
    for src in item.sources:
        mirror = mirrors[src.mirror]
        token = mirror_token(mirror)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        out.append(SourceURL(src.mirror, src.url, headers, mirror.max_connections))
    return out


def place(target: Target, entry: FileEntry) -> None:
    """Make a verified file at ``target.final(entry)`` visible: its snapshot link in the
    cache, or hf's metadata beside it in a local dir."""
    if target.local_dir is not None:
        layout.write_local_metadata(target.local_dir, entry, target.commit)
    else:
        layout.link_snapshot(
            target.cache_dir, target.repo_id, target.commit, entry, target.repo_type
        )


def _verifies(path: Path, entry: FileEntry) -> bool:
    """``path`` is a regular file (not a link: one planted there may point anywhere) of the
    entry's size and digest."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return False
        check(path, entry)
    except (OSError, VerificationError):
        return False
    return True


def fetch(
    engine: Engine,
    jobs: Sequence[FetchJob],
    *,
    reporter: Reporter,
    cancel: threading.Event,
    on_complete: OnComplete | None,
    fallback: Callable[[], Engine],
) -> list[FetchResult]:
    """``engine.run(jobs)``, then the jobs it handed back (``FetchResult.needs_headers``: their
    bytes need a token on its own origin, which aria2c must never get) on ``fallback()`` (the
    httpx engine, which sends headers to their own origin only).

    One after the other, never at once: each engine holds the pull's whole budget
    (``--max-rate``, ``--connections``), so the pull holds it too. The handed-back files are
    the hub's own small files of a gated repository (its LFS files redirect to a CDN and go
    to aria2c with the signed URL), so running them after the rest costs little."""
    results = engine.run(jobs, reporter=reporter, cancel=cancel, on_complete=on_complete)
    back = [i for i, r in enumerate(results) if r.needs_headers and not r.cancelled]
    if not back or cancel.is_set():
        return results
    again = fallback().run(
        [jobs[i] for i in back], reporter=reporter, cancel=cancel, on_complete=on_complete
    )
    for i, result in zip(back, again, strict=True):
        result.attempts = [*results[i].attempts, *result.attempts]
        result.seconds += results[i].seconds
        results[i] = result
    return results


class Executor:
    """Runs one plan with one engine. Use ``run()`` once."""

    def __init__(
        self,
        plan: Plan,
        mirrors: Mapping[str, Mirror],
        target: Target,
        engine: Engine,
        reporter: Reporter,
        cancel: threading.Event,
        *,
        force: bool = False,
    ) -> None:
        self.plan = plan
        self.mirrors = mirrors
        self.target = target
        self.force = force
        """``--force-download``: nothing on disk is reused, every file is fetched again."""
        self.engine = engine
        self.reporter = reporter
        self.cancel = cancel
        self.states: dict[str, _State] = {
            i.entry.path: _State(
                i,
                source_urls(i, mirrors),
                copies=(Alternative(i.entry, i.sources), *i.alternatives),
            )
            for i in plan.items
        }
        self.disagreements: list[Disagreement] = []
        """Mirrors the bytes proved wrong, where the mirrors tied on a file (see
        ``manifest.settle``)."""
        self._pool = ThreadPoolExecutor(VERIFY_WORKERS, thread_name_prefix="modelget-verify")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()
        self.disk_full = False
        self.timings: dict[str, float] = {}
        """Seconds from the start of ``run``: ``first_byte``, ``last_byte`` (the engine's last
        file complete), and ``verify_tail`` (from then to the end: hashing what was left,
        verification and layout)."""
        self._last_complete: float | None = None
        self._fallback: Engine | None = None

    def _fallback_engine(self) -> Engine:
        """The httpx engine, for jobs the engine hands back (see :func:`fetch`), with the same
        options: made on first use, closed at the end of :meth:`run`."""
        if self._fallback is None:
            from modelget.engines.httpx_engine import HttpxEngine

            # Not isinstance(options, EngineOptions): a test may stand in for the class.
            options = getattr(self.engine, "options", None)
            self._fallback = HttpxEngine(options if options is not None else EngineOptions())
        return self._fallback

    # --- per-file steps ---------------------------------------------------------------------

    def _blob_ok(self, entry: FileEntry) -> bool:
        """The file is already where it lands (a blob of another revision's, another
        process's, or a local-dir file without its metadata, e.g. the cache it came with is
        gone) and verifies; or, for a local dir, the HF cache has it and it is copied over.
        Never with ``force``."""
        if self.force:
            return False
        if _verifies(self.target.final(entry), entry):
            return True
        cached = self.target.cached_blob(entry)
        if cached is None or not _verifies(cached, entry):
            return False
        assert self.target.local_dir is not None
        try:
            layout.place_in_local_dir(cached, self.target.local_dir, entry, self.target.commit)
        except OSError:
            return False
        return True

    def _reuse(self, state: _State, started: float) -> None:
        """Put a file that ``_blob_ok`` hashed and found good in place."""
        entry = state.item.entry
        state.verified = True
        place(self.target, entry)
        state.outcome = FileOutcome(
            entry.path, entry.size, "reused", seconds=time.perf_counter() - started
        )
        self.reporter.on_file_done(entry.path, entry.size, 0.0, True)

    def _job(self, state: _State) -> FetchJob:
        entry = state.item.entry
        dest = self.target.incomplete(entry)
        dest.parent.mkdir(parents=True, exist_ok=True)
        sources = state.sources[:1] if state.retry_single else state.sources
        return FetchJob(
            key=layout.etag_of(entry),
            path=entry.path,
            size=entry.size,
            dest=dest,
            sources=tuple(sources),
            sha256=entry.sha256,
            git_sha1=entry.git_sha1,
        )

    def _verify_and_place(self, job: FetchJob, result: FetchResult) -> None:
        state = self.states[job.path]
        entry = state.item.entry
        for mirror, n in result.bytes_by_mirror.items():
            state.bytes_by_mirror[mirror] = state.bytes_by_mirror.get(mirror, 0) + n
        state.bytes_from_peers += result.bytes_from_peers
        state.seconds += result.seconds
        brought = {**result.bytes_by_mirror}
        if result.bytes_from_peers:
            brought[SWARM_PEERS] = brought.get(SWARM_PEERS, 0) + result.bytes_from_peers
        try:
            check(job.dest, entry, result.digests)
        except VerificationError as exc:
            # (A swarm's peers are one contributor: their blob is then fetched from the mirrors.)
            contributors = tuple(m for m, n in brought.items() if n > 0) or tuple(
                s.mirror for s in job.sources
            )
            layout.quarantine(job.dest, self.target.quarantine_dir(), entry, contributors)
            self.reporter.on_verify_failed(entry.path, contributors, exc.message)
            with self._lock:
                state.attempts.append(f"{'+'.join(contributors)}: {exc.message}")
                if len(contributors) == 1:
                    bad = contributors[0]
                    state.bad_mirrors.append(bad)
                    state.sources = [s for s in state.sources if s.mirror != bad]
                    state.retry_single = False
                elif state.retry_single:
                    # A single-mirror retry that still failed: that mirror is the bad one.
                    bad = job.sources[0].mirror
                    state.bad_mirrors.append(bad)
                    state.sources = [s for s in state.sources if s.mirror != bad]
                else:
                    # Several mirrors contributed: find the bad one by fetching from one at a time.
                    state.retry_single = True
            return
        layout.commit_blob(job.dest, self.target.final(entry))
        state.verified = True
        place(self.target, entry)
        got_from = [m for m, n in brought.items() if n > 0] or [s.mirror for s in job.sources]
        self._settle(state, f"verified, from {'+'.join(got_from)}")
        state.outcome = FileOutcome(
            entry.path,
            entry.size,
            "fetched",
            bytes_by_mirror=dict(state.bytes_by_mirror),
            seconds=state.seconds,
            bad_mirrors=tuple(state.bad_mirrors),
            bytes_from_peers=state.bytes_from_peers,
        )
        self.reporter.on_file_done(entry.path, entry.size, state.seconds, False)

    def _settle(self, state: _State, how: str) -> None:
        """The current copy of a file the mirrors tied on is verified and in place: name every
        mirror whose listing said otherwise."""
        if len(state.copies) < 2:
            return
        tried = [Copy(c.entry, tuple(s.mirror for s in c.sources)) for c in state.copies]
        found = settle(state.item.entry.path, tried, state.copy, how)
        with self._lock:
            self.disagreements.extend(found)
        for d in found:
            self.reporter.on_message(
                "warning", f"disagreement: {d.mirror} listed {d.path} wrongly: {d.reason}"
            )

    def _next_copy(self, state: _State) -> bool:
        """The current copy of a file could not be fetched and verified: switch to the next
        copy the mirrors listed (a tie), with its own mirrors. False when none is left. The
        file may be done at once (another process fetched that copy's blob)."""
        if state.copy + 1 >= len(state.copies):
            return False
        old = state.item.entry
        old_from = "+".join(s.mirror for s in state.copies[state.copy].sources)
        if state.outcome is not None and state.outcome.error:
            why = state.outcome.error.removeprefix("; ".join(state.copy_errors) + "; ")
        else:
            why = "; ".join(state.attempts) or "no mirror left that serves correct bytes"
        state.copy_errors.append(f"{old_from}'s copy ({old.size} bytes): {why}")
        state.attempts = []
        state.copy += 1
        alt = state.copies[state.copy]
        new = alt.entry
        new_from = "+".join(s.mirror for s in alt.sources)
        self.reporter.on_message(
            "warning",
            f"{old.path}: {old_from}'s copy ({old.size} bytes, {old.digest[0]} "
            f"{old.digest[1][:12]}…) could not be fetched and verified; the mirrors tied on "
            f"this file, so {new_from}'s copy is tried ({new.size} bytes, {new.digest[0]} "
            f"{new.digest[1][:12]}…)",
        )
        state.item = PlanItem(new, alt.sources, False, state.item.alternatives)
        state.sources = source_urls(state.item, self.mirrors)
        state.outcome = None
        state.retry_single = False
        state.transfer_retries = 0
        state.rounds = 0
        old_tmp, new_tmp = self.target.incomplete(old), self.target.incomplete(new)
        if old_tmp == new_tmp:
            # Same blob name, another size: what is there was written for the other copy.
            for leftover in (
                new_tmp,
                new_tmp.with_name(new_tmp.name + ".ranges"),
                new_tmp.with_name(new_tmp.name + ".aria2"),
            ):
                leftover.unlink(missing_ok=True)
        if self.target.lock(old) != self.target.lock(new):
            # Never hold one blob's lock while waiting for another's (two pulls would
            # deadlock); the partial download of the other copy stays for a later resume.
            if state.lock is not None and state.lock.is_locked:
                state.lock.release(force=True)
            lock_file = self.target.lock(new)
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            state.lock = FileLock(lock_file)
            while not self.cancel.is_set():
                try:
                    state.lock.acquire(timeout=0.5)
                    break
                except Timeout:
                    continue
            if self.cancel.is_set():
                return False
        if self._blob_ok(new):
            self._reuse(state, time.perf_counter())
            self._settle(state, "verified, already in the cache")
        return True

    def _failure(self, state: _State, error: str, seconds: float) -> FileOutcome:
        """A failed outcome for ``state``'s file, with why every copy tried before failed."""
        entry = state.item.entry
        return FileOutcome(
            entry.path,
            entry.size,
            "failed",
            bytes_by_mirror=dict(state.bytes_by_mirror),
            seconds=seconds,
            error="; ".join([*state.copy_errors, error]),
            bad_mirrors=tuple(state.bad_mirrors),
            bytes_from_peers=state.bytes_from_peers,
        )

    def _on_complete(self, job: FetchJob, result: FetchResult) -> None:
        with self._lock:
            now = time.perf_counter()
            last = min(now, result.last_byte_at) if result.last_byte_at is not None else now
            self._last_complete = max(last, self._last_complete or last)
            self._pending.append(self._pool.submit(self._verify_and_place, job, result))

    def _drain(self) -> None:
        while True:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            for fut in pending:
                fut.result()

    # --- rounds -----------------------------------------------------------------------------

    def _round(self, states: Sequence[_State]) -> None:
        jobs = [self._job(s) for s in states]
        by_path = {j.path: j for j in jobs}
        for s, job in zip(states, jobs, strict=True):
            self.reporter.on_file_start(
                s.item.entry.path, s.item.entry.size, tuple(x.mirror for x in job.sources)
            )
        results = fetch(
            self.engine,
            jobs,
            reporter=self.reporter,
            cancel=self.cancel,
            on_complete=self._on_complete,
            fallback=self._fallback_engine,
        )
        seen = set()
        for result in results:
            seen.add(result.path)
            state = self.states[result.path]
            if result.ok:
                # Engines call on_complete; make sure every finished file was handed over.
                continue
            for mirror, n in result.bytes_by_mirror.items():
                state.bytes_by_mirror[mirror] = state.bytes_by_mirror.get(mirror, 0) + n
            state.bytes_from_peers += result.bytes_from_peers
            state.attempts.extend(result.attempts)
            if result.cancelled:
                continue
            if result.failure == "disk-full":
                self.disk_full = True
            elif (
                sum(result.bytes_by_mirror.values()) + result.bytes_from_peers > 0
                and state.transfer_retries < TRANSFER_RETRIES
                and not self.cancel.is_set()
            ):
                state.transfer_retries += 1
                self.reporter.on_message(
                    "info",
                    f"{result.path}: every mirror failed after some progress; trying again "
                    f"({result.error or 'transfer failed'})",
                )
                continue
            state.outcome = self._failure(
                state,
                result.error or "; ".join(result.attempts) or "transfer failed",
                state.seconds + result.seconds,
            )
        self._drain()
        for path in by_path:
            if path not in seen and self.states[path].outcome is None and not self.cancel.is_set():
                self.states[path].outcome = FileOutcome(
                    path,
                    self.states[path].item.entry.size,
                    "failed",
                    error="the engine returned no result",
                )

    def _rounds(self, todo: list[_State], *, once: bool = False) -> None:
        """Rounds until every file in ``todo`` is done or out of mirrors (``once``: one round
        per copy: a file another process was fetching). A file out of mirrors for its copy
        moves on to the next copy the mirrors listed, if they tied on it."""
        cap = 0 if once else len(self.mirrors) + 1 + TRANSFER_RETRIES
        while todo and not self.cancel.is_set():
            self._round(todo)
            if self.cancel.is_set():
                break
            again = []
            for s in todo:
                s.rounds += 1
                if s.outcome is None and s.sources and s.rounds <= cap:
                    again.append(s)
                    continue
                out_of_mirrors = s.outcome is None or s.outcome.status == "failed"
                # (After a switch the file may be done at once: another process fetched it.)
                if out_of_mirrors and not self.disk_full and self._next_copy(s) and not s.outcome:
                    again.append(s)
            todo = again

    @property
    def connections(self) -> dict[str, int]:
        """The most connections the engine's scheduler gave each mirror at once."""
        return dict(getattr(self.engine, "connections", {}) or {})

    def _record_timings(self, started: float, started_mono: float) -> None:
        end = time.perf_counter()
        first = getattr(self.engine, "first_byte", None)  # engines that track it (monotonic)
        if isinstance(first, float):
            self.timings["first_byte"] = max(0.0, first - started_mono)
        if self._last_complete is not None:
            self.timings["last_byte"] = self._last_complete - started
            self.timings["verify_tail"] = end - self._last_complete

    def run(self) -> list[FileOutcome]:
        started, started_mono = time.perf_counter(), time.monotonic()
        try:
            todo: list[_State] = []
            waiting: list[_State] = []
            for state in self.states.values():
                entry = state.item.entry
                if state.item.present:
                    state.outcome = FileOutcome(entry.path, entry.size, "reused")
                    self.reporter.on_file_done(entry.path, entry.size, 0.0, True)
                    continue
                lock_file = self.target.lock(entry)
                lock_file.parent.mkdir(parents=True, exist_ok=True)
                state.lock = FileLock(lock_file)
                try:
                    state.lock.acquire(timeout=0)
                except Timeout:
                    waiting.append(state)
                    continue
                if self._blob_ok(entry):
                    self._reuse(state, started)
                else:
                    todo.append(state)

            self._rounds(todo)

            # Our own files are done (or failed): release their locks before waiting for the
            # other process's. Holding them while waiting deadlocks two pulls that each locked
            # part of the model.
            waiting_ids = {id(s) for s in waiting}
            for state in self.states.values():
                if id(state) not in waiting_ids and state.lock is not None and state.lock.is_locked:
                    state.lock.release(force=True)

            for state in waiting:
                if self.cancel.is_set():
                    break
                entry = state.item.entry
                assert state.lock is not None
                told = False  # said once per file, and only if the lock is still held
                while True:
                    try:
                        state.lock.acquire(timeout=0.5 if told else 0)
                        break
                    except Timeout:
                        if not told:
                            lock = str(self.target.lock(entry))
                            report_lock_wait(self.reporter, entry.path, lock)
                            told = True
                        if self.cancel.is_set():
                            break
                if self.cancel.is_set():
                    break
                if self._blob_ok(entry):
                    self._reuse(state, started)
                else:
                    self._rounds([state], once=True)

            for state in self.states.values():
                if state.outcome is None and not self.cancel.is_set():
                    why = "; ".join(state.attempts) or "no mirror left that serves correct bytes"
                    state.outcome = self._failure(state, why, state.seconds)
        finally:
            self._pool.shutdown(wait=True)
            if self._fallback is not None:
                self._fallback.close()
            for state in self.states.values():
                if state.lock is not None and state.lock.is_locked:
                    state.lock.release(force=True)
            self._record_timings(started, started_mono)
        return [s.outcome for s in self.states.values() if s.outcome is not None]


# --- the pull supervisor ------------------------------------------------------------------------


class EngineStarter:
    """Selects the engine and starts it (``prepare``) in a background thread, so that aria2c
    comes up while the mirrors are probed and the plan is made. ``engine()`` waits for it
    (and raises what starting it raised); ``close()`` waits and releases it, on every path."""

    def __init__(self, name: EngineName, options: EngineOptions, reporter: Reporter) -> None:
        self.seconds = 0.0
        self._engine: Engine | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._start,
            args=(name, options, reporter),
            name="modelget-engine-start",
            daemon=True,
        )
        self._thread.start()

    def _start(self, name: EngineName, options: EngineOptions, reporter: Reporter) -> None:
        from modelget.engines import select_engine

        started = time.perf_counter()
        engine: Engine | None = None
        try:
            engine = select_engine(name, options, reporter)
            engine.prepare()
            self._engine = engine
        except BaseException as exc:  # handed to the pull's thread by engine()
            if engine is not None:
                engine.close()
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started

    def engine(self) -> Engine:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._engine is not None
        return self._engine

    def close(self) -> None:
        self._thread.join()
        if self._engine is not None and not self._closed:
            self._closed = True
            self._engine.close()


def carry_out(
    plan: Plan,
    by_name: Mapping[str, Mirror],
    target: Target,
    starter: EngineStarter,
    reporter: Reporter,
    cancel: threading.Event,
    *,
    ref: str,
    main_too: bool,
    started: float,
    timings: dict[str, float],
    force: bool = False,
    wrap: Callable[[Engine], Engine] | None = None,
) -> PullResult:
    """Run ``plan`` to the end with the engine ``starter`` brings up (``wrap``ped: a swarm
    pull's ``SwarmEngine`` around it), and say what happened.

    Points ``refs/<ref>`` (and ``refs/main`` too with ``main_too``: huggingface_hub and
    transformers look it up when given no revision) at the commit when any file is in place.
    Raises ``Interrupted`` when ``cancel`` is set (or on Ctrl-C), and
    ``InsufficientDiskSpaceError`` when the disk filled."""
    plan_s = time.perf_counter() - started
    timings["plan"] = plan_s
    _announce(plan, target.repo_id, reporter)
    waited = time.perf_counter()
    chosen = starter.engine()
    if wrap is not None:
        chosen = wrap(chosen)
    timings["engine_start"] = starter.seconds
    timings["engine_wait"] = time.perf_counter() - waited
    transfer_started = time.perf_counter()
    executor = Executor(plan, by_name, target, chosen, reporter, cancel, force=force)
    outcomes = _supervise(executor, target, cancel)
    transfer_s = time.perf_counter() - transfer_started
    timings["transfer"] = transfer_s
    # The executor's own stages; ``first_byte`` and ``last_byte`` are instants in its run,
    # counted here from the pull's start.
    offset = transfer_started - started
    for key, value in executor.timings.items():
        timings.setdefault(key, value + (offset if key in ("first_byte", "last_byte") else 0.0))
    repo_id = target.repo_id
    if cancel.is_set():
        raise Interrupted(
            f"pull of {repo_id} interrupted; what was downloaded is kept",
            hint="run the same command again to resume",
        )
    if executor.disk_full:
        raise InsufficientDiskSpaceError(
            f"the disk filled up while pulling {repo_id}; nothing incomplete was put in place",
            hint="free some space and run the same command again: it resumes where it stopped",
        )
    if target.local_dir is None and (any(o.status != "failed" for o in outcomes) or not outcomes):
        try:
            layout.write_ref(target.cache_dir, repo_id, ref, plan.commit, target.repo_type)
            if main_too and ref != "main":
                layout.write_ref(target.cache_dir, repo_id, "main", plan.commit, target.repo_type)
        except OSError as exc:
            raise local_error(exc, repo_id, target.cache_dir) from exc
    _record(plan, target, executor, outcomes, reporter)
    return _result(
        plan, target, chosen.name, executor, outcomes, plan_s, transfer_s, started, timings
    )


def _record(
    plan: Plan,
    target: Target,
    executor: Executor,
    outcomes: Sequence[FileOutcome],
    reporter: Reporter,
) -> None:
    """Write what this pull put in place for the commit (``record.record_pull``), with a stamp
    for each file whose digest was checked in this run (see :mod:`modelget.record`)."""
    from modelget.record import record_pull

    placed = [executor.states[o.path].item.entry for o in outcomes if o.status != "failed"]
    verified = [
        executor.states[o.path].item.entry
        for o in outcomes
        if o.status != "failed" and executor.states[o.path].verified
    ]
    others = [*plan.excluded, *(o.path for o in outcomes if o.status == "failed")]
    try:
        record_pull(
            target.repo_id,
            plan.commit,
            placed,
            others,
            target.cache_dir,
            target.local_dir,
            verified,
            target.repo_type,
        )
    except OSError as exc:
        reporter.on_message(
            "warning",
            f"could not record the pulled files of {plan.commit[:12]} ({exc.strerror or exc}): "
            "an offline pull will not be able to check that this snapshot is complete",
        )


def _announce(plan: Plan, repo_id: str, reporter: Reporter) -> None:
    reporter.on_plan(repo_id, plan.commit, len(plan.to_fetch), plan.fetch_bytes, plan.total_bytes)
    for d in plan.disagreements:
        reporter.on_message(
            "warning",
            f"disagreement: {d.mirror} lists another copy of {d.path}: {d.reason}"
            if d.standby
            else f"disagreement: {d.mirror} is not used for {d.path}: {d.reason}",
        )


def _supervise(executor: Executor, target: Target, cancel: threading.Event) -> list[FileOutcome]:
    """``executor.run()`` in a worker thread, so that Ctrl-C in this one cancels it (and waits
    for it to stop, keeping what was fetched); its errors are raised here."""
    box: list[list[FileOutcome]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            box.append(executor.run())
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    worker = threading.Thread(target=work, name="modelget-pull", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        worker.join()
    if errors:
        if isinstance(errors[0], OSError):
            raise local_error(
                errors[0], target.repo_id, target.cache_dir, target.local_dir
            ) from errors[0]
        raise errors[0]
    return box[0] if box else []


def _result(
    plan: Plan,
    target: Target,
    engine: str,
    executor: Executor,
    outcomes: list[FileOutcome],
    plan_s: float,
    transfer_s: float,
    started: float,
    timings: dict[str, float],
) -> PullResult:
    per_mirror: dict[str, int] = {}
    for o in outcomes:
        for m, n in o.bytes_by_mirror.items():
            per_mirror[m] = per_mirror.get(m, 0) + n
    from_peers = sum(o.bytes_from_peers for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    status = "ok" if not failed else ("error" if len(failed) == len(outcomes) else "partial")
    where = target.local_dir or layout.snapshot_dir(
        target.cache_dir, target.repo_id, plan.commit, target.repo_type
    )
    order = {i.entry.path: n for n, i in enumerate(plan.items)}
    # Outvoted mirrors (the plan's), and where the mirrors tied, those the bytes proved wrong
    # (the executor's); a tie on a file that failed with every copy stays standby.
    settled = {d.path for d in executor.disagreements}
    disagreements = (
        *(
            d
            for d in plan.disagreements
            if d.path in order and not (d.standby and d.path in settled)
        ),
        *executor.disagreements,
    )
    elapsed = time.perf_counter() - started
    return PullResult(
        repo_id=target.repo_id,
        revision=plan.revision,
        commit=plan.commit,
        path=str(where),
        status=status,
        engine=engine,
        files=tuple(sorted(outcomes, key=lambda o: order.get(o.path, 0))),
        bytes_fetched=sum(per_mirror.values()) + from_peers,
        bytes_by_mirror=per_mirror,
        bytes_from_mirrors=sum(per_mirror.values()),
        bytes_from_peers=from_peers,
        elapsed_s=elapsed,
        plan_s=plan_s,
        transfer_s=transfer_s,
        timings={**timings, "total": elapsed},
        connections=executor.connections,
        disagreements=disagreements,
        repo_type=target.repo_type,
    )


def local_error(
    exc: OSError, repo_id: str, hub_cache: Path, local_dir: Path | None = None
) -> ModelgetError:
    """A local write that failed (the cache's, or the local dir's, file system), as the error
    the user can act on."""
    where = exc.filename or local_dir or hub_cache
    elsewhere = (
        "pull into a writable directory: --local-dir DIR"
        if local_dir is not None
        else "pull into a writable cache: --cache-dir DIR (or HF_HUB_CACHE=DIR)"
    )
    if exc.errno == errno.ENOSPC:
        return InsufficientDiskSpaceError(
            f"the disk filled up while pulling {repo_id} (writing {where}); nothing "
            "incomplete was put in place",
            hint="free some space and run the same command again: it resumes where it stopped",
        )
    if exc.errno == errno.EROFS:
        return LayoutError(f"cannot write to {where}: the file system is read-only", hint=elsewhere)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return LayoutError(f"cannot write to {where}: permission denied", hint=elsewhere)
    return LayoutError(f"cannot write to {where}: {exc.strerror or exc}", hint=elsewhere)
