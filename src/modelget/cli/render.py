"""Rendering: each command's result as text (tables on stdout, notes on stderr) or as ONE
JSON envelope on one line (``--json``; docs/json.md describes every field).

Handlers (``commands.py``) decide nothing about the look and print nothing themselves: they
return an :class:`Outcome`, and :func:`emit` prints it one way or the other.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelget.datatypes import PullResult
    from modelget.errors import ModelgetError

JSON_SCHEMA_VERSION = 1
"""The version of the ``--json`` envelope (``schema`` in every final object): raised when a
field is removed or changes meaning, not when one is added."""

ENVELOPE_KEYS = ("event", "schema", "command", "exit_code")


@dataclass(frozen=True)
class Outcome:
    """What a command handler hands back: the JSON fields of its result (without the
    envelope), the exit code, and how to show it as text. ``subject``: the model it is about,
    where one command yields several results (``pull --lock`` with several models)."""

    payload: Mapping[str, Any]
    exit_code: int
    text: Callable[[], None]
    subject: str | None = None


def envelope(event: str, command: str | None, fields: Mapping[str, Any], exit_code: int) -> str:
    """One final JSON object on one line: ``event``, ``schema``, ``command``, the fields,
    ``exit_code`` last."""
    clash = set(fields) & set(ENVELOPE_KEYS)
    if clash:
        raise ValueError(f"payload keys clash with the envelope: {sorted(clash)}")
    obj = {"event": event, "schema": JSON_SCHEMA_VERSION, "command": command, **fields}
    return json.dumps({**obj, "exit_code": exit_code})


def emit(command: str, outcome: Outcome, as_json: bool) -> None:
    """Print a command's result: its text form, or its JSON envelope (``event: result``)."""
    if as_json:
        _out(envelope("result", command, outcome.payload, outcome.exit_code))
    else:
        outcome.text()


def emit_summary(command: str, outcomes: Sequence[Outcome], exit_code: int) -> None:
    """After several results (``pull --lock`` with several models): one last line with every
    result's model and exit code, and the worst of them as the process's exit code."""
    results = [{"repo_id": o.subject, "exit_code": o.exit_code} for o in outcomes]
    _out(envelope("summary", command, {"results": results}, exit_code))


def emit_error(
    command: str | None, exc: ModelgetError, as_json: bool, *, brief: bool = False
) -> None:
    """An error: ``error: CODE``, the message and the hint on stderr (``brief``: all on one
    line, for a stop the user asked for); with ``--json`` also one ``event: error`` envelope
    on stdout."""
    if as_json:
        _out(envelope("error", command, {"error": exc.to_dict()}, exc.exit_code))
    if brief:
        note(f"error: {exc.code}: {exc.message}" + (f"; {exc.hint}" if exc.hint else ""))
        return
    note(f"error: {exc.code}\n{exc.message}")
    if exc.hint:
        note(f"\nhint: {exc.hint}")


def _out(line: str) -> None:
    print(line, flush=True)


def note(text: str) -> None:
    """A message for the person at the terminal (stderr), never data."""
    print(text, file=sys.stderr)


# --- formatting ---------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def mbps(rate: float | None) -> str:
    return "-" if not rate else f"{rate / 1e6:.1f}"


def size(n: int) -> str:
    """Bytes for people (``modelget.sizes.fmt_bytes``: one rule for every report)."""
    from modelget.sizes import fmt_bytes

    return fmt_bytes(n)


def when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)


# --- each command's text ------------------------------------------------------------------


def mirrors_text(payload: Mapping[str, Any]) -> None:
    rows = [
        [
            m["name"],
            m["kind"],
            m["endpoint"],
            "yes" if m["enabled"] else "no",
            f"{m['weight']:g}",
            str(m["max_connections"]) if m["max_connections"] else "auto",
            (m["token_env"] + (" (set)" if m["token_set"] else " (unset)"))
            if m["token_env"]
            else "-",
            m["source"] + (f":{m['line']}" if m["line"] else ""),
        ]
        for m in payload["mirrors"]
    ]
    header = ["MIRROR", "KIND", "ENDPOINT", "ENABLED", "WEIGHT", "CONNS", "TOKEN", "FROM"]
    print(table(rows, header))
    note(f"catalogue: {' + '.join(payload['sources'])} (from {payload['origin']})")
    for variable in payload.get("unused", ()):
        instead = "--endpoint" if payload["origin"] == "--endpoint" else "a catalogue file"
        note(f"{variable} is set but not used: {instead} is in force (docs/mirrors.md)")


def probe_text(summary: Any) -> None:
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
                ms(p.connect_s) if p else "-",
                ms(p.ttfb_s) if p else "-",
                mbps(p.throughput_bps) if p else "-",
                has,
            ]
        )
    header = ["RANK", "MIRROR", "KIND", "STATUS", "CONNECT_MS", "LATENCY_MS", "MB/S", "HAS_REPO"]
    print(table(rows, header))
    for r in summary.ranked:
        if r.probe and r.probe.error:
            note(f"{r.mirror.name}: {r.probe.error}")
    note(f"probed {len(summary.ranked)} mirrors in {summary.report.elapsed_s:.2f} s")


def doctor_text(report: Any) -> None:
    from modelget.doctor import fmt_value
    from modelget.sizes import fmt_bytes

    def status(s: str) -> str:
        return s.upper() if s in ("fail", "warn") else s

    rows = [
        [m.name, c.name, status(c.status), fmt_value(c), c.detail]
        for m in report.mirrors
        for c in m.checks
    ]
    if rows:
        print(table(rows, ["MIRROR", "CHECK", "STATUS", "VALUE", "DETAIL"]))
        print()
    local = [[c.name, status(c.status), fmt_value(c), c.detail] for c in report.local]
    print(table(local, ["LOCAL", "STATUS", "VALUE", "DETAIL"]))
    print()
    what = f"{report.repo_id} " if report.repo_id else ""
    if report.repo_bytes is not None:
        what += f"({report.repo_files} files, {fmt_bytes(report.repo_bytes)}) "
    print(f"Verdict{' for ' + what.strip() if what else ''}: {'ok' if report.ok else 'FAILED'}")
    if report.verdict is not None:
        for finding in report.verdict.findings:
            mark = {"fail": "FAIL", "warn": "WARN"}.get(finding.level, "-")
            print(f"  {mark} {finding.message}")
    note(f"checked {len(report.mirrors)} mirrors and this machine in {report.elapsed_s:.1f} s")


def plan_text(plan: Any) -> None:
    rows = [
        [
            i.entry.path,
            size(i.entry.size),
            "present" if i.present else "fetch",
            ("sha256:" + i.entry.sha256[:12])
            if i.entry.sha256
            else ("git-sha1:" + (i.entry.git_sha1 or "")[:12]),
            ", ".join(s.mirror for s in i.sources) or "-",
        ]
        for i in plan.items
    ]
    print(
        f"{plan.repo_id} @ {plan.revision} -> commit {plan.commit} (manifest from {plan.manifest_mirror})"
    )
    print(table(rows, ["FILE", "SIZE", "STATE", "DIGEST", "SOURCES (in order)"]))
    eta = "unknown" if plan.eta_s is None else f"{plan.eta_s:.1f} s"
    free = "?" if plan.free_bytes is None else size(plan.free_bytes)
    print(
        f"total {size(plan.total_bytes)} in {len(plan.items)} files; to fetch "
        f"{size(plan.fetch_bytes)} in {len(plan.to_fetch)} files; needs "
        f"{size(plan.required_bytes)} free, has {free}; ETA {eta}"
    )
    for d in plan.disagreements:
        note(f"disagreement: {d.mirror} is not used for {d.path}: {d.reason}")
    if plan.excluded:
        note(f"left out by filters: {len(plan.excluded)} files")


def pull_text(
    result: PullResult,
    load_report: Any,
    *,
    quiet: bool,
    verbose: bool,
    printed: str | None = None,
) -> None:
    """A pull's summary, connections and timings (``-v``), failures and load test on stderr;
    the model's path on stdout (always, even with ``--quiet``), or ``printed`` (a single
    file's path, as ``hf download REPO FILE`` prints it)."""
    from modelget.cli.progress import connections_line

    failed = result.failed
    if not quiet:
        fetched = sum(1 for f in result.files if f.status == "fetched")
        reused = sum(1 for f in result.files if f.status == "reused")
        rate = result.bytes_fetched / result.transfer_s if result.transfer_s > 0 else 0.0
        by_mirror = sorted(result.bytes_by_mirror.items(), key=lambda x: -x[1])
        mirrors = ", ".join(f"{m} {size(n)}" for m, n in by_mirror)
        note(
            f"{result.repo_id} @ {result.commit[:12]}: {fetched} fetched, {reused} already here, "
            f"{len(failed)} failed; {size(result.bytes_fetched)} in {result.elapsed_s:.1f} s "
            f"({rate / 1e6:.1f} MB/s, engine {result.engine})"
            + (f"; from {mirrors}" if mirrors else "")
            + (
                f"; swarm ({result.swarm_role}): {size(result.bytes_from_peers)} from peers, "
                f"{size(result.bytes_from_mirrors)} from mirrors"
                if result.swarm_role
                else ""
            )
        )
    if verbose and not quiet:
        if result.connections:
            note(f"most {connections_line(result.connections)}")
        if result.timings:
            note("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()))
    pairs = [(f.path, f.error or "failed") for f in failed]
    for line in failure_summary(pairs, len(result.files), verbose):
        note(line)
    if load_report is not None:
        load_report_text(load_report)
    print(printed or result.path)


SUMMARY_GROUPS = 3
"""Reasons shown in a failure summary; files failing for other reasons are counted."""


def failure_summary(failed: Sequence[tuple[str, str]], total: int, verbose: bool) -> list[str]:
    """The lines a pull prints about its failed files (``(path, error)`` pairs): one file,
    one line; several, one ``error:`` line and a line per reason (how many files, which),
    at most ``SUMMARY_GROUPS`` of them. ``verbose``: every file's full error first."""
    from modelget.cli.progress import short_error

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


def load_report_text(report: Any) -> None:
    safetensors = [c for c in report.checks if c.kind == "safetensors"]
    verdict = "ok: the model loads" if report.ok else "FAILED: the model would not load"
    note(f"load test of {report.path}: {verdict}")
    if report.integrity:
        note(f"  integrity: {report.integrity}")
    note(
        f"  checked {len(report.checks)} files: {len(safetensors)} safetensors "
        f"({sum(c.tensors for c in safetensors)} tensors)"
    )
    if report.backend is not None:
        first = (
            ""
            if report.first_tensor_s is None
            else f", first tensor after {ms(report.first_tensor_s)} ms"
        )
        gbps = report.gbps
        note(
            f"  loaded {size(report.bytes)} in {report.tensors} tensors onto {report.device} "
            f"({report.backend}) in {report.seconds:.2f} s"
            + (f": {gbps:.2f} GB/s" if gbps is not None else "")
            + first
        )
    st = report.storage
    where = f"  storage: {st.device or '?'} ({st.fstype or '?'}) mounted at {st.mount_point or '?'}"
    if report.disk_read_bytes is not None:
        where += f"; read {size(report.disk_read_bytes)} from disk"
        if report.disk_busy_pct is not None:
            where += f" ({report.disk_busy_pct:.0f}% busy)"
    if report.cached_fraction is not None:
        where += f"; {report.cached_fraction * 100:.0f}% was already in the page cache"
    note(where)
    for line in report.notes:
        note(f"  note: {line}")
    for problem in report.problems:
        note(f"  problem: {problem}")


def lock_text(text: str | None, models: Sequence[Any]) -> None:
    """The lockfile on stdout (unless it went to ``--output``), a line per model on stderr."""
    if text is not None:
        sys.stdout.write(text)
    for m in models:
        note(
            f"locked {m.repo_id} @ {m.revision} -> {m.commit}: {len(m.files)} files, "
            f"{size(m.total_bytes)}"
        )


def verify_text(result: Any, counts: Mapping[str, int]) -> None:
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
    print(table(rows, header))
    for f in result.files:
        if f.status != "ok":
            note(f"{f.status}: {f.path}: {f.detail}")
    if result.repaired:
        note(f"repaired (fetched again): {', '.join(result.repaired)}")
    note(
        f"{result.path}: {counts['ok']} ok, {counts['missing']} missing, "
        f"{counts['corrupted']} corrupted, {counts['extra']} extra"
    )


def typed_id(repo_id: str, repo_type: str) -> str:
    """A repo as ``hf://`` names it without the scheme: ``org/name``, ``datasets/org/name``."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


def ls_text(models: Sequence[Any]) -> None:
    rows = [
        [
            typed_id(m.repo_id, m.repo_type),
            ", ".join(
                (f"{r.commit[:12]} ({', '.join(r.refs)})" if r.refs else r.commit[:12])
                for r in m.revisions
            )
            or "-",
            size(m.size_on_disk),
            when(m.last_used),
        ]
        for m in models
    ]
    print(table(rows, ["MODEL", "REVISIONS", "SIZE", "LAST_USED"]))
    total = sum(m.size_on_disk for m in models)
    note(f"{len(models)} models, {size(total)} on disk")


def rm_summary(result: Any) -> str:
    verb = "would free" if result.dry_run else "freed"
    what = "every revision" if result.repo_removed else ", ".join(c[:12] for c in result.commits)
    if getattr(result, "layout", "hf") == "modelscope":
        text = (
            f"{result.repo_id} (ModelScope cache): {what} with modelget's metadata, "
            f"{len(result.partials)} partial files; {verb} {size(result.freed_bytes)}"
        )
    else:
        text = (
            f"{typed_id(result.repo_id, result.repo_type)}: {what}; {len(result.blobs)} blobs, {len(result.partials)} partial "
            f"files, refs: {', '.join(result.refs) or 'none'}; {verb} {size(result.freed_bytes)}"
        )
    if result.kept_commits:
        text += f"; kept {', '.join(c[:12] for c in result.kept_commits)}"
    if result.skipped:
        text += f"; {len(result.skipped)} files skipped (a pull holds their lock)"
    return text


def rm_text(result: Any) -> None:
    """The removal's summary on stdout; a declined removal (a preview) says so on stderr."""
    if result.dry_run:
        note("nothing removed")
    else:
        print(rm_summary(result))


def export_text(result: Any) -> None:
    refs = ", ".join(result.refs) or "none (commit only)"
    note(
        f"{result.repo_id} @ {result.commit[:12]}: {result.files} files, {size(result.bytes)}; "
        f"blobs: {result.linked} linked, {result.copied} copied, {result.reused} already there; "
        f"refs: {refs}"
        + (f"; torrents: {result.torrents} (in {result.dir}/torrents)" if result.torrents else "")
    )
    print(result.dir)


def swarm_serve_text(result: Any) -> None:
    note(
        f"{result.repo_id} @ {result.commit[:12]}: seeded {len(result.info_hashes)} blobs "
        f"({size(result.bytes)}) for {result.seconds:.0f} s; {size(result.uploaded)} uploaded"
    )
