"""Shared test set-up: a hermetic environment, loopback-only sockets, real fixtures."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelget import settings
from modelget.engines import EngineName
from modelget.errors import FixtureError
from modelget.testing.hubsim import HubSimulator

# huggingface_hub reads its environment once, at import time: give it a safe one before any
# test imports it (the per-test values are patched into its constants by hermetic_env).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="modelget-tests-hf-")
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_ENDPOINT", None)  # huggingface_hub trusts its host for auth on redirects
os.environ.pop("HF_HUB_CACHE", None)

# Variables that would let a test reach a real hub, use a real token or a real cache.
_SCRUB = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "MODELSCOPE_API_TOKEN",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_DOMAIN",
    "MODELGET_MIRRORS",
    "MODELGET_CONFIG_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own HF/ModelScope homes and config dir, and no real tokens."""
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "_home"
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(home / "modelscope"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(home / "modelscope-home"))
    monkeypatch.setenv("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")
    monkeypatch.setenv("MODELGET_CONFIG_DIR", str(home / "config"))
    # The probe cache too: a test that pulls must not read (or grow) the user's one.
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(home / "modelget-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    from huggingface_hub import constants as hf_constants

    hf_home = home / "hf"
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    if hasattr(hf_constants, "AGENT_HARNESSES_PATH"):
        monkeypatch.setattr(
            hf_constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json")
        )
    if "modelscope_hub" in sys.modules:
        # modelscope_hub caches endpoint, cache dir and token per process on first use.
        from modelscope_hub import set_default_config

        set_default_config(None)


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise OSError(f"test tried to reach {host!r}: tests use 127.0.0.1 only") from None
            return
        if not ip.is_loopback:
            raise OSError(f"test tried to reach {host}: tests use 127.0.0.1 only")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> Iterator[None]:
    """No test touches the internet: any non-loopback connect fails loudly."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


def _fixture_or_skip(build: Any) -> Path:
    try:
        path: Path = build()
    except FixtureError as exc:
        if settings.require_fixtures() or os.environ.get("CI"):
            pytest.fail(f"model fixtures are required here: {exc.message}")
        pytest.skip(f"model fixtures missing ({exc.message}); run scripts/bootstrap")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 snapshot (13 files)."""
    from modelget.testing import fixtures

    return _fixture_or_skip(fixtures.minilm_dir)


@pytest.fixture(scope="session")
def minilm_sharded_dir() -> Path:
    """MiniLM re-sharded into 4 safetensors shards + index, tensor bytes unchanged."""
    from modelget.testing import fixtures

    return _fixture_or_skip(fixtures.minilm_sharded_dir)


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    """Systran/faster-whisper-tiny.en: a CTranslate2 model.bin (not a torch pickle)."""
    from modelget.testing import fixtures

    return _fixture_or_skip(fixtures.whisper_dir)


@pytest.fixture(params=["httpx", "aria2"])
def engine(request: pytest.FixtureRequest) -> EngineName:
    """Each engine in turn (a module may define its own ``engine`` instead). aria2 needs
    aria2c: a skip on a developer machine, a failure in CI."""
    from modelget.engines import aria2c_path

    name: EngineName = request.param
    if name == "aria2" and aria2c_path() is None:
        if os.environ.get("CI"):
            pytest.fail("aria2c is required in CI (scripts/bootstrap installs it)")
        pytest.skip("aria2c not installed")
    return name


@pytest.fixture
def sims() -> Iterator[list[HubSimulator]]:
    """Hub simulators a test starts (append them); stopped at the end."""
    started: list[HubSimulator] = []
    yield started
    for sim in started:
        sim.stop()
