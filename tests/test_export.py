"""modelget export: a cached model published as a cdn tree, served by real nginx, pulled back.

The round trip: pull from the hub simulator into one cache, export that cache into a tree,
serve the tree with nginx, pull into a fresh cache with only the cdn mirror enabled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.engines import EngineOptions, aria2c_path
from modelget.errors import LayoutError, VerificationError
from modelget.layout import repo_dir
from modelget.sources.cdn import FORMAT, blob_path
from modelget.testing import fixtures
from modelget.testing.hubsim import HubSimulator
from modelget.testing.nginx import NginxServer, nginx_available

REPO = fixtures.MINILM_REPO_ID
FAST = EngineOptions(
    stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3, min_split_bytes=1024 * 1024
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(directory: Path) -> dict[str, Path]:
    return {
        p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()
    }


@pytest.fixture
def hub() -> Iterator[HubSimulator]:
    sim = HubSimulator(name="hub").start()
    yield sim
    sim.stop()


def pull_from_hub(hub: HubSimulator, model_dir: Path, tmp_path: Path, **kw: str) -> Path:
    """Pull ``model_dir`` (served by the hub simulator) into a new cache; return the cache."""
    hub.add_repo(REPO, model_dir, **kw)  # type: ignore[arg-type]
    cat = tmp_path / "hub.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n")
    cache = tmp_path / "cache"
    result = api.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx", options=FAST)
    assert result.status == "ok", result.failed
    return cache


@pytest.mark.nginx
@pytest.mark.parametrize("engine", ["httpx", "aria2"])
def test_export_serve_with_nginx_and_pull_with_the_hubs_disabled(
    engine: str, tmp_path: Path, minilm_dir: Path, hub: HubSimulator
) -> None:
    if not nginx_available():
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (scripts/bootstrap installs it)")
        pytest.skip("nginx is not installed")
    if engine == "aria2" and aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    cache = pull_from_hub(hub, minilm_dir, tmp_path, commit=fixtures.MINILM_REVISION)
    tree = tmp_path / "tree"

    result = api.export(REPO, tree, cache_dir=cache)

    commit = fixtures.MINILM_REVISION
    assert result.commit == commit and result.refs == ("main",)
    assert result.files == len(fixtures.MINILM_FILES)
    assert result.bytes == sum(p.stat().st_size for p in files_of(minilm_dir).values())
    assert result.linked == result.blobs and result.copied == result.reused == 0
    refs = json.loads((tree / REPO / "refs.json").read_text())
    assert refs == {"format": FORMAT, "refs": {"main": commit}}
    doc = json.loads((tree / REPO / "manifests" / f"{commit}.json").read_text())
    assert doc["format"] == FORMAT and doc["repo_id"] == REPO and doc["commit"] == commit
    by_path = {f["path"]: f for f in doc["files"]}
    assert set(by_path) == set(fixtures.MINILM_FILES)
    for rel, src in files_of(minilm_dir).items():
        want = fixtures.MINILM_FILES[rel]
        item = by_path[rel]
        assert item["size"] == src.stat().st_size and item["sha256"] == sha256(src), rel
        if want.lfs:
            assert item.get("lfs") is True
        else:
            assert item.get("git_sha1") == want.git_sha1, rel
        assert (tree / blob_path(item["sha256"])).read_bytes() == src.read_bytes(), rel
    # Nothing else in the tree: no temporary files left behind.
    assert set(files_of(tree)) == {
        f"{REPO}/refs.json",
        f"{REPO}/manifests/{commit}.json",
        *(blob_path(f["sha256"]) for f in doc["files"]),
    }

    hub_url = hub.url
    hub.stop()  # the hub is gone: only the cdn tree can serve the second pull
    with NginxServer(tree, name="export-cdn") as cdn:
        cat = tmp_path / "cdn.yaml"
        cat.write_text(
            "version: 1\nmirrors:\n"
            f"  - name: hub\n    kind: hf\n    endpoint: {hub_url}\n    enabled: false\n"
            f"  - name: team-cdn\n    kind: cdn\n    endpoint: {cdn.url}\n"
        )
        cache2 = tmp_path / "cache2"
        again = api.pull(REPO, mirrors=cat, cache_dir=cache2, engine=engine, options=FAST)  # type: ignore[arg-type]

        assert again.status == "ok", again.failed
        assert again.engine == engine and again.commit == commit
        assert set(again.bytes_by_mirror) == {"team-cdn"}
        snapshot = Path(again.path)
        for rel, src in files_of(minilm_dir).items():
            assert (snapshot / rel).read_bytes() == src.read_bytes(), rel
        assert (repo_dir(cache2, REPO) / "refs" / "main").read_text() == commit

        log = cdn.access_log(min_entries=len(by_path) + 2)
        uris = {e["uri"] for e in log if e["request_method"] == "GET"}
        assert f"/{REPO}/refs.json" in uris
        assert f"/{REPO}/manifests/{commit}.json" in uris
        for item in doc["files"]:
            blob_requests = [
                e
                for e in log
                if e["uri"] == "/" + blob_path(item["sha256"]) and e["status"] in (200, 206)
            ]
            assert blob_requests, f"nginx served no request for {item['path']}"


def test_export_of_the_sharded_fixture_hardlinks_every_blob(
    tmp_path: Path, minilm_sharded_dir: Path, hub: HubSimulator
) -> None:
    cache = pull_from_hub(hub, minilm_sharded_dir, tmp_path)
    tree = tmp_path / "tree"

    result = api.export(REPO, tree, cache_dir=cache)

    source = files_of(minilm_sharded_dir)
    assert result.files == len(source)
    assert any(rel.startswith("model-0000") for rel in source)
    assert result.linked == result.blobs and result.copied == 0
    doc = json.loads(Path(result.manifest).read_text())
    assert {f["path"] for f in doc["files"]} == set(source)
    snapshot = repo_dir(cache, REPO) / "snapshots" / result.commit
    for item in doc["files"]:
        blob = tree / blob_path(item["sha256"])
        assert item["sha256"] == sha256(source[item["path"]])
        assert blob.read_bytes() == source[item["path"]].read_bytes()
        # A hardlink of the cache blob: no second copy of the bytes on disk.
        assert blob.stat().st_ino == (snapshot / item["path"]).stat().st_ino


def test_export_copies_when_hardlinks_are_impossible(
    tmp_path: Path, minilm_dir: Path, hub: HubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = pull_from_hub(hub, minilm_dir, tmp_path)

    def no_link(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    result = api.export(REPO, tmp_path / "tree", cache_dir=cache)
    assert result.copied == result.blobs and result.linked == 0
    for rel, src in files_of(minilm_dir).items():
        blob = tmp_path / "tree" / blob_path(sha256(src))
        assert blob.read_bytes() == src.read_bytes(), rel
        assert blob.stat().st_nlink == 1


@pytest.mark.parametrize("victim", ["model.safetensors", "1_Pooling/config.json"])
def test_a_corrupt_cache_blob_is_refused_and_nothing_is_written(
    victim: str, tmp_path: Path, minilm_dir: Path, hub: HubSimulator
) -> None:
    cache = pull_from_hub(hub, minilm_dir, tmp_path, commit=fixtures.MINILM_REVISION)
    snapshot = repo_dir(cache, REPO) / "snapshots" / fixtures.MINILM_REVISION
    blob = Path(os.path.realpath(snapshot / victim))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong bytes
    blob.write_bytes(bytes(data))
    tree = tmp_path / "tree"

    with pytest.raises(VerificationError) as info:
        api.export(REPO, tree, cache_dir=cache)

    assert victim in info.value.message and "corrupt" in info.value.message
    assert not tree.exists() or files_of(tree) == {}

    code = cli.main(["export", REPO, "--to", str(tree), "--cache-dir", str(cache)])
    assert code == 4
    assert not tree.exists() or files_of(tree) == {}


def test_re_export_is_idempotent_merges_refs_and_repairs_a_bad_tree_blob(
    tmp_path: Path, minilm_dir: Path, hub: HubSimulator
) -> None:
    cache = pull_from_hub(hub, minilm_dir, tmp_path, commit=fixtures.MINILM_REVISION)
    commit = fixtures.MINILM_REVISION
    tree = tmp_path / "tree"
    first = api.export(REPO, tree, cache_dir=cache)
    before = {rel: (p.stat().st_ino, p.stat().st_mtime_ns) for rel, p in files_of(tree).items()}
    manifest_text = Path(first.manifest).read_text()

    second = api.export(REPO, tree, cache_dir=cache)

    assert second.linked == second.copied == 0 and second.reused == first.blobs
    after = {rel: (p.stat().st_ino, p.stat().st_mtime_ns) for rel, p in files_of(tree).items()}
    blobs_only = {k: v for k, v in after.items() if k.startswith("blobs/")}
    assert blobs_only == {k: v for k, v in before.items() if k.startswith("blobs/")}
    assert set(after) == set(before)
    assert Path(second.manifest).read_text() == manifest_text

    # Another revision published earlier (by another export) is kept; a new tag is added.
    refs_file = tree / REPO / "refs.json"
    other = "a" * 40
    refs_file.write_text(json.dumps({"format": FORMAT, "refs": {"main": commit, "old": other}}))
    (repo_dir(cache, REPO) / "refs" / "v1.0").write_text(commit)
    tagged = api.export(REPO, tree, revision="v1.0", cache_dir=cache)
    assert tagged.refs == ("v1.0",)
    refs = json.loads(refs_file.read_text())["refs"]
    assert refs == {"main": commit, "old": other, "v1.0": commit}
    # Without --revision: every cached ref that points at the commit.
    assert api.export(REPO, tree, cache_dir=cache).refs == ("main", "v1.0")

    # A wrong blob of the right size in the tree is replaced with verified bytes.
    model = files_of(minilm_dir)["model.safetensors"]
    bad = tree / blob_path(sha256(model))
    size = bad.stat().st_size
    bad.unlink()
    bad.write_bytes(b"\0" * size)
    repaired = api.export(REPO, tree, cache_dir=cache)
    assert repaired.linked == 1 and repaired.reused == first.blobs - 1
    assert bad.read_bytes() == model.read_bytes()


def test_a_model_or_revision_not_in_the_cache_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    with pytest.raises(LayoutError) as info:
        api.export(REPO, tmp_path / "tree", cache_dir=cache)
    assert REPO in info.value.message and "not in the Hugging Face cache" in info.value.message
    assert info.value.hint and "modelget pull" in info.value.hint

    code = cli.main(
        ["export", REPO, "--to", str(tmp_path / "tree"), "--cache-dir", str(cache), "--json"]
    )
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["error"]["code"] == "layout-failed"
    assert not (tmp_path / "tree").exists()

    (repo_dir(cache, REPO) / "refs").mkdir(parents=True)
    with pytest.raises(LayoutError, match="revision 'v9' of"):
        api.export(REPO, tmp_path / "tree", revision="v9", cache_dir=cache)


def test_cli_export_prints_the_tree_and_json(
    tmp_path: Path, minilm_dir: Path, hub: HubSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = pull_from_hub(hub, minilm_dir, tmp_path)
    tree = tmp_path / "tree"
    capsys.readouterr()
    assert cli.main(["export", REPO, "--to", str(tree), "--cache-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tree)
    assert "linked" in captured.err and "refs: main" in captured.err

    assert cli.main(["export", REPO, "--to", str(tree), "--cache-dir", str(cache), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["schema"] == 1 and payload["repo_id"] == REPO
    assert payload["reused"] == payload["blobs"] and payload["refs"] == ["main"]
