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
from modelget.datatypes import (
    Alternative,
    FileEntry,
    FileOutcome,
    FileSource,
    Manifest,
    Mirror,
    Plan,
    PullResult,
    RankedMirror,
)
from modelget.engines import Engine, EngineName, EngineOptions
from modelget.errors import (
    AuthRequiredError,
    InsufficientDiskSpaceError,
    Interrupted,
    LayoutError,
    LockedCommitMissingError,
    LockMismatchError,
    ModelgetError,
    ModelNotFoundError,
    NoMirrorError,
    RateLimitedError,
    RevisionNotFoundError,
    UnsafeManifestError,
    UsageError,
)
from modelget.events import NullReporter, Reporter
from modelget.export import ExportResult
from modelget.layout import free_bytes, scan
from modelget.lockfile import LockedModel, Lockfile, agree_with_lock, check_entries
from modelget.manifest import Copy, check_collisions, copies, merge_digests, select_files, settle
from modelget.manifest import check_repo_id as _check_repo_id
from modelget.manifest import check_revision as _check_revision
from modelget.plan import make_plan
from modelget.probe import ProbeReport, load_cached, store_cached
from modelget.probe import probe as run_probe
from modelget.rank import rank
from modelget.sources import get_source

if TYPE_CHECKING:
    from modelget.cache import CachedModel, RemoveResult, VerifyResult
    from modelget.doctor import DoctorReport
    from modelget.loadtest import LoadReport

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ProbeSummary:
    """The ranking (best first) and the raw report behind it."""

    repo_id: str | None
    ranked: tuple[RankedMirror, ...]
    report: ProbeReport


INSECURE_WARNING = (
    "TLS certificate checks are OFF (--insecure): any machine between you and the mirrors "
    "can read or change what they send, tokens included; every file is still checked "
    "against its digest"
)


def _enabled_mirrors(mirrors: StrPath | None, verify_tls: bool = True) -> list[Mirror]:
    catalogue = load_catalogue(mirrors)
    enabled = list(catalogue.enabled)
    if not enabled:
        raise NoMirrorError(
            f"no mirror is enabled in {' + '.join(catalogue.sources)}",
            hint="enable at least one mirror (enabled: true), see docs/mirrors.md",
        )
    if not verify_tls:
        from dataclasses import replace

        enabled = [replace(m, verify_tls=False) for m in enabled]
        if any(m.kind == "hf" for m in enabled):
            from modelget.sources.hf import prepare_unverified

            # Before the probes run in parallel: this replaces huggingface_hub's client.
            prepare_unverified()
    return enabled


_PROBLEMS = frozenset({"down", "error", "rate-limited", "auth"})
"""Probe states worth a warning when a pull leaves the mirror out (not ``no-repo``: most
catalogues have mirrors that simply lack most repos)."""


def probe(
    repo_id: str | None = None,
    *,
    revision: str | None = None,
    mirrors: StrPath | None = None,
    timeout: float | None = None,
    verify_tls: bool = True,
) -> ProbeSummary:
    """Probe every enabled mirror now (ignoring the cache, refreshing it) and rank them."""
    if repo_id is not None:
        _check_repo_id(repo_id)
    _check_revision(revision)
    enabled = _enabled_mirrors(mirrors, verify_tls)
    report = run_probe(enabled, repo_id, revision, timeout=timeout or settings.probe_timeout_s())
    store_cached(settings.cache_dir() / "probes.json", enabled, repo_id, report.results)
    return ProbeSummary(repo_id, tuple(rank(enabled, report.results)), report)


def _probe_for_plan(enabled: list[Mirror], repo_id: str, revision: str | None) -> ProbeReport:
    """Fresh probes, or cached ones plus the manifests (which are never cached), every mirror
    at once. No throughput sample where it cannot change the choice: with one usable mirror,
    or with fresh cached results (which keep the throughput measured then)."""
    timeout = settings.probe_timeout_s()
    cache_file = settings.cache_dir() / "probes.json"
    cached = load_cached(cache_file, enabled, repo_id, settings.probe_ttl_s())
    report = run_probe(
        enabled, repo_id, revision, timeout=timeout, sample="unless-alone", cached=cached
    )
    if cached is None:
        store_cached(cache_file, enabled, repo_id, report.results)
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
    unsafe = [e for e in errors if isinstance(e, UnsafeManifestError)]
    if unsafe:
        return UnsafeManifestError(
            f"refusing what the mirrors list for {shown} (nothing was written):\n{detail}",
            hint="a mirror that lists such paths, digests or sizes is broken or hostile: "
            "disable it in mirrors.yaml (enabled: false) and tell its operator",
        )
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
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return NoMirrorError(
            f"no mirror could serve {shown}:\n{detail}",
            hint="a mirror's TLS certificate is not trusted (self-signed, a private CA, or the "
            "wrong host): fix the certificate, or, on a network you trust, pass --insecure",
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
    locked: LockedModel | None = None,
    verify_tls: bool = True,
) -> Plan:
    """What ``pull`` would do: the agreed manifest, each file's sources in rank order,
    what is already present, the totals, and a refusal if the disk is too small.
    ``verify_tls=False`` (``--insecure``) skips TLS certificate checks."""
    return _plan(
        repo_id,
        filenames,
        revision=revision,
        include=include,
        exclude=exclude,
        mirrors=mirrors,
        cache_dir=cache_dir,
        local_dir=local_dir,
        locked=locked,
        verify_tls=verify_tls,
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
    locked: LockedModel | None = None,
    check_space: bool = True,
    verify_tls: bool = True,
    reporter: Reporter | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[Plan, dict[str, Mirror]]:
    _check_repo_id(repo_id)
    if locked is not None:
        revision = locked.commit
    _check_revision(revision)
    enabled = _enabled_mirrors(mirrors, verify_tls)
    probe_started = time.perf_counter()
    report = _probe_for_plan(enabled, repo_id, revision)
    if timings is not None:
        timings["probe"] = time.perf_counter() - probe_started
    ranked = rank(enabled, report.results)
    order = [r.mirror for r in ranked if r.usable and r.mirror.name in report.manifests]
    if locked is not None:
        order = [m for m in order if report.manifests[m.name].commit == locked.commit]
    if not order:
        failure = _no_manifest_error(repo_id, revision, report)
        if locked is not None and isinstance(
            failure, (ModelNotFoundError, RevisionNotFoundError, NoMirrorError)
        ):
            raise LockedCommitMissingError(
                f"commit {locked.commit} of {repo_id}, pinned by the lockfile, is on no mirror "
                f"now ({failure.code}):\n" + failure.message.split("\n", 1)[-1],
                hint="the commit may have been force-pushed away or the repo deleted: add a "
                "mirror that still has it (a team cdn export, say), or lock a new commit",
            ) from failure
        raise failure
    if reporter is not None:
        for r in ranked:
            probed = report.results.get(r.mirror.name)
            if r.mirror in order or probed is None or probed.status not in _PROBLEMS:
                continue
            error = report.errors.get(r.mirror.name)
            why = error.message if error is not None else probed.error or probed.status
            reporter.on_message("warning", f"{r.mirror.name} is not used: {probed.status}: {why}")

    lock_entries: dict[str, FileEntry] = {}
    if locked is not None:
        order, lock_entries = _reference_for_lock(locked, order, report.manifests)
    reference = report.manifests[order[0].name]
    others = [report.manifests[m.name] for m in order[1:]]
    by_name = {m.name: m for m in order}
    files_of = {m.name: report.manifests[m.name].by_path() for m in order}
    groups: dict[str, list[Copy]]
    if locked is not None:
        candidates, disagreements = agree_with_lock(
            locked, [(m.name, report.manifests[m.name].by_path()) for m in order]
        )
        # The locked copy; every source matches it.
        groups = {
            p: [Copy(lock_entries[p], tuple(names))] for p, names in candidates.items() if names
        }
    else:
        groups, disagreements = copies(reference, others)
    if locked is not None:
        wanted = [lock_entries[p] for p in locked.paths]
        excluded = sorted({f.path for f in reference.files} - set(locked.paths))
    else:
        wanted, excluded = select_files(
            reference.files, filenames=filenames, include=include, exclude=exclude
        )
    check_collisions(wanted)

    def sourced(copy: Copy) -> Alternative:
        """The copy's entry (with a sha256 borrowed from its other mirrors if it lacks one)
        and each of its mirrors' URLs, built from that mirror's own entry (a cdn addresses
        bytes by sha256)."""
        names = copy.mirrors
        entry = merge_digests(copy.entry, (files_of[n][copy.entry.path] for n in names[1:]))
        return Alternative(
            entry,
            tuple(
                FileSource(
                    name,
                    get_source(by_name[name].kind).file_url(
                        by_name[name], report.manifests[name], files_of[name][entry.path]
                    ),
                )
                for name in names
            ),
        )

    tries: dict[str, list[Alternative]] = {}
    for wanted_entry in wanted:
        found = groups.get(wanted_entry.path)
        # Where the mirrors tie, every copy, best first; else the one most mirrors agree on
        # (it may not be the reference mirror's).
        tries[wanted_entry.path] = (
            [sourced(c) for c in found] if found else [Alternative(wanted_entry, ())]
        )

    hub_cache = _hub_cache(cache_dir)
    dest = Path(local_dir) if local_dir is not None else hub_cache

    def here(entries: Sequence[FileEntry]) -> set[str]:
        return scan(
            entries,
            repo_id=repo_id,
            commit=reference.commit,
            cache_dir=hub_cache,
            local_dir=Path(local_dir) if local_dir is not None else None,
        )

    present = here([t[0].entry for t in tries.values()])
    for path, tried in tries.items():
        if len(tried) < 2:
            continue
        # A tie already settled by an earlier pull: the copy here was verified when it landed.
        k = next(
            (
                k
                for k, alt in enumerate(tried)
                if (path in present if k == 0 else here([alt.entry]))
            ),
            None,
        )
        if k is None:
            continue
        present.add(path)
        settled = settle(
            path,
            [Copy(a.entry, tuple(s.mirror for s in a.sources)) for a in tried],
            k,
            "already here, verified when fetched",
        )
        disagreements = [d for d in disagreements if not (d.path == path and d.standby)] + settled
        tries[path] = [tried[k], *tried[:k], *tried[k + 1 :]]
    entries = [t[0].entry for t in tries.values()]
    sources = {path: list(t[0].sources) for path, t in tries.items()}
    alternatives = {path: t[1:] for path, t in tries.items() if len(t) > 1}
    throughput = {name: r.throughput_bps for name, r in report.results.items() if r.throughput_bps}
    result = make_plan(
        reference,
        entries,
        sources,
        present=present,
        free_bytes=free_bytes(dest) if check_space else None,
        throughput_bps=throughput,
        disagreements=disagreements,
        excluded=excluded,
        alternatives=alternatives,
    )
    return result, by_name


def _reference_for_lock(
    locked: LockedModel, order: list[Mirror], manifests: dict[str, Manifest]
) -> tuple[list[Mirror], dict[str, FileEntry]]:
    """The mirrors in rank order, led by the best one whose manifest matches the lock, and the
    entries to pull; ``LockMismatchError`` when no mirror lists the locked bytes."""
    problems: dict[str, list[str]] = {}
    for mirror in order:
        entries, found = check_entries(locked, manifests[mirror.name].files)
        if not found:
            return [mirror, *(m for m in order if m is not mirror)], entries
        problems[mirror.name] = found
    detail = "\n".join(
        f"  {name}: "
        + "; ".join(found[:3])
        + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")
        for name, found in problems.items()
    )
    raise LockMismatchError(
        f"no mirror lists the bytes the lockfile pins for {locked.repo_id} @ "
        f"{locked.commit[:12]}:\n{detail}",
        hint="a mirror is serving other files under the same commit: remove it from the "
        "catalogue, or lock again if the change is expected",
    )


def lock(
    targets: Sequence[str],
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: StrPath | None = None,
    verify_tls: bool = True,
) -> Lockfile:
    """Pin each ``REPO_ID`` (or ``REPO_ID@REVISION``) to its commit, with every file's size and
    digests as the mirrors agree on them: what ``pull(..., locked=...)`` reproduces."""
    models = []
    for target in targets:
        repo_id, at, rev = target.partition("@")
        if at and not rev:
            raise UsageError(f"empty revision in {target!r}", hint="write REPO_ID@REVISION")
        the_plan, _ = _plan(
            repo_id,
            revision=rev or revision,
            include=include,
            exclude=exclude,
            mirrors=mirrors,
            check_space=False,
            verify_tls=verify_tls,
        )
        files = tuple(item.entry for item in the_plan.items)
        if not files:
            raise UsageError(
                f"nothing to lock for {target}: no file matches the filters",
                hint="check --include / --exclude",
            )
        models.append(LockedModel(repo_id, the_plan.revision, the_plan.commit, files))
    return Lockfile(tuple(models))


class _EngineStarter:
    """Selects the engine and starts it (``prepare``) in a background thread, so that aria2c
    comes up while the mirrors are probed and the plan is made. ``engine()`` waits for it
    (and raises what starting it raised); ``close()`` waits and releases it, on every path."""

    def __init__(self, name: EngineName, options: EngineOptions, reporter: Reporter) -> None:
        self.seconds = 0.0
        self._engine: Engine | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._start,
            args=(name, options, reporter),
            name="modelget-engine-start",
            daemon=True,
        )
        self._thread.start()

    def _start(self, name: EngineName, options: EngineOptions, reporter: Reporter) -> None:
        from modelget.engines import select_engine

        started = time.perf_counter()
        engine: Engine | None = None
        try:
            engine = select_engine(name, options, reporter)
            engine.prepare()
            self._engine = engine
        except BaseException as exc:  # handed to the pull's thread by engine()
            if engine is not None:
                engine.close()
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started

    def engine(self) -> Engine:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._engine is not None
        return self._engine

    def close(self) -> None:
        self._thread.join()
        if self._engine is not None and not self._closed:
            self._closed = True
            self._engine.close()


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
    locked: LockedModel | None = None,
    verify_tls: bool = True,
) -> PullResult:
    """Get ``repo_id``'s files onto this machine, verified, in the Hugging Face cache
    (or ``local_dir``), and return what happened. ``verify_tls=False`` (``--insecure``)
    skips TLS certificate checks on every mirror, and says so through ``reporter``.

    Raises ``Interrupted`` (exit 130) when ``cancel`` is set or on Ctrl-C, with resumable
    state kept; ``InsufficientDiskSpaceError`` when the disk fills. Partial failures are in
    the result (``status == "partial"``), not raised.

    With ``locked`` (a model from a lockfile, see :func:`lock`) the pull fetches exactly the
    locked commit's locked files, checked against the lock's sizes and digests before any byte
    moves: ``LockedCommitMissingError`` when no mirror has the commit any more,
    ``LockMismatchError`` when the mirrors list other bytes. ``repo_id`` must be the locked one;
    ``revision``, ``filenames`` and the globs must be left out.
    """
    from modelget.execute import Executor, Target

    started = time.perf_counter()
    timings: dict[str, float] = {}
    reporter = reporter or NullReporter()
    cancel = cancel or threading.Event()
    if locked is not None and (
        repo_id != locked.repo_id or revision or filenames or include or exclude
    ):
        raise UsageError(
            "a locked pull takes its repo, commit and files from the lockfile",
            hint="leave out --revision, file names, --include and --exclude with --lock",
        )
    # Usage errors first: nothing is started for a pull that cannot run.
    _check_repo_id(repo_id)
    _check_revision(locked.commit if locked is not None else revision)
    options = options or EngineOptions()
    verify_tls = verify_tls and options.verify_tls
    if not verify_tls:
        from dataclasses import replace

        reporter.on_message("warning", INSECURE_WARNING)
        options = replace(options, verify_tls=False)
    # The engine (aria2c) starts while the mirrors are probed and the plan is made.
    starter = _EngineStarter(engine, options, reporter)
    try:
        the_plan, by_name = _plan(
            repo_id,
            filenames,
            revision=revision,
            include=include,
            exclude=exclude,
            mirrors=mirrors,
            cache_dir=cache_dir,
            local_dir=local_dir,
            locked=locked,
            verify_tls=verify_tls,
            reporter=reporter,
            timings=timings,
        )
        plan_s = time.perf_counter() - started
        timings["plan"] = plan_s
        hub_cache = _hub_cache(cache_dir)
        target = Target(hub_cache, repo_id, the_plan.commit, Path(local_dir) if local_dir else None)
        reporter.on_plan(
            repo_id,
            the_plan.commit,
            len(the_plan.to_fetch),
            the_plan.fetch_bytes,
            the_plan.total_bytes,
        )
        for d in the_plan.disagreements:
            reporter.on_message(
                "warning",
                f"disagreement: {d.mirror} lists another copy of {d.path}: {d.reason}"
                if d.standby
                else f"disagreement: {d.mirror} is not used for {d.path}: {d.reason}",
            )
        waited = time.perf_counter()
        chosen = starter.engine()
        timings["engine_start"] = starter.seconds
        timings["engine_wait"] = time.perf_counter() - waited
        outcomes: list[FileOutcome] = []
        transfer_started = time.perf_counter()
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
        starter.close()
    transfer_s = time.perf_counter() - transfer_started
    timings["transfer"] = transfer_s
    # The executor's own stages; ``first_byte`` and ``last_byte`` are instants in its run,
    # counted here from the pull's start.
    offset = transfer_started - started
    for key, value in executor.timings.items():
        timings.setdefault(key, value + (offset if key in ("first_byte", "last_byte") else 0.0))

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
            # A locked pull points the locked ref (say main) at the locked commit: on this
            # machine the model then loads by that name, offline, at exactly the locked bytes.
            ref = locked.revision if locked is not None else the_plan.revision
            layout.write_ref(hub_cache, repo_id, ref, the_plan.commit)
            if revision is None and ref != "main" and locked is None:
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
    # Outvoted mirrors (the plan's), and where the mirrors tied, those the bytes proved wrong
    # (the executor's); a tie on a file that failed with every copy stays standby.
    settled = {d.path for d in executor.disagreements}
    disagreements = (
        *(
            d
            for d in the_plan.disagreements
            if d.path in order and not (d.standby and d.path in settled)
        ),
        *executor.disagreements,
    )
    elapsed = time.perf_counter() - started
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
        elapsed_s=elapsed,
        plan_s=plan_s,
        transfer_s=transfer_s,
        timings={**timings, "total": elapsed},
        connections=executor.connections,
        disagreements=disagreements,
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


def doctor(
    repo_id: str | None = None,
    *,
    revision: str | None = None,
    mirrors: StrPath | None = None,
    cache_dir: StrPath | None = None,
    timeout: float | None = None,
) -> DoctorReport:
    """Why would a pull be slow or stuck? Check every enabled mirror (DNS, TCP, TLS, the
    repo, time to first byte, Range, throughput) and this machine (free space, filesystem,
    memory, CPUs, cache disk speed, aria2c, GPU) at once, and judge (``report.verdict``).
    Never raises for what it diagnoses: failed checks are in the report."""
    from modelget.doctor import run

    if repo_id is not None:
        _check_repo_id(repo_id)
    enabled = list(load_catalogue(mirrors).enabled)
    return run(
        enabled,
        repo_id,
        revision,
        cache_dir=_hub_cache(cache_dir),
        timeout=timeout or settings.probe_timeout_s(),
    )
