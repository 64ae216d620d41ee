"""One transfer budget per pull with the aria2 engine, token files included (issue 14).

aria2c never gets a token: a gated repository's LFS files go to aria2c with the CDN's signed
URL, and the hub's own files (served only with the token) are handed back to the httpx engine
by the executor, after aria2c. ``--max-rate`` must hold for the whole pull: it takes at least
bytes ÷ rate (a lower bound only, with slack for the engines' start-up bursts).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import api
from modelget.engines import EngineOptions, aria2c_path
from modelget.testing.hubsim import HubSimulator

pytestmark = pytest.mark.aria2

REPO = "acme/gated"
TOKEN = "hf_BUDGETtoken0123456789abcdef"
RATE = 1_000_000


@pytest.fixture(autouse=True)
def need_aria2c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "_mg"))


@pytest.fixture
def sim() -> Iterator[HubSimulator]:
    s = HubSimulator(name="official", cdn=True).start()
    yield s
    s.stop()


def test_max_rate_holds_for_a_pull_of_token_and_cdn_files(
    tmp_path: Path, sim: HubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.safetensors").write_bytes(rng.randbytes(1_500_000))  # LFS: CDN, aria2c
    (repo / "vocab.txt").write_bytes(rng.randbytes(900_000))  # the hub's own: token, httpx
    (repo / "config.json").write_text('{"hidden_size": 8}\n')
    sim.add_repo(REPO, repo, gated=True, token=TOKEN)
    monkeypatch.setenv("OFFICIAL_TOKEN", TOKEN)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: official\n    kind: hf\n    endpoint: {sim.url}\n"
        "    token_env: OFFICIAL_TOKEN\n"
    )
    total = sum(f.stat().st_size for f in repo.iterdir())
    options = EngineOptions(
        max_rate_bps=RATE, stall_timeout_s=5.0, retry_wait_s=0.1, min_split_bytes=1 << 20
    )

    started = time.monotonic()
    result = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine="aria2", options=options
    )
    elapsed = time.monotonic() - started

    assert result.status == "ok", result.failed
    assert result.engine == "aria2"
    # Both engines moved bytes: aria2c the CDN file, the httpx engine the hub's token file.
    pulled = [r for r in sim.log if r.user_agent != "modelget-probe" and r.bytes_sent > 1]
    cdn = [r for r in pulled if r.route == "cdn" and r.method == "GET"]
    assert cdn and all(r.user_agent == "modelget-aria2" and r.authorization is None for r in cdn)
    hub = [r for r in pulled if r.route == "hf-resolve" and "vocab.txt" in r.path]
    assert hub and all(r.authorization == f"Bearer {TOKEN}" for r in hub)
    assert all(r.user_agent != "modelget-aria2" for r in hub)
    # The budget: one rate for the whole pull (each engine's start-up burst is the slack).
    assert elapsed >= 0.8 * total / RATE, (elapsed, total / RATE)
