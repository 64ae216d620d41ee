"""The engine: :class:`Aria2Engine` owns one private aria2c (started in the background,
started again if it dies under a pull, at most ``MAX_RESTARTS`` times) and hands each
``run()`` to a :class:`~modelget.engines.aria2.run._Run`."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aria2p

from modelget.engines import (
    EngineOptions,
    FetchJob,
    FetchResult,
    OnComplete,
    aria2c_missing,
    aria2c_path,
)
from modelget.engines.aria2.process import (
    _RPC_ERRORS,
    READY_TIMEOUT_S,
    TMP_PREFIX,
    _command_line,
    _free_port,
    _log_tail,
    _shutdown,
    _write_pids,
    remove_stale_dirs,
)
from modelget.engines.aria2.proxy import proxy_conf, proxy_problem
from modelget.engines.aria2.rpc import Aria2RPC
from modelget.engines.aria2.run import _Run
from modelget.errors import EngineUnavailableError
from modelget.events import Reporter
from modelget.settings import child_env

MAX_RESTARTS = 2
"""aria2c processes started again after one died under a pull (in the engine's life)."""


class Aria2Engine:
    """Transfers with a private aria2c. Thread-safe ``close``; ``run`` one call at a time."""

    name = "aria2"

    def __init__(self, options: EngineOptions) -> None:
        exe = aria2c_path()
        if exe is None:
            raise aria2c_missing()
        problem = proxy_problem()
        if problem is not None:
            raise EngineUnavailableError(
                f"{problem}: it speaks to http:// proxies only",
                hint="use --engine httpx, or point the proxy variables at an http:// proxy",
            )
        self.options = options
        self._exe = exe
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        # Owner-only (mkdtemp's 0700; its files 0600): the conf holds the RPC secret, and the
        # proxies with their credentials (never on the command line: /proc/PID/cmdline).
        self._tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        _write_pids(self._tmpdir, None)
        self._secret = secrets.token_urlsafe(32)
        self._log_path = self._tmpdir / "aria2c.log"
        conf = self._tmpdir / "aria2.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"rpc-secret={self._secret}\n")
            fh.writelines(f"{name}={value}\n" for name, value in proxy_conf())
        self._conf = conf
        self._proc: subprocess.Popen[bytes] | None = None
        self._restarts = 0
        self._client: Aria2RPC | None = None
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
        """aria2p's API on the running aria2c (started if need be), to inspect it; the engine
        itself speaks JSON-RPC with :mod:`.rpc` (aria2p's import costs 0.12 s per pull)."""
        import aria2p

        self._ready()
        assert self._client is not None
        rpc = self._client

        class _Through(aria2p.Client):
            # Through our client: never a proxy from the environment (requests, aria2p's HTTP
            # library, would honour HTTP_PROXY and send the secret there).
            def post(self, payload: str) -> dict[str, Any]:
                return rpc.post_raw(payload)

        return aria2p.API(_Through(host="http://127.0.0.1", port=rpc.port, secret=self._secret))

    # --- process ------------------------------------------------------------------------------

    def _start(self, exe: str) -> None:
        last_error = "aria2c did not start"
        for _ in range(3):  # the free port can be taken between our probe and aria2c's bind
            port = _free_port()
            if self._log is not None:
                self._log.close()
            fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._log = os.fdopen(fd, "ab")
            proc = subprocess.Popen(
                _command_line(exe, self._conf, port, self.options),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=self._tmpdir,
                env=child_env(),  # no token variable reaches aria2c, not even its environment
            )
            client = Aria2RPC(port, self._secret)
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
                    last_error = (
                        f"aria2c exited with code {proc.returncode}: {_log_tail(self._log_path)}"
                    )
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
            results = self._new_run(jobs, reporter, cancel, on_complete).go()
            while not cancel.is_set():
                died = [i for i, r in enumerate(results) if r.failure == "engine-died"]
                if died and self._proc is not None and self._proc.poll() is None:
                    break  # RPC errors while aria2c lives: nothing a restart would fix
                if not died or not self._restart(reporter, results[died[0]].error, len(died)):
                    break
                # Each unfinished file resumes from its control file (saved every second).
                again = self._new_run([jobs[i] for i in died], reporter, cancel, on_complete).go()
                for i, result in zip(died, again, strict=True):
                    results[i] = _merge(results[i], result)
            return results

    def _new_run(
        self,
        jobs: Sequence[FetchJob],
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None,
    ) -> _Run:
        assert self._client is not None and self._proc is not None
        return _Run(
            self._client,
            self._proc,
            self.options,
            self.connections,
            jobs,
            reporter,
            cancel,
            on_complete,
        )

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


def _merge(first: FetchResult, second: FetchResult) -> FetchResult:
    """One file's result over two runs (the first ended when aria2c died)."""
    for mirror, n in first.bytes_by_mirror.items():
        second.bytes_by_mirror[mirror] = second.bytes_by_mirror.get(mirror, 0) + n
    second.attempts = [*first.attempts, f"aria2: {first.error}", *second.attempts]
    second.resumed_bytes = first.resumed_bytes
    second.seconds += first.seconds
    return second
