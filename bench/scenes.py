"""The scenes of issue #6 (S1–S8) and the physical ceilings, each a function of a Bench.

Every scene returns a :class:`SceneResult`: how it was set up, the exact command lines, a
Markdown table of medians with ratios next to the raw numbers, and headline numbers with the
targets they are measured against. Runs of different tools are interleaved (run 1 of every
tool, then run 2, ...) so that a change of background load hits them all alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import peers, procs
from bench.faults import s11
from bench.harness import Bench, Run
from bench.results import ENGINES, Headline, SceneResult
from bench.sites import BenchRepo, Site, catalogue_yaml
from bench.stats import (
    Summary,
    Target,
    fastest_peer,
    fmt_bytes,
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    fmt_s,
    markdown_table,
    median,
    ratio,
)
from bench.swarm import s12
from modelget.testing.hubsim import Fault
from modelget.testing.nginx import NginxServer, find_free_port

PEER_LABELS = (
    peers.HF_HUB_LABEL,
    peers.HFD_LABEL,
    peers.RAW_ARIA2C_LABEL,
    peers.HF_TRANSFER_LABEL,
    peers.CURL_LABEL,
)
RIVALS = PEER_LABELS[:4]
"""The peers the issue-14 targets name (modelget ≤ 1.05× the fastest of them). Sequential curl
runs as a reference only: it verifies nothing and writes plain files, and on loopback a single
stream into the page cache is the machine's ceiling, not a downloader to beat."""


Maker = Callable[[Path], peers.Invocation]


def _mb(rate: int) -> str:
    return f"{rate / 1e6:g} MB/s"


def _ok_times(runs: Sequence[Run], case: str, tool: str) -> list[float]:
    return [r.wall_s for r in runs if r.case == case and r.tool == tool and r.ok]


def _all(runs: Sequence[Run], case: str, tool: str) -> list[Run]:
    return [r for r in runs if r.case == case and r.tool == tool]


def _fails(runs: Sequence[Run]) -> str:
    bad = [r for r in runs if not r.ok and r.killed_at_s is None]
    return f"{len(bad)} failed: {bad[0].error}" if bad else ""


def _rss(runs: Sequence[Run], role: str) -> float:
    vals = [float(r.peak_rss[role]) for r in runs if role in r.peak_rss]
    return max(vals) if vals else math.nan


def _display(b: Bench, inv: peers.Invocation, repo: BenchRepo) -> str:
    text = peers.short_display(inv, repo)
    return text.replace(str(b.work), "$WORK").replace(os.path.dirname(os.__file__), "$PYLIB")


def _modelget_maker(
    b: Bench,
    repo: BenchRepo,
    catalogue: Path,
    engine: str,
    variant: str = "",
    extra: Sequence[str] = (),
) -> Maker:
    def make(dest: Path) -> peers.Invocation:
        inv = peers.modelget(
            repo, catalogue, dest, engine=engine, env=b.env, probe_cache=b.fresh("probe-cache"),
            extra=extra,
        )  # fmt: skip
        if variant:
            inv.tool = f"modelget ({engine}),{variant}"
        return inv

    return make


def _peer_makers(b: Bench, repo: BenchRepo, site: Site) -> list[tuple[str, Maker]]:
    """Every peer, downloading ``repo`` from ``site`` (hf_transfer only when installed)."""
    inp = b.work / "aria2-input.txt"
    listing = b.work / "hf-transfer-input.json"
    makers: list[tuple[str, Maker]] = [
        (peers.HF_HUB_LABEL, lambda d: peers.hf_hub(repo, site, d, env=b.env)),
        (
            peers.HFD_LABEL,
            lambda d: peers.aria2c(
                repo, site, d, connections=4, env=b.env, input_file=inp, label=peers.HFD_LABEL
            ),
        ),
        (
            peers.RAW_ARIA2C_LABEL,
            lambda d: peers.raw_aria2c(repo, site, d, env=b.env, input_file=inp),
        ),
    ]
    if b.hf_transfer_missing is None:
        makers.append(
            (
                peers.HF_TRANSFER_LABEL,
                lambda d: peers.hf_transfer(repo, site, d, env=b.env, input_file=listing),
            )
        )
    makers.append((peers.CURL_LABEL, lambda d: peers.curl(repo, site, d, env=b.env)))
    return makers


def _peer_setup(b: Bench, sites: Sequence[Site]) -> list[str]:
    """Setup lines every scene with peers states: the sites' checked topology, and whether
    hf_transfer ran."""
    lines = [
        "Topology, checked when each site started (an LFS file's resolve answered 302 to the "
        "CDN, the CDN served the blob, a small file's resolve answered 200, nginx's "
        "`limit_rate` is the one asked for): " + "; ".join(s.topology for s in sites) + "."
    ]
    if b.hf_transfer_missing is not None:
        lines.append(f"hf_transfer did not run: {b.hf_transfer_missing}.")
    return lines


def _vs_peers(
    scene: str, case: str, med: dict[str, float], *, capped: bool, tools: Sequence[str] = ()
) -> list[Headline]:
    """The issue-14 headlines of one case: each engine's time ÷ the fastest peer's (≤ 1.05)
    and, on a per-connection-capped CDN, ÷ raw aria2c -x16 (≤ 0.7)."""
    out = []
    name, best = fastest_peer(med, RIVALS)
    raw = med.get(peers.RAW_ARIA2C_LABEL, math.nan)
    prefix = f"{case}: " if case else ""
    for tool in tools or [f"modelget ({e})" for e in ENGINES]:
        e = tool[len("modelget (") :].split(")", 1)[0]
        x = ratio(med.get(tool, math.nan), best)
        out.append(
            Headline(
                scene,
                f"{prefix}{e} ÷ fastest peer",
                x,
                fmt_ratio(x),
                Target("<=", 1.05),
                f"fastest peer: {name}" if name else "no peer ran",
            )
        )
        if capped:
            y = ratio(med.get(tool, math.nan), raw)
            out.append(
                Headline(
                    scene,
                    f"{prefix}{e} ÷ raw aria2c -x16 (per-connection cap)",
                    y,
                    fmt_ratio(y),
                    Target("<=", 0.7),
                    "issue 14: clearly faster than a fixed-connection peer",
                )
            )
    return out  # fmt: skip


def _interleaved(
    b: Bench,
    scene: str,
    case: str,
    makers: Sequence[tuple[str, Maker]],
    sites: Sequence[Site],
    repo: BenchRepo,
    *,
    shaped: bool,
    cold: bool = False,
    commands: dict[str, str] | None = None,
    runs_of: dict[str, int] | None = None,
) -> None:
    for r in range(b.profile.runs):
        for label, make in makers:
            if runs_of is not None and r >= runs_of.get(label, r + 1):
                continue
            inv = make(b.fresh("dest"))
            if commands is not None and inv.tool not in commands:
                commands[inv.tool] = _display(b, inv, repo)
            b.measure(scene, case, r, inv, sites, repo, shaped=shaped, cold=cold)
    b.clean()


# --------------------------------------------------------------------------------------------
# Ceilings
# --------------------------------------------------------------------------------------------


def ceilings(b: Bench) -> SceneResult:
    res = SceneResult("C", "Physical ceilings of this machine, measured in the same run")
    runs = b.profile.runs
    biggest = max(b.big.files, key=lambda f: f.size)
    rows: list[list[str]] = []

    # Loopback: nginx (sendfile) to curl writing to /dev/null.
    with NginxServer(b.big.directory, name="bench-ceiling") as ngx:
        url = f"{ngx.url}/{biggest.path}"
        urls = [f"{ngx.url}/{f.path}" for f in b.big.files if f.path.startswith("model-")][:4]
        for label, targets in (("1 connection", [url]), (f"{len(urls)} connections", urls)):
            rates = []
            for _ in range(runs):
                t0 = time.perf_counter()
                procs_ = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", u]) for u in targets]
                for p in procs_:
                    p.wait()
                dt = time.perf_counter() - t0
                total = sum(f.size for f in b.big.files if f"{ngx.url}/{f.path}" in targets)
                rates.append(total / dt)
            s = Summary.of(rates)
            rows.append(
                [
                    f"loopback, nginx → curl → /dev/null, {label}",
                    fmt_rate(s.median),
                    f"{fmt_rate(s.low)} – {fmt_rate(s.high)}",
                ]
            )
            res.headlines.append(Headline("C", f"loopback {label}", s.median, fmt_rate(s.median)))
    res.commands["loopback"] = "curl -s -o /dev/null http://127.0.0.1:PORT/SHARD (nginx sendfile)"

    # sha256 on one core.
    buf = os.urandom(8 * 1024 * 1024)
    rates = []
    for _ in range(runs):
        h = hashlib.sha256()
        t0 = time.perf_counter()
        for _ in range(128):
            h.update(buf)
        rates.append(128 * len(buf) / (time.perf_counter() - t0))
    s = Summary.of(rates)
    rows.append(
        [
            "sha256, one core (hashlib, 1 GiB)",
            fmt_rate(s.median),
            f"{fmt_rate(s.low)} – {fmt_rate(s.high)}",
        ]
    )
    res.headlines.append(Headline("C", "sha256 one core", s.median, fmt_rate(s.median)))

    # Sequential write to the cache disk (fsync at the end), and the page cache alone.
    for label, do_sync in (
        ("sequential write + fsync, cache disk", True),
        ("write to page cache (no fsync)", False),
    ):
        rates = []
        for _ in range(runs):
            target = b.work / "ceiling-write.bin"
            t0 = time.perf_counter()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for _ in range(256):
                    os.write(fd, buf)
                if do_sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            rates.append(256 * len(buf) / (time.perf_counter() - t0))
            target.unlink()
            os.sync()
        s = Summary.of(rates)
        rows.append(
            [f"{label} (2 GiB)", fmt_rate(s.median), f"{fmt_rate(s.low)} – {fmt_rate(s.high)}"]
        )
        res.headlines.append(Headline("C", label, s.median, fmt_rate(s.median)))

    # Sequential read from the disk (cold page cache): what cold S2 runs stand on.
    rates = []
    for _ in range(runs):
        from bench.harness import _evict

        _evict([biggest.source])
        t0 = time.perf_counter()
        with biggest.source.open("rb", buffering=0) as fh:
            while fh.read(8 * 1024 * 1024):
                pass
        rates.append(biggest.size / (time.perf_counter() - t0))
    s = Summary.of(rates)
    rows.append(
        [
            "sequential read, cold page cache",
            fmt_rate(s.median),
            f"{fmt_rate(s.low)} – {fmt_rate(s.high)}",
        ]
    )
    res.headlines.append(Headline("C", "disk read cold", s.median, fmt_rate(s.median)))

    # The shaped link: what a many-connection client gets through the S1 link.
    if b.link is not None:
        link_rate = b.profile.s1_big_link
        with NginxServer(
            b.big.directory,
            port=(port := find_free_port()),
            name="bench-ceiling-link",
            extra_config=f"        listen {b.link.host_ip}:{port};\n",
        ):
            b.link.shape(link_rate)
            rates = []
            shards = [f for f in b.big.files if f.path.startswith("model-")][:4]
            for _ in range(runs):
                t0 = time.perf_counter()
                ps = [
                    subprocess.Popen(
                        b.link.wrap(
                            [
                                "curl",
                                "-s",
                                "-o",
                                "/dev/null",
                                f"http://{b.link.host_ip}:{port}/{f.path}",
                            ]
                        )
                    )
                    for f in shards
                ]
                for p in ps:
                    p.wait()
                rates.append(sum(f.size for f in shards) / (time.perf_counter() - t0))
            b.link.unshape()
        s = Summary.of(rates)
        rows.append(
            [
                f"shaped link (htb {_mb(link_rate)}), 4 curls through the veth",
                fmt_rate(s.median),
                f"{fmt_rate(s.low)} – {fmt_rate(s.high)}",
            ]
        )
        res.headlines.append(Headline("C", "shaped link", s.median, fmt_rate(s.median)))
    res.tables.append(markdown_table(["ceiling", "median", "range"], rows, "lrr"))
    return res


# --------------------------------------------------------------------------------------------
# S1: per-connection-capped CDN
# --------------------------------------------------------------------------------------------


def s1(b: Bench) -> SceneResult:
    res = SceneResult("S1", "Per-connection-capped CDN: modelget against its peers")
    if b.link is None:
        res.skipped = "needs the shaped link (root and iproute2)"
        return res
    p = b.profile
    cases = (
        ("synthetic", b.big, p.s1_big_conn, p.s1_big_link),
        ("MiniLM", b.small, p.s1_small_conn, p.s1_small_link),
    )
    for case, repo, conn, link in cases:
        _capped_case(b, res, "S1", case, repo, conn, link, sixteen=True)
    return res


def _capped_case(
    b: Bench,
    res: SceneResult,
    scene: str,
    case: str,
    repo: BenchRepo,
    conn: int,
    link: int,
    *,
    sixteen: bool,
) -> None:
    """One model through one site whose CDN caps each connection at ``conn``, behind a link
    capped at ``link``: both engines (and, with ``sixteen``, both at 16 connections per
    mirror) and every peer, interleaved; table and headlines into ``res``."""
    p = b.profile
    big = case == "synthetic"
    res.setup.append(
        f"**{case}** ({len(repo.files)} files, {fmt_bytes(repo.size)}): nginx `limit_rate` "
        f"{_mb(conn)} per connection, link capped at {_mb(link)} (htb on the veth); "
        "clients in the network namespace, warm page cache on the server."
        + (
            " *16/mirror*: the same pull with `max_connections: 16` in the catalogue entry "
            "(the default is 8)."
            if sixteen
            else ""
        )
        + (
            " Sequential curl: one run (it moves at exactly the per-connection cap)."
            if big and p.runs > 1
            else ""
        )
    )
    with b.sites(["cdn"], [repo], shaped=True, limit_rate=conn) as (site,):
        assert b.link is not None
        b.link.shape(link)
        res.setup.extend(x for x in _peer_setup(b, [site]) if x not in res.setup)
        res.commands[f"link shaping, {case} (tc)"] = "\n".join(b.link.commands)
        cat = b.work / f"mirrors-{scene.lower()}.yaml"
        cat.write_text(catalogue_yaml([site]))
        makers: list[tuple[str, Maker]] = [
            (f"modelget ({e})", _modelget_maker(b, repo, cat, e)) for e in ENGINES
        ]
        if sixteen:
            cat16 = b.work / f"mirrors-{scene.lower()}-16.yaml"
            cat16.write_text(catalogue_yaml([site], max_connections=16))
            makers += [
                (f"modelget ({e}), 16/mirror", _modelget_maker(b, repo, cat16, e, " 16/mirror"))
                for e in ENGINES
            ]
        makers += _peer_makers(b, repo, site)
        # Sequential curl runs at exactly the per-connection cap (its time is the size over
        # the cap, to within a percent); on the big checkpoint one run is all it gets.
        runs_of = {peers.CURL_LABEL: 1} if big else None
        _interleaved(
            b, scene, case, makers, [site], repo, shaped=True, commands=res.commands,
            runs_of=runs_of,
        )  # fmt: skip
        b.link.unshape()
    runs = [r for r in b.runs if r.scene == scene and r.case == case]
    rows = []
    med = {label: median(_ok_times(runs, case, label)) for label, _ in makers}
    for label, _ in makers:
        rr = _all(runs, case, label)
        s = Summary.of(_ok_times(runs, case, label))
        rate = ratio(repo.size, s.median)
        rows.append(
            [
                label,
                s.text("{:.2f}", " s"),
                fmt_rate(rate),
                fmt_pct(ratio(rate, link)),
                fmt_ratio(ratio(s.median, med["modelget (aria2)"])),
                fmt_ratio(ratio(s.median, med["modelget (httpx)"])),
                fmt_bytes(median(float(r.link_bytes) for r in rr)),
                fmt_bytes(_rss(rr, "main")),
                _fails(rr),
            ]
        )
    res.tables.append(
        f"**{case}**, {_mb(conn)} per connection, link {_mb(link)}\n\n"
        + markdown_table(
            [
                "tool",
                "time: median (min–max)",
                "MB/s",
                "share of link",
                "÷ modelget aria2",
                "÷ modelget httpx",
                "bytes over the link",
                "peak RSS",
                "failures",
            ],
            rows,
            "lrrrrrrrl",
        )
    )
    if scene == "S1":
        for e in ENGINES:
            me = med[f"modelget ({e})"]
            rate = ratio(repo.size, me)
            res.headlines += [
                *([Headline("S1", f"{case}: {e} share of link", ratio(rate, link), fmt_pct(ratio(rate, link)), Target(">=", 0.95))] if big else []),
                Headline("S1", f"{case}: {e} vs huggingface_hub", ratio(med["huggingface_hub"], me), fmt_ratio(ratio(med["huggingface_hub"], me)), Target(">=", 4.0)),
                Headline("S1", f"{case}: {e} vs hfd.sh-style aria2c", ratio(med["aria2c hfd.sh-style"], me), fmt_ratio(ratio(med["aria2c hfd.sh-style"], me)), Target(">=", 1.5)),
                Headline("S1", f"{case}: {e} time ÷ raw aria2c -x16", ratio(me, med["aria2c -x16 (raw)"]), fmt_ratio(ratio(me, med["aria2c -x16 (raw)"])), Target("<=", 1.05), "mission: ≤ 1.05× raw aria2c -x16" + ("; see the note on nginx's per-request burst" if case == "MiniLM" else "")),
            ]  # fmt: skip
    else:
        for e in ENGINES:
            rate = ratio(repo.size, med[f"modelget ({e})"])
            res.headlines.append(Headline(scene, f"{case}: {e} share of link", ratio(rate, link), fmt_pct(ratio(rate, link))))  # fmt: skip
    res.headlines += _vs_peers(scene, case, med, capped=True)


# --------------------------------------------------------------------------------------------
# S2: uncapped loopback, full pull vs raw aria2c
# --------------------------------------------------------------------------------------------


def s2(b: Bench) -> SceneResult:
    res = SceneResult("S2", "Uncapped loopback: full `modelget pull` vs its peers")
    res.setup.append(
        "One site on 127.0.0.1, no cap. modelget downloads, verifies every file and lays it out "
        "in the HF cache; the peers only download the same bytes (no verification). Files "
        "land on the cache disk (page cache, not fsync'd: alike for every tool). **warm**: the "
        "server's files are in the page cache; **cold**: evicted before each run "
        "(`posix_fadvise(DONTNEED)` on those files only), so nginx reads them from disk."
    )
    cases = (
        ("synthetic, warm", b.big, False),
        ("synthetic, cold", b.big, True),
        ("MiniLM, warm", b.small, False),
    )
    for case, repo, cold in cases:
        with b.sites(["loop"], [repo], shaped=False) as (site,):
            cat = b.work / "mirrors-s2.yaml"
            cat.write_text(catalogue_yaml([site]))
            makers: list[tuple[str, Maker]] = [
                (f"modelget ({e})", _modelget_maker(b, repo, cat, e)) for e in ENGINES
            ]
            makers += _peer_makers(b, repo, site)
            for line in _peer_setup(b, [site]):
                if line not in res.setup:
                    res.setup.append(line)
            _interleaved(
                b, "S2", case, makers, [site], repo, shaped=False, cold=cold, commands=res.commands
            )
        runs = [r for r in b.runs if r.scene == "S2" and r.case == case]
        raw = median(_ok_times(runs, case, "aria2c -x16 (raw)"))
        res.headlines += _vs_peers(
            "S2", case, {label: median(_ok_times(runs, case, label)) for label, _ in makers},
            capped=False,
        )  # fmt: skip
        rows = []
        for label, _ in makers:
            rr = _all(runs, case, label)
            s = Summary.of(_ok_times(runs, case, label))
            plan = median(float(r.detail.get("plan_s", math.nan)) for r in rr if r.ok)
            transfer = median(float(r.detail.get("transfer_s", math.nan)) for r in rr if r.ok)
            rows.append(
                [
                    label,
                    s.text("{:.2f}", " s"),
                    fmt_rate(ratio(repo.size, s.median)),
                    fmt_ratio(ratio(s.median, raw)),
                    "" if math.isnan(plan) else f"{plan:.2f} s / {transfer:.2f} s",
                    fmt_bytes(_rss(rr, "main")),
                    fmt_bytes(_rss(rr, "aria2c")),
                    _fails(rr),
                ]
            )
            if label.startswith("modelget"):
                e = label[len("modelget (") : -1]
                x = ratio(s.median, raw)
                res.headlines.append(
                    Headline(
                        "S2",
                        f"{case}: {e} time ÷ raw aria2c",
                        x,
                        fmt_ratio(x),
                        Target("<=", 1.10) if case.startswith("synthetic") else Target("<=", 1.05),
                        "" if case.startswith("synthetic") else "mission: ≤ 1.05×",
                    )
                )
        res.tables.append(
            f"**{case}** ({len(repo.files)} files, {fmt_bytes(repo.size)})\n\n"
            + markdown_table(
                [
                    "tool",
                    "time: median (min–max)",
                    "MB/s",
                    "÷ raw aria2c",
                    "plan / transfer (modelget's own)",
                    "peak RSS (main)",
                    "peak RSS (aria2c)",
                    "failures",
                ],
                rows,
                "lrrrrrrl",
            )
        )
    return res


# --------------------------------------------------------------------------------------------
# S3: two capped mirrors
# --------------------------------------------------------------------------------------------


def s3(b: Bench) -> SceneResult:
    res = SceneResult("S3", "Two mirrors, each capped: pull from both vs from one")
    if b.link is None:
        res.skipped = "needs the shaped link (root and iproute2)"
        return res
    p = b.profile
    repo = b.half
    res.setup.append(
        f"{len(repo.files)} files, {fmt_bytes(repo.size)} (the first {p.half_shards} shards of "
        f"the synthetic checkpoint). Two sites, each with its own uplink capped at "
        f"{_mb(p.s3_mirror)} (an htb class per site, on both its ports), no per-connection cap, clients in the "
        "namespace. **both**: a catalogue listing both; **one**: only the first. The peers "
        "download from the first mirror alone (none of them uses two mirrors)."
    )
    with b.sites(["mirror-a", "mirror-b"], [repo], shaped=True) as sites:
        assert b.link is not None
        res.setup += _peer_setup(b, sites)
        b.link.shape(None, {s.ports: p.s3_mirror for s in sites})
        res.commands["link shaping (tc; ports of mirror-a, mirror-b)"] = "\n".join(b.link.commands)
        both = b.work / "mirrors-s3-both.yaml"
        both.write_text(catalogue_yaml(sites))
        one = b.work / "mirrors-s3-one.yaml"
        one.write_text(catalogue_yaml(sites[:1]))
        peer_makers = _peer_makers(b, repo, sites[0])
        for r in range(p.runs):
            for e in ENGINES:
                for case, cat in (("both", both), ("one", one)):
                    inv = _modelget_maker(b, repo, cat, e)(b.fresh("dest"))
                    res.commands.setdefault(f"{inv.tool}, {case}", _display(b, inv, repo))
                    b.measure("S3", f"{e}, {case}", r, inv, sites, repo, shaped=True)
            for _, make in peer_makers:
                inv = make(b.fresh("dest"))
                res.commands.setdefault(f"{inv.tool}, one", _display(b, inv, repo))
                b.measure("S3", "peers, one", r, inv, sites, repo, shaped=True)
        b.link.unshape()
        b.clean()
    runs = [r for r in b.runs if r.scene == "S3"]
    rows = []
    for e in ENGINES:
        tool = f"modelget ({e})"
        t_both = Summary.of(_ok_times(runs, f"{e}, both", tool))
        t_one = Summary.of(_ok_times(runs, f"{e}, one", tool))
        speed = ratio(t_one.median, t_both.median)
        rows.append(
            [
                tool,
                t_one.text("{:.2f}", " s"),
                t_both.text("{:.2f}", " s"),
                fmt_ratio(speed),
                fmt_pct(ratio(ratio(repo.size, t_both.median), 2 * p.s3_mirror)),
                _fails(_all(runs, f"{e}, both", tool) + _all(runs, f"{e}, one", tool)),
            ]
        )
        res.headlines.append(
            Headline(
                "S3", f"{e}: both ÷ one (speed-up)", speed, fmt_ratio(speed), Target(">=", 1.9)
            )
        )
    med = {label: median(_ok_times(runs, "peers, one", label)) for label in PEER_LABELS}
    for e in ENGINES:
        med[f"modelget ({e})"] = median(_ok_times(runs, f"{e}, both", f"modelget ({e})"))
    res.headlines += _vs_peers("S3", "both mirrors vs peers on one", med, capped=False)
    for label in PEER_LABELS:
        rr = _all(runs, "peers, one", label)
        if not rr:
            continue
        t = Summary.of(_ok_times(runs, "peers, one", label))
        rows.append(
            [
                label,
                t.text("{:.2f}", " s"),
                "",
                "",
                "",
                _fails(rr),
            ]
        )
    res.tables.append(
        markdown_table(
            [
                "tool",
                "one mirror",
                "both mirrors",
                "speed-up",
                "both: share of 2 uplinks",
                "failures",
            ],
            rows,
            "lrrrrl",
        )
    )
    return res


# --------------------------------------------------------------------------------------------
# S4: a mirror dies halfway
# --------------------------------------------------------------------------------------------


def s4(b: Bench) -> SceneResult:
    res = SceneResult("S4", "A mirror dies halfway")
    if b.link is None:
        res.skipped = "needs the shaped link (root and iproute2)"
        return res
    p = b.profile
    repo = b.half
    res.setup.append(
        f"{len(repo.files)} files, {fmt_bytes(repo.size)}. Two sites behind one link capped at "
        f"{_mb(p.s4_link)} (either site alone can fill it, so the ideal fault run takes as long "
        "as the no-fault run: what is measured is the cost of the failure). **fault**: at half "
        "the no-fault median, the first-ranked site dies (its nginx gets SIGKILL: open "
        "connections end, new ones are refused; its hub stops)."
    )
    rows = []
    for e in ENGINES:
        tool = f"modelget ({e})"
        with b.sites(["mirror-a", "mirror-b"], [repo], shaped=True) as sites:
            assert b.link is not None
            b.link.shape(p.s4_link)
            res.commands.setdefault("link shaping (tc)", "\n".join(b.link.commands))
            cat = b.work / "mirrors-s4.yaml"
            cat.write_text(catalogue_yaml(sites))
            for r in range(p.runs):
                inv = _modelget_maker(b, repo, cat, e)(b.fresh("dest"))
                res.commands.setdefault(tool, _display(b, inv, repo))
                b.measure("S4", f"{e}, no fault", r, inv, sites, repo, shaped=True)
        base = median(_ok_times(b.runs, f"{e}, no fault", tool))
        if math.isnan(base):
            continue
        for r in range(p.runs):
            with b.sites(["mirror-a", "mirror-b"], [repo], shaped=True) as sites:
                assert b.link is not None
                b.link.shape(p.s4_link)
                cat = b.work / "mirrors-s4.yaml"
                cat.write_text(catalogue_yaml(sites))
                inv = _modelget_maker(b, repo, cat, e)(b.fresh("dest"))
                run = b.measure(
                    "S4", f"{e}, fault", r, inv, sites, repo, shaped=True,
                    during=sites[0].kill, during_at_s=base / 2,
                )  # fmt: skip
                run.detail["killed_site_at_s"] = base / 2
        if b.link is not None:
            b.link.unshape()
        b.clean()
        s4runs = [r for r in b.runs if r.scene == "S4"]
        t0 = Summary.of(_ok_times(s4runs, f"{e}, no fault", tool))
        t1 = Summary.of(_ok_times(s4runs, f"{e}, fault", tool))
        x = ratio(t1.median, t0.median)
        rows.append(
            [
                tool,
                t0.text("{:.2f}", " s"),
                t1.text("{:.2f}", " s"),
                fmt_ratio(x),
                _fails(_all(s4runs, f"{e}, fault", tool)) or "all succeeded",
            ]
        )
        res.headlines.append(
            Headline("S4", f"{e}: fault ÷ no fault", x, fmt_ratio(x), Target("<=", 1.3))
        )
    res.tables.append(
        markdown_table(
            ["tool", "no fault", "mirror dies at 50 %", "ratio", "fault runs"], rows, "lrrrl"
        )
    )
    return res


# --------------------------------------------------------------------------------------------
# S5: kill -9 at about 50 %, then re-run
# --------------------------------------------------------------------------------------------


def s5(b: Bench) -> SceneResult:
    res = SceneResult("S5", "kill -9 at about 50 %, then the same command again")
    if b.link is None:
        res.skipped = "needs the shaped link (root and iproute2)"
        return res
    p = b.profile
    repo = b.half
    res.setup.append(
        f"{len(repo.files)} files, {fmt_bytes(repo.size)}, one site behind a link capped at "
        f"{_mb(p.s5_link)}. One uninterrupted pull gives the time T; then, per run, a fresh "
        "pull whose whole process tree (modelget and its aria2c) gets SIGKILL at T/2, and the "
        "same command again. **re-fetched** = bytes that crossed the link in both runs − the "
        "model's size: bytes the killed run had received but the re-run did not keep, the "
        "killed run's probe sample (at most 16 MiB, thrown away) and all protocol overhead "
        "(API calls, headers) count as re-fetched. Bytes still in the server's socket "
        "buffers when the client died never crossed the link and do not count."
    )
    rows = []
    with b.sites(["cdn"], [repo], shaped=True) as (site,):
        assert b.link is not None
        b.link.shape(p.s5_link)
        res.commands["link shaping (tc)"] = "\n".join(b.link.commands)
        cat = b.work / "mirrors-s5.yaml"
        cat.write_text(catalogue_yaml([site]))
        for e in ENGINES:
            tool = f"modelget ({e})"
            inv = _modelget_maker(b, repo, cat, e)(b.fresh("dest"))
            res.commands.setdefault(tool, _display(b, inv, repo))
            base = b.measure("S5", f"{e}, uninterrupted", 0, inv, [site], repo, shaped=True)
            if not base.ok:
                continue
            waste: list[float] = []
            at_kill: list[float] = []
            rerun_s: list[float] = []
            for r in range(p.runs):
                dest = b.fresh("dest")
                probe_cache = b.fresh("probe-cache")
                first = peers.modelget(
                    repo, cat, dest, engine=e, env=b.env, probe_cache=probe_cache
                )
                k = b.measure(
                    "S5", f"{e}, killed", r, first, [site], repo, shaped=True,
                    kill_after_s=base.wall_s / 2, expect_complete=False,
                )  # fmt: skip
                again = peers.modelget(
                    repo, cat, dest, engine=e, env=b.env, probe_cache=probe_cache
                )
                r2 = b.measure("S5", f"{e}, re-run", r, again, [site], repo, shaped=True)
                if r2.ok:
                    waste.append((k.link_bytes + r2.link_bytes - repo.size) / repo.size)
                    at_kill.append(k.link_bytes / repo.size)
                    rerun_s.append(r2.wall_s)
            w = median(waste)
            rows.append(
                [
                    tool,
                    fmt_s(base.wall_s),
                    fmt_s(base.wall_s / 2),
                    fmt_pct(median(at_kill)),
                    Summary.of(rerun_s).text("{:.2f}", " s"),
                    Summary.of([100 * x for x in waste]).text("{:.1f}", " %"),
                    _fails([r for r in b.runs if r.scene == "S5" and r.tool == tool]),
                ]
            )
            res.headlines.append(
                Headline("S5", f"{e}: re-fetched", w, fmt_pct(w), Target("<=", 0.05))
            )
        b.link.unshape()
        b.clean()
    res.tables.append(
        markdown_table(
            [
                "tool",
                "uninterrupted T",
                "killed at",
                "received before the kill",
                "re-run time",
                "re-fetched (of the model)",
                "failures",
            ],
            rows,
            "lrrrrrl",
        )
    )
    return res


# --------------------------------------------------------------------------------------------
# S6: re-pull of a complete model
# --------------------------------------------------------------------------------------------


def s6(b: Bench) -> SceneResult:
    res = SceneResult("S6", "Re-pull of a complete model")
    repo = b.big
    res.setup.append(
        f"The whole synthetic checkpoint ({fmt_bytes(repo.size)}) is pulled once (not timed "
        "here), then the same command runs again. **probe cached**: right after the pull, "
        "as a user would (probe results live `MODELGET_PROBE_TTL`, 300 s); **probe expired**: "
        "`MODELGET_PROBE_TTL=0`, so the mirror is probed again (which reads a sample of up to "
        "16 MiB). Bytes are file bytes the site sent (blobs and resolve)."
    )
    rows = []
    with b.sites(["loop"], [repo], shaped=False) as (site,):
        cat = b.work / "mirrors-s6.yaml"
        cat.write_text(catalogue_yaml([site]))
        for e in ENGINES:
            tool = f"modelget ({e})"
            dest = b.fresh(f"s6-{e}")
            probe_cache = b.fresh(f"s6-probe-{e}")
            inv = peers.modelget(repo, cat, dest, engine=e, env=b.env, probe_cache=probe_cache)
            first = b.measure("S6", f"{e}, first pull", 0, inv, [site], repo, shaped=False)
            if not first.ok:
                continue
            for case, extra_env in (
                ("probe cached", {}),
                ("probe expired", {"MODELGET_PROBE_TTL": "0"}),
            ):
                for r in range(b.profile.runs):
                    again = peers.modelget(
                        repo, cat, dest, engine=e, env=b.env, probe_cache=probe_cache
                    )
                    again.env.update(extra_env)
                    res.commands.setdefault(f"{tool}, {case}", _display(b, again, repo))
                    b.measure("S6", f"{e}, {case}", r, again, [site], repo, shaped=False)
            shutil.rmtree(dest, ignore_errors=True)
        # huggingface_hub for comparison
        dest = b.fresh("s6-hf")
        inv = peers.hf_hub(repo, site, dest, env=b.env)
        first = b.measure("S6", "hf, first pull", 0, inv, [site], repo, shaped=False)
        if first.ok:
            for r in range(b.profile.runs):
                inv = peers.hf_hub(repo, site, dest, env=b.env)
                res.commands.setdefault("huggingface_hub", _display(b, inv, repo))
                b.measure("S6", "hf, again", r, inv, [site], repo, shaped=False)
        b.clean()
    runs = [r for r in b.runs if r.scene == "S6"]
    for e in ENGINES:
        tool = f"modelget ({e})"
        for case in ("probe cached", "probe expired"):
            rr = _all(runs, f"{e}, {case}", tool)
            s = Summary.of(_ok_times(runs, f"{e}, {case}", tool))
            fb = median(float(r.file_bytes) for r in rr)
            rows.append(
                [
                    f"{tool}, {case}",
                    s.text("{:.2f}", " s"),
                    fmt_bytes(fb),
                    fmt_bytes(median(float(r.api_bytes) for r in rr)),
                    f"{median(float(r.requests) for r in rr):.0f}",
                    _fails(rr),
                ]
            )
            if case == "probe cached":
                res.headlines.append(
                    Headline(
                        "S6",
                        f"{e}: re-pull time",
                        s.median,
                        fmt_s(s.median),
                        Target("<=", 1.0),
                        target_text="≤ 1 s",
                    )
                )
                res.headlines.append(
                    Headline(
                        "S6",
                        f"{e}: re-pull file bytes",
                        fb,
                        fmt_bytes(fb),
                        Target("<=", 0),
                        target_text="0 bytes",
                    )
                )
            else:
                res.headlines.append(
                    Headline(
                        "S6",
                        f"{e}: re-pull time, probe expired",
                        s.median,
                        fmt_s(s.median),
                        None,
                        f"{fmt_bytes(fb)} sent (the probe's sample)",
                    )
                )
    rr = _all(runs, "hf, again", "huggingface_hub")
    s = Summary.of(_ok_times(runs, "hf, again", "huggingface_hub"))
    rows.append(
        [
            "huggingface_hub (snapshot_download again)",
            s.text("{:.2f}", " s"),
            fmt_bytes(median(float(r.file_bytes) for r in rr)),
            fmt_bytes(median(float(r.api_bytes) for r in rr)),
            f"{median(float(r.requests) for r in rr):.0f}",
            _fails(rr),
        ]
    )
    res.tables.append(
        markdown_table(
            [
                "tool",
                "time: median (min–max)",
                "file bytes sent",
                "API bytes",
                "requests",
                "failures",
            ],
            rows,
            "lrrrrl",
        )
    )
    return res


# --------------------------------------------------------------------------------------------
# S7: probe of 4 mirrors
# --------------------------------------------------------------------------------------------


LATENCIES = (("fast", 0.01), ("mid", 0.05), ("slow", 0.15))


def s7(b: Bench) -> SceneResult:
    res = SceneResult("S7", "Probe of 4 mirrors: injected latencies, one dead")
    repo = b.small
    res.setup.append(
        "Four `hf` mirrors of MiniLM: three sites (hub simulator behind nginx, LFS on its CDN) with "
        + ", ".join(f"{n} {int(s * 1000)} ms" for n, s in LATENCIES)
        + " added to every response, and one dead mirror, listed in the catalogue in the order "
        "slow, dead, mid, fast (so catalogue order cannot pass for ranking). **dead = refused**: "
        "nothing listens on its port; **dead = black hole**: it accepts connections and never "
        "answers (the probe timeout, `MODELGET_PROBE_TIMEOUT`, default 5 s, bounds it). Right "
        "order: fast, mid, slow, then the dead one."
    )
    sims: list[Site] = []
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rows = []
    try:
        urls: dict[str, str] = {}
        for name, lat in LATENCIES:
            site = b.site(name, [repo], shaped=False)
            sims.append(site)
            site.hub.add_fault(Fault(route="*", latency_s=lat))
            urls[name] = site.url
        res.setup += _peer_setup(b, sims)[:1]
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        dead_urls = {
            "refused": f"http://127.0.0.1:{find_free_port()}",
            "black hole": f"http://127.0.0.1:{hole.getsockname()[1]}",
        }
        expected = ["fast", "mid", "slow", "dead"]
        for variant, dead_url in dead_urls.items():
            cat = b.work / "mirrors-s7.yaml"
            entries = [
                ("slow", urls["slow"]),
                ("dead", dead_url),
                ("mid", urls["mid"]),
                ("fast", urls["fast"]),
            ]
            cat.write_text(
                "version: 1\nmirrors:\n"
                + "".join(f"  - name: {n}\n    kind: hf\n    endpoint: {u}\n" for n, u in entries)
            )
            walls, elapsed, orders = [], [], []
            for r in range(b.profile.runs):
                cmd = [
                    sys.executable,
                    "-m",
                    "modelget",
                    "probe",
                    repo.repo_id,
                    "--mirrors",
                    str(cat),
                    "--json",
                ]
                env = {**b.env, "MODELGET_CACHE_DIR": str(b.fresh("probe-cache"))}
                res.commands.setdefault(
                    "modelget probe",
                    shlex.join(cmd).replace(str(b.work), "$WORK").replace(sys.executable, "python"),
                )
                m = procs.run(cmd, env=env)
                order: list[str] = []
                probe_s = math.nan
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    doc = json.loads(m.stdout)
                    probe_s = float(doc["elapsed_s"])
                    order = [str(x["mirror"]) for x in doc["mirrors"]]
                ok = m.rc == 0 and bool(order)
                run = Run(
                    "S7",
                    variant,
                    "modelget probe",
                    r,
                    m.wall_s,
                    m.rc,
                    ok,
                    "warm",
                    peak_rss=m.peak_rss,
                    load1=m.load1,
                    detail={"order": order, "probe_s": probe_s},
                    error="" if ok else m.stderr[-300:],
                )
                b.runs.append(run)
                b.say(f"  S7 {variant} #{r} {m.wall_s:6.2f} s order {order} load {m.load1:.2f}")
                walls.append(m.wall_s)
                elapsed.append(probe_s)
                orders.append(order)
            right = all(o == expected for o in orders)
            s = Summary.of(walls)
            rows.append(
                [
                    variant,
                    s.text("{:.2f}", " s"),
                    Summary.of(elapsed).text("{:.2f}", " s"),
                    " → ".join(orders[-1]) if orders else "",
                    "yes" if right else "no",
                ]
            )
            res.headlines.append(
                Headline(
                    "S7",
                    f"dead = {variant}: wall time",
                    s.median,
                    fmt_s(s.median),
                    Target("<=", 1.5),
                    target_text="≤ 1.5 s",
                )
            )
            res.headlines.append(
                Headline(
                    "S7",
                    f"dead = {variant}: right order",
                    1.0 if right else 0.0,
                    "yes" if right else "no",
                    Target(">=", 1.0),
                    target_text="yes",
                )
            )
    finally:
        for sim in sims:
            sim.close()
        hole.close()
    res.tables.append(
        markdown_table(
            [
                "dead mirror",
                "wall time (process)",
                "probe's own elapsed_s",
                "order (last run)",
                "right order",
            ],
            rows,
            "lrrll",
        )
    )
    return res


# --------------------------------------------------------------------------------------------
# S9: 8 shards + 3 small files, per-connection-capped CDN
# --------------------------------------------------------------------------------------------


def s9(b: Bench) -> SceneResult:
    p = b.profile
    res = SceneResult(
        "S9",
        f"{p.shards} × {p.shard_bytes / 1e6:g} MB shards + 3 small files, "
        f"{_mb(p.s9_conn)} per connection: modelget against its peers",
    )
    if b.link is None:
        res.skipped = "needs the shaped link (root and iproute2)"
        return res
    _capped_case(b, res, "S9", "shards", b.shards, p.s9_conn, p.s9_link, sixteen=False)
    return res


# --------------------------------------------------------------------------------------------
# S10: two mirrors of unequal speed
# --------------------------------------------------------------------------------------------


def s10(b: Bench) -> SceneResult:
    p = b.profile
    res = SceneResult(
        "S10", "Two mirrors of unequal speed: modelget on both vs every peer on the best one"
    )
    if b.link is None:
        res.skipped = "needs the shaped link (root and iproute2)"
        return res
    repo = b.shards
    ideal = p.s10_fast_uplink + p.s10_slow_uplink
    res.setup.append(
        f"{len(repo.files)} files, {fmt_bytes(repo.size)} (the S9 model). Two sites, each a hub "
        f"with its own CDN: **fast**: `limit_rate` {_mb(p.s10_fast_conn)} per connection, "
        f"uplink {_mb(p.s10_fast_uplink)}; **slow**: `limit_rate` {_mb(p.s10_slow_conn)} per "
        f"connection, uplink {_mb(p.s10_slow_uplink)} (an htb class per site on both its "
        "ports); clients in the namespace. **both mirrors**: modelget with a catalogue listing "
        "slow first, then fast (catalogue order must not pass for ranking); **best mirror "
        "alone**: modelget and every peer on the fast site only. The best a pull can do is "
        f"both uplinks full ({_mb(ideal)}); the best single mirror gives {_mb(p.s10_fast_uplink)}."
    )
    made: list[Site] = []
    try:
        made.append(b.site("slow", [repo], shaped=True, limit_rate=p.s10_slow_conn))
        made.append(b.site("fast", [repo], shaped=True, limit_rate=p.s10_fast_conn))
        slow, fast = made
        assert b.link is not None
        b.link.shape(None, {slow.ports: p.s10_slow_uplink, fast.ports: p.s10_fast_uplink})
        res.setup += _peer_setup(b, made)
        res.commands["link shaping (tc; ports of slow, fast)"] = "\n".join(b.link.commands)
        both = b.work / "mirrors-s10-both.yaml"
        both.write_text(catalogue_yaml([slow, fast]))
        best = b.work / "mirrors-s10-best.yaml"
        best.write_text(catalogue_yaml([fast]))
        cases: list[tuple[str, list[tuple[str, Maker]]]] = [
            ("both mirrors", [(f"modelget ({e})", _modelget_maker(b, repo, both, e)) for e in ENGINES]),
            ("best mirror alone", [(f"modelget ({e})", _modelget_maker(b, repo, best, e)) for e in ENGINES] + _peer_makers(b, repo, fast)),
        ]  # fmt: skip
        for r in range(p.runs):
            for case, makers in cases:
                for _, make in makers:
                    inv = make(b.fresh("dest"))
                    res.commands.setdefault(f"{inv.tool}, {case}", _display(b, inv, repo))
                    b.measure("S10", case, r, inv, made, repo, shaped=True)
        b.link.unshape()
        b.clean()
    finally:
        for site in made:
            site.close()
    runs = [r for r in b.runs if r.scene == "S10"]
    rows = []
    for case, makers in cases:
        for label, _ in makers:
            rr = _all(runs, case, label)
            t = Summary.of(_ok_times(runs, case, label))
            rate = ratio(repo.size, t.median)
            rows.append(
                [
                    f"{label}, {case}",
                    t.text("{:.2f}", " s"),
                    fmt_rate(rate),
                    fmt_pct(ratio(rate, ideal)),
                    fmt_bytes(_rss(rr, "main")),
                    _fails(rr),
                ]
            )
    res.tables.append(
        markdown_table(
            ["tool", "time: median (min–max)", "MB/s", "share of both uplinks", "peak RSS", "failures"],
            rows,
            "lrrrrl",
        )
    )  # fmt: skip
    med = {label: median(_ok_times(runs, "best mirror alone", label)) for label in PEER_LABELS}
    for e in ENGINES:
        tool = f"modelget ({e})"
        t_both = median(_ok_times(runs, "both mirrors", tool))
        t_best = median(_ok_times(runs, "best mirror alone", tool))
        med[tool] = t_both
        speed = ratio(t_best, t_both)
        share = ratio(ratio(repo.size, t_both), ideal)
        res.headlines += [
            Headline("S10", f"{e}: both ÷ best alone (speed-up)", speed, fmt_ratio(speed), None, f"both uplinks full would be {ideal / p.s10_fast_uplink:.2f}×"),
            Headline("S10", f"{e}: both mirrors, share of both uplinks", share, fmt_pct(share)),
        ]  # fmt: skip
    res.headlines += _vs_peers("S10", "both mirrors vs peers on the best", med, capped=True)
    return res


# --------------------------------------------------------------------------------------------
# S8: peak memory
# --------------------------------------------------------------------------------------------


def s8(b: Bench) -> SceneResult:
    res = SceneResult("S8", "Peak memory (RSS): 64 connections, and the synthetic-checkpoint pulls")
    p = b.profile
    n = p.s8_connections
    shaped = b.link is not None
    res.setup.append(
        "VmHWM of every process in the tool's tree, sampled every 20 ms (the maximum over the "
        "runs). For modelget, *main* is the Python process (probe, plan, engine driver, "
        "verification), *aria2c* its child. **64 connections**: the S9 model "
        f"({fmt_bytes(b.shards.size)}) from a CDN capped at {_mb(p.s9_conn)} per connection "
        + (f"behind a link capped at {_mb(p.s9_link)}" if shaped else "on loopback (no root: no link cap)")
        + f", `modelget pull --connections {n}`, so that many connections are worth opening. "
        "The other rows come from the S1 and S2 runs of the synthetic checkpoint, when they ran."
    )  # fmt: skip
    with b.sites(["cdn"], [b.shards], shaped=shaped, limit_rate=p.s9_conn) as (site,):
        res.setup += _peer_setup(b, [site])[:1]
        if b.link is not None:
            b.link.shape(p.s9_link)
        cat = b.work / "mirrors-s8.yaml"
        cat.write_text(catalogue_yaml([site]))
        makers = [
            (f"modelget ({e})", _modelget_maker(b, b.shards, cat, e, extra=["--connections", str(n)]))
            for e in ENGINES
        ]  # fmt: skip
        _interleaved(b, "S8", f"{n} connections", makers, [site], b.shards, shaped=shaped,
                     commands=res.commands)  # fmt: skip
        if b.link is not None:
            b.link.unshape()
    own = [r for r in b.runs if r.scene == "S8"]
    for e in ENGINES:
        rr = _all(own, f"{n} connections", f"modelget ({e})")
        v = _rss(rr, "main")
        res.headlines.append(
            Headline("S8", f"{e}: modelget process peak RSS, --connections {n}", v, fmt_bytes(v),
                     Target("<=", 200e6), _fails(rr), target_text="≤ 200 MB")
        )  # fmt: skip
        if e == "aria2":
            a = _rss(rr, "aria2c")
            res.headlines.append(Headline("S8", f"aria2: its aria2c's peak RSS, --connections {n}", a, fmt_bytes(a)))  # fmt: skip
    rows = []
    for scene, case in (
        ("S8", f"{n} connections"),
        ("S2", "synthetic, warm"),
        ("S2", "synthetic, cold"),
        ("S1", "synthetic"),
    ):
        for tool in ("modelget (aria2)", "modelget (httpx)", *PEER_LABELS):
            rr = [r for r in b.runs if r.scene == scene and r.case == case and r.tool == tool]
            if not rr:
                continue
            rows.append(
                [
                    f"{scene} {case}",
                    tool,
                    fmt_bytes(_rss(rr, "main")),
                    fmt_bytes(_rss(rr, "aria2c")),
                ]
            )
    for e in ENGINES:
        rr = [
            r
            for r in b.runs
            if r.tool == f"modelget ({e})"
            and r.scene in ("S1", "S2")
            and r.case.startswith("synthetic")
        ]
        if not rr:
            continue
        v = _rss(rr, "main")
        res.headlines.append(
            Headline(
                "S8",
                f"{e}: modelget process peak RSS",
                v,
                fmt_bytes(v),
                Target("<=", 200e6),
                target_text="≤ 200 MB",
            )
        )
        if e == "aria2":
            a = _rss(rr, "aria2c")
            res.headlines.append(Headline("S8", "aria2: its aria2c's peak RSS", a, fmt_bytes(a)))
    res.tables.append(
        markdown_table(["runs", "tool", "peak RSS: main process", "peak RSS: aria2c"], rows, "llrr")
    )
    return res


# --------------------------------------------------------------------------------------------
# D: where the time goes after the last byte (diagnostic)
# --------------------------------------------------------------------------------------------

TIMELINE_SNIPPET = """\
import json, sys, threading, time
t0 = time.perf_counter()
from modelget import api
from modelget.engines import EngineOptions
from modelget.events import NullReporter
repo, catalogue, dest, engine, files = sys.argv[1:6]
class Timeline(NullReporter):
    def __init__(self):
        self.lock, self.last, self.done = threading.Lock(), {}, {}
    def on_bytes(self, path, nbytes, mirror):
        with self.lock:
            self.last[path] = time.perf_counter() - t0
    def on_file_done(self, path, size, seconds, reused):
        with self.lock:
            self.done[path] = time.perf_counter() - t0
tl = Timeline()
result = api.pull(repo, mirrors=catalogue, cache_dir=dest, engine=engine,
                  options=EngineOptions(max_concurrent_files=int(files)), reporter=tl)
print(json.dumps({"status": result.status, "end": time.perf_counter() - t0,
                  "last_byte": max(tl.last.values(), default=0.0)}))
"""


def diagnose(b: Bench) -> SceneResult:
    res = SceneResult("D", "Diagnostic: the verification tail and how many files at once")
    repo = b.big
    res.setup.append(
        f"The synthetic checkpoint ({fmt_bytes(repo.size)}, {len(repo.files)} files) on "
        "uncapped loopback, pulled through `modelget.pull()` with the engine option "
        "`max_concurrent_files` at its default (4) and at 1 (not a CLI option), recording "
        "when the last byte arrived (the aria2 engine reports bytes every poll, so ±0.2 s) "
        "and when the pull returned. Every file is verified once all its bytes are in: when "
        "all shards finish together, their hashing is a tail after the last byte."
    )
    rows = []
    with b.sites(["loop"], [repo], shaped=False) as (site,):
        cat = b.work / "mirrors-d.yaml"
        cat.write_text(catalogue_yaml([site]))
        cases = [(e, n) for e in ENGINES for n in (4, 1)]
        for r in range(b.profile.runs):
            for e, n in cases:
                dest = b.fresh("dest")
                cmd = [
                    sys.executable,
                    "-c",
                    TIMELINE_SNIPPET,
                    repo.repo_id,
                    str(cat),
                    str(dest),
                    e,
                    str(n),
                ]
                inv = peers.Invocation(f"modelget.pull ({e}, {n} at once)", cmd,
                                       {**b.env, "MODELGET_CACHE_DIR": str(b.fresh("probe-cache"))},
                                       repo.snapshot(dest))  # fmt: skip
                res.commands.setdefault(
                    "timeline",
                    "python -c SNIPPET REPO CATALOGUE DEST ENGINE FILES  # SNIPPET: bench/scenes.py TIMELINE_SNIPPET",
                )
                run = b.measure("D", f"{e}, {n}", r, inv, [site], repo, shaped=False)
                with contextlib.suppress(ValueError, IndexError):
                    doc = json.loads(run_stdout_last_line(run))
                    run.detail.update(doc)
        b.clean()
    runs = [r for r in b.runs if r.scene == "D"]
    for e in ENGINES:
        base = median(_ok_times(runs, f"{e}, 4", f"modelget.pull ({e}, 4 at once)"))
        for n in (4, 1):
            tool = f"modelget.pull ({e}, {n} at once)"
            rr = [r for r in _all(runs, f"{e}, {n}", tool) if r.ok]
            s = Summary.of([r.wall_s for r in rr])
            last = median(float(r.detail.get("last_byte", math.nan)) for r in rr)
            tail = median(
                float(r.detail.get("end", math.nan)) - float(r.detail.get("last_byte", math.nan))
                for r in rr
            )
            rows.append(
                [
                    e,
                    str(n),
                    s.text("{:.2f}", " s"),
                    fmt_s(last),
                    fmt_s(tail),
                    fmt_ratio(ratio(s.median, base)),
                    _fails(_all(runs, f"{e}, {n}", tool)),
                ]
            )
    res.tables.append(
        markdown_table(
            [
                "engine",
                "files at once",
                "time: median (min–max)",
                "last byte at",
                "after the last byte",
                "÷ 4 at once",
                "failures",
            ],
            rows,
            "lrrrrrl",
        )
    )
    return res


def engine_comparison(runs: Sequence[Run]) -> SceneResult:
    """aria2 against httpx wherever both ran with the same settings (for the default)."""
    res = SceneResult("E", "aria2 engine against httpx engine, side by side")
    res.setup.append(
        "Every case above where both engines ran with the same settings: median times and "
        "httpx's time divided by aria2's (below 1: httpx faster). Peak RSS counts aria2c too."
    )
    rows = []
    seen: list[tuple[str, str]] = []
    for r in runs:
        if (r.scene, r.case) not in seen and r.scene in ("S1", "S2", "S8", "S9", "S10"):
            seen.append((r.scene, r.case))
    pairs: list[tuple[str, str, str, str]] = []
    for scene, case in seen:
        pairs.append((scene, case, "modelget (aria2)", "modelget (httpx)"))
        if scene == "S1":
            pairs.append(
                (scene, case, "modelget (aria2), 16/mirror", "modelget (httpx), 16/mirror")
            )
    for scene in ("S3", "S4", "S5", "S6"):
        cases = sorted(
            {r.case.split(", ", 1)[1] for r in runs if r.scene == scene and ", " in r.case}
        )
        pairs.extend((scene, c, "aria2", "httpx") for c in cases if c != "killed")
    for scene, case, a, h in pairs:
        if scene in ("S3", "S4", "S5", "S6"):
            ra = [x for x in runs if x.scene == scene and x.case == f"{a}, {case}" and x.ok]
            rh = [x for x in runs if x.scene == scene and x.case == f"{h}, {case}" and x.ok]
            label = f"{scene} {case}"
        else:
            ra = [x for x in runs if x.scene == scene and x.case == case and x.tool == a and x.ok]
            rh = [x for x in runs if x.scene == scene and x.case == case and x.tool == h and x.ok]
            label = f"{scene} {case}" + (", 16/mirror" if a.endswith("16/mirror") else "")
        if not ra or not rh:
            continue
        ta = median(x.wall_s for x in ra)
        th = median(x.wall_s for x in rh)
        mem_a = max(x.peak_rss.get("main", 0) + x.peak_rss.get("aria2c", 0) for x in ra)
        mem_h = max(x.peak_rss.get("main", 0) for x in rh)
        rows.append(
            [
                label,
                fmt_s(ta),
                fmt_s(th),
                fmt_ratio(ratio(th, ta)),
                fmt_bytes(mem_a),
                fmt_bytes(mem_h),
            ]
        )
    if not rows:
        res.skipped = "no case ran with both engines"
        return res
    res.tables.append(
        markdown_table(
            [
                "case",
                "aria2",
                "httpx",
                "httpx ÷ aria2",
                "peak RSS aria2 (+aria2c)",
                "peak RSS httpx",
            ],
            rows,
            "lrrrrr",
        )
    )
    return res


def run_stdout_last_line(run: Run) -> str:
    return str(run.detail.get("stdout_tail", "")).strip().splitlines()[-1]


SCENES: dict[str, Callable[[Bench], SceneResult]] = {
    "C": ceilings,
    "S1": s1,
    "S2": s2,
    "S3": s3,
    "S4": s4,
    "S5": s5,
    "S6": s6,
    "S7": s7,
    "S8": s8,
    "S9": s9,
    "S10": s10,
    "S11": s11,
    "S12": s12,
    "D": diagnose,
}
