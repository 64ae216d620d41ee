"""A repo that does not exist is "not found (or private: pass a token)", not "needs a token"
(issue 17 §3): the Hub answers a missing and a private repo alike without a token (401
``RepoNotFound``), and the simulator, our model of it, does the same."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from modelget import api
from modelget.errors import AuthRequiredError, ModelNotFoundError
from modelget.testing.hubsim import HubSimulator

TOKEN = "hf_privateRepoToken0123456789"


def _hub(sims: list[HubSimulator], tmp_path: Path) -> HubSimulator:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text("{}\n")
    (repo / "model.safetensors").write_bytes(os.urandom(4096))
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    hub.add_repo("acme/private", repo, token=TOKEN)
    hub.add_repo("acme/gated", repo, gated=True, token=TOKEN)
    return hub


def _catalogue(tmp_path: Path, hub: HubSimulator, token_env: str = "HF_TOKEN") -> Path:
    cat = tmp_path / "m.yaml"
    cat.write_text(
        f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n"
        f"    token_env: {token_env}\n"
    )
    return cat


def test_the_simulator_answers_a_missing_repo_as_the_hub_does(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    """401 RepoNotFound without a token, for a missing and a private repo alike; 404 with a
    token that does not open it."""
    hub = _hub(sims, tmp_path)
    for repo in ("acme/nope", "acme/private"):
        bare = httpx.get(f"{hub.url}/api/models/{repo}")
        assert bare.status_code == 401 and bare.headers["X-Error-Code"] == "RepoNotFound"
        other = httpx.get(f"{hub.url}/api/models/{repo}", headers={"Authorization": "Bearer x"})
        assert other.status_code == 404 and other.headers["X-Error-Code"] == "RepoNotFound"
    opened = httpx.get(
        f"{hub.url}/api/models/acme/private", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert opened.status_code == 200


@pytest.mark.parametrize("repo", ["acme/nope", "acme/private"])
def test_a_missing_or_private_repo_is_not_found_with_a_token_hint(
    repo: str, tmp_path: Path, sims: list[HubSimulator]
) -> None:
    hub = _hub(sims, tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        api.plan(repo, mirrors=_catalogue(tmp_path, hub), cache_dir=tmp_path / "c")
    error = info.value
    assert error.code == "model-not-found" and error.maybe_private
    assert "not found (or private: pass a token)" in error.message
    assert error.hint is not None and "--token" in error.hint and "HF_TOKEN" in error.hint


def test_the_hint_names_the_mirror_s_own_variable(tmp_path: Path, sims: list[HubSimulator]) -> None:
    hub = _hub(sims, tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        api.plan("acme/nope", mirrors=_catalogue(tmp_path, hub, "CORP_TOKEN"), cache_dir=tmp_path)
    assert info.value.hint is not None and "set CORP_TOKEN for mirror hub" in info.value.hint
    assert "--token" not in info.value.hint  # --token is HF_TOKEN's, not CORP_TOKEN's


def test_with_a_token_a_missing_repo_is_plainly_not_found_and_a_gated_one_needs_the_token(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    hub = _hub(sims, tmp_path)
    cat = _catalogue(tmp_path, hub)
    with pytest.raises(ModelNotFoundError) as info:
        api.plan("acme/nope", mirrors=cat, cache_dir=tmp_path / "c", token="hf_someoneElse")
    assert not info.value.maybe_private and "hf_someoneElse" not in str(info.value)
    with pytest.raises(AuthRequiredError):  # gated, no token: still auth-required
        api.plan("acme/gated", mirrors=cat, cache_dir=tmp_path / "c")
    plan = api.plan("acme/private", mirrors=cat, cache_dir=tmp_path / "c", token=TOKEN)
    assert {i.entry.path for i in plan.items} == {"config.json", "model.safetensors"}
