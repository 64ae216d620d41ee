"""make_plan is pure: manifest + sources + local state + free space -> plan."""

from __future__ import annotations

import pytest

from modelget.datatypes import Alternative, FileEntry, FileSource, Manifest
from modelget.errors import InsufficientDiskSpaceError, NoMirrorError
from modelget.plan import MIN_RESERVE_BYTES, make_plan, required_bytes

BIG = FileEntry("model.safetensors", 1_000_000_000, "a" * 64, lfs=True)
SMALL = FileEntry("config.json", 600, git_sha1="1" * 40)
REF = Manifest("org/model", "main", "c" * 40, (BIG, SMALL), "hub")
SOURCES = {
    BIG.path: [FileSource("hub", "http://hub/big"), FileSource("mirror", "http://mirror/big")],
    SMALL.path: [FileSource("hub", "http://hub/small")],
}


def test_plan_lists_files_sources_and_totals() -> None:
    plan = make_plan(
        REF, [BIG, SMALL], SOURCES, free_bytes=10**12, throughput_bps={"hub": 50e6, "mirror": 50e6}
    )
    assert [i.entry.path for i in plan.items] == ["config.json", "model.safetensors"]
    big = plan.items[1]
    assert [s.mirror for s in big.sources] == ["hub", "mirror"]
    assert plan.total_bytes == plan.fetch_bytes == BIG.size + SMALL.size
    assert plan.required_bytes == required_bytes(plan.fetch_bytes)
    assert plan.eta_s == pytest.approx(plan.fetch_bytes / 100e6)
    assert plan.commit == "c" * 40 and plan.manifest_mirror == "hub"


def test_present_files_are_not_fetched() -> None:
    plan = make_plan(
        REF, [BIG, SMALL], SOURCES, present={BIG.path}, free_bytes=0 + MIN_RESERVE_BYTES + 600
    )
    assert [i.present for i in plan.items] == [False, True]
    assert plan.fetch_bytes == SMALL.size
    assert [i.entry.path for i in plan.to_fetch] == ["config.json"]


def test_everything_present_needs_no_space() -> None:
    plan = make_plan(REF, [BIG, SMALL], SOURCES, present={BIG.path, SMALL.path}, free_bytes=0)
    assert plan.fetch_bytes == 0 and plan.required_bytes == 0 and plan.eta_s == 0.0


def test_refuses_when_the_disk_is_too_small() -> None:
    with pytest.raises(InsufficientDiskSpaceError) as info:
        make_plan(REF, [BIG, SMALL], SOURCES, free_bytes=BIG.size)
    assert "not enough disk space" in info.value.message
    assert info.value.hint


def test_a_file_with_no_agreeing_mirror_is_an_error() -> None:
    with pytest.raises(NoMirrorError, match=r"model\.safetensors"):
        make_plan(REF, [BIG], {BIG.path: []}, free_bytes=None)


def test_reserve_is_at_least_the_minimum() -> None:
    assert required_bytes(1) == 1 + MIN_RESERVE_BYTES
    assert required_bytes(10**12) == 10**12 + 10**10


def test_alternatives_of_a_tie_go_into_the_item_in_order() -> None:
    """Where the mirrors tie on a file, its other copies ride along in the plan item (the
    executor tries them in order); files without a tie have none."""
    other = FileEntry(BIG.path, BIG.size - 4096, BIG.sha256, lfs=True)
    alt = Alternative(other, (FileSource("mirror", "http://mirror/big"),))
    sources = {BIG.path: [FileSource("hub", "http://hub/big")], SMALL.path: SOURCES[SMALL.path]}
    plan = make_plan(REF, [BIG, SMALL], sources, alternatives={BIG.path: [alt]})
    by_path = {i.entry.path: i for i in plan.items}
    assert by_path[BIG.path].alternatives == (alt,)
    assert [s.mirror for s in by_path[BIG.path].sources] == ["hub"]
    assert by_path[SMALL.path].alternatives == ()
