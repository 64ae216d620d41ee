"""The pull-wide connection targets, one per mirror (:class:`_Budget`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelget.engines import EngineOptions, FetchResult
from modelget.engines.aria2.limits import (
    GROW_BYTES_PER_CONNECTION,
    PER_HOST_MAX,
    SMALL_FILE,
    _need,
)
from modelget.engines.aria2.state import _Active
from modelget.events import Reporter, report_connections
from modelget.scheduler import Adaptive, Policy


class _Budget:
    """The pull-wide connection targets, one per mirror (``scheduler.Adaptive``: grown while
    the mirror's rate still rises, up to ``max_connections``), and what was chosen."""

    def __init__(self, options: EngineOptions, reporter: Reporter, peaks: dict[str, int]) -> None:
        self.ceiling = max(1, options.max_connections)
        self.reporter = reporter
        self.adapt: dict[str, Adaptive] = {}
        self.peaks = peaks
        self.reported: dict[str, int] = {}

    def _adaptive(self, mirror: str, cap: int | None) -> Adaptive:
        a = self.adapt.get(mirror)
        if a is None:
            ceiling = max(1, min(self.ceiling, cap) if cap else self.ceiling)
            # No quadrupled first step here: aria2 meets a target above 16 only by starting
            # more files or restarting a download with more connections (changeOption), and a
            # jump from 16 to 64 did that too early (bench S9: 3.6 s → 4.7 s).
            # No halving either: aria2c moves bytes without Python's per-connection cost, and
            # a lower count takes restarts too.
            policy = Policy(
                ceiling=ceiling,
                initial=min(PER_HOST_MAX, ceiling),
                slow_connection_bps=0,
                fast_connection_bps=math.inf,
            )
            a = Adaptive(ceiling, policy)
            self.adapt[mirror] = a
        return a

    def target(self, mirror: str, state: _Active) -> int:
        caps = [
            s.src.max_connections
            for s in (state.pending or state.sources)
            if s.src.mirror == mirror
        ]
        return self._adaptive(mirror, caps[0] if caps else None).target

    def targets(self) -> dict[str, int]:
        return {m: a.target for m, a in self.adapt.items()}

    def tick(
        self,
        now: float,
        results: Sequence[FetchResult],
        big: Sequence[_Active],
        waiting: Sequence[_Active],
    ) -> None:
        for s in [*big, *waiting]:
            for x in s.pending or s.sources:
                self._adaptive(x.src.mirror, x.src.max_connections)
        totals: dict[str, int] = {}
        for r in results:
            for m, n in r.bytes_by_mirror.items():
                totals[m] = totals.get(m, 0) + n
        for m, a in self.adapt.items():
            using = sum(s.per_server for s in big if m in s.mirrors())
            more = any(m in s.mirrors() for s in waiting if s.job.size > SMALL_FILE) or any(
                m in s.mirrors()
                and s.job.size - s.last_completed > a.target * GROW_BYTES_PER_CONNECTION
                for s in big
            )
            a.tick(now, totals.get(m, 0), busy=using >= a.target, more_work=more)

    def report(self, states: Sequence[_Active]) -> None:
        """Tell the reporter when the connections chosen per mirror change; keep the peaks."""
        chosen: dict[str, int] = {}
        for s in states:
            if s.gid is None:
                continue
            n = (
                min(s.per_server, _need(s.job.size - s.last_completed))
                if s.job.size > SMALL_FILE
                else min(1, s.connections)
            )
            for m in s.mirrors():
                chosen[m] = chosen.get(m, 0) + n
        for m, n in chosen.items():
            if n > self.peaks.get(m, 0):
                self.peaks[m] = n
        now = {m: n for m, n in chosen.items() if n}
        if now and now != self.reported:
            self.reported = now
            report_connections(self.reporter, now)
