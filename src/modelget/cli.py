"""The command line: parse, call the library, render. The only module that prints.

Data goes to stdout (tables or ``--json``); errors, hints and progress go to stderr.
Exit codes are those of ``modelget.errors`` (0 ok, 1 error, 2 usage/config, 3 partial,
4 verification failed, 130 interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelget._version import __version__
from modelget.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    EXIT_VERIFY,
    ModelgetError,
)

if TYPE_CHECKING:
    from modelget.lockfile import LockedModel

JSON_SCHEMA_VERSION = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit code 2 in our own format."""

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        self.print_usage(sys.stderr)
        print(f"error: usage\n{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modelget",
        description="Get a model's files onto this machine fast, intact and ready to load.",
    )
    parser.add_argument("--version", action="version", version=f"modelget {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    mirrors = sub.add_parser(
        "mirrors",
        help="show (and validate) the mirror catalogue in use",
        description="Load and validate the mirror catalogue, then list its mirrors. "
        "Exit code 2 when the catalogue is invalid.",
    )
    mirrors.add_argument("--mirrors", metavar="FILE", help="catalogue file (default: see docs)")
    mirrors.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mirrors.set_defaults(func=_cmd_mirrors)

    probe = sub.add_parser(
        "probe",
        help="probe the enabled mirrors and show their ranking",
        description="Probe every enabled mirror concurrently (connect, time to first byte and, "
        "with a repo id, presence of the repo and throughput on a small range of its largest "
        "file), then rank them. Refreshes the probe cache used by pull.",
    )
    probe.add_argument(
        "repo_id", nargs="?", metavar="REPO_ID", help="e.g. Qwen/Qwen2.5-0.5B-Instruct"
    )
    probe.add_argument("--revision", help="branch, tag or commit (default: the mirror's default)")
    probe.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    probe.add_argument("--timeout", type=float, metavar="S", help="per-mirror timeout (default 5)")
    probe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    probe.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the mirrors' TLS certificates (self-signed or private CA); warns. "
        "Only on a network you trust: tokens and bytes can then be read or changed on the way "
        "(files are still checked against their digests)",
    )
    probe.set_defaults(func=_cmd_probe)

    doctor = sub.add_parser(
        "doctor",
        help="diagnose slow or stuck pulls: mirrors, network, disk, aria2c, GPU",
        description="Check every enabled mirror (DNS, TCP connect, TLS, time to first byte, "
        "Range support and, with a repo id, whether it has the repo and a short throughput "
        "sample on one of its files) and this machine (free space and filesystem at the "
        "cache, memory, CPUs, a write/read test of the cache disk, aria2c, GPU), all at once "
        "under a time budget, then say in plain words what is wrong and which link is the "
        "slowest. Exit codes: 0 no check failed, 1 a check failed or nothing can serve the "
        "pull (see docs/doctor.md), 2 usage/config.",
    )
    doctor.add_argument(
        "repo_id", nargs="?", metavar="REPO_ID", help="also check this repo on every mirror"
    )
    doctor.add_argument("--revision", help="branch, tag or commit (default: the mirror's default)")
    doctor.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    doctor.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    doctor.add_argument(
        "--timeout", type=float, metavar="S", help="per-step network timeout (default 5)"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON document")
    doctor.set_defaults(func=_cmd_doctor)

    pull = sub.add_parser(
        "pull",
        help="download a model, verified, into the Hugging Face cache (or --local-dir)",
        description="Resolve REPO_ID on the ranked mirrors into one agreed manifest, fetch the "
        "files in parallel from every mirror that agrees, verify each digest before it lands, "
        "and lay them out in the Hugging Face cache so transformers, vLLM and huggingface_hub "
        "find the model offline. Prints the model's path on stdout. Exit codes: 0 ok, "
        "1 error, 2 usage/config, 3 some files failed, 4 verification failed, 130 interrupted.",
    )
    pull.add_argument(
        "repo_id", nargs="?", metavar="REPO_ID", help="the model (with --lock: one of the lock's)"
    )
    pull.add_argument("filenames", nargs="*", metavar="FILE", help="only these files")
    pull.add_argument(
        "--lock",
        metavar="FILE",
        help="pull exactly the commits and files a lockfile pins (all its models, or REPO_ID)",
    )
    pull.add_argument("--revision", help="branch, tag or commit (default: main / master)")
    pull.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only files matching GLOB (repeatable; same meaning as hf download)",
    )
    pull.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip files matching GLOB"
    )
    pull.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    pull.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    pull.add_argument("--local-dir", metavar="DIR", help="also put real files in DIR")
    pull.add_argument(
        "--engine",
        choices=["auto", "aria2", "httpx"],
        default="auto",
        help="transfer engine (default auto: aria2 when aria2c is installed, else httpx)",
    )
    pull.add_argument(
        "--connections", type=int, metavar="N", help="connections in flight (default 16)"
    )
    pull.add_argument(
        "--max-rate", metavar="RATE", help="overall bandwidth cap, e.g. 50M or 800K (bytes/s)"
    )
    pull.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    pull.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the mirrors' TLS certificates (self-signed or private CA); warns. "
        "Only on a network you trust: tokens and bytes can then be read or changed on the way "
        "(files are still checked against their digests)",
    )
    pull.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    pull.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show the connections per mirror as the scheduler changes them, and the "
        "time each stage took",
    )
    pull.add_argument(
        "--json", action="store_true", help="JSON: the plan (--dry-run), or events as JSON lines"
    )
    pull.add_argument(
        "--load-test",
        action="store_true",
        help="after the pull, check every file and load every tensor (see load-test)",
    )
    pull.add_argument(
        "--warm",
        action="store_true",
        help="after the pull, read the files into the page cache so the first load is fast",
    )
    pull.set_defaults(func=_cmd_pull)

    lock = sub.add_parser(
        "lock",
        help="pin models to commits with every file's digest (a lockfile, on stdout)",
        description="Resolve each REPO_ID (or REPO_ID@REVISION) on the ranked mirrors and write "
        "a lockfile: repo id -> commit -> files -> sizes and digests, as JSON on stdout. "
        "`modelget pull --lock FILE` then reproduces exactly those bytes on any machine, and "
        "fails clearly when no mirror has the commit any more. Nothing is downloaded.",
    )
    lock.add_argument("targets", nargs="+", metavar="REPO_ID[@REVISION]")
    lock.add_argument("--revision", help="branch, tag or commit for targets without @REVISION")
    lock.add_argument(
        "--include", action="append", default=[], metavar="GLOB", help="only files matching GLOB"
    )
    lock.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip files matching GLOB"
    )
    lock.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    lock.add_argument(
        "--output", "-o", metavar="FILE", help="write the lockfile to FILE instead of stdout"
    )
    lock.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the mirrors' TLS certificates (see pull --insecure); warns",
    )
    lock.set_defaults(func=_cmd_lock)

    verify = sub.add_parser(
        "verify",
        help="re-hash a cached model (or a --local-dir download) against its digests",
        description="Re-hash every file on disk against the digest recorded for it (the blob "
        "name in the cache, the etag in a local dir's .cache/huggingface metadata) and name "
        "every missing, extra or corrupted file, including shards an index.json names that "
        "are absent. Exit codes: 0 all good, 4 something missing or corrupted, 1 not cached.",
    )
    verify.add_argument(
        "target", metavar="REPO_ID|PATH", help="a repo id, a snapshot dir or a --local-dir"
    )
    verify.add_argument("--revision", help="only this branch, tag or commit (default: all)")
    verify.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify.set_defaults(func=_cmd_verify)

    ls = sub.add_parser(
        "ls",
        help="list the models in the Hugging Face cache",
        description="List the models in the cache: id, revisions (refs and commits), size on "
        "disk and when each was last used.",
    )
    ls.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_cmd_ls)

    rm = sub.add_parser(
        "rm",
        help="remove a model (or one revision) from the Hugging Face cache",
        description="Remove a model's snapshot (one revision, or all), the blobs no remaining "
        "snapshot uses, partial downloads and refs to removed commits, then print what was "
        "freed. Never follows a symbolic link, never deletes outside models--ORG--NAME. "
        "Without --yes: show what would go and ask (refused when stdin is not a terminal).",
    )
    rm.add_argument("repo_id", metavar="REPO_ID")
    rm.add_argument("--revision", help="only this branch, tag or commit (default: all)")
    rm.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    rm.add_argument("--json", action="store_true", help="print JSON")
    rm.set_defaults(func=_cmd_rm)

    lt = sub.add_parser(
        "load-test",
        help="check a model's files and load every tensor onto the GPU (or CPU); report GB/s",
        description="Check every safetensors header, the shard index and config.json, then "
        "load every tensor onto the device (CUDA when torch sees a GPU, else the CPU; numpy "
        "without torch) and report bytes, seconds, GB/s, time to the first tensor and where "
        "the bytes came from. Exit codes: 0 loads, 4 the model would not load, 1 error.",
    )
    lt.add_argument("target", metavar="REPO_ID|PATH", help="a repo id in the cache, or a dir")
    lt.add_argument("--revision", help="with a repo id: branch, tag or commit (default main)")
    lt.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    lt.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    lt.add_argument("--warm", action="store_true", help="read the files into the page cache first")
    lt.add_argument("--json", action="store_true", help="the report as JSON")
    lt.set_defaults(func=_cmd_load_test)

    export = sub.add_parser(
        "export",
        help="publish a cached model as a static cdn tree (for nginx or a bucket)",
        description="Write REPO_ID, already pulled into the Hugging Face cache, into DIR as a "
        "modelget.cdn/1 tree (refs.json, manifests/, content-addressed blobs/): every blob is "
        "verified first, then hardlinked (same filesystem) or copied. Serve DIR with any static "
        "server or sync it to a bucket, and add it to the catalogue as a `cdn` mirror whose "
        "endpoint is DIR's URL. Running it again adds revisions and skips what is there.",
    )
    export.add_argument("repo_id", metavar="REPO_ID")
    export.add_argument("--to", required=True, metavar="DIR", help="root of the cdn tree")
    export.add_argument("--revision", help="branch, tag or commit in the cache (default: main)")
    export.add_argument(
        "--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)"
    )
    export.add_argument("--json", action="store_true", help="print JSON instead of text")
    export.set_defaults(func=_cmd_export)
    return parser


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _mbps(rate: float | None) -> str:
    return "-" if not rate else f"{rate / 1e6:.1f}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _warn_insecure(args: argparse.Namespace) -> None:
    """``--insecure`` always says so on stderr (a pull's reporter says it in its own way)."""
    if args.insecure:
        from modelget.api import INSECURE_WARNING

        print(f"warning: {INSECURE_WARNING}", file=sys.stderr)


def _cmd_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from modelget.api import probe

    _warn_insecure(args)
    summary = probe(
        args.repo_id,
        revision=args.revision,
        mirrors=args.mirrors,
        timeout=args.timeout,
        verify_tls=not args.insecure,
    )
    if args.json:
        payload = {
            "schema": JSON_SCHEMA_VERSION,
            "repo_id": summary.repo_id,
            "elapsed_s": summary.report.elapsed_s,
            "mirrors": [
                {
                    "rank": r.rank,
                    "usable": r.usable,
                    "score": r.score,
                    **(asdict(r.probe) if r.probe else {"mirror": r.mirror.name}),
                }
                for r in summary.ranked
            ],
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    rows = []
    for r in summary.ranked:
        p = r.probe
        has = "-" if not p or p.has_repo is None else ("yes" if p.has_repo else "no")
        rows.append(
            [
                str(r.rank) if r.usable else "-",
                r.mirror.name,
                r.mirror.kind,
                p.status if p else "-",
                _ms(p.connect_s) if p else "-",
                _ms(p.ttfb_s) if p else "-",
                _mbps(p.throughput_bps) if p else "-",
                has,
            ]
        )
    print(
        _table(
            rows,
            ["RANK", "MIRROR", "KIND", "STATUS", "CONNECT_MS", "LATENCY_MS", "MB/S", "HAS_REPO"],
        )
    )
    for r in summary.ranked:
        if r.probe and r.probe.error:
            print(f"{r.mirror.name}: {r.probe.error}", file=sys.stderr)
    print(
        f"probed {len(summary.ranked)} mirrors in {summary.report.elapsed_s:.2f} s", file=sys.stderr
    )
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from modelget.api import doctor
    from modelget.doctor import fmt_bytes, fmt_value

    report = doctor(
        args.repo_id,
        revision=args.revision,
        mirrors=args.mirrors,
        cache_dir=args.cache_dir,
        timeout=args.timeout,
    )
    code = EXIT_OK if report.ok else EXIT_ERROR
    if args.json:
        print(
            json.dumps(
                {"schema": JSON_SCHEMA_VERSION, **report.to_dict(), "exit_code": code}, indent=2
            )
        )
        return code

    def status(s: str) -> str:
        return s.upper() if s in ("fail", "warn") else s

    rows = [
        [m.name, c.name, status(c.status), fmt_value(c), c.detail]
        for m in report.mirrors
        for c in m.checks
    ]
    if rows:
        print(_table(rows, ["MIRROR", "CHECK", "STATUS", "VALUE", "DETAIL"]))
        print()
    local = [[c.name, status(c.status), fmt_value(c), c.detail] for c in report.local]
    print(_table(local, ["LOCAL", "STATUS", "VALUE", "DETAIL"]))
    print()
    what = f"{report.repo_id} " if report.repo_id else ""
    if report.repo_bytes is not None:
        what += f"({report.repo_files} files, {fmt_bytes(report.repo_bytes)}) "
    print(f"Verdict{' for ' + what.strip() if what else ''}: {'ok' if report.ok else 'FAILED'}")
    if report.verdict is not None:
        for finding in report.verdict.findings:
            mark = {"fail": "FAIL", "warn": "WARN"}.get(finding.level, "-")
            print(f"  {mark} {finding.message}")
    print(
        f"checked {len(report.mirrors)} mirrors and this machine in {report.elapsed_s:.1f} s",
        file=sys.stderr,
    )
    return code


def _rate(text: str) -> int:
    from modelget.errors import UsageError

    units = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}
    raw = text.strip().upper().removesuffix("/S").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in units and raw[-1:] else ""
    try:
        value = float(raw[: len(raw) - len(unit)]) * units[unit]
    except ValueError:
        raise UsageError(
            f"not a rate: {text!r}", hint="use bytes per second, e.g. 50M or 800K"
        ) from None
    if value <= 0:
        raise UsageError(f"--max-rate must be positive, not {text!r}")
    return int(value)


def _cmd_lock(args: argparse.Namespace) -> int:
    from modelget.api import lock
    from modelget.lockfile import dumps

    _warn_insecure(args)
    result = lock(
        args.targets,
        revision=args.revision,
        include=args.include,
        exclude=args.exclude,
        mirrors=args.mirrors,
        verify_tls=not args.insecure,
    )
    text = dumps(result)
    if args.output:
        import os

        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    else:
        sys.stdout.write(text)
    for m in result.models:
        print(
            f"locked {m.repo_id} @ {m.revision} -> {m.commit}: {len(m.files)} files, "
            f"{_size(m.total_bytes)}",
            file=sys.stderr,
        )
    return EXIT_OK


def _pull_jobs(args: argparse.Namespace) -> list[tuple[str, LockedModel | None]]:
    """(repo id, locked model or None) for each model this pull command asks for."""
    from modelget.errors import UsageError

    if not args.lock:
        if args.repo_id is None:
            raise UsageError("pull needs a REPO_ID", hint="or --lock FILE to pull a lockfile")
        return [(args.repo_id, None)]
    from modelget.lockfile import load

    if args.filenames or args.revision or args.include or args.exclude:
        raise UsageError(
            "--lock takes the commit and the files from the lockfile",
            hint="leave out --revision, file names, --include and --exclude",
        )
    models = load(args.lock).select([] if args.repo_id is None else [args.repo_id])
    if args.local_dir and len(models) > 1:
        raise UsageError(
            f"--local-dir takes one model; the lockfile has {len(models)}",
            hint="name the model: modelget pull REPO_ID --lock FILE --local-dir DIR",
        )
    return [(m.repo_id, m) for m in models]


def _cmd_pull(args: argparse.Namespace) -> int:
    jobs = _pull_jobs(args)
    worst = EXIT_OK
    for repo_id, locked in jobs:
        if args.dry_run:
            code = _cmd_dry_run(args, repo_id, locked)
        else:
            code = _pull_one(args, repo_id, locked)
        worst = max(worst, code)
    return worst


def _pull_one(args: argparse.Namespace, repo_id: str, locked: LockedModel | None) -> int:
    from dataclasses import asdict

    from modelget.api import pull
    from modelget.engines import EngineOptions
    from modelget.errors import UsageError
    from modelget.events import NullReporter, Reporter
    from modelget.progress import (
        JsonLinesReporter,
        TextReporter,
        TqdmReporter,
        connections_line,
    )

    opts = EngineOptions()
    if args.connections is not None:
        if not 1 <= args.connections <= 256:
            raise UsageError("--connections must be between 1 and 256")
        opts = replace(opts, max_connections=args.connections)
    if args.max_rate:
        opts = replace(opts, max_rate_bps=_rate(args.max_rate))
    reporter: Reporter
    if args.json or args.quiet:
        _warn_insecure(args)  # else the reporter prints the API's warning
    if args.json:
        reporter = JsonLinesReporter(sys.stdout)
    elif args.quiet:
        reporter = NullReporter()
    elif sys.stderr.isatty():
        reporter = TqdmReporter(sys.stderr, verbose=args.verbose)
    else:
        reporter = TextReporter(sys.stderr, verbose=args.verbose)
    try:
        result = pull(
            repo_id,
            args.filenames,
            revision=args.revision,
            include=args.include,
            exclude=args.exclude,
            mirrors=args.mirrors,
            cache_dir=args.cache_dir,
            local_dir=args.local_dir,
            engine=args.engine,
            options=opts,
            reporter=reporter,
            locked=locked,
            verify_tls=not args.insecure,
        )
    finally:
        if isinstance(reporter, TqdmReporter):
            reporter.close()
    failed = result.failed
    if result.status == "ok":
        code = EXIT_OK
    elif result.status == "partial":
        code = EXIT_PARTIAL
    else:
        code = EXIT_VERIFY if all(f.bad_mirrors for f in failed) else EXIT_ERROR
    load_report = None
    if code == EXIT_OK and (args.load_test or args.warm):
        from modelget.api import load_test
        from modelget.loadtest import warm

        if args.warm and not args.load_test:
            warm(Path(result.path))
        if args.load_test:
            load_report = load_test(result.path, warm=args.warm)
            if not load_report.ok:
                code = EXIT_VERIFY
    if args.json:
        payload = asdict(result)
        payload["exit_code"] = code
        if load_report is not None:
            payload["load_test"] = _load_report_dict(load_report)
        print(json.dumps({"event": "result", "schema": JSON_SCHEMA_VERSION, **payload}))
        return code
    fetched = sum(1 for f in result.files if f.status == "fetched")
    reused = sum(1 for f in result.files if f.status == "reused")
    rate = result.bytes_fetched / result.transfer_s if result.transfer_s > 0 else 0.0
    mirrors = ", ".join(
        f"{m} {_size(n)}" for m, n in sorted(result.bytes_by_mirror.items(), key=lambda x: -x[1])
    )
    if not args.quiet:
        print(
            f"{result.repo_id} @ {result.commit[:12]}: {fetched} fetched, {reused} already here, "
            f"{len(failed)} failed; {_size(result.bytes_fetched)} in {result.elapsed_s:.1f} s "
            f"({rate / 1e6:.1f} MB/s, engine {result.engine})"
            + (f"; from {mirrors}" if mirrors else ""),
            file=sys.stderr,
        )
    if args.verbose and not args.quiet:
        if result.connections:
            print(f"most {connections_line(result.connections)}", file=sys.stderr)
        if result.timings:
            print(
                "timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()),
                file=sys.stderr,
            )
    for line in failure_summary(
        [(f.path, f.error or "failed") for f in failed], len(result.files), args.verbose
    ):
        print(line, file=sys.stderr)
    if load_report is not None:
        _print_load_report(load_report)
    print(result.path)
    return code


SUMMARY_GROUPS = 3
"""Reasons shown in a failure summary; files failing for other reasons are counted."""


def failure_summary(failed: Sequence[tuple[str, str]], total: int, verbose: bool) -> list[str]:
    """The lines a pull prints about its failed files (``(path, error)`` pairs): one file,
    one line; several, one ``error:`` line and a line per reason (how many files, which),
    at most ``SUMMARY_GROUPS`` of them. ``verbose``: every file's full error first."""
    from modelget.progress import short_error

    if not failed:
        return []
    lines = [f"  {path}: {error}" for path, error in failed] if verbose else []
    if len(failed) == 1:
        path, error = failed[0]
        return [
            f"error: {path}: {error if verbose else short_error(path, error, 400, digests=True)}"
        ]
    groups: dict[str, list[str]] = {}
    for path, error in failed:
        groups.setdefault(short_error(path, error), []).append(path)
    ranked = sorted(groups.items(), key=lambda g: -len(g[1]))
    lines.append(f"error: {len(failed)} of {total} files failed:")
    for reason, paths in ranked[:SUMMARY_GROUPS]:
        shown = ", ".join(paths[:3]) + (f", +{len(paths) - 3} more" if len(paths) > 3 else "")
        lines.append(f"  {len(paths)} × {reason} ({shown})")
    rest = sum(len(paths) for _, paths in ranked[SUMMARY_GROUPS:])
    if rest:
        lines.append(f"  {rest} more with other errors")
    if not verbose:
        lines.append("  (each file's full error: -v, or the result of --json)")
    return lines


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from modelget.api import export

    result = export(args.repo_id, args.to, revision=args.revision, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA_VERSION, **asdict(result)}, indent=2))
        return EXIT_OK
    refs = ", ".join(result.refs) or "none (commit only)"
    print(
        f"{result.repo_id} @ {result.commit[:12]}: {result.files} files, {_size(result.bytes)}; "
        f"blobs: {result.linked} linked, {result.copied} copied, {result.reused} already there; "
        f"refs: {refs}",
        file=sys.stderr,
    )
    print(result.dir)
    return EXIT_OK


def _load_report_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(report)
    out["gbps"] = report.gbps
    out["problems"] = report.problems
    return out


def _print_load_report(report: Any) -> None:
    safetensors = [c for c in report.checks if c.kind == "safetensors"]
    verdict = "ok: the model loads" if report.ok else "FAILED: the model would not load"
    print(f"load test of {report.path}: {verdict}", file=sys.stderr)
    print(
        f"  checked {len(report.checks)} files: {len(safetensors)} safetensors "
        f"({sum(c.tensors for c in safetensors)} tensors)",
        file=sys.stderr,
    )
    if report.backend is not None:
        first = (
            ""
            if report.first_tensor_s is None
            else f", first tensor after {_ms(report.first_tensor_s)} ms"
        )
        gbps = report.gbps
        print(
            f"  loaded {_size(report.bytes)} in {report.tensors} tensors onto {report.device} "
            f"({report.backend}) in {report.seconds:.2f} s"
            + (f": {gbps:.2f} GB/s" if gbps is not None else "")
            + first,
            file=sys.stderr,
        )
    st = report.storage
    where = f"  storage: {st.device or '?'} ({st.fstype or '?'}) mounted at {st.mount_point or '?'}"
    if report.disk_read_bytes is not None:
        where += f"; read {_size(report.disk_read_bytes)} from disk"
        if report.disk_busy_pct is not None:
            where += f" ({report.disk_busy_pct:.0f}% busy)"
    if report.cached_fraction is not None:
        where += f"; {report.cached_fraction * 100:.0f}% was already in the page cache"
    print(where, file=sys.stderr)
    for note in report.notes:
        print(f"  note: {note}", file=sys.stderr)
    for problem in report.problems:
        print(f"  problem: {problem}", file=sys.stderr)


def _cmd_load_test(args: argparse.Namespace) -> int:
    from modelget.api import load_test

    report = load_test(
        args.target,
        revision=args.revision,
        cache_dir=args.cache_dir,
        device=args.device,
        warm=args.warm,
    )
    code = EXIT_OK if report.ok else EXIT_VERIFY
    if args.json:
        print(
            json.dumps(
                {"schema": JSON_SCHEMA_VERSION, **_load_report_dict(report), "exit_code": code}
            )
        )
    else:
        _print_load_report(report)
    return code


def _cmd_dry_run(args: argparse.Namespace, repo_id: str, locked: LockedModel | None = None) -> int:
    from modelget.api import plan

    _warn_insecure(args)
    result = plan(
        repo_id,
        args.filenames,
        revision=args.revision,
        include=args.include,
        exclude=args.exclude,
        mirrors=args.mirrors,
        cache_dir=args.cache_dir,
        local_dir=args.local_dir,
        locked=locked,
        verify_tls=not args.insecure,
    )
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA_VERSION, "plan": _plan_dict(result)}, indent=2))
        return EXIT_OK
    rows = [
        [
            i.entry.path,
            _size(i.entry.size),
            "present" if i.present else "fetch",
            ("sha256:" + i.entry.sha256[:12])
            if i.entry.sha256
            else ("git-sha1:" + (i.entry.git_sha1 or "")[:12]),
            ", ".join(s.mirror for s in i.sources) or "-",
        ]
        for i in result.items
    ]
    print(
        f"{result.repo_id} @ {result.revision} -> commit {result.commit} (manifest from {result.manifest_mirror})"
    )
    print(_table(rows, ["FILE", "SIZE", "STATE", "DIGEST", "SOURCES (in order)"]))
    eta = "unknown" if result.eta_s is None else f"{result.eta_s:.1f} s"
    print(
        f"total {_size(result.total_bytes)} in {len(result.items)} files; to fetch "
        f"{_size(result.fetch_bytes)} in {len(result.to_fetch)} files; needs "
        f"{_size(result.required_bytes)} free, has "
        f"{'?' if result.free_bytes is None else _size(result.free_bytes)}; ETA {eta}"
    )
    for d in result.disagreements:
        print(f"disagreement: {d.mirror} is not used for {d.path}: {d.reason}", file=sys.stderr)
    if result.excluded:
        print(f"left out by filters: {len(result.excluded)} files", file=sys.stderr)
    return EXIT_OK


def _plan_dict(plan: Any) -> dict[str, Any]:
    return {
        "repo_id": plan.repo_id,
        "revision": plan.revision,
        "commit": plan.commit,
        "manifest_mirror": plan.manifest_mirror,
        "total_bytes": plan.total_bytes,
        "fetch_bytes": plan.fetch_bytes,
        "required_bytes": plan.required_bytes,
        "free_bytes": plan.free_bytes,
        "eta_s": plan.eta_s,
        "files": [
            {
                "path": i.entry.path,
                "size": i.entry.size,
                "sha256": i.entry.sha256,
                "git_sha1": i.entry.git_sha1,
                "lfs": i.entry.lfs,
                "present": i.present,
                "sources": [{"mirror": s.mirror, "url": s.url} for s in i.sources],
                "alternatives": [
                    {
                        "size": a.entry.size,
                        "sha256": a.entry.sha256,
                        "git_sha1": a.entry.git_sha1,
                        "sources": [{"mirror": s.mirror, "url": s.url} for s in a.sources],
                    }
                    for a in i.alternatives
                ],
            }
            for i in plan.items
        ],
        "disagreements": [
            {"mirror": d.mirror, "path": d.path, "reason": d.reason, "standby": d.standby}
            for d in plan.disagreements
        ],
        "excluded": list(plan.excluded),
    }


def _cmd_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from modelget.api import verify

    result = verify(args.target, revision=args.revision, cache_dir=args.cache_dir)
    code = EXIT_OK if result.ok else EXIT_VERIFY
    counts = {s: result.count(s) for s in ("ok", "missing", "corrupted", "extra")}
    if args.json:
        payload = {
            "schema": JSON_SCHEMA_VERSION,
            "target": result.target,
            "kind": result.kind,
            "path": result.path,
            "repo_id": result.repo_id,
            "commits": list(result.commits),
            "ok": result.ok,
            "counts": counts,
            "files": [asdict(f) for f in result.files],
            "exit_code": code,
        }
        print(json.dumps(payload, indent=2))
        return code
    several = len(result.commits) > 1
    rows = [
        [
            *([(f.commit or "-")[:12]] if several else []),
            f.path,
            f.status,
            (f.expected or "-")[:16],
            (f.got or "-")[:16],
        ]
        for f in result.files
    ]
    header = [*(["COMMIT"] if several else []), "FILE", "STATUS", "EXPECTED", "GOT"]
    print(_table(rows, header))
    for f in result.files:
        if f.status != "ok":
            print(f"{f.status}: {f.path}: {f.detail}", file=sys.stderr)
    print(
        f"{result.path}: {counts['ok']} ok, {counts['missing']} missing, "
        f"{counts['corrupted']} corrupted, {counts['extra']} extra",
        file=sys.stderr,
    )
    return code


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _cmd_ls(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from modelget.api import list_models

    models = list_models(cache_dir=args.cache_dir)
    if args.json:
        print(
            json.dumps(
                {"schema": JSON_SCHEMA_VERSION, "models": [asdict(m) for m in models]}, indent=2
            )
        )
        return EXIT_OK
    rows = [
        [
            m.repo_id,
            ", ".join(
                (f"{r.commit[:12]} ({', '.join(r.refs)})" if r.refs else r.commit[:12])
                for r in m.revisions
            )
            or "-",
            _size(m.size_on_disk),
            _when(m.last_used),
        ]
        for m in models
    ]
    print(_table(rows, ["MODEL", "REVISIONS", "SIZE", "LAST_USED"]))
    total = sum(m.size_on_disk for m in models)
    print(f"{len(models)} models, {_size(total)} on disk", file=sys.stderr)
    return EXIT_OK


def _rm_summary(result: Any) -> str:
    verb = "would free" if result.dry_run else "freed"
    what = "every revision" if result.repo_removed else ", ".join(c[:12] for c in result.commits)
    text = (
        f"{result.repo_id}: {what}; {len(result.blobs)} blobs, {len(result.partials)} partial "
        f"files, refs: {', '.join(result.refs) or 'none'}; {verb} {_size(result.freed_bytes)}"
    )
    if result.kept_commits:
        text += f"; kept {', '.join(c[:12] for c in result.kept_commits)}"
    if result.skipped:
        text += f"; {len(result.skipped)} files skipped (a pull holds their lock)"
    return text


def _cmd_rm(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from modelget.api import remove
    from modelget.errors import UsageError

    if not args.yes:
        preview = remove(
            args.repo_id, revision=args.revision, cache_dir=args.cache_dir, dry_run=True
        )
        print(_rm_summary(preview), file=sys.stderr)
        if not sys.stdin.isatty():
            raise UsageError("rm needs confirmation", hint="pass --yes to remove without asking")
        if input("remove? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed", file=sys.stderr)
            return EXIT_OK
    result = remove(args.repo_id, revision=args.revision, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA_VERSION, **asdict(result)}, indent=2))
        return EXIT_OK
    print(_rm_summary(result))
    return EXIT_OK


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)


def _cmd_mirrors(args: argparse.Namespace) -> int:
    from modelget.catalogue import catalogue_path_and_origin, load_catalogue
    from modelget.settings import read_token

    location = catalogue_path_and_origin(args.mirrors)
    catalogue = load_catalogue(args.mirrors)
    if args.json:
        payload = {
            "schema": JSON_SCHEMA_VERSION,
            "version": catalogue.version,
            "sources": list(catalogue.sources),
            "origin": location.origin,
            "mirrors": [
                {
                    "name": m.name,
                    "kind": m.kind,
                    "endpoint": m.endpoint,
                    "enabled": m.enabled,
                    "weight": m.weight,
                    "max_connections": m.max_connections,
                    "token_env": m.token_env,
                    # Only whether a token is set, never the token itself.
                    "token_set": bool(m.token_env and read_token(m.token_env)),
                    "id_map": dict(m.id_map),
                    "source": m.source,
                    "line": m.line,
                }
                for m in catalogue.mirrors
            ],
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    rows = [
        [
            m.name,
            m.kind,
            m.endpoint,
            "yes" if m.enabled else "no",
            f"{m.weight:g}",
            str(m.max_connections) if m.max_connections else "auto",
            (m.token_env + (" (set)" if read_token(m.token_env) else " (unset)"))
            if m.token_env
            else "-",
        ]
        for m in catalogue.mirrors
    ]
    print(_table(rows, ["MIRROR", "KIND", "ENDPOINT", "ENABLED", "WEIGHT", "CONNS", "TOKEN"]))
    print(f"catalogue: {' + '.join(catalogue.sources)} (from {location.origin})", file=sys.stderr)
    return EXIT_OK


def _report_error(exc: ModelgetError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"schema": JSON_SCHEMA_VERSION, "error": exc.to_dict()}, indent=2))
    print(f"error: {exc.code}\n{exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"\nhint: {exc.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except ModelgetError as exc:
        _report_error(exc, bool(getattr(args, "json", False)))
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
