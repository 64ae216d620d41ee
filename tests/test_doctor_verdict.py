"""The doctor's pure decisions, one finder at a time, from literal records: no server, no
probing of this machine. (tests/test_doctor.py judges whole reports and runs the checks.)"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from modelget.doctor.machine import memory_check, parse_meminfo
from modelget.doctor.network import sample_checks, tls_check
from modelget.doctor.report import Check, Finding, MirrorReport, Slot
from modelget.doctor.verdict import (
    PullMirrors,
    disk_vs_network,
    fs_status,
    machine_findings,
    memory_status,
    mirror_findings,
    mirror_notes,
    mirror_rates,
    pull_mirrors,
    reachable,
    slowest_link,
    space_findings,
    space_status,
)
from modelget.probe import RangeSample
from modelget.sizes import fmt_bytes, fmt_rate, fmt_seconds

MB = 1_000_000
GB = 1_000_000_000


def m(name: str, *checks: Check) -> MirrorReport:
    return MirrorReport(name, "hf", f"http://{name}", list(checks))


LIVE = (Check("tcp", "ok", 0.001, "s"), Check("ttfb", "ok", 0.02, "s"))
HAS = m("has", *LIVE, Check("repo", "ok", "yes"))
LACKS = m("lacks", *LIVE, Check("repo", "warn", "no-repo"))
DEAD = m("dead", Check("tcp", "fail", detail="connection refused"), Check("ttfb", "skip"))


def codes(findings: Sequence[Finding]) -> list[tuple[str, str]]:
    return [(f.level, f.code) for f in findings]


# --- which mirrors a pull would use ---------------------------------------------------------


def test_reachable_needs_tcp_tls_and_an_http_answer() -> None:
    assert reachable(HAS)
    assert not reachable(DEAD)
    assert not reachable(m("badtls", Check("tcp", "ok"), Check("tls", "fail"), Check("ttfb", "ok")))
    assert not reachable(m("silent", Check("tcp", "ok"), Check("ttfb", "fail")))
    # The metadata call answering is an HTTP answer too, even when the file GET failed.
    assert reachable(m("meta", Check("tcp", "ok"), Check("repo", "warn"), Check("ttfb", "fail")))


def test_pull_mirrors_sorts_reachable_candidates_and_lacking() -> None:
    pool = pull_mirrors([HAS, LACKS, DEAD], "acme/tiny")
    assert [x.name for x in pool.reachable] == ["has", "lacks"]
    assert [x.name for x in pool.unreachable] == ["dead"]
    assert [x.name for x in pool.candidates] == ["has"]
    assert [x.name for x in pool.lacking] == ["lacks"]
    # Without a repo id every reachable mirror is a candidate.
    assert [x.name for x in pull_mirrors([HAS, LACKS, DEAD], None).candidates] == ["has", "lacks"]


# --- mirrors --------------------------------------------------------------------------------


def test_mirror_findings_blocking_problems_one_at_a_time() -> None:
    assert codes(mirror_findings([], pull_mirrors([], None), None)) == [
        ("fail", "no-mirror-enabled")
    ]
    (dead,) = mirror_findings([DEAD], pull_mirrors([DEAD], "a/b"), "a/b")
    assert dead.code == "no-mirror-reachable" and "dead (tcp: connection refused)" in dead.message
    (missing,) = mirror_findings([LACKS], pull_mirrors([LACKS], "a/b"), "a/b")
    assert missing.code == "repo-missing"
    assert "a/b is on no reachable mirror: lacks (does not have it)" in missing.message
    assert mirror_findings([HAS, LACKS], pull_mirrors([HAS, LACKS], "a/b"), "a/b") == []


def test_mirror_notes_name_the_dead_the_rangeless_and_the_lacking() -> None:
    rangeless = m("norange", *LIVE, Check("repo", "ok", "yes"), Check("range", "warn", 200))
    notes = mirror_notes(pull_mirrors([HAS, rangeless, LACKS, DEAD], "a/b"), "a/b")
    assert codes(notes) == [
        ("warn", "mirror-unreachable"),
        ("warn", "no-range"),
        ("info", "repo-not-on-mirror"),
    ]
    assert notes[2].message == "Mirror lacks does not have it: a/b comes from the others."
    # Nothing to compare with: the blocking findings speak instead.
    assert mirror_notes(PullMirrors((), (DEAD,), ()), "a/b") == []


# --- space ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "repo_bytes", "expected"),
    [
        (None, 10, "skip"),
        (5, 10, "fail"),
        (500 * MB, 10, "warn"),
        (2 * GB, 10, "ok"),
        (2 * GB, None, "ok"),
    ],
)
def test_space_status(free: int | None, repo_bytes: int | None, expected: str) -> None:
    assert space_status(free, repo_bytes) == expected


def test_space_findings_against_the_repo_or_the_1_gb_floor() -> None:
    (f,) = space_findings(3 * GB, "a/b", 5 * GB, "/cache")
    assert (f.level, f.code) == ("fail", "disk-space")
    assert f.message.startswith("Only 3.0 GB free at the cache (/cache); a/b is 5.0 GB.")
    # The repo fits: a small disk is not worth a word.
    assert space_findings(500 * MB, "a/b", 10 * MB, "/cache") == []
    assert codes(space_findings(500 * MB, None, None, "/cache")) == [("warn", "disk-space-low")]
    assert space_findings(None, "a/b", 10, "/cache") == []


# --- the slowest link -----------------------------------------------------------------------


def test_slowest_link_by_latency_for_a_small_repo() -> None:
    name, (f,) = slowest_link({"near": 0.01, "far": 0.4}, {}, None, None)
    assert name == "far" and (f.level, f.code) == ("info", "slowest-mirror")
    assert "mirror far (TTFB 400 ms; fastest: near, TTFB 10 ms)" in f.message


def test_slowest_link_by_throughput_for_a_big_repo() -> None:
    ttfb = {"thin": 0.01, "wide": 0.3}
    rates = {"thin": 5 * MB, "wide": 200 * MB}
    name, (f,) = slowest_link(ttfb, rates, 10 * GB, "a/b")
    assert name == "thin"
    assert "mirror thin (5.0 MB/s; fastest: wide, 200.0 MB/s)" in f.message


def test_slowest_link_falls_back_to_latency_when_a_rate_is_missing() -> None:
    name, _ = slowest_link({"thin": 0.01, "wide": 0.3}, {"wide": 200 * MB}, 10 * GB, "a/b")
    assert name == "wide"


def test_slowest_link_warns_from_one_second_and_speaks_of_one_mirror_alone() -> None:
    _, (f,) = slowest_link({"a": 0.01, "b": 1.5}, {}, None, None)
    assert f.level == "warn"
    name, (one,) = slowest_link({"a": 0.02}, {"a": 50 * MB}, 10 * MB, "a/b")
    assert name == "a" and one.message == "Only one mirror has a/b: a (TTFB 20 ms, 50.0 MB/s)."
    assert slowest_link({}, {}, None, None) == (None, [])


def test_mirror_rates_skips_mirrors_without_a_first_byte_or_a_rate() -> None:
    fast = m("fast", Check("ttfb", "ok", 0.01, "s"), Check("throughput", "ok", 9e7, "B/s"))
    nothru = m("nothru", Check("ttfb", "ok", 0.02, "s"), Check("throughput", "skip"))
    nottfb = m("nottfb", Check("ttfb", "fail"), Check("throughput", "ok", 1e6, "B/s"))
    assert mirror_rates([fast, nothru, nottfb]) == ({"fast": 0.01, "nothru": 0.02}, {"fast": 9e7})


# --- disk against network -------------------------------------------------------------------


def test_disk_vs_network_three_ways_and_unmeasured() -> None:
    rates = {"a": 100 * MB, "b": 80 * MB}
    limits, found = disk_vs_network(50 * MB, rates)
    assert limits is True and codes(found) == [("warn", "disk-limits")]
    assert "below the best mirror's 100.0 MB/s (a)" in found[0].message
    limits, found = disk_vs_network(150 * MB, rates)
    assert limits is False and codes(found) == [("info", "disk-may-limit")]
    assert "slower than all 2 mirrors together (180.0 MB/s)" in found[0].message
    limits, found = disk_vs_network(500 * MB, rates)
    assert limits is False and codes(found) == [("info", "network-limits")]
    assert disk_vs_network(None, rates) == (None, [])
    assert disk_vs_network(50 * MB, {}) == (None, [])


# --- this machine ---------------------------------------------------------------------------


def test_machine_findings() -> None:
    local = [
        Check("disk-free", "fail", detail="not judged here"),
        Check("filesystem", "warn", "nfs4"),
        Check("memory", "warn", 5 * MB, "B", "5.0 MB available of 8.0 GB"),
        Check("disk-write", "fail", detail="EACCES"),
        Check("aria2c", "warn"),
        Check("gpu", "fail", detail="broken"),
    ]
    found = machine_findings(local, "/cache")
    assert codes(found) == [
        ("fail", "cache-not-writable"),
        ("fail", "gpu-failed"),
        ("warn", "aria2c-missing"),
        ("warn", "cache-on-network-fs"),
        ("warn", "low-memory"),
    ]
    assert found[0].message.startswith("Cannot use the cache at /cache: EACCES.")
    assert codes(machine_findings([Check("filesystem", "warn", "tmpfs")], "/c")) == [
        ("warn", "cache-in-memory")
    ]
    assert machine_findings([Check("filesystem", "ok", "ext4")], "/c") == []


def test_filesystem_and_memory_statuses() -> None:
    assert [fs_status(t) for t in ("ext4", "tmpfs", "nfs4", "fuse.s3fs")] == [
        "ok",
        "warn",
        "warn",
        "warn",
    ]
    assert (memory_status(500 * MB), memory_status(2 * GB)) == ("warn", "ok")


def test_memory_check_from_meminfo_text_and_the_cgroup_limit() -> None:
    info = parse_meminfo("MemTotal:  8000000 kB\nMemAvailable: 4000000 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 8_192_000_000, "MemAvailable": 4_096_000_000}
    c = memory_check(info, "2000000000")
    assert (c.status, c.value) == ("ok", 4_096_000_000)
    assert c.detail == "4.1 GB available of 8.2 GB; this cgroup may use at most 2.0 GB"
    assert memory_check(info, "max").detail == "4.1 GB available of 8.2 GB"
    assert memory_check({"MemTotal": 8 * GB, "MemFree": 10 * MB}, "").status == "warn"
    assert memory_check({}, "").status == "skip"


# --- a mirror's sample and handshake --------------------------------------------------------


def test_sample_checks_from_a_range_sample() -> None:
    ok = RangeSample(206, "http://cdn/x", 1, ttfb_s=0.05, bytes=4 * MB, first_chunk=MB, seconds=0.5)
    ttfb, rng, thru = sample_checks(ok, "model.safetensors")
    assert ttfb == Check(
        "ttfb", "ok", 0.05, "s", "first byte of model.safetensors after 1 redirect(s) to cdn"
    )
    assert (rng.status, rng.value) == ("ok", 206)
    assert (thru.status, thru.value, thru.unit) == ("ok", 6 * MB, "B/s")

    whole = RangeSample(200, "http://h/x", 0, ttfb_s=0.05, bytes=MB, first_chunk=MB)
    ttfb, rng, thru = sample_checks(whole, "f")
    assert (rng.status, rng.value) == ("warn", 200)
    assert thru.status == "skip" and "came in one read" in thru.detail

    for bad, detail in [
        (None, "GET f: still redirected after 5 requests"),
        (RangeSample(404, "http://h/x", 0), "GET f: HTTP 404, no bytes"),
    ]:
        checks = sample_checks(bad, "f")
        assert [(c.name, c.status) for c in checks] == [
            ("ttfb", "fail"),
            ("range", "skip"),
            ("throughput", "skip"),
        ]
        assert checks[0].detail == detail


def test_tls_check_warns_when_the_certificate_expires_soon() -> None:
    assert tls_check(0.01, "TLSv1.3, X", 90).status == "ok"
    soon = tls_check(0.01, "TLSv1.3, X", 3)
    assert soon.status == "warn" and soon.detail == "TLSv1.3, X; certificate valid for 3 more days"
    assert tls_check(0.01, "TLSv1.3, X", None) == Check("tls", "ok", 0.01, "s", "TLSv1.3, X")


# --- the records and the units --------------------------------------------------------------


def test_a_slot_fails_the_check_that_was_waiting_and_skips_the_rest() -> None:
    slot = Slot(("dns", "tcp", "ttfb"))
    slot.put(Check("dns", "ok", 0.001, "s"))
    assert [(c.name, c.status) for c in slot.result(2.0)] == [
        ("dns", "ok"),
        ("tcp", "fail"),
        ("ttfb", "skip"),
    ]
    assert slot.result(2.0)[1].detail == "no answer within 2 s"
    slot.fail_current("unexpected error: boom")
    assert [(c.status, c.detail) for c in slot.result(2.0)[1:]] == [
        ("fail", "unexpected error: boom"),
        ("skip", "not reached"),
    ]


def test_units_for_people() -> None:
    assert [fmt_bytes(n) for n in (999, 1000, 2_500_000, 3 * 10**15)] == [
        "999 B",
        "1.0 KB",
        "2.5 MB",
        "3000.0 TB",
    ]
    assert (fmt_rate(45 * MB), fmt_rate(12 * 10**9)) == ("45.0 MB/s", "12.0 GB/s")
    assert (fmt_seconds(0.0304), fmt_seconds(12.34)) == ("30 ms", "12.3 s")
