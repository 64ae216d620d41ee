"""One handler per command: check the arguments, call the API, hand back an ``Outcome``
(the JSON fields, the exit code, the text renderer). No handler prints its result or
decides how it looks; ``render.emit`` does. ``pull`` yields one outcome per model.

The library is imported inside each handler: ``modelget --help`` loads none of it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelget.cli import render
from modelget.cli.render import Outcome
from modelget.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from modelget.endpoints import MirrorsArg
    from modelget.engines import EngineOptions
    from modelget.lockfile import LockedModel
    from modelget.swarm.options import SwarmOptions


def _warn_insecure(args: argparse.Namespace) -> None:
    """``--insecure`` always says so on stderr (a pull's reporter says it in its own way)."""
    if args.insecure:
        from modelget.api import INSECURE_WARNING

        render.note(f"warning: {INSECURE_WARNING}")


def _mirrors(args: argparse.Namespace) -> MirrorsArg:
    """The API's ``mirrors=``: the ``--mirrors`` path, or with ``--endpoint``/``--only`` the
    catalogue they make (built here only then: an offline pull reads no catalogue)."""
    if not (args.endpoint or args.only):
        path: str | None = args.mirrors
        return path
    from modelget.endpoints import select

    return select(args.mirrors, endpoints=args.endpoint, only_names=args.only).catalogue


def mirrors(args: argparse.Namespace) -> Outcome:
    from modelget.endpoints import select
    from modelget.settings import read_token

    selection = select(args.mirrors, endpoints=args.endpoint, only_names=args.only)
    catalogue = selection.catalogue
    payload = {
        "version": catalogue.version,
        "sources": list(catalogue.sources),
        "origin": selection.origin,
        "unused": list(selection.unused),
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
    return Outcome(payload, EXIT_OK, partial(render.mirrors_text, payload))


def probe(args: argparse.Namespace) -> Outcome:
    from modelget.api import probe

    _warn_insecure(args)
    if args.repo_id is not None:
        _take_target(args)
    summary = probe(
        args.repo_id,
        revision=args.revision,
        mirrors=_mirrors(args),
        timeout=args.timeout,
        verify_tls=not args.insecure,
        token=token(args),
        repo_type=args.repo_type or "model",
    )
    payload = {
        "repo_id": summary.repo_id,
        "repo_type": summary.repo_type,
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
    return Outcome(payload, EXIT_OK, partial(render.probe_text, summary))


def doctor(args: argparse.Namespace) -> Outcome:
    from modelget.api import doctor

    if args.repo_id is not None:
        _take_target(args)
    report = doctor(
        args.repo_id,
        revision=args.revision,
        mirrors=_mirrors(args),
        cache_dir=args.cache_dir,
        timeout=args.timeout,
        token=token(args),
    )
    return Outcome(report.to_dict(), report.exit_code, partial(render.doctor_text, report))


def token(args: argparse.Namespace) -> str | None:
    """``--token``, or the first line of ``--token-file`` (None: neither given, HF_TOKEN as
    ever). Neither the token nor the file's content is ever repeated in a message."""
    if getattr(args, "token_file", None):
        try:
            text = Path(args.token_file).read_text(errors="replace")
        except OSError as exc:
            raise UsageError(
                f"cannot read --token-file {args.token_file}: {exc.strerror or exc}",
                hint="give a readable file that holds the token",
            ) from None
        return text.splitlines()[0] if text.strip() else ""
    value: str | None = getattr(args, "token", None)
    return value


_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?)B?(?:/S)?\s*", re.IGNORECASE)


def rate(text: str) -> int:
    """``--max-rate``: bytes per second from ``50M``, ``800K``, ``1.5G``, ``2000``, with an
    optional ``B`` and ``/s`` (``50MB/s``); ``KiB``/``MiB``/``GiB`` are binary (1024),
    ``K``/``M``/``G`` decimal, as ``--max-rate`` has always read them. A usage error when it is
    empty, not a number, or not positive."""
    match = _RATE.fullmatch(text.upper())
    if match is None:
        if text.strip().startswith("-"):
            raise UsageError(f"--max-rate must be positive, not {text!r}")
        raise UsageError(
            f"not a rate: {text!r}", hint="use bytes per second, e.g. 50M, 800K or 64MiB"
        )
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    value = float(number) * base ** " KMGT".index(prefix or " ")
    if binary and not prefix:
        raise UsageError(f"not a rate: {text!r}", hint="use e.g. 64MiB, 50M or 800K")
    if value <= 0:
        raise UsageError(f"--max-rate must be positive, not {text!r}")
    return int(value)


_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|h|d)?\s*", re.IGNORECASE)


def duration(text: str, flag: str = "--seed-for") -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h``, ``1d``; a usage error otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise UsageError(f"{flag}: not a duration: {text!r}", hint="e.g. 90s, 10m, 1h or 0")
    number, unit = match.groups()
    return float(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[(unit or "s").lower()]


def swarm_options(args: argparse.Namespace, *, serve: bool = False) -> SwarmOptions | None:
    """``--swarm`` and its companions as ``SwarmOptions`` (None without ``--swarm``; a usage
    error for a companion given without it)."""
    from modelget.swarm.options import DEFAULT_SEED_FOR_S, DEFAULT_STALL_S, SwarmOptions

    given = [
        flag
        for flag, value in (
            ("--swarm-role", None if getattr(args, "swarm_role", "auto") == "auto" else 1),
            ("--swarm-seeders", None if getattr(args, "swarm_seeders", 1) == 1 else 1),
            ("--swarm-dir", args.swarm_dir),
            ("--seed-for", args.seed_for),
            ("--swarm-stall", getattr(args, "swarm_stall", None)),
            ("--swarm-interface", args.swarm_interface),
            ("--swarm-port", args.swarm_port),
        )
        if value is not None
    ]
    if args.swarm is None:
        if given:
            raise UsageError(f"{given[0]} needs --swarm URL|lpd")
        return None
    default_seed = float("inf") if serve else DEFAULT_SEED_FOR_S
    options = SwarmOptions(
        tracker=args.swarm,
        role=getattr(args, "swarm_role", "seed"),
        seeders=getattr(args, "swarm_seeders", 1),
        torrent_dir=Path(args.swarm_dir) if args.swarm_dir else None,
        seed_for_s=duration(args.seed_for) if args.seed_for is not None else default_seed,
        stall_s=DEFAULT_STALL_S if getattr(args, "swarm_stall", None) is None else args.swarm_stall,
        interface=args.swarm_interface,
        port=args.swarm_port,
    )
    options.check()
    return options


def lock(args: argparse.Namespace) -> Outcome:
    from modelget.api import lock
    from modelget.lockfile import dumps

    _warn_insecure(args)
    result = lock(
        args.targets,
        revision=args.revision,
        include=args.include,
        exclude=args.exclude,
        mirrors=_mirrors(args),
        verify_tls=not args.insecure,
        token=token(args),
        repo_type=args.repo_type,
    )
    text = dumps(result)
    if args.output:
        import os

        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    shown = None if args.output else text
    return Outcome({}, EXIT_OK, partial(render.lock_text, shown, result.models))


def _take_target(args: argparse.Namespace) -> None:
    """``REPO_ID@REV`` and ``hf://[datasets/|spaces/]ORG/NAME[@REV][/PATH]`` (see
    ``manifest.parse_target``) set ``args.repo_id``, ``args.revision``, ``args.repo_type`` and
    the file names; a revision or a repo type given twice and differently is a usage error."""
    from modelget.manifest import parse_target, target_type

    repo_id, revision, paths, said = parse_target(args.repo_id)
    if hasattr(args, "repo_type"):
        args.repo_type = target_type(args.repo_id, said, args.repo_type)
    elif said not in (None, "model"):
        raise UsageError(
            f"{args.repo_id!r} is a {said}: {args.command} checks models",
            hint="name a model",
        )
    if revision is not None:
        if args.revision is not None and args.revision != revision:
            raise UsageError(
                f"two revisions: {args.repo_id!r} and --revision {args.revision!r}",
                hint="give the revision once",
            )
        args.revision = revision
    args.repo_id = repo_id
    if hasattr(args, "filenames"):
        args.filenames = [*paths, *args.filenames]


def _pull_jobs(args: argparse.Namespace) -> list[tuple[str, LockedModel | None]]:
    """(repo id, locked model or None) for each model this pull command asks for."""
    from modelget.errors import UsageError

    if not args.lock:
        if args.repo_id is None:
            raise UsageError("pull needs a REPO_ID", hint="or --lock FILE to pull a lockfile")
        _take_target(args)
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


def pull(args: argparse.Namespace) -> Iterator[Outcome]:
    """One outcome per model (several with ``--lock``), each as soon as it is done."""
    for repo_id, locked in _pull_jobs(args):
        if args.dry_run:
            yield _dry_run(args, repo_id, locked)
        else:
            yield _pull_one(args, repo_id, locked)


def _dry_run(args: argparse.Namespace, repo_id: str, locked: LockedModel | None) -> Outcome:
    from modelget import settings

    if args.offline or settings.offline():
        raise UsageError(
            "--dry-run asks the mirrors for the plan, and this pull is offline",
            hint="leave out --dry-run (an offline pull says what is on disk), or unset "
            "MODELGET_OFFLINE / HF_HUB_OFFLINE",
        )
    from modelget.api import plan

    _warn_insecure(args)
    result = plan(
        repo_id,
        args.filenames,
        revision=args.revision,
        include=args.include,
        exclude=args.exclude,
        mirrors=_mirrors(args),
        cache_dir=args.cache_dir,
        local_dir=args.local_dir,
        locked=locked,
        verify_tls=not args.insecure,
        token=token(args),
        repo_type=args.repo_type or "model",
        layout=args.layout,
    )
    payload = {"plan": plan_dict(result)}
    return Outcome(payload, EXIT_OK, partial(render.plan_text, result), subject=repo_id)


def plan_dict(plan: Any) -> dict[str, Any]:
    """A ``Plan`` as JSON: the files in order, with their digests and sources."""
    return {
        "repo_id": plan.repo_id,
        "repo_type": plan.repo_type,
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


def _engine_options(args: argparse.Namespace) -> EngineOptions:
    from modelget.engines import EngineOptions
    from modelget.errors import UsageError

    opts = EngineOptions()
    if args.connections is not None:
        if not 1 <= args.connections <= 256:
            raise UsageError("--connections must be between 1 and 256")
        opts = replace(opts, max_connections=args.connections)
    if args.max_rate is not None:  # an empty --max-rate "" is an error, not "no cap"
        opts = replace(opts, max_rate_bps=rate(args.max_rate))
    return opts


def _pull_one(args: argparse.Namespace, repo_id: str, locked: LockedModel | None) -> Outcome:
    from modelget.api import pull
    from modelget.cli.progress import reporter_for

    opts = _engine_options(args)
    if args.json or args.quiet:
        _warn_insecure(args)  # else the reporter prints the API's warning
    reporter = reporter_for(json=args.json, quiet=args.quiet, verbose=args.verbose)
    try:
        result = pull(
            repo_id,
            args.filenames,
            revision=args.revision,
            include=args.include,
            exclude=args.exclude,
            mirrors=_mirrors(args),
            cache_dir=args.cache_dir,
            local_dir=args.local_dir,
            engine=args.engine,
            options=opts,
            reporter=reporter,
            locked=locked,
            verify_tls=not args.insecure,
            offline=args.offline,
            force_download=args.force_download,
            repair=args.repair,
            token=token(args),
            repo_type=args.repo_type or "model",
            layout=args.layout,
            swarm=swarm_options(args),
        )
    finally:
        close = getattr(reporter, "close", None)  # bars, heartbeat thread
        if close is not None:
            close()
    code = result.exit_code
    load_report = None
    if code == EXIT_OK and (args.load_test or args.warm):
        load_report = _after_pull(result.path, load_test=args.load_test, warm=args.warm)
        if load_report is not None and not load_report.ok:
            code = load_report.exit_code
    payload = asdict(result)
    if load_report is not None:
        payload["load_test"] = load_report_dict(load_report)
    # As `hf download REPO FILE`: one file asked for, its path is what is printed.
    one = args.filenames[0] if len(args.filenames) == 1 else None
    single = (
        str(Path(result.path) / one)
        if one is not None and any(f.path == one for f in result.files)
        else None
    )
    if single is not None:
        payload["file_path"] = single
    text = partial(
        render.pull_text,
        result,
        load_report,
        quiet=args.quiet,
        verbose=args.verbose,
        printed=single,
    )
    return Outcome(payload, code, text, subject=repo_id)


def _after_pull(path: str, *, load_test: bool, warm: bool) -> Any:
    """``pull --load-test`` / ``--warm``: the load report, or None when only warming."""
    from modelget.api import load_test as run_load_test
    from modelget.loadtest import warm as warm_files

    if not load_test:
        warm_files(Path(path))
        return None
    return run_load_test(path, warm=warm)


def load_report_dict(report: Any) -> dict[str, Any]:
    out = asdict(report)
    out["gbps"] = report.gbps
    out["problems"] = report.problems
    return out


def load_test(args: argparse.Namespace) -> Outcome:
    from modelget.api import load_test

    report = load_test(
        args.target,
        revision=args.revision,
        cache_dir=args.cache_dir,
        device=args.device,
        warm=args.warm,
        verify=args.verify,
    )
    return Outcome(
        load_report_dict(report), report.exit_code, partial(render.load_report_text, report)
    )


def verify(args: argparse.Namespace) -> Outcome:
    from modelget.api import verify

    result = verify(
        args.target,
        revision=args.revision,
        cache_dir=args.cache_dir,
        repair=args.repair,
        mirrors=args.mirrors,
        engine=args.engine,
        repo_type=args.repo_type or "model",
        layout=args.layout,
    )
    code = result.exit_code
    counts = {s: result.count(s) for s in ("ok", "missing", "corrupted", "extra")}
    payload = {
        "target": result.target,
        "kind": result.kind,
        "path": result.path,
        "repo_id": result.repo_id,
        "repo_type": result.repo_type,
        "commits": list(result.commits),
        "ok": result.ok,
        "counts": counts,
        "files": [asdict(f) for f in result.files],
        "repaired": list(result.repaired),
    }
    return Outcome(payload, code, partial(render.verify_text, result, counts))


def ls(args: argparse.Namespace) -> Outcome:
    from modelget.api import list_models

    models = list_models(cache_dir=args.cache_dir, layout=args.layout)
    payload = {"models": [asdict(m) for m in models]}
    return Outcome(payload, EXIT_OK, partial(render.ls_text, models))


def rm(args: argparse.Namespace) -> Outcome:
    """Without ``--yes``: show what would go (stderr) and ask; declined, the preview is the
    result (``dry_run`` true, nothing removed)."""
    from modelget.api import remove
    from modelget.errors import UsageError

    if not args.yes:
        preview = remove(
            args.repo_id,
            revision=args.revision,
            cache_dir=args.cache_dir,
            dry_run=True,
            repo_type=args.repo_type or "model",
            layout=args.layout,
        )
        render.note(render.rm_summary(preview))
        if not sys.stdin.isatty():
            raise UsageError("rm needs confirmation", hint="pass --yes to remove without asking")
        # The question goes to stderr: stdout carries only the result (--json: one line).
        sys.stderr.write("remove? [y/N] ")
        sys.stderr.flush()
        if input().strip().lower() not in ("y", "yes"):
            return Outcome(asdict(preview), EXIT_OK, partial(render.rm_text, preview))
    result = remove(
        args.repo_id,
        revision=args.revision,
        cache_dir=args.cache_dir,
        repo_type=args.repo_type or "model",
        layout=args.layout,
    )
    return Outcome(asdict(result), EXIT_OK, partial(render.rm_text, result))


def export(args: argparse.Namespace) -> Outcome:
    from modelget.api import export

    result = export(
        args.repo_id,
        args.to,
        revision=args.revision,
        cache_dir=args.cache_dir,
        repo_type=args.repo_type or "model",
        torrents=args.torrents,
    )
    return Outcome(asdict(result), EXIT_OK, partial(render.export_text, result))


def swarm_serve(args: argparse.Namespace) -> Outcome:
    from modelget.api import swarm_serve
    from modelget.cli.progress import reporter_for

    options = swarm_options(args, serve=True)
    assert options is not None  # --swarm is required
    reporter = reporter_for(json=args.json, quiet=False, verbose=False)
    try:
        result = swarm_serve(
            args.repo_id,
            options,
            revision=args.revision,
            cache_dir=args.cache_dir,
            repo_type=args.repo_type or "model",
            reporter=reporter,
        )
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()
    return Outcome(asdict(result), EXIT_OK, partial(render.swarm_serve_text, result))
