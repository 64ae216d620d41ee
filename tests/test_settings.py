"""The environment variables in code and in docs/environment.md are the same set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelget import settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "environment.md"


def test_every_declared_variable_is_documented_and_vice_versa() -> None:
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", DOC.read_text(), flags=re.MULTILINE))
    assert documented == set(settings.ENV_NAMES)


def test_undeclared_variable_is_refused() -> None:
    with pytest.raises(KeyError):
        settings.env("SOME_RANDOM_VARIABLE")


def test_config_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELGET_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings.config_dir() == tmp_path / "xdg" / "modelget"
    monkeypatch.setenv("MODELGET_CONFIG_DIR", str(tmp_path / "explicit"))
    assert settings.config_dir() == tmp_path / "explicit"


def test_fixtures_dir_defaults_to_xdg_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELGET_FIXTURES_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert settings.fixtures_dir() == tmp_path / "modelget" / "fixtures"


def test_read_token_ignores_blank_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_MIRROR_TOKEN", "  ")
    assert settings.read_token("MY_MIRROR_TOKEN") is None
    monkeypatch.setenv("MY_MIRROR_TOKEN", " abc \n")
    assert settings.read_token("MY_MIRROR_TOKEN") == "abc"


@pytest.mark.parametrize(
    ("value", "on"),
    [(None, True), ("", True), ("1", True), ("yes", True), ("0", False), (" Off ", False)],
)
def test_aria2_pipelining_is_on_unless_turned_off(
    value: str | None, on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("MODELGET_ARIA2_PIPELINING", raising=False)
    else:
        monkeypatch.setenv("MODELGET_ARIA2_PIPELINING", value)
    assert settings.aria2_pipelining() is on
