"""``modelget doctor``: why is my pull slow or stuck?

The checks a person would walk, as small functions with the I/O at the edges, run at once
under one time budget, then a pure :func:`verdict` that says in plain words what is wrong and
which link is the slowest.

Per mirror (one thread each): DNS (``getaddrinfo``, timed), TCP connect, the TLS handshake
(https only), whether the repo is there (the source's own metadata call, the one a pull
makes), time to first byte and a short throughput sample (a ``Range`` GET on the repo's
largest file, or the mirror's ping URL without a repo id), and whether the mirror honours
``Range`` at all. The HTTP pieces are ``modelget.probe``'s (token only to the mirror's own
host, redirects followed by hand).

Local (threads of their own): free space and filesystem type at the cache, memory, CPUs, a
sequential write + fsync and read of a scratch file in the cache directory (page cache
dropped with ``posix_fadvise(DONTNEED)`` before the read, and how much of it was still cached
is measured with ``mincore`` and reported), aria2c's presence and version, and the GPUs torch
sees (only when torch is installed; it is never imported otherwise).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import secrets
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from modelget.datatypes import Manifest, Mirror
from modelget.errors import ModelgetError
from modelget.probe import first_byte, range_sample
from modelget.probe import status_of as probe_status_of
from modelget.sources import get_source

Status = Literal["ok", "warn", "fail", "skip"]
Level = Literal["fail", "warn", "info"]

MIRROR_CHECKS = ("dns", "tcp", "tls", "repo", "ttfb", "range", "throughput")
LOCAL_CHECKS = (
    "disk-free",
    "filesystem",
    "memory",
    "cpus",
    "disk-write",
    "disk-read",
    "aria2c",
    "gpu",
)

#: The throughput sample: a Range of at most SAMPLE_BYTES, read for at most SAMPLE_S seconds.
SAMPLE_BYTES = 64 * 1024 * 1024
SAMPLE_S = 1.0
#: The disk test: write at most DISK_TEST_BYTES (stopping after DISK_TEST_MAX_S), then read.
DISK_TEST_BYTES = 64 * 1024 * 1024
DISK_TEST_MAX_S = 3.0
_DISK_BLOCK = 4 * 1024 * 1024
_SCRATCH_PREFIX = ".modelget-doctor-"

LOW_FREE_BYTES = 1_000_000_000
LOW_MEMORY_BYTES = 1_000_000_000
SLOW_TTFB_S = 1.0
CERT_WARN_DAYS = 14

MEMORY_FS = frozenset({"tmpfs", "ramfs"})
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "beegfs",
        "gpfs",
        "afs",
        "davfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.juicefs",
        "fuse.goofys",
        "fuse.mountpoint-s3",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.davfs2",
    }
)


# --- records ---------------------------------------------------------------------------------


@dataclass
class Check:
    """One check's outcome. ``value`` is in ``unit``: ``s`` (seconds), ``B`` (bytes), ``B/s``
    (bytes per second), ``""`` (a count or a word). ``detail`` says what was measured."""

    name: str
    status: Status
    value: float | int | str | None = None
    unit: str = ""
    detail: str = ""


@dataclass
class MirrorReport:
    name: str
    kind: str
    endpoint: str
    checks: list[Check]
    elapsed_s: float = 0.0

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True)
class Finding:
    """One sentence of the verdict. ``code`` is stable (scripts may match on it)."""

    level: Level
    code: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """``ok``: no check failed and nothing blocks a pull. ``slowest_mirror``: the mirror a
    pull would wait on longest (None when none is reachable). ``disk_limits``: the cache disk
    writes slower than the best mirror sends (None: not measured)."""

    ok: bool
    findings: tuple[Finding, ...]
    slowest_mirror: str | None = None
    disk_limits: bool | None = None

    @property
    def text(self) -> str:
        return "\n".join(f.message for f in self.findings)


@dataclass
class DoctorReport:
    repo_id: str | None
    revision: str | None
    cache_dir: str
    mirrors: list[MirrorReport]
    local: list[Check]
    repo_bytes: int | None = None
    repo_files: int | None = None
    elapsed_s: float = 0.0
    budget_s: float = 0.0
    verdict: Verdict | None = None

    def local_check(self, name: str) -> Check | None:
        return next((c for c in self.local if c.name == name), None)

    def mirror(self, name: str) -> MirrorReport:
        return next(m for m in self.mirrors if m.name == name)

    @property
    def failed(self) -> list[tuple[str, Check]]:
        """``(mirror name or "local", check)`` for every failed check."""
        out = [(m.name, c) for m in self.mirrors for c in m.checks if c.status == "fail"]
        return out + [("local", c) for c in self.local if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return self.verdict.ok if self.verdict is not None else not self.failed

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.verdict is not None:
            out["verdict"]["text"] = self.verdict.text
        out["ok"] = self.ok
        return out


# --- formatting (shared by the verdict and the CLI) -----------------------------------------


def fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def fmt_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def fmt_rate(bps: float) -> str:
    return f"{bps / 1e6:.1f} MB/s" if bps < 1e10 else f"{bps / 1e9:.1f} GB/s"


def fmt_value(check: Check) -> str:
    """``check.value`` for people: ms / MB/s / GB, or as it is."""
    v = check.value
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if check.unit == "s":
            return fmt_seconds(float(v))
        if check.unit == "B/s":
            return fmt_rate(float(v))
        if check.unit == "B":
            return fmt_bytes(v)
        return f"{v:g}{(' ' + check.unit) if check.unit else ''}"
    return str(v)


# --- the verdict (pure) --------------------------------------------------------------------


def _num(check: Check | None) -> float | None:
    if check is None:
        return None
    v = check.value
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _reachable(m: MirrorReport) -> bool:
    """Connected, (TLS where https) and got an HTTP answer."""
    tcp, tls, ttfb, repo = m.get("tcp"), m.get("tls"), m.get("ttfb"), m.get("repo")
    if tcp is None or tcp.status != "ok":
        return False
    if tls is not None and tls.status == "fail":
        return False
    answered = ttfb is not None and ttfb.status in ("ok", "warn")
    return answered or (repo is not None and repo.status in ("ok", "warn"))


def _first_failure(m: MirrorReport) -> str:
    for c in m.checks:
        if c.status == "fail":
            return f"{c.name}: {c.detail}" if c.detail else c.name
    return "no answer"


_REPO_WORDS = {
    "no-repo": "does not have it",
    "auth": "needs a token for it",
    "rate-limited": "is rate limiting",
    "down": "did not answer the metadata call",
    "error": "failed the metadata call",
}


def space_status(free: int | None, repo_bytes: int | None) -> Status:
    """Free space at the cache: fail below the repo's size, warn below 1 GB."""
    if free is None:
        return "skip"
    if repo_bytes is not None and free < repo_bytes:
        return "fail"
    return "warn" if free < LOW_FREE_BYTES else "ok"


def verdict(report: DoctorReport) -> Verdict:
    """What is wrong, in plain words, and which link is the slowest. Pure: reads the report."""
    findings: list[Finding] = []
    repo = report.repo_id

    def add(level: Level, code: str, message: str) -> None:
        findings.append(Finding(level, code, message))

    reachable = [m for m in report.mirrors if _reachable(m)]
    unreachable = [m for m in report.mirrors if not _reachable(m)]
    if not report.mirrors:
        add(
            "fail",
            "no-mirror-enabled",
            "No mirror is enabled in the catalogue: enable one (enabled: true), see docs/mirrors.md.",
        )
    elif not reachable:
        reasons = "; ".join(f"{m.name} ({_first_failure(m)})" for m in unreachable)
        add(
            "fail",
            "no-mirror-reachable",
            f"No mirror is reachable: {reasons}. Check the network, the proxy settings and the "
            "endpoints in the catalogue (`modelget mirrors`).",
        )

    # Which mirrors a pull would use.
    candidates = reachable
    lacking: list[MirrorReport] = []
    if repo is not None and reachable:
        candidates = [m for m in reachable if (c := m.get("repo")) and c.status == "ok"]
        lacking = [m for m in reachable if m not in candidates]
        if not candidates:
            reasons = "; ".join(
                f"{m.name} ({_REPO_WORDS.get(str(getattr(m.get('repo'), 'value', '')), 'error')})"
                for m in reachable
            )
            add(
                "fail",
                "repo-missing",
                f"{repo} is on no reachable mirror: {reasons}. Check the repo id (and --revision), "
                "set the token a mirror needs, or add a mirror that has it.",
            )

    free = report.local_check("disk-free")
    free_bytes = _num(free)
    if repo is not None and report.repo_bytes is not None and free_bytes is not None:
        if free_bytes < report.repo_bytes:
            add(
                "fail",
                "disk-space",
                f"Only {fmt_bytes(free_bytes)} free at the cache ({report.cache_dir}); "
                f"{repo} is {fmt_bytes(report.repo_bytes)}. Free some space or pull with "
                "--cache-dir / --local-dir on a bigger disk.",
            )
    elif free_bytes is not None and free_bytes < LOW_FREE_BYTES:
        add(
            "warn",
            "disk-space-low",
            f"Only {fmt_bytes(free_bytes)} free at the cache ({report.cache_dir}).",
        )

    # The slowest link among the mirrors a pull would use.
    slowest: str | None = None
    timed = [(m, t) for m in candidates if (t := _num(m.get("ttfb"))) is not None]
    rates = {m.name: r for m, _ in timed if (r := _num(m.get("throughput")))}
    size = float(report.repo_bytes or 0)
    by_rate = bool(timed) and len(rates) == len(timed) and size > 0

    def cost(item: tuple[MirrorReport, float]) -> float:
        # Seconds to get the repo from this mirror alone: latency, then the bytes.
        m, ttfb = item
        return ttfb + (size / rates[m.name] if by_rate else 0.0)

    def by_bytes(item: tuple[MirrorReport, float]) -> bool:
        # Whether the bytes (not the latency) dominate this mirror's time.
        m, ttfb = item
        return by_rate and size / rates[m.name] > ttfb

    def why(item: tuple[MirrorReport, float], bytes_: bool) -> str:
        m, ttfb = item
        return fmt_rate(rates[m.name]) if bytes_ else f"TTFB {fmt_seconds(ttfb)}"

    if timed:
        worst = max(timed, key=cost)
        best = min(timed, key=cost)
        slowest = worst[0].name
        metric = by_bytes(worst)
        if len(timed) == 1:
            what = f"has {repo}" if repo else "answers"
            facts = f"TTFB {fmt_seconds(worst[1])}"
            if slowest in rates:
                facts += f", {fmt_rate(rates[slowest])}"
            add("info", "slowest-mirror", f"Only one mirror {what}: {slowest} ({facts}).")
        else:
            add(
                "warn" if worst[1] >= SLOW_TTFB_S else "info",
                "slowest-mirror",
                f"Slowest link: mirror {slowest} ({why(worst, metric)}; fastest: "
                f"{best[0].name}, {why(best, metric)}). A pull spreads the work over every "
                "mirror that has the files and moves segments off a slow one.",
            )

    # The cache disk against the network.
    disk_limits: bool | None = None
    write = _num(report.local_check("disk-write"))
    if write is not None and rates:
        top_name, top = max(rates.items(), key=lambda kv: kv[1])
        combined = sum(rates.values())
        disk_limits = write < top
        if disk_limits:
            add(
                "warn",
                "disk-limits",
                f"Cache disk writes {fmt_rate(write)}, below the best mirror's "
                f"{fmt_rate(top)} ({top_name}): the disk will limit pulls.",
            )
        elif len(rates) > 1 and write < combined:
            add(
                "info",
                "disk-may-limit",
                f"Cache disk writes {fmt_rate(write)}: faster than the best mirror "
                f"({top_name}, {fmt_rate(top)}), slower than all {len(rates)} mirrors "
                f"together ({fmt_rate(combined)}); a pull from all of them may wait on the disk.",
            )
        else:
            add(
                "info",
                "network-limits",
                f"Cache disk writes {fmt_rate(write)}, faster than the mirrors "
                f"({fmt_rate(combined)} together): the network is the limit, not the disk.",
            )

    if reachable:
        for m in unreachable:
            add(
                "warn",
                "mirror-unreachable",
                f"Mirror {m.name} is unreachable ({_first_failure(m)}); pulls use the others.",
            )
    for m in candidates:
        rng = m.get("range")
        if rng is not None and rng.status == "warn":
            add(
                "warn",
                "no-range",
                f"Mirror {m.name} ignores Range requests: no parallel segments and no resume "
                "from it.",
            )
    if candidates:
        for m in lacking:
            c = m.get("repo")
            word = _REPO_WORDS.get(str(c.value if c else ""), "error")
            add(
                "info",
                "repo-not-on-mirror",
                f"Mirror {m.name} {word}: {repo} comes from the others.",
            )

    for c in report.local:
        if c.name in ("disk-free",) or c.status != "fail":
            continue
        if c.name in ("disk-write", "disk-read"):
            add(
                "fail",
                "cache-not-writable",
                f"Cannot use the cache at {report.cache_dir}: {c.detail}. Pulls will fail "
                "there: fix the permissions or pull with --cache-dir.",
            )
        else:
            add("fail", f"{c.name}-failed", f"{c.name}: {c.detail}")

    aria = report.local_check("aria2c")
    if aria is not None and aria.status == "warn":
        add(
            "warn",
            "aria2c-missing",
            "aria2c is not installed: pulls fall back to the built-in httpx engine. Install "
            "aria2 (apt-get install aria2, brew install aria2) for the default engine.",
        )
    fs = report.local_check("filesystem")
    if fs is not None and isinstance(fs.value, str):
        if fs.value in MEMORY_FS:
            add(
                "warn",
                "cache-in-memory",
                f"The cache is on {fs.value}: models live in RAM (counted against memory) and "
                "are gone at reboot.",
            )
        elif is_network_fs(fs.value):
            add(
                "warn",
                "cache-on-network-fs",
                f"The cache is on {fs.value}, a network filesystem: every byte written (and "
                "every later load) crosses the network again; a local disk is usually faster.",
            )
    mem = report.local_check("memory")
    if mem is not None and mem.status == "warn":
        add("warn", "low-memory", f"Little memory is free: {mem.detail}.")

    failed = bool(report.failed) or any(f.level == "fail" for f in findings)
    if not failed and not any(f.level == "warn" for f in findings):
        add("info", "healthy", "No problem found.")
    return Verdict(
        ok=not failed,
        findings=tuple(findings),
        slowest_mirror=slowest,
        disk_limits=disk_limits,
    )


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS


# --- per-mirror checks (I/O) ----------------------------------------------------------------


class _Slot:
    """The checks one worker has produced so far, by name (shared with the main thread)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.done: dict[str, Check] = {}
        self.lock = threading.Lock()
        self.manifest: Manifest | None = None
        self.started = time.perf_counter()
        self.finished: float | None = None

    def put(self, check: Check) -> None:
        with self.lock:
            self.done.setdefault(check.name, check)

    def skip_rest(self, detail: str) -> None:
        for name in self.names:
            self.put(Check(name, "skip", detail=detail))

    def fail_current(self, detail: str) -> None:
        with self.lock:
            current = next((n for n in self.names if n not in self.done), None)
        if current is not None:
            self.put(Check(current, "fail", detail=detail))
        self.skip_rest("not reached")

    def result(self, budget_s: float) -> list[Check]:
        with self.lock:
            out: list[Check] = []
            late = True
            for name in self.names:
                if name in self.done:
                    out.append(self.done[name])
                elif late:
                    out.append(Check(name, "fail", detail=f"no answer within {budget_s:g} s"))
                    late = False
                else:
                    out.append(Check(name, "skip", detail="not reached within the time budget"))
            return out


def _proxy_for(url: str) -> str | None:
    """The proxy a pull's HTTP client would use for ``url`` (from the environment), or None.

    httpx and huggingface_hub honour ``HTTPS_PROXY``/``NO_PROXY`` themselves; the standard
    library answers the same question here so the DNS and TCP checks test the first hop a
    pull really makes.
    """
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _public_proxy(proxy: str) -> tuple[str, str, int]:
    """(scheme://host:port without credentials, host, port) of a proxy URL."""
    p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default = 443 if p.scheme == "https" else 1080 if p.scheme.startswith("socks") else 80
    host = p.hostname or ""
    port = p.port or default
    return f"{p.scheme}://{host}:{port}", host, port


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


def check_tls(sock: socket.socket, host: str, timeout: float) -> Check:
    """The TLS handshake on a connected socket (timed), certificate checked as pulls check it.
    Closes ``sock``."""
    ctx = ssl.create_default_context()
    sock.settimeout(timeout)
    start = time.perf_counter()
    try:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
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
    detail = f"{version}, {cipher}"
    status: Status = "ok"
    not_after = cert.get("notAfter")
    if isinstance(not_after, str):
        days = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
        detail += f"; certificate valid for {days:.0f} more days"
        if days < CERT_WARN_DAYS:
            status = "warn"
    return Check("tls", status, seconds, "s", detail)


def _http_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def check_mirror(
    mirror: Mirror,
    repo_id: str | None,
    revision: str | None,
    timeout: float,
    slot: _Slot,
) -> None:
    """Every per-mirror check, in order, into ``slot``; never raises for the mirror's faults."""
    import httpx

    parts = urlsplit(mirror.endpoint)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    proxy = _proxy_for(mirror.endpoint)
    if proxy is not None:
        shown, dial_host, dial_port = _public_proxy(proxy)
        via = f" (proxy {shown})"
    else:
        dial_host, dial_port, via = host, parts.port or (443 if https else 80), ""

    dns, infos = check_dns(dial_host, dial_port)
    dns.detail += via
    slot.put(dns)
    if not infos:
        slot.skip_rest("no address to connect to")
        return
    tcp, sock = check_tcp(infos, timeout)
    tcp.detail += via
    slot.put(tcp)
    if sock is None:
        slot.skip_rest("no TCP connection")
        return
    if not https:
        sock.close()
        slot.put(Check("tls", "skip", detail="plain http endpoint"))
    elif proxy is not None:
        sock.close()
        slot.put(Check("tls", "skip", detail="tunnelled through the proxy: part of the TTFB"))
    else:
        tls = check_tls(sock, host, timeout)
        sock.close()  # already closed by the TLS wrapper; this is for the paths that fail early
        slot.put(tls)
        if tls.status == "fail":
            slot.skip_rest("no TLS session")
            return

    source = get_source(mirror.kind)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        manifest: Manifest | None = None
        if repo_id is None:
            slot.put(Check("repo", "skip", detail="no repo id given"))
        else:
            start = time.perf_counter()
            try:
                manifest = source.resolve(mirror, repo_id, revision, timeout=timeout)
            except ModelgetError as exc:
                status = probe_status_of(exc)
                level: Status = "warn" if status in ("no-repo", "auth", "rate-limited") else "fail"
                slot.put(Check("repo", level, status, "", exc.message))
            else:
                seconds = time.perf_counter() - start
                total = sum(f.size for f in manifest.files)
                slot.manifest = manifest
                slot.put(
                    Check(
                        "repo",
                        "ok",
                        "yes",
                        "",
                        f"{manifest.revision} = commit {manifest.commit[:12]}: "
                        f"{len(manifest.files)} files, {fmt_bytes(total)} "
                        f"(metadata in {fmt_seconds(seconds)})",
                    )
                )
        entry = max(manifest.files, key=lambda f: f.size) if manifest else None
        if manifest is not None and entry is not None and entry.size > 0:
            _sample_file(client, mirror, source.file_url(mirror, manifest, entry), entry, slot)
            return
        url = source.ping_url(mirror)
        try:
            seconds, code = first_byte(client, url, mirror)
        except httpx.HTTPError as exc:
            slot.put(Check("ttfb", "fail", detail=f"GET {urlsplit(url).path}: {_http_error(exc)}"))
            slot.skip_rest("no HTTP answer")
            return
        bad = code >= 500 or code == 429
        slot.put(
            Check(
                "ttfb",
                "warn" if bad else "ok",
                seconds,
                "s",
                f"GET {urlsplit(url).path} -> HTTP {code}",
            )
        )
        why = (
            "no repo id given: `modelget doctor ORG/NAME` samples a file"
            if repo_id is None
            else f"{repo_id} is not on this mirror"
        )
        slot.put(Check("range", "skip", detail=why))
        slot.put(Check("throughput", "skip", detail=why))


def _sample_file(client: Any, mirror: Mirror, url: str, entry: Any, slot: _Slot) -> None:
    import httpx

    want = min(entry.size, SAMPLE_BYTES)
    try:
        sample = range_sample(client, url, mirror, want, sample_s=SAMPLE_S)
    except httpx.HTTPError as exc:
        slot.put(Check("ttfb", "fail", detail=f"GET {entry.path}: {_http_error(exc)}"))
        slot.skip_rest("no file bytes")
        return
    if sample is None:
        slot.put(
            Check("ttfb", "fail", detail=f"GET {entry.path}: still redirected after 5 requests")
        )
        slot.skip_rest("no file bytes")
        return
    hops = ""
    if sample.redirects:
        hops = f" after {sample.redirects} redirect(s) to {urlsplit(sample.url).netloc}"
    if sample.status not in (200, 206) or sample.ttfb_s is None:
        slot.put(
            Check("ttfb", "fail", detail=f"GET {entry.path}{hops}: HTTP {sample.status}, no bytes")
        )
        slot.skip_rest("no file bytes")
        return
    slot.put(Check("ttfb", "ok", sample.ttfb_s, "s", f"first byte of {entry.path}{hops}"))
    if sample.status == 206:
        slot.put(Check("range", "ok", 206, "", "206 Partial Content: segments and resume work"))
    else:
        slot.put(
            Check(
                "range",
                "warn",
                200,
                "",
                "answered a Range request with 200 and the whole file: no segments, no resume",
            )
        )
    timed = sample.bytes - sample.first_chunk
    if timed <= 0 or sample.seconds <= 0:
        slot.put(
            Check(
                "throughput",
                "skip",
                detail=f"{fmt_bytes(sample.bytes)} came in one read: too little to time",
            )
        )
        return
    rate = timed / sample.seconds
    slot.put(
        Check(
            "throughput",
            "ok",
            rate,
            "B/s",
            f"{fmt_bytes(sample.bytes)} of {entry.path} in {sample.seconds:.2f} s after the "
            "first byte (one connection)",
        )
    )


# --- local checks (I/O) ---------------------------------------------------------------------


def _existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_disk_free(cache_dir: Path) -> Check:
    where = _existing(cache_dir)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check("disk-free", "skip", detail=f"{where}: {exc.strerror or exc}")
    return Check(
        "disk-free",
        "ok",
        usage.free,
        "B",
        f"{fmt_bytes(usage.free)} free of {fmt_bytes(usage.total)} at {where}",
    )


def check_filesystem(cache_dir: Path) -> Check:
    from modelget.loadtest import storage_of

    info = storage_of(_existing(cache_dir))
    if info.fstype is None:
        return Check("filesystem", "skip", detail="no /proc/mounts on this system")
    status: Status = "warn" if info.fstype in MEMORY_FS or is_network_fs(info.fstype) else "ok"
    return Check(
        "filesystem", status, info.fstype, "", f"{info.device} mounted at {info.mount_point}"
    )


def _meminfo(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    return out


def check_memory() -> Check:
    try:
        info = _meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        return Check("memory", "skip", detail="no /proc/meminfo on this system")
    total = info.get("MemTotal")
    available = info.get("MemAvailable", info.get("MemFree"))
    if total is None or available is None:
        return Check("memory", "skip", detail="/proc/meminfo without MemTotal/MemAvailable")
    detail = f"{fmt_bytes(available)} available of {fmt_bytes(total)}"
    try:
        limit_text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit_text = ""
    if limit_text.isdigit() and int(limit_text) < total:
        detail += f"; this cgroup may use at most {fmt_bytes(int(limit_text))}"
    status: Status = "warn" if available < LOW_MEMORY_BYTES else "ok"
    return Check("memory", status, available, "B", detail)


def check_cpus() -> Check:
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return Check("cpus", "ok", usable, "", f"{usable} usable of {total}")


def _remove_stale_scratch(directory: Path) -> None:
    """Scratch files of doctors that died mid-test (their pid no longer runs)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(_SCRATCH_PREFIX) + r"(\d+)-[0-9a-f]+\.tmp", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (directory / name).unlink()
        except OSError:
            continue


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def check_disk(
    cache_dir: Path, nbytes: int = DISK_TEST_BYTES, max_s: float = DISK_TEST_MAX_S
) -> tuple[Check, Check]:
    """Sequential write (+ fsync) and read of a scratch file in ``cache_dir``; removed after.

    Writes incompressible 4 MiB blocks until ``nbytes`` or ``max_s``, fsyncs (both timed),
    drops the file from the page cache (``posix_fadvise(DONTNEED)``), measures with
    ``mincore`` how much of it is still cached, then reads it back sequentially (timed).
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        detail = f"cannot create {cache_dir}: {exc.strerror or exc}"
        return Check("disk-write", "fail", detail=detail), Check(
            "disk-read", "skip", detail="nothing written"
        )
    _remove_stale_scratch(cache_dir)
    free = shutil.disk_usage(cache_dir).free
    if free < 2 * nbytes:
        detail = f"only {fmt_bytes(free)} free: no room for a {fmt_bytes(nbytes)} test file"
        return Check("disk-write", "skip", detail=detail), Check("disk-read", "skip", detail=detail)
    path = cache_dir / f"{_SCRATCH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    block = memoryview(os.urandom(min(_DISK_BLOCK, nbytes)))
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            return Check(
                "disk-write", "fail", detail=f"cannot write in {cache_dir}: {exc.strerror or exc}"
            ), Check("disk-read", "skip", detail="nothing written")
        try:
            written = 0
            start = time.perf_counter()
            while written < nbytes and time.perf_counter() - start < max_s:
                chunk = block[: nbytes - written]
                _write_all(fd, chunk)
                written += len(chunk)
            os.fsync(fd)
            write_s = time.perf_counter() - start
        except OSError as exc:
            return Check(
                "disk-write", "fail", detail=f"writing in {cache_dir}: {exc.strerror or exc}"
            ), Check("disk-read", "skip", detail="write failed")
        finally:
            os.close(fd)
        write = Check(
            "disk-write",
            "ok",
            written / write_s if write_s > 0 else None,
            "B/s",
            f"wrote {fmt_bytes(written)} in {len(block) // (1024 * 1024) or 1} MiB blocks "
            f"and fsync'd in {write_s:.2f} s",
        )
        return write, _read_back(path, written)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _read_back(path: Path, size: int) -> Check:
    from modelget.loadtest import cached_fraction

    fd = os.open(path, os.O_RDONLY)
    try:
        dropped = hasattr(os, "posix_fadvise")
        if dropped:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            cached = cached_fraction([path])
        except OSError:
            cached = None
        buf = bytearray(_DISK_BLOCK)
        got = 0
        start = time.perf_counter()
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            got += n
        read_s = time.perf_counter() - start
    except OSError as exc:
        return Check("disk-read", "fail", detail=f"reading back: {exc.strerror or exc}")
    finally:
        os.close(fd)
    how = "page cache dropped first (posix_fadvise DONTNEED)" if dropped else "page cache kept"
    if cached is not None:
        how += f"; {cached * 100:.0f}% of it was still cached"
        if cached > 0.5:
            how += ", so this mostly measures memory, not the disk"
    return Check(
        "disk-read",
        "ok",
        got / read_s if read_s > 0 and got == size else None,
        "B/s",
        f"read {fmt_bytes(got)} back in {read_s:.2f} s; {how}",
    )


def check_aria2c() -> Check:
    from modelget.engines import aria2c_path

    path = aria2c_path()
    if path is None:
        return Check("aria2c", "warn", detail="not installed: pulls use the built-in httpx engine")
    from modelget.engines.aria2 import aria2_version

    version = aria2_version()
    if version is None:
        return Check(
            "aria2c",
            "fail",
            detail=f"{path} does not run (`aria2c --version` failed): pulls with the default "
            "engine fail; fix it or use --engine httpx",
        )
    return Check("aria2c", "ok", version, "", path)


def check_gpu() -> Check:
    """The GPUs torch sees; torch is imported only when it is installed."""
    if importlib.util.find_spec("torch") is None:
        return Check(
            "gpu",
            "skip",
            detail="torch is not installed (modelget[torch] for GPU load tests)",
        )
    try:
        import torch
    except Exception as exc:  # a broken torch install raises all sorts of errors on import
        return Check("gpu", "warn", detail=f"torch is installed but does not import: {exc}")
    version = getattr(torch, "__version__", "?")
    if not torch.cuda.is_available():
        return Check(
            "gpu", "ok", 0, "", f"torch {version} sees no CUDA device: load tests run on the CPU"
        )
    count = int(torch.cuda.device_count())
    names = ", ".join(str(torch.cuda.get_device_name(i)) for i in range(count))
    return Check("gpu", "ok", count, "", f"{names} (torch {version}, CUDA {torch.version.cuda})")


# --- the run --------------------------------------------------------------------------------


def _guarded(slot: _Slot, work: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except Exception as exc:  # a diagnostic reports its own bugs instead of dying
            slot.fail_current(f"unexpected error: {_http_error(exc)}")
        finally:
            slot.finished = time.perf_counter()

    return run


#: The client library each source kind imports on its first call: loaded before the clocks
#: start, so a mirror's metadata time is the network's, not the import's.
_CLIENT_MODULES = {"hf": "huggingface_hub.hf_api", "modelscope": "modelscope_hub"}


def _preload(kinds: set[str]) -> None:
    import httpx  # noqa: F401  (every mirror's HTTP checks use it)

    for kind in kinds:
        if kind in _CLIENT_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(_CLIENT_MODULES[kind])


def run(
    mirrors: Sequence[Mirror],
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    cache_dir: Path,
    timeout: float = 5.0,
    budget_s: float | None = None,
    disk_test_bytes: int = DISK_TEST_BYTES,
) -> DoctorReport:
    """Run every check at once; the whole run lasts at most ``budget_s`` (default
    ``2 * timeout + 2``). A check still waiting at the deadline fails ("no answer"); its
    thread is left to finish on its own (daemon)."""
    budget = budget_s if budget_s is not None else 2 * timeout + 2
    start = time.perf_counter()
    _preload({m.kind for m in mirrors})
    jobs: list[tuple[_Slot, Callable[[], None]]] = []
    mirror_slots: list[tuple[Mirror, _Slot]] = []
    for mirror in mirrors:
        slot = _Slot(MIRROR_CHECKS)
        mirror_slots.append((mirror, slot))
        jobs.append(
            (slot, functools.partial(check_mirror, mirror, repo_id, revision, timeout, slot))
        )

    basics = _Slot(("disk-free", "filesystem", "memory", "cpus"))

    def do_basics() -> None:
        basics.put(check_disk_free(cache_dir))
        basics.put(check_filesystem(cache_dir))
        basics.put(check_memory())
        basics.put(check_cpus())

    disk = _Slot(("disk-write", "disk-read"))

    def do_disk() -> None:
        for check in check_disk(cache_dir, disk_test_bytes):
            disk.put(check)

    aria = _Slot(("aria2c",))
    gpu = _Slot(("gpu",))
    jobs += [
        (basics, do_basics),
        (disk, do_disk),
        (aria, lambda: aria.put(check_aria2c())),
        (gpu, lambda: gpu.put(check_gpu())),
    ]
    threads = [
        threading.Thread(target=_guarded(slot, work), name="modelget-doctor", daemon=True)
        for slot, work in jobs
    ]
    for t in threads:
        t.start()
    deadline = start + budget
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))

    reports = [
        MirrorReport(
            m.name,
            m.kind,
            m.endpoint,
            slot.result(budget),
            (slot.finished or time.perf_counter()) - slot.started,
        )
        for m, slot in mirror_slots
    ]
    manifest = next((s.manifest for _, s in mirror_slots if s.manifest is not None), None)
    local = basics.result(budget) + disk.result(budget) + aria.result(budget) + gpu.result(budget)
    report = DoctorReport(
        repo_id=repo_id,
        revision=revision,
        cache_dir=str(cache_dir),
        mirrors=reports,
        local=sorted(local, key=lambda c: LOCAL_CHECKS.index(c.name)),
        repo_bytes=sum(f.size for f in manifest.files) if manifest else None,
        repo_files=len(manifest.files) if manifest else None,
        budget_s=budget,
    )
    free = report.local_check("disk-free")
    if free is not None and free.status != "fail" and isinstance(free.value, int):
        free.status = space_status(free.value, report.repo_bytes)
        if free.status == "fail" and report.repo_bytes is not None:
            free.detail += f"; {repo_id} needs {fmt_bytes(report.repo_bytes)}"
    report.elapsed_s = time.perf_counter() - start
    report.verdict = verdict(report)
    return report


__all__ = [
    "Check",
    "DoctorReport",
    "Finding",
    "MirrorReport",
    "Verdict",
    "run",
    "space_status",
    "verdict",
]
