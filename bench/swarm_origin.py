"""The swarm scene's origin: the hub simulator, unmodified, listening on every address of the
namespace it runs in (its listeners bind 127.0.0.1, which the nodes in their own namespaces
cannot reach). Run inside the origin namespace::

    ip netns exec mgsw-origin python -m bench.swarm_origin --repo ORG/NAME=DIR --host 10.78.0.1

It prints one JSON line (``url``, ``commit``), then answers commands on stdin, one JSON line
each: ``sent`` (file body bytes sent since the last ``clear``, and the request count),
``clear`` (empties the request log). It stops at EOF, SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import Any

from modelget.testing.hubsim import HubSimulator, server


class _AnyAddress(server.Listener):
    def __init__(self, address: tuple[str, int], sim: Any, listener: str) -> None:
        super().__init__(("0.0.0.0", address[1]), sim, listener)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.swarm_origin")
    p.add_argument("--repo", required=True, metavar="ORG/NAME=DIR")
    p.add_argument("--host", required=True, help="the address the nodes reach (in the URL)")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    repo_id, _, directory = args.repo.partition("=")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.Listener = _AnyAddress  # type: ignore[misc]
    sim = HubSimulator(name="origin", host_name=args.host, port=args.port)
    commit = sim.add_repo(repo_id, directory)
    with sim:
        print(json.dumps({"url": sim.url, "commit": commit}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            out: dict[str, object]
            if cmd == "sent":
                out = {"file": sim.file_bytes_sent(), "requests": len(sim.log)}
            elif cmd == "clear":
                sim.clear_log()
                out = {}
            else:
                out = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
