"""The httpx engine against the hub simulator on 127.0.0.1: ranges, faults, resume, tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from modelget.engines import EngineOptions, FetchJob, FetchResult, SourceURL
from modelget.engines.httpx_engine import HttpxEngine, RateLimiter
from modelget.engines.ranges import RangeSet, Sidecar, load_sidecar, save_sidecar, sidecar_path
from modelget.events import NullReporter
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/blob"
SIZE = 6 * 1024 * 1024 + 12345
FAST = EngineOptions(
    stall_timeout_s=2.0, retry_wait_s=0.05, max_tries=3, min_split_bytes=1024 * 1024
)


class Recorder(NullReporter):
    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []
        self.resumed: list[int] = []
        self.bytes = 0
        self.lock = threading.Lock()

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        with self.lock:
            self.failed.append((mirror, reason))

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        self.resumed.append(have_bytes)

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        with self.lock:
            self.bytes += nbytes


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("repo")
    (d / "weights.bin").write_bytes(os.urandom(SIZE))
    (d / "empty.txt").write_bytes(b"")
    return d


def start(sims: list[HubSimulator], repo_dir: Path, **kw: object) -> HubSimulator:
    sim = HubSimulator(**kw).start()  # type: ignore[arg-type]
    sim.add_repo(REPO, repo_dir)
    sims.append(sim)
    return sim


def job_for(
    dest_dir: Path, repo_dir: Path, *sources: SourceURL, path: str = "weights.bin"
) -> FetchJob:
    data = (repo_dir / path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return FetchJob(
        key=digest,
        path=path,
        size=len(data),
        dest=dest_dir / f"{digest}.incomplete",
        sources=tuple(sources),
        sha256=digest,
    )


def run(job: FetchJob, reporter: Recorder | None = None, **opts: object) -> FetchResult:
    options = dataclasses.replace(FAST, **opts)  # type: ignore[arg-type]
    engine = HttpxEngine(options)
    done: list[FetchResult] = []
    try:
        (result,) = engine.run(
            [job],
            reporter=reporter or Recorder(),
            cancel=threading.Event(),
            on_complete=lambda j, r: done.append(r),
        )
    finally:
        engine.close()
    assert (result in done) == result.ok
    return result


def body_bytes(sim: HubSimulator) -> int:
    return sim.file_bytes_sent("weights.bin")


def digest_ok(job: FetchJob) -> bool:
    return hashlib.sha256(job.dest.read_bytes()).hexdigest() == job.sha256


def test_segments_come_from_both_mirrors_and_the_bytes_are_right(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    a = start(sims, repo_dir, name="a")
    b = start(sims, repo_dir, name="b", host_name="localhost")
    job = job_for(
        tmp_path,
        repo_dir,
        SourceURL("a", a.resolve_url(REPO, "weights.bin"), max_connections=2),
        SourceURL("b", b.resolve_url(REPO, "weights.bin"), max_connections=2),
    )
    result = run(job)
    assert result.ok, result
    assert digest_ok(job)
    assert set(result.bytes_by_mirror) == {"a", "b"}
    assert sum(result.bytes_by_mirror.values()) == SIZE
    for sim in (a, b):
        ranges = [r.range for r in sim.requests(route="hf-resolve")]
        assert ranges and all(r and r.startswith("bytes=") for r in ranges)
    assert not sidecar_path(job.dest).exists()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault(route="hf-resolve", ignore_range=True), "ignores Range"),
        (Fault(route="hf-resolve", wrong_content_range=4096), "wrong Content-Range"),
        (Fault(route="hf-resolve", html_error_200=True), "HTML page"),
        (Fault(route="hf-resolve", status=404), "HTTP 404"),
        (Fault(route="hf-resolve", reset_after_bytes=300_000), None),
        # A stalled connection's range is split and the good mirror takes it over, so the file
        # can finish before the stalled mirror has failed often enough to be dropped.
        (Fault(route="hf-resolve", stall_after_bytes=300_000, stall_s=30), None),
    ],
    ids=["ignore-range", "wrong-content-range", "html-200", "404", "resets", "stalls"],
)
def test_a_bad_mirror_is_dropped_and_the_good_one_finishes_the_file(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], fault: Fault, reason: str | None
) -> None:
    good = start(sims, repo_dir, name="good")
    bad = start(sims, repo_dir, name="bad", host_name="localhost")
    bad.add_fault(fault)
    job = job_for(
        tmp_path,
        repo_dir,
        SourceURL("bad", bad.resolve_url(REPO, "weights.bin"), max_connections=2),
        SourceURL("good", good.resolve_url(REPO, "weights.bin"), max_connections=2),
    )
    reporter = Recorder()
    result = run(job, reporter)
    assert result.ok, result
    assert digest_ok(job)
    assert any(a.startswith("bad: ") for a in result.attempts)
    assert all(a.startswith("bad: ") for a in result.attempts)
    if reason is None:
        # A mirror that resets now and then keeps its share until it fails max_tries times in
        # a row; the bytes it sent before each reset are kept.
        assert reporter.failed in ([], [("bad", reporter.failed[0][1] if reporter.failed else "")])
        assert result.bytes_by_mirror.get("bad", 0) > 0
    else:
        assert [m for m, _ in reporter.failed] == ["bad"]
        assert reason in reporter.failed[0][1], reporter.failed


def test_a_stalled_connection_taken_over_on_its_own_mirror_is_no_mirror_failure(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    """One request of the only mirror stalls (as a flow does on a full link, waiting out its
    retransmission timeout): another connection to the same mirror takes its range over.
    The attempts say so; no warning blames the mirror."""
    sim = start(sims, repo_dir, name="hub")
    handle = sim.add_fault(
        Fault(route="hf-resolve", stall_after_bytes=300_000, stall_s=30, times=1)
    )
    job = job_for(
        tmp_path,
        repo_dir,
        SourceURL("hub", sim.resolve_url(REPO, "weights.bin"), max_connections=4),
    )
    reporter = Recorder()
    before = set(threading.enumerate())
    result = run(job, reporter, stall_timeout_s=30.0)
    assert result.ok, result
    assert digest_ok(job)
    assert sim.fault_hits(handle) == 1
    assert any(a.startswith("hub: stalled") for a in result.attempts), result.attempts
    assert reporter.failed == []
    # The run ended with the stalled request still on the books: its connection was cut and
    # every worker, idle ones included, left with the run (none waited on it, none lingers).
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("modelget-")]
    assert left == [], left


def test_retry_after_on_429_is_honoured_and_the_only_mirror_recovers(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", status=429, retry_after=1, times=1))
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    result = run(job)
    assert result.ok, result
    assert digest_ok(job)
    assert any("HTTP 429" in a for a in result.attempts)


def test_an_expired_signed_url_is_resolved_again_not_given_up(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub", cdn=True)
    sim.add_fault(Fault(route="cdn", expire_signed_urls=True, times=1))
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    result = run(job, max_connections=1)
    assert result.ok, result
    assert digest_ok(job)
    assert any("resolving again" in a for a in result.attempts)
    assert len(sim.requests(route="hf-resolve")) >= 2


def test_the_token_goes_to_the_mirror_never_to_its_cdn_redirect(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub", cdn=True)
    other = start(sims, repo_dir, name="other", host_name="localhost")
    job = job_for(
        tmp_path,
        repo_dir,
        SourceURL(
            "hub", sim.resolve_url(REPO, "weights.bin"), {"Authorization": "Bearer hf_secret"}
        ),
        SourceURL("other", other.resolve_url(REPO, "weights.bin")),
    )
    assert run(job).ok
    hub_requests = sim.requests(route="hf-resolve")
    cdn_requests = sim.requests(route="cdn")
    assert hub_requests and cdn_requests
    assert all(r.authorization == "Bearer hf_secret" for r in hub_requests)
    assert all(r.authorization is None for r in cdn_requests)
    assert all(r.authorization is None for r in other.log)


def test_resume_fetches_only_the_missing_ranges(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    data = (repo_dir / "weights.bin").read_bytes()
    half = SIZE // 2
    with open(job.dest, "wb") as f:
        f.truncate(SIZE)
        f.write(data[:half])
    save_sidecar(job.dest, Sidecar(job.key, SIZE, RangeSet([(0, half)])))
    reporter = Recorder()
    result = run(job, reporter)
    assert result.ok and digest_ok(job)
    assert result.resumed_bytes == half and reporter.resumed == [half]
    assert body_bytes(sim) == SIZE - half
    assert all(
        r.range and not r.range.startswith("bytes=0-") for r in sim.requests(route="hf-resolve")
    )


def test_a_partial_file_without_a_valid_sidecar_is_started_over(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    job.dest.write_bytes(b"\xff" * SIZE)  # garbage that no sidecar vouches for
    sidecar_path(job.dest).write_text("{not json")
    result = run(job)
    assert result.ok and digest_ok(job) and result.resumed_bytes == 0
    assert body_bytes(sim) == SIZE


def test_a_file_that_changed_upstream_is_restarted_not_mixed(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    with open(job.dest, "wb") as f:
        f.truncate(SIZE)
    save_sidecar(
        job.dest, Sidecar(job.key, SIZE, RangeSet([(0, 4096)]), {"hub": '"an-older-version"'})
    )
    result = run(job)
    assert not result.ok and "changed" in (result.error or "")
    assert not job.dest.exists() and not sidecar_path(job.dest).exists()
    again = run(job)
    assert again.ok and digest_ok(job) and again.resumed_bytes == 0


def test_cancel_keeps_a_resumable_partial_file(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", rate_bps=2e6))
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    cancel = threading.Event()

    class CancelAfterAMegabyte(Recorder):
        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            super().on_bytes(path, nbytes, mirror)
            if self.bytes >= 1024 * 1024:
                cancel.set()

    engine = HttpxEngine(FAST)
    try:
        (result,) = engine.run([job], reporter=CancelAfterAMegabyte(), cancel=cancel)
    finally:
        engine.close()
    assert result.cancelled and not result.ok
    sidecar = load_sidecar(job.dest, job.key, SIZE)
    assert sidecar is not None and 1024 * 1024 <= sidecar.done.total() < SIZE
    sim.clear_faults()
    again = run(job)
    assert again.ok and digest_ok(job) and again.resumed_bytes == sidecar.done.total()


def test_an_empty_file_needs_no_request(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    job = job_for(
        tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "empty.txt")), path="empty.txt"
    )
    result = run(job)
    assert result.ok and job.dest.read_bytes() == b""


def test_no_mirror_left_lists_what_each_did(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    a = start(sims, repo_dir, name="a")
    b = start(sims, repo_dir, name="b", host_name="localhost")
    a.add_fault(Fault(route="hf-resolve", status=404))
    b.add_fault(Fault(route="hf-resolve", status=503))
    job = job_for(
        tmp_path,
        repo_dir,
        SourceURL("a", a.resolve_url(REPO, "weights.bin"), max_connections=1),
        SourceURL("b", b.resolve_url(REPO, "weights.bin"), max_connections=1),
    )
    result = run(job)
    assert not result.ok and not result.cancelled
    assert "a: HTTP 404" in (result.error or "") and "b: HTTP 503" in (result.error or "")
    assert len(b.requests(route="hf-resolve")) == FAST.max_tries


def test_rate_limiter_spaces_grants_by_size_over_rate() -> None:
    limiter = RateLimiter(1_000_000, burst_s=0.0)
    never = threading.Event()
    limiter.take(200_000, never)
    # The next grant has to wait for the first one's 0.2 s of budget.
    assert 0.1 < limiter.take(1, never) <= 0.2


# --- the pull-wide scheduler at work (issue 14) ------------------------------------------------


class Connections(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.counts: list[dict[str, int]] = []

    def on_connections(self, counts: Mapping[str, int]) -> None:
        with self.lock:
            self.counts.append(dict(counts))


def run_many(
    jobs: list[FetchJob], reporter: Recorder, **opts: object
) -> tuple[list[FetchResult], HttpxEngine]:
    options = dataclasses.replace(FAST, **opts)  # type: ignore[arg-type]
    engine = HttpxEngine(options)
    try:
        results = engine.run(jobs, reporter=reporter, cancel=threading.Event())
    finally:
        engine.close()
    return results, engine


def test_digests_are_computed_from_the_bytes_on_disk_as_they_arrive(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    result = run(job)
    assert result.ok and result.digests is not None
    assert result.digests.size == SIZE
    assert result.digests.sha256 == job.sha256


def test_prefix_hashing_catches_a_corrupted_middle_range(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    """One mirror flips bytes in the middle of the file. The digest computed while the bytes
    arrived does not match, so verification refuses the file without reading it again."""
    from modelget.datatypes import FileEntry
    from modelget.errors import VerificationError
    from modelget.verify import check

    good = start(sims, repo_dir, name="good")
    bad = start(sims, repo_dir, name="bad", host_name="localhost")
    bad.add_fault(Fault(route="hf-resolve", corrupt_offsets=tuple(range(0, SIZE, 256 * 1024))))
    job = job_for(
        tmp_path,
        repo_dir,
        SourceURL("good", good.resolve_url(REPO, "weights.bin")),
        SourceURL("bad", bad.resolve_url(REPO, "weights.bin")),
        path="weights.bin",
    )
    result = run(job, initial_connections=4)
    assert result.ok and result.digests is not None
    assert result.bytes_by_mirror.get("bad", 0) > 0, "the corrupting mirror sent nothing"
    assert result.digests.sha256 != job.sha256
    assert result.digests.sha256 == hashlib.sha256(job.dest.read_bytes()).hexdigest()
    entry = FileEntry(path="weights.bin", size=SIZE, sha256=job.sha256)
    with pytest.raises(VerificationError):
        check(job.dest, entry, result.digests)


def test_one_pool_for_many_files_small_ones_at_once(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(12):
        (repo / f"small{i}.json").write_bytes(os.urandom(1000 + i))
    (repo / "weights.bin").write_bytes(os.urandom(SIZE))
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    sim.add_repo(REPO, repo)
    dest = tmp_path / "dest"
    dest.mkdir()
    jobs = [
        job_for(dest, repo, SourceURL("hub", sim.resolve_url(REPO, p.name)), path=p.name)
        for p in sorted(repo.iterdir())
    ]
    reporter = Connections()
    results, engine = run_many(jobs, reporter, max_connections=32, initial_connections=4)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    for job in jobs:
        assert hashlib.sha256(job.dest.read_bytes()).hexdigest() == job.sha256
    # The twelve small files went out together, beside the big file's own connections.
    assert engine.connections["hub"] > 4
    assert engine.connections["hub"] <= 32


def test_connections_grow_on_a_link_capped_per_connection(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", rate_bps=500_000))  # per connection
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    reporter = Connections()
    result = run(job, reporter, initial_connections=1, max_connections=16)
    assert result.ok and digest_ok(job)
    seen = [c["hub"] for c in reporter.counts]
    assert seen and seen[0] == 1
    assert max(seen) >= 4, seen  # 1 → 2 → 4: each doubling about doubled the rate


def test_a_mirror_answering_429_gets_fewer_connections(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", status=429, retry_after=1, skip=2, times=1))
    sim.add_fault(Fault(route="hf-resolve", rate_bps=2_000_000))
    job = job_for(tmp_path, repo_dir, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    reporter = Connections()
    result = run(job, reporter, initial_connections=8, max_connections=8)
    assert result.ok and digest_ok(job)
    seen = [c["hub"] for c in reporter.counts]
    assert seen[0] == 8
    assert min(seen) < 8, seen  # halved after the 429


def test_requests_in_a_row_reuse_their_connection(tmp_path: Path, repo_dir: Path) -> None:
    """A request whose range came whole hands its connection to the next one (keep-alive): a
    response left before its end of message would close it, and each request would pay a
    new handshake (a TLS one on a real mirror) and a new slow start."""
    from modelget import settings
    from modelget.testing.nginx import NginxServer, nginx_available

    if not nginx_available():
        if settings.require_fixtures() or os.environ.get("CI"):
            pytest.fail("nginx is required here (scripts/bootstrap installs it)")
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")
    with NginxServer(repo_dir) as nginx:
        job = job_for(tmp_path, repo_dir, SourceURL("cdn", f"{nginx.url}/weights.bin"))
        result = run(job, initial_connections=1, max_connections=1)
        assert result.ok and digest_ok(job)
        ranges = [e for e in nginx.access_log(min_entries=2) if e["status"] == 206]
    assert len(ranges) >= 2  # 1 connection, chunks of a quarter of what is left: several
    assert len({e["connection"] for e in ranges}) == 1, ranges


def test_socket_reads_are_bigger_than_httpcores_64_kib() -> None:
    # httpcore reads 64 KiB at a time and has no per-client setting; the engine raises its
    # class attribute (on a fast link each read is a turn of the Python path: 64 KiB reads made
    # a 4 GB loopback pull 30 % slower). If httpcore moves the attribute, this says so.
    from httpcore._sync.http11 import HTTP11Connection

    from modelget.engines.httpx_engine import READ_BYTES

    engine = HttpxEngine(EngineOptions())
    try:
        assert READ_BYTES > 64 * 1024
        assert HTTP11Connection.READ_NUM_BYTES >= READ_BYTES
    finally:
        engine.close()


def test_a_slow_fsync_of_one_file_does_not_hold_another_files_completion(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complete file is fsync'd before it is handed over; a disk slow to take one file's
    last bytes (seconds) must not hold the hashing and the hand-over of the others (it did:
    the hashing thread fsync'd each file in turn, 0.4 s of bench S2's pull)."""
    files = tmp_path / "repo"
    files.mkdir()
    (files / "weights.bin").write_bytes((repo_dir / "weights.bin").read_bytes())
    (files / "second.bin").write_bytes(os.urandom(SIZE // 2))
    sim = start(sims, files)
    first = job_for(tmp_path, files, SourceURL("hub", sim.resolve_url(REPO, "weights.bin")))
    second = job_for(
        tmp_path, files, SourceURL("hub", sim.resolve_url(REPO, "second.bin")), path="second.bin"
    )
    handed: list[str] = []
    second_done = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        held = threading.current_thread().name.startswith("modelget-finish") and os.readlink(
            f"/proc/self/fd/{fd}"
        ) == str(first.dest)
        if held:  # the first file's final fsync: the disk takes its time ...
            second_done.wait(20)  # ... until the second file was handed over (or 20 s)
        real_fsync(fd)

    def on_complete(job: FetchJob, result: FetchResult) -> None:
        handed.append(job.path)
        if job.path == "second.bin":
            second_done.set()

    monkeypatch.setattr(os, "fsync", fsync)
    engine = HttpxEngine(FAST)
    try:
        results = engine.run(
            [first, second],
            reporter=Recorder(),
            cancel=threading.Event(),
            on_complete=on_complete,
        )
    finally:
        engine.close()
    assert all(r.ok for r in results), results
    assert second_done.is_set()
    # Whatever finished first on the wire, the first file could only be handed over after
    # the second: its fsync waited for that.
    assert handed == ["second.bin", "weights.bin"]
    assert digest_ok(first) and digest_ok(second)
