"""The speed design's guarantees, end to end against the hub simulator (no timing targets):
one transfer budget per pull, and digests computed while the bytes arrive."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from modelget import api
from modelget.engines import EngineName, EngineOptions
from modelget.testing.hubsim import HubSimulator

REPO = "acme/budget"
TOKEN = "hf_SPEEDtestTOKEN0123456789abcdef"
MB = 1024 * 1024


def test_max_rate_holds_for_the_whole_pull_token_files_included(
    engine: EngineName,
    tmp_path: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gated mirror (its bytes need the token, on its own origin) and a public one: every
    byte of the pull, whichever mirror and however it is fetched, shares one ``--max-rate``.
    So the pull cannot take less than bytes ÷ rate (a lower bound only; no upper bound)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"hidden": 8}\n')
    for i in range(2):
        (src / f"model-{i}.safetensors").write_bytes(os.urandom(3 * MB))
    official = HubSimulator(name="official", host_name="localhost").start()
    sims.append(official)
    official.add_repo(REPO, src, gated=True, token=TOKEN)
    other = HubSimulator(name="other").start()
    sims.append(other)
    other.add_repo(REPO, src)
    monkeypatch.setenv("SPEED_TOKEN", TOKEN)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: official\n    kind: hf\n    endpoint: {official.url}\n"
        "    token_env: SPEED_TOKEN\n"
        f"  - name: other\n    kind: hf\n    endpoint: {other.url}\n"
    )
    rate = 2_000_000
    total = sum(p.stat().st_size for p in src.iterdir())
    options = dataclasses.replace(EngineOptions(), max_rate_bps=rate)
    started = time.monotonic()
    result = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine=engine, options=options
    )
    transfer = time.monotonic() - started
    assert result.status == "ok", [(f.path, f.error) for f in result.failed]
    if engine == "httpx":
        # httpx sends the token to its own origin: both mirrors share the files. (aria2c never
        # gets a token, so there the public mirror serves what it can; a file only the token's
        # origin serves is handed to httpx after aria2c: tests/test_budget_aria2.py.)
        assert result.bytes_by_mirror.get("official", 0) > 0, result.bytes_by_mirror
    assert result.bytes_by_mirror.get("other", 0) > 0, result.bytes_by_mirror
    # One budget: the two mirrors' bytes together could not pass the cap (a 0.25 s burst of
    # slack). Two budgets (one per engine or per mirror) would take about half as long.
    assert transfer >= 0.8 * total / rate, (transfer, total / rate)
    for p in src.iterdir():
        got = (Path(result.path) / p.name).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(p.read_bytes()).digest()


def test_a_pull_verifies_with_the_digests_computed_while_downloading(
    engine: EngineName, tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor's check does not read a file again when its engine hashed it on the way
    (counted by spying on ``verify.hash_file``, the only whole-file read of the check)."""
    from modelget.verify import Digests, hash_file

    verify = sys.modules["modelget.verify"]  # the module: modelget.verify is the function

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"hidden": 8}\n')
    (src / "model.safetensors").write_bytes(os.urandom(5 * MB))
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    sim.add_repo(REPO, src)
    cat = tmp_path / "m.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n")
    reads: list[Path] = []
    real = hash_file

    def spy(path: Path, **kw: bool) -> Digests:
        reads.append(path)
        return real(path, **kw)

    monkeypatch.setattr(verify, "hash_file", spy)
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine=engine)
    assert result.status == "ok"
    if engine == "httpx":
        assert reads == [], reads  # every file was hashed as it arrived
    else:
        # aria2 hashes along when it can (not after a resume from its control file).
        assert len(reads) <= 2
