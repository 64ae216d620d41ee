"""The files aria2c writes: its control file (``<dest>.aria2``, what a resumed download has on
disk) and making a destination safe to hand to aria2c."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

from modelget.engines import FetchJob

CONTROL_SUFFIX = ".aria2"
_BLOCK = 16 * 1024
"""aria2's block size inside a piece (its control file tracks in-flight pieces by block)."""


def _control_file_completed(path: Path, size: int) -> int | None:
    """Bytes an aria2 control file (format version 1) records as on disk, or None when the
    file is unreadable or describes another length."""
    try:
        data = path.read_bytes()
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            chunk = data[pos : pos + n]
            if len(chunk) != n:
                raise ValueError("short control file")
            pos += n
            return chunk

        version = struct.unpack(">H", take(2))[0]
        if version != 1:
            return None
        take(4)  # extension
        info_hash_len = struct.unpack(">I", take(4))[0]
        take(info_hash_len)
        piece_len = struct.unpack(">I", take(4))[0]
        total = struct.unpack(">Q", take(8))[0]
        take(8)  # upload length
        bitfield_len = struct.unpack(">I", take(4))[0]
        bitfield = take(bitfield_len)
        if total != size or piece_len <= 0:
            return None
        pieces = -(-total // piece_len)
        have = 0
        for i in range(pieces):
            if bitfield[i // 8] & (0x80 >> (i % 8)):
                have += min(piece_len, total - i * piece_len)
        # Pieces in flight: index, length, and a bitfield of their 16 KiB blocks.
        in_flight: int = struct.unpack(">I", take(4))[0]
        for _ in range(in_flight):
            index, length, blocks_len = struct.unpack(">III", take(12))
            blocks = take(blocks_len)
            done = sum(bin(b).count("1") for b in blocks) * _BLOCK
            if index < pieces:
                have += min(done, length, total - index * piece_len)
        return int(min(have, total))
    except (OSError, ValueError, struct.error, IndexError):
        return None


def _prepare_dest(job: FetchJob) -> int:
    """Make ``dest`` safe to hand to aria2c; return the bytes it will resume from."""
    control = Path(f"{job.dest}{CONTROL_SUFFIX}")
    if job.dest.exists() and control.exists():
        have = _control_file_completed(control, job.size)
        if have is not None:
            return have
    sidecar = Path(f"{job.dest}.ranges")
    with contextlib.suppress(OSError):
        if not control.exists() and not sidecar.exists() and job.dest.stat().st_size == job.size:
            # aria2c removes a control file when the download completes: the pull was
            # stopped (kill -9) after the last byte and before verification. Throwing the
            # file away re-fetched it whole; the digest check decides instead.
            return job.size
    # A file without (a usable) control file: aria2 would refuse it or append to it.
    _unlink(job.dest)
    _unlink(control)
    _unlink(Path(f"{job.dest}.ranges"))  # the httpx engine's sidecar describes dest too
    return 0


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
