"""The pull-wide scheduler: which mirror gets the next connection, and which bytes it fetches.

One pool of work for the whole pull: every missing byte range of every file, across every
mirror that serves the file. One pool of connections: each mirror gets a *target* number of
connections, grown while its rate still rises (a link capped per connection needs many, a
saturated one few) and cut back when the mirror answers 429/503, never above its ceiling.

* Small files go out first, each as one request, all at once (they do not count against a
  mirror's target, only against its ceiling).
* Big files are cut into chunks that shrink as the pool empties (the unassigned bytes divided
  over twice the connections), so no connection starts a long range near the end, and that
  are never longer than the mirror's *largest request*: it starts at 2 MiB and grows while
  longer requests do not make the mirror slower (:class:`SizeLadder`), because a server that
  paces each request after a head start (nginx's ``limit_rate``) serves short requests at the
  link's speed and long ones at its cap.
* An idle connection with nothing queued takes over the tail of the range that would finish
  last (work stealing), split in proportion to the two connections' speeds, so all files
  finish at nearly the same moment; a connection to a much faster mirror takes a slow
  mirror's last ranges whole as soon as it would finish them in half the time. A range
  whose owner has sent nothing for a while is split too (its first half stays with the
  owner until the engine's stall watchdog drops it).
* A failed request gives its range back at once, so another mirror can take it; the failing
  mirror waits out its backoff for that file (or, after 429/503, for every file) and is
  dropped for a file after ``max_tries`` failures in a row or one permanent error.

Pure decision logic: no I/O, no threads, no clock of its own (every call takes ``now``).
Engines hold a lock around it and carry out its answers; tests drive it with literal numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class Policy:
    """The knobs; the defaults are tuned for multi-GB shards and per-connection-capped CDNs."""

    ceiling: int = 64
    """The most connections to one mirror at once (``--connections``; a mirror entry's own
    ``max_connections`` lowers it for that mirror)."""
    initial: int = 8
    """Connections per mirror to start with, before any measurement."""
    small_file: int = 1 * MiB
    """A file up to this size is fetched with one request."""
    min_chunk: int = 1 * MiB
    max_chunk: int = 64 * MiB
    first_request: int = 2 * MiB
    """A mirror's largest request of a big file at first (see :class:`SizeLadder`)."""
    size_step: int = 4
    """Each trial of the size ladder is this many times the current largest request ..."""
    size_keep: float = 0.67
    """... and fails when its half of the connections got less than this share of the other
    half's bytes per connection-second, or the other half less than this share of what it
    got before the trial (the server paces longer requests, or their bursts overflow the
    link). Measured on nginx at 4 MB/s per connection behind a 400 MB/s link, 8 connections:
    2 MiB requests 348 MB/s, 3 MiB requests 47 MB/s."""
    steal_min: int = 256 * 1024
    """Never leave either side of a split with less than this."""
    steal_after_s: float = 0.5
    """A range is split only when its owner would need longer than this to finish it."""
    observe_s: float = 0.3
    """How long an owner keeps a range before its speed is trusted for a split."""
    hedge_after_s: float = 2.0
    """Before any first-byte latency is measured: a range whose owner has given no sign of
    life for this long is taken over whole by another connection (a hedge)."""
    hedge_factor: float = 4.0
    """Once latencies are measured, the silence budget is this many times a mirror's typical
    time to first byte (the owner's own, else the best mirror's) ..."""
    hedge_min_s: float = 1.0
    hedge_max_s: float = 10.0
    """... within these bounds."""
    suspect_s: float = 2.0
    """A mirror whose request was taken over for silence gets no new work for this long
    (doubling with each new silence, up to ``suspect_max_s``) while another mirror serves
    the file; any byte from it clears this."""
    suspect_max_s: float = 30.0
    settle_s: float = 0.1
    """After a change of target, this long before the rate is measured again."""
    window_s: float = 0.25
    """How long the rate is measured at one target."""
    grow_gain: float = 1.25
    """Double again only while doubling raised the mirror's rate at least this much."""
    leap_gain: float = 1.8
    """A doubling that nearly doubled the rate (a link capped per connection): quadruple next."""
    slow_connection_bps: float = 16_000_000
    """Below this per connection at the first measurement, the first step quadruples: a CDN
    that caps each flow (or a long path) needs many connections, and the ramp is the cost."""
    keep_gain: float = 1.05
    """A doubling that gained less than this is undone (more connections only cost CPU)."""
    fast_connection_bps: float = 64_000_000
    """At or above this per connection, a link is not capped per connection, and fewer
    connections may move as much for less CPU: a first look that finds them halves them
    (before any doubling), and so does an undone doubling (see ``shrink_keep``). Measured at
    such looks: 72-90 MB/s on loopback (bench S2), 51-52 MB/s on nginx capped at 40 MB/s per
    connection (bench S1: its first seconds come faster than the cap)."""
    shrink_keep: float = 0.85
    """A halving is kept while the rate stays at least this share of the rate before it
    (windows of a quarter second on loopback vary by ±20 %); below, the count before it comes
    back. Measured on loopback (bench S2, 4 GB, the httpx engine on this 2-core machine):
    2 connections 6.1-6.4 s, 4: 6.9 s, 8: 7.7 s, 1: 7.2-7.5 s."""
    shrink_floor: int = 2
    """Halving stops here: one connection fetches a file's ranges one after the other (each
    request's gap is lost) and leaves no partner to take over a stalled range."""
    throttle_hold_s: float = 5.0
    """After a 429/503, no growth for this long (or the Retry-After, if longer)."""
    endgame_speedup: float = 2.0
    endgame_min_s: float = 0.05
    """The endgame across mirrors: an idle connection to a mirror at least ``endgame_speedup``
    times faster per connection takes over the whole rest of a range on another mirror,
    whenever the owner would need more than twice as long as the thief (its latency
    included) and more than ``endgame_min_s``, not only after ``steal_after_s``."""
    max_tries: int = 5
    """Failures in a row before a mirror is dropped for a file."""
    max_files: int = 64
    """Files in flight at once (started, not finished): a new file starts only below this."""
    retry_wait: Callable[[int], float] = field(default=lambda n: min(30.0, 0.5 * 2 ** (n - 1)))
    """Seconds a mirror waits before its ``n``-th retry of one file."""


@dataclass
class Range:
    """A range in flight: ``[pos, end)`` is still to come; ``end`` drops when stolen."""

    id: int
    file: str
    start: int
    pos: int
    end: int
    mirror: str
    since: float
    base: int
    """``pos`` when the current owner took it (speed = (pos - base) / (now - since))."""
    small: bool = False
    last: float = 0.0
    """The owner's last sign of life: the request, its response headers, or a byte."""
    answered: bool = False
    """The response headers came (the first-byte latency is measured then)."""
    trial: bool = False
    """Its length is a trial of its mirror's size ladder (see :class:`SizeLadder`)."""
    cut: bool = False
    """Its rest went back to the pool while it waited on the server's pacing (see
    ``Scheduler.cut``): its connection is closed at once, which is no failure of the mirror."""

    def left(self) -> int:
        return max(0, self.end - self.pos)

    def rate(self, now: float) -> float:
        elapsed = now - self.since
        return (self.pos - self.base) / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Assign:
    """Fetch ``range`` from ``range.mirror`` now."""

    range: Range


@dataclass(frozen=True)
class Takeover:
    """The rest of a range went whole to another connection: its owner on ``mirror`` was
    ``silent`` beyond the budget, or too slow (``rate`` bytes/s since it took the range,
    against ``thief_rate`` for the connection that took it); ``quiet_s``: since its last
    byte; ``by``: the mirror of the connection that took it (the same one: a hiccup of one
    connection, not the mirror's); ``hiccup``: the owner was silent while other connections
    to its mirror delivered (one flow's trouble, such as a TCP retransmission timeout on a
    full link, not the mirror's)."""

    file: str
    mirror: str
    silent: bool
    quiet_s: float
    rate: float
    thief_rate: float
    by: str = ""
    hiccup: bool = False


@dataclass(frozen=True)
class Wait:
    """Nothing for this connection now; ask again after ``seconds`` (or when woken)."""

    seconds: float


@dataclass
class _FileState:
    key: str
    size: int
    order: int
    mirrors: tuple[str, ...]
    queue: list[tuple[int, int]]
    """Unassigned ranges, sorted, disjoint."""
    failures: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    started: bool = False

    def queued(self) -> int:
        return sum(b - a for a, b in self.queue)

    def live_mirrors(self) -> list[str]:
        return [m for m in self.mirrors if m not in self.dropped]


class SizeLadder:
    """One mirror's largest request of a big file, grown while longer requests are not slower
    per connection (pure).

    Starts at ``policy.first_request``. A first window (``window_s`` after ``settle_s``)
    measures the bytes per connection-second at that size. Then a *trial* of ``size_step``
    times the size runs on half of the mirror's big-file connections while the other half go
    on at the current size, for another window. The trial fails when its half received less
    than ``size_keep`` of the other half's per connection-second, or when the other half fell
    below ``size_keep`` of the first window's (the trial's longer bursts disturbed the link
    they share); the size then stays, for good, and the trial's requests still in flight are
    cut (:meth:`Scheduler.tick`). Otherwise the trial size becomes the current one and the
    next trial starts, up to ``max_chunk``. Both halves share the link at the same moment, so
    the comparison holds whatever the link or the connection count does meanwhile.

    Why: a server that paces each request after a head start (nginx's ``limit_rate`` sends
    about a second's worth at once, then sleeps between sends; a CDN's cap per connection)
    serves a request that fits the head start at the link's speed and a longer one at its
    cap (nginx, 4 MB/s per connection, a 400 MB/s link: 8 connections took 2 MiB requests at
    348 MB/s, 3 MiB ones at 47 MB/s, and 64 connections 32 MiB requests at 57 MB/s). A
    server that does not pace serves long requests at least as fast (their round trip and
    the client's own work per request weigh less), so the size grows to ``max_chunk`` there.
    """

    def __init__(self, policy: Policy, ceiling: int | None = None) -> None:
        self.policy = p = policy
        self.size = max(p.min_chunk, min(p.max_chunk, p.first_request))
        if min(p.initial, ceiling or p.ceiling) < 2:
            self.size = p.max_chunk  # no halves to compare: requests as long as allowed
        self.settled = self.size >= p.max_chunk
        self.trial: int | None = None
        """The size on trial (None: none now)."""
        self.baseline: float | None = None
        """Bytes per connection-second at ``size`` with no trial running (the first window),
        then the trial's own once it became the size."""
        self.window_start: float | None = None
        self.last_tick = 0.0
        self.bytes0 = (0, 0)
        self.seconds = [0.0, 0.0]
        """Connection-seconds of each half (current size, trial) in the window."""

    def tick(
        self, now: float, received: tuple[int, int], connections: tuple[int, int]
    ) -> int | None:
        """``received``: all bytes the mirror's requests at the current size and on trial have
        received so far; ``connections``: how many of each are in flight now. Returns the
        trial size when the trial failed now (its requests in flight should be cut)."""
        p = self.policy
        if self.settled:
            return None
        if self.window_start is None or now < self.window_start:
            if self.window_start is None:
                self.window_start = now + p.settle_s
            self.bytes0, self.seconds, self.last_tick = received, [0.0, 0.0], now
            return None  # settling: the halves form as requests end and new ones start
        dt = now - self.last_tick
        self.last_tick = now
        self.seconds[0] += connections[0] * dt
        self.seconds[1] += connections[1] * dt
        if now - self.window_start < p.window_s:
            return None
        halves = self.seconds if self.trial is not None else self.seconds[:1]
        if min(halves) <= 0:
            if now - self.window_start >= 4 * p.window_s:
                # No connection (or no half) at work at these sizes: the work left is in
                # pieces too short to compare, and not worth comparing any more.
                self.trial, self.settled = None, True
            return None
        current = (received[0] - self.bytes0[0]) / self.seconds[0]
        if self.trial is None:
            self.baseline = current
            self._next()
            return None
        trial = (received[1] - self.bytes0[1]) / self.seconds[1]
        tried, self.trial = self.trial, None
        disturbed = self.baseline is not None and current < self.baseline * p.size_keep
        if trial < current * p.size_keep or disturbed:
            self.settled = True
            return tried
        self.size, self.baseline = tried, trial
        self.settled = self.size >= p.max_chunk
        if not self.settled:
            self._next()
        return None

    def _next(self) -> None:
        """Start a trial at ``size_step`` times the size, measured from a fresh window."""
        p = self.policy
        self.trial = min(p.max_chunk, self.size * max(2, p.size_step))
        self.window_start = None


class Adaptive:
    """One mirror's connection target, grown while it pays (pure; engines of any kind use it).

    Starts at ``policy.initial``. Every ``window_s`` (after ``settle_s`` following a change)
    the mirror's rate is measured; while the mirror uses its whole target, the target doubles
    as long as the last doubling raised the rate by ``grow_gain``. A doubling that gained less
    than ``keep_gain`` (over two windows) is undone and growth stops; so does a gain between
    the two (kept). Where each connection is fast (``fast_connection_bps``: a first look, or
    an undone doubling, that finds them so), the count is halved instead, while the rate holds
    (``shrink_keep``): on an uncapped link the bytes cost CPU, and every connection more costs
    more of it (the httpx engine's threads contend for the GIL). A
    429/503 halves the target and holds growth off for ``throttle_hold_s``.
    """

    def __init__(self, ceiling: int, policy: Policy) -> None:
        self.policy = policy
        self.ceiling = max(1, ceiling)
        self.target = min(self.ceiling, max(1, policy.initial))
        self.growing = True
        self.level_rate: float | None = None
        """The rate measured at ``level_target``."""
        self.level_target = 0
        self.hold_until = 0.0
        self.window_start: float | None = None
        self.window_bytes0 = 0
        self.last_rate = 0.0
        self.doubt: float | None = None
        """The rate of a first window after a doubling that did not pay, until a second one
        confirms it or not."""
        self.shrinking = False
        """Halving: ``level_target`` is the count before the last halving."""
        self.regrow = False
        """Growth resumes when a halving loses (it began at a first look, not at an undone
        doubling)."""

    def throttle(self, now: float, active: int, retry_after: float | None = None) -> None:
        self.target = max(1, min(self.target, max(1, active)) // 2)
        self.growing = self.shrinking = False
        self.level_rate, self.level_target = None, 0
        self.doubt = None
        self.hold_until = now + max(self.policy.throttle_hold_s, retry_after or 0.0)
        self.window_start = None

    def tick(
        self,
        now: float,
        total_bytes: int,
        *,
        busy: bool,
        more_work: bool = True,
        draining: bool = False,
        slow_only: bool = False,
        may_shrink: bool = True,
    ) -> bool:
        """``total_bytes``: everything received from the mirror so far; ``busy``: it has
        ``target`` connections at work; ``draining``: more than that (requests begun before
        the target was cut): nothing is measured until they are down to it; ``slow_only``:
        an early look, that counts only if it finds slow connections (the first step then
        quadruples) or fast ones it may halve, else it is as if ``draining``; ``may_shrink``:
        nothing says the mirror caps each connection (see ``fast_connection_bps``). True
        when ``target`` changed."""
        p = self.policy
        if draining:
            self.window_start = None
            return False
        if self.window_start is None or now < self.window_start:
            if self.window_start is None:
                self.window_start = now + p.settle_s
            self.window_bytes0 = total_bytes  # settling: not measured
            return False
        if now - self.window_start < p.window_s:
            return False
        rate = (total_bytes - self.window_bytes0) / (now - self.window_start)
        first = self.level_rate is None and busy
        fast = first and may_shrink and rate / self.target >= p.fast_connection_bps
        if slow_only and not fast and not (first and rate / self.target < p.slow_connection_bps):
            self.window_start = None
            return False
        self.window_start, self.window_bytes0 = now, total_bytes
        self.last_rate = rate
        if self.shrinking:
            return self._shrink_step(now, rate, busy)
        if not self.growing or now < self.hold_until or not busy:
            return False
        if fast and self.target > p.shrink_floor:
            self.level_rate, self.level_target = rate, self.target
            self.regrow = True  # a halving that loses goes back to growing
            return self._halve(now)
        factor = 2
        if self.level_rate is not None and self.level_target < self.target:
            # The first measurement since a doubling: did it pay? A window that says no is
            # checked by one more (their mean decides): the new connections may still have been
            # in TCP's slow start, and an undo is for the rest of the pull (a 4 GB pull stayed
            # at 8 connections, 80 % of a link that 16 fill, after one such window).
            if self.doubt is None and rate < self.level_rate * p.keep_gain:
                self.doubt = rate
                return False
            if self.doubt is not None:
                rate, self.doubt = (rate + self.doubt) / 2, None
            if rate < self.level_rate * p.keep_gain:
                self.growing = False
                self.target = self.level_target
                if may_shrink and self.level_rate / self.level_target >= p.fast_connection_bps:
                    self.regrow = False
                    self._halve(now)  # measured against the rate before the doubling
                return True
            if rate < self.level_rate * p.grow_gain:
                self.growing = False
                self.level_rate, self.level_target = rate, self.target
                return False
            if rate >= self.level_rate * p.leap_gain:
                factor = 4  # it nearly doubled the rate: a link capped per connection
            self.level_rate, self.level_target = rate, self.target
        elif self.level_rate is None or self.level_target != self.target:
            if self.level_rate is None and rate / self.target < p.slow_connection_bps:
                factor = 4  # slow connections at the first look: the ramp is the cost
            self.level_rate, self.level_target = rate, self.target
        else:
            # Measured again at the same target (no work for more connections until now).
            self.level_rate = rate
        if self.target >= self.ceiling or not more_work:
            return False
        self.target = min(self.ceiling, self.target * factor)
        self.window_start = now + p.settle_s
        return True

    def _halve(self, now: float) -> bool:
        """Try half the connections (``level_*``: the count and rate to hold)."""
        floor = max(1, self.policy.shrink_floor)
        if self.target <= floor:
            self.shrinking = False
            return False
        self.growing, self.shrinking = False, True
        self.target = max(floor, self.target // 2)
        self.window_start = now + self.policy.settle_s
        return True

    def _shrink_step(self, now: float, rate: float, busy: bool) -> bool:
        """A window after a halving: keep it and halve again while the rate holds, else go
        back to the count before it and stay."""
        if not busy or self.level_rate is None:
            return False  # not enough work to judge the count: leave it
        keep = self.level_rate * self.policy.shrink_keep
        if rate < keep and self.doubt is None:
            self.doubt = rate  # one window varies by ±20 % on loopback: a second one decides
            return False
        if self.doubt is not None:
            rate, self.doubt = (rate + self.doubt) / 2, None
        if rate >= keep:
            self.level_rate, self.level_target = rate, self.target
            self.regrow = False  # fewer held once: a later loss only goes back one step
            return self._halve(now)
        # Fewer lost: the count before comes back, and grows from there if the halving was
        # a first look's guess (a link capped per connection near the threshold).
        self.shrinking, self.growing = False, self.regrow
        self.target = self.level_target
        self.window_start = now + self.policy.settle_s
        return True


@dataclass
class _MirrorState:
    name: str
    rank: int
    adapt: Adaptive
    ladder: SizeLadder
    active: int = 0
    active_small: int = 0
    peak: int = 0
    not_before: float = 0.0
    """Retry-After / 429 back-off for the whole mirror."""
    total_bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    """The last few times from a request to its response headers (seconds)."""
    conn_rate: float = 0.0
    """Bytes/s of one connection, from its finished requests (a moving average)."""
    received: list[int] = field(default_factory=lambda: [0, 0])
    """Bytes received by its big-file requests at the ladder's current size and on trial."""
    last_byte: float | None = None
    """When any of its connections last received a byte (None: never)."""
    suspect_until: float = 0.0
    suspect_for: float = 0.0
    """The last suspicion's length (doubles with each silence, cleared by a byte)."""

    def latency(self) -> float | None:
        """The median of the recent first-byte latencies, None before any."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[len(ordered) // 2]

    @property
    def ceiling(self) -> int:
        return self.adapt.ceiling

    @property
    def target(self) -> int:
        return self.adapt.target


class Scheduler:
    """State in, next actions out. See the module docstring."""

    def __init__(
        self,
        files: Iterable[tuple[str, int, Sequence[tuple[int, int]], Sequence[str]]],
        mirrors: Sequence[tuple[str, int | None]],
        policy: Policy | None = None,
        now: float = 0.0,
    ) -> None:
        """``files``: (key, size, missing ranges, mirrors that serve it, best first).
        ``mirrors``: (name, its own connection cap or None), best first."""
        self.policy = p = policy or Policy()
        self.mirrors: dict[str, _MirrorState] = {}
        for rank, (name, cap) in enumerate(mirrors):
            ceiling = max(1, min(p.ceiling, cap) if cap else p.ceiling)
            self.mirrors[name] = _MirrorState(
                name, rank, Adaptive(ceiling, p), SizeLadder(p, ceiling)
            )
        self.files: dict[str, _FileState] = {}
        for order, (key, size, missing, serving) in enumerate(files):
            queue = sorted((a, b) for a, b in missing if b > a)
            self.files[key] = _FileState(
                key, size, order, tuple(m for m in serving if m in self.mirrors), queue
            )
        self.active: dict[int, Range] = {}
        self.under_way: set[str] = set()
        """Files started and not finished (see ``Policy.max_files``)."""
        self._ids = itertools.count(1)
        self.started = now
        self.cut: list[int] = []
        """Ranges (ids) whose rest went back to the pool while their request waited on the
        server's pacing (a size step undone): the engine closes their connections and clears
        the list."""
        self.taken_over: list[Takeover] = []
        """Each range taken over whole; the engine takes them (to tell the user) and clears
        the list."""

    # --- questions ------------------------------------------------------------------------------

    def targets(self) -> dict[str, int]:
        return {m.name: m.target for m in self.mirrors.values()}

    def peaks(self) -> dict[str, int]:
        """The most connections each mirror had at once (small-file requests included)."""
        return {m.name: m.peak for m in self.mirrors.values() if m.peak}

    def finished(self) -> bool:
        """No work queued or in flight (every file complete, or given up)."""
        return not self.active and not any(self._takeable(f) for f in self.files.values())

    def file_done(self, key: str) -> bool:
        """Nothing of ``key`` queued or in flight."""
        f = self.files[key]
        return not f.queue and not any(r.file == key for r in self.active.values())

    def stuck(self, key: str) -> bool:
        """``key`` has bytes left that no mirror may fetch any more (all dropped)."""
        f = self.files[key]
        return bool(f.queue) and not f.live_mirrors() and not self._in_flight(key)

    def dropped(self, key: str) -> Mapping[str, str]:
        return dict(self.files[key].dropped)

    def _in_flight(self, key: str) -> bool:
        return any(r.file == key for r in self.active.values())

    def _takeable(self, f: _FileState) -> bool:
        return bool(f.queue) and bool(f.live_mirrors())

    # --- the next action for an idle connection -----------------------------------------------

    def next(self, now: float) -> Assign | Wait | None:
        """What an idle connection should do. None: no work is left and none can come back
        (the connection may close); ``Wait``: try again later."""
        p = self.policy
        soonest: float | None = None
        candidates = []
        for m in self.mirrors.values():
            if m.not_before > now:
                if any(
                    self._takeable(f) and m.name in f.live_mirrors() for f in self.files.values()
                ):
                    soonest = _min(soonest, m.not_before - now)
                continue
            candidates.append(m)
        # Small files first, all at once: they only need a free slot under the ceiling.
        for m in sorted(candidates, key=lambda m: m.rank):
            if m.active >= m.ceiling:
                continue
            for f in self.files.values():
                if f.size > p.small_file or not f.queue or not self._may_use(f, m.name, now):
                    continue
                if not self._may_start(f):
                    continue
                a, b = f.queue.pop(0)
                return Assign(self._open(f, m, a, b, now, small=True))
        # Then chunks of big files, then steals: the mirror furthest below its target first.
        order = sorted(
            (
                m
                for m in candidates
                if m.active - m.active_small < m.target and m.active < m.ceiling
            ),
            key=lambda m: ((m.active - m.active_small) / m.target, m.rank),
        )
        # A range whose owner went silent is taken over before new chunks go out: left alone
        # it would hold its file's hashed prefix, and the pull's end, until the queue is empty
        # (on a full link a flow can wait out TCP retransmission timeouts for seconds).
        for m in order:
            got = self._steal(m, now, silent_only=True)
            if got is not None:
                return Assign(got)
        for m in order:
            got = self._chunk(m, now)
            if got is not None:
                return Assign(got)
        for m in order:
            got = self._steal(m, now)
            if got is not None:
                return Assign(got)
        # Nothing now: when may something come?
        for f in self.files.values():
            for name, t in f.not_before.items():
                if t > now and f.queue and name not in f.dropped:
                    soonest = _min(soonest, t - now)
        if self.active or soonest is not None:
            return Wait(min(0.1, soonest) if soonest is not None else 0.1)
        if any(self._takeable(f) for f in self.files.values()):
            return Wait(0.1)  # every mirror is at its target: a slot frees up soon
        return None

    def _may_use(self, f: _FileState, mirror: str, now: float) -> bool:
        if not self._may_ask(f, mirror, now):
            return False
        if self.mirrors[mirror].suspect_until <= now:
            return True
        # A suspect mirror (its last request went silent) serves only files nobody else can.
        return not any(
            self._may_ask(f, other, now) and self.mirrors[other].suspect_until <= now
            for other in f.mirrors
            if other != mirror
        )

    def _may_ask(self, f: _FileState, mirror: str, now: float) -> bool:
        return (
            mirror in f.mirrors
            and mirror not in f.dropped
            and f.not_before.get(mirror, 0.0) <= now
            and self.mirrors[mirror].not_before <= now
        )

    def _may_start(self, f: _FileState) -> bool:
        """``f`` is under way already, or fewer than ``max_files`` files are."""
        return f.key in self.under_way or len(self.under_way) < self.policy.max_files

    def _settle(self, f: _FileState) -> None:
        """``f`` is no longer under way once nothing of it is queued or in flight."""
        if not f.queue and f.key in self.under_way and not self._in_flight(f.key):
            self.under_way.discard(f.key)

    def _open(
        self, f: _FileState, m: _MirrorState, a: int, b: int, now: float, *, small: bool = False
    ) -> Range:
        r = Range(next(self._ids), f.key, a, a, b, m.name, now, a, small, last=now)
        f.started = True
        self.under_way.add(f.key)
        self.active[r.id] = r
        m.active += 1
        if small:
            m.active_small += 1
        m.peak = max(m.peak, m.active)
        return r

    def chunk_size(
        self, mirror: str | None = None, now: float = 0.0, *, trial: bool = False
    ) -> int:
        """How much one new request takes: the unassigned bytes over twice the connections,
        within ``[min_chunk, max_chunk]`` (so chunks shrink toward the end). Once speeds are
        known, a connection to ``mirror`` gets that times its speed over the mean connection's:
        a slow mirror's requests are small, so its last one does not end long after the rest."""
        p = self.policy
        queued = sum(f.queued() for f in self.files.values() if f.size > p.small_file)
        conns = max(1, sum(m.target for m in self.mirrors.values()))
        size = queued // (2 * conns)
        if mirror is not None:
            mine = self.connection_rate(mirror, now)
            mean = self.connection_rate(None, now)
            if mine > 0 and mean > 0:
                size = int(size * min(2.0, mine / mean))
            m = self.mirrors.get(mirror)
            if m is not None:
                largest = m.ladder.trial if trial and m.ladder.trial else m.ladder.size
                size = min(size, largest)
        return max(p.min_chunk, min(p.max_chunk, size))

    def _halves(self, m: _MirrorState) -> tuple[int, int]:
        """``m``'s big-file requests in flight: at the ladder's current size, on trial."""
        big = [r for r in self.active.values() if r.mirror == m.name and not r.small]
        trial = sum(1 for r in big if r.trial)
        return len(big) - trial, trial

    def _chunk(self, m: _MirrorState, now: float) -> Range | None:
        p = self.policy
        size: int | None = None
        endgame: tuple[float, float, list[str]] | None = None
        trial = False  # this request is one of the size ladder's trial
        for f in self.files.values():
            if not f.queue or not self._may_use(f, m.name, now):
                continue
            if not self._may_start(f):
                continue
            if size is None:  # once per call: both look at every file and connection
                if m.ladder.trial is not None:
                    current, on_trial = self._halves(m)
                    trial = on_trial < current or (on_trial == current == 0)
                size = self.chunk_size(m.name, now, trial=trial)
                endgame = self._endgame(m, now)
            a, b = f.queue[0]
            if endgame is not None:
                rate, horizon, faster = endgame
                if min(size, b - a) / rate > horizon and any(
                    self._may_use(f, o, now) for o in faster
                ):
                    continue  # a faster mirror that serves f will have finished everything
            if b - a <= size + p.min_chunk // 2:  # no crumb left behind
                f.queue.pop(0)
            else:
                b = a + size
                f.queue[0] = (b, f.queue[0][1])
            r = self._open(f, m, a, b, now, small=f.size <= p.small_file)
            r.trial = trial and not r.small and m.ladder.trial is not None and b - a > m.ladder.size
            return r
        return None

    def _endgame(self, m: _MirrorState, now: float) -> tuple[float, float, list[str]] | None:
        """The endgame rule for ``m``: a request to it that would take longer than the faster
        mirrors need for everything left (twice the bytes left over the mirrors' rate) is not
        made where one of them serves the file. Returns (``m``'s rate per connection, that
        horizon, the faster mirrors), or None when the rule cannot apply (no rates yet, or no
        faster mirror)."""
        mine = self._conn_rate(m, now)
        if mine <= 0:
            return None
        faster = [
            o.name for o in self.mirrors.values() if o is not m and self._conn_rate(o, now) > mine
        ]
        total = sum(o.adapt.last_rate for o in self.mirrors.values())
        if not faster or total <= 0:
            return None
        left = sum(x.queued() for x in self.files.values())
        left += sum(r.left() for r in self.active.values())
        return mine, max(self.policy.steal_after_s, 2.0 * left / total), faster

    def _steal(self, m: _MirrorState, now: float, *, silent_only: bool = False) -> Range | None:
        """For a connection to ``m``: the tail of the range that would finish last, split in
        proportion to the two connections' speeds; or the whole rest of a range whose owner
        went silent (a hedge) or is so slow that ``m`` would finish it all sooner than the
        owner its smallest share (across mirrors, ``endgame_speedup`` times slower: as soon
        as ``m`` would take less than half the owner's time). ``silent_only``: only such a
        hedge."""
        p = self.policy
        best: Range | None = None
        best_eta = 0.0
        best_whole = False
        mine = self._conn_rate(m, now)
        for r in self.active.values():
            left = r.left()
            if left <= 0:
                continue
            f = self.files[r.file]
            if not self._may_use(f, m.name, now):
                continue
            whole = False
            bar = p.steal_after_s
            if now - r.last >= self.silence_budget(r.mirror):
                if r.mirror == m.name and any(
                    o != m.name and self._may_use(f, o, now) for o in f.mirrors
                ):
                    continue  # another mirror hedges it
                eta, whole = float("inf"), True
            elif silent_only:
                continue
            else:
                rate = r.rate(now)
                if rate <= 0 or now - r.since < p.observe_s:
                    continue
                eta = left / rate
                thief = mine or rate
                if p.steal_min / rate > left / thief:
                    whole = True  # the owner's smallest share would end after all of it here
                elif left < 2 * p.steal_min:
                    continue
                if whole and r.mirror != m.name and mine >= p.endgame_speedup * rate:
                    # The endgame across mirrors: a connection to a mirror that much faster
                    # takes the rest whole even when it ends soon, since it ends sooner there.
                    # A paced server sends in bursts (nginx: one a second), so a slow
                    # mirror's last few hundred KB came up to a second late (bench S10).
                    bar = max(p.endgame_min_s, 2 * (left / mine + (m.latency() or 0.0)))
            if eta > bar and eta > best_eta:
                best, best_eta, best_whole = r, eta, whole
        if best is None:
            return None
        f = self.files[best.file]
        if best_whole:
            cut = best.pos
            silent = best_eta == float("inf")
            owner = self.mirrors[best.mirror]
            hiccup = silent and not self._silent(owner, now)
            self.taken_over.append(
                Takeover(
                    best.file,
                    best.mirror,
                    silent,
                    now - best.last,
                    best.rate(now),
                    mine,
                    m.name,
                    hiccup,
                )
            )
            if silent and best.mirror != m.name and not hiccup:
                self._suspect(owner, now)
        else:
            owner_rate = best.rate(now)
            thief = mine or owner_rate
            keep = int(best.left() * owner_rate / (owner_rate + thief))
            keep = max(p.steal_min, min(best.left() - p.steal_min, keep))
            cut = best.pos + keep
        tail = best.end
        best.end = cut
        if tail - cut > m.ladder.size + p.min_chunk // 2:
            # No longer than the thief's mirror's requests may be: the rest goes back.
            self._requeue(f, cut + m.ladder.size, tail)
            tail = cut + m.ladder.size
        return self._open(f, m, cut, tail, now, small=f.size <= p.small_file)

    def silence_budget(self, mirror: str) -> float:
        """How long a request to ``mirror`` may give no sign of life before another connection
        takes its range over: ``hedge_factor`` times its typical first-byte latency (or the
        best mirror's, before it has one of its own), within ``[hedge_min_s, hedge_max_s]``;
        ``hedge_after_s`` before any latency is known."""
        p = self.policy
        own = self.mirrors[mirror].latency()
        if own is None:
            known = [x for x in (o.latency() for o in self.mirrors.values()) if x is not None]
            if not known:
                return p.hedge_after_s
            own = min(known)
        return max(p.hedge_min_s, min(p.hedge_max_s, p.hedge_factor * own))

    def _silent(self, m: _MirrorState, now: float) -> bool:
        """``m`` as a whole gave no byte for its silence budget: one of its connections going
        silent while the others deliver is that flow's hiccup (a TCP retransmission timeout on
        a full link), no reason to keep work from the mirror (two 150 MB/s mirrors: a mirror
        kept idle that way for 1-1.5 s made a 7.1 s pull take 8-8.6 s)."""
        return m.last_byte is None or now - m.last_byte >= self.silence_budget(m.name)

    def _suspect(self, m: _MirrorState, now: float) -> None:
        p = self.policy
        m.suspect_for = min(p.suspect_max_s, m.suspect_for * 2 if m.suspect_for else p.suspect_s)
        m.suspect_until = now + m.suspect_for

    def _conn_rate(self, m: _MirrorState, now: float) -> float:
        """One connection to ``m``: its speed now, else from its finished requests, else its
        last measured rate over its target."""
        return (
            self.connection_rate(m.name, now) or m.conn_rate or m.adapt.last_rate / max(1, m.target)
        )

    def connection_rate(self, mirror: str | None, now: float) -> float:
        """Mean bytes/s of one connection to ``mirror`` (None: to any mirror) now; 0 when
        unknown."""
        rates = [
            r.rate(now)
            for r in self.active.values()
            if (mirror is None or r.mirror == mirror)
            and not r.small
            and now - r.since >= self.policy.observe_s
        ]
        rates = [x for x in rates if x > 0]
        return sum(rates) / len(rates) if rates else 0.0

    # --- what the connection reports ------------------------------------------------------------

    def answered(self, r: Range, now: float) -> None:
        """The response headers for ``r`` came: its mirror's first-byte latency."""
        if r.answered:
            return
        r.answered = True
        r.last = now
        m = self.mirrors[r.mirror]
        m.latencies.append(now - r.since)
        del m.latencies[:-8]

    def wrote(self, r: Range, n: int, now: float) -> None:
        """``n`` bytes of ``r`` landed at ``r.pos``."""
        r.pos += n
        r.last = now
        m = self.mirrors[r.mirror]
        m.total_bytes += n
        m.last_byte = now
        if not r.small:
            m.received[1 if r.trial else 0] += n
        m.suspect_until, m.suspect_for = 0.0, 0.0
        f = self.files[r.file]
        f.failures.pop(r.mirror, None)  # bytes came: the mirror is healthy for this file

    def allowed(self, r: Range, n: int) -> int:
        """How many of the next ``n`` bytes still belong to ``r`` (0: the rest was stolen)."""
        return max(0, min(n, r.end - r.pos))

    def release(self, r: Range, now: float) -> None:
        """The request for ``r`` ended (complete, or closed early: the rest goes back)."""
        if self.active.pop(r.id, None) is None:
            return
        m = self.mirrors[r.mirror]
        m.active -= 1
        if r.small:
            m.active_small -= 1
        held = now - r.since
        if not r.small and held > 0 and r.pos - r.base >= self.policy.steal_min:
            rate = (r.pos - r.base) / held
            m.conn_rate = rate if m.conn_rate <= 0 else 0.7 * m.conn_rate + 0.3 * rate
        if r.pos < r.end:
            self._requeue(self.files[r.file], r.pos, r.end)
        self._settle(self.files[r.file])

    def failed(
        self,
        r: Range,
        now: float,
        reason: str,
        *,
        permanent: bool = False,
        throttled: bool = False,
        retry_after: float | None = None,
    ) -> str | None:
        """The request for ``r`` failed; its rest goes back to the pool at once. Returns the
        reason the mirror is dropped for this file (once: when this failure drops it), or None."""
        self.release(r, now)
        f = self.files[r.file]
        m = self.mirrors[r.mirror]
        if throttled:
            self.throttle(r.mirror, now, retry_after)
            m.not_before = max(m.not_before, now + 0.25)
        elif retry_after:
            m.not_before = max(m.not_before, now + retry_after)
        if r.mirror in f.dropped:
            return None  # another connection's failure dropped it already
        if permanent:
            f.dropped[r.mirror] = reason
            return reason
        n = f.failures.get(r.mirror, 0) + 1
        f.failures[r.mirror] = n
        if n >= self.policy.max_tries:
            why = f"{reason} (gave up after {n} tries)"
            f.dropped.setdefault(r.mirror, why)
            return why
        wait = self.policy.retry_wait(n)
        if retry_after is not None:
            wait = max(wait, retry_after)
        f.not_before[r.mirror] = now + wait
        return None

    def drop(self, mirror: str, key: str, reason: str) -> None:
        """``mirror`` may not serve ``key`` any more (e.g. it serves other bytes)."""
        self.files[key].dropped.setdefault(mirror, reason)

    def give_up(self, key: str) -> None:
        """Stop scheduling ``key`` (a local error no mirror can fix)."""
        self.files[key].queue.clear()
        self._settle(self.files[key])

    def _requeue(self, f: _FileState, a: int, b: int) -> None:
        f.queue.append((a, b))
        f.queue.sort()

    # --- adaptive connection count ----------------------------------------------------------------

    def throttle(self, mirror: str, now: float, retry_after: float | None = None) -> None:
        """A 429/503 from ``mirror``: halve its connections, stop growing, hold off a while."""
        m = self.mirrors[mirror]
        m.adapt.throttle(now, m.active - m.active_small, retry_after)
        if retry_after:
            m.not_before = max(m.not_before, now + retry_after)

    def tick(self, now: float) -> bool:
        """Measure each mirror's rate and move its target (see :class:`Adaptive`); True when
        a target changed."""
        changed = False
        for m in self.mirrors.values():
            big = m.active - m.active_small
            size = m.ladder.size
            first = m.adapt.level_rate is None and m.ladder.trial is None
            failed = m.ladder.tick(now, (m.received[0], m.received[1]), self._halves(m))
            if failed is not None:
                self._cut_paced(m)
            elif m.ladder.size != size:  # the trial size is the current one now
                for r in self.active.values():
                    if r.mirror == m.name:
                        r.trial = False
            # The count is measured once the size has settled (each at one setting of the
            # other), from a fresh window. One exception: a first window (requests of the
            # first size, before any trial) that finds slow connections quadruples them at
            # once, so a mirror that needs many (1 MB/s each) has them in 0.4 s, not after its
            # size trials (2 s: bench S10's slow mirror sat at 8 connections meanwhile). Fast
            # connections wait (doubling them early cost two 150 MB/s mirrors 3 %, bench S3).
            # Another: once a bigger request size has held up (the mirror does not pace each
            # request: nginx's limit_rate does, and its first seconds look fast), fast
            # connections are halved without waiting for the sizes, and the halving goes on
            # during the trials: fewer connections change neither half's bytes per
            # connection-second, which the trials compare.
            unpaced = m.ladder.size > self.policy.first_request
            early = first and not m.ladder.settled
            early_fast = m.adapt.level_rate is None and not m.ladder.settled and unpaced
            settling = big > m.target or (
                not m.ladder.settled and not first and not early_fast and not m.adapt.shrinking
            )
            more = self._work_for_more(m)
            if m.adapt.tick(
                now,
                m.total_bytes,
                busy=big >= m.target,
                more_work=more,
                draining=settling,
                slow_only=early or early_fast,
                may_shrink=unpaced,
            ):
                changed = True
        return changed

    def _cut_paced(self, m: _MirrorState) -> None:
        """``m`` paces requests of its failed trial's size: those in flight wait out the
        pacing, up to a second; what they have not received goes back to the pool, for
        requests that fit."""
        for r in self.active.values():
            if r.mirror == m.name and r.trial and r.left() > 0:
                self._requeue(self.files[r.file], r.pos, r.end)
                r.end, r.cut = r.pos, True
                self.cut.append(r.id)

    def _work_for_more(self, m: _MirrorState) -> bool:
        """Enough unassigned bytes for ``m``'s extra connections to matter."""
        p = self.policy
        left = sum(f.queued() for f in self.files.values() if m.name in f.live_mirrors())
        left += sum(r.left() for r in self.active.values() if r.mirror == m.name)
        return left >= m.target * p.min_chunk


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
