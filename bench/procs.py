"""Run a command and measure it: wall time, exit code, peak RSS of every process in its tree.

Peak memory comes from ``VmHWM`` (the kernel's high-water mark of each process's resident
set), read from ``/proc`` every ``POLL_S`` while the command runs, for the process and all of
its descendants (aria2c included: it runs in its own session, but it is still a child). A
process's last reading before it exits is at most ``POLL_S`` old, so growth in its very last
moments can be missed; for the numbers here (a steady-state transfer) that does not matter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

POLL_S = 0.02


@dataclass
class Measured:
    """One run of one command."""

    cmd: list[str]
    rc: int
    wall_s: float
    peak_rss: dict[str, int] = field(default_factory=dict)
    """Peak RSS (bytes) per role: ``"main"`` is the command's own process, others are named
    by their executable (``"aria2c"``); the maximum over processes with that name."""
    stdout: str = ""
    stderr: str = ""
    killed_at_s: float | None = None
    load1: float = 0.0
    """The 1-minute load average when the run started."""


def load_average() -> tuple[float, float, float]:
    try:
        a, b, c = Path("/proc/loadavg").read_text().split()[:3]
        return float(a), float(b), float(c)
    except (OSError, ValueError):
        nan = float("nan")
        return nan, nan, nan


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out += [int(x) for x in text.split()]
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first)."""
    seen: list[int] = []
    todo = _children(pid)
    while todo:
        p = todo.pop(0)
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def _status(pid: int) -> tuple[str, int] | None:
    """(executable name, VmHWM in bytes) of a live process, None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    name, hwm = "", -1
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip() if len(line.split()) > 1 else ""
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return (name, hwm) if hwm >= 0 else None


class _Sampler(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.by_pid: dict[int, tuple[str, int]] = {}

    def sample(self) -> None:
        for pid in [self.root, *descendants(self.root)]:
            st = _status(pid)
            if st is None:
                continue
            name, hwm = st
            old = self.by_pid.get(pid)
            if old is None or hwm > old[1]:
                self.by_pid[pid] = (name, hwm)

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.sample()

    def peaks(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for pid, (name, hwm) in self.by_pid.items():
            role = "main" if pid == self.root else name
            out[role] = max(out.get(role, 0), hwm)
        return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant at once (as a crash or the OOM killer would)."""
    victims = [pid, *descendants(pid)]
    for p in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 900.0,
    kill_after_s: float | None = None,
    kill_when: Callable[[], bool] | None = None,
) -> Measured:
    """Run ``cmd`` to the end (or kill its tree with SIGKILL after ``kill_after_s`` seconds,
    or as soon as ``kill_when()`` is true), measuring it."""
    load1 = load_average()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    sampler = _Sampler(proc.pid)
    sampler.start()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []

    def drain(stream: object, sink: list[bytes]) -> None:
        assert hasattr(stream, "read")
        sink.extend(iter(lambda: stream.read(65536), b""))

    readers = [
        threading.Thread(target=drain, args=(proc.stdout, out_chunks), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True),
    ]
    for r in readers:
        r.start()
    killed_at: float | None = None
    deadline = start + timeout
    try:
        while proc.poll() is None:
            now = time.perf_counter()
            if killed_at is None and (
                (kill_after_s is not None and now - start >= kill_after_s)
                or (kill_when is not None and kill_when())
            ):
                sampler.sample()
                kill_tree(proc.pid)
                killed_at = now - start
            if now > deadline:
                kill_tree(proc.pid)
                proc.wait()
                break
            time.sleep(0.005)
    except BaseException:  # the bench is interrupted: leave nothing running
        kill_tree(proc.pid)
        proc.wait()
        raise
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    for r in readers:
        r.join(5)
    return Measured(
        cmd=list(cmd),
        rc=proc.returncode if proc.returncode is not None else -9,
        wall_s=wall,
        peak_rss=sampler.peaks(),
        stdout=b"".join(out_chunks).decode(errors="replace"),
        stderr=b"".join(err_chunks).decode(errors="replace"),
        killed_at_s=killed_at,
        load1=load1,
    )
