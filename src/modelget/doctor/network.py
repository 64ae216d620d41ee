"""The per-mirror checks (I/O): DNS, TCP, TLS, the repo, time to first byte, Range, throughput.

:func:`check_mirror` walks them in order for one mirror and writes each into its
:class:`~modelget.doctor.report.Slot`; a step that fails skips the ones that need it. The HTTP
pieces are ``modelget.probe``'s (token only to the mirror's own host, redirects followed by
hand) and the TLS context is the one every client of the process shares
(:func:`modelget.http.ssl_context`), so a certificate is trusted here exactly when pulls trust
it. DNS and TCP go to the proxy when the environment sets one for the endpoint
(:func:`modelget.http.proxy_for`, the rule of every client of a pull and of the probe): the
first hop a pull makes.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelget import http
from modelget.doctor.report import Check, Slot, Status
from modelget.errors import ModelgetError
from modelget.http import ssl_context
from modelget.probe import RangeSample, first_byte, range_sample
from modelget.probe import status_of as probe_status_of
from modelget.sizes import fmt_bytes, fmt_seconds
from modelget.sources import get_source

if TYPE_CHECKING:
    from modelget.datatypes import FileEntry, Manifest, Mirror
    from modelget.sources import Source

#: The throughput sample: a Range of at most SAMPLE_BYTES, read for at most SAMPLE_S seconds.
SAMPLE_BYTES = 64 * 1024 * 1024
SAMPLE_S = 1.0
CERT_WARN_DAYS = 14


def describe_error(exc: Exception) -> str:
    """``Type: message`` (or just the type when the message is empty)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- where the first hop goes ---------------------------------------------------------------


def _public_proxy(proxy: str) -> tuple[str, str, int]:
    """(scheme://host:port without credentials, host, port) of a proxy URL."""
    p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default = 443 if p.scheme == "https" else 1080 if p.scheme.startswith("socks") else 80
    host = p.hostname or ""
    port = p.port or default
    return f"{p.scheme}://{host}:{port}", host, port


@dataclass(frozen=True)
class FirstHop:
    """Where a pull's first packet to ``endpoint`` goes: the host itself, or a proxy."""

    host: str
    https: bool
    proxied: bool
    dial_host: str
    dial_port: int
    via: str = ""


def first_hop(endpoint: str) -> FirstHop:
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    # The rule every client of a pull follows (httpx's, NO_PROXY included), and the probe's.
    proxy = http.proxy_for(endpoint)
    if proxy is None:
        return FirstHop(host, https, False, host, parts.port or (443 if https else 80))
    shown, dial_host, dial_port = _public_proxy(proxy)
    return FirstHop(host, https, True, dial_host, dial_port, f" (proxy {shown})")


# --- DNS, TCP, TLS --------------------------------------------------------------------------


def _addr_text(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect_error(exc: OSError | None, addr: Any, timeout: float) -> str:
    where = _addr_text(addr) if addr else "?"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}: nothing listens there; server down or wrong port?"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {timeout:g} s: host down, or a firewall drops it"
    if exc is not None and exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return f"no route to {where}: {exc.strerror}"
    return f"cannot connect to {where}: {exc.strerror or exc if exc else 'no address'}"


def check_dns(host: str, port: int) -> tuple[Check, list[Any]]:
    """Resolve ``host`` (timed); the check and the addresses to connect to."""
    start = time.perf_counter()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return Check("dns", "fail", detail=f"{host} does not resolve: {reason}"), []
    seconds = time.perf_counter() - start
    ips = list(dict.fromkeys(str(i[4][0]) for i in infos))
    shown = ", ".join(ips[:3]) + (f" and {len(ips) - 3} more" if len(ips) > 3 else "")
    return Check("dns", "ok", seconds, "s", f"{host} -> {shown}"), list(infos)


def check_tcp(infos: Sequence[Any], timeout: float) -> tuple[Check, socket.socket | None]:
    """Connect to the first address that answers (timed); the check and the open socket."""
    error: OSError | None = None
    addr: Any = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.settimeout(timeout)
        start = time.perf_counter()
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        seconds = time.perf_counter() - start
        return Check("tcp", "ok", seconds, "s", f"connected to {_addr_text(addr)}"), sock
    return Check("tcp", "fail", detail=_connect_error(error, addr, timeout)), None


def check_tls(sock: socket.socket, host: str, timeout: float, verify_tls: bool = True) -> Check:
    """The TLS handshake on a connected socket (timed), with the process's TLS context (the
    certificate checked as pulls check it). Closes ``sock``."""
    sock.settimeout(timeout)
    start = time.perf_counter()
    try:
        with ssl_context(verify_tls).wrap_socket(sock, server_hostname=host) as tls:
            seconds = time.perf_counter() - start
            cert = tls.getpeercert() or {}
            version, cipher = tls.version(), (tls.cipher() or ("?",))[0]
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "tls",
            "fail",
            detail=f"certificate not trusted: {exc.verify_message or exc}. A proxy that "
            "intercepts TLS? Point SSL_CERT_FILE at its CA bundle",
        )
    except ssl.SSLError as exc:
        return Check("tls", "fail", detail=f"handshake failed: {exc.reason or exc}")
    except TimeoutError:
        return Check("tls", "fail", detail=f"no handshake within {timeout:g} s")
    except OSError as exc:
        return Check("tls", "fail", detail=f"handshake failed: {exc.strerror or exc}")
    not_after = cert.get("notAfter")
    days = (
        (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
        if isinstance(not_after, str)
        else None
    )
    return tls_check(seconds, f"{version}, {cipher}", days)


def tls_check(seconds: float, session: str, days_left: float | None) -> Check:
    """The ``tls`` check of a handshake that worked: warn when the certificate expires soon."""
    if days_left is None:
        return Check("tls", "ok", seconds, "s", session)
    detail = f"{session}; certificate valid for {days_left:.0f} more days"
    status: Status = "warn" if days_left < CERT_WARN_DAYS else "ok"
    return Check("tls", status, seconds, "s", detail)


def _connect(mirror: Mirror, timeout: float, slot: Slot) -> bool:
    """DNS, TCP and (https, no proxy) TLS into ``slot``; whether HTTP may follow."""
    hop = first_hop(mirror.endpoint)
    dns, infos = check_dns(hop.dial_host, hop.dial_port)
    dns.detail += hop.via
    slot.put(dns)
    if not infos:
        slot.skip_rest("no address to connect to")
        return False
    tcp, sock = check_tcp(infos, timeout)
    tcp.detail += hop.via
    slot.put(tcp)
    if sock is None:
        slot.skip_rest("no TCP connection")
        return False
    if not hop.https:
        sock.close()
        slot.put(Check("tls", "skip", detail="plain http endpoint"))
        return True
    if hop.proxied:
        sock.close()
        slot.put(Check("tls", "skip", detail="tunnelled through the proxy: part of the TTFB"))
        return True
    tls = check_tls(sock, hop.host, timeout, mirror.verify_tls)
    sock.close()  # already closed by the TLS wrapper; this is for the paths that fail early
    slot.put(tls)
    if tls.status == "fail":
        slot.skip_rest("no TLS session")
        return False
    return True


# --- the repo, TTFB, Range, throughput ------------------------------------------------------


def check_mirror(
    mirror: Mirror,
    repo_id: str | None,
    revision: str | None,
    timeout: float,
    slot: Slot,
) -> None:
    """Every per-mirror check, in order, into ``slot``; never raises for the mirror's faults."""

    if not _connect(mirror, timeout, slot):
        return
    source = get_source(mirror.kind)
    with http.client(timeout=timeout, verify_tls=mirror.verify_tls) as client:
        manifest = _check_repo(source, mirror, repo_id, revision, timeout, slot)
        entry = max(manifest.files, key=lambda f: f.size) if manifest else None
        if manifest is not None and entry is not None and entry.size > 0:
            url = source.file_url(mirror, manifest, entry)
            _sample_file(client, mirror, url, entry, slot)
        else:
            _ping(client, source.ping_url(mirror), mirror, repo_id, slot)


def _check_repo(
    source: Source,
    mirror: Mirror,
    repo_id: str | None,
    revision: str | None,
    timeout: float,
    slot: Slot,
) -> Manifest | None:
    """The source's own metadata call (the one a pull makes), timed, as the ``repo`` check."""
    if repo_id is None:
        slot.put(Check("repo", "skip", detail="no repo id given"))
        return None
    start = time.perf_counter()
    try:
        manifest = source.resolve(mirror, repo_id, revision, timeout=timeout)
    except ModelgetError as exc:
        status = probe_status_of(exc)
        level: Status = "warn" if status in ("no-repo", "auth", "rate-limited") else "fail"
        slot.put(Check("repo", level, status, "", exc.message))
        return None
    seconds = time.perf_counter() - start
    total = sum(f.size for f in manifest.files)
    slot.manifest = manifest
    detail = (
        f"{manifest.revision} = commit {manifest.commit[:12]}: {len(manifest.files)} files, "
        f"{fmt_bytes(total)} (metadata in {fmt_seconds(seconds)})"
    )
    slot.put(Check("repo", "ok", "yes", "", detail))
    return manifest


def _ping(client: Any, url: str, mirror: Mirror, repo_id: str | None, slot: Slot) -> None:
    """Without a file to sample: the TTFB of the mirror's ping URL; no Range, no throughput."""
    import httpx

    path = urlsplit(url).path
    try:
        seconds, code = first_byte(client, url, mirror)
    except httpx.HTTPError as exc:
        slot.put(Check("ttfb", "fail", detail=f"GET {path}: {describe_error(exc)}"))
        slot.skip_rest("no HTTP answer")
        return
    bad = code >= 500 or code == 429
    slot.put(Check("ttfb", "warn" if bad else "ok", seconds, "s", f"GET {path} -> HTTP {code}"))
    why = (
        "no repo id given: `modelget doctor ORG/NAME` samples a file"
        if repo_id is None
        else f"{repo_id} is not on this mirror"
    )
    slot.put(Check("range", "skip", detail=why))
    slot.put(Check("throughput", "skip", detail=why))


def _sample_file(client: Any, mirror: Mirror, url: str, entry: FileEntry, slot: Slot) -> None:
    import httpx

    want = min(entry.size, SAMPLE_BYTES)
    try:
        sample = range_sample(client, url, mirror, want, sample_s=SAMPLE_S)
    except httpx.HTTPError as exc:
        slot.put(Check("ttfb", "fail", detail=f"GET {entry.path}: {describe_error(exc)}"))
        slot.skip_rest("no file bytes")
        return
    for check in sample_checks(sample, entry.path):
        slot.put(check)


def sample_checks(sample: RangeSample | None, path: str) -> list[Check]:
    """The ``ttfb``, ``range`` and ``throughput`` checks of one Range GET on ``path`` (None:
    still redirected after 5 requests). Pure."""
    no_bytes = [Check("range", "skip", detail="no file bytes")]
    no_bytes.append(Check("throughput", "skip", detail="no file bytes"))
    if sample is None:
        detail = f"GET {path}: still redirected after 5 requests"
        return [Check("ttfb", "fail", detail=detail), *no_bytes]
    hops = ""
    if sample.redirects:
        hops = f" after {sample.redirects} redirect(s) to {urlsplit(sample.url).netloc}"
    if sample.status not in (200, 206) or sample.ttfb_s is None:
        detail = f"GET {path}{hops}: HTTP {sample.status}, no bytes"
        return [Check("ttfb", "fail", detail=detail), *no_bytes]
    out = [Check("ttfb", "ok", sample.ttfb_s, "s", f"first byte of {path}{hops}")]
    if sample.status == 206:
        out.append(Check("range", "ok", 206, "", "206 Partial Content: segments and resume work"))
    else:
        detail = "answered a Range request with 200 and the whole file: no segments, no resume"
        out.append(Check("range", "warn", 200, "", detail))
    timed = sample.bytes - sample.first_chunk
    if timed <= 0 or sample.seconds <= 0:
        detail = f"{fmt_bytes(sample.bytes)} came in one read: too little to time"
        return [*out, Check("throughput", "skip", detail=detail)]
    detail = (
        f"{fmt_bytes(sample.bytes)} of {path} in {sample.seconds:.2f} s after the first byte "
        "(one connection)"
    )
    return [*out, Check("throughput", "ok", timed / sample.seconds, "B/s", detail)]
