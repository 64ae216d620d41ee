"""Datasets and spaces (issue 17 §4, ``--repo-type``): served by the hub simulator as the Hub
serves them, pulled on both engines into huggingface_hub's ``datasets--``/``spaces--`` folders
(read back offline by huggingface_hub itself), locked, verified, listed and removed; a model
and a dataset of the same name never meet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.datatypes import Mirror, RepoType
from modelget.engines import EngineName, EngineOptions
from modelget.errors import UsageError
from modelget.lockfile import dumps, loads
from modelget.manifest import parse_target
from modelget.probe import _cache_key
from modelget.testing.hubsim import HubSimulator

NAME = "acme/thing"
SPACE = "acme/app"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def hub(tmp_path: Path, sims: list[HubSimulator]) -> tuple[HubSimulator, Path]:
    """A model, a dataset of the SAME name (other files) and a space, on one simulator that
    redirects LFS downloads to its signed CDN listener, as the Hub does."""
    sim = HubSimulator(name="hub", cdn=True).start()
    sims.append(sim)
    sim.add_repo(NAME, _tree(tmp_path / "model", {"config.json": b'{"model": 1}\n'}))
    data = {
        "README.md": b"# a dataset\n",
        "data/train.parquet": os.urandom(300_000),  # LFS by extension: 302 to the CDN
        "data/test.parquet": os.urandom(50_000),
    }
    sim.add_repo(NAME, _tree(tmp_path / "dataset", data), repo_type="dataset")
    space = {"README.md": b"---\nsdk: static\n---\n", "app.py": b"print('hi')\n"}
    sim.add_repo(SPACE, _tree(tmp_path / "space", space), repo_type="space")
    cat = tmp_path / "m.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n")
    return sim, cat


def test_the_simulator_serves_datasets_and_spaces_to_huggingface_hub(
    tmp_path: Path, hub: tuple[HubSimulator, Path]
) -> None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    sim, _ = hub
    hf = HfApi(endpoint=sim.url, token=False)
    info = hf.dataset_info(NAME, revision="main")
    assert info.sha == sim.commit(NAME, repo_type="dataset") != sim.commit(NAME)
    files = hf.list_repo_files(NAME, repo_type="dataset")
    assert sorted(files) == ["README.md", "data/test.parquet", "data/train.parquet"]
    assert hf.space_info(SPACE).sha == sim.commit(SPACE, repo_type="space")
    with pytest.raises(RepositoryNotFoundError):
        hf.model_info(SPACE)  # a space is not a model: another namespace
    cache = tmp_path / "hf-cache"
    path = hf_hub_download(
        SPACE, "app.py", repo_type="space", cache_dir=cache, endpoint=sim.url, token=False
    )
    assert Path(path).read_bytes() == b"print('hi')\n" and "spaces--acme--app" in path
    snap = snapshot_download(
        NAME, repo_type="dataset", cache_dir=cache, endpoint=sim.url, token=False
    )
    assert (Path(snap) / "data" / "train.parquet").stat().st_size == 300_000
    paths = {r.path.split("?")[0] for r in sim.log}
    assert f"/api/datasets/{NAME}/revision/main" in paths
    assert f"/datasets/{NAME}/resolve/{info.sha}/README.md" in paths


def test_pull_a_dataset_and_a_space_huggingface_hub_reads_them_offline(
    tmp_path: Path, hub: tuple[HubSimulator, Path], engine: EngineName
) -> None:
    from huggingface_hub import scan_cache_dir, snapshot_download

    sim, cat = hub
    cache = tmp_path / "cache"
    pulled = {}
    pairs: tuple[tuple[str, RepoType], ...] = ((NAME, "dataset"), (SPACE, "space"))
    for repo_id, kind in pairs:
        result = api.pull(
            repo_id, repo_type=kind, mirrors=cat, cache_dir=cache, engine=engine, options=FAST
        )
        assert result.status == "ok" and result.repo_type == kind
        assert result.commit == sim.commit(repo_id, repo_type=kind)
        folder = f"{kind}s--" + repo_id.replace("/", "--")
        assert Path(result.path) == cache / folder / "snapshots" / result.commit
        offline = snapshot_download(repo_id, repo_type=kind, local_files_only=True, cache_dir=cache)
        assert Path(offline) == Path(result.path)
        pulled[kind] = result
    data = Path(pulled["dataset"].path) / "data" / "train.parquet"
    snap = sim.repo(NAME, "dataset").resolve(None)
    assert snap is not None
    served = snap.files["data/train.parquet"]
    assert data.is_symlink() and data.read_bytes() == served.source.read_bytes()
    # The bytes came from the dataset's own URLs (the LFS one through the CDN redirect).
    resolved = [r.path for r in sim.log if r.route == "hf-resolve"]
    assert resolved and all(r.startswith(("/datasets/", "/spaces/")) for r in resolved)
    scanned = {(r.repo_type, r.repo_id) for r in scan_cache_dir(cache).repos}
    assert scanned == {("dataset", NAME), ("space", SPACE)}
    assert not (cache / "models--acme--thing").exists()


def test_a_model_and_a_dataset_of_the_same_name_do_not_collide(
    tmp_path: Path, hub: tuple[HubSimulator, Path]
) -> None:
    sim, cat = hub
    cache = tmp_path / "cache"
    model = api.pull(NAME, mirrors=cat, cache_dir=cache, engine="httpx")
    dataset = api.pull(NAME, repo_type="dataset", mirrors=cat, cache_dir=cache, engine="httpx")
    assert model.repo_type == "model" and model.commit == sim.commit(NAME)
    assert Path(model.path).parent.parent.name == "models--acme--thing"
    assert Path(dataset.path).parent.parent.name == "datasets--acme--thing"
    assert sorted(p.name for p in Path(model.path).iterdir()) == ["config.json"]
    assert (Path(dataset.path) / "README.md").read_bytes() == b"# a dataset\n"
    # The probe cache keeps them apart too (a model's key is as it always was).
    m = Mirror("hub", "hf", sim.url)
    assert _cache_key(m, NAME) == f"hub|{sim.url}|{NAME}"
    assert _cache_key(m, NAME, repo_type="dataset") != _cache_key(m, NAME)
    assert api.plan(NAME, mirrors=cat, cache_dir=cache).commit == model.commit
    again = api.plan(NAME, repo_type="dataset", mirrors=cat, cache_dir=cache)
    assert again.commit == dataset.commit and again.repo_type == "dataset"
    assert not again.to_fetch  # what is in datasets--acme--thing counts, not the model's
    offline = api.pull(NAME, repo_type="dataset", cache_dir=cache, offline=True)
    assert offline.path == dataset.path and offline.repo_type == "dataset"


def test_cli_takes_hf_datasets_urls_and_repo_type(
    tmp_path: Path, hub: tuple[HubSimulator, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sim, cat = hub
    cache = tmp_path / "cache"
    base = ["--mirrors", str(cat), "--cache-dir", str(cache), "--quiet", "--engine", "httpx"]
    assert cli.main(["pull", f"hf://datasets/{NAME}", *base]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == cache / "datasets--acme--thing" / "snapshots" / sim.commit(
        NAME, None, "dataset"
    )
    assert cli.main(["pull", f"hf://spaces/{SPACE}/app.py", *base]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.name == "app.py" and "spaces--acme--app" in str(printed)
    assert cli.main(["pull", SPACE, "README.md", "--repo-type", "space", *base]) == 0
    assert "spaces--acme--app" in capsys.readouterr().out
    code = cli.main(["pull", f"hf://datasets/{NAME}", "--repo-type", "space", *base])
    assert code == 2 and "repo type once" in capsys.readouterr().err
    assert cli.main(["probe", f"hf://datasets/{NAME}", "--mirrors", str(cat), "--json"]) == 0
    probed = json.loads(capsys.readouterr().out)
    assert probed["repo_type"] == "dataset" and probed["mirrors"][0]["has_repo"] is True


def test_targets_name_their_repo_type() -> None:
    assert parse_target(f"hf://datasets/{NAME}") == (NAME, None, (), "dataset")
    assert parse_target(f"hf://spaces/{SPACE}@v1/app.py") == (SPACE, "v1", ("app.py",), "space")
    assert parse_target(f"hf://models/{NAME}").repo_type == "model"
    assert parse_target(f"hf://{NAME}").repo_type is None
    assert parse_target(NAME).repo_type is None
    with pytest.raises(UsageError):
        api.pull(NAME, repo_type="kernel")  # type: ignore[arg-type]


def test_lock_and_pull_lock_with_a_dataset(tmp_path: Path, hub: tuple[HubSimulator, Path]) -> None:
    sim, cat = hub
    locked = api.lock([f"hf://datasets/{NAME}", NAME], mirrors=cat)
    text = dumps(locked)
    doc = json.loads(text)
    kinds = {(m["repo_id"], m.get("repo_type")) for m in doc["models"]}
    assert kinds == {(NAME, "dataset"), (NAME, None)}  # a model's entry is as before
    back = loads(text)
    assert back == locked
    dataset = next(m for m in back.models if m.repo_type == "dataset")
    assert dataset.commit == sim.commit(NAME, repo_type="dataset")
    cache = tmp_path / "cache"
    result = api.pull(NAME, locked=dataset, mirrors=cat, cache_dir=cache, engine="httpx")
    assert result.status == "ok" and "datasets--acme--thing" in result.path
    lockfile = tmp_path / "models.lock"
    lockfile.write_text(text)
    base = ["--mirrors", str(cat), "--cache-dir", str(cache), "--quiet", "--engine", "httpx"]
    assert cli.main(["pull", "--lock", str(lockfile), *base]) == 0
    assert (cache / "models--acme--thing").is_dir()
    # An old lockfile (no repo_type) is a model lock.
    old = json.loads(text)
    old["models"] = [m for m in old["models"] if "repo_type" not in m]
    assert loads(json.dumps(old)).models[0].repo_type == "model"
    with pytest.raises(UsageError, match="as a dataset"):
        api.pull(NAME, locked=dataset, repo_type="space", mirrors=cat, cache_dir=cache)


def test_verify_ls_rm_a_dataset(
    tmp_path: Path, hub: tuple[HubSimulator, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, cat = hub
    cache = tmp_path / "cache"
    api.pull(NAME, mirrors=cat, cache_dir=cache, engine="httpx")
    pulled = api.pull(NAME, repo_type="dataset", mirrors=cat, cache_dir=cache, engine="httpx")
    result = api.verify(NAME, repo_type="dataset", cache_dir=cache)
    assert result.ok and result.repo_type == "dataset" and result.count("ok") == 3
    by_dir = api.verify(str(cache / "datasets--acme--thing"))
    assert by_dir.ok and by_dir.repo_id == NAME and by_dir.repo_type == "dataset"
    blob = (Path(pulled.path) / "data" / "test.parquet").resolve()
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" * 50_000)
    bad = api.verify(NAME, repo_type="dataset", cache_dir=cache)
    assert [f.path for f in bad.problems] == ["data/test.parquet"]
    assert api.verify(NAME, cache_dir=cache).ok  # the model is untouched
    repaired = api.verify(
        NAME, repo_type="dataset", cache_dir=cache, repair=True, mirrors=cat, engine="httpx"
    )
    assert repaired.ok and repaired.repaired == ("data/test.parquet",)

    listed = {(m.repo_type, m.repo_id) for m in api.list_models(cache_dir=cache)}
    assert listed == {("model", NAME), ("dataset", NAME)}
    assert cli.main(["ls", "--cache-dir", str(cache)]) == 0
    assert "datasets/acme/thing" in capsys.readouterr().out
    assert cli.main(["ls", "--cache-dir", str(cache), "--json"]) == 0
    kinds = sorted(m["repo_type"] for m in json.loads(capsys.readouterr().out)["models"])
    assert kinds == ["dataset", "model"]
    args = ["rm", NAME, "--repo-type", "dataset", "--yes", "--cache-dir", str(cache), "--json"]
    assert cli.main(args) == 0
    removed = json.loads(capsys.readouterr().out)
    assert removed["repo_removed"] and removed["repo_type"] == "dataset"
    assert not (cache / "datasets--acme--thing").exists()
    assert (cache / "models--acme--thing").is_dir()
    with pytest.raises(Exception, match="dataset acme/thing is not in the cache"):
        api.remove(NAME, repo_type="dataset", cache_dir=cache)


def test_a_modelscope_mirror_serves_datasets_and_lacks_spaces(
    tmp_path: Path, hub: tuple[HubSimulator, Path]
) -> None:
    """ModelScope serves datasets (``/api/v1/datasets/...``) but downloads no spaces: a
    ModelScope mirror beside an hf one is left out of a space's pull as lacking it; with only
    ModelScope mirrors, a space is a usage error before any request."""
    sim, _ = hub
    both = tmp_path / "both.yaml"
    both.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: ms\n    kind: modelscope\n    endpoint: {sim.url}\n"
        f"  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n"
    )
    summary = api.probe(NAME, repo_type="dataset", mirrors=both)
    states = {r.mirror: r.status for r in summary.report.results.values()}
    assert states == {"ms": "ok", "hub": "ok"}
    summary = api.probe(SPACE, repo_type="space", mirrors=both)
    states = {r.mirror: r.status for r in summary.report.results.values()}
    assert states == {"ms": "no-repo", "hub": "ok"}
    result = api.pull(SPACE, repo_type="space", mirrors=both, cache_dir=tmp_path / "c")
    assert result.status == "ok" and set(result.bytes_by_mirror) == {"hub"}
    only_ms = tmp_path / "ms.yaml"
    only_ms.write_text(
        f"version: 1\nmirrors:\n  - name: ms\n    kind: modelscope\n    endpoint: {sim.url}\n"
    )
    sim.clear_log()
    with pytest.raises(UsageError, match="ModelScope has no spaces") as refused:
        api.plan(SPACE, repo_type="space", mirrors=only_ms)
    assert refused.value.exit_code == 2 and "hf mirror" in (refused.value.hint or "")
    assert not sim.log  # said up front: nothing was asked of the mirror
    with pytest.raises(UsageError, match="not a space"):
        api.pull(SPACE, repo_type="space", mirrors=both, layout="modelscope")
    # A dataset from the ModelScope mirror alone: its files, the Hub's commit on both.
    plan = api.plan(NAME, repo_type="dataset", mirrors=only_ms)
    assert sorted(i.entry.path for i in plan.items) == [
        "README.md",
        "data/test.parquet",
        "data/train.parquet",
    ]
    assert sim.requests(route="ms-api", path_glob="/api/v1/datasets/acme/thing/repo/tree")


@pytest.mark.nginx
def test_export_a_dataset_and_pull_it_from_the_cdn_tree(
    tmp_path: Path, hub: tuple[HubSimulator, Path]
) -> None:
    from modelget.testing.nginx import NginxServer, nginx_available

    if not nginx_available():
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (scripts/bootstrap installs it)")
        pytest.skip("nginx is not installed")
    _, cat = hub
    cache = tmp_path / "cache"
    api.pull(NAME, mirrors=cat, cache_dir=cache, engine="httpx")
    first = api.pull(NAME, repo_type="dataset", mirrors=cat, cache_dir=cache, engine="httpx")
    tree = tmp_path / "tree"
    api.export(NAME, tree, cache_dir=cache)
    exported = api.export(NAME, tree, cache_dir=cache, repo_type="dataset")
    assert exported.commit == first.commit
    assert (tree / "datasets" / NAME / "refs.json").is_file()
    assert (tree / NAME / "refs.json").is_file()  # the model's, beside it
    with NginxServer(tree, name="dataset-cdn") as cdn:
        only_cdn = tmp_path / "cdn.yaml"
        only_cdn.write_text(
            f"version: 1\nmirrors:\n  - name: team-cdn\n    kind: cdn\n    endpoint: {cdn.url}\n"
        )
        cache2 = tmp_path / "cache2"
        again = api.pull(
            NAME, repo_type="dataset", mirrors=only_cdn, cache_dir=cache2, engine="httpx"
        )
        model = api.pull(NAME, mirrors=only_cdn, cache_dir=cache2, engine="httpx")
    assert again.status == "ok" and again.commit == first.commit
    assert set(again.bytes_by_mirror) == {"team-cdn"}
    assert "datasets--acme--thing" in again.path and "models--acme--thing" in model.path
    assert api.verify(NAME, repo_type="dataset", cache_dir=cache2).ok
