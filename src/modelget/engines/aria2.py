"""The aria2 engine: a private ``aria2c`` driven over JSON-RPC on 127.0.0.1.

The engine starts and owns one ``aria2c`` process. Its RPC secret is random and is written
only to a ``0600`` conf file in a private temporary directory (never on a command line, never
in a session file); the RPC port is bound to loopback only. ``aria2c`` dies with us
(``--stop-with-process``), and :meth:`Aria2Engine.close` (also run by a finalizer) shuts it
down, kills its process group if it lingers, and removes the private directory.

Credentials: a source's headers (``Authorization``) may only reach the source's own origin.
aria2c sends a download's ``header`` option to *every* URI of that download and on to any
host a server redirects it to (aria2 issue #1176; it has no option to stop following
redirects), so aria2c never gets a header. Every source URL is first resolved by hand
(:func:`resolve_final_url`) to the URL that serves the bytes: a hub's redirect to a signed
CDN URL needs no token, and that download goes to aria2c. A download that still needs its
token (the bytes come from the token's own origin) is fetched by the httpx engine, which
follows redirects by hand and sends the token to its own origin only, even when the server
starts redirecting after the check. Token-needing URIs are held back while other mirrors
can serve the file, and used only if those fail.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aria2p
import httpx

from modelget.engines import (
    EngineOptions,
    FetchJob,
    FetchResult,
    OnComplete,
    SourceURL,
    aria2c_path,
)
from modelget.engines.redirects import (
    ResolvedURL,
    ResolveURLError,
    origin,
    redact_url,
    resolve_final_url,
)
from modelget.errors import EngineUnavailableError
from modelget.events import Reporter
from modelget.retry import MAX_RETRY_AFTER_S, status_is_retryable
from modelget.settings import child_env

READY_TIMEOUT_S = 10.0
SHUTDOWN_WAIT_S = 2.0
IDLE_CHECK_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2
SMALL_POLL_INTERVAL_S = 0.05
"""The poll interval while a file too small to split is in flight: aria2 fetches such a file in
milliseconds, so every poll interval would be added to its time (a model's dozen small JSON
and tokenizer files took 1.2 s at 0.2 s; the big files keep the slower poll, which costs
two RPC calls per download)."""
RPC_TIMEOUT_S = 10.0
RESOLVE_WORKERS = 8
MAX_REREOLVES_PER_SOURCE = 3
MAX_READDS_PER_JOB = 2
MAX_RESTARTS = 2
"""aria2c processes started again after one died under a pull (in the engine's life)."""
_DIED = "aria2c exited unexpectedly"
"""A download that ends in error is re-added (fresh URLs, resuming) at most this often in a
row without progress."""
CONTROL_SUFFIX = ".aria2"
_BLOCK = 16 * 1024
"""aria2's block size inside a piece (its control file tracks in-flight pieces by block)."""

# aria2 exit/error codes for which re-adding the same download cannot help (local problems).
_LOCAL_ERRORS = frozenset({"9", "13", "15", "16", "17", "18", "28"})
_QUERY = re.compile(r"\?\S*")


def aria2_version() -> str | None:
    """The installed aria2c's version (``"1.36.0"``), or None when it is missing or broken."""
    exe = aria2c_path()
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.splitlines()[0] if out.stdout else ""
    match = re.match(r"aria2 version (\S+)", first.strip())
    return match.group(1) if match else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Client(aria2p.Client):
    """aria2p's client, but never through a proxy from the environment (the RPC secret must
    go to our loopback aria2c only, not to an ``HTTP_PROXY``)."""

    def __init__(self, port: int, secret: str) -> None:
        super().__init__(host="http://127.0.0.1", port=port, secret=secret, timeout=RPC_TIMEOUT_S)
        import requests  # aria2p's own HTTP library

        self._session = requests.Session()
        self._session.trust_env = False

    def post(self, payload: str) -> dict[str, Any]:
        response = self._session.post(self.server, data=payload, timeout=self.timeout)
        data: dict[str, Any] = response.json()
        return data

    def close(self) -> None:
        self._session.close()


def _rpc_error_types() -> tuple[type[BaseException], ...]:
    # requests' errors derive from OSError; JSON decoding errors from ValueError.
    return (aria2p.ClientException, OSError, ValueError)


_RPC_ERRORS = _rpc_error_types()


def _control_file_completed(path: Path, size: int) -> int | None:
    """Bytes an aria2 control file (format version 1) records as on disk, or None when the
    file is unreadable or describes another length."""
    try:
        data = path.read_bytes()
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            chunk = data[pos : pos + n]
            if len(chunk) != n:
                raise ValueError("short control file")
            pos += n
            return chunk

        version = struct.unpack(">H", take(2))[0]
        if version != 1:
            return None
        take(4)  # extension
        info_hash_len = struct.unpack(">I", take(4))[0]
        take(info_hash_len)
        piece_len = struct.unpack(">I", take(4))[0]
        total = struct.unpack(">Q", take(8))[0]
        take(8)  # upload length
        bitfield_len = struct.unpack(">I", take(4))[0]
        bitfield = take(bitfield_len)
        if total != size or piece_len <= 0:
            return None
        pieces = -(-total // piece_len)
        have = 0
        for i in range(pieces):
            if bitfield[i // 8] & (0x80 >> (i % 8)):
                have += min(piece_len, total - i * piece_len)
        # Pieces in flight: index, length, and a bitfield of their 16 KiB blocks.
        in_flight: int = struct.unpack(">I", take(4))[0]
        for _ in range(in_flight):
            index, length, blocks_len = struct.unpack(">III", take(12))
            blocks = take(blocks_len)
            done = sum(bin(b).count("1") for b in blocks) * _BLOCK
            if index < pieces:
                have += min(done, length, total - index * piece_len)
        return int(min(have, total))
    except (OSError, ValueError, struct.error, IndexError):
        return None


@dataclass
class _Source:
    src: SourceURL
    resolved: ResolvedURL
    header: bool
    """The download carries ``src.headers`` (every URI of it is on the token's origin)."""
    rerolves: int = 0
    slow_since: float | None = None
    """Since when its connections together have been slower than ``lowest_speed_bps``."""
    idle_since: float | None = None
    """Since when aria2 has had no connection open to it."""


@dataclass
class _Active:
    """One job's state while the engine works on it."""

    job: FetchJob
    result: FetchResult
    started: float
    baseline: int = 0
    """Bytes on disk when the current aria2 download was added (resumed)."""
    last_completed: int = 0
    gid: str | None = None
    sources: list[_Source] = field(default_factory=list)
    held_back: list[list[_Source]] = field(default_factory=list)
    """Groups of sources tried only if the current download fails (token-needing ones)."""
    uri_mirror: dict[str, str] = field(default_factory=dict)
    readds: int = 0
    resolving: Future[tuple[list[_Source], list[list[_Source]]]] | None = None
    rerolve: dict[str, Future[ResolvedURL | None]] = field(default_factory=dict)
    """Per mirror: a check of its idle redirect URL (None: it still works; else a fresh one)."""
    failed_mirrors: set[str] = field(default_factory=set)
    shares: dict[str, float] = field(default_factory=dict)
    """Each mirror's share of the last measured download speed (for byte attribution)."""
    delegated: Future[FetchResult] | None = None
    """The httpx engine fetching this job's token-needing sources (see the module doc)."""
    watched: int = 0
    """``completedLength`` at the watchdog's last look, and since when it has not grown:"""
    progress_at: float = field(default_factory=time.monotonic)
    done: bool = False


def _idle(client: _Client | None) -> bool:
    """True when aria2c answers that no download is active or waiting."""
    if client is None:
        return False
    client.timeout = IDLE_CHECK_TIMEOUT_S
    try:
        stat = client.get_global_stat()
        return int(stat.get("numActive", 1)) == 0 and int(stat.get("numWaiting", 1)) == 0
    except Exception:  # at shutdown, any failure means "not known to be idle"
        return False


def _shutdown(
    proc: subprocess.Popen[bytes],
    client: _Client | None,
    tmpdir: Path,
    log: IO[bytes] | None,
) -> None:
    """Stop aria2c (SIGTERM, then SIGKILL, to its process group) and clean up."""
    try:
        # No RPC shutdown: aria2c takes seconds to exit after ``aria2.forceShutdown`` (measured
        # 4 s with 1.36), but exits at once on SIGTERM, which it handles the same way (unfinished
        # downloads keep their control files). Except when it is idle: then nothing wakes its
        # event loop before the next one-second tick, and SIGTERM takes 1.0 s (measured with
        # 1.36, every time), a second added to every pull. An idle aria2c has nothing left to
        # save (finished downloads have no control file; stopped ones wrote theirs when they
        # stopped), so it gets SIGKILL at once.
        signals = (signal.SIGKILL,) if _idle(client) else (signal.SIGTERM, signal.SIGKILL)
        for sig in signals:
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(SHUTDOWN_WAIT_S)
        if proc.poll() is None:  # pragma: no cover - SIGKILL did not work
            proc.kill()
            proc.wait()
    finally:
        if client is not None:
            client.close()
        if log is not None:
            log.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


class Aria2Engine:
    """Transfers with a private aria2c. Thread-safe ``close``; ``run`` one call at a time."""

    name = "aria2"

    def __init__(self, options: EngineOptions) -> None:
        exe = aria2c_path()
        if exe is None:
            raise EngineUnavailableError(
                "the aria2 engine needs aria2c, which is not installed",
                hint="install it (Debian/Ubuntu: apt-get install aria2; macOS: brew install aria2) "
                "or use --engine httpx",
            )
        self.options = options
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="modelget-aria2-"))
        self._secret = secrets.token_urlsafe(32)
        self._log_path = self._tmpdir / "aria2c.log"
        conf = self._tmpdir / "aria2.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"rpc-secret={self._secret}\n")
        self._conf = conf
        self._proc: subprocess.Popen[bytes] | None = None
        self._restarts = 0
        self._client: _Client | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        try:
            self._start(exe)
        except BaseException:
            self._cleanup_failed_start()
            raise
        self.api = aria2p.API(self._client)

    def prepare(self) -> None:
        """aria2c is started by the constructor; nothing more to do here."""

    # --- process ------------------------------------------------------------------------------

    def _cleanup_failed_start(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        else:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _command(self, exe: str, port: int) -> list[str]:
        o = self.options
        cmd = [
            exe,
            f"--conf-path={self._conf}",
            "--enable-rpc=true",
            "--rpc-listen-all=false",
            f"--rpc-listen-port={port}",
            "--rpc-allow-origin-all=false",
            "--daemon=false",
            f"--stop-with-process={os.getpid()}",
            "--auto-save-interval=1",
            "--file-allocation=none",
            # No write cache: aria2c 1.36 aborts (Piece::updateWrCache assertion) when a
            # download is paused with cached blocks and resumed with another URI, which the
            # mirror watchdog does; measured no loss of throughput on a 1 GiB local transfer.
            "--disk-cache=0",
            f"--max-concurrent-downloads={max(1, o.max_concurrent_files)}",
            f"--check-certificate={'true' if o.verify_tls else 'false'}",
            "--http-accept-gzip=false",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--show-console-readout=false",
            "--no-netrc=true",
            "--follow-torrent=false",
            "--follow-metalink=false",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--remote-time=false",
            "--auto-file-renaming=false",
            "--allow-overwrite=false",
            "--content-disposition-default-utf8=false",
            "--user-agent=modelget-aria2",
        ]
        if o.max_rate_bps:
            cmd.append(f"--max-overall-download-limit={int(o.max_rate_bps)}")
        return cmd

    def _start(self, exe: str) -> None:
        last_error = "aria2c did not start"
        for _ in range(3):  # the free port can be taken between our probe and aria2c's bind
            port = _free_port()
            if self._log is not None:
                self._log.close()
            self._log = self._log_path.open("ab")
            proc = subprocess.Popen(
                self._command(exe, port),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=self._tmpdir,
                env=child_env(),  # no token variable reaches aria2c, not even its environment
            )
            client = _Client(port, self._secret)
            self._proc, self._client = proc, client
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(
                self, _shutdown, proc, client, self._tmpdir, self._log
            )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last_error = f"aria2c exited with code {proc.returncode}: {self._log_tail()}"
                    break
                try:
                    client.get_version()
                    return
                except _RPC_ERRORS as exc:
                    last_error = f"aria2c RPC not ready: {type(exc).__name__}"
                time.sleep(0.05)
            else:
                break
        raise EngineUnavailableError(
            f"could not start aria2c: {last_error}",
            hint="check that aria2c runs (aria2c --version) or use --engine httpx",
        )

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return _QUERY.sub("?...", lines[-1]) if lines else ""

    @property
    def pid(self) -> int | None:
        """aria2c's process id (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def rpc_port(self) -> int:
        assert self._client is not None
        port: int = self._client.port
        return port

    def close(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Aria2Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- run ----------------------------------------------------------------------------------

    def run(
        self,
        jobs: Sequence[FetchJob],
        *,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None = None,
    ) -> list[FetchResult]:
        with self._run_lock:
            if self._proc is not None and self._proc.poll() is not None:
                self._restart(reporter, "before a run", len(jobs))
            results = _Run(self, jobs, reporter, cancel, on_complete).go()
            while not cancel.is_set():
                died = [i for i, r in enumerate(results) if (r.error or "").startswith(_DIED)]
                if not died or not self._restart(reporter, results[died[0]].error, len(died)):
                    break
                # Each unfinished file resumes from its control file (saved every second).
                again = _Run(self, [jobs[i] for i in died], reporter, cancel, on_complete).go()
                for i, result in zip(died, again, strict=True):
                    results[i] = _merge(results[i], result)
            return results

    def _restart(self, reporter: Reporter, why: str | None, files: int) -> bool:
        """Start a fresh aria2c after the last one died (at most ``MAX_RESTARTS`` times in the
        engine's life); False when that budget is spent or it does not start."""
        exe = aria2c_path()
        if self._restarts >= MAX_RESTARTS or exe is None:
            return False
        self._restarts += 1
        reporter.on_message(
            "warning",
            f"{why or 'aria2c is not running'}; restarting aria2c and resuming {files} file(s)",
        )
        old = self._client
        try:
            self._start(exe)
        except EngineUnavailableError as exc:
            reporter.on_message("warning", exc.message)
            return False
        finally:
            if old is not None and old is not self._client:
                old.close()
        self.api = aria2p.API(self._client)
        return True


class _Run:
    """One ``run()``: a queue of jobs fed to aria2c as slots free up, polled until done."""

    def __init__(
        self,
        engine: Aria2Engine,
        jobs: Sequence[FetchJob],
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None,
    ) -> None:
        assert engine._client is not None and engine._proc is not None
        self.engine = engine
        self.options = engine.options
        self.client = engine._client
        self.proc = engine._proc
        self.jobs = list(jobs)
        self.reporter = reporter
        self.cancel = cancel
        self.on_complete = on_complete
        self.results = [FetchResult(j.key, j.path, ok=False) for j in self.jobs]
        o = self.options
        self.http = httpx.Client(
            follow_redirects=False,
            verify=o.verify_tls,
            timeout=httpx.Timeout(o.read_timeout_s, connect=o.connect_timeout_s),
            trust_env=True,
        )
        self.pool = ThreadPoolExecutor(RESOLVE_WORKERS, thread_name_prefix="modelget-aria2-resolve")
        concurrent = max(1, min(o.max_concurrent_files, len(self.jobs) or 1))
        # Up to twice as many jobs as aria2 runs at once are resolved and handed over, so the
        # next small file is already queued in aria2 when one finishes (aria2's own
        # max-concurrent-downloads still caps what transfers at once); not all of them, so a
        # signed URL is not left waiting in a queue for long.
        slots = max(1, min(2 * o.max_concurrent_files, len(self.jobs) or 1))
        # Jobs wait here for their sources' resolutions (which run on ``pool``).
        self.jobs_pool = ThreadPoolExecutor(slots, thread_name_prefix="modelget-aria2-job")
        self.slots = slots
        self.wake = threading.Event()
        # Connections are shared by the files that are big enough to split: one big file among
        # small ones gets them all.
        large = sum(1 for j in self.jobs if j.size > 2 * o.min_split_bytes)
        self.split = max(1, o.max_connections // max(1, min(concurrent, large)))

    # --- lifecycle ---

    def go(self) -> list[FetchResult]:
        try:
            self._loop()
        finally:
            # Resolutions still in flight (after a cancel) end on their own: don't wait.
            self.jobs_pool.shutdown(wait=False, cancel_futures=True)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.http.close()
        return self.results

    def _loop(self) -> None:
        queue = list(range(len(self.jobs)))
        queue.reverse()
        active: dict[int, _Active] = {}
        while True:
            if self.proc.poll() is not None:
                self._engine_died(active, queue)
                return
            if self.cancel.is_set():
                self._cancel(active, queue)
                return
            while queue and len(active) < self.slots:
                i = queue.pop()
                state = self._begin(i)
                if state is not None:
                    active[i] = state
            if not active and not queue:
                return
            for i, state in list(active.items()):
                try:
                    self._step(state)
                except _RPC_ERRORS as exc:
                    if self.proc.poll() is not None:
                        break
                    self._fail(state, f"aria2c RPC error: {type(exc).__name__}: {exc}")
                if state.done:
                    del active[i]
            small = any(
                s.gid is not None and s.job.size <= 2 * self.options.min_split_bytes
                for s in active.values()
            )
            # Woken early when a job's sources are resolved (so it is added at once) or a job
            # ends (so the next one starts at once).
            if self.wake.wait(SMALL_POLL_INTERVAL_S if small else POLL_INTERVAL_S):
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
                return None
            result.ok = True
            self._completed(state)
            return None
        if not job.sources:
            result.error = "no source to fetch it from"
            return None
        self._resolve_later(state)
        return state

    def _resolve_later(self, state: _Active) -> None:
        state.resolving = self.jobs_pool.submit(self._resolve_all, state)
        state.resolving.add_done_callback(lambda _f: self.wake.set())

    def _resolve_one(self, src: SourceURL) -> ResolvedURL:
        return resolve_final_url(self.http, src.url, src.headers)

    def _recheck(self, s: _Source) -> ResolvedURL | None:
        """None while the redirect target ``s`` resolved to still answers (a one-byte Range,
        without the source's headers: they never go to another origin); else the source
        resolved again, to a fresh (signed) URL."""
        try:
            still = resolve_final_url(self.http, s.resolved.url, max_hops=0)
        except ResolveURLError:
            still = None
        if still is not None and still.status in (200, 206):
            return None
        return self._resolve_one(s.src)

    def _resolve_all(self, state: _Active) -> tuple[list[_Source], list[list[_Source]]]:
        """Resolve every source (concurrently) and split them into the download's URIs and
        held-back groups (token-needing URIs that cannot share a download with the others).

        When no source resolves and some were refused with a status worth retrying (429, 5xx),
        those are asked again after their ``Retry-After`` (or a backoff), up to ``max_tries``
        times: a short burst of errors on the only mirror does not fail the file. With a
        source that did resolve, the download starts at once without the refused ones."""
        job = state.job
        pending = list(job.sources)
        ok: list[tuple[SourceURL, ResolvedURL]] = []
        tries = max(1, self.options.max_tries)
        for attempt in range(1, tries + 1):
            futures = [(s, self.pool.submit(self._resolve_one, s)) for s in pending]
            busy: list[tuple[SourceURL, ResolveURLError]] = []
            for src, fut in futures:
                try:
                    res = fut.result()
                except ResolveURLError as exc:
                    if exc.status is not None and status_is_retryable(exc.status):
                        busy.append((src, exc))
                    else:
                        self._mirror_failed(state, src.mirror, exc.message)
                    continue
                except Exception as exc:  # a bug or an unexpected library error: drop the source
                    self._mirror_failed(state, src.mirror, f"{type(exc).__name__}: {exc}")
                    continue
                if res.size is not None and res.size != job.size:
                    self._mirror_failed(
                        state,
                        src.mirror,
                        f"size mismatch: it serves {res.size} bytes, not {job.size}",
                    )
                    continue
                ok.append((src, res))
            if ok or not busy or attempt == tries or self.cancel.is_set():
                for src, error in busy:
                    self._mirror_failed(state, src.mirror, error.message)
                break
            backoff = self.options.retry_wait_s * 2 ** (attempt - 1)
            wait = max(
                backoff if e.retry_after is None else min(e.retry_after, MAX_RETRY_AFTER_S)
                for _, e in busy
            )
            for src, error in busy:
                state.result.attempts.append(
                    f"{src.mirror}: {error.message}; asking again in {wait:.1f} s"
                )
            if self.cancel.wait(wait):
                break
            pending = [src for src, _ in busy]
        return _group_sources(ok, state)

    def _mirror_failed(self, state: _Active, mirror: str, reason: str) -> None:
        state.result.attempts.append(f"{mirror}: {reason}")
        state.failed_mirrors.add(mirror)
        self.reporter.on_mirror_failed(state.job.path, mirror, reason)

    def _prepare_dest(self, job: FetchJob) -> int:
        """Make ``dest`` safe to hand to aria2c; return the bytes it will resume from."""
        control = Path(f"{job.dest}{CONTROL_SUFFIX}")
        if job.dest.exists() and control.exists():
            have = _control_file_completed(control, job.size)
            if have is not None:
                return have
        sidecar = Path(f"{job.dest}.ranges")
        with contextlib.suppress(OSError):
            if (
                not control.exists()
                and not sidecar.exists()
                and job.dest.stat().st_size == job.size
            ):
                # aria2c removes a control file when the download completes: the pull was
                # stopped (kill -9) after the last byte and before verification. Throwing the
                # file away re-fetched it whole; the digest check decides instead.
                return job.size
        # A file without (a usable) control file: aria2 would refuse it or append to it.
        _unlink(job.dest)
        _unlink(control)
        _unlink(Path(f"{job.dest}.ranges"))  # the httpx engine's sidecar describes dest too
        return 0

    def _add(self, state: _Active, sources: list[_Source]) -> None:
        if any(s.header for s in sources):
            self._delegate(state, sources)
            return
        job = state.job
        have = self._prepare_dest(job)
        if have and state.readds == 0:
            state.result.resumed_bytes = have
            self.reporter.on_file_resumed(job.path, have)
        if have == job.size and job.size > 0:
            state.result.ok = True  # every byte is there already: on to verification
            self._completed(state)
            return
        state.baseline = state.last_completed = state.watched = have
        state.progress_at = time.monotonic()
        state.sources = sources
        state.uri_mirror = {s.resolved.url: s.src.mirror for s in sources}
        uris = [s.resolved.url for s in sources]
        o = self.options
        per_server = min(16, max(1, max(s.src.max_connections or 16 for s in sources)))
        split = max(1, min(self.split, sum(min(16, s.src.max_connections or 16) for s in sources)))
        opts: dict[str, Any] = {
            "dir": str(job.dest.parent),
            "out": job.dest.name,
            "split": str(split),
            "max-connection-per-server": str(per_server),
            "min-split-size": str(max(1024 * 1024, min(1024**3, o.min_split_bytes))),
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
        headers = [s for s in sources if s.header]
        if headers:
            opts["header"] = [f"{k}: {v}" for k, v in headers[0].src.headers.items()]
        gid = self.client.add_uri(uris, options=opts)
        state.gid = str(gid)

    def _delegate(self, state: _Active, sources: list[_Source]) -> None:
        """Fetch with the httpx engine: these sources need their token, which aria2c would
        also send to any host the server redirects it to."""
        job = state.job
        _unlink(Path(f"{job.dest}{CONTROL_SUFFIX}"))  # httpx resumes from its own sidecar
        state.sources = sources
        state.uri_mirror = {}
        sub = FetchJob(
            job.key, job.path, job.size, job.dest, tuple(s.src for s in sources), job.sha256
        )
        state.delegated = self.jobs_pool.submit(self._fetch_with_httpx, sub)

    def _fetch_with_httpx(self, job: FetchJob) -> FetchResult:
        from modelget.engines.httpx_engine import HttpxEngine

        engine = HttpxEngine(self.options)
        try:
            [result] = engine.run([job], reporter=self.reporter, cancel=self.cancel)
        finally:
            engine.close()
        return result

    def _delegated_done(self, state: _Active, fut: Future[FetchResult]) -> None:
        try:
            sub = fut.result()
        except Exception as exc:  # a bug or an unexpected library error
            sub = FetchResult(
                state.job.key, state.job.path, False, error=f"{type(exc).__name__}: {exc}"
            )
        result = state.result
        for mirror, n in sub.bytes_by_mirror.items():
            result.bytes_by_mirror[mirror] = result.bytes_by_mirror.get(mirror, 0) + n
        result.attempts.extend(sub.attempts)
        if sub.resumed_bytes and not result.resumed_bytes:
            result.resumed_bytes = sub.resumed_bytes
        if sub.ok:
            result.ok = True
            self._completed(state)
            return
        for s in state.sources:
            state.failed_mirrors.add(s.src.mirror)
        if state.held_back and not sub.cancelled:
            self._add(state, state.held_back.pop(0))
            return
        self._fail(state, sub.error or "the download failed")

    # --- polling ---

    def _step(self, state: _Active) -> None:
        if state.delegated is not None:
            if not state.delegated.done():
                return
            delegated, state.delegated = state.delegated, None
            self._delegated_done(state, delegated)
            return
        if state.resolving is not None:
            if not state.resolving.done():
                return
            fut, state.resolving = state.resolving, None
            try:
                sources, held = fut.result()
            except Exception as exc:
                self._fail(state, f"could not resolve its sources: {type(exc).__name__}: {exc}")
                return
            state.held_back = held
            if not sources and held:
                sources = held.pop(0)
            if not sources:
                self._fail(state, _no_mirror_left(state.result.attempts))
                return
            self._add(state, sources)
            return
        if state.gid is None:
            return
        status = self.client.tell_status(
            state.gid,
            ["status", "completedLength", "totalLength", "errorCode", "errorMessage", "files"],
        )
        completed = int(status.get("completedLength", 0) or 0)
        st = status.get("status")
        if st != "active":
            # Waiting in aria2's queue is not stalling: the watchdog's clock starts when the
            # download does.
            state.progress_at = time.monotonic()
        servers = self._servers(state) if st == "active" else None
        self._account(state, completed, servers)
        if st == "complete":
            self._account(state, state.job.size)
            self._forget(state)
            state.result.ok = True
            self._completed(state)
            return
        if st in ("error", "removed"):
            code = str(status.get("errorCode", "") or "")
            message = _QUERY.sub("?...", str(status.get("errorMessage", "") or "download failed"))
            self._forget(state)
            self._errored(state, code, message)
            return
        if servers is not None:
            self._watch(state, servers, status, completed)

    def _servers(self, state: _Active) -> dict[str, tuple[int, float]]:
        """Per mirror of the download: (connections open, their download speed in B/s)."""
        out: dict[str, tuple[int, float]] = {}
        if state.gid is None:
            return out
        try:
            entries: Any = self.client.get_servers(state.gid)
        except _RPC_ERRORS:
            return out
        for entry in entries or []:
            for server in entry.get("servers", []):
                mirror = state.uri_mirror.get(str(server.get("uri", "")))
                if mirror is None:
                    continue
                n, speed = out.get(mirror, (0, 0.0))
                out[mirror] = (n + 1, speed + float(server.get("downloadSpeed", 0) or 0))
        return out

    def _account(
        self, state: _Active, completed: int, servers: Mapping[str, tuple[int, float]] | None = None
    ) -> None:
        """Report the bytes that arrived since the last poll and attribute them to mirrors.

        aria2 does not count bytes per URI. The split is an estimate: each poll's new bytes are
        shared among the mirrors in proportion to the download speed aria2 reports for each
        of their connections (``aria2.getServers``), or all to the mirror with the most
        connections (the first source) when aria2 reports no speed. The shares always add up
        to the bytes transferred in this run."""
        delta = completed - state.last_completed
        if delta <= 0:
            return
        state.last_completed = completed
        speeds = {m: speed for m, (_, speed) in (servers or {}).items()}
        total = sum(speeds.values())
        if total > 0:
            state.shares = {m: v / total for m, v in speeds.items() if v > 0}
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

    def _watch(
        self,
        state: _Active,
        servers: Mapping[str, tuple[int, float]],
        status: Mapping[str, Any],
        completed: int,
    ) -> None:
        """modelget's own watchdog over the mirrors of one download, beside aria2's.

        aria2c checks ``lowest-speed-limit`` only once a connection is 10 s old (a hidden
        ``startup-idle-time`` that neither its command line nor RPC can change), so a mirror
        trickling a few KB/s would hold its segments that long. A mirror whose connections
        together stay below ``lowest_speed_bps`` for ``stall_timeout_s`` while another mirror
        is doing better is dropped here: its URIs are removed (deleting a URI does not close
        aria2's connection to it, pausing the download does; the bytes are kept).

        aria2 keeps a URI that failed in the download's list (``tellStatus`` shows it as
        ``used`` like any other), so a signed redirect URL that expired cannot be seen there.
        A redirected source that has had no connection for ``stall_timeout_s`` is checked
        instead: if its URL is refused now (a signed URL that expired), the source is resolved
        again and the fresh URL swapped in (at most ``MAX_REREOLVES_PER_SOURCE`` times), with
        the download paused around the change so that aria2 opens connections to it."""
        if state.gid is None or completed >= state.job.size:
            return
        now = time.monotonic()
        opts = self.options
        limit = opts.lowest_speed_bps
        for s in state.sources:
            conns, speed = servers.get(s.src.mirror, (0, 0.0))
            s.idle_since = (s.idle_since or now) if not conns else None
            if conns and speed >= limit:
                s.slow_since = None
            elif conns:
                s.slow_since = s.slow_since or now
            elif s.idle_since is not None and now - s.idle_since >= opts.stall_timeout_s:
                # A connection that stalls is closed by aria2's read timeout and opened again:
                # short gaps do not clear a slow mirror, a long idle spell does.
                s.slow_since = None
        if completed > state.watched:
            state.watched, state.progress_at = completed, now
        self._swap_resolved(state, status)
        if len(state.sources) < 2:
            return
        # aria2 averages a connection's speed over many seconds, so one that stalls after a
        # burst still looks fast for a long while (and aria2's own timeout did not close it
        # either, in tests): no byte at all for stall_timeout_s while connections are open
        # means every mirror they are on is stalled. Drop those when another mirror is left.
        stalled = now - state.progress_at
        connected = [s for s in state.sources if servers.get(s.src.mirror, (0, 0.0))[0]]
        if stalled >= opts.stall_timeout_s and connected and len(connected) < len(state.sources):
            for s in connected:
                self._remove_uris(
                    state, s, f"stalled: no bytes for {stalled:.0f} s", status, pause=True
                )
            state.progress_at = now
            return
        if limit <= 0:
            return
        slow = [
            (s, now - s.slow_since)
            for s in state.sources
            if s.slow_since is not None and now - s.slow_since >= opts.stall_timeout_s
        ]
        healthy = [s for s in state.sources if s.slow_since is None]
        if slow and healthy:
            for s, seconds in slow:
                _, speed = servers.get(s.src.mirror, (0, 0.0))
                self._remove_uris(
                    state,
                    s,
                    f"too slow: {speed / 1024:.0f} KiB/s for {seconds:.0f} s "
                    f"(below {limit / 1024:.0f} KiB/s)",
                    status,
                    pause=True,
                )
            return
        for s in state.sources:
            idle = s.idle_since is not None and now - s.idle_since >= opts.stall_timeout_s
            if (
                idle
                and s.resolved.redirected
                and s.rerolves < MAX_REREOLVES_PER_SOURCE
                and s.src.mirror not in state.rerolve
            ):
                s.idle_since = now
                state.rerolve[s.src.mirror] = self.pool.submit(self._recheck, s)

    def _swap_resolved(self, state: _Active, status: Mapping[str, Any]) -> None:
        """Put the fresh URLs of sources resolved again into the download."""
        for s in list(state.sources):
            pending = state.rerolve.get(s.src.mirror)
            if pending is None or not pending.done():
                continue
            del state.rerolve[s.src.mirror]
            try:
                fresh = pending.result()
            except Exception as exc:
                self._remove_uris(state, s, f"its URL stopped working: {exc}", status)
                continue
            if fresh is None:  # idle by aria2's choice: its URL still works
                continue
            if fresh.url == s.resolved.url or fresh.url in state.uri_mirror or state.gid is None:
                continue
            if s.header and not fresh.same_origin:
                self._remove_uris(state, s, "its URL now redirects to another host", status)
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
        status: Mapping[str, Any],
        *,
        pause: bool = False,
    ) -> None:
        """Take a source's URIs out of the download (``pause``: also close its connections,
        by pausing the download around the change; the bytes on disk are kept)."""
        gid = state.gid
        self._drop_source(state, s, reason)
        if gid is None:
            return
        uri = s.resolved.url
        count = _uri_count(status, uri)
        try:
            if pause:
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
            with contextlib.suppress(*_RPC_ERRORS):
                self.client.remove_download_result(state.gid)
        state.gid = None

    def _errored(self, state: _Active, code: str, message: str) -> None:
        job = state.job
        text = f"{message} (aria2 error {code})" if code else message
        mirrors = "+".join(s.src.mirror for s in state.sources) or "aria2"
        state.result.attempts.append(f"{mirrors}: {text}")
        for s in state.sources:
            if s.src.mirror not in state.failed_mirrors:
                state.failed_mirrors.add(s.src.mirror)
                self.reporter.on_mirror_failed(job.path, s.src.mirror, text)
        if state.last_completed > state.baseline:
            state.readds = 0  # it made progress: a fresh try is worth it (e.g. short-lived URLs)
        if code in _LOCAL_ERRORS:
            self._fail(state, text)
            return
        if state.readds >= MAX_READDS_PER_JOB:
            self._fail(state, _no_mirror_left(state.result.attempts))
            return
        state.readds += 1
        if state.held_back:
            self._add(state, state.held_back.pop(0))
            return
        # Fresh URLs (a signed one may have expired), resuming from the control file.
        state.failed_mirrors.clear()
        self._resolve_later(state)

    def _fail(self, state: _Active, error: str) -> None:
        if state.gid is not None:
            with contextlib.suppress(*_RPC_ERRORS):
                self.client.force_remove(state.gid)
            self._wait_stopped(state)
            self._forget(state)
        state.result.ok = False
        state.result.error = error
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
        for state in active.values():
            if state.gid is not None:
                with contextlib.suppress(*_RPC_ERRORS):
                    self.client.force_remove(state.gid)
        for state in active.values():
            if state.delegated is not None:
                # The httpx engine sees the same cancel event and stops soon; wait, so it is
                # not still writing when the caller looks at the file.
                with contextlib.suppress(Exception):
                    state.delegated.result()
                state.delegated = None
            self._wait_stopped(state)
            self._forget(state)
            state.result.cancelled = True
            state.result.ok = False
            state.result.error = "cancelled"
            state.result.seconds = time.perf_counter() - state.started
        for i in queue:
            self.results[i].cancelled = True
            self.results[i].error = "cancelled"

    def _engine_died(self, active: dict[int, _Active], queue: list[int]) -> None:
        error = f"{_DIED} (code {self.proc.returncode})"
        for i in [*active, *queue]:
            result = self.results[i]
            result.ok = False
            result.error = error


def _group_sources(
    ok: Sequence[tuple[SourceURL, ResolvedURL]], state: _Active
) -> tuple[list[_Source], list[list[_Source]]]:
    """The URIs of one download, and held-back groups, so that a token is never sent to a
    host other than its own (aria2c sends ``header`` to every URI of a download)."""
    free = [_Source(s, r, False) for s, r in ok if not (s.headers and r.same_origin)]
    needy = [_Source(s, r, True) for s, r in ok if s.headers and r.same_origin]
    if not needy:
        return free, []
    by_origin: dict[tuple[str, str, int | None], list[_Source]] = {}
    for n in needy:
        by_origin.setdefault(origin(n.resolved.url), []).append(n)
    groups: list[list[_Source]] = []
    for group in by_origin.values():
        # Sources on one origin share one header set: keep those that agree with the first.
        first = dict(group[0].src.headers)
        groups.append([g for g in group if dict(g.src.headers) == first])
    free_origins = {origin(f.resolved.url) for f in free}
    if len(groups) == 1 and free_origins <= {origin(groups[0][0].resolved.url)}:
        return [*groups[0], *free], []
    for group in groups:
        for g in group:
            state.result.attempts.append(
                f"{g.src.mirror}: skipped, its token cannot be sent to the other mirrors' hosts"
            )
    if free:
        return free, groups
    return groups[0], groups[1:]


def _merge(first: FetchResult, second: FetchResult) -> FetchResult:
    """One file's result over two runs (the first ended when aria2c died)."""
    for mirror, n in first.bytes_by_mirror.items():
        second.bytes_by_mirror[mirror] = second.bytes_by_mirror.get(mirror, 0) + n
    second.attempts = [*first.attempts, f"aria2: {first.error}", *second.attempts]
    second.resumed_bytes = first.resumed_bytes
    second.seconds += first.seconds
    return second


def _no_mirror_left(attempts: Sequence[str]) -> str:
    """The error of a file no mirror could finish: what each mirror did last."""
    last: dict[str, str] = {}
    for line in attempts:
        who, _, what = line.partition(": ")
        last.pop(who, None)
        last[who] = what
    said = "; ".join(f"{who}: {what}" for who, what in last.items())
    return "no mirror could serve the rest of the file: " + (said or "every mirror failed")


def _uri_count(status: Mapping[str, Any], uri: str) -> int:
    """How often ``uri`` is in a download's URI list (aria2 lists a URI once per use)."""
    files = status.get("files") or []
    return sum(1 for f in files for u in (f.get("uris") or []) if str(u.get("uri")) == uri)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


__all__ = ["Aria2Engine", "aria2_version", "redact_url"]
