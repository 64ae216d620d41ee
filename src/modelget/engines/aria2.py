"""The aria2 engine: a private ``aria2c`` driven over JSON-RPC on 127.0.0.1.

The engine starts and owns one ``aria2c`` process. Its RPC secret is random and is written
only to a ``0600`` conf file in a private temporary directory (never on a command line, never
in a session file); the RPC port is bound to loopback only. ``aria2c`` dies with us
(``--stop-with-process``), and :meth:`Aria2Engine.close` (also run by a finalizer) shuts it
down, kills its process group if it lingers, and removes the private directory. A directory
left by a process killed before that (kill -9) records who owned it (:data:`PIDS_FILE`) and is
removed by the next engine's start once its owner and aria2c are gone
(:func:`remove_stale_dirs`).

A mirror that is bad costs seconds: a file's sources are resolved at once and the first good
answer starts the download; a mirror far behind another on a download loses its URIs there
after the hedge budget (:meth:`_Run._behind`).

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
import errno
import functools
import math
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aria2p
import httpx
import websocket

from modelget import http
from modelget.engines import (
    EngineOptions,
    FailureCode,
    FetchJob,
    FetchResult,
    OnComplete,
    SourceURL,
    aria2c_path,
    failure_of_os_error,
    no_mirror_left,
)
from modelget.engines.redirects import (
    ResolvedURL,
    ResolveURLError,
    redact_url,
    resolve_final_url,
)
from modelget.errors import EngineUnavailableError
from modelget.events import Reporter, report_connections
from modelget.retry import MAX_RETRY_AFTER_S, status_is_retryable
from modelget.scheduler import Adaptive, Policy
from modelget.settings import child_env
from modelget.verify import Digests, PrefixHasher

READY_TIMEOUT_S = 10.0
SHUTDOWN_WAIT_S = 2.0
IDLE_CHECK_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2
"""One look at every download costs one RPC round trip for all of them together; aria2c's
WebSocket notifications (a download started, stopped, completed, failed) wake the loop in
between, so a small file's end is seen at once rather than at the next look."""
RPC_TIMEOUT_S = 10.0
RESOLVE_WORKERS = 16
"""Resolutions under way at once, per mirror (each mirror has its own threads: one that
never answers cannot hold another's resolutions up)."""
RESOLVE_GRACE_MIN_S = 0.05
"""Once a job's first source has resolved, the others still out get this long, or as long
as that first answer took if more (never more than the hedge budget), to join the download
before it starts; a later answer is added to the running download."""
HEDGE_MIN_S = 1.0
HEDGE_LATENCIES = 4
"""The hedge budget: max(``HEDGE_MIN_S``, ``HEDGE_LATENCIES`` × the quickest resolution
seen in the run). A mirror whose connections to a download fall behind for that long is
taken out of it (see :meth:`_Run._watch`)."""
STALL_HEDGE_MIN_S = 2.0
"""A download whose connections (all on some of its mirrors) deliver no byte for
max(this, the hedge budget) loses those mirrors to its others (at most ``stall_timeout_s``)."""
BEHIND_RATIO = 8
"""A mirror whose connections bring less than 1/``BEHIND_RATIO`` of the best other mirror's
rate per connection is behind (aria2c never re-splits a running segment: its share of the
file would hold the download's end)."""
MIN_REFERENCE_BPS = 64 * 1024
"""A rate per connection below this is no yardstick for another mirror's."""
YARDSTICK_BYTES = 1024 * 1024
YARDSTICK_CONN_S = 0.1
"""A mirror's rate per connection (its bytes over its connection-seconds, estimated from each
download's progress between looks: :meth:`_Run._observe`) is a yardstick for the others'
once it rests on this many bytes; its connection-seconds count as at least this many (a fast
mirror can fetch its share in less: on loopback 11 MB in 0.06 connection-seconds, and such a
rate is only ever underestimated, never ignored)."""
RATE_HALF_LIFE_S = 5.0
"""Those totals count for half after this long: a yardstick follows the mirror's rate now."""
ENDGAME_RESTART_S = 0.2
"""What taking a mirror out of a download costs the mirrors left (a pause and resume, new
connections): :meth:`_Run._endgame` does it only when they would still finish sooner."""
STALLED_HOLDER_S = 0.5
"""At the end of a download, a holder that brought no byte for this long is stalled (told
with a reason), not merely slower (taken out silently)."""
HASH_WORKERS = 2
SMALL_FILE = 8 * 1024 * 1024
"""A file up to this size is one download on one connection, added at once with the others.
Splitting it costs more than it gains: aria2's first request of a download has no Range, and
the server sends on until aria2 closes it (on loopback a 6 MB file split in 1 MiB segments
was fetched 1.7 times over)."""
MIN_SPLIT = 1024 * 1024
"""``min-split-size``: aria2's smallest segment (and its piece length)."""
PER_HOST_MAX = 16
"""aria2c's hard limit on ``max-connection-per-server`` (per download and host name)."""
GROW_STEP = 4
"""A running download gets more connections only when at least this many more are free."""
GROW_BYTES_PER_CONNECTION = 2 * MIN_SPLIT
"""... and when it has at least this much left per connection (a change restarts it inside)."""
MIN_POLL_INTERVAL_S = 0.2
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

TMP_PREFIX = "modelget-aria2-"
"""The private directory's name prefix (in the temporary directory: ``$TMPDIR``)."""
PIDS_FILE = "pids"
"""In the private directory: the owner's and aria2c's process ids, and the owner's pid
namespace (``owner=``, ``aria2c=``, ``pidns=`` lines), so that a later engine can tell a
directory left by a killed pull (its ``aria2.conf`` holds an RPC secret) from a live one."""

# aria2 exit/error codes for which re-adding the same download cannot help (local problems).
_LOCAL_ERRORS = frozenset({"9", "13", "15", "16", "17", "18", "28"})
_DISK_FULL = "9"
"""aria2's "not enough disk space" error code."""
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


def _pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``; empty where /proc has none)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _write_pids(tmpdir: Path, aria2c: int | None) -> None:
    """Record who owns the private directory (atomically, owner-only)."""
    body = f"owner={os.getpid()}\naria2c={aria2c or 0}\npidns={_pid_namespace()}\n"
    tmp = tmpdir / f".{PIDS_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    os.replace(tmp, tmpdir / PIDS_FILE)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    with contextlib.suppress(OSError, IndexError):
        # A zombie (killed, not yet reaped: in a container whose init reaps nothing it stays)
        # is gone for our purpose.
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def remove_stale_dirs(root: Path) -> list[Path]:
    """Remove the private directories in ``root`` that engines killed before their
    ``close`` left behind (kill -9): ours only (the ``TMP_PREFIX`` prefix, a real directory
    owned by this uid), and only when its pid file says that neither its owner nor its aria2c
    is alive, in this pid namespace. A directory without a pid file (an engine that is just
    creating it, or one from an older modelget) or from another pid namespace is left alone:
    a live one is never removed. Returns what was removed."""
    removed: list[Path] = []
    uid = os.getuid()
    ns = _pid_namespace()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            fields = dict(
                line.split("=", 1)
                for line in (Path(entry.path) / PIDS_FILE).read_text().splitlines()
                if "=" in line
            )
            owner, aria2c = int(fields["owner"]), int(fields.get("aria2c", "0") or 0)
        except (OSError, ValueError, KeyError):
            continue
        if fields.get("pidns", "") != ns or _alive(owner) or _alive(aria2c):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


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
    """The source needs ``src.headers`` on its own origin (such a source never goes to
    aria2c: the job is handed back, see the module doc)."""
    rerolves: int = 0
    slow_since: float | None = None
    """Since when its connections together have been slower than ``lowest_speed_bps``."""
    idle_since: float | None = None
    """Since when aria2 has had no connection open to it."""
    behind_since: float | None = None
    """Since when its connections have been far behind another mirror's (``BEHIND_RATIO``)."""
    seen_bytes: int = 0
    """Its bytes on the download at the last look (``_endgame``)."""
    last_byte_at: float = 0.0
    """When those last grew (0: not looked yet)."""


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


@dataclass
class _Delivered:
    """One mirror's bytes and connection-seconds (both decaying: ``RATE_HALF_LIFE_S``)."""

    bytes: float = 0.0
    conn_s: float = 0.0
    at: float = 0.0
    """When they were last updated."""
    flowing_at: float = -math.inf
    """When it last brought bytes."""

    def add(self, now: float, nbytes: float, conn_s: float) -> None:
        keep = 0.5 ** (max(0.0, now - self.at) / RATE_HALF_LIFE_S) if self.at else 1.0
        self.bytes = self.bytes * keep + nbytes
        self.conn_s = self.conn_s * keep + conn_s
        self.at = now
        if nbytes > 0:
            self.flowing_at = now


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
    resolving: _Resolving | None = None
    rerolve: dict[str, Future[ResolvedURL | None]] = field(default_factory=dict)
    """Per mirror: a check of its idle redirect URL (None: it still works; else a fresh one)."""
    failed_mirrors: set[str] = field(default_factory=set)
    look: tuple[float, dict[str, tuple[int, float]]] | None = None
    """The last look at its servers: when, and per mirror (connections, B/s)."""
    shares: dict[str, float] = field(default_factory=dict)
    """Each mirror's share of the last measured download speed (for byte attribution)."""
    pending: list[_Source] | None = None
    """Resolved sources of a job not yet added to aria2c (waiting for connections)."""
    parked: list[_Source] = field(default_factory=list)
    """Resolved sources of a running download whose mirrors had no connections to spare when
    it started: they join it when they have (:meth:`_Run._schedule`)."""
    per_server: int = 0
    """The download's ``max-connection-per-server`` (its share of each mirror's target)."""
    connections: int = 0
    """Connections aria2 had open for it at the last look."""
    speed: float = 0.0
    """Its download speed at the last look (B/s)."""
    hashing: _Hashing | None = None
    watched: int = 0
    """``completedLength`` at the watchdog's last look, and since when it has not grown:"""
    progress_at: float = field(default_factory=time.monotonic)
    done: bool = False

    def mirrors(self) -> set[str]:
        return {s.src.mirror for s in (self.pending or self.sources)}


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
        self._exe = exe
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        # Owner-only (mkdtemp's 0700; its files 0600): the conf holds the RPC secret.
        self._tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        _write_pids(self._tmpdir, None)
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
        # Until aria2c runs, only the private directory is there to clean up.
        self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
            self, shutil.rmtree, self._tmpdir, ignore_errors=True
        )
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._closed = False
        self.connections: dict[str, int] = {}
        """The most connections the engine chose for each mirror at once (over its runs)."""

    def prepare(self) -> None:
        """Start aria2c in a background thread (it takes tens of milliseconds: its process
        start and the first RPC answer), so that it is ready when the plan is. ``run`` waits
        for it; calling this again does nothing."""
        with self._lock:
            if self._starter is not None or self._closed:
                return
            self._starter = threading.Thread(
                target=self._start_in_background, name="modelget-aria2-start", daemon=True
            )
            self._starter.start()

    def _start_in_background(self) -> None:
        try:
            self._start(self._exe)
        except BaseException as exc:  # handed to the thread that waits (run, _ready)
            self._start_error = exc
            return
        # Off the critical path: what killed pulls left behind (their RPC secrets).
        with contextlib.suppress(OSError):
            remove_stale_dirs(self._tmpdir.parent)

    def _ready(self) -> None:
        """Start aria2c if nobody did, wait until it answers; raise what its start raised."""
        self.prepare()
        starter = self._starter
        if starter is None:
            raise EngineUnavailableError("the aria2 engine is closed")
        starter.join()
        if self._start_error is not None:
            raise self._start_error
        if self._client is None:
            raise EngineUnavailableError("the aria2 engine is closed")

    @property
    def api(self) -> aria2p.API:
        """aria2p's API on the running aria2c (started if need be)."""
        self._ready()
        return aria2p.API(self._client)

    # --- process ------------------------------------------------------------------------------

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
            # Every small file goes to aria2c at once; this many transfer together (a
            # connection each), and big files are added first in the queue as the
            # connection budget allows (see _Run._schedule).
            f"--max-concurrent-downloads={max(o.max_connections, o.max_concurrent_files) + 16}",
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
            fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._log = os.fdopen(fd, "ab")
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
            with contextlib.suppress(OSError):
                _write_pids(self._tmpdir, proc.pid)
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
                time.sleep(0.01)  # aria2c answers within ~20 ms of its start
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
        """aria2c's process id (None when it was never started); waits for a start under way."""
        starter = self._starter
        if starter is not None:
            starter.join()
        return self._proc.pid if self._proc is not None else None

    @property
    def rpc_port(self) -> int:
        self._ready()
        assert self._client is not None
        port: int = self._client.port
        return port

    def close(self) -> None:
        """Stop aria2c (whether or not it started, or is starting) and remove the private
        directory. Idempotent."""
        with self._lock:
            self._closed = True
            starter = self._starter
        if starter is not None:
            starter.join()
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
            self._ready()
            if self._proc is not None and self._proc.poll() is not None:
                self._restart(reporter, "before a run", len(jobs))
            results = _Run(self, jobs, reporter, cancel, on_complete).go()
            while not cancel.is_set():
                died = [i for i, r in enumerate(results) if r.failure == "engine-died"]
                if died and self._proc is not None and self._proc.poll() is None:
                    break  # RPC errors while aria2c lives: nothing a restart would fix
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
        return True


class _Run:
    """One ``run()``: every job handed to the one aria2c (small files at once, big files as the
    per-mirror connection budget allows), polled in one RPC round trip per look until done."""

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
        self.http = http.client(
            timeout=httpx.Timeout(o.read_timeout_s, connect=o.connect_timeout_s),
            verify_tls=o.verify_tls,
        )
        self.pools: dict[str, _DaemonPool] = {}
        """Per mirror: the threads that resolve its URLs."""
        self.best_latency: float | None = None
        """The quickest resolution seen in this run (seconds): the yardstick of the hedge
        budget (:meth:`_hedge_s`)."""
        self.delivered: dict[str, _Delivered] = {}
        """Per mirror: the bytes it brought and its connection-seconds, over all its
        downloads (estimated; :meth:`_observe`)."""
        self.hash_pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="modelget-aria2-hash")
        self.finishing: list[Future[None]] = []
        self.wake = threading.Event()
        self.budget = _Budget(o, reporter, engine.connections)
        self.forget: list[str] = []
        """gids of stopped downloads whose results are to be removed from aria2c."""

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
            for fut in self.finishing:
                with contextlib.suppress(Exception):
                    fut.result()
            self.hash_pool.shutdown(wait=True)
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
            if self.wake.wait(self._interval(active.values(), statuses)):
                self.wake.clear()

    def _interval(
        self, states: Iterable[_Active], statuses: Mapping[str, Mapping[str, Any]]
    ) -> float:
        """How long until the next look. aria2c's notifications wake the loop at once when a
        download stops (so a small file's end costs no poll interval); short looks only near
        a download's end, to hash its last finished pieces before aria2 says it is complete."""
        wait = POLL_INTERVAL_S
        now = time.monotonic()
        for state in states:
            r = state.resolving
            if r is not None and r.retry_at is not None:
                wait = min(wait, max(0.0, r.retry_at - now))
            elif r is not None and not r.started and r.first_ok_at is not None:
                wait = min(wait, max(0.0, r.first_ok_at + r.grace_s - now))
            st = statuses.get(state.gid or "")
            if st is None:
                continue
            speed = int(st.get("downloadSpeed", 0) or 0)
            left = state.job.size - int(st.get("completedLength", 0) or 0)
            if speed > 0 and left < speed * 2 * POLL_INTERVAL_S:
                wait = min(wait, max(MIN_POLL_INTERVAL_S, 0.5 * left / speed))
        return wait

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
            i: self._submit(sources[i].mirror, functools.partial(self._timed_resolve, sources[i]))
            for i in todo
        }
        state.resolving = _Resolving(attempt, waiting)

    def _timed_resolve(self, src: SourceURL) -> tuple[ResolvedURL, float]:
        t = time.monotonic()
        res = self._resolve_one(src)
        return res, time.monotonic() - t

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
            free = [(i, x) for i, x in r.ok if not self._needs_header(job.sources[i], x)]
            due = r.first_ok_at is not None and now >= r.first_ok_at + r.grace_s
            if free and (not r.waiting or due):
                self._start_sources(state, r)
            elif not r.waiting:
                self._give_up_resolving(state, r)
        if not r.waiting and state.resolving is r and r.retry_at is None:
            state.resolving = None

    def _needs_header(self, src: SourceURL, res: ResolvedURL) -> bool:
        return bool(src.headers) and res.same_origin

    def _start_sources(self, state: _Active, r: _Resolving) -> None:
        """The round has a source for aria2: the job's download gets what resolved so far."""
        r.started = True
        for i, error in r.busy:
            self._mirror_failed(state, state.job.sources[i].mirror, error.message)
        r.busy.clear()
        ok = sorted(r.ok)
        sources, state.held_back = _group_sources(
            [(state.job.sources[i], res) for i, res in ok], state
        )
        state.pending, state.parked = sources, []

    def _give_up_resolving(self, state: _Active, r: _Resolving) -> None:
        """Every source of the round has answered and none can go to aria2c: hand the job
        back (token-needing sources), ask the refused ones again, or fail it."""
        job = state.job
        if r.ok:  # only token-needing sources resolved
            _, state.held_back = _group_sources([(job.sources[i], x) for i, x in r.ok], state)
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
            if self._needs_header(src, res):
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
            _multicall(self.client, calls)

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

    def _room(self, x: _Source, state: _Active) -> int:
        """Spare connections a busy mirror needs to start a big file (or join one)."""
        return min(GROW_STEP, self.budget.target(x.src.mirror, state))

    def _grow(self, grow: Sequence[tuple[_Active, int]]) -> None:
        """More connections for running downloads (``aria2.changeOption``: aria2 restarts the
        download inside, keeping every finished piece; measured ~0.1 s of lost transfer)."""
        calls = []
        for s, per in grow:
            calls.append(("aria2.changeOption", [s.gid, self._split_options(s, per)]))
        answers = _multicall(self.client, calls)
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
        answers = _multicall(self.client, calls)
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
        have = self._prepare_dest(job)
        if have and state.readds == 0:
            state.result.resumed_bytes = have
            self.reporter.on_file_resumed(job.path, have)
        if state.hashing is not None:
            state.hashing.doubt()
        # Hashing as the bytes arrive only for a download that starts from nothing: bytes
        # resumed from an earlier run are hashed from the finished file instead.
        state.hashing = _Hashing.for_job(job) if have == 0 else None
        if have == job.size and job.size > 0:
            state.result.ok = True  # every byte is there already: on to verification
            self._completed(state)
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
        active, stopped = _multicall(
            self.client,
            [("aria2.tellActive", [_KEYS]), ("aria2.tellStopped", [0, 1 << 20, _KEYS])],
        )
        statuses: dict[str, dict[str, Any]] = {}
        for group in (active, stopped):
            if isinstance(group, Exception):
                raise aria2p.ClientException(1, str(group))
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
            answers = _multicall(self.client, [("aria2.getServers", [s.gid]) for s in multi])
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

    def _yardstick(self, mirror: str, now: float) -> float | None:
        """The mirror's rate per connection (B/s) over its recent downloads, while bytes came
        from it lately (within twice the hedge budget: a mirror that finished its segments has
        no connection, but was fast a moment ago); None when it rests on too little."""
        d = self.delivered.get(mirror)
        if d is None or now - d.flowing_at > 2 * self._hedge_s():
            return None
        if d.bytes < YARDSTICK_BYTES:
            return None
        return d.bytes / max(d.conn_s, YARDSTICK_CONN_S)

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
                _multicall(self.client, [("aria2.removeDownloadResult", [g]) for g in gids])

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
        """aria2 has every byte: hash what is left (in the background) and hand it over."""
        state.result.ok = True
        h = state.hashing
        if h is None or not h.valid:
            self._completed(state)
            return
        state.done = True  # the loop lets go of it; the hash pool finishes it
        self.finishing.append(self.hash_pool.submit(self._hash_rest, state, h))

    def _hash_rest(self, state: _Active, h: _Hashing) -> None:
        try:
            h.advance(state.job.dest, state.job.size)
            state.result.digests = h.digests()
        finally:
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
        yardsticks of :meth:`_behind`).

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
                self.delivered.setdefault(m, _Delivered()).add(now, nbytes, conn_s)
        return split

    def _watch(
        self,
        state: _Active,
        servers: Mapping[str, tuple[int, float]],
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
        self._swap_resolved(state)
        if len(state.sources) < 2:
            return
        # aria2 averages a connection's speed over many seconds, so one that stalls after a
        # burst still looks fast for a long while (and aria2's own timeout did not close it
        # either, in tests): no byte at all for stall_timeout_s while connections are open
        # means every mirror they are on is stalled. Drop those when another mirror is left.
        stalled = now - state.progress_at
        connected = [s for s in state.sources if servers.get(s.src.mirror, (0, 0.0))[0]]
        stall_s = min(opts.stall_timeout_s, max(STALL_HEDGE_MIN_S, self._hedge_s()))
        if stalled >= stall_s and not connected and state.connections:
            # Connections that have had no answer yet are not among aria2's servers (the
            # first request of a download, sent to one URI to learn the size, is such a one
            # while its mirror does not answer): the URIs aria2 marks used are theirs.
            connected = self._used(state)
        if stalled >= stall_s and connected and len(connected) < len(state.sources):
            for s in connected:
                self._remove_uris(state, s, f"stalled: no bytes for {stalled:.1f} s", pause=True)
            state.progress_at = now
            return
        if self._behind(state, servers, now):
            state.progress_at = now
            return
        if self._endgame(state, servers, completed, now):
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
                state.rerolve[s.src.mirror] = self._submit(
                    s.src.mirror, functools.partial(self._recheck, s)
                )

    def _used(self, state: _Active) -> list[_Source]:
        """The download's sources whose URIs aria2 lists as used."""
        if state.gid is None:
            return []
        try:
            status = self.client.tell_status(state.gid, ["files"])
        except _RPC_ERRORS:
            return []
        used = {
            str(u.get("uri"))
            for f in status.get("files") or []
            for u in f.get("uris") or []
            if u.get("status") == "used"
        }
        return [s for s in state.sources if s.resolved.url in used]

    def _behind(self, state: _Active, servers: Mapping[str, tuple[int, float]], now: float) -> bool:
        """Take out of the download the mirrors whose connections have been far behind
        another mirror's for the hedge budget; True when some were.

        aria2c never re-splits a running segment, and checks its own ``lowest-speed-limit``
        only on connections older than 10 s: a mirror that is slow (not below that floor),
        trickling, stalled after a burst, or that has sent no byte yet keeps the segments
        it took while the others finish theirs and wait. So a mirror whose rate per
        connection on this download stays under 1/``BEHIND_RATIO`` of another mirror's
        (:meth:`_yardstick`, over all that one's downloads) at every look for
        the hedge budget (:meth:`_hedge_s`) loses its URIs for this download; aria2 then
        hands its unfinished segments, minus what is on disk, to the others. A look without
        such a yardstick starts the clock again. The best mirror is never behind, so the
        last one is never dropped this way."""
        refs: dict[str, float] = {}
        for s in state.sources:
            rate = self._yardstick(s.src.mirror, now)
            if rate is not None:
                refs[s.src.mirror] = rate
        for s in state.sources:
            conns, speed = servers.get(s.src.mirror, (0, 0.0))
            others = [v for m, v in refs.items() if m != s.src.mirror]
            best = max(others, default=0.0)
            if conns and best >= MIN_REFERENCE_BPS and speed / conns < best / BEHIND_RATIO:
                s.behind_since = s.behind_since or now
            else:
                s.behind_since = None
        hedge = self._hedge_s()
        late = [
            s for s in state.sources if s.behind_since is not None and now - s.behind_since >= hedge
        ]
        if not late or len(late) >= len(state.sources):
            return False
        for s in late:
            conns, speed = servers.get(s.src.mirror, (0, 0.0))
            best_m = max((m for m in refs if m != s.src.mirror), key=lambda m: refs[m], default="?")
            best = refs.get(best_m, 0.0)
            seconds = now - (s.behind_since or now)
            behind = f"while {best_m} sends {best / 1024:.0f} KiB/s per connection"
            if speed <= 0:
                why = f"stalled: no bytes for {seconds:.1f} s on {conns} connection(s), {behind}"
            else:
                # aria2's speed is an average over seconds: a connection that stalled after a
                # burst looks slow, not stalled, so the reason says both.
                why = (
                    f"too slow or stalled: {speed / conns / 1024:.0f} KiB/s per connection "
                    f"for {seconds:.1f} s, {behind} (over {BEHIND_RATIO} times more)"
                )
            self._remove_uris(state, s, why, pause=True)
        return True

    def _endgame(
        self,
        state: _Active,
        servers: Mapping[str, tuple[int, float]],
        completed: int,
        now: float,
    ) -> bool:
        """The end of a download held by a slower mirror: take it out; True when it was.

        aria2 hands out a download's segments (``min-split-size``, 1 MiB) as connections ask,
        so each mirror fetches in proportion to its speed until none is left; then the
        mirrors done with theirs sit idle on it while a slower one finishes the segments it
        took (aria2 never re-splits a running one): at 1 MB/s per connection, a second or
        more per download, and the pull's last download ends that much later (bench S10).
        When every connection still open on a download is on one mirror, another mirror of
        the download is idle on it after bringing some of its bytes, and that one alone
        would fetch what is left (at its rate per connection, :meth:`_yardstick`, on the
        download's connections) sooner than the holder at its current speed, by more than
        ``ENDGAME_RESTART_S`` twice over, while the download grows (a holder that brought
        nothing since the last look is stalled: :meth:`_watch`'s rules take it out, with
        a reason), the holder's URIs are taken out of this download
        (not a failure: the mirror keeps its other downloads and no warning is given, unless
        it is over ``BEHIND_RATIO`` times slower: a fault, reported); aria2 gives its
        unfinished segments, minus what is on disk, to the others."""
        for s in state.sources:  # when each mirror last brought bytes to this download
            n = state.result.bytes_by_mirror.get(s.src.mirror, 0)
            if n != s.seen_bytes or not s.last_byte_at:
                s.seen_bytes, s.last_byte_at = n, now
        left = state.job.size - completed
        if state.job.size <= SMALL_FILE or left <= 0 or len(state.sources) < 2:
            return False
        if state.progress_at < now:
            return False  # no byte since the last look: a stall, for the rules that report it
        holding = [s for s in state.sources if servers.get(s.src.mirror, (0, 0.0))[0]]
        if len(holding) != 1:
            return False
        holder = holding[0]
        conns, speed = servers[holder.src.mirror]
        by_mirror = state.result.bytes_by_mirror
        rates = [
            rate
            for s in state.sources
            if s is not holder
            and by_mirror.get(s.src.mirror, 0) > 0
            and (rate := self._yardstick(s.src.mirror, now)) is not None
        ]
        best = max(rates, default=0.0)
        if best < MIN_REFERENCE_BPS or speed / conns >= best:
            return False
        # aria2's speed is an average over seconds (it lags a connection that slows down):
        # the holder's own rate per connection over its recent bytes, if lower, counts.
        own = self._yardstick(holder.src.mirror, now)
        rate = min(speed, conns * own) if own is not None else speed
        others = best * min(max(1, state.per_server), _need(left))
        keep = left / rate if rate > 0 else math.inf
        if keep <= left / others + 2 * ENDGAME_RESTART_S:
            return False
        # Far behind (the 1/BEHIND_RATIO rule of _behind, before its hedge budget ran out):
        # a fault worth a reason. Merely slower: no failure of the mirror.
        per_conn = rate / conns
        why = (
            f"too slow or stalled: {per_conn / 1024:.0f} KiB/s per connection at the end of "
            f"the download, while another mirror sends {best / 1024:.0f} KiB/s per connection"
        )
        stalled = now - holder.last_byte_at >= STALLED_HOLDER_S
        if stalled:
            why = (
                f"stalled: no bytes at the end of the download, while another mirror sends "
                f"{best / 1024:.0f} KiB/s per connection"
            )
        far = stalled or per_conn < best / BEHIND_RATIO
        self._remove_uris(state, holder, why, pause=True, report=far)
        return True

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
                _multicall(self.client, [("aria2.forceRemove", [g]) for g in gids])
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


class _Notifications:
    """aria2c's JSON-RPC notifications over WebSocket (``aria2.onDownloadComplete`` and the
    like), each of which sets ``wake``. They carry only a download's gid; connecting needs no
    secret. Without them (a refused connection) the loop polls as before."""

    def __init__(self, port: int, wake: threading.Event) -> None:
        self.wake = wake
        self.ws: websocket.WebSocket | None = None
        try:
            self.ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}/jsonrpc",
                timeout=RPC_TIMEOUT_S,
                http_no_proxy=["127.0.0.1"],
                enable_multithread=True,
            )
        except (OSError, websocket.WebSocketException):
            return
        self.ws.settimeout(None)
        threading.Thread(target=self._listen, name="modelget-aria2-events", daemon=True).start()

    def _listen(self) -> None:
        ws = self.ws
        while ws is not None:
            try:
                message = ws.recv()
            except (OSError, websocket.WebSocketException):
                return
            if not message:
                return
            self.wake.set()

    def stop(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                ws.shutdown()  # type: ignore[no-untyped-call]


def _need(left: int) -> int:
    """Connections a download with ``left`` bytes to go can still use (aria2 cuts no segment
    below ``min-split-size``)."""
    return max(1, -(-left // MIN_SPLIT))


def _leading_pieces(bitfield: str) -> int:
    """How many pieces from the first one on are finished, from ``tellStatus``'s ``bitfield``
    (hex, the first piece in the high bit of the first digit)."""
    n = 0
    for ch in bitfield:
        if ch in "fF":
            n += 4
            continue
        v = int(ch, 16)
        for bit in (8, 4, 2, 1):
            if not v & bit:
                return n
            n += 1
        return n
    return n


def _multicall(client: _Client, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    """``system.multicall``: one round trip for many calls. Each answer is the call's result,
    or an ``aria2p.ClientException`` for a call aria2c refused."""
    answers: Any = client.multicall2(list(calls))
    out: list[Any] = []
    for answer in answers:
        if isinstance(answer, list) and answer:
            out.append(answer[0])
        elif isinstance(answer, dict):
            out.append(
                aria2p.ClientException(
                    int(answer.get("code", 1) or 1), str(answer.get("message", ""))
                )
            )
        else:
            out.append(answer)
    return out


class _Hashing:
    """One download's digests, computed from its finished pieces as they arrive.

    Only pieces aria2 marks finished in its bitfield are read (from the file, with ``pread``:
    from the page cache), and only the contiguous run from the start (sha256 is computed in
    order). aria2 never writes a finished piece again within a download's life (``continue``
    and ``always-resume`` are on, ``allow-overwrite`` is off: it aborts rather than start
    over; a ``changeOption`` restart reloads the bitfield). When that cannot be taken for
    granted (a piece turned unfinished, the download paused for a URI swap, re-added after an
    error, resumed from an earlier run) the hash is given up: :meth:`doubt`, and the executor
    hashes the finished file instead."""

    def __init__(self, hasher: PrefixHasher) -> None:
        self.hasher = hasher
        self.lock = threading.Lock()
        self.valid = True
        self.pieces = 0
        self.future: Future[None] | None = None

    @classmethod
    def for_job(cls, job: FetchJob) -> _Hashing | None:
        if not job.sha256 and not job.git_sha1:
            return None
        return cls(
            PrefixHasher(
                job.size, sha256=bool(job.sha256), git_sha1=not job.sha256 and bool(job.git_sha1)
            )
        )

    def doubt(self) -> None:
        self.valid = False

    def advance(self, path: Path, upto: int) -> None:
        with self.lock:
            if not self.valid:
                return
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    self.hasher.advance(fd, upto)
                finally:
                    os.close(fd)
            except OSError:
                self.valid = False

    def digests(self) -> Digests | None:
        with self.lock:
            if not self.valid or not self.hasher.done:
                return None
            return self.hasher.digests()


class _Budget:
    """The pull-wide connection targets, one per mirror (``scheduler.Adaptive``: grown while
    the mirror's rate still rises, up to ``max_connections``), and what was chosen."""

    def __init__(self, options: EngineOptions, reporter: Reporter, peaks: dict[str, int]) -> None:
        self.ceiling = max(1, options.max_connections)
        self.reporter = reporter
        self.adapt: dict[str, Adaptive] = {}
        self.peaks = peaks
        self.reported: dict[str, int] = {}

    def _adaptive(self, mirror: str, cap: int | None) -> Adaptive:
        a = self.adapt.get(mirror)
        if a is None:
            ceiling = max(1, min(self.ceiling, cap) if cap else self.ceiling)
            # No quadrupled first step here: aria2 meets a target above 16 only by starting
            # more files or restarting a download with more connections (changeOption), and a
            # jump from 16 to 64 did that too early (bench S9: 3.6 s → 4.7 s).
            policy = Policy(
                ceiling=ceiling, initial=min(PER_HOST_MAX, ceiling), slow_connection_bps=0
            )
            a = Adaptive(ceiling, policy)
            self.adapt[mirror] = a
        return a

    def target(self, mirror: str, state: _Active) -> int:
        caps = [
            s.src.max_connections
            for s in (state.pending or state.sources)
            if s.src.mirror == mirror
        ]
        return self._adaptive(mirror, caps[0] if caps else None).target

    def targets(self) -> dict[str, int]:
        return {m: a.target for m, a in self.adapt.items()}

    def tick(
        self,
        now: float,
        results: Sequence[FetchResult],
        big: Sequence[_Active],
        waiting: Sequence[_Active],
    ) -> None:
        for s in [*big, *waiting]:
            for x in s.pending or s.sources:
                self._adaptive(x.src.mirror, x.src.max_connections)
        totals: dict[str, int] = {}
        for r in results:
            for m, n in r.bytes_by_mirror.items():
                totals[m] = totals.get(m, 0) + n
        for m, a in self.adapt.items():
            using = sum(s.per_server for s in big if m in s.mirrors())
            more = any(m in s.mirrors() for s in waiting if s.job.size > SMALL_FILE) or any(
                m in s.mirrors()
                and s.job.size - s.last_completed > a.target * GROW_BYTES_PER_CONNECTION
                for s in big
            )
            a.tick(now, totals.get(m, 0), busy=using >= a.target, more_work=more)

    def report(self, states: Sequence[_Active]) -> None:
        """Tell the reporter when the connections chosen per mirror change; keep the peaks."""
        chosen: dict[str, int] = {}
        for s in states:
            if s.gid is None:
                continue
            n = (
                min(s.per_server, _need(s.job.size - s.last_completed))
                if s.job.size > SMALL_FILE
                else min(1, s.connections)
            )
            for m in s.mirrors():
                chosen[m] = chosen.get(m, 0) + n
        for m, n in chosen.items():
            if n > self.peaks.get(m, 0):
                self.peaks[m] = n
        now = {m: n for m, n in chosen.items() if n}
        if now and now != self.reported:
            self.reported = now
            report_connections(self.reporter, now)


def _group_sources(
    ok: Sequence[tuple[SourceURL, ResolvedURL]], state: _Active
) -> tuple[list[_Source], list[list[_Source]]]:
    """The URIs of the aria2 download (sources that need no header where their bytes are),
    and the sources held back because they do (aria2c never gets a header: it would send it
    to every URI of the download and on across redirects). With no URI for aria2, the job
    is handed back (:meth:`_Run._hand_back`); otherwise the held-back sources are used only
    if the download fails."""
    free = [_Source(s, r, False) for s, r in ok if not (s.headers and r.same_origin)]
    needy = [_Source(s, r, True) for s, r in ok if s.headers and r.same_origin]
    if needy and free:
        for g in needy:
            state.result.attempts.append(
                f"{g.src.mirror}: skipped, its token cannot go to aria2c; the other mirrors serve it"
            )
    return free, [needy] if needy else []


def _merge(first: FetchResult, second: FetchResult) -> FetchResult:
    """One file's result over two runs (the first ended when aria2c died)."""
    for mirror, n in first.bytes_by_mirror.items():
        second.bytes_by_mirror[mirror] = second.bytes_by_mirror.get(mirror, 0) + n
    second.attempts = [*first.attempts, f"aria2: {first.error}", *second.attempts]
    second.resumed_bytes = first.resumed_bytes
    second.seconds += first.seconds
    return second


def _local_failure(code: str, message: str) -> FailureCode:
    """aria2's local error as a failure code (the boundary where its prose becomes data): a
    full disk is code 9, or a write that failed with ENOSPC (an I/O error, code 17/18)."""
    full = code == _DISK_FULL or "No space left" in message or f"errno={errno.ENOSPC}" in message
    return "disk-full" if full else "local-io"


def _uri_count(status: Mapping[str, Any], uri: str) -> int:
    """How often ``uri`` is in a download's URI list (aria2 lists a URI once per use)."""
    files = status.get("files") or []
    return sum(1 for f in files for u in (f.get("uris") or []) if str(u.get("uri")) == uri)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


__all__ = ["Aria2Engine", "aria2_version", "redact_url", "remove_stale_dirs"]
