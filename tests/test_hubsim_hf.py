"""The hub simulator against the real ``huggingface_hub`` client (downloads, metadata, errors)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from modelget.testing import Fault, HubSimulator

MINILM_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
# size, sha256, git blob sha1 (None: LFS) — from shared research/test-models.md
MINILM_PINS: dict[str, tuple[int, str, str | None]] = {
    "model.safetensors": (
        90_868_376,
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        None,
    ),
    "config.json": (
        612,
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "72b987fd805cfa2b58c4c8c952b274a11bfd5a00",
    ),
    "tokenizer.json": (
        466_247,
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "cb202bfe2e3c98645018a6d12f182a434c9d3e02",
    ),
}
TOKEN = "hf_simulated_token_123"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks followed), by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_of(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def make_tiny_repo(root: Path, *, seed: int = 0, config: str = '{"hidden": 8}') -> Path:
    """A small repo: .gitattributes, an LFS safetensors, a subfolder, an empty file."""
    rng = random.Random(seed)
    (root / "sub" / "dir").mkdir(parents=True)
    (root / ".gitattributes").write_text(
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    )
    (root / "config.json").write_text(config)
    (root / "model.safetensors").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    (root / "sub" / "dir" / "notes.txt").write_text("notes\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "name with space.txt").write_text("quoted\n")
    return root


@pytest.fixture(autouse=True)
def hf_home(monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub reads HF_HOME & co. at import time: point them at this test's home."""
    home = Path(os.environ["HF_HOME"])
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    return home


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_tiny_repo(tmp_path / "tiny")


@pytest.fixture
def sim() -> Iterator[HubSimulator]:
    with HubSimulator() as s:
        yield s


@pytest.fixture
def cdn_sim() -> Iterator[HubSimulator]:
    with HubSimulator(cdn=True, name="cdn-hub") as s:
        yield s


def hub_cache() -> Path:
    return Path(os.environ["HF_HOME"]) / "hub"


@pytest.mark.parametrize("cdn", [False, True], ids=["direct", "cdn"])
def test_snapshot_download_then_offline(tiny_repo: Path, cdn: bool) -> None:
    with HubSimulator(cdn=cdn) as sim:
        commit = sim.add_repo("acme/tiny", tiny_repo)
        path = Path(snapshot_download("acme/tiny", endpoint=sim.url))

        assert digests(path) == digests(tiny_repo)
        repo_dir = hub_cache() / "models--acme--tiny"
        assert path == repo_dir / "snapshots" / commit
        assert (repo_dir / "refs" / "main").read_text() == commit
        lfs_sha = sha256_of(tiny_repo / "model.safetensors")
        assert (repo_dir / "blobs" / lfs_sha).is_file()

        cdn_gets = sim.requests(listener="cdn", method="GET")
        if cdn:
            assert [r.path for r in cdn_gets] == [f"/cdn/{lfs_sha}"]
            assert (
                sim.requests(route="hf-resolve", path_glob="*/model.safetensors")[0].status == 302
            )
        else:
            assert cdn_gets == []
        assert not sim.requests(status=500)

    # The simulator is gone: the cache alone must serve.
    cached = hf_hub_download("acme/tiny", "sub/dir/notes.txt", local_files_only=True)
    assert Path(cached).read_text() == "notes\n"
    again = snapshot_download("acme/tiny", local_files_only=True)
    assert Path(again) == path


@pytest.mark.parametrize("cdn", [False, True], ids=["direct", "cdn"])
def test_minilm_snapshot(minilm_dir: Path, cdn: bool) -> None:
    with HubSimulator(cdn=cdn) as sim:
        commit = sim.add_repo(
            "sentence-transformers/all-MiniLM-L6-v2", minilm_dir, commit=MINILM_REVISION
        )
        assert commit == MINILM_REVISION
        path = Path(snapshot_download("sentence-transformers/all-MiniLM-L6-v2", endpoint=sim.url))
    got = digests(path)
    assert got == digests(minilm_dir)
    assert len(got) == 13
    assert "1_Pooling/config.json" in got and ".gitattributes" in got
    for name, (size, sha, _) in MINILM_PINS.items():
        assert got[name] == sha
        assert (path / name).stat().st_size == size
    assert path.name == MINILM_REVISION


def test_model_info_and_tree_minilm(minilm_dir: Path, sim: HubSimulator) -> None:
    sim.add_repo("sentence-transformers/all-MiniLM-L6-v2", minilm_dir, commit=MINILM_REVISION)
    api = HfApi(endpoint=sim.url)
    info = api.model_info("sentence-transformers/all-MiniLM-L6-v2", files_metadata=True)
    assert info.sha == MINILM_REVISION
    assert info.siblings is not None
    siblings = {s.rfilename: s for s in info.siblings}
    assert len(siblings) == 13
    for name, (size, sha, git_sha1) in MINILM_PINS.items():
        sib = siblings[name]
        assert sib.size == size
        if git_sha1 is None:
            assert sib.lfs is not None
            assert sib.lfs.sha256 == sha and sib.lfs.size == size
        else:
            assert sib.lfs is None
            assert sib.blob_id == git_sha1
    # Only model.safetensors is LFS (the repo's .gitattributes names it; nothing is >= 10 MiB).
    assert [n for n, s in siblings.items() if s.lfs is not None] == ["model.safetensors"]

    tree = list(api.list_repo_tree("sentence-transformers/all-MiniLM-L6-v2", recursive=True))
    files = {e.path: e for e in tree if isinstance(e, RepoFile)}
    folders = [e.path for e in tree if isinstance(e, RepoFolder)]
    assert folders == ["1_Pooling"]
    assert len(files) == 13
    assert files["config.json"].blob_id == MINILM_PINS["config.json"][2]
    lfs = files["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == MINILM_PINS["model.safetensors"][1]
    assert files["model.safetensors"].xet_hash is None


def test_model_info_tree_and_listing(tiny_repo: Path, sim: HubSimulator) -> None:
    commit = sim.add_repo("acme/tiny", tiny_repo)
    api = HfApi(endpoint=sim.url)
    info = api.model_info("acme/tiny")
    assert info.sha == commit and info.id == "acme/tiny" and info.gated is False
    assert info.siblings is not None
    assert {s.rfilename for s in info.siblings} == set(digests(tiny_repo))

    top = list(api.list_repo_tree("acme/tiny"))
    assert {e.path for e in top} == {
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "empty.txt",
        "name with space.txt",
        "sub",
    }
    sub = list(api.list_repo_tree("acme/tiny", path_in_repo="sub/dir"))
    assert [(e.path, isinstance(e, RepoFile)) for e in sub] == [("sub/dir/notes.txt", True)]
    assert set(api.list_repo_files("acme/tiny")) == set(digests(tiny_repo))
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("acme/tiny", path_in_repo="nope"))

    refs = api.list_repo_refs("acme/tiny")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commit)]


def test_tree_pagination(tiny_repo: Path) -> None:
    with HubSimulator(page_size=2) as sim:
        sim.add_repo("acme/tiny", tiny_repo)
        entries = list(HfApi(endpoint=sim.url).list_repo_tree("acme/tiny", recursive=True))
        pages = sim.requests(route="hf-api", path_glob="/api/models/acme/tiny/tree/*")
    assert len(entries) == 8  # 6 files + sub + sub/dir
    assert len(pages) == 4
    assert [p.query.get("cursor") for p in pages] == [None, "2", "4", "6"]


def test_revisions_by_branch_tag_commit(tmp_path: Path, sim: HubSimulator) -> None:
    main = sim.add_repo("acme/tiny", make_tiny_repo(tmp_path / "v1"), tags=["v1.0"])
    dev_dir = make_tiny_repo(tmp_path / "v2", seed=1, config='{"hidden": 16}')
    dev = sim.add_repo("acme/tiny", dev_dir, branch="dev", tags=["v2.0"])
    pr = sim.add_repo("acme/tiny", dev_dir, branch="refs/pr/1")
    assert main != dev and pr == dev
    assert sim.commit("acme/tiny") == main

    def config(revision: str) -> str:
        return Path(
            hf_hub_download("acme/tiny", "config.json", revision=revision, endpoint=sim.url)
        ).read_text()

    assert config("main") == '{"hidden": 8}'
    assert config("v1.0") == '{"hidden": 8}'
    assert config("dev") == '{"hidden": 16}'
    assert config("v2.0") == '{"hidden": 16}'
    assert config(main) == '{"hidden": 8}'
    assert config("refs/pr/1") == '{"hidden": 16}'
    api = HfApi(endpoint=sim.url)
    assert api.model_info("acme/tiny", revision="refs/pr/1").sha == dev
    assert api.model_info("acme/tiny", revision=main).sha == main
    path = snapshot_download("acme/tiny", revision="dev", endpoint=sim.url)
    assert digests(Path(path)) == digests(dev_dir)
    assert (hub_cache() / "models--acme--tiny" / "refs" / "dev").read_text() == dev
    # The revision arrives percent-encoded: refs%2Fpr%2F1.
    assert sim.requests(path_glob="*/revision/refs%2Fpr%2F1")


def test_errors_map_to_client_exceptions(tiny_repo: Path, sim: HubSimulator) -> None:
    sim.add_repo("acme/tiny", tiny_repo)
    api = HfApi(endpoint=sim.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/missing", "config.json", endpoint=sim.url)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/tiny", "config.json", revision="nope", endpoint=sim.url)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/tiny", "missing.json", endpoint=sim.url)
    # The 404 carried X-Repo-Commit: the client remembers the absence.
    commit = sim.commit("acme/tiny")
    assert (hub_cache() / "models--acme--tiny" / ".no_exist" / commit / "missing.json").exists()


def test_gated_and_private_repos(tiny_repo: Path, sim: HubSimulator) -> None:
    sim.add_repo("acme/gated", tiny_repo, gated=True, token=TOKEN)
    sim.add_repo("acme/private", tiny_repo, token=TOKEN)
    api = HfApi(endpoint=sim.url)

    info = api.model_info("acme/gated")  # metadata stays public
    assert info.gated == "auto"
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "config.json", endpoint=sim.url)
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "config.json", endpoint=sim.url, token="wrong")
    path = hf_hub_download("acme/gated", "config.json", endpoint=sim.url, token=TOKEN)
    assert Path(path).read_text() == '{"hidden": 8}'

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/private")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/private", "config.json", endpoint=sim.url)
    assert api.model_info("acme/private", token=TOKEN).private is True
    snap = snapshot_download("acme/private", endpoint=sim.url, token=TOKEN)
    assert digests(Path(snap)) == digests(tiny_repo)


def test_token_never_reaches_the_cdn(tiny_repo: Path, cdn_sim: HubSimulator) -> None:
    cdn_sim.add_repo("acme/gated", tiny_repo, gated=True, token=TOKEN)
    path = snapshot_download("acme/gated", endpoint=cdn_sim.url, token=TOKEN)
    assert digests(Path(path)) == digests(tiny_repo)

    cdn_records = cdn_sim.requests(listener="cdn")
    assert len(cdn_records) == 1
    assert cdn_records[0].authorization is None
    assert cdn_records[0].port == cdn_sim.cdn_port
    hub_records = cdn_sim.requests(listener="hub")
    assert hub_records and all(r.authorization == f"Bearer {TOKEN}" for r in hub_records)
    assert all(r.port == cdn_sim.port for r in hub_records)


def test_client_resumes_after_truncation(tmp_path: Path, sim: HubSimulator) -> None:
    """A clean early EOF makes huggingface_hub resume with Range (from a 10 MiB boundary)."""
    root = tmp_path / "big"
    root.mkdir()
    data = random.Random(3).randbytes(24 * 1024 * 1024)
    (root / "model.safetensors").write_bytes(data)
    sim.add_repo("acme/big", root)
    sim.add_fault(Fault(route="hf-resolve", truncate_after_bytes=15 * 1024 * 1024, times=1))
    path = hf_hub_download("acme/big", "model.safetensors", endpoint=sim.url)
    assert sha256_of(Path(path)) == hashlib.sha256(data).hexdigest()
    gets = sim.requests(route="hf-resolve", method="GET")
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=10485760-", 206)]
    assert gets[0].bytes_sent == 15 * 1024 * 1024
