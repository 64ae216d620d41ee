"""The hub simulator against the real ModelScope client (``modelscope_hub``) and its JSON API."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from modelscope_hub import HubApi, set_default_config
from modelscope_hub import _download as ms_download
from modelscope_hub.compat.snapshot_download import snapshot_download
from modelscope_hub.errors import FileDownloadError, FileIntegrityError, NotExistError

from modelget.testing import Fault, HubSimulator

MS_ID = "Test/Tiny-0.5B"
TOKEN = "ms-simulated-token"
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def make_repo(root: Path, *, seed: int = 0, config: str = '{"hidden": 8}') -> Path:
    """Dotfile, LFS weights, a subfolder and an empty file."""
    rng = random.Random(seed)
    (root / "tokenizer").mkdir(parents=True)
    (root / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (root / "config.json").write_text(config)
    (root / "model.safetensors").write_bytes(rng.randbytes(2 * 1024 * 1024 + 3))
    (root / "tokenizer" / "tokenizer.json").write_text('{"vocab": {}}' * 100)
    (root / "empty.txt").write_bytes(b"")
    return root


@pytest.fixture(autouse=True)
def fresh_ms_config() -> Iterator[None]:
    """modelscope_hub caches its config (cache dir, token) process-wide: rebuild it per test."""
    set_default_config(None)
    yield
    set_default_config(None)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def sim() -> Iterator[HubSimulator]:
    with HubSimulator(name="modelscope") as s:
        yield s


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "ms-cache"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def ms_get(http: httpx.Client, sim: HubSimulator, path: str, **params: str) -> httpx.Response:
    return http.get(f"{sim.url}{path}", params=params)


@pytest.mark.parametrize("cdn", [False, True], ids=["direct", "cdn"])
def test_snapshot_download_dotted_repo(repo_dir: Path, cache: Path, cdn: bool) -> None:
    with HubSimulator(cdn=cdn) as sim:
        sim.add_repo("test/tiny", repo_dir, ms_id=MS_ID)
        path = Path(snapshot_download(MS_ID, endpoint=sim.url, cache_dir=str(cache)))
        assert path == cache / "models" / "Test--Tiny-0.5B" / "snapshots" / "master"
        assert digests(path) == digests(repo_dir)
        assert (path / "empty.txt").stat().st_size == 0
        listing = sim.requests(route="ms-api")
        assert [(r.path, r.query) for r in listing] == [
            (
                "/api/v1/models/Test/Tiny-0.5B/repo/files",
                {"Revision": "master", "Recursive": "True"},
            )
        ]
        files = {r.query["FilePath"] for r in sim.requests(route="ms-file")}
        assert files == set(digests(repo_dir))
        assert bool(sim.requests(listener="cdn")) == cdn


@pytest.mark.parametrize("cdn", [False, True], ids=["direct", "cdn"])
def test_minilm_under_another_id(
    http: httpx.Client, minilm_dir: Path, cache: Path, cdn: bool
) -> None:
    with HubSimulator(cdn=cdn) as sim:
        sim.add_repo(
            "sentence-transformers/all-MiniLM-L6-v2",
            minilm_dir,
            ms_id="AI-ModelScope/all-MiniLM-L6-v2",
        )
        path = Path(
            snapshot_download(
                "AI-ModelScope/all-MiniLM-L6-v2", endpoint=sim.url, cache_dir=str(cache)
            )
        )
        # Not served under its HF id on the ModelScope routes.
        assert (
            ms_get(http, sim, "/api/v1/models/sentence-transformers/all-MiniLM-L6-v2").status_code
            == 404
        )
    got = digests(path)
    assert got == digests(minilm_dir)
    assert len(got) == 13
    for name, sha in MINILM_SHA256.items():
        assert got[name] == sha


def test_corrupt_body_fails_the_hash_check(
    repo_dir: Path, cache: Path, sim: HubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ms_download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    sim.add_repo(MS_ID, repo_dir)
    handle = sim.add_fault(Fault(route="ms-file", path_glob="tokenizer/*", corrupt_offsets=(5,)))
    with pytest.raises(FileDownloadError) as info:
        HubApi(endpoint=sim.url).download_repo(MS_ID, "model", cache_dir=cache)
    failed = info.value.failed_files
    assert set(failed) == {"tokenizer/tokenizer.json"}
    assert isinstance(failed["tokenizer/tokenizer.json"], FileIntegrityError)
    snapshot = cache / "models" / "Test--Tiny-0.5B" / "snapshots" / "master"
    assert not (snapshot / "tokenizer" / "tokenizer.json").exists()
    assert (snapshot / "config.json").is_file()
    assert sim.fault_hits(handle) == 3  # the client tried three times

    sim.remove_fault(handle)
    path = HubApi(endpoint=sim.url).download_repo(MS_ID, "model", cache_dir=cache)
    assert digests(path) == digests(repo_dir)


def test_single_file_uses_linked_etag(
    repo_dir: Path, cache: Path, sim: HubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a listing the client verifies against X-Linked-ETag."""
    monkeypatch.setattr(ms_download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    sim.add_repo(MS_ID, repo_dir)
    api = HubApi(endpoint=sim.url)
    good = api.download_file(MS_ID, "model", "model.safetensors", cache_dir=cache)
    assert sha256_of(good) == sha256_of(repo_dir / "model.safetensors")
    sim.add_fault(Fault(route="ms-file", corrupt_every=1 << 20))
    with pytest.raises(FileIntegrityError):
        api.download_file(MS_ID, "model", "config.json", cache_dir=cache)


def test_revisions(http: httpx.Client, tmp_path: Path, cache: Path, sim: HubSimulator) -> None:
    v1 = sim.add_repo(MS_ID, make_repo(tmp_path / "v1"), branch="master", tags=["v1.0"])
    dev_dir = make_repo(tmp_path / "v2", seed=1, config='{"hidden": 16}')
    v2 = sim.add_repo(MS_ID, dev_dir, branch="dev")
    api = HubApi(endpoint=sim.url)

    def config(revision: str | None) -> str:
        path = api.download_repo(MS_ID, "model", revision=revision, cache_dir=cache)
        return (path / "config.json").read_text()

    assert config(None) == '{"hidden": 8}'
    assert config("v1.0") == '{"hidden": 8}'
    assert config("dev") == '{"hidden": 16}'
    assert config(v2) == '{"hidden": 16}'
    assert config(v1) == '{"hidden": 8}'
    with pytest.raises(NotExistError):
        api.download_repo(MS_ID, "model", revision="nope", cache_dir=cache)
    with pytest.raises(NotExistError):
        api.download_repo("Test/Missing", "model", cache_dir=cache)
    # The compat wrapper turns NotExistError into requests' HTTPError, like the old SDK.
    with pytest.raises(requests.HTTPError):
        snapshot_download("Test/Missing", endpoint=sim.url, cache_dir=str(cache))

    revs = ms_get(http, sim, f"/api/v1/models/{MS_ID}/revisions").json()["Data"]["RevisionMap"]
    assert [(b["Revision"], b["CommitId"]) for b in revs["Branches"]] == [
        ("master", v1),
        ("dev", v2),
    ]
    assert [(t["Revision"], t["CommitId"]) for t in revs["Tags"]] == [("v1.0", v1)]
    assert revs["Tags"][0]["CreatedAt"] > 4_000_000_000  # never picked by old SDKs


def test_default_branch_main_is_master(
    http: httpx.Client, repo_dir: Path, sim: HubSimulator
) -> None:
    commit = sim.add_repo(MS_ID, repo_dir)  # branch "main"
    revs = ms_get(http, sim, f"/api/v1/models/{MS_ID}/revisions").json()["Data"]["RevisionMap"]
    assert [(b["Revision"], b["CommitId"]) for b in revs["Branches"]] == [
        ("master", commit),
        ("main", commit),
    ]
    for revision in ("master", "main", commit):
        files = ms_get(http, sim, f"/api/v1/models/{MS_ID}/repo/files", Revision=revision)
        assert files.status_code == 200
    assert ms_get(http, sim, f"/api/v1/models/{MS_ID}/repo/files").status_code == 200


def test_gated_and_private(
    http: httpx.Client, repo_dir: Path, cache: Path, sim: HubSimulator
) -> None:
    sim.add_repo("test/gated", repo_dir, ms_id="Test/Gated", gated=True, token=TOKEN)
    sim.add_repo("test/private", repo_dir, ms_id="Test/Private", token=TOKEN)
    with pytest.raises(FileDownloadError):
        HubApi(endpoint=sim.url).download_repo("Test/Gated", "model", cache_dir=cache)
    assert {r.status for r in sim.requests(route="ms-file")} == {401}

    sim.clear_log()
    path = HubApi(endpoint=sim.url, token=TOKEN).download_repo(
        "Test/Gated", "model", cache_dir=cache
    )
    assert digests(path) == digests(repo_dir)
    for record in sim.requests(route="ms-file"):
        assert record.authorization == f"Bearer {TOKEN}"
        assert record.cookie is not None and f"m_session_id={TOKEN}" in record.cookie

    assert ms_get(http, sim, "/api/v1/models/Test/Private").status_code == 401
    listing = ms_get(http, sim, "/api/v1/models/Test/Private/repo/files", Revision="master")
    assert listing.status_code == 401
    assert listing.json()["Success"] is False
    with pytest.raises(requests.HTTPError):
        snapshot_download("Test/Private", endpoint=sim.url, cache_dir=str(cache / "p"))
    path = Path(
        snapshot_download("Test/Private", endpoint=sim.url, cache_dir=str(cache / "p"), token=TOKEN)
    )
    assert digests(path) == digests(repo_dir)


def test_json_api_shapes(http: httpx.Client, repo_dir: Path, sim: HubSimulator) -> None:
    commit = sim.add_repo(MS_ID, repo_dir)
    info = ms_get(http, sim, f"/api/v1/models/{MS_ID}").json()
    assert info["Code"] == 200 and info["Success"] is True and info["Message"] == "success"
    assert info["RequestId"]
    assert info["Data"]["Name"] == "Tiny-0.5B" and info["Data"]["Path"] == "Test"

    files: list[dict[str, Any]] = ms_get(
        http, sim, f"/api/v1/models/{MS_ID}/repo/files", Revision="master", Recursive="True"
    ).json()["Data"]["Files"]
    by_path = {f["Path"]: f for f in files}
    assert by_path["tokenizer"]["Type"] == "tree"
    blob = by_path["tokenizer/tokenizer.json"]
    assert blob["Name"] == "tokenizer.json" and blob["Type"] == "blob"
    assert blob["Sha256"] == sha256_of(repo_dir / "tokenizer" / "tokenizer.json")
    assert blob["Size"] == (repo_dir / "tokenizer" / "tokenizer.json").stat().st_size
    assert blob["Revision"] == commit and blob["IsLFS"] is False and blob["Mode"] == "33188"
    assert by_path["model.safetensors"]["IsLFS"] is True
    expected_keys = {
        "Name",
        "Path",
        "Type",
        "Size",
        "Sha256",
        "Revision",
        "IsLFS",
        "Mode",
        "CommitMessage",
        "CommittedDate",
        "CommitterName",
        "InCheck",
    }
    assert expected_keys <= set(blob)

    top = ms_get(http, sim, f"/api/v1/models/{MS_ID}/repo/files", Revision="master").json()
    assert {f["Path"] for f in top["Data"]["Files"]} == {
        ".gitattributes",
        "config.json",
        "empty.txt",
        "model.safetensors",
        "tokenizer",
    }
    sub = ms_get(
        http,
        sim,
        f"/api/v1/models/{MS_ID}/repo/files",
        Revision="master",
        Recursive="True",
        Root="tokenizer",
    ).json()
    assert [f["Path"] for f in sub["Data"]["Files"]] == ["tokenizer/tokenizer.json"]
    missing_root = ms_get(http, sim, f"/api/v1/models/{MS_ID}/repo/files", Root="nope")
    assert missing_root.status_code == 404 and missing_root.json()["Success"] is False

    body = ms_get(
        http,
        sim,
        f"/api/v1/models/{MS_ID}/repo",
        Revision="master",
        FilePath="tokenizer/tokenizer.json",
    )
    assert body.status_code == 200
    assert body.content == (repo_dir / "tokenizer" / "tokenizer.json").read_bytes()
    assert body.headers["X-Linked-ETag"] == f'"{blob["Sha256"]}"'
    assert "Content-Encoding" not in body.headers
    ranged = http.get(
        sim.ms_file_url(MS_ID, "tokenizer/tokenizer.json"), headers={"Range": "bytes=2-5"}
    )
    assert ranged.status_code == 206 and ranged.content == body.content[2:6]
    assert ranged.headers["Content-Range"] == f"bytes 2-5/{blob['Size']}"

    for path, status in (
        ("/api/v1/repos/internalAccelerationInfo", 404),
        (f"/api/v1/models/{MS_ID}/something/else", 404),
        ("/openapi/v1/models/Test/Tiny-0.5B", 404),
        ("/api/v1/models/Test/Unknown", 404),
    ):
        resp = ms_get(http, sim, path)
        assert resp.status_code == status, path
        envelope = resp.json()
        assert envelope["Code"] == status and envelope["Success"] is False
    missing = ms_get(
        http, sim, f"/api/v1/models/{MS_ID}/repo", Revision="master", FilePath="nope.bin"
    )
    assert missing.status_code == 404 and missing.json()["Code"] == 404
    bad_rev = ms_get(http, sim, f"/api/v1/models/{MS_ID}/repo/files", Revision="nope")
    assert bad_rev.status_code == 404


def test_client_resumes_after_reset(repo_dir: Path, cache: Path, sim: HubSimulator) -> None:
    sim.add_repo(MS_ID, repo_dir)
    sim.add_fault(
        Fault(route="ms-file", path_glob="*.safetensors", reset_after_bytes=1_000_000, times=1)
    )
    path = HubApi(endpoint=sim.url).download_repo(MS_ID, "model", cache_dir=cache)
    assert digests(path) == digests(repo_dir)
    weights = [
        r for r in sim.requests(route="ms-file") if r.query["FilePath"] == "model.safetensors"
    ]
    assert [(g.range, g.status, g.bytes_sent) for g in weights] == [
        (None, 200, 1_000_000),
        ("bytes=1000000-", 206, 2 * 1024 * 1024 + 3 - 1_000_000),
    ]


def test_token_stays_off_the_cdn(repo_dir: Path, cache: Path) -> None:
    """Hub on "localhost", CDN on 127.0.0.1: neither the bearer token nor the cookie follows."""
    with HubSimulator(cdn=True, host_name="localhost") as sim:
        sim.add_repo("test/gated", repo_dir, ms_id="Test/Gated", gated=True, token=TOKEN)
        assert sim.url.startswith("http://localhost:")
        path = HubApi(endpoint=sim.url, token=TOKEN).download_repo(
            "Test/Gated", "model", cache_dir=cache
        )
        assert digests(path) == digests(repo_dir)
        cdn = sim.requests(listener="cdn")
        assert [r.status for r in cdn] == [200]
        assert cdn[0].authorization is None and cdn[0].cookie is None
        assert all(r.authorization == f"Bearer {TOKEN}" for r in sim.requests(listener="hub"))


# --- datasets: /api/v1/datasets/..., a paged repo/tree ----------------------------------------


def make_dataset(root: Path, rows: int) -> Path:
    """A dataset with more files in one folder than modelscope-hub lists in a page (200)."""
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text("# a dataset\n")
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    for i in range(rows):
        (root / "data" / f"part-{i:04d}.jsonl").write_text(f'{{"row": {i}}}\n')
    (root / "train.parquet").write_bytes(random.Random(1).randbytes(300_000))
    return root


@pytest.mark.parametrize("cdn", [False, True], ids=["direct", "cdn"])
def test_dataset_snapshot_download_pages_through_the_tree(
    http: httpx.Client, tmp_path: Path, cache: Path, cdn: bool
) -> None:
    from modelscope_hub.compat.file_download import dataset_file_download
    from modelscope_hub.compat.snapshot_download import dataset_snapshot_download

    data = make_dataset(tmp_path / "ds", rows=230)
    with HubSimulator(cdn=cdn) as sim:
        sim.add_repo("acme/rows", data, repo_type="dataset", ms_id="Acme/Rows")
        # A model of the same id is another repo (each type its own namespace).
        sim.add_repo("acme/rows", make_repo(tmp_path / "model"), ms_id="Acme/Rows")
        path = Path(dataset_snapshot_download("Acme/Rows", endpoint=sim.url, cache_dir=str(cache)))
        assert path == cache / "datasets" / "Acme--Rows" / "snapshots" / "master"
        assert digests(path) == digests(data)
        pages = sim.requests(route="ms-api", path_glob="/api/v1/datasets/Acme/Rows/repo/tree")
        # 232 files + the data/ folder, 200 a page: two pages, the second short.
        assert [(r.query["PageNumber"], r.query["PageSize"]) for r in pages] == [
            ("1", "200"),
            ("2", "200"),
        ]
        files = {r.query["FilePath"] for r in sim.requests(route="ms-file")}
        assert files == set(digests(data))
        assert all(
            r.path == "/api/v1/datasets/Acme/Rows/repo" for r in sim.requests(route="ms-file")
        )
        assert bool(sim.requests(listener="cdn")) == cdn
        # The client's own offline read, and one file.
        assert (
            Path(
                dataset_snapshot_download("Acme/Rows", local_files_only=True, cache_dir=str(cache))
            )
            == path
        )
        one = dataset_file_download(
            "Acme/Rows", "data/part-0007.jsonl", endpoint=sim.url, cache_dir=str(tmp_path / "c1")
        )
        assert Path(one).read_text() == '{"row": 7}\n'
        # The API: revisions name the commit; a page past the end is empty; a model route
        # does not list the dataset's files, nor a dataset route the model's.
        api = HubApi(endpoint=sim.url, token="")
        commit = sim.commit("acme/rows", repo_type="dataset")
        revisions = api.list_repo_revisions("Acme/Rows", "dataset")
        assert {"Revision": "master", "CommitId": commit} in [
            {k: r[k] for k in ("Revision", "CommitId")} for r in revisions
        ]
        past = ms_get(
            http, sim, "/api/v1/datasets/Acme/Rows/repo/tree", PageNumber="9", PageSize="200",
            Recursive="True",
        )  # fmt: skip
        assert past.status_code == 200 and past.json()["Data"]["Files"] == []
        assert ms_get(http, sim, "/api/v1/datasets/Acme/Rows/repo/files").status_code == 404
        model_files = {f.path for f in api.list_repo_files("Acme/Rows", "model")}
        assert "model.safetensors" in model_files and "train.parquet" not in model_files
        assert api.repo_exists("Acme/Rows", "dataset")
        assert not api.repo_exists("Acme/Other", "dataset")
        url = sim.ms_file_url("Acme/Rows", "README.md", repo_type="dataset")
        assert http.get(url).content == b"# a dataset\n"


def test_no_studio_routes(http: httpx.Client, tmp_path: Path, sim: HubSimulator) -> None:
    """ModelScope has no download API for its studios: a space is not on the ModelScope
    routes, and cannot be given a ModelScope id."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("print('hi')\n")
    sim.add_repo("acme/app", app, repo_type="space")
    assert ms_get(http, sim, "/api/v1/studios/acme/app/repo/files").status_code == 404
    assert ms_get(http, sim, "/api/v1/datasets/acme/app").status_code == 404
    with pytest.raises(ValueError, match="spaces"):
        sim.add_repo("acme/app2", app, repo_type="space", ms_id="Acme/App2")
