"""The environment's proxies, as aria2c options (pure but for reading the environment).

aria2c reads only the lower-case proxy variables, by rules of its own, so with only
``HTTP_PROXY`` set it went direct while every other request of the pull used the proxy.
It now inherits no proxy variable (``settings.child_env``); instead the engine writes the
proxies every other client uses (:func:`modelget.http.environment_proxies`, httpx's rule)
into aria2c's private config file (0600, in its 0700 directory, beside the RPC secret), never
on its command line: a proxy URL may carry ``user:password``, which goes into the
``*-proxy-user``/``*-proxy-passwd`` options there.

httpx's patterns map onto aria2c's options: ``http://`` → ``http-proxy``, ``https://`` →
``https-proxy``, ``all://`` → ``all-proxy`` (aria2c too lets the first two override the
third); ``NO_PROXY`` → ``no-proxy``: a name (httpx: the host and its subdomains) becomes
``name,.name`` (aria2c matches a name exactly, a ``.name`` as a suffix), ``.name`` stays,
an IP address is given without a ``/mask`` (httpx ignores the mask, so aria2c must too), and
a ``scheme://host[:port]`` entry becomes its host (aria2c cannot scope by scheme or port, so
that host goes direct for every scheme and port). aria2c speaks to ``http://`` proxies only:
a ``socks5://`` or ``https://`` proxy is :func:`proxy_problem`.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from modelget import http

_OPTIONS = (("http://", "http-proxy"), ("https://", "https-proxy"), ("all://", "all-proxy"))


def proxy_problem() -> str | None:
    """Why aria2c cannot use the environment's proxies (a proxy scheme it does not speak, a
    value that cannot go into its config file), or None. Never shows credentials."""
    for key, proxy in http.environment_proxies().items():
        if proxy is None:
            continue
        parts = urlsplit(proxy)
        if parts.scheme.lower() != "http":
            return f"aria2c cannot use the {parts.scheme or '?'} proxy {http.redact_proxy(proxy)} ({key})"
        if any(c in unquote(proxy) for c in "\r\n\0"):
            return f"the proxy for {key} holds a line break"
    return None


def proxy_conf() -> list[tuple[str, str]]:
    """aria2c's proxy options (name, value) for the environment (empty: no proxy); see the
    module docstring. Call :func:`proxy_problem` first: this assumes there is none."""
    mounts = http.environment_proxies()
    out: list[tuple[str, str]] = []
    for key, option in _OPTIONS:
        proxy = mounts.get(key)
        if not proxy:
            continue
        parts = urlsplit(proxy)
        out.append((option, http.redact_proxy(proxy)))
        if parts.username is not None:
            out.append((f"{option}-user", unquote(parts.username)))
            out.append((f"{option}-passwd", unquote(parts.password or "")))
    hosts = no_proxy_hosts([key for key, proxy in mounts.items() if proxy is None])
    if out and hosts:
        out.append(("no-proxy", ",".join(hosts)))
    return out


def no_proxy_hosts(patterns: list[str]) -> list[str]:
    """aria2c's ``no-proxy`` entries for httpx's direct patterns (``all://*example.com``,
    ``all://10.0.0.1``, ``https://host:8443``), in order, without repeats (pure)."""
    out: list[str] = []
    for pattern in patterns:
        host = http.pattern_host(pattern)
        if not host:
            continue
        if host.startswith("*."):
            names = [host[1:]]
        elif host.startswith("*"):
            names = [host[1:], "." + host[1:]]
        else:
            names = [host]
        out.extend(n for n in names if n not in out)
    return out
