"""HTTP policy shared by every client modelget makes (the start of one place for it).

Today: the TLS context. Building one loads the CA bundle (20-80 ms of CPU, more when two
threads do it at once on a small machine); httpx would build a new one for every client, so
every client of a process shares one, built once under a lock (once more only if
``SSL_CERT_FILE``/``SSL_CERT_DIR``, which httpx reads when it builds one, change).
"""

from __future__ import annotations

import functools
import ssl
import threading

from modelget.settings import tls_trust_env

_LOCK = threading.Lock()


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
