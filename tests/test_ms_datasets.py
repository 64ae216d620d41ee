"""ModelScope datasets (issue 17 §4): the ``modelscope`` source lists and fetches them
(``/api/v1/datasets/...``), ``pull --repo-type dataset --layout modelscope`` writes them where
the real client (modelscope-hub) finds them, ``verify``/``rm``/``ls --layout modelscope``
handle them by repo id; a space asked of ModelScope mirrors only is a usage error. Against the
hub simulator on 127.0.0.1, with the real client, on both engines where bytes move."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelget import api, cli
from modelget.engines import EngineName
from modelget.errors import NotInCacheError, UsageError
from modelget.testing.hubsim import HubSimulator
from test_modelscope_layout import FAST, engine, files_of

__all__ = ["engine"]  # a fixture, used by name

DS = "acme/rows"
MS_DS = "acme-ms/rows"
PARQUET = "data/train.parquet"


def client() -> Any:
    """modelscope-hub's dataset download functions (legacy signatures), its per-process
    configuration rebuilt so that it reads this test's MODELSCOPE_CACHE."""
    from modelscope_hub import set_default_config
    from modelscope_hub.compat.snapshot_download import dataset_snapshot_download

    set_default_config(None)
    return dataset_snapshot_download


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    (root / "data").mkdir(parents=True)
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    (root / "README.md").write_text("---\nlicense: mit\n---\n# rows\n")
    (root / PARQUET).write_bytes(os.urandom(1_200_000))
    (root / "data" / "test.jsonl").write_text('{"row": 1}\n{"row": 2}\n')
    return root


@pytest.fixture
def sims_and_catalogues(
    tmp_path: Path, dataset: Path, sims: list[HubSimulator]
) -> tuple[HubSimulator, HubSimulator, Path, Path]:
    """An HF hub and a ModelScope mirror serving ``dataset`` (as ``acme-ms/rows`` there, by
    the catalogue's id_map), plus a model of the same id on each (another namespace); the
    catalogue of both, and one of the ModelScope mirror alone."""
    hub = HubSimulator(name="hub").start()
    ms = HubSimulator(name="ms", cdn=True).start()
    sims += [hub, ms]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model": true}\n')
    for sim in (hub, ms):
        sim.add_repo(DS, dataset, repo_type="dataset", ms_id=MS_DS)
        sim.add_repo(DS, model, ms_id=MS_DS)
    ms_entry = (
        f"  - name: ms\n    kind: modelscope\n    endpoint: {ms.url}\n"
        '    id_map:\n      "acme/*": "acme-ms/*"\n'
    )
    both = tmp_path / "both.yaml"
    both.write_text(
        f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n{ms_entry}"
    )
    only_ms = tmp_path / "ms.yaml"
    only_ms.write_text(f"version: 1\nmirrors:\n{ms_entry}")
    return hub, ms, both, only_ms


def ms_cache() -> Path:
    return Path(os.environ["MODELSCOPE_CACHE"])  # conftest's, under the test's home


def test_a_dataset_from_modelscope_lands_where_its_client_finds_it(
    engine: EngineName,
    tmp_path: Path,
    dataset: Path,
    sims_and_catalogues: tuple[HubSimulator, HubSimulator, Path, Path],
) -> None:
    """Listed and fetched through the ModelScope source alone (its LFS file by the CDN
    redirect), into ``datasets/{owner}--{name}/snapshots/master``: the client reads it with
    no network, and downloading it with the client itself gives the same tree."""
    dataset_snapshot_download = client()
    _hub, ms, _both, only_ms = sims_and_catalogues
    result = api.pull(
        DS, repo_type="dataset", mirrors=only_ms, engine=engine, options=FAST, layout="modelscope"
    )
    assert result.status == "ok" and set(result.bytes_by_mirror) == {"ms"}
    snap = ms_cache() / "datasets" / "acme-ms--rows" / "snapshots" / "master"
    assert Path(result.path) == snap
    assert files_of(snap) == files_of(dataset)
    assert result.commit == ms.commit(DS, repo_type="dataset")
    # The bytes came over the dataset routes (the LFS file through the CDN), not the model's.
    fetched = {r.query["FilePath"] for r in ms.requests(route="ms-file")}
    assert fetched == set(files_of(dataset))
    assert all(r.path == f"/api/v1/datasets/{MS_DS}/repo" for r in ms.requests(route="ms-file"))
    assert ms.requests(listener="cdn")
    assert not (ms_cache() / "models").exists()
    # The real client, offline (conftest refuses any connect that is not to 127.0.0.1, and it
    # is given no endpoint), finds the snapshot...
    assert Path(dataset_snapshot_download(MS_DS, local_files_only=True)) == snap
    # ...and downloading the dataset itself from the same mirror gives the same tree.
    theirs = Path(
        dataset_snapshot_download(MS_DS, endpoint=ms.url, cache_dir=str(tmp_path / "theirs"))
    )
    assert theirs == tmp_path / "theirs" / "datasets" / "acme-ms--rows" / "snapshots" / "master"
    assert files_of(theirs) == files_of(snap)
    # A re-run moves no byte.
    ms.clear_log()
    again = api.pull(
        DS, repo_type="dataset", mirrors=only_ms, engine=engine, options=FAST, layout="modelscope"
    )
    assert again.bytes_fetched == 0 and {f.status for f in again.files} == {"reused"}
    assert not ms.requests(route="ms-file")


def test_only_modelscope_on_the_command_line_puts_a_dataset_in_its_cache(
    tmp_path: Path,
    dataset: Path,
    sims_and_catalogues: tuple[HubSimulator, HubSimulator, Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--only`` a ModelScope mirror chooses its layout for a dataset too; a revision other
    than master names the snapshot, an offline pull answers from it, and a dataset from both
    mirrors is the Hub's commit whoever serves it."""
    dataset_snapshot_download = client()
    hub, _ms, both, _only_ms = sims_and_catalogues
    argv = ["pull", DS, "--repo-type", "dataset", "--mirrors", str(both), "--only", "ms"]
    assert cli.main([*argv, "--engine", "httpx", "--revision", "main", "--quiet"]) == 0
    snap = ms_cache() / "datasets" / "acme-ms--rows" / "snapshots" / "main"
    assert Path(capsys.readouterr().out.strip()) == snap
    assert files_of(snap) == files_of(dataset)
    assert Path(dataset_snapshot_download(MS_DS, revision="main", local_files_only=True)) == snap
    offline = api.pull(
        DS, repo_type="dataset", mirrors=both, layout="modelscope", revision="main", offline=True
    )
    assert Path(offline.path) == snap and {f.status for f in offline.files} == {"reused"}
    # Both mirrors, into the Hugging Face cache (the default layout): the dataset's folder.
    hf = api.pull(DS, repo_type="dataset", mirrors=both, engine="httpx", options=FAST)
    assert hf.status == "ok" and "datasets--acme--rows" in hf.path
    assert hf.commit == offline.commit == hub.commit(DS, repo_type="dataset")
    assert files_of(Path(hf.path)) == files_of(dataset)


def test_verify_by_repo_id_in_the_modelscope_cache(
    tmp_path: Path,
    dataset: Path,
    sims_and_catalogues: tuple[HubSimulator, HubSimulator, Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``verify REPO_ID --layout modelscope``: the ModelScope id or the pulled one, a dataset
    (``--repo-type dataset``) or a model, one snapshot or all; repaired in place."""
    _hub, _ms, _both, only_ms = sims_and_catalogues
    root = tmp_path / "ms-root"

    def pull(repo_type: Any = "dataset", revision: str | None = None) -> Path:
        result = api.pull(
            DS, repo_type=repo_type, mirrors=only_ms, engine="httpx", options=FAST,
            layout="modelscope", cache_dir=root, revision=revision,
        )  # fmt: skip
        assert result.status == "ok"
        return Path(result.path)

    master, main, model = pull(), pull(revision="main"), pull("model")
    assert model == root / "models" / "acme-ms--rows" / "snapshots" / "master"
    one = api.verify(
        MS_DS, repo_type="dataset", layout="modelscope", cache_dir=root, revision="master"
    )
    assert one.ok and one.kind == "modelscope" and one.path == str(master)
    assert one.repo_id == MS_DS and one.repo_type == "dataset"
    assert {f.path for f in one.files} == set(files_of(dataset))
    # Every snapshot: each file's path under its snapshot's name.
    every = api.verify(
        DS, repo_type="dataset", layout="modelscope", cache_dir=root, mirrors=only_ms
    )
    assert every.ok and every.path == str(master.parent.parent)
    assert {f.path for f in every.files} == {
        f"{rev}/{p}" for rev in ("main", "master") for p in files_of(dataset)
    }
    # The model of the same id is another repo.
    as_model = api.verify(MS_DS, layout="modelscope", cache_dir=root)
    assert as_model.repo_type == "model" and [f.path for f in as_model.files] == ["config.json"]
    # Corrupt one snapshot's LFS file (same size), lose a file of the other.
    data = bytearray((master / PARQUET).read_bytes())
    data[100] ^= 0xFF
    (master / PARQUET).write_bytes(bytes(data))
    (main / "README.md").unlink()
    argv = ["verify", MS_DS, "--repo-type", "dataset", "--layout", "modelscope"]
    capsys.readouterr()
    assert cli.main([*argv, "--cache-dir", str(root), "--json"]) == 4
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bad = {f["path"]: f["status"] for f in payload["files"] if f["status"] != "ok"}
    assert bad == {f"master/{PARQUET}": "corrupted", "main/README.md": "missing"}
    assert payload["kind"] == "modelscope" and payload["repo_type"] == "dataset"
    fixed = api.verify(
        DS, repo_type="dataset", layout="modelscope", cache_dir=root, repair=True,
        mirrors=only_ms, engine="httpx",
    )  # fmt: skip
    assert fixed.ok and sorted(fixed.repaired) == ["main/README.md", f"master/{PARQUET}"]
    assert files_of(master) == files_of(main) == files_of(dataset)
    # Not there: not-in-cache (exit 1), naming the repo type; a space: a usage error.
    with pytest.raises(NotInCacheError, match="dataset acme-ms/other"):
        api.verify("acme-ms/other", repo_type="dataset", layout="modelscope", cache_dir=root)
    with pytest.raises(NotInCacheError, match="'v9'"):
        api.verify(MS_DS, repo_type="dataset", layout="modelscope", cache_dir=root, revision="v9")
    with pytest.raises(UsageError, match="not a space"):
        api.verify(MS_DS, repo_type="space", layout="modelscope", cache_dir=root)


def test_ls_and_rm_a_dataset_in_the_modelscope_cache(
    tmp_path: Path,
    dataset: Path,
    sims_and_catalogues: tuple[HubSimulator, HubSimulator, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _hub, _ms, _both, only_ms = sims_and_catalogues
    root = tmp_path / "ms-root"
    for repo_type in ("dataset", "model"):
        api.pull(
            DS, repo_type=repo_type, mirrors=only_ms, engine="httpx", options=FAST,
            layout="modelscope", cache_dir=root,
        )  # fmt: skip
    listed = api.list_models(cache_dir=root, layout="modelscope")
    assert [(m.repo_id, m.repo_type) for m in listed] == [(MS_DS, "model"), (MS_DS, "dataset")]
    capsys.readouterr()
    assert cli.main(["ls", "--layout", "modelscope", "--cache-dir", str(root)]) == 0
    assert f"datasets/{MS_DS}" in capsys.readouterr().out
    folder = root / "datasets" / "acme-ms--rows"
    # rm --repo-type dataset removes the dataset's folder (by the id a pull was given, mapped
    # through the catalogue in force), never the model of the same id.
    monkeypatch.setenv("MODELGET_MIRRORS", str(only_ms))
    argv = ["rm", DS, "--repo-type", "dataset", "--layout", "modelscope"]
    assert cli.main([*argv, "--cache-dir", str(root), "--yes", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["repo_id"] == MS_DS and payload["repo_type"] == "dataset"
    assert payload["repo_removed"] and payload["layout"] == "modelscope"
    assert not folder.exists() and (root / "datasets").is_dir()
    assert files_of(root / "models" / "acme-ms--rows" / "snapshots" / "master") == {
        "config.json": b'{"model": true}\n'
    }
    with pytest.raises(NotInCacheError, match="dataset acme-ms/rows"):
        api.remove(MS_DS, repo_type="dataset", cache_dir=root, layout="modelscope")
    with pytest.raises(UsageError, match="not a space"):
        api.remove(MS_DS, repo_type="space", cache_dir=root, layout="modelscope")


def test_a_space_from_modelscope_mirrors_only_is_a_usage_error(
    sims_and_catalogues: tuple[HubSimulator, HubSimulator, Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _hub, ms, both, only_ms = sims_and_catalogues
    ms.clear_log()
    argv = ["pull", "acme/app", "--repo-type", "space", "--json"]
    assert cli.main([*argv, "--mirrors", str(both), "--only", "ms"]) == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error["code"] == "usage" and "ModelScope has no spaces" in error["message"]
    assert cli.main([*argv, "--mirrors", str(only_ms)]) == 2
    assert not ms.log


def test_a_missing_dataset_or_revision_on_modelscope_is_named_as_such(
    sims_and_catalogues: tuple[HubSimulator, HubSimulator, Path, Path],
) -> None:
    """The ModelScope source asks the dataset routes whether the repo exists: a missing
    dataset is model-not-found naming it a dataset, a missing revision revision-not-found."""
    from modelget.errors import ModelNotFoundError, RevisionNotFoundError

    _hub, ms, _both, only_ms = sims_and_catalogues
    with pytest.raises(ModelNotFoundError, match="dataset acme/none"):
        api.plan("acme/none", repo_type="dataset", mirrors=only_ms)
    with pytest.raises(RevisionNotFoundError, match=r"'v9'.*dataset acme/rows"):
        api.plan(DS, repo_type="dataset", mirrors=only_ms, revision="v9")
    assert ms.requests(route="ms-api", path_glob=f"/api/v1/datasets/{MS_DS}")
