"""An aggregate bandwidth cap: a veth pair into a private network namespace, shaped with htb.

nginx's ``limit_rate`` caps each connection; a link's total has to be capped below the
sockets. netem is not available on this kernel, so the link is a veth pair: the host end
gets an address the servers also listen on, the other end lives in a namespace where the
clients run (``ip netns exec``). Everything the servers send to the clients leaves through the
host end, whose egress carries an htb tree: one class for the whole link and, optionally, a
class per server port (a mirror's own uplink). Both ends use a 64 KiB MTU, as loopback does,
so header overhead stays below 0.1 % and the cap is the payload rate (measured: 396 MB/s
through a 400 MB/s class). Each class queues at most 10 ms of its rate (at least 1 MiB).

Needs root (CAP_NET_ADMIN) and ``ip``/``tc`` (iproute2). Everything is removed by ``close()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_MTU = 65535
_QUANTUM = 65536
_BURST = "256k"
_MIN_QUEUE = 1024 * 1024
_UNCAPPED = 100_000_000_000  # bytes/s: "no cap" for the default class of an uncapped tree


class NetnsError(RuntimeError):
    pass


def available() -> str | None:
    """None when a shaped namespace can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root (creating a network namespace needs CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            return f"{tool} (iproute2) is not installed"
    return None


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


class ShapedLink:
    """``ip netns`` + veth with an htb tree on the host end. Use as a context manager."""

    def __init__(self, tag: int | None = None) -> None:
        why = available()
        if why is not None:
            raise NetnsError(why)
        n = (tag if tag is not None else os.getpid()) % 250 + 1
        self.ns = f"mgbench{n}"
        self.host_if = f"mgb{n}h"
        self.ns_if = f"mgb{n}n"
        self.host_ip = f"10.213.{n}.1"
        self.ns_ip = f"10.213.{n}.2"
        self._up = False
        self.commands: list[str] = []
        """Every ``tc`` command line applied (for the report)."""

    def __enter__(self) -> ShapedLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        # Leftovers of a killed earlier run with the same tag.
        _sh("ip", "netns", "del", self.ns, check=False)
        _sh("ip", "link", "del", self.host_if, check=False)
        _sh("ip", "netns", "add", self.ns)
        self._up = True
        _sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        _sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _sh("ip", "link", "set", self.host_if, "mtu", str(_MTU), "up")
        inside = ("ip", "netns", "exec", self.ns)
        _sh(*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _sh(*inside, "ip", "link", "set", self.ns_if, "mtu", str(_MTU), "up")
        _sh(*inside, "ip", "link", "set", "lo", "up")

    def close(self) -> None:
        if not self._up:
            return
        _sh("ip", "netns", "del", self.ns, check=False)  # takes the veth pair with it
        _sh("ip", "link", "del", self.host_if, check=False)
        self._up = False

    def tx_bytes(self) -> int:
        """Bytes that have crossed the link towards the namespace (after shaping, so bytes
        still queued in a server's socket buffer are not counted), headers included."""
        return int(Path(f"/sys/class/net/{self.host_if}/statistics/tx_bytes").read_text())

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside the namespace (same environment, same pid after exec)."""
        return ["ip", "netns", "exec", self.ns, *cmd]

    def _tc(self, *args: str, check: bool = True) -> None:
        self.commands.append("tc " + " ".join(args))
        _sh("tc", *args, check=check)

    def unshape(self) -> None:
        _sh("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)

    def shape(
        self, total_bps: int | None, per_group: Mapping[tuple[int, ...], int] | None = None
    ) -> None:
        """Cap what the servers send to the namespace: ``total_bps`` for the whole link
        (None: uncapped) and ``per_group[ports]`` for what a group of server ports (one
        mirror's) sends together."""
        self.unshape()
        self.commands = []
        dev = self.host_if
        link = total_bps or _UNCAPPED

        def cls(parent: str, classid: str, rate: int) -> None:
            self._tc(
                "class", "add", "dev", dev, "parent", parent, "classid", classid,
                "htb", "rate", f"{rate}bps", "ceil", f"{rate}bps",
                "burst", _BURST, "cburst", _BURST, "quantum", str(_QUANTUM),
            )  # fmt: skip

        def queue(classid: str, rate: int) -> None:
            # A short queue under each leaf: the default (1000 packets of up to 64 KiB) holds
            # tens of MB, which the servers would count as sent long before the client has
            # them (and a killed client never gets).
            limit = min(64 * _MIN_QUEUE, max(_MIN_QUEUE, rate // 100))  # 10 ms of the rate
            self._tc(
                "qdisc", "add", "dev", dev, "parent", classid, "handle",
                f"{classid.split(':')[1]}:", "bfifo", "limit", str(limit),
            )  # fmt: skip

        self._tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "99")
        cls("1:", "1:1", link)
        cls("1:1", "1:99", link)
        queue("1:99", link)
        for i, (ports, rate) in enumerate(sorted((per_group or {}).items()), start=10):
            cls("1:1", f"1:{i}", min(rate, link))
            queue(f"1:{i}", min(rate, link))
            for port in ports:
                self._tc(
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "sport", str(port), "0xffff", "flowid", f"1:{i}",
                )  # fmt: skip
