"""``pull --layout modelscope``: files where the real ModelScope client (modelscope-hub) finds
them with ``snapshot_download(ID, local_files_only=True)``, on both engines, against the hub
simulator (its HF and ModelScope APIs) on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from modelget import api, cli, layout, record
from modelget.datatypes import FileEntry, Mirror, MirrorKind
from modelget.engines import EngineName, EngineOptions, aria2c_path
from modelget.errors import OfflineMissingError, UsageError
from modelget.execute import Target
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/tiny-0.5B"  # a dot: modelscope-hub keeps it (the legacy clients wrote ___)
MS_ID = "acme-ms/tiny-0.5B"
WEIGHTS = "model.safetensors"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3)


@pytest.fixture(params=["aria2", "httpx"])
def engine(request: pytest.FixtureRequest) -> EngineName:
    name: EngineName = request.param
    if name == "aria2" and aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    return name


def ms_snapshot_download() -> Any:
    """The real client's ``snapshot_download`` (modelscope-hub's legacy-signature one):
    a skip where it is not installed, a failure in CI."""
    try:
        from modelscope_hub.compat.snapshot_download import snapshot_download
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("modelscope-hub is required in CI (a test extra)")
        pytest.skip("modelscope-hub not installed")
    from modelscope_hub import set_default_config

    set_default_config(None)  # it caches the cache dir per process: read MODELSCOPE_CACHE now
    return snapshot_download


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden": 8}\n')
    (root / "sub" / "notes.txt").write_text("hello\n")
    (root / WEIGHTS).write_bytes(os.urandom(1_500_000))
    return root


@pytest.fixture
def mirrors(tmp_path: Path, repo: Path, sims: list[HubSimulator]) -> tuple[Path, HubSimulator]:
    """A catalogue of an HF hub and a ModelScope mirror (with its id_map), both serving
    ``repo``; the ModelScope simulator is returned for its request log."""
    hub = HubSimulator(name="hub").start()
    ms = HubSimulator(name="ms").start()
    sims += [hub, ms]
    hub.add_repo(REPO, repo)
    ms.add_repo(REPO, repo, ms_id=MS_ID)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n"
        f"  - name: ms\n    kind: modelscope\n    endpoint: {ms.url}\n"
        '    id_map:\n      "acme/*": "acme-ms/*"\n'
    )
    return cat, ms


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fetched(result: Any) -> list[str]:
    return sorted(f.path for f in result.files if f.status == "fetched")


def test_pull_lands_where_the_modelscope_client_finds_it_offline(
    engine: EngineName, tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    snapshot_download = ms_snapshot_download()
    cat, _ms = mirrors
    ms_cache = Path(os.environ["MODELSCOPE_CACHE"])  # conftest's, under the test's home
    result = api.pull(REPO, mirrors=cat, engine=engine, options=FAST, layout="modelscope")
    assert result.status == "ok"
    snap = ms_cache / "models" / "acme-ms--tiny-0.5B" / "snapshots" / "master"
    assert Path(result.path) == snap
    # The snapshot holds the model's files and nothing else (modelget's metadata is beside it).
    assert files_of(snap) == files_of(repo)
    assert not any(p.is_symlink() for p in snap.rglob("*"))
    meta = snap.parent.parent / ".modelget" / "master"
    assert (meta / "download" / f"{WEIGHTS}.metadata").is_file()
    assert list((meta / "modelget").glob("*.json"))
    assert not list(meta.rglob("*.incomplete"))
    # The real client, no network (conftest refuses any connect that is not to 127.0.0.1, and
    # no endpoint is configured for it).
    assert Path(snapshot_download(MS_ID, local_files_only=True)) == snap
    assert Path(snapshot_download(MS_ID, local_files_only=True, cache_dir=str(ms_cache))) == snap
    # The HF cache was only read.
    hf_cache = Path(os.environ["HF_HUB_CACHE"]) if "HF_HUB_CACHE" in os.environ else None
    assert hf_cache is None or not (hf_cache / "models--acme--tiny-0.5B").exists()


def test_only_modelscope_mirrors_on_the_command_line_choose_the_modelscope_layout(
    tmp_path: Path,
    repo: Path,
    mirrors: tuple[Path, HubSimulator],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The user asked for ModelScope (``--only`` a ModelScope mirror): its layout, unasked."""
    from modelget import cli

    cat, _ms = mirrors
    ms_cache = Path(os.environ["MODELSCOPE_CACHE"])
    code = cli.main(["pull", REPO, "--mirrors", str(cat), "--only", "ms", "--quiet"])
    assert code == 0
    snap = ms_cache / "models" / "acme-ms--tiny-0.5B" / "snapshots" / "master"
    assert Path(capsys.readouterr().out.strip()) == snap
    assert files_of(snap) == files_of(repo)
    # --only the hf mirror, or both: the Hugging Face cache as usual.
    assert cli.main(["pull", REPO, "--mirrors", str(cat), "--only", "hub", "--quiet"]) == 0
    assert "models--acme--tiny-0.5B" in capsys.readouterr().out


def test_cache_dir_overrides_modelscope_cache_and_a_rerun_fetches_nothing(
    engine: EngineName,
    tmp_path: Path,
    repo: Path,
    mirrors: tuple[Path, HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    snapshot_download = ms_snapshot_download()
    cat, ms = mirrors
    root = tmp_path / "ms-root"
    code = cli.main(
        [
            *("pull", REPO, "--layout", "modelscope", "--cache-dir", str(root)),
            *("--mirrors", str(cat), "--engine", engine, "--quiet"),
        ]
    )
    out = capsys.readouterr().out.strip()
    snap = root / "models" / "acme-ms--tiny-0.5B" / "snapshots" / "master"
    assert code == 0 and Path(out) == snap
    assert not (Path(os.environ["MODELSCOPE_CACHE"]) / "models").exists()
    assert Path(snapshot_download(MS_ID, local_files_only=True, cache_dir=str(root))) == snap
    monkeypatch.setenv("MODELSCOPE_CACHE", str(root))
    assert Path(ms_snapshot_download()(MS_ID, local_files_only=True)) == snap

    ms.clear_log()
    again = api.pull(REPO, mirrors=cat, engine=engine, options=FAST, layout="modelscope")
    assert Path(again.path) == snap and again.bytes_fetched == 0
    assert {f.status for f in again.files} == {"reused"}
    assert not ms.requests(route="ms-file")
    plan = api.plan(REPO, mirrors=cat, layout="modelscope")
    assert all(i.present for i in plan.items)


def test_a_corrupted_file_is_fetched_again(
    engine: EngineName, tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    snapshot_download = ms_snapshot_download()
    cat, _ms = mirrors
    first = api.pull(REPO, mirrors=cat, engine=engine, options=FAST, layout="modelscope")
    weights = Path(first.path) / WEIGHTS
    good = weights.read_bytes()
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    weights.write_bytes(bad)  # a new modification time: the recorded stamp no longer matches
    plain = api.pull(REPO, mirrors=cat, engine=engine, options=FAST, layout="modelscope")
    assert fetched(plain) == [WEIGHTS] and weights.read_bytes() == good
    # Changed without its modification time: only --repair's hashing sees it.
    st = weights.stat()
    weights.write_bytes(bad)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    same = api.pull(REPO, mirrors=cat, engine=engine, options=FAST, layout="modelscope")
    assert fetched(same) == []  # the stamp matches: that is what --repair is for
    fixed = api.pull(
        REPO, mirrors=cat, engine=engine, options=FAST, layout="modelscope", repair=True
    )
    assert fetched(fixed) == [WEIGHTS] and weights.read_bytes() == good
    assert Path(snapshot_download(MS_ID, local_files_only=True)) == Path(first.path)


def test_bytes_that_fail_their_digest_never_reach_the_snapshot(
    tmp_path: Path, repo: Path, sims: list[HubSimulator]
) -> None:
    bad = HubSimulator(name="bad").start()
    sims.append(bad)
    bad.add_repo(REPO, repo, ms_id=MS_ID)
    bad.add_fault(Fault(route="*", path_glob=WEIGHTS, corrupt_offsets=(1000,)))
    cat = tmp_path / "m.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: bad\n    kind: hf\n    endpoint: {bad.url}\n")
    root = tmp_path / "ms-root"
    result = api.pull(
        REPO, mirrors=cat, cache_dir=root, engine="httpx", options=FAST, layout="modelscope"
    )
    assert result.status == "partial"
    # No ModelScope mirror in the catalogue: the repo id as given.
    snap = root / "models" / "acme--tiny-0.5B" / "snapshots" / "master"
    assert Path(result.path) == snap and not (snap / WEIGHTS).exists()
    assert (snap / "config.json").is_file()
    quarantined = list((snap.parent.parent / ".modelget" / "master" / "quarantine").iterdir())
    assert quarantined and all(q.name.endswith(".bad") for q in quarantined)


def test_offline_pull_answers_from_the_modelscope_layout(
    tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    cat, _ms = mirrors
    root = tmp_path / "ms-root"
    pulled = api.pull(
        REPO, [WEIGHTS], mirrors=cat, cache_dir=root, engine="httpx", options=FAST,
        layout="modelscope", revision="main",
    )  # fmt: skip
    assert Path(pulled.path).name == "main"  # the revision string names the snapshot
    offline = api.pull(
        REPO, [WEIGHTS], cache_dir=root, mirrors=cat, layout="modelscope", revision="main",
        offline=True,
    )  # fmt: skip
    assert offline.path == pulled.path and offline.commit == pulled.commit
    assert {f.status for f in offline.files} == {"reused"}
    # The snapshot's record is found from its path (load-test's integrity check reads it).
    found = record.record_of_dir(Path(pulled.path))
    assert found is not None and found[0].commit == pulled.commit and WEIGHTS in found[0].files
    with pytest.raises(OfflineMissingError, match=r"config\.json"):
        api.pull(
            REPO, cache_dir=root, mirrors=cat, layout="modelscope", revision="main", offline=True
        )


def test_local_dir_and_the_modelscope_layout_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--local-dir"):
        api.pull(REPO, local_dir=tmp_path / "d", layout="modelscope", offline=True)
    with pytest.raises(UsageError, match="unknown layout"):
        api.pull(REPO, layout="conda", offline=True)  # type: ignore[arg-type]


def test_the_layout_is_modelscope_only_when_the_pull_is_narrowed_to_modelscope() -> None:
    def mirror(name: str, kind: MirrorKind) -> Mirror:
        return Mirror(name=name, kind=kind, endpoint=f"https://{name}.example")

    assert layout.auto_layout(None) == "hf"
    assert layout.auto_layout([mirror("ms", "modelscope")]) == "modelscope"
    assert layout.auto_layout([mirror("ms", "modelscope"), mirror("hf", "hf")]) == "hf"
    assert layout.auto_layout([]) == "hf"


def test_target_keeps_partial_files_locks_and_quarantine_beside_the_snapshot(
    tmp_path: Path,
) -> None:
    snap = layout.ms_snapshot_dir(tmp_path, MS_ID, "master")
    assert layout.is_ms_snapshot(snap)
    assert not layout.is_ms_snapshot(tmp_path / "models--acme--x" / "snapshots" / "c")
    assert not layout.is_ms_snapshot(tmp_path / "plain")
    target = Target(tmp_path / "hf", REPO, "c" * 40, snap)
    entry = FileEntry("sub/w.bin", 3, "a" * 64, None, True)
    meta = tmp_path / "models" / "acme-ms--tiny-0.5B" / ".modelget" / "master"
    assert target.final(entry) == snap / "sub" / "w.bin"
    for path in (target.incomplete(entry), target.lock(entry), target.quarantine_dir()):
        assert path.is_relative_to(meta), path
    assert target.cached_blob(entry) == tmp_path / "hf" / "models--acme--tiny-0.5B" / "blobs" / (
        "a" * 64
    )
