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
from collections.abc import Mapping
from typing import IO, Any

from modelget.events import Reporter

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

    def on_connections(self, counts: Mapping[str, int]) -> None:
        self.emit("connections", mirrors=dict(counts))


class TqdmReporter(Reporter):
    """An overall bar (bytes and rate) and one bar per active file, on stderr.

    Notes (mirror failures, verification failures, messages) are printed above the bars.
    """

    def __init__(
        self, stream: IO[str] | None = None, max_file_bars: int = 6, *, verbose: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.max_file_bars = max_file_bars
        self._mirror_notes = _MirrorNotes(verbose)
        self._lock = threading.RLock()
        self._total: Any = None
        self._bars: dict[str, Any] = {}
        self._free_positions = list(range(1, max_file_bars + 1))

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        from tqdm import tqdm

        with self._lock:
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
                smoothing=0.1,
            )

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        from tqdm import tqdm

        with self._lock:
            if path in self._bars or not self._free_positions:
                return
            pos = self._free_positions.pop(0)
            name = path if len(path) <= 32 else "…" + path[-31:]
            self._bars[path] = tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                position=pos,
                desc=name,
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
            )

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        with self._lock:
            if self._total is not None:
                self._total.update(nbytes)
            bar = self._bars.get(path)
            if bar is not None:
                bar.update(nbytes)

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        with self._lock:
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
            bar = self._bars.pop(path, None)
            if bar is not None:
                self._free_positions.append(bar.pos if bar.pos > 0 else abs(bar.pos))
                self._free_positions.sort()
                bar.close()

    def on_message(self, level: str, text: str) -> None:
        self._write(f"{level}: {text}" if level != "info" else text)

    def on_connections(self, counts: Mapping[str, int]) -> None:
        if self.verbose:
            self._write(connections_line(counts))

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._total is not None:
                self._total.close()
                self._total = None


class TextReporter(Reporter):
    """No bars (stderr is not a terminal): one line per notable event, on stderr."""

    def __init__(self, stream: IO[str] | None = None, *, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self._mirror_notes = _MirrorNotes(verbose)
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        self._line(
            f"pulling {repo_id} @ {commit[:12]}: {files} files, {fetch_bytes:,} bytes to fetch"
        )

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        pass

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        pass

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
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
        self._line(
            f"{path}: {'already here' if reused else f'done ({size:,} bytes, {seconds:.1f} s)'}"
        )

    def on_message(self, level: str, text: str) -> None:
        self._line(f"{level}: {text}" if level != "info" else text)

    def on_connections(self, counts: Mapping[str, int]) -> None:
        if self.verbose:
            self._line(connections_line(counts))


def connections_line(counts: Mapping[str, int]) -> str:
    """``connections: hf=12, mirror-b=4`` (what the scheduler gives each mirror now)."""
    return "connections: " + ", ".join(f"{m}={n}" for m, n in counts.items())


def reporter_for(*, json: bool, quiet: bool, verbose: bool) -> Reporter:
    """A pull's reporter: JSON lines on stdout (``--json``), nothing (``--quiet``), tqdm bars
    when stderr is a terminal, else a line per notable event on stderr."""
    if json:
        return JsonLinesReporter(sys.stdout)
    if quiet:
        from modelget.events import NullReporter

        return NullReporter()
    if sys.stderr.isatty():
        return TqdmReporter(sys.stderr, verbose=verbose)
    return TextReporter(sys.stderr, verbose=verbose)
