"""The aria2c process and its RPC: the command line, the private directory and its pids file,
the stale directories killed pulls left (:func:`remove_stale_dirs`), the WebSocket
notifications, and the shutdown (the RPC client is :mod:`.rpc`). Knows nothing of downloads."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
from pathlib import Path
from typing import IO

import websocket

from modelget.engines import EngineOptions, aria2c_path
from modelget.engines.aria2.rpc import RPC_TIMEOUT_S, Aria2RPC, RPCError

READY_TIMEOUT_S = 10.0
SHUTDOWN_WAIT_S = 2.0
IDLE_CHECK_TIMEOUT_S = 1.0
TMP_PREFIX = "modelget-aria2-"
"""The private directory's name prefix (in the temporary directory: ``$TMPDIR``)."""
PIDS_FILE = "pids"
"""In the private directory: the owner's and aria2c's process ids, and the owner's pid
namespace (``owner=``, ``aria2c=``, ``pidns=`` lines), so that a later engine can tell a
directory left by a killed pull (its ``aria2.conf`` holds an RPC secret) from a live one."""
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


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running process: not gone, and not a zombie (killed, not yet
    reaped: in a container whose init reaps nothing it stays). The one check of its kind in
    modelget (``modelget.testing.nginx`` and the bench use it too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, unless /proc says a zombie
        pass
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
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
        if fields.get("pidns", "") != ns or pid_alive(owner) or pid_alive(aria2c):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _command_line(exe: str, conf: Path, port: int, o: EngineOptions) -> list[str]:
    """aria2c's command line: RPC on loopback only (its secret is in ``conf``, never here), dying
    with this process, and nothing that would fetch what it was not asked for."""
    cmd = [
        exe,
        f"--conf-path={conf}",
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


def _log_tail(log_path: Path) -> str:
    """The last line aria2c logged, its URLs' queries cut (a signed URL's signature)."""
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return _QUERY.sub("?...", lines[-1]) if lines else ""


def _rpc_error_types() -> tuple[type[BaseException], ...]:
    # RPCError for a refusal or an unreachable aria2c; OSError and ValueError as a guard.
    return (RPCError, OSError, ValueError)


_RPC_ERRORS = _rpc_error_types()


def _idle(client: Aria2RPC | None) -> bool:
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
    client: Aria2RPC | None,
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
