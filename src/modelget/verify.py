"""Every byte verified: size and digest of a file before it lands.

The digest is the strongest one the manifest has: sha256 (LFS files on HF, every file on
ModelScope and cdn mirrors), else the git blob sha1 that HF gives for small files, computed
the git way (``sha1(b"blob <size>\\0" + content)``). One read pass computes both when both
are known, with a large buffer (hashlib releases the GIL, so other transfers go on).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from modelget.datatypes import FileEntry
from modelget.errors import VerificationError

_CHUNK = 8 * 1024 * 1024
_PARALLEL_MIN = 64 * 1024 * 1024


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str | None
    git_sha1: str | None


def hash_file(path: Path, *, sha256: bool = True, git_sha1: bool = False) -> Digests:
    """Size and the requested digests of ``path``, in one streaming pass.

    Both digests of a file of ``_PARALLEL_MIN`` bytes or more: the git sha1 runs in a helper
    thread while sha256 runs here (hashlib releases the GIL), about twice as fast on two cores.
    """
    size = path.stat().st_size
    h256 = hashlib.sha256() if sha256 else None
    h1 = hashlib.sha1(f"blob {size}\0".encode()) if git_sha1 else None
    helper = None
    if h256 is not None and h1 is not None and size >= _PARALLEL_MIN:
        from concurrent.futures import ThreadPoolExecutor

        helper = ThreadPoolExecutor(1, thread_name_prefix="modelget-hash")
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    try:
        with path.open("rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                chunk = view[:n]
                if helper is not None and h1 is not None and h256 is not None:
                    pending = helper.submit(h1.update, chunk)
                    h256.update(chunk)
                    pending.result()
                    continue
                if h256 is not None:
                    h256.update(chunk)
                if h1 is not None:
                    h1.update(chunk)
    finally:
        if helper is not None:
            helper.shutdown()
    return Digests(size, h256.hexdigest() if h256 else None, h1.hexdigest() if h1 else None)


class PrefixHasher:
    """The digests of a file that is still being written, fed with its contiguous prefix.

    Engines call :meth:`advance` whenever the prefix of bytes known to be final (written once,
    never rewritten) grows; it reads the new bytes back with ``os.pread`` (from the page cache:
    they were just written) and hashes them, so that when the last byte arrives only the
    last stretch is left to hash. Every byte that goes into the digest is read from the file
    itself, so the digest is exactly as strict as hashing the finished file.
    """

    def __init__(self, size: int, *, sha256: bool = True, git_sha1: bool = False) -> None:
        self.size = size
        self.pos = 0
        self._h256 = hashlib.sha256() if sha256 else None
        self._h1 = hashlib.sha1(f"blob {size}\0".encode()) if git_sha1 else None
        self._buf: bytearray | None = None  # allocated on first use, freed when done

    def advance(self, fd: int, upto: int, buf: bytearray | None = None) -> int:
        """Hash the file's bytes from where it stopped up to ``upto`` (exclusive); return the
        new position. ``buf``: a read buffer to use (one hashing thread for many files shares
        one); else the hasher's own, allocated on first use and freed when done. Raises
        ``OSError`` when the file cannot be read."""
        upto = min(upto, self.size)
        if self.pos >= upto:
            return self.pos
        if buf is None:
            if self._buf is None:
                self._buf = bytearray(min(_CHUNK, self.size))
            buf = self._buf
        view = memoryview(buf)
        while self.pos < upto:
            want = min(len(view), upto - self.pos)
            n = os.preadv(fd, [view[:want]], self.pos)
            if n <= 0:
                break
            chunk = view[:n]
            if self._h256 is not None:
                self._h256.update(chunk)
            if self._h1 is not None:
                self._h1.update(chunk)
            self.pos += n
        if self.pos >= self.size:
            self._buf = None
        return self.pos

    @property
    def done(self) -> bool:
        return self.pos >= self.size

    def digests(self) -> Digests:
        """The digests of the whole file; only once :attr:`done`."""
        if not self.done:
            raise ValueError(f"hashed {self.pos} of {self.size} bytes")
        return Digests(
            self.size,
            self._h256.hexdigest() if self._h256 is not None else None,
            self._h1.hexdigest() if self._h1 is not None else None,
        )


def hasher_for(entry: FileEntry) -> PrefixHasher:
    """The hasher :func:`check` would use for ``entry`` (sha256, else the git blob sha1)."""
    return PrefixHasher(
        entry.size, sha256=bool(entry.sha256), git_sha1=not entry.sha256 and bool(entry.git_sha1)
    )


def check(path: Path, entry: FileEntry, digests: Digests | None = None) -> None:
    """Raise ``VerificationError`` unless ``path`` has ``entry``'s size and digest.

    A zero-byte file where bytes were expected is reported as an empty answer, not as
    corruption: that is a mirror or network fault, and the fix is the same (fetch again).
    ``digests``: what an engine computed from this very file while it was written
    (:class:`PrefixHasher`), saving a second read; otherwise the file is hashed here.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VerificationError(f"{entry.path}: cannot read the downloaded file: {exc}") from exc
    if size == 0 and entry.size > 0:
        raise VerificationError(
            f"{entry.path}: the mirror sent an empty answer (0 of {entry.size} bytes)"
        )
    if size != entry.size:
        raise VerificationError(f"{entry.path}: size {size} bytes, expected {entry.size}")
    if not entry.sha256 and not entry.git_sha1:
        raise VerificationError(f"{entry.path}: no digest known to verify it against")
    want_256, want_1 = bool(entry.sha256), not entry.sha256 and bool(entry.git_sha1)
    if (
        digests is not None
        and digests.size == size
        and (digests.sha256 is not None or not want_256)
        and (digests.git_sha1 is not None or not want_1)
    ):
        got = digests
    else:
        got = hash_file(path, sha256=want_256, git_sha1=want_1)
    if entry.sha256 and got.sha256 != entry.sha256.lower():
        raise VerificationError(
            f"{entry.path}: sha256 {got.sha256} does not match the manifest's {entry.sha256}"
        )
    if not entry.sha256 and entry.git_sha1 and got.git_sha1 != entry.git_sha1.lower():
        raise VerificationError(
            f"{entry.path}: git blob sha1 {got.git_sha1} does not match the manifest's {entry.git_sha1}"
        )
