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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from modelget import http
from modelget.auth import mirror_token, same_host
from modelget.datatypes import Manifest, Mirror, ProbeResult, RepoType
from modelget.errors import (
    AuthRequiredError,
    MirrorUnavailableError,
    ModelgetError,
    ModelNotFoundError,
    RateLimitedError,
    RevisionNotFoundError,
)
from modelget.http import ssl_context
from modelget.sources import get_source

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT_S = 5.0
#: The throughput sample: a Range of at most SAMPLE_MAX_BYTES, read for at most SAMPLE_S.
#: A sample that ends sooner still counts as SAMPLE_S long, so mirrors too fast to tell apart
#: with so few bytes tie on throughput (at most 64 MB/s) and their latency decides. Without
#: this floor, timing noise on a fast link outweighs real latency differences.
SAMPLE_MAX_BYTES = 16 * 1024 * 1024
SAMPLE_S = 0.25
#: Redirects a Range sample follows: a 5th answer that is still a redirect ends it.
SAMPLE_MAX_REDIRECTS = 4


@dataclass
class ProbeReport:
    """Per mirror: the probe result, and (with a repo id) its manifest or the error."""

    results: dict[str, ProbeResult] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    errors: dict[str, ModelgetError] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cached: bool = False


def _connect_time(url: str, timeout: float, verify_tls: bool = True) -> float | None:
    """Seconds for DNS + TCP connect (+ TLS handshake for https) to ``url``'s host; None when
    the environment sends ``url`` through a proxy (:func:`modelget.http.proxy_for`, the rule
    of every client): then no direct socket is opened (on a proxy-only network it would fail
    and call a working mirror down), and the first-byte latency, through the proxy as every
    request of a pull, is the measure."""
    if http.proxy_for(url) is not None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if parts.scheme == "https":
            with ssl_context(verify_tls).wrap_socket(sock, server_hostname=host):
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


_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "modelget-probe"}
"""What every probe request sends (on every hop)."""


def _credentials(mirror: Mirror) -> dict[str, str]:
    """The mirror's token as a header, for its endpoint's own origin only."""
    token = mirror_token(mirror)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _headers_for(
    url: str, mirror: Mirror, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    headers = dict(_HEADERS)
    if same_host(url, mirror):
        headers.update(_credentials(mirror))
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
    client: Any,
    url: str,
    mirror: Mirror,
    want: int,
    *,
    sample_s: float,
    keep_going: Callable[[], bool] | None = None,
) -> RangeSample | None:
    """Read at most ``want`` bytes of ``url`` (stopping after ``sample_s`` seconds of body,
    or as soon as ``keep_going``, called after each chunk, returns False).

    The token goes only to the mirror's own origin: redirects are followed by hand
    (:func:`modelget.http.follow`, at most ``SAMPLE_MAX_REDIRECTS``), the token only on hops
    on the mirror endpoint's origin. None when the 5th answer is still a redirect.
    """
    import httpx

    headers = {**_HEADERS, "Range": f"bytes=0-{want - 1}"}
    start = time.perf_counter()
    try:
        with http.follow(
            client,
            "GET",
            url,
            headers=headers,
            credentials=_credentials(mirror),
            credentials_origin=mirror.endpoint,
            max_hops=SAMPLE_MAX_REDIRECTS,
        ) as got:
            response = got.response
            if response.status_code not in (200, 206):
                return RangeSample(response.status_code, got.url, got.hops)
            got_bytes = first_chunk = 0
            first: float | None = None
            ttfb: float | None = None
            for chunk in response.iter_raw(64 * 1024):
                if first is None:
                    first = time.perf_counter()
                    ttfb = first - start
                    first_chunk = len(chunk)
                got_bytes += len(chunk)
                if got_bytes >= want or time.perf_counter() - first >= sample_s:
                    break
                if keep_going is not None and not keep_going():
                    break
            seconds = time.perf_counter() - first if first is not None else 0.0
            status = response.status_code
            return RangeSample(status, got.url, got.hops, ttfb, got_bytes, first_chunk, seconds)
    except http.RedirectError as exc:
        if exc.kind == "too-many":
            return None
        if exc.kind == "no-location" and exc.status is not None:
            # Not a redirect one can follow: the answer the sample got.
            return RangeSample(exc.status, exc.url, exc.hops)
        # As httpx errors, which the callers catch (a non-HTTP URL: what httpx would raise).
        if exc.kind == "non-http":
            raise httpx.UnsupportedProtocol(str(exc)) from None
        raise httpx.RemoteProtocolError(str(exc)) from None


def _throughput(
    client: Any,
    url: str,
    mirror: Mirror,
    size: int,
    keep_going: Callable[[], bool] | None = None,
) -> float | None:
    """Bytes/second over a short Range sample (timed from the first byte; see SAMPLE_S).
    None when there was no sample, or when ``keep_going`` cut it short."""
    want = min(size, SAMPLE_MAX_BYTES)
    if want <= 0:
        return None
    stopped = False

    def more() -> bool:
        nonlocal stopped
        stopped = keep_going is not None and not keep_going()
        return not stopped

    sample = range_sample(client, url, mirror, want, sample_s=SAMPLE_S, keep_going=more)
    if stopped or sample is None or sample.status not in (200, 206) or sample.bytes == 0:
        return None
    return sample.bytes / max(sample.seconds, SAMPLE_S)


# --- when to stop waiting for a mirror -----------------------------------------------------

GRACE_MIN_S = 0.5
GRACE_FACTOR = 4.0
"""Once one mirror has answered, a mirror that has shown no progress (connected, first byte,
metadata, sample bytes) for ``max(GRACE_MIN_S, GRACE_FACTOR * latency)`` is given up on:
``latency`` is its own time to first byte when it answered one, else the best mirror's. A
mirror that accepts connections and never answers (a black hole) then costs about half a
second, not the probe timeout; a far but working mirror, judged by its own latency, is not
cut. While no mirror has answered, every mirror gets its full timeout."""

SamplePolicy = Literal["always", "never"]
"""``always``: sample every mirror that has the repo (``modelget probe``). ``never``: no sample
(a pull: the pull-wide scheduler measures every mirror on the real bytes instead)."""


@dataclass
class MirrorClock:
    """What the probe knows of one mirror's progress (perf_counter seconds)."""

    last: float
    """When it last made progress (or was started)."""
    latency_s: float | None = None
    """Its time to first byte, once measured (or cached)."""
    answered: bool = False
    """It is usable: it answered the latency probe and (with a repo id) listed the repo."""
    done: bool = False
    """Its probe is over (answered or not)."""
    cut: bool = False
    """Given up on: too slow, the probe went on without it."""


def grace_s(clock: MirrorClock, best_latency_s: float) -> float:
    """How long ``clock``'s mirror may stay silent once another mirror has answered."""
    latency = clock.latency_s if clock.latency_s is not None else best_latency_s
    return max(GRACE_MIN_S, GRACE_FACTOR * latency)


def best_latency(clocks: Mapping[str, MirrorClock]) -> float | None:
    """The lowest latency of the mirrors that answered; None while none has."""
    latencies = [c.latency_s for c in clocks.values() if c.answered and c.latency_s is not None]
    return min(latencies) if latencies else None


def overdue(now: float, clocks: Mapping[str, MirrorClock]) -> list[str]:
    """The mirrors to stop waiting for now (pure): unfinished, not already given up on, and
    silent for longer than their grace (``grace_s``) while another mirror has answered."""
    best = best_latency(clocks)
    if best is None:
        return []
    return [
        name
        for name, c in clocks.items()
        if not c.done and not c.cut and now - c.last >= grace_s(c, best)
    ]


def next_check(clocks: Mapping[str, MirrorClock]) -> float | None:
    """When the next mirror becomes overdue if nothing changes (None: not before an event)."""
    best = best_latency(clocks)
    if best is None:
        return None
    times = [c.last + grace_s(c, best) for c in clocks.values() if not c.done and not c.cut]
    return min(times) if times else None


Outcome = tuple[ProbeResult, Manifest | None, ModelgetError | None]


class _Tracker:
    """The clocks of one probe, shared by the mirrors' threads and the waiting caller."""

    def __init__(self, mirrors: Sequence[Mirror], policy: SamplePolicy) -> None:
        now = time.perf_counter()
        self.cond = threading.Condition()
        self.policy: SamplePolicy = policy
        self.clocks = {m.name: MirrorClock(last=now) for m in mirrors}
        self.outcomes: dict[str, Outcome] = {}
        self.provisional: dict[str, Outcome] = {}
        """A mirror that answered and is sampling: its outcome without a throughput."""

    def progress(self, name: str, latency_s: float | None = None) -> None:
        with self.cond:
            clock = self.clocks[name]
            clock.last = time.perf_counter()
            if latency_s is not None:
                clock.latency_s = latency_s
            self.cond.notify_all()

    def answered(self, name: str, outcome: Outcome) -> None:
        with self.cond:
            self.clocks[name].answered = True
            self.clocks[name].last = time.perf_counter()
            self.provisional[name] = outcome
            self.cond.notify_all()

    def finish(self, name: str, outcome: Outcome) -> None:
        with self.cond:
            clock = self.clocks[name]
            clock.done = True
            clock.answered = outcome[0].status == "ok" and (
                outcome[1] is not None or outcome[0].has_repo is None
            )
            self.outcomes[name] = outcome
            self.cond.notify_all()

    def should_sample(self, name: str) -> bool:
        """Whether ``name`` (which has answered) should sample or go on sampling now."""
        if self.policy == "never":
            return False
        with self.cond:
            return not self.clocks[name].cut


def probe_mirror(
    mirror: Mirror,
    repo_id: str | None,
    revision: str | None,
    timeout: float,
    *,
    sample: bool = True,
    repo_type: RepoType = "model",
) -> Outcome:
    """Probe one mirror on its own; never raises for the mirror's own faults."""
    tracker = _Tracker([mirror], "always" if sample else "never")
    return _probe_one(mirror, repo_id, revision, timeout, tracker, repo_type=repo_type)


def _probe_one(
    mirror: Mirror,
    repo_id: str | None,
    revision: str | None,
    timeout: float,
    tracker: _Tracker,
    *,
    sample: bool = True,
    repo_type: RepoType = "model",
) -> Outcome:
    """Connect and time a first byte while (with a repo id) the repo is resolved in a second
    thread, then sample throughput if ``tracker`` says so. Reports progress to ``tracker``."""
    import httpx

    started = time.time()
    t0 = time.perf_counter()
    source = get_source(mirror.kind)
    name = mirror.name

    def result(status: str, **kw: Any) -> ProbeResult:
        return ProbeResult(
            mirror=name,
            kind=mirror.kind,
            endpoint=mirror.endpoint,
            status=status,
            probed_at=started,
            elapsed_s=time.perf_counter() - t0,
            **kw,
        )

    resolved: list[Manifest | ModelgetError] = []
    resolver: threading.Thread | None = None
    if repo_id is not None:
        # The metadata calls do not wait for the latency probe: both are in flight at once.
        def resolve() -> None:
            try:
                resolved.append(
                    source.resolve(mirror, repo_id, revision, timeout=timeout, repo_type=repo_type)
                )
            except ModelgetError as exc:
                resolved.append(exc)
            tracker.progress(name)

        resolver = threading.Thread(target=resolve, name=f"modelget-resolve-{name}", daemon=True)
        resolver.start()

    try:
        connect_s = _connect_time(mirror.endpoint, timeout, mirror.verify_tls)
    except OSError as exc:
        return result("down", error=f"connect failed: {exc}"), None, None
    if connect_s is not None:
        tracker.progress(name)
    try:
        with http.client(timeout=timeout, verify_tls=mirror.verify_tls) as client:
            ttfb_s = _ttfb(client, source.ping_url(mirror), mirror)
            tracker.progress(name, latency_s=ttfb_s)
            if resolver is None:
                return result("ok", connect_s=connect_s, ttfb_s=ttfb_s), None, None
            resolver.join()
            if not resolved:  # resolve() died of an unexpected error (a bug): not usable
                return result("error", connect_s=connect_s, ttfb_s=ttfb_s), None, None
            manifest = resolved[0]
            if isinstance(manifest, ModelgetError):
                status = status_of(manifest)
                return (
                    result(
                        status,
                        connect_s=connect_s,
                        ttfb_s=ttfb_s,
                        has_repo=False if status == "no-repo" else None,
                        error=manifest.message,
                    ),
                    None,
                    manifest,
                )
            ok = result("ok", connect_s=connect_s, ttfb_s=ttfb_s, has_repo=True)
            tracker.answered(name, (ok, manifest, None))
            rate = _sample(client, mirror, manifest, tracker) if sample else None
            return (
                result(
                    "ok", connect_s=connect_s, ttfb_s=ttfb_s, throughput_bps=rate, has_repo=True
                ),
                manifest,
                None,
            )
    except httpx.HTTPError as exc:
        return result("down", connect_s=connect_s, error=f"{type(exc).__name__}: {exc}"), None, None


def _sample(
    client: httpx.Client, mirror: Mirror, manifest: Manifest, tracker: _Tracker
) -> float | None:
    """The mirror's throughput on its largest file, when ``tracker`` wants a sample; None
    without one (or when it failed: a sample is a hint, never a reason to drop a mirror)."""
    import httpx

    name = mirror.name
    if not manifest.files or not tracker.should_sample(name):
        return None
    largest = max(manifest.files, key=lambda f: f.size)

    def keep_going() -> bool:
        tracker.progress(name)
        return tracker.should_sample(name)

    try:
        return _throughput(
            client,
            get_source(mirror.kind).file_url(mirror, manifest, largest),
            mirror,
            largest.size,
            keep_going,
        )
    except (httpx.HTTPError, ModelgetError):
        return None


def _resolve_cached(
    mirror: Mirror,
    repo_id: str,
    revision: str | None,
    timeout: float,
    cached: ProbeResult,
    tracker: _Tracker,
    repo_type: RepoType = "model",
) -> Outcome:
    """A mirror with a fresh cached probe result: only its manifest is fetched (manifests are
    never cached). If that fails, the mirror changed since: it is probed again, now."""
    if cached.status != "ok":
        return cached, None, None
    try:
        manifest = get_source(mirror.kind).resolve(
            mirror, repo_id, revision, timeout=timeout, repo_type=repo_type
        )
    except ModelgetError as exc:
        result, manifest_, error = _probe_one(
            mirror, repo_id, revision, timeout, tracker, sample=False, repo_type=repo_type
        )
        return result, manifest_, error or exc
    return cached, manifest, None


def probe(
    mirrors: Sequence[Mirror],
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    sample: SamplePolicy = "always",
    cached: Mapping[str, ProbeResult] | None = None,
    repo_type: RepoType = "model",
) -> ProbeReport:
    """Probe every mirror at once; the whole call lasts at most about ``2 * timeout``.

    Each mirror's own calls are bounded by ``timeout``; a mirror still busy at the overall
    deadline is reported ``down`` and its thread is left to die on its own (daemon). Once a
    mirror has answered, one that stays silent too long (see ``GRACE_MIN_S``) is reported
    ``down`` ("skipped") at once. ``sample``: see ``SamplePolicy``. ``cached``: fresh probe
    results to keep (with a repo id, those mirrors are only asked for their manifest).
    ``repo_type``: the repo id names a model, a dataset or a space.
    """
    report = ProbeReport(cached=cached is not None)
    tracker = _Tracker(mirrors, sample)

    def work(mirror: Mirror) -> None:
        if cached is not None and mirror.name in cached and repo_id is not None:
            before = cached[mirror.name]
            tracker.progress(mirror.name, latency_s=before.ttfb_s)
            outcome = _resolve_cached(
                mirror, repo_id, revision, timeout, before, tracker, repo_type
            )
        else:
            outcome = _probe_one(mirror, repo_id, revision, timeout, tracker, repo_type=repo_type)
        tracker.finish(mirror.name, outcome)

    start = time.perf_counter()
    threads = [
        threading.Thread(target=work, args=(m,), name=f"modelget-probe-{m.name}", daemon=True)
        for m in mirrors
    ]
    for t in threads:
        t.start()
    skipped = _wait(tracker, start + 2 * timeout + 1.0)
    with tracker.cond:
        outcomes = dict(tracker.outcomes)
        provisional = dict(tracker.provisional)
    now = time.time()
    for mirror in mirrors:
        if mirror.name in outcomes:
            res, manifest, error = outcomes[mirror.name]
        elif mirror.name in provisional:  # answered, then too slow to sample: no throughput
            res, manifest, error = provisional[mirror.name]
        else:
            res = ProbeResult(
                mirror.name,
                mirror.kind,
                mirror.endpoint,
                "down",
                error=skipped.get(mirror.name, f"no answer within {2 * timeout + 1.0:g} s"),
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


def _wait(tracker: _Tracker, deadline: float) -> dict[str, str]:
    """Until every mirror is done or given up on, or ``deadline``: give up on the mirrors
    silent too long while the others answered (see :func:`overdue`); returns why, by name."""
    skipped: dict[str, str] = {}
    with tracker.cond:
        while True:
            now = time.perf_counter()
            clocks = tracker.clocks
            if all(c.done or c.cut for c in clocks.values()) or now >= deadline:
                return skipped
            late = overdue(now, clocks)
            for name in late:
                clocks[name].cut = True
                best = best_latency(clocks) or 0.0
                skipped[name] = (
                    f"slow: nothing for {now - clocks[name].last:.2f} s while the other "
                    f"mirrors answered (best latency {best * 1000:.0f} ms); skipped"
                )
            if late:
                tracker.cond.notify_all()
                continue
            wake = next_check(clocks)
            tracker.cond.wait(max(0.0, min(deadline, wake if wake is not None else deadline) - now))


# --- cache ---------------------------------------------------------------------------------


def _cache_key(
    mirror: Mirror, repo_id: str | None, revision: str | None = None, repo_type: RepoType = "model"
) -> str:
    # A probe without certificate checks (--insecure) is not a result for one with them.
    insecure = "" if mirror.verify_tls else "|insecure"
    # Nor is one for another revision: a mirror may have main and not a typo'd branch.
    at = f"@{revision}" if revision else ""
    # Nor one for a model, for the dataset of the same name (a model's key is as it was).
    kind = f"{repo_type}s/" if repo_id and repo_type != "model" else ""
    return f"{mirror.name}|{mirror.endpoint}|{kind}{repo_id or ''}{at}{insecure}"


def load_cached(
    path: Path,
    mirrors: Sequence[Mirror],
    repo_id: str | None,
    ttl_s: float,
    revision: str | None = None,
    repo_type: RepoType = "model",
) -> dict[str, ProbeResult] | None:
    """The fresh (younger than ``ttl_s``) cached results of those ``mirrors`` that have one,
    for this repo and revision; None when none has. Only good answers are ever cached (see
    :func:`store_cached`), so a mirror without one is probed again."""
    if ttl_s <= 0:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    now = time.time()
    out: dict[str, ProbeResult] = {}
    for mirror in mirrors:
        raw = data.get(_cache_key(mirror, repo_id, revision, repo_type))
        if not isinstance(raw, dict):
            continue
        try:
            res = ProbeResult(**raw)
        except TypeError:
            continue
        if res.status != "ok" or now - res.probed_at > ttl_s or res.probed_at > now + 60:
            continue
        out[mirror.name] = res
    return out or None


CACHE_KEEP_S = 24 * 3600.0
CACHE_MAX_ENTRIES = 256


def _pruned(data: dict[str, Any], now: float) -> dict[str, Any]:
    """The entries worth keeping: younger than a day, the newest ``CACHE_MAX_ENTRIES``. (Every
    pull reads and rewrites this file: unpruned, it grew by every mirror ever probed.)"""

    def when(entry: Any) -> float:
        at = entry.get("probed_at") if isinstance(entry, dict) else None
        return float(at) if isinstance(at, (int, float)) else 0.0

    fresh = [(k, v) for k, v in data.items() if now - when(v) <= CACHE_KEEP_S]
    fresh.sort(key=lambda kv: when(kv[1]), reverse=True)
    return dict(fresh[:CACHE_MAX_ENTRIES])


def store_cached(
    path: Path,
    mirrors: Sequence[Mirror],
    repo_id: str | None,
    results: Mapping[str, ProbeResult],
    revision: str | None = None,
    repo_type: RepoType = "model",
) -> None:
    """Merge the good answers of ``results`` into the cache file (atomically; failures to
    write are not fatal). A failure is never cached: a mirror that was down, refused, or lacked
    the repo or revision is asked again next time (a cached failure outlived an outage, or a
    typo'd ``--revision``, by the cache's lifetime). Its stale good entry is dropped."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    for mirror in mirrors:
        if mirror.name not in results:
            continue
        key = _cache_key(mirror, repo_id, revision, repo_type)
        if results[mirror.name].status == "ok":
            data[key] = asdict(results[mirror.name])
        else:
            data.pop(key, None)
    data = _pruned(data, time.time())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
