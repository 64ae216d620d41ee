"""verify.py and layout.py on real files: digests, sizes, the HF cache layout, local dirs."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from modelget import layout
from modelget.datatypes import FileEntry
from modelget.errors import VerificationError
from modelget.verify import check, hash_file

# The module (``modelget.verify`` is the API's function: docs/api.md).
verify = sys.modules["modelget.verify"]

DATA = b"hello modelget\n" * 1000
SHA256 = hashlib.sha256(DATA).hexdigest()
GIT_SHA1 = hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()


def test_hash_file_computes_sha256_and_git_blob_sha1_in_one_pass(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(DATA)
    got = hash_file(f, sha256=True, git_sha1=True)
    assert (got.size, got.sha256, got.git_sha1) == (len(DATA), SHA256, GIT_SHA1)


def test_hash_file_hashes_a_large_file_in_two_threads_to_the_same_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "_PARALLEL_MIN", 1)  # every file counts as large
    monkeypatch.setattr(verify, "_CHUNK", 4096)  # many chunks, a short last one
    f = tmp_path / "f"
    f.write_bytes(DATA)
    got = hash_file(f, sha256=True, git_sha1=True)
    assert (got.size, got.sha256, got.git_sha1) == (len(DATA), SHA256, GIT_SHA1)
    assert hash_file(f, sha256=False, git_sha1=True).git_sha1 == GIT_SHA1


@pytest.mark.parametrize(
    "entry",
    [FileEntry("f", len(DATA), SHA256), FileEntry("f", len(DATA), git_sha1=GIT_SHA1)],
)
def test_check_accepts_the_right_bytes(tmp_path: Path, entry: FileEntry) -> None:
    f = tmp_path / "f"
    f.write_bytes(DATA)
    check(f, entry)


@pytest.mark.parametrize(
    ("content", "entry", "words"),
    [
        (DATA[:-1] + b"X", FileEntry("f", len(DATA), SHA256), "sha256"),
        (DATA[:-1] + b"X", FileEntry("f", len(DATA), git_sha1=GIT_SHA1), "git blob sha1"),
        (DATA[:-5], FileEntry("f", len(DATA), SHA256), "size"),
        (b"", FileEntry("f", len(DATA), SHA256), "empty answer"),
        (DATA, FileEntry("f", len(DATA)), "no digest"),
    ],
)
def test_check_refuses_wrong_bytes_with_a_clear_reason(
    tmp_path: Path, content: bytes, entry: FileEntry, words: str
) -> None:
    f = tmp_path / "f"
    f.write_bytes(content)
    with pytest.raises(VerificationError, match=words) as info:
        check(f, entry)
    assert info.value.exit_code == 4


def test_cache_layout_matches_huggingface_hub(tmp_path: Path) -> None:
    lfs = FileEntry("model.safetensors", len(DATA), SHA256, lfs=True)
    small = FileEntry("sub/dir/config.json", len(DATA), "c" * 64, GIT_SHA1)
    commit = "a" * 40
    for entry in (lfs, small):
        tmp = layout.incomplete_path(tmp_path, "org/name", entry)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(DATA)
        layout.commit_blob(tmp, layout.blob_path(tmp_path, "org/name", entry))
        layout.link_snapshot(tmp_path, "org/name", commit, entry)
    layout.write_ref(tmp_path, "org/name", "main", commit)
    root = tmp_path / "models--org--name"
    assert os.readlink(root / "snapshots" / commit / "model.safetensors") == f"../../blobs/{SHA256}"
    assert (
        os.readlink(root / "snapshots" / commit / "sub/dir/config.json")
        == f"../../../../blobs/{GIT_SHA1}"
    )
    assert (root / "refs" / "main").read_text() == commit
    assert layout.scan([lfs, small], repo_id="org/name", commit=commit, cache_dir=tmp_path) == {
        "model.safetensors",
        "sub/dir/config.json",
    }
    # A link to a blob of the wrong size does not count as present.
    (root / "blobs" / SHA256).write_bytes(b"short")
    assert layout.scan([lfs], repo_id="org/name", commit=commit, cache_dir=tmp_path) == set()


def test_local_dir_placement_and_metadata(tmp_path: Path) -> None:
    entry = FileEntry("a/b.bin", len(DATA), SHA256, lfs=True)
    blob = tmp_path / "blob"
    blob.write_bytes(DATA)
    local = tmp_path / "local"
    target = layout.place_in_local_dir(blob, local, entry, "b" * 40)
    assert target.read_bytes() == DATA and os.stat(target).st_ino == os.stat(blob).st_ino
    meta = (local / ".cache/huggingface/download/a/b.bin.metadata").read_text().splitlines()
    assert meta[:2] == ["b" * 40, SHA256]
    assert layout.scan(
        [entry], repo_id="x/y", commit="b" * 40, cache_dir=tmp_path, local_dir=local
    ) == {"a/b.bin"}
    assert (
        layout.scan([entry], repo_id="x/y", commit="c" * 40, cache_dir=tmp_path, local_dir=local)
        == set()
    )


def test_quarantine_moves_bad_bytes_aside_named_for_the_mirror(tmp_path: Path) -> None:
    entry = FileEntry("m.bin", 3, SHA256, lfs=True)
    tmp = layout.incomplete_path(tmp_path, "o/n", entry)
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"bad")
    (tmp.parent / (tmp.name + ".aria2")).write_bytes(b"state")
    moved = layout.quarantine(tmp, layout.cache_quarantine_dir(tmp_path, "o/n"), entry, ["evil"])
    assert moved.read_bytes() == b"bad" and "evil" in moved.name
    assert not tmp.exists() and not (tmp.parent / (tmp.name + ".aria2")).exists()
    assert not layout.blob_path(tmp_path, "o/n", entry).exists()
