"""``SwarmOptions``: what ``pull(..., swarm=...)`` and ``pull --swarm`` take. Plain data, no
I/O: ``modelget`` and the CLI import it at no cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from modelget.errors import UsageError

SwarmRole = Literal["auto", "seed", "peer"]
ROLES: tuple[SwarmRole, ...] = ("auto", "seed", "peer")
DEFAULT_SEED_FOR_S = 600.0
"""How long a node goes on seeding after its pull at most (``--seed-for``), while the tracker
still lists peers that are downloading."""
DEFAULT_STALL_S = 30.0


@dataclass(frozen=True)
class SwarmOptions:
    """Swarm mode for a pull (``--swarm``): the big blobs travel between the nodes over
    BitTorrent (aria2's), each from a private per-blob torrent.

    ``tracker``: the announce URL of the cluster's tracker (``http://host:6969/announce``), or
    ``"lpd"`` (no tracker: local peer discovery on one L2 segment, public torrents).
    ``role``: ``seed`` (fetches from the ranked mirrors, hands them to the swarm as web seeds),
    ``peer`` (only from the swarm; the mirrors only after ``stall_s`` without progress) or
    ``auto`` (seed when the node's rank, ``RANK``/``SLURM_PROCID``/``JOB_COMPLETION_INDEX``,
    is below ``seeders``). ``torrent_dir``: where the blobs' torrents are read (and a seeder
    writes each one as soon as its blob passed sha256): a directory every node sees, or an
    export tree's ``torrents/``. ``seed_for_s``: after its pull a node seeds while the tracker
    lists downloading peers, at most this long (0: not at all). ``interface``: the interface
    (or address) aria2c's sockets bind to, its BitTorrent port included. ``port``: the
    BitTorrent listening port (default: a free one)."""

    tracker: str
    role: SwarmRole = "auto"
    seeders: int = 1
    torrent_dir: Path | None = None
    seed_for_s: float = DEFAULT_SEED_FOR_S
    stall_s: float = DEFAULT_STALL_S
    interface: str | None = None
    port: int | None = None

    @property
    def lpd(self) -> bool:
        return self.tracker == "lpd"

    def check(self) -> None:
        """Raise ``UsageError`` for a value that cannot work."""
        if not self.lpd:
            parts = urlsplit(self.tracker)
            if parts.scheme not in ("http", "https", "udp") or not parts.hostname:
                raise UsageError(
                    f"--swarm {self.tracker!r} is not a tracker URL",
                    hint="give the tracker's announce URL (http://host:6969/announce), or lpd",
                )
        if self.role not in ROLES:
            raise UsageError(f"unknown swarm role {self.role!r}", hint="auto, seed or peer")
        if self.seeders < 0:
            raise UsageError("--swarm-seeders must be 0 or more")
        if not self.seed_for_s >= 0:
            raise UsageError("--seed-for must be 0 or more")
        if not self.stall_s > 0:
            raise UsageError("--swarm-stall must be more than 0 seconds")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise UsageError(f"--swarm-port {self.port} is not a port (1-65535)")
