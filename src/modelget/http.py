"""HTTP policy shared by every client modelget makes (the start of one place for it).

* **The origin rule**, one implementation: a URL's origin is its scheme, host and port, lower-
  cased, with the scheme's default port filled in (``https://hub`` and ``https://hub:443``
  are one origin; userinfo is never part of the host). Credentials go only to their own
  origin: the token scoping of ``auth``, the redirect follower of ``engines.redirects`` and
  the engines all ask :func:`same_origin`.
* **The redirect follower**, one implementation: :func:`follow` follows redirects by hand,
  sends credentials only on hops on their own origin, refuses non-HTTP(S) targets and caps
  the hops. Every hand-written redirect walk (``engines.redirects.resolve_final_url``, the
  httpx engine's transfers, the probe's Range sample, the ``cdn`` source's metadata) is a
  call of it; the callers turn its :class:`RedirectError` into their own errors.
* :func:`redact_url`: a URL fit for messages (no query, no credentials).
* :func:`client`: every ``httpx.Client`` modelget makes comes from here: one User-Agent,
  identity encoding (bytes are hashed as sent), the shared TLS context, no automatic
  redirects unless asked (credentials must not cross origins), and proxies from the
  environment (``HTTP(S)_PROXY``/``NO_PROXY``) for every request: probe, metadata, transfer.
* :func:`proxy_for`: which proxy (if any) those clients use for a URL, by httpx's own rule
  (:func:`environment_proxies`), for what does not go through httpx: the probe's connect
  time and the doctor's DNS/TCP checks (which must not open a direct socket where a pull
  would use a proxy), and the proxies the aria2 engine hands aria2c.
* **The TLS context.** Building one loads the CA bundle (20-80 ms of CPU, more when two
  threads do it at once on a small machine); httpx would build a new one for every client,
  so every client of a process shares one, built once under a lock (once more only if
  ``SSL_CERT_FILE``/``SSL_CERT_DIR``, which httpx reads when it builds one, change).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from modelget._version import __version__
from modelget.settings import proxy_env, tls_trust_env

if TYPE_CHECKING:
    import httpx

_LOCK = threading.Lock()
USER_AGENT = f"modelget/{__version__}"
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int | None]
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTTP_SCHEMES = ("http", "https")


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


RedirectProblem = Literal["no-location", "bad-location", "non-http", "too-many"]


class RedirectError(Exception):
    """A walk :func:`follow` refused to go on with; callers turn it into their own error.

    ``kind``: ``no-location`` (a redirect status without a ``Location``), ``bad-location``
    (one httpx cannot parse; ``status`` is None when httpx refused it first), ``non-http`` (a
    URL whose scheme is not http or https) or ``too-many`` (still a redirect after
    ``max_hops`` of them). ``url``: the URL concerned (the one that answered without a
    Location, the non-HTTP URL, the last redirect target); ``status``: the redirect's status
    (None for ``non-http`` on the first URL); ``hops``: redirects followed before it. The
    message holds no URL (callers add a redacted one where they want it)."""

    def __init__(
        self, message: str, *, kind: RedirectProblem, url: str, status: int | None, hops: int
    ) -> None:
        super().__init__(message)
        self.kind: RedirectProblem = kind
        self.url = url
        self.status = status
        self.hops = hops

    @property
    def scheme(self) -> str:
        """The scheme of ``url`` (for ``non-http``: the one refused), lower-cased."""
        return urlsplit(self.url).scheme.lower()


@dataclass(frozen=True)
class Followed:
    """Where a :func:`follow` walk ended."""

    response: httpx.Response
    """The final answer (not a redirect); open inside the ``with`` block."""
    url: str
    """The URL that gave it (the first URL when ``hops`` is 0)."""
    hops: int
    """Redirects followed."""


@contextlib.contextmanager
def follow(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    credentials: Mapping[str, str] | None = None,
    credentials_origin: str | None = None,
    max_hops: int,
    stream: bool = True,
    on_response: Callable[[httpx.Response], None] | None = None,
) -> Iterator[Followed]:
    """Send ``method url`` and follow its redirects by hand; yield the final answer.

    ``headers`` go on every hop; ``credentials`` (a mirror's ``Authorization``, a source's
    headers) only on hops whose URL has the origin of ``credentials_origin`` (default:
    ``url``) by :func:`same_origin`, and ``headers`` win where both name a header. A URL
    whose scheme is not http(s) is never sent to (the first one included); at most
    ``max_hops`` redirects are followed. ``client`` must not follow redirects itself (the
    hops go with ``follow_redirects=False`` anyway).

    ``stream``: the final answer's body is left unread for the caller to consume (else it is
    read before the yield). Redirect answers are closed unread. ``on_response`` is called
    with every answer, redirects included, as soon as its headers are in (a caller that
    times hops or may cut a stalled connection registers it there).

    The response is closed when the ``with`` block ends. Raises :class:`RedirectError` for a
    redirect without a (valid) ``Location``, a non-HTTP URL or more than ``max_hops`` redirects;
    httpx's own errors (network, timeout) pass through. As httpx does, a 303 (and a 301 or
    302 answering a ``POST``) turns the next hop into a ``GET``."""
    own = credentials_origin or url
    current = url
    hops = 0
    status: int | None = None
    while True:
        scheme = urlsplit(current).scheme.lower()
        if scheme not in HTTP_SCHEMES:
            what = "redirected to a non-HTTP URL" if hops else "not an HTTP URL"
            raise RedirectError(
                f"{what} ({scheme or 'no scheme'})",
                kind="non-http",
                url=current,
                status=status,
                hops=hops,
            )
        send = dict(headers or {})
        if credentials and same_origin(current, own):
            send = {**credentials, **send}
        with _send(client, method, current, send, hops) as response:
            if on_response is not None:
                on_response(response)
            status = response.status_code
            if status not in REDIRECT_STATUSES:
                if not stream:
                    response.read()
                yield Followed(response, current, hops)
                return
            current = _next_url(response, current, hops, max_hops)
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method = "GET"
            hops += 1
        # Leaving the block closed the redirect unread: its body is not drained (httpx drops
        # that connection instead of reading a body nobody wants).


@contextlib.contextmanager
def _send(
    client: httpx.Client, method: str, url: str, headers: dict[str, str], hops: int
) -> Iterator[httpx.Response]:
    """One hop, streamed, never followed by httpx. httpx works out a redirect's next request
    even when it does not follow it, and raises ``InvalidURL`` for a ``Location`` it cannot
    parse (the URL itself was built, so that is the Location): a refusal like the others."""
    import httpx

    request = client.build_request(method, url, headers=headers)
    try:
        response = client.send(request, stream=True, follow_redirects=False)
    except httpx.InvalidURL:
        raise RedirectError(
            "a redirect with an invalid Location",
            kind="bad-location",
            url=url,
            status=None,
            hops=hops,
        ) from None
    try:
        yield response
    finally:
        response.close()


def _next_url(response: httpx.Response, url: str, hops: int, max_hops: int) -> str:
    """Where the redirect ``response`` (from ``url``, after ``hops`` redirects) points."""
    import httpx

    status = response.status_code
    location = response.headers.get("Location")
    if not location:
        raise RedirectError(
            f"HTTP {status} without a Location",
            kind="no-location",
            url=url,
            status=status,
            hops=hops,
        )
    if hops >= max_hops:
        raise RedirectError(
            f"more than {max_hops} redirects", kind="too-many", url=url, status=status, hops=hops
        )
    try:
        return str(httpx.URL(url).join(location))
    except httpx.InvalidURL:
        raise RedirectError(
            f"HTTP {status} with an invalid Location",
            kind="bad-location",
            url=url,
            status=status,
            hops=hops,
        ) from None


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


def prepare(verify_tls: bool = True) -> None:
    """Build the TLS context (and import httpcore) in a background thread, now, so that the
    first client finds them ready. Loading the CA bundle takes 20-30 ms, mostly outside the
    GIL: at a pull's start it overlapped nothing and delayed the probe's first request (MiniLM
    on loopback). A thread asking for the context meanwhile waits for this one build."""

    def build() -> None:
        with contextlib.suppress(Exception):  # the first client builds it again and reports
            import_httpcore()
            ssl_context(verify_tls)

    threading.Thread(target=build, name="modelget-tls", daemon=True).start()


_HTTPCORE_IMPORT = threading.Lock()


def import_httpcore() -> None:
    """Import httpcore, one thread at a time. httpx imports it lazily, when its first client is
    made; a probe worker making a client while the engine's start thread imported
    ``httpcore._sync.http11`` ended in ``_DeadlockError`` (Python's import locks, taken in
    another order by each thread, inside httpcore's own circular imports), and the probe
    reported a healthy mirror as silent. Everything here that first touches httpcore goes
    through this lock; once imported it costs a lock and a dict lookup."""
    with _HTTPCORE_IMPORT:
        import httpcore
        import httpcore._sync.http11  # noqa: F401


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

    import_httpcore()
    return httpx.Client(
        timeout=timeout,
        verify=ssl_context(verify_tls),
        follow_redirects=follow_redirects,
        trust_env=True,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})},
        **options,
    )


# --- proxies from the environment, by httpx's rule ------------------------------------------


def _is_ip(host: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(host.split("/")[0] if version == 4 else host)
    except ValueError:
        return False
    return address.version == version


def environment_proxies() -> dict[str, str | None]:
    """httpx's ``get_environment_proxies``, rule for rule: URL patterns (``https://``,
    ``all://*example.com``) mapped to a proxy URL, or to None for the ``NO_PROXY`` entries
    (reached directly). ``NO_PROXY=*``: no proxy at all. A ``NO_PROXY`` name matches the
    host and its subdomains (``.example.com``: the subdomains only); an IP address matches
    itself (a ``/mask`` is ignored, as httpx ignores it); ``scheme://host[:port]`` entries
    are patterns as they stand. Proxy URLs may hold credentials: never show one."""
    info = proxy_env()
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if info.get(scheme):
            value = info[scheme]
            mounts[f"{scheme}://"] = value if "://" in value else f"http://{value}"
    for host in (h.strip() for h in info.get("no", "").split(",")):
        if host == "*":
            return {}
        if not host:
            continue
        if "://" in host:
            mounts[host] = None
        elif _is_ip(host, 4) or host.lower() == "localhost":
            mounts[f"all://{host}"] = None
        elif _is_ip(host, 6):
            mounts[f"all://[{host}]"] = None
        else:
            mounts[f"all://*{host}"] = None
    return mounts


@dataclass(frozen=True)
class _Pattern:
    """httpx's ``URLPattern``: scheme (empty: any), host (a regex; None: any), port."""

    scheme: str
    host: str
    regex: re.Pattern[str] | None
    port: int | None

    @classmethod
    def parse(cls, pattern: str) -> _Pattern:
        import httpx

        url = httpx.URL(pattern)
        host = "" if url.host == "*" else url.host
        regex: re.Pattern[str] | None = None
        if host.startswith("*."):
            regex = re.compile(f"^.+\\.{re.escape(host[2:])}$")
        elif host.startswith("*"):
            regex = re.compile(f"^(.+\\.)?{re.escape(host[1:])}$")
        elif host:
            regex = re.compile(f"^{re.escape(host)}$")
        return cls("" if url.scheme == "all" else url.scheme, host, regex, url.port)

    def matches(self, url: httpx.URL) -> bool:
        if self.scheme and self.scheme != url.scheme:
            return False
        if self.regex is not None and not self.regex.match(url.host):
            return False
        return self.port is None or self.port == url.port

    @property
    def priority(self) -> tuple[int, int, int]:
        """Most specific first: with a port, then the longer host, then the longer scheme."""
        return (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))


def pattern_host(pattern: str) -> str:
    """The host part of an :func:`environment_proxies` pattern as httpx reads it
    (``*example.com``, ``*.example.com``, ``10.0.0.1``, ``::1``; empty: any host)."""
    return _Pattern.parse(pattern).host


def proxy_for(url: str) -> str | None:
    """The proxy URL the clients of :func:`client` use for ``url`` (from the environment,
    :func:`environment_proxies`), or None when they go direct. It may hold credentials:
    show it through :func:`redact_proxy` only."""
    import httpx

    target = httpx.URL(url)
    mounts = [(_Pattern.parse(k), v) for k, v in environment_proxies().items()]
    for pattern, proxy in sorted(mounts, key=lambda m: m[0].priority):
        if pattern.matches(target):
            return proxy
    return None


def redact_proxy(proxy: str) -> str:
    """``scheme://host:port`` of a proxy URL: no user name or password."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


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
