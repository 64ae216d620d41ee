"""The pipeline facade: ``probe()`` and ``plan()`` call the stages in order and return records.

catalogue → probe/rank → sources → one agreed manifest → plan. Nothing here prints; the CLI
renders what these return.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelget import http, layout, settings
from modelget.auth import check_token, with_token
from modelget.datatypes import (
    MS_REPO_TYPES,
    Catalogue,
    FileEntry,
    Mirror,
    Plan,
    PullResult,
    RankedMirror,
    RepoType,
)
from modelget.endpoints import MirrorsArg, catalogue_in_force
from modelget.engines import EngineName, EngineOptions
from modelget.errors import (
    MirrorsUnreachableError,
    OfflineMissingError,
    UsageError,
)
from modelget.events import LOGGER, LoggingReporter, NullReporter, Reporter, as_reporter
from modelget.export import ExportResult
from modelget.layout import LayoutName, free_bytes, scan
from modelget.lockfile import LockedModel, Lockfile
from modelget.manifest import check_repo_id as _check_repo_id
from modelget.manifest import check_revision as _check_revision
from modelget.manifest import parse_target, target_type
from modelget.plan import assemble, make_plan, settle_present
from modelget.probe import ProbeReport, store_cached
from modelget.probe import probe as run_probe
from modelget.rank import rank
from modelget.resolve import enabled_mirrors, resolve
from modelget.sources import get_source
from modelget.swarm.options import SwarmOptions

if TYPE_CHECKING:
    from modelget.cache import CachedModel, RemoveResult, VerifyResult
    from modelget.doctor import DoctorReport
    from modelget.loadtest import LoadReport
    from modelget.swarm.engine import SwarmEngine
    from modelget.swarm.serve import SwarmServeResult

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ProbeSummary:
    """The ranking (best first) and the raw report behind it."""

    repo_id: str | None
    ranked: tuple[RankedMirror, ...]
    report: ProbeReport
    repo_type: RepoType = "model"


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
    token: str | None = None,
    repo_type: RepoType = "model",
) -> ProbeSummary:
    """Probe every enabled mirror now (ignoring the probe cache, refreshing it) and rank them.

    Args:
        repo_id: ``ORG/NAME``: also check which mirrors have it (None: reachability and speed
            only).
        revision: a branch, tag or commit (default: ``main``).
        mirrors: a catalogue file to use instead of the usual one (``--mirrors``; default:
            ``$MODELGET_MIRRORS``, the user's ``mirrors.yaml``, else the bundled catalogue).
        timeout: seconds per mirror (default: ``$MODELGET_PROBE_TIMEOUT``).
        verify_tls: False (``--insecure``) skips TLS certificate checks on every mirror (every
            file is still checked against its digest).
        token: ``HF_TOKEN``'s value for this call (``--token``), sent only where ``HF_TOKEN``
            would be (entries with ``token_env: HF_TOKEN``, and ``use_hf_login`` ones), to
            their own origin; never to aria2c, a disk, a log or a message.
        repo_type: ``model``, ``dataset`` or ``space`` (``--repo-type``): what ``repo_id``
            names. A mirror kind that serves no such repo lacks it (``no-repo``).

    Returns:
        A :class:`ProbeSummary`: ``ranked`` best first, and the raw ``report``.

    Raises:
        UsageError: a malformed repo id or revision.
        ConfigError: an invalid catalogue.
    """
    if repo_id is not None:
        _check_repo_id(repo_id)
    _check_revision(revision)
    enabled = with_token(enabled_mirrors(mirrors, verify_tls), token)
    _check_repo_type(repo_type)
    report = run_probe(
        enabled,
        repo_id,
        revision,
        timeout=timeout or settings.probe_timeout_s(),
        repo_type=repo_type,
    )
    store_cached(
        settings.cache_dir() / "probes.json",
        enabled,
        repo_id,
        report.results,
        revision,
        repo_type,
    )
    return ProbeSummary(repo_id, tuple(rank(enabled, report.results)), report, repo_type)


def _check_repo_type(repo_type: str) -> None:
    from modelget.datatypes import REPO_TYPES

    if repo_type not in REPO_TYPES:
        raise UsageError(f"not a repo type: {repo_type!r}", hint=f"one of {', '.join(REPO_TYPES)}")


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
    token: str | None = None,
    repo_type: RepoType = "model",
    layout: LayoutName | None = None,
) -> Plan:
    """What :func:`pull` would do, without downloading: the manifest the mirrors agree on,
    each file's sources in rank order, what is already present, the totals, and a refusal if
    the disk is too small.

    Args:
        repo_id: ``ORG/NAME``.
        filenames: only these files (default: every file).
        revision: a branch, tag or commit (default: ``main``).
        include: glob patterns a file must match (``--include``, as ``hf download``).
        exclude: glob patterns that leave a file out (``--exclude``).
        mirrors: a catalogue file to use instead of the usual one (``--mirrors``; default:
            ``$MODELGET_MIRRORS``, the user's ``mirrors.yaml``, else the bundled catalogue).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        local_dir: plan for real files in this directory instead of the cache (``--local-dir``).
        locked: a model from a lockfile (see :func:`lock`): its commit and files.
        verify_tls: False (``--insecure``) skips TLS certificate checks on every mirror (every
            file is still checked against its digest).
        token: ``HF_TOKEN``'s value for this call (``--token``), sent only where ``HF_TOKEN``
            would be (entries with ``token_env: HF_TOKEN``, and ``use_hf_login`` ones), to
            their own origin; never to aria2c, a disk, a log or a message.
        repo_type: ``model``, ``dataset`` or ``space`` (``--repo-type``; with ``locked``, the
            lock's).
        layout: ``hf`` or ``modelscope``: which cache ``present`` is checked in (see
            :func:`pull`).

    Returns:
        A :class:`Plan`. Mirrors left out for a problem are logged at WARNING.

    Raises:
        ResolveError: a subclass saying why no mirror can serve the repo
            (``model-not-found``, ``revision-not-found``, ``auth-required``, ...).
        InsufficientDiskSpaceError: the files to fetch do not fit.
        UsageError: a malformed argument, or filters that match no file.
    """
    hub_cache, local = _destination(
        repo_id,
        locked.revision if locked is not None else revision,
        cache_dir=cache_dir,
        local_dir=local_dir,
        layout_name=layout,
        mirrors=mirrors,
    )
    return _plan(
        repo_id,
        filenames,
        revision=revision,
        include=include,
        exclude=exclude,
        mirrors=mirrors,
        cache_dir=hub_cache,
        local_dir=local,
        locked=locked,
        verify_tls=verify_tls,
        reporter=LoggingReporter(NullReporter()),
        token=token,
        repo_type=repo_type,
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
    trust_present: bool = True,
    token: str | None = None,
    repo_type: RepoType = "model",
) -> tuple[Plan, dict[str, Mirror]]:
    from dataclasses import replace

    _check_repo_id(repo_id)
    _check_repo_type(repo_type)
    if locked is not None:
        revision, repo_type = locked.commit, locked.repo_type
    _check_revision(revision)
    resolved = resolve(
        repo_id,
        revision,
        mirrors=mirrors,
        verify_tls=verify_tls,
        locked=locked,
        reporter=reporter,
        timings=timings,
        token=token,
        repo_type=repo_type,
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
        # The snapshot is the HF commit whichever mirror ranks first (see assemble).
        reference_mirror=next((m.name for m in order if m.kind in ("hf", "cdn")), None),
        locked=locked,
        lock_entries=resolved.lock_entries,
        filenames=filenames,
        include=include,
        exclude=exclude,
    )
    reference = assembly.reference
    hub_cache = _hub_cache(cache_dir)
    dest = Path(local_dir) if local_dir is not None else hub_cache

    local = Path(local_dir) if local_dir is not None else None

    def here(entries: Sequence[FileEntry]) -> set[str]:
        """Complete at the destination, cheaply: right size, and, where the record has a stamp,
        bytes unchanged since their digest last matched (a changed one is hashed by the
        executor before it is reused). Nothing with ``trust_present`` off (force, repair)."""
        if not trust_present:
            return set()
        from modelget import record

        found = scan(
            entries,
            repo_id=repo_id,
            commit=reference.commit,
            cache_dir=hub_cache,
            local_dir=local,
            repo_type=repo_type,
        )
        rec = record.read_record(
            record.record_path(repo_id, reference.commit, hub_cache, local, repo_type)
        )
        if rec is None or not rec.stamps:
            return found
        return {
            e.path
            for e in entries
            if e.path in found
            and not record.changed(
                rec.stamps,
                e.path,
                record.file_path(e, repo_id, reference.commit, hub_cache, local, repo_type),
            )
        }

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
    return replace(result, repo_type=repo_type), by_name


def lock(
    targets: Sequence[str],
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    mirrors: MirrorsArg = None,
    verify_tls: bool = True,
    token: str | None = None,
    repo_type: RepoType | None = None,
) -> Lockfile:
    """Pin each model to its commit, with every file's size and digests as the mirrors agree
    on them: what ``pull(..., locked=...)`` reproduces. Downloads nothing.

    Args:
        targets: ``ORG/NAME``, ``ORG/NAME@REVISION`` or an ``hf://`` URL
            (``hf://datasets/ORG/NAME``), one per repo.
        revision: the revision of targets that name none (default: ``main``).
        include: glob patterns a file must match to be locked.
        exclude: glob patterns that leave a file out.
        mirrors: a catalogue file to use instead of the usual one (``--mirrors``; default:
            ``$MODELGET_MIRRORS``, the user's ``mirrors.yaml``, else the bundled catalogue).
        verify_tls: False (``--insecure``) skips TLS certificate checks on every mirror (every
            file is still checked against its digest).
        token: ``HF_TOKEN``'s value for this call (``--token``), sent only where ``HF_TOKEN``
            would be (entries with ``token_env: HF_TOKEN``, and ``use_hf_login`` ones), to
            their own origin; never to aria2c, a disk, a log or a message.
        repo_type: ``model``, ``dataset`` or ``space`` for every target (default: what an
            ``hf://`` URL says, else ``model``); recorded in the lockfile.

    Returns:
        A :class:`Lockfile`; write it with :func:`dump_lockfile`, read it back with
        :func:`load_lockfile`.

    Raises:
        ResolveError: as :func:`plan`.
        UsageError: a malformed target, or filters that leave nothing to lock.
    """
    models = []
    for target in targets:
        repo_id, rev, paths, said = parse_target(target)
        kind = target_type(target, said, repo_type)
        if paths:
            raise UsageError(
                f"{target!r} names files: a lock pins a whole model",
                hint="name the model (and --include/--exclude to narrow it)",
            )
        the_plan, _ = _plan(
            repo_id,
            revision=rev or revision,
            include=include,
            exclude=exclude,
            mirrors=mirrors,
            check_space=False,
            verify_tls=verify_tls,
            reporter=LoggingReporter(NullReporter()),
            token=token,
            repo_type=kind,
        )
        files = tuple(item.entry for item in the_plan.items)
        if not files:
            raise UsageError(
                f"nothing to lock for {target}: no file matches the filters",
                hint="check --include / --exclude",
            )
        models.append(LockedModel(repo_id, the_plan.revision, the_plan.commit, files, kind))
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
    reporter: Reporter | object | None = None,
    cancel: threading.Event | None = None,
    locked: LockedModel | None = None,
    verify_tls: bool = True,
    offline: bool | None = None,
    force_download: bool = False,
    repair: bool = False,
    token: str | None = None,
    repo_type: RepoType = "model",
    layout: LayoutName | None = None,
    swarm: SwarmOptions | None = None,
) -> PullResult:
    """Get ``repo_id``'s files onto this machine, verified, in the Hugging Face cache (or
    ``local_dir``), and return what happened.

    Partial failures are in the result (``status == "partial"``, ``result.failed``), not
    raised; ``result.exit_code`` is what the CLI would exit with. With ``locked`` the pull
    fetches exactly the locked commit's locked files, checked against the lock's sizes and
    digests before any byte moves. When every mirror is unreachable and the destination
    already holds what is asked for, that is the answer, with a warning.

    What is already there is reused when it has the right size and, where modelget recorded
    a stamp, is unchanged since its digest last matched (else it is hashed first).
    ``repair=True`` hashes every file that is there and fetches only those that fail;
    ``force_download=True`` fetches every file again.

    Args:
        repo_id: ``ORG/NAME``; with ``locked``, the locked one.
        filenames: only these files (default: every file).
        revision: a branch, tag or commit (default: ``main``).
        include: glob patterns a file must match (``--include``, as ``hf download``).
        exclude: glob patterns that leave a file out (``--exclude``).
        mirrors: a catalogue file to use instead of the usual one (``--mirrors``; default:
            ``$MODELGET_MIRRORS``, the user's ``mirrors.yaml``, else the bundled catalogue).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        local_dir: real files in this directory instead of the cache's symlinks
            (``--local-dir``).
        engine: ``auto`` (aria2c when found, else httpx), ``aria2`` or ``httpx``.
        options: transfer settings (:class:`EngineOptions`: connections, rate cap, timeouts).
        reporter: progress events: a :class:`Reporter` subclass, or any object with some of
            its methods (the others are ignored). Called from worker threads.
        cancel: set it (from another thread) to stop the pull as Ctrl-C does.
        locked: a model from a lockfile (see :func:`lock`); leave ``revision``,
            ``filenames``, ``include`` and ``exclude`` out.
        verify_tls: False (``--insecure``) skips TLS certificate checks on every mirror (every
            file is still checked against its digest). Says so through ``reporter`` and the log.
        offline: True makes no request at all: the files on disk answer (default:
            ``$MODELGET_OFFLINE`` or ``$HF_HUB_OFFLINE`` set).
        force_download: fetch every file again, even those already here
            (``--force-download``).
        repair: hash every file already here and fetch again only those that fail
            (``--repair``).
        token: ``HF_TOKEN``'s value for this call (``--token``), sent only where ``HF_TOKEN``
            would be (entries with ``token_env: HF_TOKEN``, and ``use_hf_login`` ones), to
            their own origin; never to aria2c, a disk, a log or a message.
        repo_type: ``model``, ``dataset`` or ``space`` (``--repo-type``, as ``hf download``):
            a dataset lands in ``datasets--org--name`` in the cache. With ``locked``, the
            lock's.
        layout: ``hf`` (the Hugging Face cache, or ``local_dir``) or ``modelscope``: real
            files where ModelScope's ``snapshot_download(ID, local_files_only=True)`` finds
            them, ``{root}/models/{owner}--{name}/snapshots/{revision or master}/``, ``root``
            being ``cache_dir`` (default: ``$MODELSCOPE_CACHE``, ``~/.cache/modelscope``) and
            ``ID`` the catalogue's ModelScope id for ``repo_id`` (default: ``hf``).
        swarm: swarm mode (``--swarm``, :class:`SwarmOptions`): the big blobs travel between
            the nodes that pull the same model over BitTorrent (aria2c's), so the mirrors send
            about one copy in all; every blob is still verified by its sha256 before it lands.
            A seeder hands the mirrors to the swarm as web seeds; a peer takes them only after
            ``stall_s`` without progress. After the pull the node seeds on while the tracker
            lists downloading peers, at most ``seed_for_s``.

    Returns:
        A :class:`PullResult`: ``path``, ``commit``, ``status``, every file's outcome
        (``bytes_from_peers`` and ``bytes_from_mirrors`` in a swarm pull).

    Raises:
        ResolveError: no mirror can serve it (a subclass says why: ``model-not-found``,
            ``mirrors-unreachable``, ``offline-missing``, ``locked-commit-missing``, ...).
        LockMismatchError: with ``locked``, the mirrors list other bytes (exit code 4).
        InsufficientDiskSpaceError: the disk is (or fills) too small.
        Interrupted: ``cancel`` was set or Ctrl-C; resumable state is kept (exit code 130).
        UsageError: a malformed argument.
    """
    from modelget.execute import EngineStarter, Target, carry_out

    started = time.perf_counter()
    timings: dict[str, float] = {}
    events = LoggingReporter(as_reporter(reporter))
    cancel = cancel or threading.Event()
    if locked is not None and (
        repo_id != locked.repo_id or revision or filenames or include or exclude
    ):
        raise UsageError(
            "a locked pull takes its repo, commit and files from the lockfile",
            hint="leave out --revision, file names, --include and --exclude with --lock",
        )
    if locked is not None and repo_type not in ("model", locked.repo_type):
        raise UsageError(
            f"the lockfile locks {repo_id} as a {locked.repo_type}, not a {repo_type}",
            hint="leave out --repo-type with --lock",
        )
    # Usage errors first: nothing is started for a pull that cannot run.
    _check_repo_id(repo_id)
    _check_repo_type(repo_type)
    if locked is not None:
        repo_type = locked.repo_type
    _check_revision(locked.commit if locked is not None else revision)
    token = check_token(token)
    if swarm is not None:
        swarm.check()
    options = options or EngineOptions()
    verify_tls = verify_tls and options.verify_tls
    if not verify_tls:
        from dataclasses import replace

        events.on_message("warning", INSECURE_WARNING)
        options = replace(options, verify_tls=False)
    hub_cache, local = _destination(
        repo_id,
        locked.revision if locked is not None else revision,
        cache_dir=cache_dir,
        local_dir=local_dir,
        layout_name=layout,
        mirrors=mirrors,
        repo_type=repo_type,
    )

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
            reporter=events,
            repo_type=repo_type,
        )

    if settings.offline() if offline is None else offline:
        return _logged(from_disk())
    swarm_engine = (
        _swarm_engine(swarm, events, hub_cache, local, repo_id, repo_type, options, verify_tls)
        if swarm is not None
        else None
    )
    # The engine (aria2c) starts while the mirrors are probed and the plan is made.
    http.prepare(verify_tls)
    starter = EngineStarter(engine, options, events)
    try:
        try:
            the_plan, by_name = _plan(
                repo_id,
                filenames,
                revision=revision,
                include=include,
                exclude=exclude,
                mirrors=mirrors,
                cache_dir=hub_cache,
                local_dir=local,
                locked=locked,
                verify_tls=verify_tls,
                reporter=events,
                timings=timings,
                trust_present=not (force_download or repair),
                token=token,
                repo_type=repo_type,
            )
        except MirrorsUnreachableError as unreachable:
            if force_download or repair:  # asked for fresh or re-checked bytes: not a fallback
                raise
            try:
                result = from_disk()
            except OfflineMissingError:
                raise unreachable from None
            events.on_message(
                "warning",
                f"offline: mirrors unreachable, using the cached snapshot {result.commit}",
            )
            return _logged(result)
        target = Target(hub_cache, repo_id, the_plan.commit, local, repo_type)
        result = carry_out(
            the_plan,
            by_name,
            target,
            starter,
            events,
            cancel,
            ref=locked.revision if locked is not None else the_plan.revision,
            main_too=revision is None and locked is None,
            started=started,
            timings=timings,
            force=force_download,
            wrap=swarm_engine.wrap if swarm_engine is not None else None,
        )
        if swarm_engine is not None:
            from dataclasses import replace as _replace

            result = _replace(result, swarm_role=swarm_engine.role)
            if result.status != "error" and swarm is not None and swarm.seed_for_s > 0:
                placed = {f.path for f in result.files if f.status != "failed"}
                swarm_engine.seed_present(
                    [
                        (i.entry.path, i.entry.size, i.entry.sha256, target.final(i.entry))
                        for i in the_plan.items
                        if i.entry.path in placed
                    ]
                )
                swarm_engine.linger(cancel)
    finally:
        starter.close()
        if swarm_engine is not None:
            swarm_engine.close()
    return _logged(result)


def _swarm_engine(
    swarm: SwarmOptions,
    events: Reporter,
    hub_cache: Path,
    local: Path | None,
    repo_id: str,
    repo_type: RepoType,
    options: EngineOptions,
    verify_tls: bool,
) -> SwarmEngine:
    """The swarm engine of a ``--swarm`` pull: its role (``policy.choose_role``, said through
    ``events``) and the directory aria2c keeps the blobs in, beside the destination (the same
    file system: a landed blob is a hardlink of the one aria2c seeds)."""
    from modelget.swarm.engine import SwarmEngine
    from modelget.swarm.policy import choose_role

    role, why = choose_role(swarm.role, settings.swarm_rank(), swarm.seeders)
    events.on_message(
        "warning" if swarm.role == "auto" and settings.swarm_rank() is None else "info",
        f"swarm: {why}",
    )
    if local is not None:
        data_dir = layout.local_meta_dir(local) / "swarm"
    else:
        data_dir = layout.repo_dir(hub_cache, repo_id, repo_type) / ".swarm"
    return SwarmEngine(
        swarm,
        role,
        data_dir,
        events,
        verify_tls=verify_tls,
        max_rate_bps=options.max_rate_bps,
    )


def _logged(result: PullResult) -> PullResult:
    """``result``, logged to the ``modelget`` logger as the CLI shows it: the summary at INFO
    (WARNING when files failed, each one's error at WARNING), connections and timings (what
    ``-v`` adds) at DEBUG."""
    failed = result.failed
    level = logging.WARNING if failed else logging.INFO
    fetched = sum(1 for f in result.files if f.status == "fetched")
    LOGGER.log(
        level,
        "%s @ %s: %s, %d fetched, %d already here, %d failed; %d bytes in %.1f s (engine %s)",
        result.repo_id,
        result.commit[:12],
        result.status,
        fetched,
        len(result.files) - fetched - len(failed),
        len(failed),
        result.bytes_fetched,
        result.elapsed_s,
        result.engine,
    )
    for f in failed:
        LOGGER.warning("%s: %s", f.path, f.error or "failed")
    if result.connections:
        LOGGER.debug("most connections: %s", result.connections)
    if result.timings:
        LOGGER.debug("timings: %s", ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()))
    return result


def _destination(
    repo_id: str,
    revision: str | None,
    *,
    cache_dir: StrPath | None,
    local_dir: StrPath | None,
    layout_name: LayoutName | None,
    mirrors: MirrorsArg,
    repo_type: RepoType = "model",
) -> tuple[Path, Path | None]:
    """Where a pull writes: (the HF cache, the directory of real files or None). The
    ModelScope layout is a directory of real files (its metadata beside it:
    ``layout.local_meta_dir``); the HF cache is then only read (a blob there is copied)."""
    if layout_name not in (None, *layout.LAYOUTS):
        raise UsageError(
            f"unknown layout {layout_name!r}", hint=f"one of: {', '.join(layout.LAYOUTS)}"
        )
    # A Catalogue comes from the command line's --only/--endpoint: the user narrowed the
    # mirrors, and when all they kept are ModelScope ones, the files go where ModelScope looks.
    narrowed = catalogue_in_force(mirrors).enabled if isinstance(mirrors, Catalogue) else None
    if (layout_name or layout.auto_layout(narrowed)) == "hf":
        return _hub_cache(cache_dir), Path(local_dir).absolute() if local_dir else None
    if local_dir is not None:
        raise UsageError(
            "--local-dir and --layout modelscope both say where the files go",
            hint="leave out one: --layout modelscope fills the ModelScope cache "
            "(--cache-dir DIR, else $MODELSCOPE_CACHE)",
        )
    if repo_type not in MS_REPO_TYPES:
        raise UsageError(
            f"the ModelScope layout holds models and datasets, not a {repo_type}: ModelScope "
            "has no spaces to download",
            hint="leave out --layout modelscope: spaces go to the Hugging Face cache",
        )
    ms_id = _ms_id(repo_id, mirrors)
    return _hub_cache(None), layout.ms_snapshot_dir(
        _ms_root(cache_dir), ms_id, revision or "master", repo_type
    )


def _ms_id(repo_id: str, mirrors: MirrorsArg) -> str:
    """The ModelScope id of ``repo_id``: the ``id_map`` of the first enabled ``modelscope``
    mirror, else the id as given."""
    return next(
        (
            m.map_repo_id(repo_id)
            for m in catalogue_in_force(mirrors).enabled
            if m.kind == "modelscope"
        ),
        repo_id,
    )


def _ms_root(cache_dir: StrPath | None) -> Path:
    """The ModelScope cache: ``cache_dir``, else ``$MODELSCOPE_CACHE``, else
    ``~/.cache/modelscope`` (absolute)."""
    return (Path(cache_dir) if cache_dir is not None else settings.modelscope_cache()).absolute()


def _hub_cache(cache_dir: StrPath | None) -> Path:
    """Absolute: an engine may run in another working directory (aria2c runs in its own)."""
    return (Path(cache_dir) if cache_dir is not None else settings.hf_hub_cache()).absolute()


def verify(
    target: StrPath,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
    repair: bool = False,
    mirrors: StrPath | None = None,
    engine: EngineName = "auto",
    reporter: Reporter | None = None,
    repo_type: RepoType = "model",
    layout: LayoutName | None = None,
) -> VerifyResult:
    """Re-hash what is on disk against the recorded digests.

    Never raises for bad files: they are in the result (``result.ok``, ``result.problems``,
    ``result.exit_code``). Files that check out get a fresh stamp in modelget's record (see
    :mod:`modelget.record`).

    Args:
        target: a repo id in the Hugging Face cache (every cached snapshot, or
            ``revision``'s), a ``snapshots/COMMIT`` or ``models--org--name`` directory
            (``datasets--``, ``spaces--``), a ``--local-dir`` download, or a ModelScope
            snapshot (``{root}/models/{owner}--{name}/snapshots/{revision}``, checked as a
            local dir against modelget's metadata beside it; repaired in place).
        revision: only this branch, tag or commit (default: every cached snapshot).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        repair: fetch again the missing and corrupted files from ``mirrors`` (only those, at
            the same commit; nothing else is touched, the revision is not deleted), then check
            everything again; ``result.repaired`` names them. A local dir can be repaired when
            modelget pulled it (its record names the repo).
        mirrors: with ``repair``: a catalogue file to use instead of the usual one.
        engine: with ``repair``: ``auto``, ``aria2`` or ``httpx``.
        reporter: with ``repair``: progress events of the pulls that repair.
        repo_type: ``model``, ``dataset`` or ``space``: what a repo id ``target`` names
            (a directory says it itself).
        layout: ``hf`` (default) or ``modelscope``: a repo id ``target`` is looked up in the
            ModelScope cache (``cache_dir``, else ``$MODELSCOPE_CACHE``,
            ``~/.cache/modelscope``): its ModelScope id (as ``ls`` shows it) or the id a pull
            was given (mapped through the catalogue's ``id_map``); ``revision`` is a snapshot's
            name (``master``, ``v1.0``). Every snapshot of it is checked (and repaired) as a
            ModelScope snapshot path would be; with several, each file's path starts with its
            snapshot's name (``master/config.json``).

    Returns:
        A :class:`VerifyResult`, one ``FileCheck`` per file.

    Raises:
        NotInCacheError: the model or revision is not in the cache.
    """
    from dataclasses import replace

    _check_repo_type(repo_type)
    if _ms_layout(layout) and _is_repo_id(target):
        return _verify_ms_repo(
            os.fspath(target),
            revision,
            cache_dir,
            repo_type,
            lambda snap: verify(
                snap, repair=repair, mirrors=mirrors, engine=engine, reporter=reporter
            ),
            mirrors,
        )
    from modelget import integrity

    result = _verify_only(target, revision, cache_dir, repo_type)
    integrity.restamp(result)
    if not repair or result.ok:
        return result

    def fetch_again(repo_id: str, paths: list[str], **where: Any) -> list[str]:
        pulled = pull(
            repo_id, paths, mirrors=mirrors, engine=engine, reporter=reporter, repair=True, **where
        )
        return [o.path for o in pulled.files if o.status == "fetched"]

    repaired = integrity.repair(result, fetch_again)
    after = _verify_only(target, revision, cache_dir, repo_type)
    integrity.restamp(after)
    return replace(after, repaired=tuple(repaired))


def _is_repo_id(target: StrPath) -> bool:
    """``target`` is written as a repo id, not a path (``./x``, ``/x``, ``~/x``, a ``Path``)."""
    text = os.fspath(target)
    return (
        isinstance(target, str)
        and not text.startswith(("/", "./", "../", "~"))
        and text not in (".", "..")
    )


def _verify_ms_repo(
    text: str,
    revision: str | None,
    cache_dir: StrPath | None,
    repo_type: RepoType,
    check: Callable[[Path], VerifyResult],
    mirrors: MirrorsArg,
) -> VerifyResult:
    """``verify REPO_ID --layout modelscope``: each snapshot of the repo in the ModelScope
    cache, checked (and repaired) by ``check`` as a snapshot path is, in one result."""
    from modelget import cache

    _check_repo_id(text)
    root = _ms_root(cache_dir)
    ms_id = _ms_cache_id(root, text, repo_type, mirrors)
    snapshots = cache.ms_snapshots(root, ms_id, revision, repo_type)
    results = [check(snap) for snap in snapshots]
    return cache.merge_ms_checks(text, ms_id, repo_type, snapshots, results)


def _ms_cache_id(root: Path, repo_id: str, repo_type: RepoType, mirrors: MirrorsArg) -> str:
    """The ModelScope id ``repo_id`` is cached under at ``root``: itself when cached so (the
    id ``ls`` shows), else its ``id_map`` mapping (the id a pull was given)."""
    from modelget import cache

    if repo_type not in MS_REPO_TYPES:
        raise UsageError(
            f"the ModelScope cache holds models and datasets, not a {repo_type}: ModelScope "
            "has no spaces to download",
            hint="leave out --layout modelscope: spaces are in the Hugging Face cache",
        )
    if cache.ms_cached(root, repo_id, repo_type):
        return repo_id
    ms_id = _ms_id(repo_id, mirrors)
    _check_repo_id(ms_id)
    return ms_id


def _verify_only(
    target: StrPath, revision: str | None, cache_dir: StrPath | None, repo_type: RepoType = "model"
) -> VerifyResult:
    from modelget import cache

    text = os.fspath(target)
    path = Path(text).expanduser()
    hub_cache = _hub_cache(cache_dir)
    if not _is_repo_id(target):
        return cache.verify_dir(path, revision)
    try:
        _check_repo_id(text)
        in_cache = layout.repo_dir(hub_cache, text, repo_type).is_dir()
    except UsageError:
        in_cache = False
    if not in_cache and path.is_dir():
        return cache.verify_dir(path, revision)
    _check_repo_id(text)
    return cache.verify_repo(hub_cache, text, revision, repo_type)


def list_models(
    *, cache_dir: StrPath | None = None, layout: LayoutName | None = None
) -> tuple[CachedModel, ...]:
    """The repos in the Hugging Face cache (models, datasets and spaces: ``repo_type``):
    revisions, refs, size on disk, last used; or the models in the ModelScope cache.

    Args:
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``); with ``layout="modelscope"``, the ModelScope cache
            (default: ``$MODELSCOPE_CACHE``, ``~/.cache/modelscope``).
        layout: ``hf`` (default) or ``modelscope``: the ``models/{owner}--{name}`` folders
            of the ModelScope cache; each revision's ``refs`` is its snapshot's name (the
            revision string), its ``commit`` the commit modelget recorded (else that name).

    Returns:
        One :class:`CachedModel` per repo (``layout`` says which cache).
    """
    from modelget import cache

    if _ms_layout(layout):
        return cache.list_ms_models(_ms_root(cache_dir))
    return cache.list_models(_hub_cache(cache_dir))


def _ms_layout(name: LayoutName | None) -> bool:
    if name not in (None, *layout.LAYOUTS):
        raise UsageError(f"unknown layout {name!r}", hint=f"one of: {', '.join(layout.LAYOUTS)}")
    return name == "modelscope"


def remove(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
    dry_run: bool = False,
    repo_type: RepoType = "model",
    layout: LayoutName | None = None,
) -> RemoveResult:
    """Remove ``repo_id``'s snapshot of ``revision`` (default: every snapshot), the blobs no
    remaining snapshot uses, partial downloads and refs to removed commits. Never follows a
    symbolic link, never deletes outside ``models--org--name`` (ModelScope:
    ``models/{owner}--{name}``).

    Args:
        repo_id: ``ORG/NAME``.
        revision: only this branch, tag or commit (default: the whole model).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        dry_run: only say what would go.
        repo_type: ``model``, ``dataset`` or ``space`` (``datasets--org--name``, ...; in the
            ModelScope cache ``datasets/{owner}--{name}``, and no spaces).
        layout: ``hf`` (default) or ``modelscope``: remove from the ModelScope cache
            (``cache_dir``, else ``$MODELSCOPE_CACHE``, ``~/.cache/modelscope``) the snapshot
            named ``revision`` (``master``, ``v1.0``, ...) or every one, with modelget's
            metadata beside it (``.modelget/{revision}/``); the whole folder when none
            remains. ``repo_id`` is the ModelScope id (as ``ls`` shows it) or the id a pull
            was given (mapped through the catalogue's ``id_map``).

    Returns:
        A :class:`RemoveResult` (``freed_bytes``, what went, what was kept).

    Raises:
        NotInCacheError: the model or revision is not in the cache.
    """
    from modelget import cache

    _check_repo_id(repo_id)
    _check_repo_type(repo_type)
    if _ms_layout(layout):
        root = _ms_root(cache_dir)
        ms_id = _ms_cache_id(root, repo_id, repo_type, None)
        return cache.remove_ms(root, ms_id, revision, dry_run=dry_run, repo_type=repo_type)
    return cache.remove(
        _hub_cache(cache_dir), repo_id, revision, dry_run=dry_run, repo_type=repo_type
    )


def export(
    repo_id: str,
    to: StrPath,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
    repo_type: RepoType = "model",
    torrents: bool = False,
) -> ExportResult:
    """Publish ``repo_id`` from the Hugging Face cache as a static ``cdn`` tree
    (``modelget.cdn/1``, see docs/mirrors.md): every blob verified, hardlinked or copied, then
    the manifest and ``refs.json``. Serve the tree with nginx or sync it to a bucket.

    Args:
        repo_id: ``ORG/NAME``.
        to: the tree's root directory (created if missing).
        revision: the branch, tag or commit to export (default: ``main``).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        repo_type: ``model``, ``dataset`` or ``space``; a dataset's tree is under
            ``datasets/ORG/NAME/`` (blobs shared), where a ``cdn`` mirror looks for it.
        torrents: also write each big blob's swarm torrent (made in the read that verifies
            it) to ``torrents/sha256/xx/SHA.torrent`` in the tree (``--torrents``): that
            directory is a ``pull --swarm-dir``.

    Returns:
        An :class:`ExportResult`.

    Raises:
        LayoutError: the model or revision is not in the cache.
        VerificationError: a cached file does not match its digest (nothing is written).
        UsageError: ``to`` exists and is not a directory.
    """
    from modelget.export import export_model

    _check_repo_id(repo_id)
    _check_repo_type(repo_type)
    hub_cache = _hub_cache(cache_dir)
    return export_model(
        repo_id,
        Path(to),
        cache_dir=hub_cache,
        revision=revision,
        repo_type=repo_type,
        torrents=torrents,
    )


def swarm_serve(
    repo_id: str,
    swarm: SwarmOptions,
    *,
    revision: str | None = None,
    cache_dir: StrPath | None = None,
    repo_type: RepoType = "model",
    reporter: Reporter | object | None = None,
    cancel: threading.Event | None = None,
) -> SwarmServeResult:
    """Seed ``repo_id``'s big blobs from the Hugging Face cache for the nodes that pull it
    with ``swarm`` (``modelget swarm serve``), until ``cancel`` is set or
    ``swarm.seed_for_s`` has passed (``float("inf")``: until ``cancel``). Each blob is hashed
    first (its torrent made in the same read; a blob whose sha256 is not its name is not
    seeded) and its torrent written to ``swarm.torrent_dir`` when missing.

    Args:
        repo_id: ``ORG/NAME``, already pulled into the cache.
        swarm: the swarm (:class:`SwarmOptions`: tracker, torrent dir, interface, port); its
            ``role``, ``seeders`` and ``stall_s`` do not apply.
        revision: the branch, tag or commit in the cache (default: ``main``).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ...).
        repo_type: ``model``, ``dataset`` or ``space``.
        reporter: events (messages) as for :func:`pull`.
        cancel: set it to stop seeding.

    Returns:
        A ``SwarmServeResult``: the info-hashes seeded, their bytes, seconds, bytes uploaded.

    Raises:
        LayoutError: the model or revision is not in the cache, or it has no blob to seed.
        UsageError: a malformed argument.
    """
    from modelget.swarm.serve import serve

    _check_repo_id(repo_id)
    _check_repo_type(repo_type)
    swarm.check()
    return serve(
        repo_id,
        swarm,
        cache_dir=_hub_cache(cache_dir),
        revision=revision,
        repo_type=repo_type,
        reporter=LoggingReporter(as_reporter(reporter)),
        cancel=cancel or threading.Event(),
    )


def model_root(
    target: StrPath, *, revision: str | None = None, cache_dir: StrPath | None = None
) -> Path:
    """A model's directory, as a loader wants it.

    Args:
        target: a directory (returned as it is), or a repo id in the Hugging Face cache.
        revision: the branch, tag or commit of a repo id (default: ``main``).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).

    Returns:
        The directory, for a repo id its ``snapshots/COMMIT``.

    Raises:
        NotInCacheError: the model or revision is not in the cache.
    """
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
    verify: bool = False,
) -> LoadReport:
    """Check every file a loader reads (safetensors headers, index, config) and load every
    tensor onto ``device`` (see docs/loadtest.md). Never raises for a model that would not
    load: the report says why (``report.ok``, ``report.problems``, ``report.exit_code``).

    First the bytes are checked against their digests: cheaply by default (each file's size
    and modification time against modelget's record of when its digest last matched; a file
    that changed is hashed), every file hashed with ``verify=True``. A file that fails makes
    the report fail (exit 4) before any tensor is loaded; ``report.integrity`` says which
    check was made.

    Args:
        target: a model directory, or a repo id in the Hugging Face cache.
        revision: the branch, tag or commit of a repo id (default: ``main``).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.
        warm: read the files into the page cache first.
        verify: hash every file before loading (default: by stamps, see below).

    Returns:
        A :class:`LoadReport`: checks, tensors, bytes, GB/s, storage figures.

    Raises:
        NotInCacheError: a repo id that is not in the cache.
        UsageError: ``device="cuda"`` without torch's CUDA and a visible GPU.
    """
    from modelget import integrity, loadtest

    root = model_root(target, revision=revision, cache_dir=cache_dir)
    how, bad = integrity.before_load(root, full=verify)
    if bad:
        # No tensor is loaded from bytes that failed their digest; the loader's own checks
        # (headers, index) still run, to say what a load would have met.
        checks = [
            *loadtest.check_model(root),
            *(loadtest.FileCheck(path, "integrity", ok=False, problems=[why]) for path, why in bad),
        ]
        failed = loadtest.LoadReport(str(root), False, checks, integrity=how)
        failed.storage = loadtest.storage_of(root)
        return failed
    if warm:
        loadtest.warm(root)
    report = loadtest.load_model(root, device)
    report.integrity = how
    return report


def doctor(
    repo_id: str | None = None,
    *,
    revision: str | None = None,
    mirrors: MirrorsArg = None,
    cache_dir: StrPath | None = None,
    timeout: float | None = None,
    token: str | None = None,
) -> DoctorReport:
    """Why would a pull be slow or stuck? Check every enabled mirror (DNS, TCP, TLS, the
    repo, time to first byte, Range, throughput) and this machine (free space, filesystem,
    memory, CPUs, cache disk speed, aria2c, GPU) at once, and judge (``report.verdict``).
    Never raises for what it diagnoses: failed checks are in the report.

    Args:
        repo_id: ``ORG/NAME`` to check the mirrors for (None: the mirrors only).
        revision: a branch, tag or commit (default: ``main``).
        mirrors: a catalogue file to use instead of the usual one (``--mirrors``; default:
            ``$MODELGET_MIRRORS``, the user's ``mirrors.yaml``, else the bundled catalogue).
        cache_dir: the Hugging Face hub cache (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
            ``~/.cache/huggingface/hub``).
        timeout: seconds per network check (default: ``$MODELGET_PROBE_TIMEOUT``); the whole
            run lasts at most twice that plus 2 s.
        token: ``HF_TOKEN``'s value for this call (``--token``), sent only where ``HF_TOKEN``
            would be (entries with ``token_env: HF_TOKEN``, and ``use_hf_login`` ones), to
            their own origin; never to aria2c, a disk, a log or a message.

    Returns:
        A :class:`DoctorReport` (see docs/doctor.md).

    Raises:
        ConfigError: an invalid catalogue.
        UsageError: a malformed repo id.
    """
    from modelget.doctor import run

    if repo_id is not None:
        _check_repo_id(repo_id)
    enabled = with_token(list(catalogue_in_force(mirrors).enabled), token)
    return run(
        enabled,
        repo_id,
        revision,
        cache_dir=_hub_cache(cache_dir),
        timeout=timeout or settings.probe_timeout_s(),
    )
