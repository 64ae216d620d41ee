"""``--local-dir``: the files land there alone, in huggingface_hub's local-dir layout.

As ``hf download --local-dir``: nothing is written to the Hugging Face cache. A re-run with
the directory complete and the cache gone (a persisted ``/models``, no persisted cache: the
Docker pattern) fetches nothing, checking the directory against the manifest; a file that is
there without hf's metadata is hashed and kept when it matches, fetched again when it does not.
Relative ``--cache-dir`` and ``--local-dir`` work on both engines. Real simulator, real engines.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from modelget import api
from modelget.engines import EngineName, EngineOptions
from modelget.testing.faults import Fault
from modelget.testing.hubsim import HubSimulator, RequestRecord

REPO = "acme/local"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3)
WEIGHTS = "model.safetensors"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / WEIGHTS).write_bytes(random.Random(3).randbytes(2 * 1024 * 1024 + 5))
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    (root / "sub" / "vocab.txt").write_text("a\nb\n")
    return root


@pytest.fixture
def hub(repo: Path, sims: list[HubSimulator]) -> HubSimulator:
    sim = HubSimulator(name="hub", cdn=True).start()
    sims.append(sim)
    sim.add_repo(REPO, repo)
    return sim


def body_bytes(sim: HubSimulator) -> int:
    """File bytes the simulator sent (hub and CDN), the one-byte resolve checks left out."""

    def transfer(r: RequestRecord) -> bool:
        return r.route in ("hf-resolve", "cdn") and r.method == "GET" and r.bytes_sent > 1

    return sum(r.bytes_sent for r in sim.log if transfer(r))


def same_tree(local: Path, repo: Path, *, links: bool = False) -> None:
    """Every file of ``repo`` is in ``local`` with its bytes (real files unless ``links``)."""
    for f in repo.rglob("*"):
        if f.is_file():
            got = local / f.relative_to(repo)
            assert got.is_file() and (links or not got.is_symlink()), got
            assert got.read_bytes() == f.read_bytes(), got


def test_a_local_dir_pull_leaves_the_cache_alone_and_hf_reads_the_dir(
    engine: EngineName, tmp_path: Path, repo: Path, hub: HubSimulator
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    local, cache = tmp_path / "model", tmp_path / "cache"
    result = api.pull(
        REPO, mirrors=cat, cache_dir=cache, local_dir=local, engine=engine, options=FAST
    )
    assert result.status == "ok" and Path(result.path) == local
    same_tree(local, repo)
    assert not cache.exists()
    assert not list(local.rglob("*.incomplete"))
    # huggingface_hub takes the directory as the complete download of that commit.
    hub_path = snapshot_download(
        REPO,
        local_dir=local,
        endpoint=hub.url,
        cache_dir=tmp_path / "hf-cache",
        revision=result.commit,
    )
    assert Path(hub_path) == local


def test_rerun_with_the_dir_complete_and_the_cache_gone_fetches_nothing(
    engine: EngineName, tmp_path: Path, repo: Path, hub: HubSimulator
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    local, cache = tmp_path / "model", tmp_path / "cache"
    # First filled through the cache, then the cache is lost (not persisted).
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, local_dir=local, engine=engine)
    assert first.status == "ok"
    api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    shutil.rmtree(cache)
    hub.clear_log()
    again = api.pull(
        REPO, mirrors=cat, cache_dir=cache, local_dir=local, engine=engine, options=FAST
    )
    assert again.status == "ok" and again.bytes_fetched == 0 and body_bytes(hub) == 0
    assert {f.status for f in again.files} == {"reused"}
    same_tree(local, repo)


def test_files_without_metadata_are_checked_kept_when_right_fetched_when_wrong(
    engine: EngineName, tmp_path: Path, repo: Path, hub: HubSimulator
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    local = tmp_path / "model"
    # Copied in by hand (no .cache/huggingface metadata): one right, one same-size but wrong.
    local.mkdir()
    shutil.copy(repo / WEIGHTS, local / WEIGHTS)
    wrong = bytearray((repo / "config.json").read_bytes())
    wrong[0] ^= 0xFF
    (local / "config.json").write_bytes(bytes(wrong))
    result = api.pull(
        REPO,
        mirrors=cat,
        cache_dir=tmp_path / "cache",
        local_dir=local,
        engine=engine,
        options=FAST,
    )
    assert result.status == "ok"
    status = {f.path: f.status for f in result.files}
    assert status[WEIGHTS] == "reused" and status["config.json"] == "fetched"
    assert body_bytes(hub) < (repo / WEIGHTS).stat().st_size  # the weights were not fetched
    same_tree(local, repo)
    assert (local / ".cache" / "huggingface" / "download" / f"{WEIGHTS}.metadata").is_file()


def test_a_model_in_the_cache_is_copied_into_the_local_dir_without_a_transfer(
    engine: EngineName, tmp_path: Path, repo: Path, hub: HubSimulator
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    cache = tmp_path / "cache"
    api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    before = sorted(str(p) for p in cache.rglob("*"))
    hub.clear_log()
    local = tmp_path / "model"
    result = api.pull(
        REPO, mirrors=cat, cache_dir=cache, local_dir=local, engine=engine, options=FAST
    )
    assert result.status == "ok" and result.bytes_fetched == 0 and body_bytes(hub) == 0
    same_tree(local, repo)
    assert sorted(str(p) for p in cache.rglob("*")) == before  # the cache is only read


def test_relative_cache_and_local_dirs_work(
    engine: EngineName,
    tmp_path: Path,
    repo: Path,
    hub: HubSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    monkeypatch.chdir(tmp_path)
    cached = api.pull(REPO, mirrors=cat, cache_dir="rel/cache", engine=engine, options=FAST)
    assert cached.status == "ok" and Path(cached.path).is_absolute()
    same_tree(Path(cached.path), repo, links=True)
    local = api.pull(
        REPO,
        mirrors=cat,
        cache_dir="rel/other-cache",
        local_dir="rel/model",
        engine=engine,
        options=FAST,
    )
    assert local.status == "ok"
    same_tree(tmp_path / "rel" / "model", repo)


def test_bytes_that_fail_their_digest_never_reach_the_local_dir(
    engine: EngineName, tmp_path: Path, repo: Path, sims: list[HubSimulator]
) -> None:
    bad = HubSimulator(name="bad").start()
    sims.append(bad)
    bad.add_repo(REPO, repo)
    bad.add_fault(Fault(route="*", path_glob=WEIGHTS, corrupt_offsets=(1000,)))
    cat = bad.write_catalogue(tmp_path / "m.yaml")
    local = tmp_path / "model"
    result = api.pull(
        REPO,
        mirrors=cat,
        cache_dir=tmp_path / "cache",
        local_dir=local,
        engine=engine,
        options=FAST,
    )
    assert result.status == "partial"
    assert not (local / WEIGHTS).exists()
    quarantined = list((local / ".cache" / "huggingface" / "quarantine").iterdir())
    assert quarantined and all(q.name.endswith(".bad") for q in quarantined)  # named for it
    assert not (tmp_path / "cache").exists()
