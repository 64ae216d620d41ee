"""``python -m modelget.testing <command>``: test and demo utilities.

``serve`` runs a :class:`~modelget.testing.hubsim.HubSimulator` in the foreground, prints one
JSON line ``{"url": ..., "cdn_url": ..., "repos": {repo_id: commit}}`` and serves until
SIGTERM or SIGINT. New commands: add a ``_add_<name>(subparsers)`` that registers a subparser
with ``set_defaults(func=...)``, and call it from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from modelget.testing.hubsim import HubSimulator


def _repo_arg(value: str) -> tuple[str, str]:
    repo_id, sep, directory = value.partition("=")
    if not sep or not repo_id or not directory:
        raise argparse.ArgumentTypeError(f"expected ORG/NAME=DIR, got {value!r}")
    return repo_id, directory


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim = HubSimulator(
        cdn=args.cdn,
        name=args.name,
        signed_url_ttl_s=args.signed_url_ttl,
        page_size=args.page_size,
        host_name=args.host_name,
        port=args.port,
        cdn_port=args.cdn_port,
    )
    commits = {}
    for repo_id, directory in args.repo:
        commits[repo_id] = sim.add_repo(repo_id, directory, branch=args.branch)
    with sim:
        print(json.dumps({"url": sim.url, "cdn_url": sim.cdn_url, "repos": commits}), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serve", help="run a hub simulator in the foreground")
    p.add_argument(
        "--repo",
        action="append",
        type=_repo_arg,
        required=True,
        metavar="ORG/NAME=DIR",
        help="serve DIR as repo ORG/NAME (repeatable)",
    )
    p.add_argument("--port", type=int, default=0, help="hub port (default: any free port)")
    p.add_argument("--cdn", action="store_true", help="redirect LFS downloads to a CDN listener")
    p.add_argument("--cdn-port", type=int, default=0, help="CDN port (default: any free port)")
    p.add_argument(
        "--host-name", default="127.0.0.1", help="host name used in the hub URL (binds 127.0.0.1)"
    )
    p.add_argument("--name", default="hub", help="simulator name (thread names, repr)")
    p.add_argument("--branch", default="main", help="branch the repos are served at")
    p.add_argument("--page-size", type=int, default=None, help="paginate HF tree listings")
    p.add_argument(
        "--signed-url-ttl", type=float, default=3600, help="lifetime of signed CDN URLs (s)"
    )
    p.set_defaults(func=_serve)


def _add_fixtures(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Only for --help: main() hands `fixtures ...` to modelget.testing.fixtures.main whole.
    subparsers.add_parser(
        "fixtures",
        help="download the pinned fixture wheels and build the model fixtures "
        "(see `python -m modelget.testing fixtures --help`)",
        add_help=False,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelget.testing", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_serve(subparsers)
    _add_fixtures(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fixtures":
        from modelget.testing import fixtures

        return fixtures.main(argv[1:])
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
