"""The pipeline facade: ``probe()`` and ``plan()`` call the stages in order and return records.

catalogue → probe/rank → sources → one agreed manifest → plan. Nothing here prints; the CLI
renders what these return.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from modelget import layout, settings
from modelget.catalogue import load_catalogue
from modelget.datatypes import FileOutcome, FileSource, Mirror, Plan, PullResult, RankedMirror
from modelget.engines import EngineName, EngineOptions
from modelget.errors import (
    AuthRequiredError,
    InsufficientDiskSpaceError,
    Interrupted,
    LayoutError,
    ModelgetError,
    ModelNotFoundError,
    NoMirrorError,
    RateLimitedError,
    RevisionNotFoundError,
    UsageError,
)
from modelget.events import NullReporter, Reporter
from modelget.export import ExportResult
from modelget.layout import free_bytes, scan
from modelget.manifest import agree, merge_digests, select_files
from modelget.plan import make_plan
from modelget.probe import ProbeReport, load_cached, probe_mirror, store_cached
from modelget.probe import probe as run_probe
from modelget.rank import rank
from modelget.sources import get_source

if TYPE_CHECKING:
    from modelget.cache import CachedModel, RemoveResult, VerifyResult
    from modelget.loadtest import LoadReport

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ProbeSummary:
    """The ranking (best first) and the raw report behind it."""

    repo_id: str | None
    ranked: tuple[RankedMirror, ...]
    report: ProbeReport


def _enabled_mirrors(mirrors: StrPath | None) -> list[Mirror]:
    catalogue = load_catalogue(mirrors)
    enabled = list(catalogue.enabled)
    if not enabled:
        raise NoMirrorError(
            f"no mirror is enabled in {' + '.join(catalogue.sources)}",
            hint="enable at least one mirror (enabled: true), see docs/mirrors.md",
        )
    return enabled


_PROBLEMS = frozenset({"down", "error", "rate-limited", "auth"})
"""Probe states worth a warning when a pull leaves the mirror out (not ``no-repo``: most
catalogues have mirrors that simply lack most repos)."""


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if (
        not repo_id
        or len(parts) > 2
        or any(not p or p in (".", "..") or p.startswith(("-", ".")) for p in parts)
        or any(not all(c.isalnum() or c in "-_." for c in p) for p in parts)
        or len(repo_id) > 96
    ):
        raise UsageError(
            f"not a valid repo id: {repo_id!r}",
            hint="a repo id looks like ORG/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct",
        )


def probe(
    repo_id: str | None = None,
    *,
    revision: str | None = None,
    mirrors: StrPath | None = None,
    timeout: float | None = None,
) -> ProbeSummary:
    """Probe every enabled mirror now (ignoring the cache, refreshing it) and rank them."""
    if repo_id is not None:
        _check_repo_id(repo_id)
    enabled = _enabled_mirrors(mirrors)
    report = run_probe(enabled, repo_id, revision, timeout=timeout or settings.probe_timeout_s())
    store_cached(settings.cache_dir() / "probes.json", enabled, repo_id, report.results)
    return ProbeSummary(repo_id, tuple(rank(enabled, report.results)), report)


def _probe_for_plan(enabled: list[Mirror], repo_id: str, revision: str | None) -> ProbeReport:
    """Fresh probes, or cached ones plus the manifests (which are never cached)."""
    timeout = settings.probe_timeout_s()
    cache_file = settings.cache_dir() / "probes.json"
    cached = load_cached(cache_file, enabled, repo_id, settings.probe_ttl_s())
    if cached is None:
        report = run_probe(enabled, repo_id, revision, timeout=timeout)
        store_cached(cache_file, enabled, repo_id, report.results)
        return report
    report = ProbeReport(results=dict(cached), cached=True)
    for mirror in enabled:
        if cached[mirror.name].status != "ok":
            continue
        try:
            report.manifests[mirror.name] = get_source(mirror.kind).resolve(
                mirror, repo_id, revision, timeout=timeout
            )
        except ModelgetError as exc:
            # The mirror changed since it was probed: probe it again, now.
            result, manifest, error = probe_mirror(mirror, repo_id, revision, timeout)
            report.results[mirror.name] = result
            if manifest is not None:
                report.manifests[mirror.name] = manifest
            report.errors[mirror.name] = error or exc
    return report


def _no_manifest_error(repo_id: str, revision: str | None, report: ProbeReport) -> ModelgetError:
    """The clearest single error when no mirror could describe the repo."""
    lines = [
        f"  {name}: {report.errors[name].message if name in report.errors else r.error or r.status}"
        for name, r in report.results.items()
    ]
    detail = "\n".join(lines)
    errors = list(report.errors.values())
    shown = repo_id + (f"@{revision}" if revision else "")
    auth = [e for e in errors if isinstance(e, AuthRequiredError)]
    if auth:
        return AuthRequiredError(f"{shown} needs a token:\n{detail}", hint=auth[0].hint)
    limited = [e for e in errors if isinstance(e, RateLimitedError)]
    if limited:
        return RateLimitedError(
            f"every mirror with {shown} is rate limiting:\n{detail}",
            retry_after_s=max((e.retry_after_s or 0.0) for e in limited) or None,
            hint=limited[0].hint,
        )
    if (
        errors
        and any(isinstance(e, RevisionNotFoundError) for e in errors)
        and all(isinstance(e, (ModelNotFoundError, RevisionNotFoundError)) for e in errors)
    ):
        return RevisionNotFoundError(
            f"revision {revision or '(default)'} of {repo_id} is on no mirror:\n{detail}",
            hint="check the branch, tag or commit name",
        )
    if (
        errors
        and all(isinstance(e, ModelNotFoundError) for e in errors)
        and len(errors) == len(report.results)
    ):
        return ModelNotFoundError(
            f"{repo_id} is on no mirror of the catalogue:\n{detail}",
            hint="check the repo id, or add a mirror that has it (docs/mirrors.md)",
        )
    return NoMirrorError(
        f"no mirror could serve {shown}:\n{detail}",
        hint="run `modelget probe` to see each mirror's state",
    )


def plan(
    repo_id: str,
    filenames: Sequence[str] = (),
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: StrPath | None = None,
    cache_dir: StrPath | None = None,
    local_dir: StrPath | None = None,
) -> Plan:
    """What ``pull`` would do: the agreed manifest, each file's sources in rank order,
    what is already present, the totals, and a refusal if the disk is too small."""
    return _plan(
        repo_id,
        filenames,
        revision=revision,
        include=include,
        exclude=exclude,
        mirrors=mirrors,
        cache_dir=cache_dir,
        local_dir=local_dir,
    )[0]


def _plan(
    repo_id: str,
    filenames: Sequence[str] = (),
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: StrPath | None = None,
    cache_dir: StrPath | None = None,
    local_dir: StrPath | None = None,
    reporter: Reporter | None = None,
) -> tuple[Plan, dict[str, Mirror]]:
    _check_repo_id(repo_id)
    enabled = _enabled_mirrors(mirrors)
    report = _probe_for_plan(enabled, repo_id, revision)
    ranked = rank(enabled, report.results)
    order = [r.mirror for r in ranked if r.usable and r.mirror.name in report.manifests]
    if not order:
        raise _no_manifest_error(repo_id, revision, report)
    if reporter is not None:
        for r in ranked:
            probed = report.results.get(r.mirror.name)
            if r.mirror in order or probed is None or probed.status not in _PROBLEMS:
                continue
            error = report.errors.get(r.mirror.name)
            why = error.message if error is not None else probed.error or probed.status
            reporter.on_message("warning", f"{r.mirror.name} is not used: {probed.status}: {why}")

    reference = report.manifests[order[0].name]
    others = [report.manifests[m.name] for m in order[1:]]
    candidates, disagreements = agree(reference, others)
    wanted, excluded = select_files(
        reference.files, filenames=filenames, include=include, exclude=exclude
    )
    by_name = {m.name: m for m in order}
    files_of = {m.name: report.manifests[m.name].by_path() for m in order}
    entries = []
    sources: dict[str, list[FileSource]] = {}
    for wanted_entry in wanted:
        agreeing = candidates.get(wanted_entry.path, [])
        # The copy most mirrors agree on (it may not be the reference mirror's).
        entry = files_of[agreeing[0]][wanted_entry.path] if agreeing else wanted_entry
        entries.append(merge_digests(entry, (files_of[n][entry.path] for n in agreeing[1:])))
        # Each mirror's URL is built from its own entry (a cdn addresses bytes by sha256).
        sources[entry.path] = [
            FileSource(
                name,
                get_source(by_name[name].kind).file_url(
                    by_name[name], report.manifests[name], files_of[name][entry.path]
                ),
            )
            for name in agreeing
        ]

    hub_cache = _hub_cache(cache_dir)
    dest = Path(local_dir) if local_dir is not None else hub_cache
    present = scan(
        entries,
        repo_id=repo_id,
        commit=reference.commit,
        cache_dir=hub_cache,
        local_dir=Path(local_dir) if local_dir is not None else None,
    )
    throughput = {name: r.throughput_bps for name, r in report.results.items() if r.throughput_bps}
    result = make_plan(
        reference,
        entries,
        sources,
        present=present,
        free_bytes=free_bytes(dest),
        throughput_bps=throughput,
        disagreements=disagreements,
        excluded=excluded,
    )
    return result, by_name


def pull(
    repo_id: str,
    filenames: Sequence[str] = (),
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: StrPath | None = None,
    cache_dir: StrPath | None = None,
    local_dir: StrPath | None = None,
    engine: EngineName = "auto",
    options: EngineOptions | None = None,
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
) -> PullResult:
    """Get ``repo_id``'s files onto this machine, verified, in the Hugging Face cache
    (or ``local_dir``), and return what happened.

    Raises ``Interrupted`` (exit 130) when ``cancel`` is set or on Ctrl-C, with resumable
    state kept; ``InsufficientDiskSpaceError`` when the disk fills. Partial failures are in
    the result (``status == "partial"``), not raised.
    """
    from modelget.engines import select_engine
    from modelget.execute import Executor, Target

    started = time.perf_counter()
    reporter = reporter or NullReporter()
    cancel = cancel or threading.Event()
    the_plan, by_name = _plan(
        repo_id,
        filenames,
        revision=revision,
        include=include,
        exclude=exclude,
        mirrors=mirrors,
        cache_dir=cache_dir,
        local_dir=local_dir,
        reporter=reporter,
    )
    plan_s = time.perf_counter() - started
    hub_cache = _hub_cache(cache_dir)
    target = Target(hub_cache, repo_id, the_plan.commit, Path(local_dir) if local_dir else None)
    reporter.on_plan(
        repo_id, the_plan.commit, len(the_plan.to_fetch), the_plan.fetch_bytes, the_plan.total_bytes
    )
    for d in the_plan.disagreements:
        reporter.on_message(
            "warning", f"disagreement: {d.mirror} is not used for {d.path}: {d.reason}"
        )
    chosen = select_engine(engine, options or EngineOptions(), reporter)
    outcomes: list[FileOutcome] = []
    transfer_started = time.perf_counter()
    try:
        executor = Executor(the_plan, by_name, target, chosen, reporter, cancel)
        box: list[list[FileOutcome]] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                box.append(executor.run())
            except BaseException as exc:  # handed to the caller's thread below
                errors.append(exc)

        worker = threading.Thread(target=work, name="modelget-pull", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
        except KeyboardInterrupt:
            cancel.set()
            worker.join()
        if errors:
            if isinstance(errors[0], OSError):
                raise _local_error(errors[0], repo_id, hub_cache) from errors[0]
            raise errors[0]
        outcomes = box[0] if box else []
    finally:
        chosen.close()
    transfer_s = time.perf_counter() - transfer_started

    if cancel.is_set():
        raise Interrupted(
            f"pull of {repo_id} interrupted; what was downloaded is kept",
            hint="run the same command again to resume",
        )
    if executor.disk_full:
        raise InsufficientDiskSpaceError(
            f"the disk filled up while pulling {repo_id}; nothing incomplete was put in place",
            hint="free some space and run the same command again: it resumes where it stopped",
        )
    if any(o.status != "failed" for o in outcomes) or not outcomes:
        try:
            layout.write_ref(hub_cache, repo_id, the_plan.revision, the_plan.commit)
            if revision is None and the_plan.revision != "main":
                # huggingface_hub and transformers look up refs/main when given no revision.
                layout.write_ref(hub_cache, repo_id, "main", the_plan.commit)
        except OSError as exc:
            raise _local_error(exc, repo_id, hub_cache) from exc
    per_mirror: dict[str, int] = {}
    for o in outcomes:
        for m, n in o.bytes_by_mirror.items():
            per_mirror[m] = per_mirror.get(m, 0) + n
    failed = [o for o in outcomes if o.status == "failed"]
    status = "ok" if not failed else ("error" if len(failed) == len(outcomes) else "partial")
    where = (
        Path(local_dir) if local_dir else layout.snapshot_dir(hub_cache, repo_id, the_plan.commit)
    )
    order = {i.entry.path: n for n, i in enumerate(the_plan.items)}
    return PullResult(
        repo_id=repo_id,
        revision=the_plan.revision,
        commit=the_plan.commit,
        path=str(where),
        status=status,
        engine=chosen.name,
        files=tuple(sorted(outcomes, key=lambda o: order.get(o.path, 0))),
        bytes_fetched=sum(per_mirror.values()),
        bytes_by_mirror=per_mirror,
        elapsed_s=time.perf_counter() - started,
        plan_s=plan_s,
        transfer_s=transfer_s,
    )


def _local_error(exc: OSError, repo_id: str, hub_cache: Path) -> ModelgetError:
    """A local write that failed (the cache's file system), as the error the user can act on."""
    where = exc.filename or hub_cache
    elsewhere = "pull into a writable cache: --cache-dir DIR (or HF_HUB_CACHE=DIR)"
    if exc.errno == errno.ENOSPC:
        return InsufficientDiskSpaceError(
            f"the disk filled up while pulling {repo_id} (writing {where}); nothing "
            "incomplete was put in place",
            hint="free some space and run the same command again: it resumes where it stopped",
        )
    if exc.errno == errno.EROFS:
        return LayoutError(f"cannot write to {where}: the file system is read-only", hint=elsewhere)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return LayoutError(f"cannot write to {where}: permission denied", hint=elsewhere)
    return LayoutError(f"cannot write to {where}: {exc.strerror or exc}", hint=elsewhere)


def _hub_cache(cache_dir: StrPath | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else settings.hf_hub_cache()


def verify(
    target: StrPath,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
) -> VerifyResult:
    """Re-hash what is on disk against the recorded digests: ``target`` is a repo id in the
    Hugging Face cache (every cached snapshot, or ``revision``'s), a ``snapshots/COMMIT`` or
    ``models--org--name`` directory, or a ``--local-dir`` download. Never raises for bad
    files: they are in the result (``result.ok``, ``result.problems``)."""
    from modelget import cache

    text = os.fspath(target)
    path = Path(text).expanduser()
    hub_cache = _hub_cache(cache_dir)
    if (
        not isinstance(target, str)
        or text.startswith(("/", "./", "../", "~"))
        or text in (".", "..")
    ):
        return cache.verify_dir(path, revision)
    try:
        _check_repo_id(text)
        in_cache = layout.repo_dir(hub_cache, text).is_dir()
    except UsageError:
        in_cache = False
    if not in_cache and path.is_dir():
        return cache.verify_dir(path, revision)
    _check_repo_id(text)
    return cache.verify_repo(hub_cache, text, revision)


def list_models(*, cache_dir: StrPath | None = None) -> tuple[CachedModel, ...]:
    """The models in the Hugging Face cache: revisions, refs, size on disk, last used."""
    from modelget import cache

    return cache.list_models(_hub_cache(cache_dir))


def remove(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
    dry_run: bool = False,
) -> RemoveResult:
    """Remove ``repo_id``'s snapshot of ``revision`` (default: every snapshot), the blobs no
    remaining snapshot uses, partial downloads and refs to removed commits. Never follows a
    symbolic link, never deletes outside ``models--org--name``. ``dry_run``: only report."""
    from modelget import cache

    _check_repo_id(repo_id)
    return cache.remove(_hub_cache(cache_dir), repo_id, revision, dry_run=dry_run)


def export(
    repo_id: str,
    to: StrPath,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
) -> ExportResult:
    """Publish ``repo_id`` from the Hugging Face cache as a static ``cdn`` tree in ``to``
    (``modelget.cdn/1``, see docs/mirrors.md): every blob verified, hardlinked or copied,
    then the manifest and ``refs.json``. Serve ``to`` with nginx or sync it to a bucket."""
    from modelget.export import export_model

    _check_repo_id(repo_id)
    hub_cache = _hub_cache(cache_dir)
    return export_model(repo_id, Path(to), cache_dir=hub_cache, revision=revision)


def model_root(
    target: StrPath, *, revision: str | None = None, cache_dir: StrPath | None = None
) -> Path:
    """A model directory: ``target`` itself when it is a directory, else the snapshot of the
    repo id ``target`` at ``revision`` (default ``main``) in the Hugging Face cache."""
    from modelget.cache import repo_or_error, resolve_revision

    path = Path(target)
    if path.is_dir():
        return path
    repo_id = str(target)
    _check_repo_id(repo_id)
    repo = repo_or_error(_hub_cache(cache_dir), repo_id)
    return repo / "snapshots" / resolve_revision(repo, repo_id, revision or "main")


def load_test(
    target: StrPath,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    warm: bool = False,
) -> LoadReport:
    """Check every file a loader reads and load every tensor onto ``device`` (see
    ``modelget.loadtest``). ``warm``: read the files into the page cache first."""
    from modelget import loadtest

    root = model_root(target, revision=revision, cache_dir=cache_dir)
    if warm:
        loadtest.warm(root)
    return loadtest.load_model(root, device)
