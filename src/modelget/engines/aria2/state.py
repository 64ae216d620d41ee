"""One job's state while a run works on it (:class:`_Active`)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from modelget.engines import FetchJob, FetchResult
from modelget.engines.aria2.hashing import _Hashing
from modelget.engines.aria2.sources import _Resolving, _Source
from modelget.engines.redirects import ResolvedURL


@dataclass
class _Active:
    """One job's state while the engine works on it."""

    job: FetchJob
    result: FetchResult
    started: float
    baseline: int = 0
    """Bytes on disk when the current aria2 download was added (resumed)."""
    last_completed: int = 0
    gid: str | None = None
    sources: list[_Source] = field(default_factory=list)
    held_back: list[list[_Source]] = field(default_factory=list)
    """Groups of sources tried only if the current download fails (token-needing ones)."""
    uri_mirror: dict[str, str] = field(default_factory=dict)
    readds: int = 0
    resolving: _Resolving | None = None
    rerolve: dict[str, Future[ResolvedURL | None]] = field(default_factory=dict)
    """Per mirror: a check of its idle redirect URL (None: it still works; else a fresh one)."""
    failed_mirrors: set[str] = field(default_factory=set)
    look: tuple[float, dict[str, tuple[int, float]]] | None = None
    """The last look at its servers: when, and per mirror (connections, B/s)."""
    shares: dict[str, float] = field(default_factory=dict)
    """Each mirror's share of the last measured download speed (for byte attribution)."""
    pending: list[_Source] | None = None
    """Resolved sources of a job not yet added to aria2c (waiting for connections)."""
    parked: list[_Source] = field(default_factory=list)
    """Resolved sources of a running download whose mirrors had no connections to spare when
    it started: they join it when they have (:meth:`_Run._schedule`)."""
    per_server: int = 0
    """The download's ``max-connection-per-server`` (its share of each mirror's target)."""
    connections: int = 0
    """Connections aria2 had open for it at the last look."""
    speed: float = 0.0
    """Its download speed at the last look (B/s)."""
    hashing: _Hashing | None = None
    watched: int = 0
    """``completedLength`` at the watchdog's last look, and since when it has not grown:"""
    progress_at: float = field(default_factory=time.monotonic)
    done: bool = False

    def mirrors(self) -> set[str]:
        return {s.src.mirror for s in (self.pending or self.sources)}
