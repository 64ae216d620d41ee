"""``verify``, ``ls`` and ``rm`` on the ModelScope cache (``pull --layout modelscope``): a
snapshot is checked against modelget's metadata beside it and repaired in place; ``ls`` and
``rm`` ``--layout modelscope`` list and remove snapshots. Real files, pulled with httpx from
the hub simulator's HF and ModelScope APIs on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.errors import LayoutError, NotInCacheError, UsageError
from modelget.testing.hubsim import HubSimulator
from test_modelscope_layout import (  # the ModelScope layout tests' set-up, shared
    FAST,
    MS_ID,
    REPO,
    WEIGHTS,
    files_of,
    mirrors,
    ms_snapshot_download,
    repo,
)

__all__ = ["mirrors", "repo"]  # fixtures, used by name


def pull_ms(cat: Path, root: Path | None = None, revision: str | None = None) -> Path:
    result = api.pull(
        REPO,
        mirrors=cat,
        engine="httpx",
        options=FAST,
        layout="modelscope",
        cache_dir=root,
        revision=revision,
    )
    assert result.status == "ok"
    return Path(result.path)


def test_verify_a_modelscope_snapshot_ok_corrupted_missing(
    tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    cat, _ms = mirrors
    snap = pull_ms(cat)
    ok = api.verify(snap)
    assert ok.kind == "modelscope" and ok.ok
    assert {f.path: f.status for f in ok.files} == dict.fromkeys(files_of(repo), "ok")
    assert len(ok.commits) == 1
    # Corrupt the weights (same size), delete a file, add one modelget knows nothing of.
    data = bytearray((snap / WEIGHTS).read_bytes())
    data[1000] ^= 0xFF
    (snap / WEIGHTS).write_bytes(bytes(data))
    (snap / "sub" / "notes.txt").unlink()
    (snap / "stray.txt").write_text("?")
    bad = api.verify(snap)
    status = {f.path: f.status for f in bad.files}
    assert status == {
        "config.json": "ok",
        WEIGHTS: "corrupted",
        "sub/notes.txt": "missing",
        "stray.txt": "extra",
    }
    assert bad.exit_code == 4
    # The metadata beside the snapshot is not listed as the model's files.
    assert not any(".modelget" in f.path for f in bad.files)


def test_verify_repair_refetches_into_the_same_snapshot(
    tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    snapshot_download = ms_snapshot_download()
    cat, _ms = mirrors
    snap = pull_ms(cat)
    data = bytearray((snap / WEIGHTS).read_bytes())
    data[10] ^= 0xFF
    (snap / WEIGHTS).write_bytes(bytes(data))
    (snap / "config.json").unlink()
    result = api.verify(snap, repair=True, mirrors=cat, engine="httpx")
    assert result.ok and result.kind == "modelscope"
    assert sorted(result.repaired) == ["config.json", WEIGHTS]
    assert files_of(snap) == files_of(repo)
    # Nothing was written inside the snapshot but the model's files, nothing in the HF cache,
    # and the real client still finds the snapshot.
    assert not (snap / ".cache").exists()
    assert len(list((snap.parent.parent / ".modelget" / "master" / "modelget").glob("*.json"))) == 1
    hf_cache = Path(os.environ["HF_HOME"]) / "hub" if "HF_HOME" in os.environ else None
    assert hf_cache is None or not (hf_cache / "models--acme--tiny-0.5B").exists()
    assert Path(snapshot_download(MS_ID, local_files_only=True)) == snap
    # The CLI: exit 0, --json names the kind.
    assert cli.main(["verify", str(snap), "--json"]) == 0


def test_verify_cli_reports_a_corrupted_snapshot(
    tmp_path: Path,
    repo: Path,
    mirrors: tuple[Path, HubSimulator],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat, _ms = mirrors
    snap = pull_ms(cat, tmp_path / "root")
    (snap / "sub" / "notes.txt").write_text("HELLO\n")
    capsys.readouterr()
    assert cli.main(["verify", str(snap), "--json"]) == 4
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["kind"] == "modelscope"
    assert payload["counts"]["corrupted"] == 1


def test_ls_lists_the_modelscope_cache(
    tmp_path: Path,
    repo: Path,
    mirrors: tuple[Path, HubSimulator],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat, _ms = mirrors
    root = tmp_path / "root"
    snap = pull_ms(cat, root)
    pull_ms(cat, root, revision="main")
    (root / "models" / "acme-ms").mkdir()  # a legacy owner folder: not listed
    models = api.list_models(cache_dir=root, layout="modelscope")
    assert [m.repo_id for m in models] == [MS_ID]
    m = models[0]
    assert m.layout == "modelscope" and m.path == str(snap.parent.parent)
    assert [r.refs for r in m.revisions] == [("main",), ("master",)]
    assert all(len(r.commit) == 40 and r.files == len(files_of(repo)) for r in m.revisions)
    assert m.revisions[0].size_bytes == sum(len(b) for b in files_of(repo).values())
    assert m.size_on_disk >= 2 * m.revisions[0].size_bytes and m.last_used > 0
    # The Hugging Face cache is not the ModelScope one.
    assert api.list_models(cache_dir=root) == ()
    capsys.readouterr()
    assert cli.main(["ls", "--layout", "modelscope", "--cache-dir", str(root), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["models"][0]["repo_id"] == MS_ID
    assert payload["models"][0]["layout"] == "modelscope"
    assert cli.main(["ls", "--layout", "modelscope", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert MS_ID in out and "(master)" in out


def test_rm_removes_one_revision_and_keeps_the_others(
    tmp_path: Path,
    repo: Path,
    mirrors: tuple[Path, HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat, _ms = mirrors
    root = tmp_path / "root"
    master = pull_ms(cat, root)
    main = pull_ms(cat, root, revision="main")
    folder = master.parent.parent
    preview = api.remove(
        MS_ID, revision="master", cache_dir=root, layout="modelscope", dry_run=True
    )
    assert preview.dry_run and preview.commits == ("master",) and master.is_dir()
    assert preview.freed_bytes > 0
    result = api.remove(MS_ID, revision="master", cache_dir=root, layout="modelscope")
    assert result.commits == ("master",) and result.kept_commits == ("main",)
    assert not result.repo_removed and result.freed_bytes == preview.freed_bytes
    assert not master.exists() and not (folder / ".modelget" / "master").exists()
    assert files_of(main) == files_of(repo) and (folder / ".modelget" / "main").is_dir()
    assert api.verify(main).ok
    with pytest.raises(NotInCacheError):
        api.remove(MS_ID, revision="master", cache_dir=root, layout="modelscope")
    # The id a pull was given names it too (mapped through the id_map of the catalogue in
    # force); the last revision gone, the model's folder goes.
    monkeypatch.setenv("MODELGET_MIRRORS", str(cat))
    argv = ["rm", REPO, "--layout", "modelscope", "--cache-dir", str(root), "--yes", "--json"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["repo_id"] == MS_ID and payload["repo_removed"]
    assert payload["layout"] == "modelscope"
    assert not folder.exists() and (root / "models").is_dir()


def test_rm_refuses_links_and_paths_outside(
    tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    cat, _ms = mirrors
    root = tmp_path / "root"
    snap = pull_ms(cat, root)
    folder = snap.parent.parent
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    # Revisions that would climb out of snapshots/ are not revisions.
    for rev in ("..", "../..", "/etc", "master/../.."):
        with pytest.raises(NotInCacheError):
            api.remove(MS_ID, revision=rev, cache_dir=root, layout="modelscope")
    with pytest.raises(UsageError):  # an id that climbs is refused before any look
        api.remove("../outside", cache_dir=root, layout="modelscope")
    # A snapshot that is a link is not a snapshot (not followed, not listed as one).
    (folder / "snapshots" / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(NotInCacheError):
        api.remove(MS_ID, revision="linked", cache_dir=root, layout="modelscope")
    # The metadata folder of a revision as a link: refused, nothing removed.
    meta = folder / ".modelget" / "master"
    shutil.move(meta, tmp_path / "meta-elsewhere")
    meta.symlink_to(tmp_path / "meta-elsewhere", target_is_directory=True)
    with pytest.raises(LayoutError):
        api.remove(MS_ID, revision="master", cache_dir=root, layout="modelscope")
    assert snap.is_dir()
    meta.unlink()
    shutil.move(tmp_path / "meta-elsewhere", meta)
    # A model folder that is a link: refused.
    other = root / "models" / "acme-ms--linked"
    other.symlink_to(folder, target_is_directory=True)
    with pytest.raises(LayoutError):
        api.remove("acme-ms/linked", cache_dir=root, layout="modelscope")
    # Removing everything of the model leaves what is outside its folder alone.
    api.remove(MS_ID, cache_dir=root, layout="modelscope")
    assert not folder.exists() and (outside / "keep.txt").read_text() == "keep"
    assert other.is_symlink()


def test_rm_refuses_a_revision_a_running_pull_holds(
    tmp_path: Path, repo: Path, mirrors: tuple[Path, HubSimulator]
) -> None:
    from filelock import FileLock

    cat, _ms = mirrors
    root = tmp_path / "root"
    snap = pull_ms(cat, root)
    main = pull_ms(cat, root, revision="main")
    lock = FileLock(snap.parent.parent / ".modelget" / "master" / "download" / f"{WEIGHTS}.lock")
    with lock:
        with pytest.raises(LayoutError, match="running"):
            api.remove(MS_ID, revision="master", cache_dir=root, layout="modelscope")
        with pytest.raises(LayoutError, match="running"):
            api.remove(MS_ID, cache_dir=root, layout="modelscope")
        assert files_of(snap) == files_of(repo) == files_of(main)
        # Another revision is not held.
        assert api.remove(MS_ID, revision="main", cache_dir=root, layout="modelscope").commits == (
            "main",
        )
    assert not main.exists()
    api.remove(MS_ID, revision="master", cache_dir=root, layout="modelscope")
    assert not snap.parent.parent.exists()
