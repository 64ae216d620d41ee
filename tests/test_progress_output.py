"""Progress that tells the truth (issue 17 §5): the largest files get the bars, resumed bytes
move bars but never rates, each mirror's rate is shown, output without a terminal is lines and
heartbeats (no carriage returns), a wait on another process's lock is said, and
HF_HUB_DISABLE_PROGRESS_BARS turns the bars off (§4).

Pure logic is driven with fake events and a fake clock; the rest are real pulls from the hub
simulator (in this process, or the real command as a child process)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import queue
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from modelget import api
from modelget.cli import progress
from modelget.cli.progress import (
    BarSlots,
    JsonLinesReporter,
    TextReporter,
    TqdmReporter,
    Transfer,
    fmt_eta,
    reporter_for,
)
from modelget.engines import EngineOptions
from modelget.events import NullReporter, lock_wait_text, report_lock_wait
from modelget.testing.faults import Fault
from modelget.testing.hubsim import HubSimulator

REPO = "acme/progress"
WEIGHTS = "model.safetensors"
FAST = EngineOptions(
    stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3, min_split_bytes=1024 * 1024
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- pure: which files get bars, what a rate counts ------------------------------------------


def test_the_largest_file_gets_a_bar_even_when_many_small_files_start_first() -> None:
    slots = BarSlots(3)
    for i in range(6):
        slots.start(f"small{i}.json", 100 + i)
    changes = slots.start(WEIGHTS, 90_000_000)
    assert changes == [("small0.json", None), (WEIGHTS, 1)]  # the smallest gives its slot up
    assert slots.start("tiny.txt", 10) == []  # smaller than every file with a bar
    # A finished file's slot goes to the largest file without one.
    assert slots.done("small1.json") == [("small1.json", None), ("small5.json", 2)]
    assert slots.done("tiny.txt") == []
    assert set(slots.slot) == {WEIGHTS, "small5.json", "small2.json"}


def test_the_tqdm_reporter_draws_the_big_file_that_started_after_the_small_ones() -> None:
    out = io.StringIO()
    rep = TqdmReporter(out, refresh_s=3600)
    rep.on_plan("org/m", "c" * 40, 9, 90_001_000, 90_001_000)
    for i in range(8):
        rep.on_file_start(f"small{i}.json", 125, ("hub",))
    rep.on_file_start(WEIGHTS, 90_000_000, ("hub",))
    rep.on_bytes(WEIGHTS, 1_000_000, "hub")
    rep.on_file_done("small0.json", 125, 0.1, False)
    rep.close()
    assert WEIGHTS in rep.barred and f"{WEIGHTS}:" in out.getvalue()
    assert "small7.json" not in rep.barred  # started when all six slots were taken


def test_resumed_bytes_move_the_position_but_not_the_rate() -> None:
    def after(resumed: int) -> tuple[str, str, int]:
        clock = Clock()
        text, bars = io.StringIO(), io.StringIO()
        line = TextReporter(text, heartbeat_s=3600, clock=clock)
        tty = TqdmReporter(bars, refresh_s=3600, clock=clock)
        for rep in (line, tty):
            rep.on_plan("org/m", "c" * 40, 1, 100_000_000, 100_000_000)
            rep.on_file_start(WEIGHTS, 100_000_000, ("hub",))
            if resumed:
                rep.on_file_resumed(WEIGHTS, resumed)
        for _ in range(20):  # 1 MB every 0.1 s: 10 MB/s
            line.on_bytes(WEIGHTS, 1_000_000, "hub")
            tty.on_bytes(WEIGHTS, 1_000_000, "hub")
            clock.t += 0.1
        line.heartbeat()
        status = tty.status()
        tty.close()
        line.close()
        return text.getvalue().splitlines()[-1], status, line._transfer.done

    fresh_line, fresh_bar, fresh_done = after(0)
    resumed_line, resumed_bar, resumed_done = after(60_000_000)
    assert resumed_done == fresh_done + 60_000_000  # the bar moved by what was on disk
    assert "hub 10.0 MB/s" in fresh_bar and "hub 10.0 MB/s" in resumed_bar
    assert "hub 10.0 MB/s" in fresh_line and "hub 10.0 MB/s" in resumed_line
    # Less left at the same rate: a shorter ETA, never a faster rate.
    assert "ETA 0:08" in fresh_bar and "ETA 0:02" in resumed_bar


def test_per_mirror_rates_and_eta() -> None:
    clock = Clock()
    t = Transfer(clock)
    t.total = 12_000_000
    t.start("a")
    for _ in range(10):
        t.moved("a", 300_000, "hub")
        t.moved("a", 100_000, "mirror-b")
        clock.t += 0.1
    assert t.speed() == "4.0 MB/s, ETA 0:02 · hub 3.0 MB/s · mirror-b 1.0 MB/s"
    assert t.status().startswith("4.0 MB of 12.0 MB (33%), 4.0 MB/s")
    clock.t += 60  # nothing moved for a minute: the rate falls to nothing
    assert t.speed() == "0.0 MB/s, ETA ?"
    assert fmt_eta(3600 * 10, 1.0) == "ETA 10:00:00" and fmt_eta(0, 0) == "ETA 0:00"


def test_the_heartbeat_says_when_a_file_waits_for_another_process() -> None:
    out = io.StringIO()
    rep = TextReporter(out, heartbeat_s=3600)
    rep.on_plan("org/m", "c" * 40, 1, 10, 10)
    rep.on_lock_wait("a.bin", "/cache/.locks/a.lock")
    rep.heartbeat()
    rep.on_file_done("a.bin", 10, 0.0, True)
    rep.heartbeat()
    rep.close()
    lines = out.getvalue().splitlines()
    assert lines[1] == lock_wait_text("a.bin", "/cache/.locks/a.lock")
    assert "another process" in lines[1] and "/cache/.locks/a.lock" in lines[1]
    assert lines[2].endswith("waiting for another process (1 file)")
    assert "waiting" not in lines[4]


def test_lock_wait_reaches_every_kind_of_reporter() -> None:
    out = io.StringIO()
    JsonLinesReporter(out).on_lock_wait("a.bin", "/l/a.lock")
    event = json.loads(out.getvalue())
    assert (event["event"], event["path"], event["lock"]) == ("lock_wait", "a.bin", "/l/a.lock")

    class Notes(NullReporter):  # overrides on_message only: still hears of the wait
        def __init__(self) -> None:
            self.texts: list[str] = []

        def on_message(self, level: str, text: str) -> None:
            self.texts.append(text)

    class Old:  # a reporter written before the event
        def __init__(self) -> None:
            self.texts: list[str] = []

        def on_message(self, level: str, text: str) -> None:
            self.texts.append(text)

    notes, old = Notes(), Old()
    report_lock_wait(notes, "a.bin", "/l/a.lock")
    report_lock_wait(old, "a.bin", "/l/a.lock")  # type: ignore[arg-type]
    assert notes.texts == old.texts == [lock_wait_text("a.bin", "/l/a.lock")]


@pytest.mark.parametrize(
    ("value", "bars"), [(None, True), ("1", False), ("true", False), ("0", True), ("", True)]
)
def test_hf_hub_disable_progress_bars_is_honoured(
    value: str | None, bars: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    if value is None:
        monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", value)
    rep = reporter_for(json=False, quiet=False, verbose=False)
    assert isinstance(rep, TqdmReporter if bars else TextReporter)


# --- real pulls -------------------------------------------------------------------------------


def _repo(tmp_path: Path, size: int) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / WEIGHTS).write_bytes(os.urandom(size))
    for i in range(8):
        (repo / f"small{i}.json").write_text(json.dumps({"i": i}) + "\n")
    return repo


def _catalogue(path: Path, *sims: HubSimulator) -> Path:
    body = "version: 1\nmirrors:\n"
    for sim in sims:
        body += f"  - name: {sim.name}\n    kind: hf\n    endpoint: {sim.url}\n"
    path.write_text(body)
    return path


def _sim(sims: list[HubSimulator], repo: Path, name: str, **kw: object) -> HubSimulator:
    sim = HubSimulator(name=name, **kw).start()  # type: ignore[arg-type]
    sims.append(sim)
    sim.add_repo(REPO, repo)
    return sim


def test_a_real_pull_without_a_terminal_prints_heartbeats_with_each_mirror_s_rate(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    repo = _repo(tmp_path, 8 * 1024 * 1024)
    hub = _sim(sims, repo, "hub")
    mirror = _sim(sims, repo, "mirror", host_name="localhost")
    for sim in (hub, mirror):  # slow enough to last a few heartbeats (0.1 s apart)
        sim.add_fault(Fault(route="hf-resolve", path_glob=WEIGHTS, rate_bps=2e6))
    cat = _catalogue(tmp_path / "m.yaml", hub, mirror)
    out = io.StringIO()
    rep = TextReporter(out, heartbeat_s=0.1)
    try:
        result = api.pull(
            REPO, mirrors=cat, cache_dir=tmp_path / "c", engine="httpx", options=FAST, reporter=rep
        )
    finally:
        rep.close()
    assert result.status == "ok", result.failed
    assert set(result.bytes_by_mirror) == {"hub", "mirror"}
    text = out.getvalue()
    assert "\r" not in text
    beats = [line for line in text.splitlines() if line.startswith("progress: ")]
    assert beats, text
    assert any("hub " in b and "mirror " in b and "MB/s" in b for b in beats), beats
    assert f"{WEIGHTS}: done" in text


def test_a_real_pull_on_a_terminal_draws_the_big_file_s_bar_and_mirror_rates(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    repo = _repo(tmp_path, 4 * 1024 * 1024)
    hub = _sim(sims, repo, "hub")
    mirror = _sim(sims, repo, "mirror", host_name="localhost")
    for sim in (hub, mirror):
        sim.add_fault(Fault(route="hf-resolve", path_glob=WEIGHTS, rate_bps=2e6))
    cat = _catalogue(tmp_path / "m.yaml", hub, mirror)
    out = io.StringIO()
    rep = TqdmReporter(out, max_file_bars=2, refresh_s=0.1)
    try:
        result = api.pull(
            REPO, mirrors=cat, cache_dir=tmp_path / "c", engine="httpx", options=FAST, reporter=rep
        )
    finally:
        rep.close()
    assert result.status == "ok", result.failed
    assert WEIGHTS in rep.barred, rep.barred
    text = out.getvalue()
    assert "hub " in text and "mirror " in text and "MB/s" in text


def _tty_pull(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal; its exit code and what stderr showed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # not 0 columns
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_hf_hub_disable_progress_bars_gives_no_bars_on_a_terminal(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    assert pty  # the real command with stderr on a terminal
    repo = _repo(tmp_path, 2 * 1024 * 1024)
    hub = _sim(sims, repo, "hub")
    cat = _catalogue(tmp_path / "m.yaml", hub)
    env = {**os.environ, "MODELGET_CACHE_DIR": str(tmp_path / "mg")}
    base = [sys.executable, "-m", "modelget", "pull", REPO, "--mirrors", str(cat)]
    base += ["--engine", "httpx"]
    code, drawn = _tty_pull([*base, "--cache-dir", str(tmp_path / "c1")], env)
    assert code == 0, drawn
    assert "\r" in drawn and "%|" in drawn  # bars
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    code, plain = _tty_pull([*base, "--cache-dir", str(tmp_path / "c2")], env)
    assert code == 0, plain
    assert "%|" not in plain and "pulling acme/progress" in plain
    assert f"{WEIGHTS}: done" in plain


def test_a_pull_waiting_on_another_pull_s_lock_says_so_in_json(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    from filelock import FileLock

    from modelget import layout
    from modelget.datatypes import FileEntry

    repo = _repo(tmp_path, 1024 * 1024)
    hub = _sim(sims, repo, "hub")
    cat = _catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "c"
    plan = api.plan(REPO, mirrors=cat, cache_dir=cache)
    entry: FileEntry = next(i.entry for i in plan.items if i.entry.path == WEIGHTS)
    lock = layout.lock_path(cache, REPO, entry)
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock)
    held.acquire()  # "another process" is fetching the weights
    out = io.StringIO()
    rep = JsonLinesReporter(out)
    done: list[object] = []
    pull = threading.Thread(
        target=lambda: done.append(
            api.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx", reporter=rep)
        )
    )
    pull.start()
    deadline = time.monotonic() + 60
    while '"lock_wait"' not in out.getvalue():
        assert time.monotonic() < deadline and pull.is_alive(), out.getvalue()
        time.sleep(0.05)
    held.release()
    pull.join(60)
    assert done and done[0].status == "ok"  # type: ignore[attr-defined]
    waits = [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == "lock_wait"]
    assert waits == [{"event": "lock_wait", "time": waits[0]["time"], "path": WEIGHTS,
                      "lock": str(lock)}]  # fmt: skip


def _lines(stream: IO[str] | None) -> Iterator[str]:
    assert stream is not None
    yield from stream


def _pump(stream: IO[str] | None, into: queue.Queue[str]) -> None:
    for line in _lines(stream):
        into.put(line)


def test_a_second_process_says_it_waits_for_the_first_s_lock(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    """Two real pulls of one model: the first (slowed) holds the weights' lock; the second
    says, on stderr without a terminal, that it waits for another process, then finishes the
    file itself once the first is stopped."""
    repo = _repo(tmp_path, 16 * 1024 * 1024)
    hub = _sim(sims, repo, "hub")
    hub.add_fault(Fault(route="hf-resolve", path_glob=WEIGHTS, rate_bps=1e6))
    cat = _catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "c"
    env = {**os.environ, "MODELGET_CACHE_DIR": str(tmp_path / "mg")}
    cmd = [sys.executable, "-m", "modelget", "pull", REPO, "--mirrors", str(cat)]
    cmd += ["--cache-dir", str(cache), "--engine", "httpx", "--connections", "2"]
    first = subprocess.Popen(
        [*cmd, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    second: subprocess.Popen[str] | None = None
    try:
        for line in _lines(first.stdout):  # the first is transferring the weights
            event = json.loads(line)
            if event.get("event") == "progress" and event.get("path") == WEIGHTS:
                break
        second = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        seen: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(second.stderr, seen), daemon=True)
        reader.start()
        err: list[str] = []
        deadline = time.monotonic() + 60
        while not any("waiting for another process" in x for x in err):
            assert time.monotonic() < deadline, err
            try:
                err.append(seen.get(timeout=1))
            except queue.Empty:
                assert second.poll() is None, err
        first.send_signal(signal.SIGTERM)  # its lock goes; the second takes over
        first.wait(30)
        assert second.wait(120) == 0, err
        reader.join(10)
        while not seen.empty():
            err.append(seen.get())
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for stream in (first.stdout, second.stderr if second is not None else None):
            if stream is not None:
                stream.close()
    waits = [x for x in err if "waiting for another process" in x]
    assert len(waits) == 1 and waits[0].startswith(f"{WEIGHTS}: ") and ".lock)" in waits[0], err
    assert not any("\r" in x for x in err)  # no bar spam without a terminal


def test_the_progress_module_keeps_its_old_names() -> None:
    from modelget import progress as moved

    assert moved.TqdmReporter is progress.TqdmReporter
