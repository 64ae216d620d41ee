"""The pipeline facade: ``probe()`` and ``plan()`` call the stages in order and return records.

catalogue → probe/rank → sources → one agreed manifest → plan. Nothing here prints; the CLI
renders what these return.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from modelget import layout, settings
from modelget.datatypes import (
    FileEntry,
    Mirror,
    Plan,
    PullResult,
    RankedMirror,
)
from modelget.endpoints import MirrorsArg, catalogue_in_force
from modelget.engines import EngineName, EngineOptions
from modelget.errors import (
    MirrorsUnreachableError,
    OfflineMissingError,
    UsageError,
)
from modelget.events import NullReporter, Reporter
from modelget.export import ExportResult
from modelget.layout import free_bytes, scan
from modelget.lockfile import LockedModel, Lockfile
from modelget.manifest import check_repo_id as _check_repo_id
from modelget.manifest import check_revision as _check_revision
from modelget.plan import assemble, make_plan, settle_present
from modelget.probe import ProbeReport, store_cached
from modelget.probe import probe as run_probe
from modelget.rank import rank
from modelget.resolve import enabled_mirrors, resolve
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


def probe(
    repo_id: str | None = None,
    *,
    revision: str | None = None,
    mirrors: MirrorsArg = None,
    timeout: float | None = None,
    verify_tls: bool = True,
) -> ProbeSummary:
    """Probe every enabled mirror now (ignoring the cache, refreshing it) and rank them."""
    if repo_id is not None:
        _check_repo_id(repo_id)
    _check_revision(revision)
    enabled = enabled_mirrors(mirrors, verify_tls)
    report = run_probe(enabled, repo_id, revision, timeout=timeout or settings.probe_timeout_s())
    store_cached(settings.cache_dir() / "probes.json", enabled, repo_id, report.results, revision)
    return ProbeSummary(repo_id, tuple(rank(enabled, report.results)), report)


def plan(
    repo_id: str,
    filenames: Sequence[str] = (),
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: MirrorsArg = None,
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
    mirrors: MirrorsArg = None,
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
    resolved = resolve(
        repo_id,
        revision,
        mirrors=mirrors,
        verify_tls=verify_tls,
        locked=locked,
        reporter=reporter,
        timings=timings,
    )
    order, manifests = resolved.order, resolved.manifests
    by_name = {m.name: m for m in order}
    files_of = {m.name: manifests[m.name].by_path() for m in order}

    def file_url(mirror: str, entry: FileEntry) -> str:
        """``mirror``'s URL for the file, built from its own entry (a cdn addresses bytes by
        sha256)."""
        m = by_name[mirror]
        return get_source(m.kind).file_url(m, manifests[mirror], files_of[mirror][entry.path])

    assembly = assemble(
        [manifests[m.name] for m in order],
        file_url,
        locked=locked,
        lock_entries=resolved.lock_entries,
        filenames=filenames,
        include=include,
        exclude=exclude,
    )
    reference = assembly.reference
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

    present, tries, disagreements = settle_present(assembly.tries, assembly.disagreements, here)
    throughput = {
        n: r.throughput_bps for n, r in resolved.report.results.items() if r.throughput_bps
    }
    result = make_plan(
        reference,
        [t[0].entry for t in tries.values()],
        {path: list(t[0].sources) for path, t in tries.items()},
        present=present,
        free_bytes=free_bytes(dest) if check_space else None,
        space_at=str(dest),
        throughput_bps=throughput,
        disagreements=disagreements,
        excluded=assembly.excluded,
        alternatives={path: t[1:] for path, t in tries.items() if len(t) > 1},
    )
    return result, by_name


def lock(
    targets: Sequence[str],
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: MirrorsArg = None,
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


def pull(
    repo_id: str,
    filenames: Sequence[str] = (),
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: MirrorsArg = None,
    cache_dir: StrPath | None = None,
    local_dir: StrPath | None = None,
    engine: EngineName = "auto",
    options: EngineOptions | None = None,
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
    locked: LockedModel | None = None,
    verify_tls: bool = True,
    offline: bool | None = None,
) -> PullResult:
    """Get ``repo_id``'s files onto this machine, verified, in the Hugging Face cache
    (or ``local_dir``), and return what happened. ``verify_tls=False`` (``--insecure``)
    skips TLS certificate checks on every mirror, and says so through ``reporter``.

    ``offline=True`` (default: ``MODELGET_OFFLINE`` or ``HF_HUB_OFFLINE`` set) makes no
    request at all: the files on disk answer, or ``OfflineMissingError`` names what is missing.
    When every mirror is unreachable and the destination already holds what is asked for, that
    is the answer too, with a warning.

    Raises ``Interrupted`` (exit 130) when ``cancel`` is set or on Ctrl-C, with resumable
    state kept; ``InsufficientDiskSpaceError`` when the disk fills. Partial failures are in
    the result (``status == "partial"``), not raised.

    With ``locked`` (a model from a lockfile, see :func:`lock`) the pull fetches exactly the
    locked commit's locked files, checked against the lock's sizes and digests before any byte
    moves: ``LockedCommitMissingError`` when no mirror has the commit any more,
    ``LockMismatchError`` when the mirrors list other bytes. ``repo_id`` must be the locked one;
    ``revision``, ``filenames`` and the globs must be left out.
    """
    from modelget.execute import EngineStarter, Target, carry_out

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
    hub_cache = _hub_cache(cache_dir)
    local = Path(local_dir).absolute() if local_dir else None

    def from_disk() -> PullResult:
        from modelget.offline import from_disk

        return from_disk(
            repo_id,
            filenames,
            revision=revision,
            include=include,
            exclude=exclude,
            cache_dir=hub_cache,
            local_dir=local,
            locked=locked,
            reporter=reporter,
        )

    if settings.offline() if offline is None else offline:
        return from_disk()
    # The engine (aria2c) starts while the mirrors are probed and the plan is made.
    starter = EngineStarter(engine, options, reporter)
    try:
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
        except MirrorsUnreachableError as unreachable:
            try:
                result = from_disk()
            except OfflineMissingError:
                raise unreachable from None
            reporter.on_message(
                "warning",
                f"offline: mirrors unreachable, using the cached snapshot {result.commit}",
            )
            return result
        return carry_out(
            the_plan,
            by_name,
            Target(hub_cache, repo_id, the_plan.commit, local),
            starter,
            reporter,
            cancel,
            ref=locked.revision if locked is not None else the_plan.revision,
            main_too=revision is None and locked is None,
            started=started,
            timings=timings,
        )
    finally:
        starter.close()


def _hub_cache(cache_dir: StrPath | None) -> Path:
    """Absolute: an engine may run in another working directory (aria2c runs in its own)."""
    return (Path(cache_dir) if cache_dir is not None else settings.hf_hub_cache()).absolute()


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
    mirrors: MirrorsArg = None,
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
    enabled = list(catalogue_in_force(mirrors).enabled)
    return run(
        enabled,
        repo_id,
        revision,
        cache_dir=_hub_cache(cache_dir),
        timeout=timeout or settings.probe_timeout_s(),
    )
