"""Pure manifest logic: agreement between mirrors, file selection, unsafe paths."""

from __future__ import annotations

import pytest

from modelget.datatypes import FileEntry, Manifest
from modelget.errors import UnsafeManifestError, UsageError
from modelget.manifest import (
    Copy,
    agree,
    check_path,
    copies,
    merge_digests,
    select_files,
    settle,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def _manifest(mirror: str, *files: FileEntry) -> Manifest:
    return Manifest("org/model", "main", "c" * 40, tuple(files), mirror)


def test_agreeing_mirrors_are_candidates_in_order() -> None:
    ref = _manifest(
        "hub",
        FileEntry("m.safetensors", 10, SHA_A, lfs=True),
        FileEntry("c.json", 3, git_sha1="1" * 40),
    )
    m2 = _manifest(
        "mirror2", FileEntry("m.safetensors", 10, SHA_A), FileEntry("c.json", 3, git_sha1="1" * 40)
    )
    ms = _manifest(
        "modelscope", FileEntry("m.safetensors", 10, SHA_A), FileEntry("c.json", 3, "d" * 64)
    )
    candidates, disagreements = agree(ref, [m2, ms])
    assert candidates == {
        "m.safetensors": ["hub", "mirror2", "modelscope"],
        "c.json": ["hub", "mirror2", "modelscope"],
    }
    assert disagreements == []


def test_different_digest_or_size_excludes_that_mirror_for_that_file_only() -> None:
    ref = _manifest("hub", FileEntry("a.bin", 10, SHA_A), FileEntry("b.bin", 5, SHA_A))
    bad = _manifest("evil", FileEntry("a.bin", 10, SHA_B), FileEntry("b.bin", 5, SHA_A))
    short = _manifest("short", FileEntry("a.bin", 9, SHA_A))
    candidates, disagreements = agree(ref, [bad, short])
    assert candidates == {"a.bin": ["hub"], "b.bin": ["hub", "evil"]}
    reasons = {(d.mirror, d.path): d.reason for d in disagreements}
    assert "sha256" in reasons[("evil", "a.bin")]
    assert "size" in reasons[("short", "a.bin")]
    assert reasons[("short", "b.bin")] == "file missing"


def test_git_sha1_mismatch_disagrees() -> None:
    ref = _manifest("hub", FileEntry("c.json", 3, git_sha1="1" * 40))
    other = _manifest("m", FileEntry("c.json", 3, git_sha1="2" * 40))
    candidates, disagreements = agree(ref, [other])
    assert candidates["c.json"] == ["hub"]
    assert "git sha1" in disagreements[0].reason


def test_merge_borrows_a_sha256_from_an_agreeing_mirror() -> None:
    ref = FileEntry("c.json", 3, git_sha1="1" * 40)
    merged = merge_digests(ref, [FileEntry("c.json", 3, SHA_B)])
    assert merged.sha256 == SHA_B and merged.git_sha1 == "1" * 40
    assert merge_digests(FileEntry("x", 1, SHA_A), [FileEntry("x", 1, SHA_B)]).sha256 == SHA_A


FILES = [
    FileEntry(p, 1, SHA_A)
    for p in (
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "onnx/model.onnx",
        "1_Pooling/config.json",
        "README.md",
    )
]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        ([], [], [f.path for f in FILES]),
        (
            ["*.safetensors"],
            [],
            ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
        ),
        (["*.json"], [], ["config.json", "1_Pooling/config.json"]),
        ([], ["onnx/*"], [p.path for p in FILES if not p.path.startswith("onnx/")]),
        ([], ["onnx/"], [p.path for p in FILES if not p.path.startswith("onnx/")]),
        (["*.json", "*.md"], ["1_Pooling/*"], ["config.json", "README.md"]),
    ],
)
def test_select_files_like_hf_download(
    include: list[str], exclude: list[str], expected: list[str]
) -> None:
    kept, left_out = select_files(FILES, include=include, exclude=exclude)
    assert [f.path for f in kept] == expected
    assert sorted(left_out) == sorted(f.path for f in FILES if f.path not in expected)


def test_explicit_filenames_must_exist() -> None:
    kept, _ = select_files(FILES, filenames=["config.json"])
    assert [f.path for f in kept] == ["config.json"]
    with pytest.raises(UsageError, match=r"nope\.bin"):
        select_files(FILES, filenames=["config.json", "nope.bin"])


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "/etc/passwd", "a/../../b", "a\\b", "a\x00b", "", "./a", "a//b", "a/", "."],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafeManifestError):
        check_path(path)


@pytest.mark.parametrize(
    "path", ["config.json", "1_Pooling/config.json", ".gitattributes", "a b/c#d.txt"]
)
def test_safe_paths_pass(path: str) -> None:
    assert check_path(path) == path


def test_the_copy_most_mirrors_agree_on_wins_over_the_best_ranked_one() -> None:
    fast = _manifest("fast", FileEntry("a.bin", 10, SHA_B), FileEntry("b.bin", 5, SHA_A))
    m2 = _manifest("m2", FileEntry("a.bin", 10, SHA_A), FileEntry("b.bin", 5, SHA_A))
    m3 = _manifest("m3", FileEntry("a.bin", 10, SHA_A), FileEntry("b.bin", 5, SHA_B))
    candidates, disagreements = agree(fast, [m2, m3])
    assert candidates == {"a.bin": ["m2", "m3"], "b.bin": ["fast", "m2"]}
    assert [(d.mirror, d.path) for d in disagreements] == [("fast", "a.bin"), ("m3", "b.bin")]
    # Two mirrors that disagree: a tie, the better-ranked one wins.
    candidates, _ = agree(m2, [m3])
    assert candidates["b.bin"] == ["m2"]


@pytest.mark.parametrize("delta", [4096, -4096])
def test_two_mirrors_that_tie_keep_both_copies_and_the_bytes_decide(delta: int) -> None:
    """The best-ranked mirror lists a wrong size (same sha256): with only two mirrors there is
    no majority, so both copies are kept, its own first; the other's disagreement is
    standby (kept in reserve), not a verdict."""
    liar = _manifest("a", FileEntry("m.bin", 10_000 + delta, SHA_A), FileEntry("c", 1, SHA_B))
    honest = _manifest("b", FileEntry("m.bin", 10_000, SHA_A), FileEntry("c", 1, SHA_B))
    found, disagreements = copies(liar, [honest])
    assert found["m.bin"] == [
        Copy(FileEntry("m.bin", 10_000 + delta, SHA_A), ("a",)),
        Copy(FileEntry("m.bin", 10_000, SHA_A), ("b",)),
    ]
    assert found["c"] == [Copy(FileEntry("c", 1, SHA_B), ("a", "b"))]
    (d,) = disagreements
    assert (d.mirror, d.path, d.standby) == ("b", "m.bin", True)
    assert f"size 10000 != {10_000 + delta}" in d.reason and "no majority" in d.reason
    # agree() still answers with the first copy's mirrors.
    assert agree(liar, [honest])[0] == {"m.bin": ["a"], "c": ["a", "b"]}


def test_a_majority_keeps_one_copy_and_names_the_odd_mirror_outright() -> None:
    liar = _manifest("a", FileEntry("m.bin", 14_096, SHA_A))
    b = _manifest("b", FileEntry("m.bin", 10_000, SHA_A))
    c = _manifest("c", FileEntry("m.bin", 10_000, SHA_A))
    found, disagreements = copies(liar, [b, c])
    assert found == {"m.bin": [Copy(FileEntry("m.bin", 10_000, SHA_A), ("b", "c"))]}
    (d,) = disagreements
    assert (d.mirror, d.standby) == ("a", False)
    assert d.reason == "size 14096 != 10000"


def test_ties_among_more_mirrors_keep_every_copy_biggest_group_first() -> None:
    """2-2-1: no copy has more mirrors than every other; all three are kept, by the number of
    mirrors behind them, then rank. A mirror missing the file is no copy."""
    ms = [
        _manifest("m1", FileEntry("x", 3, SHA_A)),
        _manifest("m2", FileEntry("x", 4, SHA_A)),
        _manifest("m3", FileEntry("x", 4, SHA_A)),
        _manifest("m4", FileEntry("x", 3, SHA_A)),
        _manifest("m5", FileEntry("x", 3, SHA_B)),
        _manifest("m6"),
    ]
    found, disagreements = copies(ms[0], ms[1:])
    assert [c.mirrors for c in found["x"]] == [("m1", "m4"), ("m2", "m3"), ("m5",)]
    standby = {d.mirror for d in disagreements if d.standby}
    assert standby == {"m2", "m3", "m5"}
    assert [(d.mirror, d.reason) for d in disagreements if not d.standby] == [
        ("m6", "file missing")
    ]
    # 3-1-1 is a majority (a plurality): one copy.
    found, _ = copies(ms[1], [ms[2], _manifest("m7", FileEntry("x", 4, SHA_A)), ms[0], ms[4]])
    assert [c.mirrors for c in found["x"]] == [("m2", "m3", "m7")]


def test_settle_names_every_mirror_of_every_copy_the_bytes_proved_wrong() -> None:
    tried = [
        Copy(FileEntry("m.bin", 14_096, SHA_A), ("a",)),
        Copy(FileEntry("m.bin", 10_000, SHA_A), ("b",)),
        Copy(FileEntry("m.bin", 10_000, SHA_B), ("c", "d")),
    ]
    found = settle("m.bin", tried, 1, "verified, from b")
    assert [(d.mirror, d.standby) for d in found] == [("a", False), ("c", False), ("d", False)]
    assert found[0].reason == (
        "it lists size 14096, but the bytes (verified, from b) have size 10000"
    )
    assert "sha256 bbbbbbbbbbbb" in found[1].reason and "aaaaaaaaaaaa" in found[1].reason
    assert settle("m.bin", tried[:1], 0, "verified") == []
