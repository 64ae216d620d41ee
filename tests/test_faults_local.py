"""Local faults, for BOTH engines where a transfer is involved: kill -9, a full disk, a
read-only cache, concurrent pulls, stale locks, aria2c dying (issue 7, docs/reliability.md).

Pulls run against hub simulators on 127.0.0.1; the CLI runs in a subprocess where a process
has to die, in-process (``cli.main``) where its exit code and messages are what is checked.
Mounts (a small tmpfs, a read-only bind mount) need root: those tests skip, saying why,
elsewhere (CI runs as root).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import api
from modelget.engines import EngineName, EngineOptions, aria2c_path
from modelget.events import NullReporter
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/local"
REPO_DIR = "models--acme--local"
FILES = {"a.safetensors": 6 * 1024 * 1024 + 1, "b.safetensors": 10 * 1024 * 1024 + 7}
ENGINES = ["aria2", "httpx"]
FAST = EngineOptions(
    stall_timeout_s=2.0,
    read_timeout_s=2.0,
    connect_timeout_s=2.0,
    retry_wait_s=0.1,
    max_tries=3,
    min_split_bytes=1024 * 1024,
)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> EngineName:
    name: EngineName = request.param
    if name == "aria2" and aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    return name


@pytest.fixture(scope="module")
def contents() -> dict[str, bytes]:
    rng = random.Random(3)
    return {name: rng.randbytes(size) for name, size in FILES.items()}


@pytest.fixture
def repo_dir(tmp_path: Path, contents: dict[str, bytes]) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name, data in contents.items():
        (root / name).write_bytes(data)
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    return root


@pytest.fixture(autouse=True)
def own_probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "_mgcache"))


def start(sims: list[HubSimulator], repo_dir: Path, **kw: object) -> HubSimulator:
    sim = HubSimulator(**kw).start()  # type: ignore[arg-type]
    sims.append(sim)
    sim.add_repo(REPO, repo_dir)
    return sim


def catalogue(path: Path, *mirrors: HubSimulator) -> Path:
    body = "version: 1\nmirrors:\n"
    for m in mirrors:
        body += textwrap.indent(f"- name: {m.name}\n  kind: hf\n  endpoint: {m.url}\n", "  ")
    path.write_text(body)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served(sim: HubSimulator) -> int:
    """Body bytes of the weight files the simulator sent to pulls (not to probes)."""
    return sum(
        r.bytes_sent
        for r in sim.log
        if r.route == "hf-resolve"
        and r.method == "GET"
        and r.user_agent != "modelget-probe"
        and r.path.endswith(".safetensors")
    )


def assert_model(snapshot: Path, contents: dict[str, bytes]) -> None:
    for name, data in contents.items():
        assert sha((snapshot / name).read_bytes()) == sha(data), name
    assert (snapshot / "config.json").read_text() == '{"hidden_size": 8}\n'


def pull_cmd(cat: Path, cache: Path, engine: str, *extra: str) -> list[str]:
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


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str, options: EngineOptions = FAST) -> int:
    """``modelget ARGV`` in this process, with short timeouts (the CLI's EngineOptions())."""
    import modelget.engines
    from modelget import cli

    monkeypatch.setattr(modelget.engines, "EngineOptions", lambda: options)
    return cli.main(list(argv))


# --- mounts (root only) ------------------------------------------------------------------------


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[Path]:
    """``mount ARGS TARGET`` for the block, or skip the test with the reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a filesystem (CI runs as root)")
    target.mkdir(parents=True, exist_ok=True)
    res = _mount(*args, str(target))
    if res.returncode != 0:
        pytest.skip(f"cannot mount here: {res.stderr.strip() or res.returncode}")
    try:
        yield target
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


# --- disk full -----------------------------------------------------------------------------------


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem has no room left."""
    block = bytes(1024 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (len(block), 4096):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block[:size])
    finally:
        os.close(fd)


def test_disk_full_mid_pull_is_a_clear_error_nothing_corrupt_lands_and_it_resumes(
    engine: EngineName,
    tmp_path: Path,
    repo_dir: Path,
    contents: dict[str, bytes],
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cache is on a 100 MiB tmpfs (the plan needs the files + 64 MiB); once the pull is
    under way, the test fills the disk. One file at a time, so the second one meets it."""
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=100m", "tmpfs") as small:
        hub = start(sims, repo_dir, name="hub")
        hub.add_fault(Fault(route="hf-resolve", path_glob="*.safetensors", rate_bps=3e6))
        cat = catalogue(tmp_path / "m.yaml", hub)
        cache = small / "cache"
        filler = small / "filler"
        stop = threading.Event()

        def fill_the_disk() -> None:
            while not stop.wait(0.02):
                if served(hub) >= 1_000_000:
                    fill(filler)
                    return

        filling = threading.Thread(target=fill_the_disk, daemon=True)
        filling.start()
        opts = dataclasses.replace(FAST, max_concurrent_files=1)
        argv = ["pull", REPO, "--mirrors", str(cat), "--cache-dir", str(cache)]
        try:
            code = run_cli(monkeypatch, *argv, "--engine", engine, "--quiet", options=opts)
        finally:
            stop.set()
            filling.join()
        err = capsys.readouterr().err
        assert filler.exists(), "the disk was never filled"
        assert code == 1, err
        assert "error: disk-full" in err and "Traceback" not in err, err
        assert "free some space" in err
        # Nothing that is not complete and verified is in place.
        for snap in (cache / REPO_DIR / "snapshots").glob("*"):
            for f in snap.rglob("*"):
                if f.is_file():
                    assert sha(f.read_bytes()) == sha(contents.get(f.name, f.read_bytes()))
        for blob in (cache / REPO_DIR / "blobs").iterdir():
            if not blob.name.endswith((".incomplete", ".ranges", ".aria2")):
                assert blob.name in {sha(d) for d in contents.values()} or len(blob.name) == 40

        # Free the space: the same command finishes the pull.
        filler.unlink()
        hub.clear_faults()
        code = run_cli(monkeypatch, *argv, "--engine", engine, "--quiet")
        out, err = capsys.readouterr()
        assert code == 0, err
        assert_model(Path(out.strip()), contents)


# --- read-only cache -----------------------------------------------------------------------------


def test_a_read_only_cache_is_a_clear_error_and_a_complete_model_in_it_still_pulls(
    engine: EngineName,
    tmp_path: Path,
    repo_dir: Path,
    contents: dict[str, bytes],
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As root, chmod does not stop writes: the cache is a read-only bind mount."""
    hub = start(sims, repo_dir, name="hub")
    cat = catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "cache"
    complete = tmp_path / "complete"
    argv = ["pull", REPO, "--mirrors", str(cat), "--engine", engine, "--quiet"]
    assert run_cli(monkeypatch, *argv, "--cache-dir", str(complete)) == 0
    capsys.readouterr()
    cache.mkdir()
    with (
        mounted(cache, "--bind", str(cache)),
        mounted(complete, "--bind", str(complete)),
    ):
        for target in (cache, complete):
            res = _mount("-o", "remount,bind,ro", str(target))
            if res.returncode != 0:
                pytest.skip(f"cannot remount read-only: {res.stderr.strip()}")
        # An empty read-only cache: a clear error, no traceback, nothing fetched.
        hub.clear_log()
        code = run_cli(monkeypatch, *argv, "--cache-dir", str(cache))
        err = capsys.readouterr().err
        assert code == 1, err
        assert "Traceback" not in err and "read-only" in err.lower(), err
        assert "--cache-dir" in err  # the hint says how to pull elsewhere
        assert served(hub) == 0
        # The model is complete in a read-only cache: nothing to write, the pull succeeds.
        code = run_cli(monkeypatch, *argv, "--cache-dir", str(complete))
        out, err = capsys.readouterr()
        assert code == 0, err
        assert_model(Path(out.strip()), contents)
        assert served(hub) == 0


# --- processes: concurrent pulls, stale locks, aria2c dying ------------------------------------


def test_four_concurrent_pulls_of_one_model_transfer_each_file_once(
    engine: EngineName,
    tmp_path: Path,
    repo_dir: Path,
    contents: dict[str, bytes],
    sims: list[HubSimulator],
) -> None:
    hub = start(sims, repo_dir, name="hub")
    hub.add_fault(Fault(route="hf-resolve", path_glob="*.safetensors", rate_bps=8e6))
    cat = catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            pull_cmd(cat, cache, engine, "--quiet"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert_model(Path(paths.pop()), contents)
    total = sum(FILES.values())
    assert total <= served(hub) < total * 1.1, (served(hub), total)
    assert not list(cache.rglob("*.incomplete"))


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_pull(
    tmp_path: Path, repo_dir: Path, contents: dict[str, bytes], sims: list[HubSimulator]
) -> None:
    """Engine-independent (httpx here): a process takes the per-blob locks, starts writing
    the .incomplete files, and is killed with SIGKILL. The lock files stay on disk; the next
    pull neither waits for them nor trusts the partial files (no range map vouches for them)."""
    from modelget import layout
    from modelget.datatypes import FileEntry

    hub = start(sims, repo_dir, name="hub")
    cat = catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "cache"
    entries = [FileEntry(n, len(d), sha(d), lfs=True) for n, d in contents.items()]
    locks = [layout.lock_path(cache, REPO, e) for e in entries]
    partials = [layout.incomplete_path(cache, REPO, e) for e in entries]
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from filelock import FileLock
        held = []
        for lock, part in zip({[str(p) for p in locks]!r}, {[str(p) for p in partials]!r}):
            Path(lock).parent.mkdir(parents=True, exist_ok=True)
            Path(part).parent.mkdir(parents=True, exist_ok=True)
            held.append(FileLock(lock))
            held[-1].acquire()
            Path(part).write_bytes(b"garbage from a dead pull")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    dead = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    assert all(p.exists() for p in locks)

    class Notes(NullReporter):
        def __init__(self) -> None:
            self.texts: list[str] = []

        def on_message(self, level: str, text: str) -> None:
            self.texts.append(text)

    notes = Notes()
    result = api.pull(
        REPO, mirrors=cat, cache_dir=cache, engine="httpx", options=FAST, reporter=notes
    )
    assert result.status == "ok", result.failed
    assert_model(Path(result.path), contents)
    assert not any("another process" in t for t in notes.texts), notes.texts


def aria2c_children() -> list[int]:
    """Process ids of the aria2c processes this test process started."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            if name == "aria2c" and ppid == me:
                found.append(int(stat.parent.name))
    return found


def test_aria2c_killed_under_a_running_pull_is_restarted_and_the_pull_completes(
    tmp_path: Path, repo_dir: Path, contents: dict[str, bytes], sims: list[HubSimulator]
) -> None:
    if aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    hub = start(sims, repo_dir, name="hub")
    hub.add_fault(Fault(route="hf-resolve", path_glob="*.safetensors", rate_bps=1e6))
    cat = catalogue(tmp_path / "m.yaml", hub)
    killed: list[int] = []

    class KillAria2cOnce(NullReporter):
        def __init__(self) -> None:
            self.seen = 0
            self.texts: list[str] = []

        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            self.seen += nbytes
            if not killed and self.seen >= 3_000_000:
                for pid in aria2c_children():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

        def on_message(self, level: str, text: str) -> None:
            self.texts.append(text)

    reporter = KillAria2cOnce()
    result = api.pull(
        REPO,
        mirrors=cat,
        cache_dir=tmp_path / "cache",
        engine="aria2",
        options=dataclasses.replace(FAST, max_connections=4),
        reporter=reporter,
    )
    assert killed, "aria2c was never killed"
    assert result.status == "ok", result.failed
    assert_model(Path(result.path), contents)
    assert any("aria2c" in t and "restart" in t for t in reporter.texts), reporter.texts
    # What was on disk when it died was kept (its control file), not fetched again in full:
    # at most what arrived after the last save (aria2 saves every second; 4 connections at
    # 1 MB/s) is fetched twice.
    total = sum(FILES.values())
    assert served(hub) < total + 5_000_000, (served(hub), total)


# --- kill -9 at random points ------------------------------------------------------------------


def recorded(cache: Path, contents: dict[str, bytes]) -> int:
    """Bytes a next run will not fetch again: complete blobs, plus what each partial file's
    resume state (.ranges or .aria2) vouches for, or all of a file aria2c finished."""
    from modelget.engines.aria2 import _control_file_completed
    from modelget.engines.ranges import load_sidecar

    sizes = {sha(d): len(d) for d in contents.values()}
    blobs = cache / REPO_DIR / "blobs"
    total = 0
    for p in blobs.glob("*") if blobs.is_dir() else []:
        if p.name in sizes:
            total += sizes[p.name]
        elif p.name.endswith(".incomplete") and p.name[: -len(".incomplete")] in sizes:
            key = p.name[: -len(".incomplete")]
            sidecar = load_sidecar(p, key, sizes[key])
            control = Path(f"{p}.aria2")
            if sidecar is not None:
                total += sidecar.done.total()
            elif control.exists():
                total += _control_file_completed(control, sizes[key]) or 0
            elif p.stat().st_size == sizes[key]:
                total += sizes[key]  # aria2c finished it (and removed its control file)
    return total


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_points_then_rerun(
    seed: int,
    engine: EngineName,
    tmp_path: Path,
    repo_dir: Path,
    contents: dict[str, bytes],
    sims: list[HubSimulator],
) -> None:
    """The pull (and its aria2c) is killed with SIGKILL four times, at random moments (seeded)
    from its start: while it plans, transfers, verifies or places files. Each run may fetch
    again only what arrived after the last save of the resume state (every 0.5 s for httpx,
    1 s for aria2; 4 connections at 1 MB/s); the last run completes with the right bytes."""
    rng = random.Random(seed)
    hub = start(sims, repo_dir, name="hub")
    hub.add_fault(Fault(route="hf-resolve", path_glob="*.safetensors", rate_bps=1e6))
    cat = catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "cache"
    slack = 4_500_000 if engine == "aria2" else 2_500_000
    cmd = pull_cmd(cat, cache, engine, "--quiet", "--connections", "4")
    for _ in range(4):
        before = recorded(cache, contents)
        hub.clear_log()
        proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the pull and its aria2c, hard
        proc.wait()
        assert hub.wait_idle()
        progress = recorded(cache, contents) - before
        assert served(hub) - progress <= slack, (served(hub), progress)
    hub.clear_log()
    left = sum(FILES.values()) - recorded(cache, contents)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert_model(Path(res.stdout.strip()), contents)
    assert served(hub) <= left + slack, (served(hub), left)
    assert not list(cache.rglob("*.incomplete"))


def test_a_download_aria2c_finished_before_a_kill_is_verified_not_fetched_again(
    tmp_path: Path, repo_dir: Path, contents: dict[str, bytes], sims: list[HubSimulator]
) -> None:
    """aria2c removes its control file when a download completes; a pull killed between that
    and verification leaves a whole ``.incomplete`` with no resume state. The next run checks
    its digest instead of throwing it away (it used to re-fetch the whole file)."""
    if aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    hub = start(sims, repo_dir, name="hub")
    cat = catalogue(tmp_path / "m.yaml", hub)
    cache = tmp_path / "cache"
    kept = contents["b.safetensors"]
    blobs = cache / REPO_DIR / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha(kept)}.incomplete").write_bytes(kept)
    hub.clear_log()
    res = subprocess.run(
        pull_cmd(cat, cache, "aria2", "--quiet"), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert_model(Path(res.stdout.strip()), contents)
    # only the other file moved (plus a byte per file: the redirect resolution's 1-byte GET)
    assert served(hub) <= len(contents["a.safetensors"]) + len(contents)
