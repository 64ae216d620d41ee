"""Probe mirrors concurrently: connect time, time to first byte, repo presence, throughput.

Each mirror is probed in its own daemon thread under one deadline, so a dead or slow mirror
costs at most the probe timeout, never the sum. With a repo id, probing a mirror also
resolves its manifest (the same calls a pull needs) and samples throughput on a small Range
of the repo's largest file. Ranking the results is ``modelget.rank`` (pure).

Results are cached in ``$XDG_CACHE_HOME/modelget/probes.json`` for ``probe_ttl_s`` seconds,
so back-to-back pulls do not re-probe.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelget.auth import mirror_token, same_host
from modelget.datatypes import Manifest, Mirror, ProbeResult
from modelget.errors import (
    AuthRequiredError,
    MirrorUnavailableError,
    ModelgetError,
    ModelNotFoundError,
    RateLimitedError,
    RevisionNotFoundError,
)
from modelget.sources import get_source

DEFAULT_TIMEOUT_S = 5.0
#: The throughput sample: a Range of at most SAMPLE_MAX_BYTES, read for at most SAMPLE_S.
#: A sample that ends sooner still counts as SAMPLE_S long, so mirrors too fast to tell apart
#: with so few bytes tie on throughput (at most 64 MB/s) and their latency decides. Without
#: this floor, timing noise on a fast link outweighs real latency differences.
SAMPLE_MAX_BYTES = 16 * 1024 * 1024
SAMPLE_S = 0.25


@dataclass
class ProbeReport:
    """Per mirror: the probe result, and (with a repo id) its manifest or the error."""

    results: dict[str, ProbeResult] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    errors: dict[str, ModelgetError] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cached: bool = False


def _connect_time(url: str, timeout: float, verify_tls: bool = True) -> float:
    """Seconds for DNS + TCP connect (+ TLS handshake for https) to ``url``'s host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            if not verify_tls:  # --insecure
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            with ctx.wrap_socket(sock, server_hostname=host):
                pass
    return time.perf_counter() - start


def status_of(error: ModelgetError) -> str:
    if isinstance(error, (ModelNotFoundError, RevisionNotFoundError)):
        return "no-repo"
    if isinstance(error, AuthRequiredError):
        return "auth"
    if isinstance(error, RateLimitedError):
        return "rate-limited"
    if isinstance(error, MirrorUnavailableError):
        return "down"
    return "error"


def _headers_for(
    url: str, mirror: Mirror, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    headers = {"Accept-Encoding": "identity", "User-Agent": "modelget-probe"}
    token = mirror_token(mirror)
    if token and same_host(url, mirror):
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def first_byte(client: Any, url: str, mirror: Mirror) -> tuple[float, int]:
    """(seconds from sending a GET to its first body byte, HTTP status); no redirect followed."""
    start = time.perf_counter()
    with client.stream("GET", url, headers=_headers_for(url, mirror)) as response:
        for _ in response.iter_raw(1):
            break
        return time.perf_counter() - start, int(response.status_code)


def _ttfb(client: Any, url: str, mirror: Mirror) -> float:
    return first_byte(client, url, mirror)[0]


@dataclass(frozen=True)
class RangeSample:
    """One timed ``GET`` with a ``Range: bytes=0-N``, redirects followed by hand.

    ``ttfb_s``: from sending the first request to the first body byte of the final response
    (redirects included). ``seconds``: from that first chunk to the last one read;
    ``first_chunk`` is the size of that first chunk (its own transfer time is not measured).
    """

    status: int
    url: str
    redirects: int
    ttfb_s: float | None = None
    bytes: int = 0
    first_chunk: int = 0
    seconds: float = 0.0


def range_sample(
    client: Any, url: str, mirror: Mirror, want: int, *, sample_s: float
) -> RangeSample | None:
    """Read at most ``want`` bytes of ``url`` (stopping after ``sample_s`` seconds of body).

    The token goes only to the mirror's own host: redirects are followed by hand, and each
    hop's headers are built for that hop's URL. None when the 5th answer is still a redirect.
    """
    import httpx

    start = time.perf_counter()
    for hops in range(5):
        headers = _headers_for(url, mirror, {"Range": f"bytes=0-{want - 1}"})
        with client.stream("GET", url, headers=headers) as response:
            if response.is_redirect:
                url = str(httpx.URL(url).join(response.headers["Location"]))
                continue
            if response.status_code not in (200, 206):
                return RangeSample(response.status_code, url, hops)
            got = first_chunk = 0
            first: float | None = None
            ttfb: float | None = None
            for chunk in response.iter_raw(64 * 1024):
                if first is None:
                    first = time.perf_counter()
                    ttfb = first - start
                    first_chunk = len(chunk)
                got += len(chunk)
                if got >= want or time.perf_counter() - first >= sample_s:
                    break
            seconds = time.perf_counter() - first if first is not None else 0.0
            return RangeSample(response.status_code, url, hops, ttfb, got, first_chunk, seconds)
    return None


def _throughput(client: Any, url: str, mirror: Mirror, size: int) -> float | None:
    """Bytes/second over a short Range sample (timed from the first byte; see SAMPLE_S)."""
    want = min(size, SAMPLE_MAX_BYTES)
    if want <= 0:
        return None
    sample = range_sample(client, url, mirror, want, sample_s=SAMPLE_S)
    if sample is None or sample.status not in (200, 206) or sample.bytes == 0:
        return None
    return sample.bytes / max(sample.seconds, SAMPLE_S)


def probe_mirror(
    mirror: Mirror, repo_id: str | None, revision: str | None, timeout: float
) -> tuple[ProbeResult, Manifest | None, ModelgetError | None]:
    """Probe one mirror; never raises for the mirror's own faults."""
    import httpx

    started = time.time()
    t0 = time.perf_counter()
    source = get_source(mirror.kind)

    def result(status: str, **kw: Any) -> ProbeResult:
        return ProbeResult(
            mirror=mirror.name,
            kind=mirror.kind,
            endpoint=mirror.endpoint,
            status=status,
            probed_at=started,
            elapsed_s=time.perf_counter() - t0,
            **kw,
        )

    try:
        connect_s = _connect_time(mirror.endpoint, timeout, mirror.verify_tls)
    except OSError as exc:
        return result("down", error=f"connect failed: {exc}"), None, None
    try:
        with httpx.Client(
            timeout=timeout, follow_redirects=False, verify=mirror.verify_tls
        ) as client:
            ttfb_s = _ttfb(client, source.ping_url(mirror), mirror)
            if repo_id is None:
                return result("ok", connect_s=connect_s, ttfb_s=ttfb_s), None, None
            try:
                manifest = source.resolve(mirror, repo_id, revision, timeout=timeout)
            except ModelgetError as exc:
                status = status_of(exc)
                return (
                    result(
                        status,
                        connect_s=connect_s,
                        ttfb_s=ttfb_s,
                        has_repo=False if status == "no-repo" else None,
                        error=exc.message,
                    ),
                    None,
                    exc,
                )
            rate: float | None = None
            if manifest.files:
                largest = max(manifest.files, key=lambda f: f.size)
                try:
                    rate = _throughput(
                        client, source.file_url(mirror, manifest, largest), mirror, largest.size
                    )
                except (httpx.HTTPError, ModelgetError):
                    rate = None
            return (
                result(
                    "ok", connect_s=connect_s, ttfb_s=ttfb_s, throughput_bps=rate, has_repo=True
                ),
                manifest,
                None,
            )
    except httpx.HTTPError as exc:
        return result("down", connect_s=connect_s, error=f"{type(exc).__name__}: {exc}"), None, None


def probe(
    mirrors: Sequence[Mirror],
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> ProbeReport:
    """Probe every mirror at once; the whole call lasts at most about ``2 * timeout``.

    Each mirror's own calls are bounded by ``timeout``; a mirror still busy at the overall
    deadline is reported ``down`` and its thread is left to die on its own (daemon).
    """
    report = ProbeReport()
    slots: dict[str, tuple[ProbeResult, Manifest | None, ModelgetError | None]] = {}
    lock = threading.Lock()

    def work(mirror: Mirror) -> None:
        outcome = probe_mirror(mirror, repo_id, revision, timeout)
        with lock:
            slots[mirror.name] = outcome

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(m,), daemon=True) for m in mirrors]
    for t in threads:
        t.start()
    deadline = start + 2 * timeout + 1.0
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    now = time.time()
    with lock:
        for mirror in mirrors:
            if mirror.name in slots:
                res, manifest, error = slots[mirror.name]
            else:
                res = ProbeResult(
                    mirror.name,
                    mirror.kind,
                    mirror.endpoint,
                    "down",
                    error=f"no answer within {2 * timeout + 1.0:g} s",
                    probed_at=now,
                    elapsed_s=time.perf_counter() - start,
                )
                manifest, error = None, None
            report.results[mirror.name] = res
            if manifest is not None:
                report.manifests[mirror.name] = manifest
            if error is not None:
                report.errors[mirror.name] = error
    report.elapsed_s = time.perf_counter() - start
    return report


# --- cache ---------------------------------------------------------------------------------


def _cache_key(mirror: Mirror, repo_id: str | None) -> str:
    # A probe without certificate checks (--insecure) is not a result for one with them.
    insecure = "" if mirror.verify_tls else "|insecure"
    return f"{mirror.name}|{mirror.endpoint}|{repo_id or ''}{insecure}"


def load_cached(
    path: Path, mirrors: Sequence[Mirror], repo_id: str | None, ttl_s: float
) -> dict[str, ProbeResult] | None:
    """Cached results for every mirror, if all are younger than ``ttl_s``; else None."""
    if ttl_s <= 0:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    now = time.time()
    out: dict[str, ProbeResult] = {}
    for mirror in mirrors:
        raw = data.get(_cache_key(mirror, repo_id)) if isinstance(data, dict) else None
        if not isinstance(raw, dict):
            return None
        try:
            res = ProbeResult(**raw)
        except TypeError:
            return None
        if now - res.probed_at > ttl_s or res.probed_at > now + 60:
            return None
        out[mirror.name] = res
    return out


def store_cached(
    path: Path, mirrors: Sequence[Mirror], repo_id: str | None, results: Mapping[str, ProbeResult]
) -> None:
    """Merge ``results`` into the cache file (atomically; failures are not fatal)."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    for mirror in mirrors:
        if mirror.name in results:
            data[_cache_key(mirror, repo_id)] = asdict(results[mirror.name])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
