"""Reporters that the CLI uses: tqdm bars on stderr, or JSON lines on stdout.

They are thread-safe (engines report from worker threads). Only the CLI creates them
(:func:`reporter_for`); the library never draws anything itself.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import IO, Any

from modelget.events import Reporter, lock_wait_text
from modelget.sizes import fmt_bytes, fmt_rate

_URL = re.compile(r"(\s+from)?\s*https?://[^\s;,]+")
_HEX = re.compile(r"\b(?=[0-9]*[a-fA-F])[0-9a-fA-F]{12,}…?")


def short_error(path: str, error: str, width: int = 160, *, digests: bool = False) -> str:
    """A file's error for a summary line: without URLs (the mirror names stay), the file's
    own name, parts said twice, or digests (unless ``digests``: they differ from file to
    file, and a summary groups files by reason); at most ``width`` characters."""
    text = _URL.sub("", error)
    text = text.replace(f"{path}: ", "")
    if not digests:
        text = _HEX.sub("…", text)
    kept: list[str] = []
    for part in (p.strip() for p in text.split(";")):
        if part and not any(k == part or k.endswith(": " + part) for k in kept):
            kept.append(part)
    text = re.sub(r"\s+", " ", "; ".join(kept))
    return text if len(text) <= width else text[: width - 1] + "…"


class _MirrorNotes:
    """Which mirror failures a terminal shows: every one, in full, with ``-v``; else the
    first of each kind per mirror, shortened (a mirror that is down fails every file the
    same way: one line says so, the pull's summary counts the files)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def line(self, path: str, mirror: str, reason: str) -> str | None:
        if self.verbose:
            return f"{path}: mirror {mirror}: {reason}"
        short = short_error(path, reason)
        with self._lock:
            if (mirror, short) in self._seen:
                return None
            self._seen.add((mirror, short))
        return f"{path}: mirror {mirror}: {short}"


class JsonLinesReporter(Reporter):
    """One JSON object per event, one per line (``pull --json``), for scripts and wrappers.

    Byte progress is coalesced to at most ``interval_s`` per file so the stream stays small.
    """

    def __init__(self, stream: IO[str] | None = None, interval_s: float = 0.5) -> None:
        self.stream = stream or sys.stdout
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._size: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def emit(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.stream.write(
                json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n"
            )
            self.stream.flush()

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        self.emit(
            "plan",
            repo_id=repo_id,
            commit=commit,
            files=files,
            fetch_bytes=fetch_bytes,
            total_bytes=total_bytes,
        )

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        with self._lock:
            self._size[path] = size
            self._done.setdefault(path, 0)
        self.emit("file_start", path=path, size=size, mirrors=list(mirrors))

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._done[path] = self._done.get(path, 0) + nbytes
            last = self._last.get(path)
            if last is not None and now - last < self.interval_s:
                return
            self._last[path] = now
            done, size = self._done[path], self._size.get(path, 0)
        self.emit("progress", path=path, bytes=done, size=size)

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        with self._lock:
            self._done[path] = self._done.get(path, 0) + have_bytes
        self.emit("file_resumed", path=path, bytes=have_bytes)

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        self.emit("mirror_failed", path=path, mirror=mirror, reason=reason)

    def on_verify_failed(self, path: str, mirrors: tuple[str, ...], reason: str) -> None:
        self.emit("verify_failed", path=path, mirrors=list(mirrors), reason=reason)

    def on_file_done(self, path: str, size: int, seconds: float, reused: bool) -> None:
        self.emit("file_done", path=path, size=size, seconds=round(seconds, 3), reused=reused)

    def on_message(self, level: str, text: str) -> None:
        self.emit("message", level=level, text=text)

    def on_lock_wait(self, path: str, lock: str) -> None:
        self.emit("lock_wait", path=path, lock=lock)

    def on_connections(self, counts: Mapping[str, int]) -> None:
        self.emit("connections", mirrors=dict(counts))


# --- what a pull has done, and how fast: pure, with an injectable clock ----------------------


class Rates:
    """Bytes per second over the last ``window_s`` seconds, in all and per mirror.

    Only bytes moved in this run are added (``on_bytes``): bytes an earlier run left on disk
    (``on_file_resumed``) advance a bar, never a rate.
    """

    def __init__(
        self,
        window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        bucket_s: float = 0.25,
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.bucket_s = bucket_s
        self._buckets: deque[tuple[int, dict[str | None, int]]] = deque()
        self._first: float | None = None
        self._last: float | None = None
        self.moved: dict[str | None, int] = {}  # every byte of this run, per mirror

    def add(self, nbytes: int, mirror: str | None = None) -> None:
        now = self.clock()
        if self._first is None:
            self._first = now
        self._last = now
        self.moved[mirror] = self.moved.get(mirror, 0) + nbytes
        index = int(now / self.bucket_s)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append((index, {}))
        counts = self._buckets[-1][1]
        counts[mirror] = counts.get(mirror, 0) + nbytes
        self._prune(now)

    def _prune(self, now: float) -> None:
        oldest = int((now - self.window_s) / self.bucket_s)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def now(self) -> tuple[float, dict[str, float]]:
        """The rate over the window (or since the first byte, when that is more recent), in
        all and per named mirror, fastest first."""
        now = self.clock()
        self._prune(now)
        if self._first is None:
            return 0.0, {}
        span = max(self.bucket_s, min(self.window_s, now - self._first))
        per: dict[str | None, int] = {}
        for _, counts in self._buckets:
            for mirror, n in counts.items():
                per[mirror] = per.get(mirror, 0) + n
        return sum(per.values()) / span, _named(per, span)

    def average(self) -> tuple[float, dict[str, float]]:
        """The rate from the first byte of this run to the last, in all and per mirror."""
        if self._first is None or self._last is None:
            return 0.0, {}
        span = max(self.bucket_s, self._last - self._first)
        return sum(self.moved.values()) / span, _named(self.moved, span)


def _named(counts: Mapping[str | None, int], span: float) -> dict[str, float]:
    named = {m: n / span for m, n in counts.items() if m is not None}
    return dict(sorted(named.items(), key=lambda kv: -kv[1]))


def rates_text(total: float, per_mirror: Mapping[str, float]) -> str:
    """``160.0 MB/s · hub 120.0 MB/s · mirror-b 40.0 MB/s``; one mirror: ``hub 12.0 MB/s``."""
    if len(per_mirror) == 1:
        ((mirror, _),) = per_mirror.items()
        return f"{mirror} {fmt_rate(total)}"
    return " · ".join([fmt_rate(total), *(f"{m} {fmt_rate(r)}" for m, r in per_mirror.items())])


def fmt_eta(remaining: int, rate: float) -> str:
    """``ETA 1:05`` (``ETA 2:03:04`` past an hour), ``ETA ?`` while nothing moves."""
    if remaining <= 0:
        return "ETA 0:00"
    if rate <= 0:
        return "ETA ?"
    minutes, seconds = divmod(int(remaining / rate + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else f"ETA {minutes}:{seconds:02d}"


class Transfer:
    """A pull's bytes in place (resumed ones count) against what it has to fetch, per file
    and in all, and its :class:`Rates` (bytes moved in this run only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 5.0) -> None:
        self.clock = clock
        self.total = 0
        self.done = 0
        self.files: dict[str, int] = {}  # the files under way: bytes in place
        self.rates = Rates(window_s, clock)

    def start(self, path: str) -> int:
        """A file's transfer starts (again): its count restarts from zero (what is on disk
        comes back as resumed bytes). Returns the count it had."""
        before = self.files.get(path, 0)
        self.files[path] = 0
        self.done -= before
        return before

    def resumed(self, path: str, nbytes: int) -> None:
        self.files[path] = self.files.get(path, 0) + nbytes
        self.done += nbytes

    def moved(self, path: str, nbytes: int, mirror: str | None) -> None:
        self.resumed(path, nbytes)
        self.rates.add(nbytes, mirror)

    def finished(self, path: str) -> None:
        self.files.pop(path, None)

    def speed(self, *, average: bool = False) -> str:
        """``12.0 MB/s, ETA 0:04 · hub 8.0 MB/s · mirror 4.0 MB/s`` now, or ``average …``
        over the whole run (no ETA)."""
        rate, per_mirror = self.rates.average() if average else self.rates.now()
        text = rates_text(rate, per_mirror)
        if average:
            return f"average {text}"
        first, sep, rest = text.partition(" · ")
        return f"{first}, {fmt_eta(self.total - self.done, rate)}{sep}{rest}"

    def status(self) -> str:
        """``45.1 MB of 90.9 MB (49%), `` and :meth:`speed`."""
        share = f" ({100 * self.done // self.total}%)" if self.total > 0 else ""
        return f"{fmt_bytes(self.done)} of {fmt_bytes(self.total)}{share}, {self.speed()}"


class BarSlots:
    """Which files get the ``slots`` file bars: the largest of those under way (the others
    are summed in the overall bar). A file at least twice the size of the smallest one with a
    bar takes its slot; a slot that a finished file frees goes to the largest file without one.

    ``start`` and ``done`` return the changes to draw, in order: ``(path, None)`` loses its
    bar, ``(path, position)`` gets one (positions 1..slots; 0 is the overall bar).
    """

    def __init__(self, slots: int) -> None:
        self.free = list(range(1, slots + 1))
        self.sizes: dict[str, int] = {}  # files under way, in the order they started
        self.slot: dict[str, int] = {}

    def start(self, path: str, size: int) -> list[tuple[str, int | None]]:
        self.sizes[path] = size
        if path in self.slot:
            return []
        if self.free:
            self.slot[path] = self.free.pop(0)
            return [(path, self.slot[path])]
        if not self.slot:
            return []
        smallest = min(self.slot, key=lambda p: self.sizes[p])
        if size < 2 * self.sizes[smallest]:  # no churn among files of a kind
            return []
        pos = self.slot.pop(smallest)
        self.slot[path] = pos
        return [(smallest, None), (path, pos)]

    def done(self, path: str) -> list[tuple[str, int | None]]:
        self.sizes.pop(path, None)
        pos = self.slot.pop(path, None)
        if pos is None:
            return []
        changes: list[tuple[str, int | None]] = [(path, None)]
        waiting = [p for p in self.sizes if p not in self.slot]
        if waiting:
            largest = max(waiting, key=lambda p: self.sizes[p])
            self.slot[largest] = pos
            changes.append((largest, pos))
        else:
            self.free.append(pos)
            self.free.sort()
        return changes


class _Ticker:
    """Calls ``tick`` every ``interval_s`` seconds in a daemon thread until ``stop``."""

    def __init__(self, interval_s: float, tick: Callable[[], None]) -> None:
        self.interval_s = interval_s
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="modelget-progress", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


_TOTAL_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
_FILE_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}"


class TqdmReporter(Reporter):
    """An overall bar and up to ``max_file_bars`` file bars, on stderr.

    The largest files under way get the file bars (:class:`BarSlots`). Rates and the ETA are
    computed here from the bytes moved in this run (:class:`Transfer`), not by tqdm, so
    resumed bytes move the bars without inflating them; the overall bar's postfix shows each
    mirror's rate. Notes (mirror failures, verification failures, messages) are printed above
    the bars.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        max_file_bars: int = 6,
        *,
        verbose: bool = False,
        refresh_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.max_file_bars = max_file_bars
        self._mirror_notes = _MirrorNotes(verbose)
        self._lock = threading.RLock()
        self._total: Any = None
        self._bars: dict[str, Any] = {}
        self._slots = BarSlots(max_file_bars)
        self._transfer = Transfer(clock)
        self._file_rates: dict[str, Rates] = {}
        self._sizes: dict[str, int] = {}
        self._clock = clock
        self._ticker = _Ticker(refresh_s, self.refresh)
        self.barred: list[str] = []  # every file that got a bar, in order (for tests)

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        with self._lock:
            tqdm.write(text, file=self.stream)

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        from tqdm import tqdm

        with self._lock:
            self._transfer.total = fetch_bytes
            self._total = tqdm(
                total=fetch_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                position=0,
                desc=f"{repo_id} ({files} files)",
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
                bar_format=_TOTAL_FORMAT,
            )
        self._ticker.start()

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        with self._lock:
            before = self._transfer.start(path)
            if before and self._total is not None:
                self._total.update(-before)
            self._sizes[path] = size
            self._file_rates[path] = Rates(clock=self._clock)
            bar = self._bars.get(path)
            if bar is not None:
                bar.reset(total=size)
            self._draw(self._slots.start(path, size))

    def _draw(self, changes: list[tuple[str, int | None]]) -> None:
        from tqdm import tqdm

        for path, pos in changes:
            if pos is None:
                bar = self._bars.pop(path, None)
                if bar is not None:
                    bar.close()
                continue
            name = path if len(path) <= 32 else "…" + path[-31:]
            self._bars[path] = tqdm(
                total=self._sizes.get(path, 0),
                initial=self._transfer.files.get(path, 0),
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                position=pos,
                desc=name,
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
                bar_format=_FILE_FORMAT,
            )
            self.barred.append(path)

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        with self._lock:
            self._transfer.moved(path, nbytes, mirror)
            rates = self._file_rates.get(path)
            if rates is not None:
                rates.add(nbytes, mirror)
            if self._total is not None:
                self._total.update(nbytes)
            bar = self._bars.get(path)
            if bar is not None:
                bar.update(nbytes)

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        # The bars move (tqdm's own rate is not shown); the rates never see these bytes.
        with self._lock:
            self._transfer.resumed(path, have_bytes)
            if self._total is not None:
                self._total.update(have_bytes)
            bar = self._bars.get(path)
            if bar is not None:
                bar.update(have_bytes)
        self._write(f"{path}: resuming, {have_bytes:,} bytes already here")

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        line = self._mirror_notes.line(path, mirror, reason)
        if line is not None:
            self._write(line)

    def on_verify_failed(self, path: str, mirrors: tuple[str, ...], reason: str) -> None:
        self._write(
            f"{path}: failed verification (from {', '.join(mirrors)}): {reason}; fetching it again"
        )

    def on_file_done(self, path: str, size: int, seconds: float, reused: bool) -> None:
        with self._lock:
            self._transfer.finished(path)
            self._file_rates.pop(path, None)
            self._draw(self._slots.done(path))

    def on_message(self, level: str, text: str) -> None:
        self._write(f"{level}: {text}" if level != "info" else text)

    def on_lock_wait(self, path: str, lock: str) -> None:
        self._write(lock_wait_text(path, lock))

    def on_connections(self, counts: Mapping[str, int]) -> None:
        if self.verbose:
            self._write(connections_line(counts))

    def status(self) -> str:
        """The overall bar's postfix now: rate, ETA, each mirror's rate."""
        with self._lock:
            return self._transfer.speed()

    def refresh(self) -> None:
        """Redraw the rates (the ticker calls this; they change while no byte arrives)."""
        with self._lock:
            if self._total is None:
                return
            self._total.set_postfix_str(self._transfer.speed(), refresh=False)
            self._total.refresh()
            for path, bar in self._bars.items():
                rates = self._file_rates.get(path)
                if rates is not None:
                    bar.set_postfix_str(fmt_rate(rates.now()[0]), refresh=False)
                    bar.refresh()

    def close(self) -> None:
        self._ticker.stop()
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._total is not None:
                self._total.set_postfix_str(self._transfer.speed(average=True), refresh=False)
                self._total.close()
                self._total = None


class TextReporter(Reporter):
    """No bars (stderr is not a terminal, or ``HF_HUB_DISABLE_PROGRESS_BARS``): a line per
    notable event and a heartbeat every ``heartbeat_s`` seconds (done of total, rate, ETA,
    each mirror's rate), on stderr, with no carriage return."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        verbose: bool = False,
        heartbeat_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self._mirror_notes = _MirrorNotes(verbose)
        self._lock = threading.Lock()
        self._transfer = Transfer(clock)
        self._waiting: set[str] = set()
        self._ticker = _Ticker(heartbeat_s, self.heartbeat)

    def _line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        with self._lock:
            self._transfer.total = fetch_bytes
        self._line(
            f"pulling {repo_id} @ {commit[:12]}: {files} files, {fetch_bytes:,} bytes to fetch"
        )
        self._ticker.start()

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        with self._lock:
            self._transfer.start(path)
            self._waiting.discard(path)

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        with self._lock:
            self._transfer.moved(path, nbytes, mirror)

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        with self._lock:
            self._transfer.resumed(path, have_bytes)
        self._line(f"{path}: resuming, {have_bytes:,} bytes already here")

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        line = self._mirror_notes.line(path, mirror, reason)
        if line is not None:
            self._line(line)

    def on_verify_failed(self, path: str, mirrors: tuple[str, ...], reason: str) -> None:
        self._line(
            f"{path}: failed verification (from {', '.join(mirrors)}): {reason}; fetching it again"
        )

    def on_file_done(self, path: str, size: int, seconds: float, reused: bool) -> None:
        with self._lock:
            self._transfer.finished(path)
            self._waiting.discard(path)
        self._line(
            f"{path}: {'already here' if reused else f'done ({size:,} bytes, {seconds:.1f} s)'}"
        )

    def on_message(self, level: str, text: str) -> None:
        self._line(f"{level}: {text}" if level != "info" else text)

    def on_lock_wait(self, path: str, lock: str) -> None:
        with self._lock:
            self._waiting.add(path)
        self._line(lock_wait_text(path, lock))

    def on_connections(self, counts: Mapping[str, int]) -> None:
        if self.verbose:
            self._line(connections_line(counts))

    def heartbeat(self) -> None:
        """``progress: 45.1 MB of 90.9 MB (49%), 12.0 MB/s, ETA 0:04 · hub 8.0 MB/s · …``"""
        with self._lock:
            text = "progress: " + self._transfer.status()
            if self._waiting:
                n = len(self._waiting)
                text += f"; waiting for another process ({n} file{'s' if n > 1 else ''})"
        self._line(text)

    def close(self) -> None:
        self._ticker.stop()


def connections_line(counts: Mapping[str, int]) -> str:
    """``connections: hf=12, mirror-b=4`` (what the scheduler gives each mirror now)."""
    return "connections: " + ", ".join(f"{m}={n}" for m, n in counts.items())


def reporter_for(*, json: bool, quiet: bool, verbose: bool) -> Reporter:
    """A pull's reporter: JSON lines on stdout (``--json``), nothing (``--quiet``), tqdm bars
    when stderr is a terminal (unless ``HF_HUB_DISABLE_PROGRESS_BARS`` is true), else a line
    per notable event and a heartbeat on stderr. Close it (``close()``) when the pull ends."""
    from modelget import settings

    if json:
        return JsonLinesReporter(sys.stdout)
    if quiet:
        from modelget.events import NullReporter

        return NullReporter()
    if sys.stderr.isatty() and not settings.progress_bars_disabled():
        return TqdmReporter(sys.stderr, verbose=verbose)
    return TextReporter(sys.stderr, verbose=verbose)
