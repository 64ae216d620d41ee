"""A real BitTorrent tracker for the swarm tests: Debian's ``opentracker`` on 127.0.0.1 on a
free port, in whitelist mode (a hash not listed is refused "not authorized"), its list reloaded
with SIGHUP. ``follow(dir)`` lists every torrent that appears in a torrent directory (a cold
model's per-blob publication), as an operator's hook would.

opentracker refuses to run as root: as root it is started with ``-u nobody`` chrooted into its
own directory (readable by nobody). ``opentracker_path()`` is None where it is not installed;
tests skip then."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from modelget.errors import FixtureError

READY_TIMEOUT_S = 10.0


def opentracker_path() -> str | None:
    return shutil.which("opentracker")


def _free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (opentracker listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise FixtureError("no free port for the tracker")


class Tracker:
    """``with Tracker() as t:`` ``t.announce`` is its announce URL; ``t.allow(hashes)``."""

    def __init__(self, root: Path | None = None) -> None:
        exe = opentracker_path()
        if exe is None:
            raise FixtureError("opentracker is not installed (apt-get install opentracker)")
        self.exe = exe
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="modelget-tracker-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.whitelist = self.root / "whitelist.txt"
        self.allowed: set[str] = set()
        self._write_whitelist()
        self.port = _free_port()
        self.announce = f"http://127.0.0.1:{self.port}/announce"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._followers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _write_whitelist(self) -> None:
        tmp = self.whitelist.with_suffix(".tmp")
        tmp.write_text("".join(f"{h}\n" for h in sorted(self.allowed)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.whitelist)

    def start(self) -> Tracker:
        args = [self.exe, "-i", "127.0.0.1", "-p", str(self.port), "-P", str(self.port)]
        args += ["-w", "whitelist.txt"]
        if os.geteuid() == 0:
            args += ["-u", "nobody", "-d", str(self.root)]
        else:
            args += ["-d", str(self.root)]
        self.proc = subprocess.Popen(
            args,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FixtureError(f"opentracker exited at once (code {self.proc.returncode})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise FixtureError("opentracker did not start listening")

    def allow(self, *info_hashes: str) -> None:
        """Add hashes to the whitelist and make opentracker reload it (SIGHUP)."""
        with self._lock:
            new = {h.lower() for h in info_hashes} - self.allowed
            if not new:
                return
            self.allowed |= new
            self._write_whitelist()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGHUP)

    def follow(self, torrent_dir: Path, interval_s: float = 0.1) -> None:
        """List every blob torrent that appears under ``torrent_dir`` (until ``stop``)."""
        from modelget.errors import TorrentError
        from modelget.swarm.torrent import read_torrent

        def watch() -> None:
            seen: set[Path] = set()
            while not self._stop.wait(interval_s):
                for path in torrent_dir.rglob("*.torrent"):
                    if path in seen:
                        continue
                    try:
                        self.allow(read_torrent(path).info_hash)
                    except (OSError, TorrentError):
                        continue
                    seen.add(path)

        thread = threading.Thread(target=watch, name="modelget-tracker-follow", daemon=True)
        thread.start()
        self._followers.append(thread)

    def scrape(self, info_hash: str) -> dict[str, int] | None:
        """The tracker's ``/scrape`` for one hash: ``complete``, ``incomplete``, ..."""
        from modelget.swarm.tracker import scrape

        return scrape(self.announce, info_hash)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._followers:
            thread.join(2)
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
