"""One private single-file BitTorrent v1 torrent per blob, made the same way everywhere.

The ``info`` dictionary holds only what the blob's bytes decide: ``length``, ``name`` (the
blob's sha256 in hex), ``piece length`` (:func:`piece_length`, a fixed rule of the size),
``pieces`` (each piece's SHA-1) and ``private = 1`` (``0`` is never written: an LPD swarm's
torrent simply has no ``private`` key). Nothing time-dependent, no tracker, no mirror URL, no
token: any node, and ``modelget export --torrents``, make the same bytes and the same
info-hash for the same blob. The piece hashes are computed in the same read of the file as
its sha256 (:func:`make_torrent`).

A ``.torrent`` read from disk is untrusted input (:func:`parse_torrent`): the bencode decoder
is bounded (size, depth, item count) and strict (canonical integers, sorted unique keys, no
trailing bytes), and a torrent is refused unless it is exactly one of ours: a single file
whose name is a sha256, whose pieces add up to its length with our piece size. Its name is
never used as a path until :func:`check_entry` has matched it against the manifest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from modelget.errors import TorrentError, TorrentMismatchError

MIN_PIECE = 4 * 1024 * 1024
MAX_PIECE = 16 * 1024 * 1024
PIECES_PER_BLOB = 2000
"""The piece-size rule: about this many pieces per blob, clamped to [4 MiB, 16 MiB]."""
MAX_TORRENT_BYTES = 8 * 1024 * 1024
"""The largest .torrent read (a 1 TB blob at 16 MiB pieces has ~1.2 MB of piece hashes)."""
MAX_DEPTH = 16
MAX_ITEMS = 10_000
MAX_LENGTH = 1 << 50
"""The largest blob a torrent may describe (1 PiB)."""
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

Bencodable: TypeAlias = "int | bytes | str | Sequence[Bencodable] | Mapping[str, Bencodable] | Mapping[bytes, Bencodable]"
Decoded: TypeAlias = "int | bytes | list[Decoded] | dict[bytes, Decoded]"


# --- bencode -----------------------------------------------------------------------------------


def bencode(value: Bencodable) -> bytes:
    """The canonical bencoding of ``value`` (dict keys sorted as raw bytes; ``str`` as UTF-8)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):  # a bool is an int in Python, never in a torrent
        raise TypeError("bencode: booleans have no encoding")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, str)):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Mapping):
        keys: dict[bytes, Bencodable] = {
            (k.encode() if isinstance(k, str) else k): v for k, v in value.items()
        }
        if len(keys) != len(value):
            raise TypeError("bencode: duplicate key")
        out.append(b"d")
        for key in sorted(keys):
            _encode(key, out)
            _encode(keys[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"bencode: cannot encode {type(value).__name__}")


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def fail(self, why: str) -> TorrentError:
        return TorrentError(f"not a valid torrent: {why} (at byte {self.pos})")

    def value(self, depth: int) -> Decoded:
        if depth > MAX_DEPTH:
            raise self.fail("nested too deeply")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise self.fail("too many items")
        if self.pos >= len(self.data):
            raise self.fail("truncated")
        c = self.data[self.pos : self.pos + 1]
        if c == b"i":
            end = self.data.find(b"e", self.pos + 1)
            if end < 0:
                raise self.fail("unterminated integer")
            text = self.data[self.pos + 1 : end]
            if not re.fullmatch(rb"0|-?[1-9][0-9]{0,18}", text):
                raise self.fail("malformed integer")
            self.pos = end + 1
            return int(text)
        if c.isdigit():
            colon = self.data.find(b":", self.pos, self.pos + 21)
            if colon < 0:
                raise self.fail("malformed string length")
            text = self.data[self.pos : colon]
            if not re.fullmatch(rb"0|[1-9][0-9]*", text):
                raise self.fail("malformed string length")
            n = int(text)
            if colon + 1 + n > len(self.data):
                raise self.fail("string runs past the end")
            self.pos = colon + 1 + n
            return self.data[colon + 1 : self.pos]
        if c == b"l":
            self.pos += 1
            items: list[Decoded] = []
            while self.data[self.pos : self.pos + 1] != b"e":
                items.append(self.value(depth + 1))
            self.pos += 1
            return items
        if c == b"d":
            self.pos += 1
            out: dict[bytes, Decoded] = {}
            last: bytes | None = None
            while self.data[self.pos : self.pos + 1] != b"e":
                key = self.value(depth + 1)
                if not isinstance(key, bytes):
                    raise self.fail("a dictionary key is not a string")
                if last is not None and key <= last:
                    raise self.fail("dictionary keys unsorted or repeated")
                last = key
                out[key] = self.value(depth + 1)
            self.pos += 1
            return out
        raise self.fail(f"unexpected byte {c!r}")


def bdecode(data: bytes) -> Decoded:
    """Decode one bencoded value that is the whole of ``data`` (strict, bounded)."""
    if len(data) > MAX_TORRENT_BYTES:
        raise TorrentError(f"not a valid torrent: {len(data)} bytes, more than any blob needs")
    decoder = _Decoder(data)
    value = decoder.value(0)
    if decoder.pos != len(data):
        raise decoder.fail("trailing bytes")
    return value


# --- the blob torrent --------------------------------------------------------------------------


def piece_length(size: int) -> int:
    """The piece size for a blob of ``size`` bytes: ``size / 2000`` rounded up to a power of
    two, clamped to [4 MiB, 16 MiB] (about 2000 pieces for a big blob, few for a small one)."""
    want = max(1, -(-size // PIECES_PER_BLOB))
    power = 1 << (want - 1).bit_length()
    return min(MAX_PIECE, max(MIN_PIECE, power))


def piece_count(length: int, piece: int) -> int:
    return -(-length // piece)


@dataclass(frozen=True)
class BlobTorrent:
    """A blob's torrent: its ``info`` fields. ``private=False`` only for an LPD swarm."""

    name: str
    length: int
    piece_length: int
    pieces: bytes
    private: bool = True

    def info(self) -> dict[str, Bencodable]:
        info: dict[str, Bencodable] = {
            "length": self.length,
            "name": self.name,
            "piece length": self.piece_length,
            "pieces": self.pieces,
        }
        if self.private:
            info["private"] = 1
        return info

    @property
    def info_hash(self) -> str:
        """The v1 info-hash (SHA-1 of the bencoded ``info``), in hex."""
        return hashlib.sha1(bencode(self.info())).hexdigest()

    def public(self) -> BlobTorrent:
        """The same blob without the private flag (an LPD swarm: aria2 announces only
        non-private torrents on the local network)."""
        return BlobTorrent(self.name, self.length, self.piece_length, self.pieces, False)

    def to_bytes(self, announce: str | None = None) -> bytes:
        """The ``.torrent`` file: ``info``, and ``announce`` when given (published torrents
        have none: the tracker is each node's ``--swarm`` setting)."""
        top: dict[str, Bencodable] = {"info": self.info()}
        if announce:
            top["announce"] = announce
        return bencode(top)


def make_torrent(path: Path) -> tuple[BlobTorrent, str]:
    """``path``'s torrent and its sha256 hex, in one read of the file (each piece's SHA-1 in a
    helper thread while the sha256 runs here: hashlib releases the GIL). The torrent's name is
    the sha256 computed here, so compare it with the manifest before trusting the file."""
    size = path.stat().st_size
    piece = piece_length(size)
    h256 = hashlib.sha256()
    pieces: list[Future[bytes]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="modelget-pieces") as helper:
        with path.open("rb", buffering=0) as f:
            while True:
                block = f.read(piece)
                if not block:
                    break
                pieces.append(helper.submit(_sha1, block))
                h256.update(block)
        digests = b"".join(p.result() for p in pieces)
    if len(pieces) != piece_count(size, piece):
        raise TorrentError(f"{path} changed size while it was hashed")
    sha = h256.hexdigest()
    return BlobTorrent(sha, size, piece, digests), sha


def _sha1(block: bytes) -> bytes:
    return hashlib.sha1(block).digest()


def parse_torrent(data: bytes) -> BlobTorrent:
    """A ``.torrent`` (untrusted) as a :class:`BlobTorrent`, or ``TorrentError``
    (``torrent-invalid``) unless it is a single-file torrent named by a sha256, with our piece
    size for its length and exactly one SHA-1 per piece. Other top-level keys (announce,
    comment, ...) are allowed and ignored; ``info`` must hold nothing else."""
    top = bdecode(data)
    if not isinstance(top, dict) or not isinstance(top.get(b"info"), dict):
        raise TorrentError("not a valid torrent: no info dictionary")
    info = top[b"info"]
    assert isinstance(info, dict)
    allowed = {b"length", b"name", b"piece length", b"pieces", b"private"}
    extra = sorted(k.decode("latin-1") for k in info if k not in allowed)
    if b"files" in info:
        raise TorrentError("not a blob torrent: it holds several files")
    if extra:
        raise TorrentError(f"not a blob torrent: unexpected info keys {extra}")
    name, length, piece, pieces = (
        info.get(b"name"),
        info.get(b"length"),
        info.get(b"piece length"),
        info.get(b"pieces"),
    )
    private = info.get(b"private", 0)
    if not isinstance(name, bytes) or not _SHA256_HEX.fullmatch(name.decode("latin-1")):
        raise TorrentError("not a blob torrent: its name is not a sha256 in lowercase hex")
    if not isinstance(length, int) or not 0 <= length <= MAX_LENGTH:
        raise TorrentError("not a blob torrent: bad length")
    if not isinstance(piece, int) or piece != piece_length(length):
        raise TorrentError(
            f"not a blob torrent: piece length {piece!r}, modelget uses {piece_length(length)} "
            f"for {length} bytes (another tool made it: its info-hash is not the swarm's)"
        )
    if not isinstance(pieces, bytes) or len(pieces) != 20 * piece_count(length, piece):
        raise TorrentError("not a blob torrent: the piece hashes do not cover its length")
    if private not in (0, 1):
        raise TorrentError("not a blob torrent: bad private flag")
    return BlobTorrent(name.decode(), length, piece, pieces, private == 1)


def check_entry(torrent: BlobTorrent, sha256: str, size: int, path: str) -> None:
    """Refuse (``torrent-mismatch``) a torrent that is not the manifest entry's blob."""
    if torrent.name != sha256.lower() or torrent.length != size:
        raise TorrentMismatchError(
            f"{path}: the torrent describes {torrent.name[:12]}… ({torrent.length} bytes), "
            f"the manifest {sha256.lower()[:12]}… ({size} bytes): refused",
            hint="remove the stale torrent (it is remade from the verified blob)",
        )


def read_torrent(path: Path) -> BlobTorrent:
    """Read and parse a ``.torrent`` file (at most ``MAX_TORRENT_BYTES``)."""
    with path.open("rb") as f:
        data = f.read(MAX_TORRENT_BYTES + 1)
    return parse_torrent(data)


def torrent_relpath(sha256: str) -> Path:
    """Where a blob's torrent sits in a torrent directory: ``sha256/xx/<sha>.torrent``, the
    export tree's ``blobs/`` layout (``DEST/torrents/`` is a ``--swarm-dir``)."""
    sha = sha256.lower()
    if not _SHA256_HEX.fullmatch(sha):
        raise TorrentError(f"not a sha256: {sha256!r}")
    return Path("sha256") / sha[:2] / f"{sha}.torrent"
