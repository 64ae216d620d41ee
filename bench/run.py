"""``python -m bench``: run the scenes, write bench/results/*.json and docs/benchmarks.md.

Run it from the repository root (so ``bench`` is importable) with the interpreter modelget
is installed in, as root for the capped scenes::

    .venv/bin/python -m bench                  # full: ≥ 3 runs per case, a 4 GB checkpoint
    .venv/bin/python -m bench --quick          # 200 MB, one run each: a smoke test (~4 min)
    .venv/bin/python -m bench --scenes S2,S6   # only some scenes (C = the ceilings)
    .venv/bin/python -m bench --quick --scenes S9,S10   # the issue-14 scenes, small

The synthetic checkpoint is written once into ``--data`` (default
``~/.cache/modelget/bench``) and reused; downloads go to ``--work`` (default ``--data/work``)
and are removed after each case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench import netns
from bench.harness import FULL, QUICK, Bench
from bench.results import SceneResult
from bench.scenes import SCENES
from bench.stats import replace_between

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC = REPO_ROOT / "docs" / "benchmarks.md"


def _say(text: str) -> None:
    print(text, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    p.add_argument(
        "--scenes",
        default=",".join(SCENES),
        help=f"comma-separated scenes to run (default: all of {','.join(SCENES)})",
    )
    p.add_argument("--runs", type=int, help="runs per tool and case (default: 3, quick: 1)")
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "modelget"
        / "bench",
        help="where the synthetic checkpoint is kept (default ~/.cache/modelget/bench)",
    )
    p.add_argument("--work", type=Path, help="scratch directory for downloads (default DATA/work)")
    p.add_argument(
        "--doc",
        type=Path,
        help="Markdown file whose results section is rewritten (default: docs/benchmarks.md "
        "for a full run; a --quick run writes none unless given one)",
    )
    p.add_argument("--no-doc", action="store_true", help="do not touch the Markdown file")
    p.add_argument(
        "--swarm-queue",
        choices=("short", "pfifo"),
        help="S12: the queue under each cap: short (default: 10 ms of the rate) or pfifo "
        "(htb's default 1000 packets, as the research prototype)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            raise SystemExit("--runs must be at least 1")
        profile = replace(profile, runs=args.runs)
    wanted = [s.strip().upper() for s in args.scenes.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENES]
    if unknown:
        raise SystemExit(f"unknown scene(s) {unknown}; known: {', '.join(SCENES)}")
    if "S8" in wanted and not {"S1", "S2"} & set(wanted):
        _say(
            "note: S8 also reads the S1/S2 runs of the synthetic checkpoint; add them for those rows"
        )
    if args.swarm_queue is not None:
        from bench import swarm

        swarm.QUEUE = args.swarm_queue
    data = args.data.expanduser()
    work = (args.work or data / "work").expanduser()
    started = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    # SIGTERM ends the run like Ctrl-C: servers stopped, namespace removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    why = netns.available()
    link: netns.ShapedLink | None = None
    if why is None:
        link = netns.ShapedLink()
    else:
        _say(f"note: the shaped scenes (S1, S3, S4, S5, S9, S10) are skipped: {why}")
    scenes: list[SceneResult] = []
    try:
        if link is not None:
            link.open()
        bench = Bench(profile, data, work, link=link, say=_say)
        for sid in wanted:
            _say(f"== {sid}")
            scenes.append(SCENES[sid](bench))
        if {"S1", "S2", "S3", "S4", "S5", "S6", "S8", "S9", "S10"} & set(wanted):
            from bench.scenes import engine_comparison

            scenes.append(engine_comparison(bench.runs))
        bench.clean()
    finally:
        if link is not None:
            link.close()

    from bench import report

    duration = time.perf_counter() - started
    loads = [r.load1 for r in bench.runs]
    load_text = f"{min(loads):.2f} – {max(loads):.2f}" if loads else "n/a"
    meta: dict[str, Any] = {
        "date": date,
        "profile": profile.name,
        "runs": profile.runs,
        "duration_s": duration,
        "command": (
            "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
        ).strip(),
        "load": load_text,
        "load_note": (
            f"the machine has {os.cpu_count()} cores: a load above that means the tools shared "
            "the CPU with other processes (the bench's own servers count too)"
        ),
        "link": (
            f"veth {link.host_if} ↔ namespace {link.ns} (MTU 65535), htb on the host end"
            if link is not None
            else f"none ({why})"
        ),
    }
    machine_info = report.machine(work)
    version_info = report.versions(REPO_ROOT)
    results_dir = REPO_ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "profile": asdict(profile),
        "machine": machine_info,
        "versions": version_info,
        "scenes": [
            {
                "id": s.id,
                "title": s.title,
                "skipped": s.skipped,
                "commands": s.commands,
                "headlines": [
                    {
                        "metric": h.metric,
                        "value": h.value,
                        "shown": h.shown,
                        "target": h.target.text() if h.target else None,
                        "verdict": h.target.verdict(h.value) if h.target else None,
                        "note": h.note,
                    }
                    for h in s.headlines
                ],
            }
            for s in scenes
        ],
        "runs": bench.runs_json(),
    }
    out_json = results_dir / f"{profile.name}-latest.json"
    out_json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    _say(f"raw results: {out_json}")
    # A scene with a section of its own (S12) is written there; the main section is rewritten
    # only when other scenes ran.
    sections: list[tuple[str, str, str]] = []
    main_scenes = [s for s in scenes if s.id not in report.OWN_SECTIONS]
    if main_scenes:
        text = report.render(
            main_scenes, meta=meta, machine_info=machine_info, version_info=version_info
        )
        sections.append((report.BEGIN, report.END, text))
    for s in scenes:
        if s.id in report.OWN_SECTIONS:
            begin, end, title = report.OWN_SECTIONS[s.id]
            own = {**meta, "link": "none; the scene builds its own network (see its set-up)"}
            text = report.render(
                [s], meta=own, machine_info=machine_info, version_info=version_info, title=title
            )
            sections.append((begin, end, text))
    doc = args.doc if args.doc is not None else (None if args.quick else DOC)
    if doc is not None and not args.no_doc:
        old = doc.read_text() if doc.exists() else "# Benchmarks\n"
        for begin, end, text in sections:
            old = replace_between(old, begin, end, text)
        doc.write_text(old)
        _say(f"results written to {doc}")
    else:
        for _, _, text in sections:
            _say(text)
    _say(f"done in {duration / 60:.1f} min")
    return 0
