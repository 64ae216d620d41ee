"""A model that is on disk never needs the network (issue 17 §1).

Offline (``--offline``, ``MODELGET_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, ``offline=True``): no
request at all, the files on disk answer, or ``offline-missing`` names what is missing. With
every mirror unreachable, a complete snapshot on disk answers too, with a warning; for a
branch, a full commit, a lockfile and a local dir. Real simulator, real engines.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.engines import EngineName, EngineOptions
from modelget.errors import ModelgetError
from modelget.events import NullReporter
from modelget.testing.hubsim import HubSimulator

REPO = "acme/offline"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3)
WEIGHTS = "model.safetensors"


class Messages(NullReporter):
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def on_message(self, level: str, text: str) -> None:
        self.messages.append((level, text))


@pytest.fixture(autouse=True)
def online_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODELGET_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "mg-cache"))  # probe results
    monkeypatch.setenv("MODELGET_PROBE_TIMEOUT", "2")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / WEIGHTS).write_bytes(random.Random(4).randbytes(1024 * 1024 + 3))
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    (root / "sub" / "vocab.txt").write_text("a\nb\n")
    return root


@pytest.fixture
def hub(repo: Path, sims: list[HubSimulator]) -> HubSimulator:
    sim = HubSimulator(name="hub", cdn=True).start()
    sims.append(sim)
    sim.add_repo(REPO, repo)
    return sim


def test_offline_answers_from_the_cache_with_no_request(
    engine: EngineName,
    tmp_path: Path,
    hub: HubSimulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    hub.clear_log()
    result = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, offline=True)
    assert result.status == "ok" and result.path == first.path and result.commit == first.commit
    assert result.bytes_fetched == 0 and {f.status for f in result.files} == {"reused"}
    assert len(result.files) == 3
    for variable in ("MODELGET_OFFLINE", "HF_HUB_OFFLINE"):
        for value in ("1", "true", "YES"):
            monkeypatch.setenv(variable, value)
            again = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine)
            assert again.path == first.path
        monkeypatch.delenv(variable)
    code = cli.main(["pull", REPO, "--mirrors", str(cat), "--cache-dir", str(cache), "--offline"])
    assert code == 0 and first.path in capsys.readouterr().out
    assert hub.log == []  # not one request, not even the probe's


def test_offline_with_nothing_on_disk_names_what_is_missing(
    tmp_path: Path, hub: HubSimulator
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    with pytest.raises(ModelgetError) as err:
        api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", offline=True)
    assert err.value.code == "offline-missing" and REPO in err.value.message
    assert "refs/main" in err.value.message and hub.log == []


def test_offline_checks_completeness_against_what_the_pulls_recorded(
    engine: EngineName, tmp_path: Path, hub: HubSimulator
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    api.pull(REPO, mirrors=cat, cache_dir=cache, include=["*.json"], engine=engine, options=FAST)
    hub.clear_log()
    with pytest.raises(ModelgetError) as err:
        api.pull(REPO, mirrors=cat, cache_dir=cache, offline=True)
    assert err.value.code == "offline-missing"
    assert WEIGHTS in err.value.message and "sub/vocab.txt" in err.value.message
    part = api.pull(REPO, mirrors=cat, cache_dir=cache, include=["*.json"], offline=True)
    assert [f.path for f in part.files] == ["config.json"]
    # A second pull for the rest: the record keeps the first pull's file too.
    api.pull(REPO, mirrors=cat, cache_dir=cache, exclude=["*.json"], engine=engine, options=FAST)
    hub.clear_log()
    whole = api.pull(REPO, mirrors=cat, cache_dir=cache, offline=True)
    assert sorted(f.path for f in whole.files) == [
        "config.json",
        "model.safetensors",
        "sub/vocab.txt",
    ]
    # A file that vanished from the snapshot is missing again.
    (Path(whole.path) / "sub" / "vocab.txt").unlink()
    with pytest.raises(ModelgetError, match=r"sub/vocab\.txt"):
        api.pull(REPO, mirrors=cat, cache_dir=cache, offline=True)
    assert hub.log == []


@pytest.mark.parametrize("how", ["branch", "commit", "lock"])
def test_mirrors_unreachable_and_the_snapshot_complete_is_a_success_with_a_warning(
    how: str, engine: EngineName, tmp_path: Path, hub: HubSimulator
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    lockfile = api.lock([REPO], mirrors=cat)
    hub.stop()  # an outage: the port refuses connections
    reporter = Messages()
    kwargs: dict[str, object] = {}
    if how == "commit":
        kwargs["revision"] = first.commit
    if how == "lock":
        kwargs["locked"] = lockfile.models[0]
    result = api.pull(
        REPO,
        mirrors=cat,
        cache_dir=cache,
        engine=engine,
        options=FAST,
        reporter=reporter,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.status == "ok" and result.path == first.path and result.bytes_fetched == 0
    assert (
        "warning",
        f"offline: mirrors unreachable, using the cached snapshot {first.commit}",
    ) in reporter.messages


def test_mirrors_unreachable_and_nothing_on_disk_is_the_network_error(
    tmp_path: Path, hub: HubSimulator
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    other = tmp_path / "other-cache"
    api.pull(REPO, mirrors=cat, cache_dir=other, engine="httpx", options=FAST)
    lockfile = api.lock([REPO], mirrors=cat)
    hub.stop()
    with pytest.raises(ModelgetError) as err:
        api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine="httpx")
    assert err.value.code == "mirrors-unreachable" and "none answered" in err.value.message
    with pytest.raises(ModelgetError) as err:
        api.pull(
            REPO,
            mirrors=cat,
            cache_dir=tmp_path / "cache",
            engine="httpx",
            locked=lockfile.models[0],
        )
    # Not "locked-commit-missing": no mirror answered, so nobody said the commit is gone.
    assert err.value.code == "mirrors-unreachable"


def test_a_local_dir_answers_offline_and_when_unreachable_without_the_cache(
    engine: EngineName, tmp_path: Path, repo: Path, hub: HubSimulator
) -> None:
    cat, local = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "model"
    first = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, engine=engine, options=FAST
    )
    assert first.status == "ok" and not (tmp_path / "c").exists()
    offline = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, engine=engine, offline=True
    )
    assert offline.path == str(local) and offline.commit == first.commit
    hub.stop()
    unreachable = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, engine=engine, options=FAST
    )
    assert unreachable.status == "ok" and unreachable.bytes_fetched == 0
    (local / WEIGHTS).unlink()
    with pytest.raises(ModelgetError) as err:
        api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, offline=True)
    assert err.value.code == "offline-missing" and WEIGHTS in err.value.message


def test_a_snapshot_another_tool_made_is_used_offline_with_a_note(
    tmp_path: Path, hub: HubSimulator
) -> None:
    from huggingface_hub import snapshot_download

    cache = tmp_path / "cache"
    path = snapshot_download(REPO, endpoint=hub.url, cache_dir=cache)
    hub.clear_log()
    reporter = Messages()
    result = api.pull(REPO, cache_dir=cache, offline=True, reporter=reporter)
    assert result.status == "ok" and Path(result.path) == Path(path)
    assert sorted(f.path for f in result.files) == [
        "config.json",
        "model.safetensors",
        "sub/vocab.txt",
    ]
    assert any("completeness not checked" in text for _, text in reporter.messages)
    assert hub.log == []


def test_dry_run_offline_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["pull", REPO, "--dry-run", "--offline", "--cache-dir", str(tmp_path)])
    assert code == 2 and "offline" in capsys.readouterr().err
