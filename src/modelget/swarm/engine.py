"""``SwarmEngine``: the engine a swarm pull runs. The big blobs (``policy.through_swarm``) go
through the swarm's aria2c (:class:`~modelget.swarm.node.SwarmNode`); everything else, and
every blob the swarm cannot bring, goes to the pull's usual engine (``inner``), one batch
after the other in its own thread (an engine runs one ``run`` at a time).

Per blob, by role (``policy.choose_role``):

- **seed**, with the blob's torrent (from ``torrent_dir``): the torrent, with the ranked
  mirrors' final URLs as web seeds (each source resolved in Python, its token only on its own
  origin; a source that needs its token where its bytes are is left out: aria2c never gets a
  header). No usable URL or no torrent (a cold model): the usual engine fetches the blob; its
  torrent is made in the same read as its sha256, and once that matches the manifest the torrent
  is published to ``torrent_dir`` and the blob seeded. While it fetches, a heartbeat file
  (``<torrent>.pending``) tells the peers to go on waiting.
- **peer**: the torrent without web seeds; after ``stall_s`` without progress the mirrors are
  added (``changeUri``), and after another ``stall_s`` without progress the usual engine fetches
  the blob (``policy.stall_action``). No torrent yet: waits for one while the seeder's heartbeat
  is fresh (``policy.wait_for_torrent``), else the usual engine.

A torrent that is not the manifest's blob (name/length) is refused with a warning; the blob
comes from the mirrors. aria2 checks each piece's SHA-1 (web-seed bytes too), and the executor
checks the sha256 of every blob before it lands, as for any engine. A blob's bytes stay at
``data_dir/<sha256>``, hardlinked to the ``.incomplete`` path the executor verifies and renames:
aria2c goes on seeding the very blob that landed. A blob is tried through the swarm once per
pull: if its bytes fail verification, the next round takes it from the mirrors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from modelget.engines import SWARM_PEERS, Engine, FetchJob, FetchResult, OnComplete
from modelget.engines.aria2.rpc import RPCError
from modelget.errors import TorrentError
from modelget.events import Reporter
from modelget.swarm import policy
from modelget.swarm.node import SwarmNode
from modelget.swarm.options import SwarmOptions
from modelget.swarm.torrent import (
    BlobTorrent,
    check_entry,
    make_torrent,
    read_torrent,
    torrent_relpath,
)
from modelget.verify import Digests

SWARM = SWARM_PEERS
POLL_S = 0.2
HEARTBEAT_S = 2.0
RESOLVE_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0
"""At close, aria2c gets this long to tell the tracker it stopped (else the seeders' scrapes
count this node as a downloading peer until the tracker forgets it, ~30 min)."""

Phase = Literal["wait", "bt", "http", "done"]


@dataclass
class _Blob:
    job: FetchJob
    phase: Phase = "wait"
    torrent: BlobTorrent | None = None
    gid: str | None = None
    added_at: float = 0.0
    completed: int = 0
    progress_at: float = 0.0
    mirrors_added: bool = False
    peer_bytes: float = 0.0
    mirror_bytes: float = 0.0
    result: FetchResult | None = None
    waiting_since: float = field(default_factory=time.monotonic)


class SwarmEngine:
    """Wraps the pull's engine (``inner``): see the module doc. ``linger()`` seeds on after
    the pull (``policy.keep_seeding``); ``close()`` stops aria2c and closes ``inner``."""

    def __init__(
        self,
        options: SwarmOptions,
        role: policy.Role,
        data_dir: Path,
        reporter: Reporter,
        *,
        verify_tls: bool = True,
        max_rate_bps: int | None = None,
    ) -> None:
        self.swarm = options
        self.role = role
        self.data_dir = data_dir
        self.reporter = reporter
        self.inner: Engine | None = None
        self.name = "swarm"
        self.node = SwarmNode(
            data_dir,
            lpd=options.lpd,
            interface=options.interface,
            port=options.port,
            verify_tls=verify_tls,
            max_rate_bps=max_rate_bps,
        )
        self.verify_tls = verify_tls
        self._started = False
        self._tried: set[str] = set()
        self._seeded: dict[str, str] = {}
        """info-hash -> gid of every blob this node has (seeding or downloading)."""
        self._complete: set[Path] = set()
        """``data_dir`` files that are complete blobs (links to landed ones: removed at close)."""
        self._lock = threading.Lock()
        self._fetching: set[str] = set()
        """Keys of the blobs the usual engine is fetching to publish (a seeder's heartbeat)."""
        self._closed = False

    # --- Engine protocol -----------------------------------------------------------------------

    def wrap(self, inner: Engine) -> SwarmEngine:
        self.inner = inner
        self.name = inner.name
        return self

    @property
    def options(self) -> object:
        """The usual engine's ``EngineOptions`` (the executor's httpx fallback takes them)."""
        return getattr(self.inner, "options", None)

    @property
    def connections(self) -> dict[str, int]:
        return dict(getattr(self.inner, "connections", {}) or {})

    @property
    def first_byte(self) -> float | None:
        value = getattr(self.inner, "first_byte", None)
        return value if isinstance(value, float) else None

    def prepare(self) -> None:
        self._start()

    def _start(self) -> None:
        if not self._started:
            self.node.start()
            self._started = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.node.stop(graceful_s=STOP_GRACE_S)
        for path in self._complete:
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.data_dir.rmdir()  # only when nothing partial is left in it

    def run(
        self,
        jobs: Sequence[FetchJob],
        *,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None = None,
    ) -> list[FetchResult]:
        assert self.inner is not None, "wrap() the pull's engine first"
        blobs = [
            _Blob(j)
            for j in jobs
            if policy.through_swarm(j.size, j.sha256) and j.key not in self._tried
        ]
        swarm_keys = {b.job.key for b in blobs}
        self._tried |= swarm_keys
        plain = [j for j in jobs if j.key not in swarm_keys]
        if blobs:
            try:
                self._start()
            except Exception as exc:  # aria2c would not start: the mirrors serve every blob
                reporter.on_message("warning", f"swarm: {exc}; every file comes from the mirrors")
                plain, blobs = list(jobs), []
        lane = _HttpLane(self.inner, reporter, cancel)
        try:
            for b in blobs:
                self._first_step(b, reporter)
            if plain:
                lane.submit(plain, on_complete)
            cold = [b for b in blobs if b.phase == "http"]
            if cold:
                with self._lock:
                    self._fetching |= {b.job.key for b in cold}
                lane.submit([b.job for b in cold], self._publishing(on_complete, reporter))
            self._loop(blobs, lane, reporter, cancel, on_complete)
            results = lane.join()
            for b in blobs:
                if b.phase == "http":
                    self._heartbeat_done(b.job)  # (a beat that raced the publication)
        finally:
            lane.stop()
        by_key = {r.key: r for r in results}
        for b in blobs:
            if b.result is not None:
                by_key[b.job.key] = b.result
        out = []
        for j in jobs:
            r = by_key.get(j.key)
            out.append(r if r is not None else FetchResult(j.key, j.path, False, cancelled=True))
        return out

    # --- per-blob steps ------------------------------------------------------------------------

    def _torrent_path(self, job: FetchJob) -> Path | None:
        if self.swarm.torrent_dir is None or job.sha256 is None:
            return None
        return self.swarm.torrent_dir / torrent_relpath(job.sha256)

    def _find_torrent(self, b: _Blob, reporter: Reporter) -> BlobTorrent | Literal["bad"] | None:
        path = self._torrent_path(b.job)
        if path is None:
            return None
        try:
            torrent = read_torrent(path)
            assert b.job.sha256 is not None
            check_entry(torrent, b.job.sha256, b.job.size, b.job.path)
        except FileNotFoundError:
            return None
        except (OSError, TorrentError) as exc:
            why = exc.message if isinstance(exc, TorrentError) else str(exc)
            reporter.on_message(
                "warning", f"swarm: {b.job.path}: torrent {path} refused: {why}; from the mirrors"
            )
            return "bad"
        return torrent.public() if self.swarm.lpd else torrent

    def _first_step(self, b: _Blob, reporter: Reporter) -> None:
        found = self._find_torrent(b, reporter)
        if found == "bad":
            b.phase = "http"
            return
        if found is None:
            if self.role == "seed" or self.swarm.torrent_dir is None:
                b.phase = "http"  # a cold model: fetched, then published and seeded
            return  # a peer waits for the seeder's torrent
        if self.role == "seed":
            seeds = self._web_seeds(b.job, reporter)
            if not seeds:
                b.phase = "http"
                return
            self._add(b, found, seeds, reporter)
        else:
            self._add(b, found, [], reporter)

    def _add(self, b: _Blob, torrent: BlobTorrent, seeds: list[str], reporter: Reporter) -> None:
        announce = None if self.swarm.lpd else self.swarm.tracker
        dest = self.data_dir / torrent.name
        try:
            if dest.exists() and dest.stat().st_size == torrent.length:
                dest.unlink()  # a complete leftover of an earlier run: fetched and checked anew
            b.gid = self.node.add_torrent(torrent.to_bytes(announce), seeds)
        except (OSError, RPCError) as exc:
            reporter.on_message("warning", f"swarm: {b.job.path}: {exc}; from the mirrors")
            b.phase = "http"
            return
        b.torrent = torrent
        b.phase = "bt"
        b.mirrors_added = bool(seeds)
        b.added_at = b.progress_at = time.monotonic()
        self._seeded[torrent.info_hash] = b.gid
        reporter.on_file_start(
            b.job.path,
            b.job.size,
            (SWARM, *(s.mirror for s in b.job.sources)) if seeds else (SWARM,),
        )

    def _web_seeds(self, job: FetchJob, reporter: Reporter) -> list[str]:
        """The job's sources resolved to the URLs that serve the bytes, in rank order, leaving
        out those that need a token there (aria2c never gets a header)."""
        from modelget import http
        from modelget.engines.redirects import ResolveURLError, resolve_final_url

        urls: list[str] = []
        with http.client(timeout=RESOLVE_TIMEOUT_S, verify_tls=self.verify_tls) as client:
            for src in job.sources:
                try:
                    resolved = resolve_final_url(client, src.url, src.headers)
                except ResolveURLError as exc:
                    reporter.on_mirror_failed(job.path, src.mirror, exc.message)
                    continue
                if src.headers and resolved.same_origin:
                    continue
                urls.append(resolved.url)
        return urls

    def _publishing(self, on_complete: OnComplete | None, reporter: Reporter) -> OnComplete:
        """``on_complete`` for blobs the usual engine fetched: hash the blob once (sha256 and
        the piece SHA-1s), and if it is the manifest's, publish its torrent and seed it; then
        hand it to the executor with its digests (no second read)."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="modelget-swarm-publish")

        def publish(job: FetchJob, result: FetchResult) -> None:
            try:
                torrent, sha = make_torrent(job.dest)
                result.digests = Digests(torrent.length, sha, None)
                if sha == (job.sha256 or "").lower() and torrent.length == job.size:
                    self.publish(job, torrent, reporter)
            except (OSError, TorrentError) as exc:
                reporter.on_message("warning", f"swarm: {job.path}: not seeded: {exc}")
            finally:
                self._heartbeat_done(job)
                if on_complete is not None:
                    on_complete(job, result)

        def hand_over(job: FetchJob, result: FetchResult) -> None:
            if job.sha256 is None or not result.ok:
                self._heartbeat_done(job)
                if on_complete is not None:
                    on_complete(job, result)
                return
            pool.submit(publish, job, result)

        hand_over.pool = pool  # type: ignore[attr-defined]
        return hand_over

    def publish(self, job: FetchJob, torrent: BlobTorrent, reporter: Reporter) -> None:
        """Seed a verified blob (hardlinked into ``data_dir``) and write its torrent to
        ``torrent_dir`` (atomically; never overwriting one that is there)."""
        link = self.data_dir / torrent.name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        _link_or_copy(job.dest, link)
        with self._lock:
            self._complete.add(link)
        if self.swarm.lpd:
            torrent = torrent.public()
        path = self._torrent_path(job)
        if path is not None:
            data = _published(replace(torrent, private=True))  # one canonical file
            try:
                there = path.read_bytes() if path.stat().st_size == len(data) else b""
            except OSError:
                there = b""
            if there != data:  # missing, or refused (the torrents are deterministic)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
        if torrent.info_hash not in self._seeded:
            announce = None if self.swarm.lpd else self.swarm.tracker
            try:
                gid = self.node.add_torrent(torrent.to_bytes(announce), seed_only=True)
            except RPCError as exc:
                reporter.on_message("warning", f"swarm: {job.path}: not seeded: {exc}")
                return
            self._seeded[torrent.info_hash] = gid
        reporter.on_message("info", f"swarm: {job.path}: seeding ({torrent.info_hash})")

    def _heartbeat(self, blobs: Sequence[_Blob]) -> None:
        """A seeder fetching blobs from the mirrors says so to the waiting peers."""
        with self._lock:
            fetching = set(self._fetching)
        for b in blobs:
            if b.job.key not in fetching:
                continue
            path = self._torrent_path(b.job)
            if path is None:
                continue
            pending = path.with_name(path.name + ".pending")
            with contextlib.suppress(OSError):
                pending.parent.mkdir(parents=True, exist_ok=True)
                pending.touch()

    def _heartbeat_done(self, job: FetchJob) -> None:
        with self._lock:
            self._fetching.discard(job.key)
        path = self._torrent_path(job)
        if path is not None:
            with contextlib.suppress(OSError):
                path.with_name(path.name + ".pending").unlink()

    # --- the loop ------------------------------------------------------------------------------

    def _loop(
        self,
        blobs: list[_Blob],
        lane: _HttpLane,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None,
    ) -> None:
        last_beat = 0.0
        told_waiting = False
        while not cancel.is_set():
            now = time.monotonic()
            beating = self.role == "seed" and self.swarm.torrent_dir is not None
            if beating and now - last_beat >= HEARTBEAT_S:
                last_beat = now
                self._heartbeat([b for b in blobs if b.phase == "http"])
            pending = [b for b in blobs if b.phase in ("wait", "bt")]
            if not pending and not (beating and not lane.idle()):
                return
            for b in pending:
                if b.phase == "wait":
                    if not told_waiting:
                        told_waiting = True
                        reporter.on_message(
                            "info", "swarm: waiting for the seeder to publish the torrents"
                        )
                    self._wait_step(b, lane, reporter, on_complete)
                else:
                    self._bt_step(b, lane, reporter, on_complete)
            cancel.wait(POLL_S)
        for b in blobs:
            if b.phase == "bt" and b.gid is not None and b.result is None:
                self.node.remove(b.gid)

    def _to_http(
        self, b: _Blob, lane: _HttpLane, on_complete: OnComplete | None, reporter: Reporter
    ) -> None:
        if b.gid is not None:
            self.node.remove(b.gid)
            if b.torrent is not None:
                self._seeded.pop(b.torrent.info_hash, None)
            b.gid = None
        b.phase = "http"
        with self._lock:
            self._fetching.add(b.job.key)
        lane.submit([b.job], self._publishing(on_complete, reporter))

    def _wait_step(
        self, b: _Blob, lane: _HttpLane, reporter: Reporter, on_complete: OnComplete | None
    ) -> None:
        found = self._find_torrent(b, reporter)
        if found == "bad":
            self._to_http(b, lane, on_complete, reporter)
            return
        if found is not None:
            self._add(b, found, [], reporter)
            if b.phase == "http":  # aria2c refused it
                b.phase = "wait"
                self._to_http(b, lane, on_complete, reporter)
            return
        path = self._torrent_path(b.job)
        quiet: float | None = None
        if path is not None:
            with contextlib.suppress(OSError):
                quiet = time.time() - path.with_name(path.name + ".pending").stat().st_mtime
        waited = time.monotonic() - b.waiting_since
        if not policy.wait_for_torrent(waited, quiet, self.swarm.stall_s):
            reporter.on_message(
                "warning",
                f"swarm: {b.job.path}: no torrent published after {waited:.0f} s; from the mirrors",
            )
            self._to_http(b, lane, on_complete, reporter)

    def _bt_step(
        self, b: _Blob, lane: _HttpLane, reporter: Reporter, on_complete: OnComplete | None
    ) -> None:
        assert b.gid is not None
        now = time.monotonic()
        try:
            st = self.node.status(b.gid)
            web = self.node.web_seed_speed(b.gid) if b.mirrors_added else 0
            peers = self.node.peer_speed(b.gid) if b.mirrors_added else 1
        except RPCError as exc:
            reporter.on_message("warning", f"swarm: {b.job.path}: {exc}; from the mirrors")
            self._to_http(b, lane, on_complete, reporter)
            return
        completed = int(st.get("completedLength", 0))
        if completed > b.completed:
            delta = completed - b.completed
            share = policy.mirror_share(web, peers)
            b.mirror_bytes += delta * share
            b.peer_bytes += delta * (1 - share)
            reporter.on_bytes(b.job.path, delta, SWARM if share < 0.5 else None)
            b.completed = completed
            b.progress_at = now
        if st.get("status") == "error":
            reporter.on_message(
                "warning",
                f"swarm: {b.job.path}: aria2 error {st.get('errorCode')}: "
                f"{st.get('errorMessage')}; from the mirrors",
            )
            self._to_http(b, lane, on_complete, reporter)
            return
        total = int(st.get("totalLength", 0))
        if (
            total == b.job.size
            and completed == total
            and st.get("status") in ("active", "complete")
        ):
            self._finish(b, reporter, on_complete)
            return
        action = policy.stall_action(
            policy.Progress(now - b.progress_at, b.mirrors_added), self.swarm.stall_s
        )
        if action == "add-mirrors":
            seeds = self._web_seeds(b.job, reporter)
            if seeds:
                reporter.on_message(
                    "warning",
                    f"swarm: {b.job.path}: no progress from the swarm for "
                    f"{self.swarm.stall_s:.0f} s; adding the mirrors",
                )
                with contextlib.suppress(RPCError):
                    self.node.add_uris(b.gid, seeds)
                b.mirrors_added = True
                b.progress_at = now
            else:
                action = "give-up"
        if action == "give-up":
            reporter.on_message(
                "warning",
                f"swarm: {b.job.path}: no progress for {self.swarm.stall_s:.0f} s with the "
                "mirrors as web seeds; fetching it from the mirrors",
            )
            self._to_http(b, lane, on_complete, reporter)

    def _finish(self, b: _Blob, reporter: Reporter, on_complete: OnComplete | None) -> None:
        assert b.torrent is not None
        src = self.data_dir / b.torrent.name
        try:
            with contextlib.suppress(FileNotFoundError):
                b.job.dest.unlink()
            _link_or_copy(src, b.job.dest)
        except OSError as exc:
            from modelget.engines import failure_of_os_error

            b.result = FetchResult(
                b.job.key,
                b.job.path,
                False,
                error=f"swarm: {exc}",
                failure=failure_of_os_error(exc),
            )
            b.phase = "done"
            return
        with self._lock:
            self._complete.add(src)
        peers, mirrors = policy.split_bytes(b.completed, b.mirror_bytes)
        by_mirror: dict[str, int] = {}
        if mirrors:
            first = b.job.sources[0].mirror if b.job.sources else SWARM
            by_mirror[first] = mirrors
        b.result = FetchResult(
            b.job.key,
            b.job.path,
            True,
            bytes_by_mirror=by_mirror,
            bytes_from_peers=peers,
            seconds=time.monotonic() - b.added_at,
        )
        b.phase = "done"
        if on_complete is not None:
            on_complete(b.job, b.result)

    # --- after the pull ------------------------------------------------------------------------

    def seed_present(self, files: Sequence[tuple[str, int, str | None, Path]]) -> None:
        """Seed the big blobs the pull found already in place ((path, size, sha256, where it
        is)): a seeder whose cache holds the model serves it without fetching a byte. The
        blob's torrent is taken from ``torrent_dir`` when there, else made from the blob (one
        read, which also checks its sha256)."""
        if not files:
            return
        try:
            self._start()
        except Exception as exc:  # aria2c would not start: nothing to seed with
            self.reporter.on_message("warning", f"swarm: not seeding: {exc}")
            return
        for path, size, sha256, where in files:
            if sha256 is None or not policy.through_swarm(size, sha256):
                continue
            if (self.data_dir / sha256.lower()) in self._complete:
                continue  # fetched (and seeded) by this pull
            job = FetchJob(sha256, path, size, where, (), sha256=sha256)
            found = self._find_torrent(_Blob(job), self.reporter)
            try:
                if isinstance(found, BlobTorrent):
                    torrent = found
                else:
                    torrent, sha = make_torrent(where)
                    if sha != sha256.lower() or torrent.length != size:
                        continue
                self.publish(job, torrent, self.reporter)
            except (OSError, TorrentError) as exc:
                self.reporter.on_message("warning", f"swarm: {path}: not seeded: {exc}")

    def linger(self, cancel: threading.Event, seed_for_s: float | None = None) -> None:
        """Seed on after the pull while ``policy.keep_seeding`` says so (``seed_for_s``:
        instead of the options' bound; ``float('inf')``: until ``cancel``)."""
        from modelget.swarm.tracker import scrape

        bound = self.swarm.seed_for_s if seed_for_s is None else seed_for_s
        if not self._seeded or bound <= 0 or not self.node.alive:
            return
        start = time.monotonic()
        told = False
        while not cancel.is_set():
            now = time.monotonic()
            downloading: int | None = None
            if not self.swarm.lpd and seed_for_s is None:
                counts = [scrape(self.swarm.tracker, h) for h in list(self._seeded)]
                if all(c is not None for c in counts):
                    downloading = sum(c["incomplete"] for c in counts if c is not None)
            if not policy.keep_seeding(now - start, bound, downloading):
                return
            if not told:
                told = True
                limit = "until stopped" if bound == float("inf") else f"at most {bound:.0f} s"
                self.reporter.on_message(
                    "info", f"swarm: seeding {len(self._seeded)} blobs for the peers ({limit})"
                )
            cancel.wait(1.0)

    def uploaded(self) -> int:
        return sum(int(a.get("uploadLength", 0) or 0) for a in self.node.seeding())


def _published(torrent: BlobTorrent) -> bytes:
    """The torrent as published: ``info`` only (each node adds its own tracker)."""
    return torrent.to_bytes()


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


class _HttpLane:
    """The usual engine, one batch at a time, in a thread of its own."""

    def __init__(self, engine: Engine, reporter: Reporter, cancel: threading.Event) -> None:
        self.engine = engine
        self.reporter = reporter
        self.cancel = cancel
        self._batches: list[tuple[list[FetchJob], OnComplete | None]] = []
        self._results: list[FetchResult] = []
        self._cv = threading.Condition()
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="modelget-swarm-http", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[FetchJob], on_complete: OnComplete | None) -> None:
        with self._cv:
            self._batches.append((jobs, on_complete))
            self._cv.notify_all()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._batches and not self._closed:
                    self._cv.wait()
                if not self._batches:
                    return
                jobs, on_complete = self._batches.pop(0)
                self._busy = True
            try:
                results = self.engine.run(
                    jobs, reporter=self.reporter, cancel=self.cancel, on_complete=on_complete
                )
                pool = getattr(on_complete, "pool", None)
                if isinstance(pool, ThreadPoolExecutor):
                    pool.shutdown(wait=True)  # publications done before the results count
            except BaseException as exc:  # handed to run()'s thread by join()
                results = []
                self._error = exc
            with self._cv:
                self._results.extend(results)
                self._busy = False
                self._cv.notify_all()

    def idle(self) -> bool:
        """Every batch submitted so far is done."""
        with self._cv:
            return not self._batches and not self._busy

    def join(self) -> list[FetchResult]:
        """Wait for every batch submitted so far; their results."""
        with self._cv:
            while self._batches or self._busy:
                self._cv.wait()
        if self._error is not None:
            raise self._error
        return list(self._results)

    def stop(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
