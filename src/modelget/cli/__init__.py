"""The command line: parse, call the library through one handler per command, render.
The only package that prints.

- ``__init__``: the argparse parser, :func:`main`, the error report;
- ``commands``: one handler per command (calls the API, returns payload + exit code + text);
- ``render``: :func:`~modelget.cli.render.emit`, text tables or ONE JSON envelope a line;
- ``progress``: the pull's reporters (tqdm bars, text lines, JSON-lines events).

Data goes to stdout (tables or ``--json``, docs/json.md); errors, hints and progress go to
stderr. Exit codes are those of ``modelget.errors`` (0 ok, 1 error, 2 usage/config,
3 partial, 4 verification failed, 130 interrupted).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from modelget._version import __version__
from modelget.cli import commands, render
from modelget.cli.commands import rate as _rate  # re-exported for one release
from modelget.cli.render import JSON_SCHEMA_VERSION, Outcome, failure_summary
from modelget.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    InternalError,
    Interrupted,
    ModelgetError,
    UsageError,
)

__all__ = ["JSON_SCHEMA_VERSION", "_rate", "failure_summary", "main", "run"]


class _UsageExit(SystemExit):
    """A usage error argparse found; ``main`` reports it like every other error."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit code 2 in our own format, and takes no
    abbreviated option (``--mirror x`` silently meant ``--mirrors x``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        raise _UsageExit(self, message)


_INSECURE_HELP = (
    "do not check the mirrors' TLS certificates (self-signed or private CA); warns. "
    "Only on a network you trust: tokens and bytes can then be read or changed on the way "
    "(files are still checked against their digests)"
)


def _add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache (default: $HF_HUB_CACHE)")


def _add_cache_layout(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "--layout",
        choices=["hf", "modelscope"],
        default=None,
        help=f"which cache to {verb}: hf (default: the Hugging Face cache) or modelscope (the "
        "ModelScope cache that pull --layout modelscope fills: --cache-dir, else "
        "$MODELSCOPE_CACHE)",
    )


def _add_json(p: argparse.ArgumentParser, what: str = "one JSON line instead of text") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} (docs/json.md)")


def _add_insecure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true", help=_INSECURE_HELP)


def _add_swarm(p: argparse.ArgumentParser, *, serve: bool = False) -> None:
    """The swarm-mode options (``pull --swarm``, ``swarm serve``): docs/pull.md#swarm-mode."""
    g = p.add_argument_group("swarm mode (docs/pull.md#swarm-mode)")
    g.add_argument(
        "--swarm",
        metavar="URL|lpd",
        required=serve,
        help="share the big blobs with the other nodes pulling this model over BitTorrent: "
        "the tracker's announce URL (http://host:6969/announce), or lpd (no tracker: local "
        "peer discovery on one network segment)",
    )
    if not serve:
        g.add_argument(
            "--swarm-role",
            choices=["auto", "seed", "peer"],
            default="auto",
            help="seed: fetch from the mirrors and hand them to the swarm; peer: only from the "
            "swarm (the mirrors after --swarm-stall without progress); auto (default): seed "
            "when RANK / SLURM_PROCID / JOB_COMPLETION_INDEX < --swarm-seeders",
        )
        g.add_argument(
            "--swarm-seeders",
            type=int,
            default=1,
            metavar="K",
            help="with --swarm-role auto: the ranks below K seed (default 1)",
        )
    g.add_argument(
        "--swarm-dir",
        metavar="DIR",
        help="the torrents: a directory every node sees (a seeder writes each blob's torrent "
        "there as soon as it is verified; peers wait for them), or an export tree's torrents/",
    )
    g.add_argument(
        "--seed-for",
        metavar="DURATION",
        help="seed at most this long (e.g. 90s, 10m, 1h; 0: not at all) "
        + (
            "(default: until stopped)"
            if serve
            else "after the pull while the tracker lists downloading peers (default 10m)"
        ),
    )
    if not serve:
        g.add_argument(
            "--swarm-stall",
            type=float,
            metavar="SECONDS",
            help="a peer adds the mirrors after this long without progress from the swarm "
            "(default 30)",
        )
    g.add_argument(
        "--swarm-interface",
        metavar="IFACE",
        help="bind aria2c's sockets, its BitTorrent port included, to this interface or "
        "address (anyone who reaches the port and knows a blob's hash can fetch it)",
    )
    g.add_argument(
        "--swarm-port", type=int, metavar="PORT", help="BitTorrent listening port (default: free)"
    )


def _add_token(p: argparse.ArgumentParser) -> None:
    """``--token`` / ``--token-file`` (issue 17 §3): HF_TOKEN's value for one command."""
    token = p.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        metavar="TOKEN",
        help="Hugging Face token for this command, in place of HF_TOKEN: sent only where "
        "HF_TOKEN would be (the mirrors whose entry says token_env: HF_TOKEN; bundled: "
        "huggingface.co), to their own host. Other users of this machine can read a command "
        "line: prefer HF_TOKEN or --token-file",
    )
    token.add_argument(
        "--token-file", metavar="FILE", help="read the token from FILE (its first line), as --token"
    )


def _add_repo_type(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo-type",
        choices=["model", "dataset", "space"],
        help="what REPO_ID names, as hf download --repo-type (default: model, or what an "
        "hf://datasets/... or hf://spaces/... URL says)",
    )


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only files matching GLOB (repeatable; same meaning as hf download)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip files matching GLOB"
    )


def _add_endpoints(p: argparse.ArgumentParser) -> None:
    """``--endpoint`` and ``--only``: which mirrors this one command uses
    (``modelget.endpoints``; docs/mirrors.md)."""
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="[KIND=]URL",
        help="use this mirror instead of the catalogue (repeatable); KIND hf (default), "
        "modelscope or cdn; no token is sent to it",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="use only this mirror of the catalogue (repeatable; see `modelget mirrors`)",
    )


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
    _add_endpoints(mirrors)
    _add_json(mirrors)
    mirrors.set_defaults(func=commands.mirrors)

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
    _add_repo_type(probe)
    probe.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    _add_endpoints(probe)
    probe.add_argument("--timeout", type=float, metavar="S", help="per-mirror timeout (default 5)")
    _add_json(probe)
    _add_insecure(probe)
    _add_token(probe)
    probe.set_defaults(func=commands.probe)

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
    _add_endpoints(doctor)
    _add_cache_dir(doctor)
    doctor.add_argument(
        "--timeout", type=float, metavar="S", help="per-step network timeout (default 5)"
    )
    _add_token(doctor)
    _add_json(doctor)
    doctor.set_defaults(func=commands.doctor)

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
    _add_repo_type(pull)
    _add_filters(pull)
    pull.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    _add_endpoints(pull)
    _add_cache_dir(pull)
    pull.add_argument("--local-dir", metavar="DIR", help="also put real files in DIR")
    pull.add_argument(
        "--layout",
        choices=["hf", "modelscope"],
        default=None,
        help="where the files go: hf (default: the Hugging Face cache, or --local-dir) or "
        "modelscope (the ModelScope cache, --cache-dir else $MODELSCOPE_CACHE, where "
        "modelscope's snapshot_download finds them)",
    )
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
        "--force-download",
        action="store_true",
        help="fetch every file again, even those already here (as hf download --force-download)",
    )
    pull.add_argument(
        "--repair",
        action="store_true",
        help="hash every file already here and fetch again only those that fail",
    )
    pull.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="make no request: use what is on disk, or fail naming what is missing "
        "(also MODELGET_OFFLINE=1 or HF_HUB_OFFLINE=1)",
    )
    _add_insecure(pull)
    _add_token(pull)
    pull.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    pull.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show the connections per mirror as the scheduler changes them, and the "
        "time each stage took",
    )
    _add_swarm(pull)
    _add_json(pull, "JSON lines: progress events, then the result (the plan with --dry-run)")
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
    pull.set_defaults(func=commands.pull)

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
    _add_repo_type(lock)
    _add_filters(lock)
    lock.add_argument("--mirrors", metavar="FILE", help="catalogue file")
    _add_endpoints(lock)
    lock.add_argument(
        "--output", "-o", metavar="FILE", help="write the lockfile to FILE instead of stdout"
    )
    _add_insecure(lock)
    _add_token(lock)
    lock.set_defaults(func=commands.lock)

    verify = sub.add_parser(
        "verify",
        help="re-hash a cached model (or a --local-dir download) against its digests",
        description="Re-hash every file on disk against the digest recorded for it (the blob "
        "name in the cache, the etag in a local dir's .cache/huggingface metadata) and name "
        "every missing, extra or corrupted file, including shards an index.json names that "
        "are absent. Exit codes: 0 all good, 4 something missing or corrupted, 1 not cached.",
    )
    verify.add_argument(
        "target",
        metavar="REPO_ID|PATH",
        help="a repo id, a snapshot dir (of the HF or the ModelScope cache) or a --local-dir",
    )
    verify.add_argument(
        "--revision",
        help="only this branch, tag or commit (default: all; --layout modelscope: a snapshot's "
        "name, e.g. master)",
    )
    _add_repo_type(verify)
    verify.add_argument(
        "--repair",
        action="store_true",
        help="fetch again only the missing and corrupted files (same commit), then check again",
    )
    verify.add_argument("--mirrors", metavar="FILE", help="with --repair: mirrors.yaml to use")
    verify.add_argument(
        "--engine", choices=["auto", "aria2", "httpx"], default="auto", help="with --repair"
    )
    _add_cache_dir(verify)
    _add_cache_layout(verify, "look REPO_ID up in")
    _add_json(verify)
    verify.set_defaults(func=commands.verify)

    ls = sub.add_parser(
        "ls",
        help="list the models (and datasets, spaces) in the Hugging Face cache",
        description="List the repos in the cache (models, datasets and spaces): id, "
        "revisions (refs and commits), size on disk and when each was last used. With "
        "--layout modelscope: the models in the ModelScope cache (revisions: snapshot names).",
    )
    _add_cache_dir(ls)
    _add_cache_layout(ls, "list")
    _add_json(ls)
    ls.set_defaults(func=commands.ls)

    rm = sub.add_parser(
        "rm",
        help="remove a model (or one revision) from the Hugging Face cache",
        description="Remove a model's snapshot (one revision, or all), the blobs no remaining "
        "snapshot uses, partial downloads and refs to removed commits, then print what was "
        "freed. Never follows a symbolic link, never deletes outside models--ORG--NAME "
        "(--layout modelscope: the snapshot and modelget's metadata beside it, never outside "
        "models/OWNER--NAME). "
        "Without --yes: show what would go and ask (refused when stdin is not a terminal).",
    )
    rm.add_argument("repo_id", metavar="REPO_ID")
    rm.add_argument("--revision", help="only this branch, tag or commit (default: all)")
    _add_repo_type(rm)
    _add_cache_dir(rm)
    _add_cache_layout(rm, "remove from")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    _add_json(rm)
    rm.set_defaults(func=commands.rm)

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
    _add_cache_dir(lt)
    lt.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    lt.add_argument("--warm", action="store_true", help="read the files into the page cache first")
    lt.add_argument(
        "--verify",
        action="store_true",
        help="hash every file first (default: a file whose size or mtime changed since it was "
        "verified is hashed)",
    )
    _add_json(lt)
    lt.set_defaults(func=commands.load_test)

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
    _add_repo_type(export)
    _add_cache_dir(export)
    export.add_argument(
        "--torrents",
        action="store_true",
        help="also write each big blob's swarm torrent to DIR/torrents/ (a pull --swarm-dir)",
    )
    _add_json(export)
    export.set_defaults(func=commands.export)

    swarm = sub.add_parser(
        "swarm",
        help="swarm mode: keep a cached model seeding for other nodes (swarm serve)",
        description="Swarm mode (pull --swarm, docs/pull.md#swarm-mode): nodes pulling the same "
        "model share its big blobs over BitTorrent.",
    )
    swarm_sub = swarm.add_subparsers(dest="swarm_command", metavar="SUBCOMMAND", required=True)
    serve = swarm_sub.add_parser(
        "serve",
        help="seed a model from the Hugging Face cache until stopped (or --seed-for)",
        description="Seed REPO_ID's big blobs from the Hugging Face cache for the nodes that pull "
        "it with --swarm (late joiners). Each blob is hashed first (its torrent is made in the "
        "same read; one that does not match its name is not seeded) and its torrent written to "
        "--swarm-dir when missing. Runs until Ctrl-C or --seed-for.",
    )
    serve.add_argument("repo_id", metavar="REPO_ID")
    serve.add_argument("--revision", help="branch, tag or commit in the cache (default: main)")
    _add_repo_type(serve)
    _add_cache_dir(serve)
    _add_swarm(serve, serve=True)
    _add_json(serve)
    serve.set_defaults(func=commands.swarm_serve)
    return parser


def _run(command: str, result: Outcome | Iterable[Outcome], as_json: bool) -> int:
    """Render a handler's outcome (or each of several, as they come) and return the exit
    code: the outcome's, or the worst of several (then ``--json`` ends with a summary)."""
    outcomes = [result] if isinstance(result, Outcome) else result
    done: list[Outcome] = []
    for outcome in outcomes:
        render.emit(command, outcome, as_json)
        done.append(outcome)
    code = max((o.exit_code for o in done), default=0)
    if as_json and len(done) > 1:
        render.emit_summary(command, done, code)
    return code


def _command_of(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The command a command line names, if it names one (for an error's envelope)."""
    names = {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }
    return next((a for a in argv if a in names), None)


def _skip_httpx_cli() -> None:
    """Keep httpx from importing its own command-line client in this process.

    ``import httpx`` imports ``httpx._main`` when click and rich are installed (they are
    wherever huggingface_hub is: its CLI needs them), which costs about 60 ms of every
    ``modelget`` run (measured: ``import httpx`` 0.12-0.14 s, 0.066 s without it). httpx
    falls back to a stub ``httpx.main`` when that import fails; nothing in modelget uses it.
    Done only in the CLI, the process modelget owns, and only before httpx is imported: the
    Python API leaves the caller's interpreter alone."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread exactly where Ctrl-C would be: the pull stops the
    same way (transfers cancelled, resumable state kept, aria2c stopped, its private directory
    removed), instead of dying at once with partial work and temporary files left behind."""


_sigterm_seen = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _sigterm_seen
    _sigterm_seen = True
    raise _Terminated()


def _catch_sigterm() -> None:
    """Treat SIGTERM (``docker stop``, Kubernetes) as Ctrl-C: only in the CLI's process, and
    only from the main thread (where Python runs signal handlers)."""
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave the default
        pass


def _stopped(terminated: bool) -> tuple[Interrupted, int]:
    """The one line a stop the user asked for prints, and its exit code (130, or 143)."""
    kept = "what was downloaded is kept"
    again = "run the same command again to resume"
    if terminated:
        return Interrupted(f"terminated (SIGTERM); {kept}", hint=again), EXIT_TERMINATED
    return Interrupted(f"interrupted (Ctrl-C); {kept}", hint=again), EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    _skip_httpx_cli()
    _catch_sigterm()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageExit as exc:
        exc.parser.print_usage(sys.stderr)
        command = _command_of(parser, argv)
        error = UsageError(f"{exc.parser.prog}: {exc.message}")
        render.emit_error(command, error, "--json" in argv)
        raise
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    try:
        return _run(args.command, args.func(args), as_json)
    except ModelgetError as exc:
        if isinstance(exc, Interrupted):
            # The pull's supervisor stopped the transfer on Ctrl-C (or SIGTERM) and kept what
            # was fetched: one line says so.
            stop, code = _stopped(_sigterm_seen)
            render.emit_error(args.command, stop, as_json, brief=True)
            return code
        render.emit_error(args.command, exc, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        stop, code = _stopped(_sigterm_seen)
        render.emit_error(args.command, stop, as_json, brief=True)
        return code
    except Exception as exc:  # a bug: still one error record, and the traceback to report it
        import traceback

        traceback.print_exc(file=sys.stderr)
        bug = InternalError(
            f"unexpected {type(exc).__name__}: {exc}",
            hint="this is a bug in modelget: please report it with the traceback above",
        )
        render.emit_error(args.command, bug, as_json)
        return bug.exit_code


def run() -> None:
    """The ``modelget`` command (console script and ``python -m modelget``): :func:`main`, then
    leave without the interpreter's teardown.

    Python's own exit frees every module and object one by one: 40-65 ms after the last line
    of a pull (measured on the bench machine, with aria2p, httpx and yaml loaded), which is a
    tenth of a small model's whole pull. Everything an orderly exit does for the program is
    still done, in its order: non-daemon threads are waited for, ``atexit`` callbacks run
    (logging's flush, the aria2 engine's private directory, coverage's data), stdout and
    stderr are flushed; only the freeing is skipped, which the operating system does anyway.
    :func:`main` itself leaves the caller's interpreter alone (tests, embedding)."""
    try:
        status = _exit_status(main())
    except SystemExit as exc:  # argparse's --help and usage errors
        status = _exit_status(exc.code)
    _leave(status)


def _exit_status(code: object) -> int:
    """What ``SystemExit(code)`` would exit with (a message is printed, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _leave(status: int) -> None:
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # what Python's exit does first: wait for the non-daemon threads
    atexit._run_exitfuncs()
    # A closed pipe (`modelget ... | head`): nothing more to say.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)
