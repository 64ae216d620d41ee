"""Hashing a download as its pieces arrive (:class:`_Hashing`), from aria2's bitfield."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path

from modelget.engines import FetchJob
from modelget.verify import Digests, PrefixHasher


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
