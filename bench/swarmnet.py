"""The swarm scene's network (S12): the cluster prototype's topology (research note
cluster.md §2, ``cluster-proto/net.sh``) in network namespaces, built and removed from Python.

    mgsw-br      bridge br0, 10.78.0.254 (the top-of-rack switch; the tracker runs here)
    mgsw-origin  10.78.0.1    the origin (hub simulator); its egress capped at ``wan_bps``
    mgsw-n0..    10.78.0.10+i the nodes; each NIC capped at ``nic_bps`` both ways

Each namespace is joined to the bridge by a veth pair; the caps are htb on the sending end of
each pair (a node's own ``eth0`` for its upload, the bridge's end for its download; the
origin's ``eth0`` for the WAN). The MTU stays at 1500, as on a real link. Nothing is touched
in the root namespace; ``close()`` (also on an exception, Ctrl-C or SIGTERM through the
context manager) first kills what still runs in the namespaces, then deletes them, which
takes their veths and qdiscs along. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from bench.netns import NetnsError, available
from modelget.engines.aria2.process import pid_alive

PREFIX = "mgsw-"
BRIDGE_NS = "mgsw-br"
ORIGIN_NS = "mgsw-origin"
SUBNET = "10.78.0"
BRIDGE_IP = f"{SUBNET}.254"
ORIGIN_IP = f"{SUBNET}.1"
_QUANTUM = 60000


def node_ns(i: int) -> str:
    return f"{PREFIX}n{i}"


def node_ip(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


def _sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def leftovers() -> list[str]:
    """Namespaces of this module's prefix that exist now."""
    out = _sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _kill_inside(names: Sequence[str]) -> None:
    """SIGTERM, then SIGKILL, every process still running in the namespaces ``names`` (only
    ever ones this bench started there: the namespaces are its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [
            int(p)
            for ns in names
            for p in _sh("ip", "netns", "pids", ns, check=False).split()
            if p.isdigit()
        ]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)


class SwarmNet:
    """``with SwarmNet(nodes, wan_bps, nic_bps) as net:`` the namespaces above, up."""

    def __init__(self, nodes: int, wan_bps: int, nic_bps: int, leaf: str = "pfifo") -> None:
        why = available()
        if why is not None:
            raise NetnsError(why)
        if not 1 <= nodes <= 200:
            raise ValueError("1 to 200 nodes")
        self.nodes = nodes
        self.wan_bps = wan_bps
        self.nic_bps = nic_bps
        if leaf not in ("pfifo", "short"):
            raise ValueError("leaf: pfifo (htb's own, 1000 packets) or short (10 ms of the rate)")
        self.leaf = leaf
        """The queue under each cap: htb's default FIFO of 1000 packets (as the prototype's
        net.sh: 30 ms at 400 Mbit/s, 120 ms at 100 Mbit/s), or a bfifo of 10 ms of the rate
        (a node's ACKs wait less behind its own uploads). This kernel has no fq_codel."""
        self.commands: list[str] = []
        """Every ``tc`` command applied (for the report)."""
        self._made: list[str] = []

    def __enter__(self) -> SwarmNet:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> list[str]:
        return [BRIDGE_NS, ORIGIN_NS, *(node_ns(i) for i in range(self.nodes))]

    def open(self) -> None:
        stale = leftovers()  # a killed earlier run's
        _kill_inside(stale)
        for ns in stale:
            _sh("ip", "netns", "del", ns, check=False)
        try:
            self._add_ns(BRIDGE_NS)
            br = ("ip", "-n", BRIDGE_NS)
            _sh(*br, "link", "add", "br0", "type", "bridge")
            _sh(*br, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
            _sh(*br, "link", "set", "br0", "up")
            _sh(*br, "link", "set", "lo", "up")
            self._attach(ORIGIN_NS, ORIGIN_IP, up_bps=self.wan_bps, down_bps=0)
            for i in range(self.nodes):
                self._attach(node_ns(i), node_ip(i), up_bps=self.nic_bps, down_bps=self.nic_bps)
        except BaseException:
            self.close()
            raise

    def _add_ns(self, ns: str) -> None:
        _sh("ip", "netns", "add", ns)
        self._made.append(ns)

    def _cap(self, ns: str, dev: str, bps: int) -> None:
        rate = f"{bps}bps"  # tc's "bps" is bytes per second
        for args in (
            ("qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10"),
            ("class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
             "rate", rate, "ceil", rate, "quantum", str(_QUANTUM)),
        ):  # fmt: skip
            self.commands.append(f"ip netns exec {ns} tc " + " ".join(args))
            _sh("ip", "netns", "exec", ns, "tc", *args)
        if self.leaf == "short":
            limit = str(max(64 * 1024, bps // 100))
            leaf = ("qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "bfifo",
                    "limit", limit)  # fmt: skip
            self.commands.append(f"ip netns exec {ns} tc " + " ".join(leaf))
            _sh("ip", "netns", "exec", ns, "tc", *leaf)

    def _attach(self, ns: str, ip: str, *, up_bps: int, down_bps: int) -> None:
        self._add_ns(ns)
        short = ns.removeprefix(PREFIX)
        inner, outer = f"e-{short}", f"s-{short}"
        _sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
        _sh("ip", "link", "set", inner, "netns", ns)
        _sh("ip", "link", "set", outer, "netns", BRIDGE_NS)
        _sh("ip", "-n", ns, "link", "set", inner, "name", "eth0")
        _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", BRIDGE_NS, "link", "set", outer, "master", "br0")
        _sh("ip", "-n", BRIDGE_NS, "link", "set", outer, "up")
        if up_bps:
            self._cap(ns, "eth0", up_bps)
        if down_bps:
            self._cap(BRIDGE_NS, outer, down_bps)

    def close(self) -> None:
        names = [*self._made, *leftovers()]
        _kill_inside(names)
        for ns in dict.fromkeys(names):
            _sh("ip", "netns", "del", ns, check=False)  # takes its veths and qdiscs along
        self._made = []

    def wrap(self, ns: str, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside namespace ``ns`` (same environment, same pid after exec)."""
        return ["ip", "netns", "exec", ns, *cmd]

    def tx_bytes(self, ns: str) -> int:
        """Bytes ``ns``'s eth0 has sent (after shaping), headers included."""
        out = _sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/statistics/tx_bytes")
        return int(out.strip())
