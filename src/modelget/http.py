"""HTTP policy shared by every client modelget makes (the start of one place for it).

* **The origin rule**, one implementation: a URL's origin is its scheme, host and port, lower-
  cased, with the scheme's default port filled in (``https://hub`` and ``https://hub:443``
  are one origin; userinfo is never part of the host). Credentials go only to their own
  origin: the token scoping of ``auth``, the redirect follower of ``engines.redirects`` and
  the engines all ask :func:`same_origin`.
* :func:`redact_url`: a URL fit for messages (no query, no credentials).
* :func:`client`: every ``httpx.Client`` modelget makes comes from here: one User-Agent,
  identity encoding (bytes are hashed as sent), the shared TLS context, no automatic
  redirects unless asked (credentials must not cross origins), and proxies from the
  environment (``HTTP(S)_PROXY``/``NO_PROXY``) for every request: probe, metadata, transfer.
* **The TLS context.** Building one loads the CA bundle (20-80 ms of CPU, more when two
  threads do it at once on a small machine); httpx would build a new one for every client,
  so every client of a process shares one, built once under a lock (once more only if
  ``SSL_CERT_FILE``/``SSL_CERT_DIR``, which httpx reads when it builds one, change).
"""

from __future__ import annotations

import functools
import ssl
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelget._version import __version__
from modelget.settings import tls_trust_env

if TYPE_CHECKING:
    import httpx

_LOCK = threading.Lock()
USER_AGENT = f"modelget/{__version__}"
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int | None]


def origin_of(scheme: str, host: str, port: int | None) -> Origin:
    """The origin of these URL parts: lower-cased, the scheme's default port filled in."""
    scheme = scheme.lower()
    return scheme, host.lower(), port or DEFAULT_PORTS.get(scheme)


def origin(url: str) -> Origin:
    """``(scheme, host, port)`` of ``url`` (see :func:`origin_of`); an invalid port is None."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return origin_of(parts.scheme, parts.hostname or "", port)


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port (so the same credentials may go to both)."""
    return origin(a) == origin(b)


def redact_url(url: str) -> str:
    """``url`` without its query and credentials (signed URLs carry secrets in the query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")


def ssl_context(verify_tls: bool = True) -> ssl.SSLContext:
    """The process's TLS context for ``verify_tls`` (httpx's own default context, so what is
    trusted does not change), built on first use; callers racing for it wait for one build."""
    env = tls_trust_env() if verify_tls else None
    with _LOCK:
        return _build(verify_tls, env)


@functools.lru_cache(maxsize=4)
def _build(verify_tls: bool, env: tuple[str | None, str | None] | None) -> ssl.SSLContext:
    """``env``: the variables httpx reads when it builds a verifying context (the cache key)."""
    import httpx

    return httpx.create_ssl_context(verify=verify_tls)


def client(
    *,
    timeout: float | httpx.Timeout,
    verify_tls: bool = True,
    headers: dict[str, str] | None = None,
    follow_redirects: bool = False,
    **options: Any,
) -> httpx.Client:
    """A new ``httpx.Client`` with modelget's manners (see the module docstring); ``headers``
    are added to (or override) the defaults, ``options`` go to ``httpx.Client`` as they are
    (``limits``, ``transport``)."""
    import httpx

    return httpx.Client(
        timeout=timeout,
        verify=ssl_context(verify_tls),
        follow_redirects=follow_redirects,
        trust_env=True,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})},
        **options,
    )


def is_transport_error(exc: BaseException) -> bool:
    """Connection, timeout and protocol failures of the HTTP stacks our clients use.

    huggingface_hub 2.x runs on httpx2, 1.x on httpx, 0.x on requests; matching on the
    package keeps the mapping right whichever one is installed.
    """
    root = type(exc).__module__.split(".")[0]
    return root in {
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "requests",
        "urllib3",
    } or isinstance(exc, (OSError, TimeoutError))
