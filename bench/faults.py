"""S11: a bad mirror ranked first and one good mirror (issue 15, "fast under faults").

Two hub simulators serve the same repo (a 64 MB safetensors-like file and two small ones) on
loopback; the bad one is probed while healthy and ranked first, then it misbehaves in one of the
ways below. Each pull runs with the engine's defaults. The bound of the issue is about 1.5 × the
good mirror's own time + 5 s; what is measured is the wall time of ``modelget pull``, whether
it succeeded, and how many bytes of the big file each mirror sent.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench import procs
from bench.harness import Bench, Run
from bench.results import ENGINES, Headline, SceneResult
from bench.stats import Summary, Target, fmt_ratio, markdown_table, median
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "bench/faulty"
BIG = "model.safetensors"
SIZE = 64 * 1024 * 1024
TIMEOUT_S = 300.0
FILE: Final = "hf-resolve"

Tamper = Callable[[str, str, Any], Any]


def _size_lie(delta: int) -> Tamper:
    """The bad mirror lists the big file ``delta`` bytes off (same sha256)."""

    def fix(entry: dict[str, Any], key: str) -> dict[str, Any]:
        entry = dict(entry)
        if entry.get(key) == BIG:
            if "size" in entry:
                entry["size"] += delta
            if "lfs" in entry:
                entry["lfs"] = {**entry["lfs"], "size": entry["lfs"]["size"] + delta}
        return entry

    def tamper(route: str, path: str, data: Any) -> Any:
        if route != "hf-api":
            return data
        if isinstance(data, list):
            return [fix(i, "path") for i in data]
        if isinstance(data, dict) and "siblings" in data:
            return {**data, "siblings": [fix(s, "rfilename") for s in data["siblings"]]}
        return data

    return tamper


CASES: dict[str, tuple[str, list[Fault] | Tamper]] = {
    "hung": ("no answer at all (resolve and file requests)", [Fault(route=FILE, latency_s=900)]),
    "stall": (
        "stalls for good after 256 KiB of each body",
        [Fault(route=FILE, stall_after_bytes=256 * 1024, stall_s=900)],
    ),
    "trickle": ("2 KB/s per connection", [Fault(route=FILE, rate_bps=2000)]),
    "slow": ("128 KB/s per connection", [Fault(route=FILE, rate_bps=128_000)]),
    "reset": (
        "resets each connection after 1000 bytes",
        [Fault(route=FILE, reset_after_bytes=1000)],
    ),
    "500": ("HTTP 500 on every file request", [Fault(route=FILE, status=500)]),
    "429": (
        "HTTP 429, Retry-After: 30, on every file request",
        [Fault(route=FILE, status=429, retry_after=30)],
    ),
    "corrupt": (
        "flips a byte every MiB of the big file",
        [Fault(route=FILE, corrupt_every=1024 * 1024)],
    ),
    "size+": ("lists the big file 4096 bytes too big (same sha256)", _size_lie(4096)),
    "size-": ("lists the big file 4096 bytes too small (same sha256)", _size_lie(-4096)),
}


def _repo(b: Bench) -> Path:
    root = b.work / "s11-repo"
    if not (root / BIG).exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / BIG).write_bytes(random.Random(11).randbytes(SIZE))
        (root / "config.json").write_text('{"hidden_size": 8}\n')
        (root / "tokenizer.json").write_bytes(random.Random(12).randbytes(700_000))
    return root


def _big_bytes(sim: HubSimulator) -> int:
    """Body bytes of the big file the mirror has really sent (a throttled response is logged
    up front with what it was about to send)."""
    return sim.file_bytes_sent(BIG)


def _one(b: Bench, engine: str, case: str | None, repo: Path, r: int, res: SceneResult) -> Run:
    """One pull: ``case`` None is the good mirror alone (the baseline)."""
    bad = HubSimulator(name="bad").start()
    good = HubSimulator(name="good").start()
    try:
        for sim in (bad, good):
            sim.add_repo(REPO, repo)
        mirrors = [good] if case is None else [bad, good]
        cat = b.work / "mirrors-s11.yaml"
        cat.write_text(
            "version: 1\nmirrors:\n"
            + "".join(f"  - name: {m.name}\n    kind: hf\n    endpoint: {m.url}\n" for m in mirrors)
        )
        env = {**b.env, "MODELGET_CACHE_DIR": str(b.fresh("s11-state"))}
        if case is not None:
            # Probed while healthy, the bad mirror a little faster: it is ranked first.
            slower = good.add_fault(Fault(route="hf-api", latency_s=0.05))
            procs.run(
                [sys.executable, "-m", "modelget", "probe", "--mirrors", str(cat)],
                env=env,
                timeout=60,
            )
            good.remove_fault(slower)
            for sim in (bad, good):
                sim.wait_idle(5)
                sim.clear_log()  # the probe's sample is not the pull's
            spec = CASES[case][1]
            if callable(spec):
                bad.tamper(spec)
            else:
                for fault in spec:
                    bad.add_fault(fault)
        dest = b.fresh("s11-cache")
        cmd = [
            sys.executable, "-m", "modelget", "pull", REPO, "--mirrors", str(cat),
            "--cache-dir", str(dest), "--engine", engine, "--json",
        ]  # fmt: skip
        res.commands.setdefault(
            f"modelget ({engine})",
            " ".join(cmd).replace(str(b.work), "$WORK").replace(sys.executable, "python"),
        )
        m = procs.run(cmd, env=env, timeout=TIMEOUT_S)
        label = "good alone" if case is None else case
        run = Run(
            "S11",
            f"{engine}, {label}",
            f"modelget ({engine})",
            r,
            m.wall_s,
            m.rc,
            m.rc == 0,
            "cold",
            load1=m.load1,
            detail={"bad_bytes": _big_bytes(bad), "good_bytes": _big_bytes(good)},
            error="" if m.rc == 0 else (m.stdout[-200:] + m.stderr[-200:]),
        )
        b.runs.append(run)
        b.say(
            f"  S11 {engine} {label} #{r} {m.wall_s:6.2f} s rc {m.rc} "
            f"bad {run.detail['bad_bytes'] / 1e6:.1f} MB load {m.load1:.2f}"
        )
        shutil.rmtree(dest, ignore_errors=True)
        return run
    finally:
        bad.stop()
        good.stop()


def s11(b: Bench) -> SceneResult:
    res = SceneResult("S11", "A bad mirror ranked first, one good mirror (fault matrix)")
    repo = _repo(b)
    res.setup.append(
        f"Two hub simulators on loopback serve a {SIZE // 2**20} MiB file and two small ones. "
        "The bad mirror is probed while healthy and ranked first; then it misbehaves as the "
        "row says (on every file request). Engine defaults, no options. **bound**: 1.5 × the "
        "good mirror's own time (alone in the catalogue) + 5 s, the issue's figure. "
        "bad MB: bytes of the big file the bad mirror sent (its log)."
    )
    runs = b.profile.runs
    base: dict[str, float] = {}
    walls: dict[tuple[str, str], Summary] = {}
    bad_mb: dict[tuple[str, str], float] = {}
    fails: dict[tuple[str, str], int] = {}
    for engine in ENGINES:
        base_runs = [_one(b, engine, None, repo, r, res) for r in range(runs)]
        base[engine] = median([x.wall_s for x in base_runs if x.ok])
        for case in CASES:
            got = [_one(b, engine, case, repo, r, res) for r in range(runs)]
            walls[(engine, case)] = Summary.of([x.wall_s for x in got])
            bad_mb[(engine, case)] = median([x.detail["bad_bytes"] / 1e6 for x in got])
            fails[(engine, case)] = sum(1 for x in got if not x.ok)
    rows = [
        ["good mirror alone", *(f"{base[e]:.2f} s" for e in ENGINES), "", ""],
    ]
    for case, (what, _spec) in CASES.items():
        cells = []
        for e in ENGINES:
            s = walls[(e, case)]
            bound = 1.5 * base[e] + 5.0
            failed = fails[(e, case)]
            mark = "" if s.median <= bound and not failed else " ✗"
            cells.append(s.text("{:.2f}", " s") + mark + (f" ({failed} failed)" if failed else ""))
        rows.append(
            [
                f"{case}: {what}",
                *cells,
                " / ".join(f"{1.5 * base[e] + 5.0:.1f} s" for e in ENGINES),
                " / ".join(f"{bad_mb[(e, case)]:.1f}" for e in ENGINES),
            ]
        )
    res.tables.append(
        markdown_table(
            ["bad mirror", *(f"modelget ({e})" for e in ENGINES), "bound", "bad MB"],
            rows,
            "lrrrr",
        )
    )
    for e in ENGINES:
        worst = max((walls[(e, c)].median / (1.5 * base[e] + 5.0), c) for c in CASES)
        ok = all(fails[(e, c)] == 0 for c in CASES)
        res.headlines.append(
            Headline(
                "S11",
                f"{e}: worst case ÷ bound ({worst[1]})",
                worst[0] if ok else float("inf"),
                fmt_ratio(worst[0]) + ("" if ok else ", with failures"),
                Target("<=", 1.0),
            )
        )
    return res
