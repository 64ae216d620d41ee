"""The per-blob torrent: bencode both ways, the deterministic info dict checked against aria2c's
own reading (``aria2c -S``) and a golden file, and the refusals of untrusted torrents."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from modelget.errors import TorrentError, TorrentMismatchError
from modelget.swarm.torrent import (
    MAX_PIECE,
    MIN_PIECE,
    Bencodable,
    BlobTorrent,
    bdecode,
    bencode,
    check_entry,
    make_torrent,
    parse_torrent,
    piece_length,
    read_torrent,
    torrent_relpath,
)

GOLDEN = Path(__file__).parent / "data" / "swarm" / "golden.torrent"
GOLDEN_SIZE = 4 * 1024 * 1024 + 12345
GOLDEN_INFO_HASH = "f66bf2f7053b517fbc9688240ecc5793d377d633"


def _golden_bytes() -> bytes:
    """The golden blob: deterministic, two pieces (the second one short)."""
    block = bytes((i * 7 + 3) % 251 for i in range(4096))
    return (block * (GOLDEN_SIZE // len(block) + 1))[:GOLDEN_SIZE]


def _write_golden_blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(_golden_bytes())
    return path


def test_bencode_round_trip_is_canonical() -> None:
    value: dict[str, Bencodable] = {"b": [1, -2, 0, b"x"], "a": {"z": b"", "y": "\u00e9"}}
    data = bencode(value)
    assert data == b"d1:ad1:y2:\xc3\xa91:z0:e1:bli1ei-2ei0e1:xee"
    assert bdecode(data) == {
        b"a": {b"y": "\u00e9".encode(), b"z": b""},
        b"b": [1, -2, 0, b"x"],
    }


@pytest.mark.parametrize(
    "data",
    [
        b"i03e",  # leading zero
        b"i-0e",
        b"ie",
        b"i1",
        b"3:ab",  # runs past the end
        b"01:a",
        b"d1:bi1e1:ai2ee",  # keys out of order
        b"d1:ai1e1:ai2ee",  # repeated key
        b"di1ei2ee",  # integer key
        b"l" * 100 + b"e" * 100,  # too deep
        b"i1ei2e",  # trailing bytes
        b"x",
        b"",
    ],
)
def test_bdecode_refuses_malformed_input(data: bytes) -> None:
    with pytest.raises(TorrentError) as info:
        bdecode(data)
    assert info.value.code == "torrent-invalid"


def test_bencode_refuses_what_has_no_encoding() -> None:
    with pytest.raises(TypeError):
        bencode(True)
    with pytest.raises(TypeError):
        bencode(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "piece"),
    [
        (0, MIN_PIECE),
        (1, MIN_PIECE),
        (32 * 1024 * 1024, MIN_PIECE),
        (2000 * MIN_PIECE, MIN_PIECE),
        (2000 * MIN_PIECE + 1, 8 * 1024 * 1024),
        (5 * 10**9, 4 * 1024 * 1024),
        (20 * 10**9, 16 * 1024 * 1024),
        (10**12, MAX_PIECE),
    ],
)
def test_piece_length_rule(size: int, piece: int) -> None:
    assert piece_length(size) == piece
    assert piece & (piece - 1) == 0


def test_make_torrent_hashes_pieces_and_sha256_in_one_pass(tmp_path: Path) -> None:
    path = _write_golden_blob(tmp_path)
    torrent, sha = make_torrent(path)
    data = path.read_bytes()
    assert sha == hashlib.sha256(data).hexdigest() == torrent.name
    assert torrent.length == len(data)
    assert torrent.piece_length == MIN_PIECE
    assert torrent.pieces == b"".join(
        hashlib.sha1(data[i : i + MIN_PIECE]).digest() for i in range(0, len(data), MIN_PIECE)
    )
    assert torrent.private
    # Nothing in it but what the bytes decide: two runs make the same file.
    assert make_torrent(path)[0].to_bytes() == torrent.to_bytes()


def test_golden_torrent_byte_for_byte(tmp_path: Path) -> None:
    torrent, _ = make_torrent(_write_golden_blob(tmp_path))
    assert torrent.to_bytes() == GOLDEN.read_bytes()
    assert torrent.info_hash == GOLDEN_INFO_HASH
    assert read_torrent(GOLDEN) == torrent


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
@pytest.mark.parametrize("size", [0, 1, GOLDEN_SIZE, 3 * MIN_PIECE])
def test_info_hash_matches_aria2c(tmp_path: Path, size: int) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(_golden_bytes()[:size] if size <= GOLDEN_SIZE else b"\x01" * size)
    torrent, sha = make_torrent(blob)
    for announce in (None, "http://127.0.0.1:6969/announce"):
        for t in (torrent, torrent.public()):
            tfile = tmp_path / "x.torrent"
            tfile.write_bytes(t.to_bytes(announce))
            out = subprocess.run(
                ["aria2c", "-S", str(tfile)], capture_output=True, text=True, check=True
            ).stdout
            got = re.search(r"Info Hash: ([0-9a-f]{40})", out)
            assert got is not None, out
            assert got.group(1) == t.info_hash
            assert f"Name: {sha}" in out
            assert f"({size:,})" in out or size == 0
    assert torrent.info_hash != torrent.public().info_hash


def test_a_torrent_that_is_not_the_manifest_entry_is_refused(tmp_path: Path) -> None:
    torrent, sha = make_torrent(_write_golden_blob(tmp_path))
    check_entry(torrent, sha.upper(), GOLDEN_SIZE, "model.safetensors")  # accepted
    with pytest.raises(TorrentMismatchError) as info:
        check_entry(torrent, "0" * 64, GOLDEN_SIZE, "model.safetensors")
    assert info.value.code == "torrent-mismatch"
    with pytest.raises(TorrentMismatchError):
        check_entry(torrent, sha, GOLDEN_SIZE + 1, "model.safetensors")


def _info_torrent(**info: Bencodable) -> bytes:
    return bencode({"info": info})


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bencode({"announce": "x"}), "no info"),
        (bencode([1]), "no info"),
        (
            _info_torrent(
                name="../../etc/passwd", length=1, **{"piece length": MIN_PIECE}, pieces=b"x" * 20
            ),
            "sha256",
        ),
        (
            _info_torrent(name="A" * 64, length=1, **{"piece length": MIN_PIECE}, pieces=b"x" * 20),
            "sha256",
        ),
        (
            _info_torrent(name="a" * 64, length=-1, **{"piece length": MIN_PIECE}, pieces=b""),
            "length",
        ),
        (
            _info_torrent(name="a" * 64, length=1, **{"piece length": 16384}, pieces=b"x" * 20),
            "piece length",
        ),
        (
            _info_torrent(name="a" * 64, length=1, **{"piece length": MIN_PIECE}, pieces=b"x" * 40),
            "cover",
        ),
        (
            _info_torrent(
                name="a" * 64, length=1, **{"piece length": MIN_PIECE}, pieces=b"x" * 20, private=2
            ),
            "private",
        ),
        (
            _info_torrent(name="a" * 64, files=[], **{"piece length": MIN_PIECE}, pieces=b""),
            "several",
        ),
        (
            _info_torrent(
                name="a" * 64, length=1, **{"piece length": MIN_PIECE}, pieces=b"x" * 20, source="x"
            ),
            "unexpected",
        ),
        (b"d4:infod" + b"l" * 30, "not a valid"),
    ],
)
def test_parse_refuses_torrents_that_are_not_blob_torrents(data: bytes, why: str) -> None:
    with pytest.raises(TorrentError, match=why) as info:
        parse_torrent(data)
    assert info.value.code == "torrent-invalid"


def test_parse_accepts_extra_top_level_keys_and_lpd_torrents() -> None:
    t = BlobTorrent("a" * 64, 5, MIN_PIECE, b"p" * 20)
    top: dict[str, Bencodable] = {"info": t.info(), "announce": "http://t/", "comment": "hi"}
    assert parse_torrent(bencode(top)) == t
    assert parse_torrent(t.public().to_bytes()) == t.public()


def test_parse_refuses_an_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.torrent"
    big.write_bytes(b"d" + b"0:" * (5 * 1024 * 1024))
    with pytest.raises(TorrentError, match="more than any blob needs"):
        read_torrent(big)


def test_torrent_relpath() -> None:
    assert torrent_relpath("AB" + "c" * 62) == Path("sha256/ab/ab" + "c" * 62 + ".torrent")
    with pytest.raises(TorrentError):
        torrent_relpath("../x")
