"""``--token`` / ``token=`` (issue 17 §3): HF_TOKEN's value for one command, sent where HF_TOKEN
would be and nowhere else, on both engines; never in a message, a repr or aria2c."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelget import api
from modelget.auth import mirror_token, takes_hf_token, with_token
from modelget.datatypes import Mirror
from modelget.engines import EngineName, aria2c_path
from modelget.errors import UsageError
from modelget.testing.hubsim import HubSimulator

REPO = "acme/secretive"
TOKEN = "hf_fromTheCommandLine0123456789"
ENV_TOKEN = "hf_fromTheEnvironment0123456789"
CORP_TOKEN = "corp_ownToken0123456789"


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "config.json").write_text('{"a": 1}\n')
    (repo / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024))
    return repo


def _entry(name: str, url: str, token_env: str | None = None) -> str:
    lines = [f"  - name: {name}", "    kind: hf", f"    endpoint: {url}"]
    if token_env:
        lines.append(f"    token_env: {token_env}")
    return "\n".join(lines)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelget", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_the_token_stands_in_for_hf_token_only_where_hf_token_would_go() -> None:
    hub = Mirror("hub", "hf", "https://hub.test", token_env="HF_TOKEN")
    login = Mirror("login", "hf", "https://login.test", token_env="CORP", use_hf_login=True)
    third = Mirror("third", "hf", "https://third.test")
    corp = Mirror("corp", "hf", "https://corp.test", token_env="CORP")
    assert [takes_hf_token(m) for m in (hub, login, third, corp)] == [True, True, False, False]
    with_ = {m.name: m for m in with_token([hub, login, third, corp], f"  {TOKEN}\n")}
    assert mirror_token(with_["hub"]) == TOKEN
    assert mirror_token(with_["third"]) is None and mirror_token(with_["corp"]) is None
    assert TOKEN not in repr(with_["hub"]) and TOKEN not in repr(list(with_.values()))
    assert with_token([hub], None) == [hub]
    for bad in ("", "  ", "two words", "line\nbreak"):
        with pytest.raises(UsageError) as info:
            with_token([hub], bad)
        assert "words" not in info.value.message and "break" not in info.value.message


def test_the_token_overrides_the_variable_but_not_another_mirror_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("CORP", CORP_TOKEN)
    hub = Mirror("hub", "hf", "https://hub.test", token_env="HF_TOKEN")
    login = Mirror("login", "hf", "https://login.test", token_env="CORP", use_hf_login=True)
    [hub2, login2] = with_token([hub, login], TOKEN)
    assert mirror_token(hub) == ENV_TOKEN and mirror_token(hub2) == TOKEN
    assert mirror_token(login2) == CORP_TOKEN  # its own variable first, as ever


@pytest.mark.parametrize("engine", ["httpx", "aria2"])
def test_the_token_reaches_only_its_mirror_s_origin(
    engine: EngineName, tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gated repo on the hub that takes HF_TOKEN (LFS redirected to a CDN on another
    origin), beside a third-party mirror and one with its own token_env: ``token=`` goes to
    the hub's own origin only, overriding HF_TOKEN; the others never see it."""
    if engine == "aria2" and aria2c_path() is None:
        pytest.skip("aria2c is not installed")
    repo = _repo(tmp_path)
    official = HubSimulator(name="official", cdn=True).start()
    third = HubSimulator(name="third").start()
    corp = HubSimulator(name="corp").start()
    sims.extend([official, third, corp])
    official.add_repo(REPO, repo, gated=True, token=TOKEN)
    third.add_repo(REPO, repo)
    corp.add_repo(REPO, repo)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        + "\n".join(
            [
                _entry("official", official.url, "HF_TOKEN"),
                _entry("third", third.url),
                _entry("corp", corp.url, "CORP_TOKEN"),
            ]
        )
        + "\n"
    )
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("CORP_TOKEN", CORP_TOKEN)
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", engine=engine, token=TOKEN)
    assert result.status == "ok", result
    assert TOKEN not in repr(result)
    seen = {
        sim.name: [(r.listener, r.authorization) for r in sim.log]
        for sim in (official, third, corp)
    }
    assert ("hub", f"Bearer {TOKEN}") in seen["official"], seen
    for listener, auth in seen["official"]:
        assert auth == (f"Bearer {TOKEN}" if listener == "hub" else None), seen
    assert all(auth is None for _, auth in seen["third"]), seen
    assert all(auth in (None, f"Bearer {CORP_TOKEN}") for _, auth in seen["corp"]), seen
    assert all(ENV_TOKEN not in str(auth) for log in seen.values() for _, auth in log)


def test_cli_token_and_token_file_unlock_a_private_repo_and_are_never_printed(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    hub.add_repo(REPO, _repo(tmp_path), token=TOKEN)  # private
    cat = tmp_path / "m.yaml"
    cat.write_text("version: 1\nmirrors:\n" + _entry("hub", hub.url, "HF_TOKEN") + "\n")
    base = ["pull", REPO, "--dry-run", "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")]
    env = {"MODELGET_PROBE_TTL": "0"}

    res = _cli(*base, env=env)
    assert res.returncode == 1 and "error: model-not-found" in res.stderr
    assert "--token" in res.stderr  # the hint says how

    res = _cli(*base, "--token", TOKEN, env=env)
    assert res.returncode == 0, res.stderr
    assert TOKEN not in res.stdout + res.stderr

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    res = _cli(*base, "--token-file", str(token_file), "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert TOKEN not in res.stdout + res.stderr

    res = _cli(*base, "--token", "wrong-one", env=env)
    assert res.returncode == 1 and "wrong-one" not in res.stdout + res.stderr

    res = _cli(*base, "--token", "two words", env=env)
    assert res.returncode == 2 and "two words" not in res.stderr

    res = _cli(*base, "--token", TOKEN, "--token-file", str(token_file))
    assert res.returncode == 2  # one or the other
