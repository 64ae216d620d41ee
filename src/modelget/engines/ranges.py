"""Byte ranges: what of a file is on disk, what is missing, and how to cut the rest.

Pure data and decisions, plus the small sidecar file that records them for resume. The httpx
engine writes every byte at its offset into a preallocated ``.incomplete`` file; the sidecar
``<dest>.ranges`` says which byte ranges hold real data. It is written atomically (temporary
file, fsync, rename) and only after the data it describes has been fsync'd, so after a
kill -9 or a power cut it never claims bytes that are not on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SIDECAR_SUFFIX = ".ranges"
SIDECAR_VERSION = 1


class RangeSet:
    """A set of half-open byte ranges ``[start, end)``, kept sorted and merged."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        placed = False
        for a, b in self._ranges:
            if b < start:
                merged.append((a, b))
            elif end < a:
                if not placed:
                    merged.append((start, end))
                    placed = True
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        if not placed:
            merged.append((start, end))
        merged.sort()
        self._ranges = merged

    def total(self) -> int:
        return sum(b - a for a, b in self._ranges)

    def missing(self, size: int) -> list[tuple[int, int]]:
        """The ranges of ``[0, size)`` not in the set."""
        out = []
        pos = 0
        for a, b in self._ranges:
            if a > pos:
                out.append((pos, min(a, size)))
            pos = max(pos, b)
            if pos >= size:
                break
        if pos < size:
            out.append((pos, size))
        return [(a, b) for a, b in out if b > a]

    def prefix(self) -> int:
        """Where the contiguous run of bytes from offset 0 ends (0 when byte 0 is missing)."""
        return self._ranges[0][1] if self._ranges and self._ranges[0][0] == 0 else 0

    def covers(self, size: int) -> bool:
        return not self.missing(size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._ranges == other._ranges

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges!r})"


@dataclass
class Sidecar:
    """What the ``.ranges`` file records about one ``.incomplete`` file."""

    key: str
    size: int
    done: RangeSet = field(default_factory=RangeSet)
    validators: dict[str, str] = field(default_factory=dict)
    """Per source (mirror name): the ETag it served, sent back as ``If-Range`` on resume."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": SIDECAR_VERSION,
                "key": self.key,
                "size": self.size,
                "done": [list(r) for r in self.done],
                "validators": self.validators,
            },
            sort_keys=True,
        )


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + SIDECAR_SUFFIX)


def load_sidecar(dest: Path, key: str, size: int) -> Sidecar | None:
    """The sidecar of ``dest`` if it exists, is well formed and belongs to this file (same key
    and size) and ``dest`` has that size; else None (the caller starts from scratch)."""
    try:
        raw = json.loads(sidecar_path(dest).read_text())
        if dest.stat().st_size != size:
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(raw, Mapping) or raw.get("version") != SIDECAR_VERSION:
        return None
    if raw.get("key") != key or raw.get("size") != size:
        return None
    done = RangeSet()
    ranges = raw.get("done")
    validators = raw.get("validators")
    if not isinstance(ranges, list) or not isinstance(validators, Mapping):
        return None
    for r in ranges:
        if (
            not isinstance(r, list)
            or len(r) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            or not 0 <= r[0] <= r[1] <= size
        ):
            return None
        done.add(r[0], r[1])
    clean = {str(k): str(v) for k, v in validators.items() if isinstance(v, str)}
    return Sidecar(key, size, done, clean)


def save_sidecar(dest: Path, sidecar: Sidecar) -> None:
    """Write the sidecar atomically and durably (the data must already be fsync'd)."""
    path = sidecar_path(dest)
    tmp = path.with_name(path.name + ".tmp")
    data = memoryview(sidecar.to_json().encode())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # A full disk: leave the last good sidecar, not a half-written temporary beside it.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_sidecar(dest: Path) -> None:
    for p in (sidecar_path(dest), sidecar_path(dest).with_name(sidecar_path(dest).name + ".tmp")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
