"""modelget verify / ls / rm on real cache trees made by real pulls from the hub simulator."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.cache import VerifyResult
from modelget.errors import EXIT_VERIFY, LayoutError, NotInCacheError
from modelget.testing import fixtures
from modelget.testing.hubsim import HubSimulator

REPO = fixtures.MINILM_REPO_ID
FOLDER = "models--sentence-transformers--all-MiniLM-L6-v2"
SHARD2 = "model-00002-of-00004.safetensors"
SHARD3 = "model-00003-of-00004.safetensors"


@pytest.fixture
def sim() -> Iterator[HubSimulator]:
    s = HubSimulator(name="hub").start()
    yield s
    s.stop()


def _catalogue(tmp_path: Path, sim: HubSimulator) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            mirrors:
              - name: hub
                kind: hf
                endpoint: {sim.url}
            """
        )
    )
    return path


def _pull(tmp_path: Path, sim: HubSimulator, **kw: object) -> Path:
    result = api.pull(
        REPO,
        mirrors=_catalogue(tmp_path, sim),
        cache_dir=tmp_path / "cache",
        engine="httpx",
        **kw,  # type: ignore[arg-type]
    )
    assert result.status == "ok", result.failed
    return Path(result.path)


@pytest.fixture
def sharded(tmp_path: Path, sim: HubSimulator, minilm_sharded_dir: Path) -> Path:
    """A fresh pull of the sharded MiniLM; returns its snapshot dir."""
    sim.add_repo(REPO, minilm_sharded_dir)
    return _pull(tmp_path, sim)


def _by_path(result: VerifyResult) -> dict[str, tuple[str, str]]:
    return {f.path: (f.status, f.detail) for f in result.files}


def test_verify_a_fresh_pull_is_ok(tmp_path: Path, sharded: Path) -> None:
    cache = tmp_path / "cache"
    result = api.verify(REPO, cache_dir=cache)
    assert result.ok and result.repo_id == REPO
    assert {f.status for f in result.files} == {"ok"}
    assert SHARD2 in _by_path(result) and "model.safetensors.index.json" in _by_path(result)
    assert api.verify(sharded).ok  # the snapshot directory itself
    assert cli.main(["verify", REPO, "--cache-dir", str(cache)]) == 0


def test_a_flipped_byte_in_a_shard_is_named_and_exits_4(
    tmp_path: Path, sharded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = Path(os.path.realpath(sharded / SHARD2))
    with blob.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = api.verify(REPO, cache_dir=tmp_path / "cache")
    assert not result.ok
    assert [(f.path, f.status) for f in result.problems] == [(SHARD2, "corrupted")]
    bad = result.problems[0]
    assert bad.expected == blob.name and bad.got and bad.got != bad.expected

    capsys.readouterr()
    code = cli.main(["verify", REPO, "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert code == EXIT_VERIFY
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["counts"]["corrupted"] == 1
    assert [f["path"] for f in payload["files"] if f["status"] == "corrupted"] == [SHARD2]


def test_a_deleted_blob_is_missing(tmp_path: Path, sharded: Path) -> None:
    Path(os.path.realpath(sharded / SHARD2)).unlink()
    result = api.verify(REPO, cache_dir=tmp_path / "cache")
    assert [(f.path, f.status) for f in result.problems] == [(SHARD2, "missing")]
    assert "dangling" in result.problems[0].detail


def test_a_shard_the_index_names_but_the_snapshot_lacks_is_missing(
    tmp_path: Path, sharded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = sharded / SHARD3
    Path(os.path.realpath(link)).unlink()
    link.unlink()
    result = api.verify(REPO, cache_dir=tmp_path / "cache")
    assert [(f.path, f.status) for f in result.problems] == [(SHARD3, "missing")]
    assert "model.safetensors.index.json" in result.problems[0].detail
    capsys.readouterr()
    assert cli.main(["verify", str(sharded)]) == EXIT_VERIFY
    assert f"missing: {SHARD3}: named in model.safetensors.index.json" in capsys.readouterr().err


def test_verify_a_local_dir_and_its_extra_and_missing_files(
    tmp_path: Path, sim: HubSimulator, minilm_dir: Path
) -> None:
    sim.add_repo(REPO, minilm_dir, commit=fixtures.MINILM_REVISION)
    local = tmp_path / "model"
    _pull(tmp_path, sim, local_dir=local)
    result = api.verify(local)
    assert result.ok and result.kind == "local-dir"
    assert result.commits == (fixtures.MINILM_REVISION,)
    assert {f.status for f in result.files} == {"ok"}

    (local / "notes.txt").write_text("mine")
    (local / "vocab.txt").unlink()
    result = api.verify(local)
    statuses = _by_path(result)
    assert statuses["notes.txt"][0] == "extra"
    assert statuses["vocab.txt"][0] == "missing"
    assert [f.path for f in result.problems] == ["vocab.txt"]
    assert cli.main(["verify", str(local)]) == EXIT_VERIFY
    (local / "vocab.txt").write_bytes((minilm_dir / "vocab.txt").read_bytes())
    assert cli.main(["verify", str(local)]) == 0  # an extra file alone is not a failure


def test_verify_a_model_not_in_the_cache_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NotInCacheError):
        api.verify("org/absent", cache_dir=tmp_path)
    assert cli.main(["verify", "org/absent", "--cache-dir", str(tmp_path)]) == 1
    assert "not-in-cache" in capsys.readouterr().err


def test_ls_lists_the_model_with_its_size_and_refs(
    tmp_path: Path, sharded: Path, minilm_sharded_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    models = api.list_models(cache_dir=cache)
    assert [m.repo_id for m in models] == [REPO]
    (model,) = models
    expected = sum(p.stat().st_size for p in minilm_sharded_dir.rglob("*") if p.is_file())
    assert model.size_on_disk == expected
    assert [(r.commit, r.refs) for r in model.revisions] == [(sharded.name, ("main",))]
    assert model.last_used > 0
    capsys.readouterr()
    assert cli.main(["ls", "--cache-dir", str(cache), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["models"][0]["repo_id"] == REPO
    assert cli.main(["ls", "--cache-dir", str(cache)]) == 0
    assert REPO in capsys.readouterr().out
    assert api.list_models(cache_dir=tmp_path / "nothing-here") == ()


def test_rm_one_revision_keeps_shared_blobs_and_clears_orphans(
    tmp_path: Path, sim: HubSimulator, minilm_dir: Path, minilm_sharded_dir: Path
) -> None:
    cache = tmp_path / "cache"
    sim.add_repo(REPO, minilm_dir, commit=fixtures.MINILM_REVISION)
    sim.add_repo(REPO, minilm_sharded_dir, branch="sharded")
    main_snap = _pull(tmp_path, sim)
    sharded_snap = _pull(tmp_path, sim, revision="sharded")
    repo = cache / FOLDER
    shared_blob = Path(os.path.realpath(sharded_snap / "tokenizer.json"))
    assert shared_blob == Path(os.path.realpath(main_snap / "tokenizer.json"))
    shard_blob = Path(os.path.realpath(sharded_snap / SHARD2))
    partials = [repo / "blobs" / f"{'a' * 64}{s}" for s in (".incomplete", ".incomplete.ranges")]
    partials.append(repo / "blobs" / f"{'a' * 64}.incomplete.aria2")
    for p in partials:
        p.write_bytes(b"x" * 10)
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"keep me")
    os.symlink(outside, repo / "blobs" / ("b" * 64))  # an orphan link that points out

    assert cli.main(["rm", REPO, "--revision", "sharded", "--cache-dir", str(cache)]) == 2
    assert sharded_snap.is_dir()  # no --yes, no terminal: nothing removed

    result = api.remove(REPO, revision="sharded", cache_dir=cache)
    assert result.commits == (sharded_snap.name,)
    assert result.refs == ("sharded",)
    assert result.kept_commits == (fixtures.MINILM_REVISION,)
    assert not sharded_snap.exists() and not (repo / "refs" / "sharded").exists()
    assert (repo / "refs" / "main").read_text() == fixtures.MINILM_REVISION
    assert shared_blob.is_file() and not shard_blob.exists()
    assert shard_blob.name in result.blobs
    assert not any(os.path.lexists(p) for p in partials)
    assert len(result.partials) == 3
    assert outside.read_bytes() == b"keep me"
    assert result.freed_bytes >= minilm_sharded_dir.joinpath(SHARD2).stat().st_size
    assert api.verify(REPO, cache_dir=cache).ok

    assert cli.main(["rm", REPO, "--cache-dir", str(cache), "--yes"]) == 0
    assert not repo.exists() and outside.read_bytes() == b"keep me"
    assert api.list_models(cache_dir=cache) == ()


def test_rm_refuses_links_and_unknown_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(NotInCacheError):
        api.remove("org/absent", cache_dir=cache)
    assert cli.main(["rm", "org/absent", "--cache-dir", str(cache), "--yes"]) == 1
    assert "not-in-cache" in capsys.readouterr().err

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "snapshots").mkdir(parents=True)
    (elsewhere / "blobs").mkdir()
    (elsewhere / "blobs" / "data").write_text("keep")
    os.symlink(elsewhere, cache / "models--org--linked")
    with pytest.raises(LayoutError):
        api.remove("org/linked", cache_dir=cache)
    assert (elsewhere / "blobs" / "data").read_text() == "keep"


def test_rm_skips_partial_files_a_running_pull_holds(
    tmp_path: Path, sim: HubSimulator, minilm_dir: Path
) -> None:
    from filelock import FileLock

    cache = tmp_path / "cache"
    sim.add_repo(REPO, minilm_dir, commit=fixtures.MINILM_REVISION)
    _pull(tmp_path, sim)
    partial = cache / FOLDER / "blobs" / f"{'c' * 64}.incomplete"
    partial.write_bytes(b"half")
    lock = FileLock(cache / ".locks" / FOLDER / f"{'c' * 64}.lock")
    with lock:
        with pytest.raises(LayoutError):
            api.remove(REPO, cache_dir=cache)
        assert partial.exists() and (cache / FOLDER / "snapshots").is_dir()
    result = api.remove(REPO, cache_dir=cache)
    assert result.repo_removed and not (cache / FOLDER).exists()
