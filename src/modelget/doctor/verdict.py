"""The verdict, pure: what is wrong in plain words, and which link is the slowest.

:func:`verdict` reads a :class:`~modelget.doctor.report.DoctorReport` and calls one finder per
topic, each a small function of records (no I/O, no clock), in the order the findings are
shown:

- :func:`pull_mirrors`: which mirrors a pull would use (reachable, and with the repo);
- :func:`mirror_findings`: none enabled / none reachable, the repo on no reachable mirror;
- :func:`space_findings`: free space at the cache against the repo's size;
- :func:`slowest_link`: the mirror a pull would wait on longest, and the fastest;
- :func:`disk_vs_network`: the cache disk's write rate against the mirrors' throughput;
- :func:`mirror_notes`: one dead mirror among live ones, no Range, the repo missing on some;
- :func:`machine_findings`: an unusable cache, aria2c, the cache's filesystem, memory.

The thresholds the machine checks judge by (:func:`space_status`, :func:`fs_status`,
:func:`memory_status`) live here too, so a check and the verdict never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelget.doctor.report import (
    Check,
    DoctorReport,
    Finding,
    Level,
    MirrorReport,
    Status,
    Verdict,
)
from modelget.sizes import fmt_bytes, fmt_rate, fmt_seconds

LOW_FREE_BYTES = 1_000_000_000
LOW_MEMORY_BYTES = 1_000_000_000
SLOW_TTFB_S = 1.0

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

_REPO_WORDS = {
    "no-repo": "does not have it",
    "auth": "needs a token for it",
    "rate-limited": "is rate limiting",
    "down": "did not answer the metadata call",
    "error": "failed the metadata call",
}


# --- what a check's status is (used by the machine checks) ----------------------------------


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS


def space_status(free: int | None, repo_bytes: int | None) -> Status:
    """Free space at the cache: fail below the repo's size, warn below 1 GB."""
    if free is None:
        return "skip"
    if repo_bytes is not None and free < repo_bytes:
        return "fail"
    return "warn" if free < LOW_FREE_BYTES else "ok"


def fs_status(fstype: str) -> Status:
    """A cache in memory or on a network filesystem is worth a warning."""
    return "warn" if fstype in MEMORY_FS or is_network_fs(fstype) else "ok"


def memory_status(available: int) -> Status:
    return "warn" if available < LOW_MEMORY_BYTES else "ok"


# --- reading the records --------------------------------------------------------------------


def _num(check: Check | None) -> float | None:
    if check is None:
        return None
    v = check.value
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def reachable(m: MirrorReport) -> bool:
    """Connected, (TLS where https) and got an HTTP answer."""
    tcp, tls, ttfb, repo = m.get("tcp"), m.get("tls"), m.get("ttfb"), m.get("repo")
    if tcp is None or tcp.status != "ok":
        return False
    if tls is not None and tls.status == "fail":
        return False
    answered = ttfb is not None and ttfb.status in ("ok", "warn")
    return answered or (repo is not None and repo.status in ("ok", "warn"))


def first_failure(m: MirrorReport) -> str:
    """The mirror's first failed check, as ``name: detail``."""
    for c in m.checks:
        if c.status == "fail":
            return f"{c.name}: {c.detail}" if c.detail else c.name
    return "no answer"


def _repo_word(m: MirrorReport) -> str:
    c = m.get("repo")
    return _REPO_WORDS.get(str(c.value if c else ""), "error")


@dataclass(frozen=True)
class PullMirrors:
    """The mirrors as a pull would see them. ``candidates``: the ones it would use (reachable,
    and with the repo when one is given); ``lacking``: reachable, without the repo."""

    reachable: tuple[MirrorReport, ...]
    unreachable: tuple[MirrorReport, ...]
    candidates: tuple[MirrorReport, ...]
    lacking: tuple[MirrorReport, ...] = field(default=())


def pull_mirrors(mirrors: Sequence[MirrorReport], repo_id: str | None) -> PullMirrors:
    live = tuple(m for m in mirrors if reachable(m))
    dead = tuple(m for m in mirrors if not reachable(m))
    if repo_id is None or not live:
        return PullMirrors(live, dead, live)
    has = tuple(m for m in live if (c := m.get("repo")) and c.status == "ok")
    return PullMirrors(live, dead, has, tuple(m for m in live if m not in has))


# --- the finders ----------------------------------------------------------------------------


def mirror_findings(
    mirrors: Sequence[MirrorReport], pool: PullMirrors, repo_id: str | None
) -> list[Finding]:
    """Blocking problems with the mirrors: none enabled, none reachable, the repo on none."""
    if not mirrors:
        code = "no-mirror-enabled"
        message = (
            "No mirror is enabled in the catalogue: enable one (enabled: true), see "
            "docs/mirrors.md."
        )
    elif not pool.reachable:
        code = "no-mirror-reachable"
        reasons = "; ".join(f"{m.name} ({first_failure(m)})" for m in pool.unreachable)
        message = (
            f"No mirror is reachable: {reasons}. Check the network, the proxy settings and "
            "the endpoints in the catalogue (`modelget mirrors`)."
        )
    elif repo_id is not None and not pool.candidates:
        code = "repo-missing"
        reasons = "; ".join(f"{m.name} ({_repo_word(m)})" for m in pool.reachable)
        message = (
            f"{repo_id} is on no reachable mirror: {reasons}. Check the repo id (and "
            "--revision), set the token a mirror needs, or add a mirror that has it."
        )
    else:
        return []
    return [Finding("fail", code, message)]


def space_findings(
    free_bytes: float | None, repo_id: str | None, repo_bytes: int | None, cache_dir: str
) -> list[Finding]:
    """Less free space at the cache than the repo needs (fail), or under 1 GB (warn)."""
    if free_bytes is None:
        return []
    if repo_id is not None and repo_bytes is not None:
        if free_bytes >= repo_bytes:
            return []
        return [
            Finding(
                "fail",
                "disk-space",
                f"Only {fmt_bytes(free_bytes)} free at the cache ({cache_dir}); {repo_id} is "
                f"{fmt_bytes(repo_bytes)}. Free some space or pull with --cache-dir / "
                "--local-dir on a bigger disk.",
            )
        ]
    if free_bytes < LOW_FREE_BYTES:
        return [
            Finding(
                "warn",
                "disk-space-low",
                f"Only {fmt_bytes(free_bytes)} free at the cache ({cache_dir}).",
            )
        ]
    return []


def mirror_rates(candidates: Sequence[MirrorReport]) -> tuple[dict[str, float], dict[str, float]]:
    """``(ttfb by mirror, throughput by mirror)`` of the candidates that answered in time."""
    ttfb = {m.name: t for m in candidates if (t := _num(m.get("ttfb"))) is not None}
    rates = {m.name: r for m in candidates if m.name in ttfb and (r := _num(m.get("throughput")))}
    return ttfb, rates


def slowest_link(
    ttfb: Mapping[str, float],
    rates: Mapping[str, float],
    repo_bytes: int | None,
    repo_id: str | None,
) -> tuple[str | None, list[Finding]]:
    """The mirror a pull would wait on longest and the sentence that names it.

    A mirror's time is its TTFB plus, when every mirror has a throughput sample, the repo's
    size over its throughput: the time to get the repo from it alone. The sentence names the
    figure that dominates the slowest mirror's time."""
    if not ttfb:
        return None, []
    size = float(repo_bytes or 0)
    by_rate = len(rates) == len(ttfb) and size > 0

    def cost(name: str) -> float:
        return ttfb[name] + (size / rates[name] if by_rate else 0.0)

    worst, best = max(ttfb, key=cost), min(ttfb, key=cost)
    if len(ttfb) == 1:
        what = f"has {repo_id}" if repo_id else "answers"
        facts = f"TTFB {fmt_seconds(ttfb[worst])}"
        if worst in rates:
            facts += f", {fmt_rate(rates[worst])}"
        return worst, [
            Finding("info", "slowest-mirror", f"Only one mirror {what}: {worst} ({facts}).")
        ]
    by_bytes = by_rate and size / rates[worst] > ttfb[worst]

    def why(name: str) -> str:
        return fmt_rate(rates[name]) if by_bytes else f"TTFB {fmt_seconds(ttfb[name])}"

    level: Level = "warn" if ttfb[worst] >= SLOW_TTFB_S else "info"
    message = (
        f"Slowest link: mirror {worst} ({why(worst)}; fastest: {best}, {why(best)}). A pull "
        "spreads the work over every mirror that has the files and moves segments off a slow one."
    )
    return worst, [Finding(level, "slowest-mirror", message)]


def disk_vs_network(
    write: float | None, rates: Mapping[str, float]
) -> tuple[bool | None, list[Finding]]:
    """Whether the cache disk limits pulls (None: not measured), and the sentence."""
    if write is None or not rates:
        return None, []
    top_name, top = max(rates.items(), key=lambda kv: kv[1])
    combined = sum(rates.values())
    if write < top:
        return True, [
            Finding(
                "warn",
                "disk-limits",
                f"Cache disk writes {fmt_rate(write)}, below the best mirror's {fmt_rate(top)} "
                f"({top_name}): the disk will limit pulls.",
            )
        ]
    if len(rates) > 1 and write < combined:
        return False, [
            Finding(
                "info",
                "disk-may-limit",
                f"Cache disk writes {fmt_rate(write)}: faster than the best mirror ({top_name}, "
                f"{fmt_rate(top)}), slower than all {len(rates)} mirrors together "
                f"({fmt_rate(combined)}); a pull from all of them may wait on the disk.",
            )
        ]
    return False, [
        Finding(
            "info",
            "network-limits",
            f"Cache disk writes {fmt_rate(write)}, faster than the mirrors ({fmt_rate(combined)} "
            "together): the network is the limit, not the disk.",
        )
    ]


def mirror_notes(pool: PullMirrors, repo_id: str | None) -> list[Finding]:
    """What does not block a pull: a dead mirror among live ones, a mirror without Range, a
    mirror without the repo while others have it."""
    out: list[Finding] = []
    if pool.reachable:
        out += [
            Finding(
                "warn",
                "mirror-unreachable",
                f"Mirror {m.name} is unreachable ({first_failure(m)}); pulls use the others.",
            )
            for m in pool.unreachable
        ]
    out += [
        Finding(
            "warn",
            "no-range",
            f"Mirror {m.name} ignores Range requests: no parallel segments and no resume from it.",
        )
        for m in pool.candidates
        if (rng := m.get("range")) is not None and rng.status == "warn"
    ]
    if pool.candidates:
        out += [
            Finding(
                "info",
                "repo-not-on-mirror",
                f"Mirror {m.name} {_repo_word(m)}: {repo_id} comes from the others.",
            )
            for m in pool.lacking
        ]
    return out


def machine_findings(local: Sequence[Check], cache_dir: str) -> list[Finding]:
    """This machine: failed local checks, aria2c missing, the cache's filesystem, memory."""
    out: list[Finding] = []
    for c in local:
        if c.name == "disk-free" or c.status != "fail":
            continue
        if c.name in ("disk-write", "disk-read"):
            message = (
                f"Cannot use the cache at {cache_dir}: {c.detail}. Pulls will fail there: fix "
                "the permissions or pull with --cache-dir."
            )
            out.append(Finding("fail", "cache-not-writable", message))
        else:
            out.append(Finding("fail", f"{c.name}-failed", f"{c.name}: {c.detail}"))
    checks = {c.name: c for c in local}
    aria = checks.get("aria2c")
    if aria is not None and aria.status == "warn":
        message = (
            "aria2c is not installed: pulls fall back to the built-in httpx engine. Install "
            "aria2 (apt-get install aria2, brew install aria2) for the default engine."
        )
        out.append(Finding("warn", "aria2c-missing", message))
    fs = checks.get("filesystem")
    if fs is not None and isinstance(fs.value, str):
        out += _filesystem_findings(fs.value)
    mem = checks.get("memory")
    if mem is not None and mem.status == "warn":
        out.append(Finding("warn", "low-memory", f"Little memory is free: {mem.detail}."))
    return out


def _filesystem_findings(fstype: str) -> list[Finding]:
    if fstype in MEMORY_FS:
        message = (
            f"The cache is on {fstype}: models live in RAM (counted against memory) and are "
            "gone at reboot."
        )
        return [Finding("warn", "cache-in-memory", message)]
    if is_network_fs(fstype):
        message = (
            f"The cache is on {fstype}, a network filesystem: every byte written (and every "
            "later load) crosses the network again; a local disk is usually faster."
        )
        return [Finding("warn", "cache-on-network-fs", message)]
    return []


# --- the verdict ----------------------------------------------------------------------------


def verdict(report: DoctorReport) -> Verdict:
    """What is wrong, in plain words, and which link is the slowest. Pure: reads the report."""
    repo = report.repo_id
    pool = pull_mirrors(report.mirrors, repo)
    findings = mirror_findings(report.mirrors, pool, repo)
    free = _num(report.local_check("disk-free"))
    findings += space_findings(free, repo, report.repo_bytes, report.cache_dir)
    ttfb, rates = mirror_rates(pool.candidates)
    slowest, found = slowest_link(ttfb, rates, report.repo_bytes, repo)
    findings += found
    disk_limits, found = disk_vs_network(_num(report.local_check("disk-write")), rates)
    findings += found
    findings += mirror_notes(pool, repo)
    findings += machine_findings(report.local, report.cache_dir)
    failed = bool(report.failed) or any(f.level == "fail" for f in findings)
    if not failed and not any(f.level == "warn" for f in findings):
        findings.append(Finding("info", "healthy", "No problem found."))
    return Verdict(
        ok=not failed,
        findings=tuple(findings),
        slowest_mirror=slowest,
        disk_limits=disk_limits,
    )
