"""The aria2 engine on its own: a real aria2c against hub simulators on 127.0.0.1.

Each test checks what the servers saw (their request logs) as well as what landed on disk.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelget.engines import EngineOptions, FetchJob, FetchResult, SourceURL, aria2c_path
from modelget.engines.aria2.process import pid_alive
from modelget.events import NullReporter
from modelget.testing.hubsim import Fault, HubSimulator, RequestRecord

pytestmark = pytest.mark.aria2

REPO = "acme/weights"
NAME = "model.safetensors"  # LFS by the default patterns: redirected to the CDN when cdn=True
SIZE = 8 * 1024 * 1024 + 4321
FAST = EngineOptions(
    stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3, min_split_bytes=1024 * 1024
)


@pytest.fixture(autouse=True)
def need_aria2c() -> None:
    if aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(11).randbytes(SIZE)


@pytest.fixture
def repo_dir(tmp_path: Path, data: bytes) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / NAME).write_bytes(data)
    (root / "config.json").write_text('{"hidden_size": 8}\n')  # small, not LFS
    (root / "empty.txt").write_bytes(b"")
    return root


def start(sims: list[HubSimulator], repo_dir: Path, **kw: object) -> HubSimulator:
    token = kw.pop("token", None)
    sim = HubSimulator(**kw).start()  # type: ignore[arg-type]
    sims.append(sim)
    if token is not None:
        sim.add_repo(REPO, repo_dir, gated=True, token=str(token))
    else:
        sim.add_repo(REPO, repo_dir)
    return sim


@pytest.fixture
def engine() -> Iterator[object]:
    from modelget.engines.aria2 import Aria2Engine

    eng = Aria2Engine(FAST)
    yield eng
    eng.close()


def aria2(options: EngineOptions = FAST) -> object:
    from modelget.engines.aria2 import Aria2Engine

    return Aria2Engine(options)


def job(dest_dir: Path, *sources: SourceURL, name: str = NAME, size: int = SIZE) -> FetchJob:
    dest_dir.mkdir(parents=True, exist_ok=True)
    return FetchJob(
        key=name, path=name, size=size, dest=dest_dir / f"{name}.incomplete", sources=sources
    )


def src(sim: HubSimulator, mirror: str, name: str = NAME, token: str | None = None) -> SourceURL:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return SourceURL(mirror, sim.resolve_url(REPO, name), headers)


def run(
    eng: object, jobs: list[FetchJob], cancel: threading.Event | None = None
) -> list[FetchResult]:
    from modelget.engines.aria2 import Aria2Engine

    assert isinstance(eng, Aria2Engine)
    done: list[FetchResult] = []
    results = eng.run(
        jobs,
        reporter=NullReporter(),
        cancel=cancel or threading.Event(),
        on_complete=lambda _job, result: done.append(result),
    )
    # Every finished file was handed over, as it finished.
    assert sorted(r.path for r in results if r.ok) == sorted(r.path for r in done)
    return results


def transfers(sim: HubSimulator, name: str = NAME) -> list[RequestRecord]:
    """GETs that carried file bytes (not the one-byte resolve probes)."""
    return [
        r
        for r in sim.log
        if r.route in ("hf-resolve", "cdn")
        and r.method == "GET"
        and r.status in (200, 206)
        and r.bytes_sent > 1
        and (name in r.path or (r.route == "cdn" and name == NAME))  # the CDN serves NAME only
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- process and RPC -------------------------------------------------------------------------


def test_aria2_version_reads_the_installed_binary() -> None:
    from modelget.engines.aria2 import aria2_version

    version = aria2_version()
    assert version is not None and version[0].isdigit() and "." in version


def test_engine_owns_aria2c_and_close_kills_it(tmp_path: Path) -> None:
    from modelget.engines.aria2 import Aria2Engine

    eng = aria2()
    assert isinstance(eng, Aria2Engine) and eng.name == "aria2"
    before: int | None = eng.pid
    assert before is None  # the constructor starts nothing: prepare() (or run()) does
    eng.prepare()
    eng.prepare()  # cheap when called twice
    pid: int | None = eng.pid  # waits for the start under way
    assert pid is not None and pid_alive(pid)
    assert os.getpgid(pid) == pid  # its own process group
    private = eng._tmpdir
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((private / "aria2.conf").stat().st_mode) == 0o600
    eng.close()
    assert not pid_alive(pid)
    assert not private.exists()
    eng.close()  # idempotent


def test_close_works_before_prepare_and_while_aria2c_starts() -> None:
    from modelget.engines.aria2 import Aria2Engine

    never = aria2()
    assert isinstance(never, Aria2Engine)
    private = never._tmpdir
    never.close()  # never started: only the private directory to remove
    assert not private.exists() and never.pid is None
    never.prepare()  # after close: starts nothing
    assert never.pid is None

    starting = aria2()
    assert isinstance(starting, Aria2Engine)
    starting.prepare()
    starting.close()  # waits for the start under way, then stops it
    assert starting.pid is None or not pid_alive(starting.pid)
    assert not starting._tmpdir.exists()


def test_run_waits_for_a_start_under_way(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    from modelget.engines.aria2 import Aria2Engine

    assert isinstance(engine, Aria2Engine)
    sim = start(sims, repo_dir, name="hub")
    engine.prepare()
    small = (repo_dir / "config.json").read_bytes()
    j = job(tmp_path / "d", src(sim, "hub", "config.json"), name="config.json", size=len(small))
    [result] = run(engine, [j])
    assert result.ok and j.dest.read_bytes() == small


def _start_slow_download(eng: object, sim: HubSimulator, dest: Path, out: str) -> str:
    """Add a download straight to aria2c (throttled by the caller's fault) and wait until
    it has some bytes; returns its gid."""
    import time

    from modelget.engines.aria2 import Aria2Engine

    assert isinstance(eng, Aria2Engine)
    eng._ready()
    assert eng._client is not None
    gid = eng._client.call(
        "aria2.addUri",
        [[sim.resolve_url(REPO, NAME)], {"dir": str(dest), "out": out, "split": "2"}],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if int(eng._client.tell_status(gid, ["completedLength"])["completedLength"]) >= 256 * 1024:
            break
        time.sleep(0.05)
    return str(gid)


def test_close_kills_an_idle_aria2c_at_once_and_stopped_downloads_stay_resumable(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    # An idle aria2c needs a second to act on SIGTERM (its event loop's tick), so close()
    # kills it outright; that is safe only because a stopped download has already written
    # its control file (what a cancelled pull resumes from).
    import time

    from modelget.engines.aria2 import Aria2Engine, _control_file_completed

    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", rate_bps=1e6))
    eng = aria2()
    assert isinstance(eng, Aria2Engine)
    eng._ready()
    assert eng._client is not None and eng._proc is not None
    dest = tmp_path / "d"
    dest.mkdir()
    try:
        gid = _start_slow_download(eng, sim, dest, "partial")
        eng._client.force_remove(gid)
        deadline = time.monotonic() + 10
        while eng._client.tell_status(gid, ["status"])["status"] != "removed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stopped_at = int(eng._client.tell_status(gid, ["completedLength"])["completedLength"])
    finally:
        eng.close()
    assert eng._proc.returncode == -signal.SIGKILL  # idle: killed, not asked
    assert _control_file_completed(dest / "partial.aria2", SIZE) == stopped_at > 0


def test_close_during_a_download_keeps_its_control_file(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    # aria2c is busy: close() asks it to stop (SIGTERM), and the unfinished download keeps
    # the control file that lets the next run resume it.
    from modelget.engines.aria2 import Aria2Engine, _control_file_completed

    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", rate_bps=1e6))
    eng = aria2()
    assert isinstance(eng, Aria2Engine)
    eng._ready()
    assert eng._proc is not None
    dest = tmp_path / "d"
    dest.mkdir()
    try:
        _start_slow_download(eng, sim, dest, "partial")
    finally:
        eng.close()
    assert eng._proc.returncode != -signal.SIGKILL
    have = _control_file_completed(dest / "partial.aria2", SIZE)
    assert have is not None and 0 < have < SIZE


def test_rpc_listens_on_loopback_only_and_no_secret_is_on_a_command_line(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator]
) -> None:
    from modelget.engines.aria2 import Aria2Engine

    assert isinstance(engine, Aria2Engine)
    # A gated LFS file: resolved with the token, fetched by aria2c from the signed CDN URL.
    sim = start(sims, repo_dir, name="hub", cdn=True, token="hf_secret_token")
    [result] = run(engine, [job(tmp_path / "d", src(sim, "hub", token="hf_secret_token"))])
    assert result.ok, result
    assert transfers(sim) and all(r.route == "cdn" for r in transfers(sim))
    cmdline = Path(f"/proc/{engine.pid}/cmdline").read_bytes().decode()
    assert engine._secret not in cmdline
    assert "hf_secret_token" not in cmdline
    assert "--conf-path=" in cmdline and "--rpc-listen-all=false" in cmdline
    port = f"{engine.rpc_port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, _remote, state = line.split()[1:4]
            address, lport = local.rsplit(":", 1)
            if lport == port and state == "0A":  # LISTEN
                listening.append(address)
    assert listening
    loopback = {"0100007F", "00000000000000000000000001000000"}
    assert set(listening) <= loopback, listening
    # The log aria2c writes (warn level) holds neither the secret nor the token.
    log = engine._log_path.read_text(errors="replace") if engine._log_path.exists() else ""
    assert engine._secret not in log and "hf_secret_token" not in log


def test_aria2c_that_keeps_dying_fails_the_jobs_without_raising(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    """aria2c dying mid-run is started again (MAX_RESTARTS times); one that keeps dying
    fails the jobs, with the reason, and never raises."""
    from modelget.engines.aria2 import MAX_RESTARTS, Aria2Engine

    sim = start(sims, repo_dir, name="hub")
    sim.add_fault(Fault(route="hf-resolve", rate_bps=100e3))
    eng = aria2()
    assert isinstance(eng, Aria2Engine)
    eng.prepare()
    assert eng.pid is not None
    live: Aria2Engine = eng
    pids: set[int] = set()

    class KillOnBytes(NullReporter):
        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            pid = live.pid
            if pid is not None and pid_alive(pid):
                pids.add(pid)
                os.kill(pid, signal.SIGKILL)

    try:
        [result] = eng.run(
            [job(tmp_path / "d", src(sim, "hub"))], reporter=KillOnBytes(), cancel=threading.Event()
        )
    finally:
        eng.close()
    assert not result.ok
    assert result.error is not None and "aria2c exited unexpectedly" in result.error
    assert result.failure == "engine-died"  # the code callers decide on, not the text
    assert len(pids) == MAX_RESTARTS + 1


# --- transfers -------------------------------------------------------------------------------


def test_one_file_from_two_mirrors_gets_ranges_from_both(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    a = start(sims, repo_dir, name="a", cdn=True)
    b = start(sims, repo_dir, name="b", host_name="localhost")  # aria2 limits per host name
    for sim in (a, b):
        sim.add_fault(Fault(route="*", rate_bps=2e6))  # per connection
    j = job(tmp_path / "d", src(a, "a"), src(b, "b"))
    [result] = run(engine, [j])
    assert result.ok, result
    assert sha(j.dest.read_bytes()) == sha(data)
    for sim in (a, b):
        ranged = [r for r in transfers(sim) if r.range and r.range.startswith("bytes=")]
        assert ranged, f"{sim.name} served no range of the file"
    assert a.requests(listener="cdn") and all(r.route == "cdn" for r in transfers(a))
    assert sum(result.bytes_by_mirror.values()) == SIZE
    assert set(result.bytes_by_mirror) <= {"a", "b"}


@pytest.mark.parametrize("pipelining", ["on", "off"])
def test_a_big_files_range_requests_are_pipelined_a_segment_each(
    pipelining: str, tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipelined, aria2 asks for one 1 MiB segment per request (a CDN that paces each request
    after a head start gives each its head start), the first free one from the file's start;
    ``MODELGET_ARIA2_PIPELINING=0`` turns it off, and a connection asks for every byte up to
    the next busy segment at once."""
    monkeypatch.setenv("MODELGET_ARIA2_PIPELINING", "1" if pipelining == "on" else "0")
    size = 24 * 1024 * 1024 + 17
    body = random.Random(5).randbytes(size)
    root = tmp_path / "repo"
    root.mkdir()
    (root / NAME).write_bytes(body)
    sim = start(sims, root, name="hub", cdn=True)
    sim.add_fault(Fault(route="cdn", rate_bps=16e6))
    options = EngineOptions(
        stall_timeout_s=5.0, retry_wait_s=0.1, initial_connections=2, max_connections=2
    )
    eng = aria2(options)
    try:
        j = job(tmp_path / "d", src(sim, "hub"), size=size)
        [result] = run(eng, [j])
    finally:
        eng.close()  # type: ignore[attr-defined]
    assert result.ok, result
    assert sha(j.dest.read_bytes()) == sha(body)
    spans, starts = [], []
    for r in sorted(transfers(sim), key=lambda r: r.ts):
        if r.range and r.range.startswith("bytes="):
            first, _, last = r.range[len("bytes=") :].partition("-")
            spans.append(int(last or size - 1) - int(first) + 1)
            starts.append(int(first))
    assert spans, "no range request reached the CDN"
    if pipelining == "on":
        assert max(spans) <= 1024 * 1024, spans
        assert len(spans) >= 12, spans  # segment after segment, each asked for alone
        # In order from the file's start (its finished prefix is hashed as it grows), not a
        # region per connection (the second connection would start halfway).
        assert max(starts[:4]) < 8 * 1024 * 1024, starts
    else:
        assert max(spans) > 4 * 1024 * 1024, spans


def test_empty_file_and_several_files_in_one_run(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    sim = start(sims, repo_dir, name="hub", cdn=True)
    small = (repo_dir / "config.json").read_bytes()
    jobs = [
        job(tmp_path / "d", src(sim, "hub")),
        job(tmp_path / "d", src(sim, "hub", "config.json"), name="config.json", size=len(small)),
        job(tmp_path / "d", src(sim, "hub", "empty.txt"), name="empty.txt", size=0),
    ]
    results = run(engine, jobs)
    assert [r.ok for r in results] == [True, True, True], results
    assert [r.path for r in results] == [NAME, "config.json", "empty.txt"]
    assert jobs[0].dest.read_bytes() == data
    assert jobs[1].dest.read_bytes() == small
    assert jobs[2].dest.read_bytes() == b""


@pytest.mark.parametrize("fault", ["404", "reset", "unresolvable"])
def test_a_failing_source_does_not_stop_the_job(
    fault: str,
    engine: object,
    tmp_path: Path,
    repo_dir: Path,
    sims: list[HubSimulator],
    data: bytes,
) -> None:
    bad = start(sims, repo_dir, name="bad")
    good = start(sims, repo_dir, name="good", host_name="localhost")
    good.add_fault(Fault(route="hf-resolve", rate_bps=2e6))
    if fault == "404":  # the probe passes, every transfer after it is refused
        bad.add_fault(Fault(route="hf-resolve", status=404, skip=1))
    elif fault == "reset":
        bad.add_fault(Fault(route="hf-resolve", reset_after_bytes=128 * 1024, rate_bps=2e6))
    else:
        bad.add_fault(Fault(route="hf-resolve", status=500))
    j = job(tmp_path / "d", src(bad, "bad"), src(good, "good"))
    [result] = run(engine, [j])
    assert result.ok, result
    assert sha(j.dest.read_bytes()) == sha(data)
    if fault == "unresolvable":
        assert any(a.startswith("bad: ") and "HTTP 500" in a for a in result.attempts)
        assert not transfers(bad)
    assert sum(result.bytes_by_mirror.values()) == SIZE


def test_cancel_keeps_resumable_state_and_the_next_run_fetches_only_the_rest(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    from modelget.engines.aria2 import Aria2Engine

    sim = start(sims, repo_dir, name="hub", cdn=True)
    sim.add_fault(Fault(route="cdn", rate_bps=300e3))
    cancel = threading.Event()
    seen = 0
    lock = threading.Lock()

    class CancelHalfway(NullReporter):
        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            nonlocal seen
            with lock:
                seen += nbytes
                if seen >= SIZE // 3:
                    cancel.set()

    j = job(tmp_path / "d", src(sim, "hub"))
    eng = Aria2Engine(EngineOptions(max_connections=4, min_split_bytes=1024 * 1024))
    try:
        [first] = eng.run([j], reporter=CancelHalfway(), cancel=cancel)
        assert first.cancelled and not first.ok
        assert j.dest.exists() and Path(f"{j.dest}.aria2").exists()
        sim.clear_faults()
        sim.clear_log()
        # Throttled still, so that what the server counts as sent is what aria2c read.
        sim.add_fault(Fault(route="cdn", rate_bps=2e6))
        [second] = run(eng, [j])
    finally:
        eng.close()
    assert second.ok, second
    assert j.dest.read_bytes() == data
    assert 0 < second.resumed_bytes < SIZE
    assert second.resumed_bytes + sum(second.bytes_by_mirror.values()) == SIZE
    fetched_again = sum(r.bytes_sent for r in transfers(sim))
    # Slack: aria2's end game may fetch a 1 MiB piece twice (an idle connection takes over a
    # piece another one is still reading; seen in the server's log with the old engine too,
    # where the timing of the first connection's cut happened to stay under 1 MiB).
    assert fetched_again < SIZE - second.resumed_bytes + 2 * 1024 * 1024, (
        fetched_again,
        second.resumed_bytes,
    )


def test_a_partial_file_without_control_file_is_fetched_anew(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    sim = start(sims, repo_dir, name="hub")
    j = job(tmp_path / "d", src(sim, "hub"))
    j.dest.write_bytes(b"\0" * 1000)  # garbage from somewhere else, no .aria2 next to it
    [result] = run(engine, [j])
    assert result.ok and result.resumed_bytes == 0
    assert j.dest.read_bytes() == data


def test_an_expired_signed_url_is_resolved_again(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    from modelget.engines.aria2 import Aria2Engine

    # Signed URLs live 2 s. At 1 MB/s per connection, a connection that is cut after 3 MB
    # comes back after its URL has expired.
    sim = start(sims, repo_dir, name="hub", cdn=True, signed_url_ttl_s=2)
    sim.add_fault(Fault(route="cdn", rate_bps=1e6, reset_after_bytes=3_000_000))
    eng = Aria2Engine(
        EngineOptions(max_connections=2, retry_wait_s=0.1, max_tries=2, min_split_bytes=1 << 20)
    )
    j = job(tmp_path / "d", src(sim, "hub"))
    try:
        [result] = run(eng, [j])
    finally:
        eng.close()
    assert result.ok, result
    assert j.dest.read_bytes() == data
    assert sim.requests(listener="cdn", status=403), "the signed URL never expired mid-file"
    assert len(sim.requests(route="hf-resolve")) >= 2  # resolved again for a fresh URL


# --- credentials -----------------------------------------------------------------------------


def test_a_token_reaches_only_its_own_host(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    official = start(
        sims, repo_dir, name="official", cdn=True, host_name="localhost", token="hf_tok"
    )
    other = start(sims, repo_dir, name="other")
    small = (repo_dir / "config.json").read_bytes()
    jobs = [
        # LFS: the hub redirects to its CDN, which must not see the token.
        job(tmp_path / "d", src(official, "official", token="hf_tok"), src(other, "other")),
        # Served by the hub itself: the token cannot go with the other mirror's URI in one
        # aria2 download, so that mirror serves it alone.
        job(
            tmp_path / "d",
            src(official, "official", "config.json", token="hf_tok"),
            src(other, "other", "config.json"),
            name="config.json",
            size=len(small),
        ),
    ]
    results = run(engine, jobs)
    assert all(r.ok for r in results), results
    assert jobs[0].dest.read_bytes() == data and jobs[1].dest.read_bytes() == small
    hub_side = official.requests(listener="hub")
    assert hub_side and all(r.authorization == "Bearer hf_tok" for r in hub_side)
    cdn_side = official.requests(listener="cdn")
    assert cdn_side and all(r.authorization is None for r in cdn_side)
    assert other.log and all(r.authorization is None for r in other.log)
    assert any("official: skipped" in a for a in results[1].attempts)
    assert not transfers(official, "config.json")

    # The token's own mirror alone: aria2c never gets the token, so the job is handed back
    # (a pull fetches it with the httpx engine, see test_secrets.py), untouched.
    alone = job(
        tmp_path / "e",
        src(official, "official", "config.json", token="hf_tok"),
        name="config.json",
        size=len(small),
    )
    official.clear_log()
    [result] = run(engine, [alone])
    assert not result.ok and result.needs_headers and not result.cancelled
    assert not alone.dest.exists()
    assert not transfers(official, "config.json")
    probes = official.requests(listener="hub")
    assert probes and all(r.authorization == "Bearer hf_tok" for r in probes)


# --- hashing as the bytes arrive, connections ------------------------------------------------


def test_digests_are_computed_while_the_file_downloads(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    sim = start(sims, repo_dir, name="hub", cdn=True)
    sim.add_fault(Fault(route="cdn", rate_bps=2e6))  # several looks while it downloads
    j = job(tmp_path / "d", src(sim, "hub"))
    j = FetchJob(j.key, j.path, j.size, j.dest, j.sources, sha256=sha(data))
    before = time.perf_counter()
    [result] = run(engine, [j])
    assert result.ok, result
    assert result.digests is not None
    assert result.digests.size == SIZE and result.digests.sha256 == sha(data)
    # The instant aria2 had the last byte is handed over with it (the pull's ``verify_tail``
    # counts from there, the engine's own hashing of the rest included).
    assert result.last_byte_at is not None and before < result.last_byte_at < time.perf_counter()
    # A file with only a git blob sha1 known gets that digest instead.
    small = (repo_dir / "config.json").read_bytes()
    blob = hashlib.sha1(f"blob {len(small)}\0".encode() + small).hexdigest()
    k = job(tmp_path / "e", src(sim, "hub", "config.json"), name="config.json", size=len(small))
    k = FetchJob(k.key, k.path, k.size, k.dest, k.sources, git_sha1=blob)
    [result] = run(engine, [k])
    assert result.ok and result.digests is not None
    assert result.digests.git_sha1 == blob and result.digests.sha256 is None


def test_a_corrupted_middle_range_is_caught_with_hashing_on(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    from modelget.datatypes import FileEntry
    from modelget.errors import VerificationError
    from modelget.verify import check

    sim = start(sims, repo_dir, name="hub", cdn=True)
    # Bytes in the middle of the file come back flipped, in whatever range covers them.
    sim.add_fault(Fault(route="cdn", rate_bps=2e6, corrupt_offsets=(SIZE // 2, SIZE // 2 + 7)))
    j = job(tmp_path / "d", src(sim, "hub"))
    j = FetchJob(j.key, j.path, j.size, j.dest, j.sources, sha256=sha(data))
    [result] = run(engine, [j])
    assert result.ok, result  # the engine moved the bytes; verification judges them
    assert result.digests is not None and result.digests.sha256 != sha(data)
    assert result.digests.sha256 == sha(j.dest.read_bytes())  # the digest of what is on disk
    entry = FileEntry(NAME, SIZE, sha256=sha(data))
    with pytest.raises(VerificationError, match="sha256"):
        check(j.dest, entry, result.digests)


def test_a_resumed_download_leaves_hashing_to_the_executor(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    # Bytes from an earlier run are not followed piece by piece: no digests, the executor
    # hashes the finished file.
    from modelget.engines.aria2 import Aria2Engine

    sim = start(sims, repo_dir, name="hub", cdn=True)
    sim.add_fault(Fault(route="cdn", rate_bps=1e6))
    cancel = threading.Event()

    class CancelEarly(NullReporter):
        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            cancel.set()

    j = job(tmp_path / "d", src(sim, "hub"))
    j = FetchJob(j.key, j.path, j.size, j.dest, j.sources, sha256=sha(data))
    eng = Aria2Engine(FAST)
    try:
        [first] = eng.run([j], reporter=CancelEarly(), cancel=cancel)
        assert first.cancelled
        sim.clear_faults()
        [second] = run(eng, [j])
    finally:
        eng.close()
    assert second.ok and second.resumed_bytes > 0
    assert second.digests is None
    assert j.dest.read_bytes() == data


def test_connections_are_reported_and_the_peak_kept(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    from collections.abc import Mapping

    from modelget.engines.aria2 import Aria2Engine

    sim = start(sims, repo_dir, name="hub", cdn=True)
    sim.add_fault(Fault(route="cdn", rate_bps=2e6))
    seen: list[dict[str, int]] = []

    class Connections(NullReporter):
        def on_connections(self, counts: Mapping[str, int]) -> None:
            seen.append(dict(counts))

    eng = Aria2Engine(EngineOptions(max_connections=6, min_split_bytes=1 << 20))
    try:
        [result] = eng.run(
            [job(tmp_path / "d", src(sim, "hub"))], reporter=Connections(), cancel=threading.Event()
        )
    finally:
        eng.close()
    assert result.ok, result
    assert seen and all(set(c) == {"hub"} and 1 <= c["hub"] <= 6 for c in seen)
    assert eng.connections == {"hub": max(c["hub"] for c in seen)}
    # The file was split over several connections.
    ranged = [r for r in transfers(sim) if r.range]
    assert len(ranged) > 1


# --- the private directory after kill -9 -----------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _pids(owner: int, aria2c: int = 0, pidns: str | None = None) -> str:
    from modelget.engines.aria2 import _pid_namespace

    ns = _pid_namespace() if pidns is None else pidns
    return f"owner={owner}\naria2c={aria2c}\npidns={ns}\n"


def test_a_private_dir_left_by_kill_9_is_removed_at_the_next_start_and_live_ones_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelget.engines.aria2 import Aria2Engine

    root = tmp_path / "tmp"
    root.mkdir()
    # A pull's engine in another process, killed with SIGKILL (and its aria2c with it).
    code = (
        "import time\n"
        "from modelget.engines import EngineOptions\n"
        "from modelget.engines.aria2 import Aria2Engine\n"
        "e = Aria2Engine(EngineOptions())\n"
        "e.prepare()\n"
        "print(e._tmpdir, e.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "TMPDIR": str(root)}
    owner = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert owner.stdout is not None
        left_s, pid_s = owner.stdout.readline().split()
        left, aria2c = Path(left_s), int(pid_s)
        # Owner-only, and it says who owns it.
        assert stat.S_IMODE(left.stat().st_mode) == 0o700
        for name in ("aria2.conf", "aria2c.log", "pids"):
            assert stat.S_IMODE((left / name).stat().st_mode) == 0o600, name
        assert f"owner={owner.pid}\n" in (left / "pids").read_text()
        assert f"aria2c={aria2c}\n" in (left / "pids").read_text()
    finally:
        owner.kill()
        owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
    os.kill(aria2c, signal.SIGKILL)
    assert left.exists() and "rpc-secret=" in (left / "aria2.conf").read_text()

    live = root / "modelget-aria2-live"  # this very process owns it
    live.mkdir()
    (live / "pids").write_text(_pids(os.getpid()))
    live_aria2c = root / "modelget-aria2-child"  # its owner is gone, its aria2c is not
    live_aria2c.mkdir()
    (live_aria2c / "pids").write_text(_pids(_dead_pid(), aria2c=os.getpid()))
    starting = root / "modelget-aria2-starting"  # no pid file yet (or an older modelget)
    starting.mkdir()
    elsewhere = root / "modelget-aria2-otherns"  # another pid namespace: cannot tell
    elsewhere.mkdir()
    (elsewhere / "pids").write_text(_pids(_dead_pid(), pidns="pid:[1]"))
    other = root / "other-prefix"
    other.mkdir()
    (other / "pids").write_text(_pids(_dead_pid()))
    target = tmp_path / "not-ours"
    target.mkdir()
    (target / "pids").write_text(_pids(_dead_pid()))
    (root / "modelget-aria2-link").symlink_to(target)

    monkeypatch.setattr(tempfile, "tempdir", str(root))
    deadline = time.monotonic() + 30
    eng = Aria2Engine(FAST)
    try:
        while True:  # the killed aria2c may take a moment to be reaped
            eng.prepare()
            assert eng.pid is not None  # waits for the start, and the clean-up after it
            if not left.exists() or time.monotonic() > deadline:
                break
            eng.close()
            time.sleep(0.2)
            eng = Aria2Engine(FAST)
        assert not left.exists(), "the dead pull's directory (with its RPC secret) is still there"
        for kept in (live, live_aria2c, starting, elsewhere, other, target):
            assert kept.exists(), kept
        assert (root / "modelget-aria2-link").is_symlink()
        assert eng._tmpdir.exists()
    finally:
        eng.close()


def test_a_mirror_that_resolves_late_joins_the_running_download(
    engine: object, tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    a = start(sims, repo_dir, name="a")
    b = start(sims, repo_dir, name="b", host_name="localhost")  # aria2 limits per host name
    for sim in (a, b):
        sim.add_fault(Fault(route="hf-resolve", rate_bps=250e3))  # per connection
    # b's resolution (its first request) answers well after a's: the download starts on a.
    b.add_fault(Fault(route="hf-resolve", latency_s=0.5, times=1))
    j = job(tmp_path / "d", src(a, "a"), src(b, "b"))
    [result] = run(engine, [j])
    assert result.ok, result
    assert sha(j.dest.read_bytes()) == sha(data)
    first_a = min(r.ts for r in transfers(a))
    ranged_b = [r for r in transfers(b) if r.range and r.range.startswith("bytes=")]
    assert ranged_b, "b never joined the download"
    assert min(r.ts for r in ranged_b) > first_a  # it joined a download under way
    assert sum(result.bytes_by_mirror.values()) == SIZE


# --- scheduling big files over two mirrors (S10: no timing needed) ----------------------------


def _scheduler(
    tmp_path: Path, sizes: list[int]
) -> tuple[Any, list[Any], list[tuple[Any, int]], list[tuple[Any, list[str]]]]:
    """A ``_Run`` without aria2c: ``_schedule``'s decisions are recorded, not sent."""
    from modelget.engines import aria2 as a
    from modelget.engines.redirects import ResolvedURL

    run: Any = object.__new__(a._Run)
    run.results = []
    run.delivered = {}
    run.best_latency = None
    run.budget = a._Budget(EngineOptions(), NullReporter(), {})
    adds: list[tuple[Any, int]] = []
    joins: list[tuple[Any, list[str]]] = []
    run._add_many = lambda batch: adds.extend(batch)
    run._grow = lambda grow: None
    run._join = lambda s, new, restart: joins.append((s, [x.src.mirror for x in new]))
    states = []
    for n, size in enumerate(sizes):
        sources = tuple(SourceURL(m, f"http://{m}.test/f{n}") for m in ("slow", "fast"))
        job = FetchJob(f"k{n}", f"f{n}", size, tmp_path / f"f{n}", sources)
        state = a._Active(job, FetchResult(job.key, job.path, ok=False), 0.0)
        state.pending = [
            a._Source(s, ResolvedURL(s.url, s.url, 200, size, 0), False) for s in sources
        ]
        run.results.append(state.result)
        states.append(state)
    return run, states, adds, joins


def _first_running(
    tmp_path: Path, *, grown: str
) -> tuple[Any, list[Any], list[tuple[Any, int]], list[tuple[Any, list[str]]]]:
    """Two 64 MB files on ``slow`` and ``fast``: the first one running on both with 16
    connections each, ``grown``'s target grown to 32 (the other's still 16); nothing added
    yet since."""
    run, states, adds, joins = _scheduler(tmp_path, [64_000_000] * 2)
    first = states[0]
    run._schedule(states)
    first.gid, first.sources, first.pending = "g0", first.pending, None
    first.per_server = 16
    run.budget.adapt[grown].target = 32
    adds.clear()
    return run, states, adds, joins


def test_big_files_resolved_together_never_start_on_one_connection(tmp_path: Path) -> None:
    """The first look adds every file that resolved: a second big file on mirrors the first
    one just took waits (it used to get one connection, which aria2 gave to the first URI,
    the slow mirror, for the whole file: S10 16 s instead of 4)."""
    run, states, adds, _ = _scheduler(tmp_path, [16_000_000] * 3)
    run._schedule(states)
    assert [(s.job.path, per) for s, per in adds] == [("f0", 16)]
    assert states[1].pending is not None and states[2].pending is not None


def test_a_big_file_waits_for_a_much_faster_mirror_rather_than_start_on_a_slow_one(
    tmp_path: Path,
) -> None:
    """The slow mirror has room, the fast one (10 times faster per connection) has none: the
    file waits for the fast one instead of starting on the slow one alone, where it would end
    the pull (bench S10); it starts on both once the fast mirror has room."""
    from modelget.engines.aria2.watchdog import Delivered

    run, states, adds, _ = _first_running(tmp_path, grown="slow")
    first, second = states
    now = time.monotonic()
    run.delivered = {
        "fast": Delivered(bytes=20e6, conn_s=2.0, at=now, flowing_at=now),  # 10 MB/s each
        "slow": Delivered(bytes=2e6, conn_s=2.0, at=now, flowing_at=now),  # 1 MB/s each
    }
    run._schedule(states)
    assert adds == [] and second.pending is not None  # waits
    first.done = True  # the fast mirror's connections are free again
    run._schedule([second])
    assert [(s.job.path, per) for s, per in adds] == [("f1", 16)]
    assert sorted(x.src.mirror for x in second.pending or []) == ["fast", "slow"]


def test_a_big_file_starts_on_the_mirror_with_room_and_the_other_joins_later(
    tmp_path: Path,
) -> None:
    """aria2's per-host limit is the same for every host of a download: a file is started on
    the mirrors that have connections to spare, not on what is left of a saturated one."""
    run, states, adds, joins = _first_running(tmp_path, grown="fast")
    first, second = states
    run._schedule(states)
    assert [(s.job.path, per) for s, per in adds] == [("f1", 16)]
    assert [x.src.mirror for x in second.pending or []] == ["fast"]
    assert [x.src.mirror for x in second.parked] == ["slow"]
    # The first file is done: the slow mirror has room again and joins the running second
    # (which has plenty left: a join restarts the download inside).
    second.gid, second.sources, second.pending = "g1", second.pending or [], None
    second.per_server = 16
    first.done = True
    run._schedule([second])
    assert joins == [(second, ["slow"])] and not second.parked


# --- flushing what aria2c writes ------------------------------------------------------------


def test_a_download_is_flushed_while_it_runs_and_synced_before_it_is_handed_over(
    tmp_path: Path, sims: list[HubSimulator], data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aria2c fsyncs a data file before each control-file save, on its only thread; the
    engine's writeback thread flushes the running downloads' files in between (so that fsync
    is short), and a finishing thread makes each complete file durable before its hand-over
    (aria2c never does at the end)."""
    from modelget.engines.aria2 import run as run_mod
    from modelget.engines.aria2 import writeback

    calls: list[tuple[str, str, float]] = []
    real = writeback.datasync

    def spy(path: Path) -> None:
        real(path)
        calls.append((threading.current_thread().name, Path(path).name, time.monotonic()))

    monkeypatch.setattr(writeback, "datasync", spy)
    monkeypatch.setattr(run_mod, "datasync", spy)
    root = tmp_path / "repo"
    root.mkdir()
    (root / NAME).write_bytes(data)
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    sim = start(sims, root, name="hub")
    sim.add_fault(Fault(route="hf-resolve", path_glob="*.safetensors", rate_bps=2e6))
    options = EngineOptions(
        stall_timeout_s=5.0, retry_wait_s=0.1, initial_connections=2, max_connections=2
    )
    eng = aria2(options)
    handed: dict[str, float] = {}
    try:
        from modelget.engines.aria2 import Aria2Engine

        assert isinstance(eng, Aria2Engine)
        jobs = [
            job(tmp_path / "d", src(sim, "hub")),
            job(tmp_path / "d", src(sim, "hub", "config.json"), name="config.json", size=19),
        ]
        results = eng.run(
            jobs,
            reporter=NullReporter(),
            cancel=threading.Event(),
            on_complete=lambda j, _r: handed.__setitem__(j.path, time.monotonic()),
        )
    finally:
        eng.close()  # type: ignore[attr-defined]
    assert all(r.ok for r in results), results
    assert sha(jobs[0].dest.read_bytes()) == sha(data)
    big = f"{NAME}.incomplete"
    flushed = [
        t for name, f, t in calls if name.startswith("modelget-aria2-writeback") and f == big
    ]
    # ~2 s at 2 x 2 MB/s, a flush every 0.25 s: several while it ran, all before it was done.
    assert len(flushed) >= 2, calls
    assert max(flushed) < handed[NAME]
    # Each file's last sync came from a finishing thread, before its hand-over; a small file
    # (not followed by the writeback thread) too.
    for path, dest in ((NAME, big), ("config.json", "config.json.incomplete")):
        final = [
            t for name, f, t in calls if name.startswith("modelget-aria2-finish") and f == dest
        ]
        assert final and max(final) <= handed[path], (path, calls)
    assert not [c for c in calls if "writeback" in c[0] and c[1] == "config.json.incomplete"]


# --- the RPC client -----------------------------------------------------------------------------


def test_the_rpc_client_speaks_to_a_real_aria2c(engine: object) -> None:
    """Results, refusals as RPCError with aria2's code, a multicall mixing both, a wrong
    secret refused, and a kept-alive connection that aria2c closed is opened again."""
    from modelget.engines.aria2 import Aria2Engine
    from modelget.engines.aria2.rpc import Aria2RPC, RPCError

    assert isinstance(engine, Aria2Engine)
    engine._ready()
    client = engine._client
    assert client is not None
    assert "version" in client.get_version()
    with pytest.raises(RPCError) as refused:
        client.tell_status("0123456789abcdef")
    assert refused.value.code == 1 and "0123456789abcdef" in str(refused.value)
    good, bad = client.multicall(
        [("aria2.getGlobalStat", []), ("aria2.tellStatus", ["0123456789abcdef"])]
    )
    assert "numActive" in good
    assert isinstance(bad, RPCError) and bad.code == 1
    stranger = Aria2RPC(client.port, "not-the-secret")
    with pytest.raises(RPCError, match="Unauthorized"):
        stranger.get_global_stat()
    stranger.close()
    # aria2c drops an idle keep-alive connection; the next call opens another.
    assert client._conn is not None and client._conn.sock is not None
    client._conn.sock.shutdown(2)
    assert "numActive" in client.get_global_stat()
    # aria2p's API on the same aria2c, for inspection, still works
    assert engine.api.get_downloads() == []


def test_an_aria2_pull_loads_neither_aria2p_nor_requests(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], data: bytes
) -> None:
    """The engine speaks JSON-RPC itself: aria2p's import (its CLI, loguru, requests) cost
    0.12 s of CPU on the critical path of every pull."""
    sim = start(sims, repo_dir, name="hub")
    code = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from modelget.engines import EngineOptions, FetchJob, SourceURL\n"
        "from modelget.engines.aria2 import Aria2Engine\n"
        "from modelget.events import NullReporter\n"
        "d = Path(sys.argv[2]); d.mkdir()\n"
        f"job = FetchJob(key='m', path='m', size={SIZE}, dest=d / 'm.incomplete',"
        " sources=(SourceURL('hub', sys.argv[1], {}),))\n"
        "eng = Aria2Engine(EngineOptions())\n"
        "[r] = eng.run([job], reporter=NullReporter(), cancel=threading.Event())\n"
        "eng.close()\n"
        "print(r.ok, sorted(m for m in ('aria2p', 'requests', 'loguru') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, sim.resolve_url(REPO, NAME), str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "[]"]
    assert (tmp_path / "d" / "m.incomplete").read_bytes() == data


def test_a_complete_file_the_disk_will_not_sync_fails_instead_of_landing(
    tmp_path: Path, repo_dir: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last fdatasync before the hand-over failing (a full or failing disk) fails the
    file with the failure's code: it is never handed to verification as complete."""
    import errno

    from modelget.engines.aria2 import run as run_mod

    def refuse(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_mod, "datasync", refuse)
    sim = start(sims, repo_dir, name="hub")
    eng = aria2()
    try:
        [result] = run(eng, [job(tmp_path / "d", src(sim, "hub"))])
    finally:
        eng.close()  # type: ignore[attr-defined]
    assert not result.ok
    assert result.failure == "disk-full", result
    assert result.digests is None


def test_a_file_aria2c_finished_in_an_earlier_run_is_synced_before_it_is_handed_over(
    tmp_path: Path,
    repo_dir: Path,
    sims: list[HubSimulator],
    data: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole ``.incomplete`` with no control file (aria2c completed it, then the pull was
    killed) goes to verification without a byte fetched, and, like a file finished now,
    after its fdatasync (its bytes may still be only in the page cache)."""
    from modelget.engines.aria2 import run as run_mod
    from modelget.engines.aria2 import writeback

    synced: list[tuple[str, float]] = []
    real = writeback.datasync

    def spy(path: Path) -> None:
        real(path)
        synced.append((Path(path).name, time.monotonic()))

    monkeypatch.setattr(run_mod, "datasync", spy)
    sim = start(sims, repo_dir, name="hub")
    j = job(tmp_path / "d", src(sim, "hub"))
    j.dest.write_bytes(data)
    handed: list[float] = []
    eng = aria2()
    try:
        from modelget.engines.aria2 import Aria2Engine

        assert isinstance(eng, Aria2Engine)
        [result] = eng.run(
            [j],
            reporter=NullReporter(),
            cancel=threading.Event(),
            on_complete=lambda _j, _r: handed.append(time.monotonic()),
        )
    finally:
        eng.close()  # type: ignore[attr-defined]
    assert result.ok, result
    assert transfers(sim) == []
    assert [name for name, _ in synced] == [j.dest.name]
    assert handed and synced[0][1] <= handed[0]
