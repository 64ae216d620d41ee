"""The aria2 engine's own watchdog over the mirrors of one download, beside aria2's: pure.

aria2c checks ``lowest-speed-limit`` only once a connection is 10 s old (a hidden
``startup-idle-time`` that neither its command line nor RPC can change), and never re-splits a
running segment, so a mirror that trickles, stalls after a burst, or sends nothing yet keeps
the segments it took while the others finish theirs and wait. At each look at a running
download the run (:meth:`~modelget.engines.aria2.run._Run._watch`) describes it in plain data,
a :class:`Look` with one :class:`MirrorLook` per source (its connections and speed now, its
bytes on the download, its rate per connection over all its downloads: :func:`yardstick`), and
:func:`decide` says what to do, as a :class:`Verdict`: which sources lose their URIs on this
download and why (:class:`TakeOut`), whether the stall clock starts again, which idle redirect
URLs to check. The run carries it out (removing a URI does not close aria2's connection to it,
pausing the download does; the bytes are kept).

The rules, first that applies: connections open and no byte for a while (``stalled``); a
mirror far behind another for the hedge budget (:func:`_behind`); the end of a download held
by a slower mirror (:func:`_endgame`); a mirror below ``lowest_speed_bps`` for
``stall_timeout_s`` while another is not (``too slow``); else a redirected source without a
connection for ``stall_timeout_s`` has its URL checked (a signed URL that expired is resolved
again and swapped in by the run).

Nothing here reads a clock or makes a call: ``now`` comes in, and the only state is each
source's :class:`Clock`, which :func:`tick` and :func:`decide` update (the run keeps it on the
source between looks). :func:`decide` asks aria2 which URIs it uses only through the
``used`` callable it is given, and only when a stalled download has no connection aria2 can
name (tests give a lambda)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from modelget.engines.aria2.limits import SMALL_FILE, _need

STALL_HEDGE_MIN_S = 2.0
"""A download whose connections (all on some of its mirrors) deliver no byte for
max(this, the hedge budget) loses those mirrors to its others (at most ``stall_timeout_s``)."""
BEHIND_RATIO = 8
"""A mirror whose connections bring less than 1/``BEHIND_RATIO`` of the best other mirror's
rate per connection is behind (aria2c never re-splits a running segment: its share of the
file would hold the download's end)."""
MIN_REFERENCE_BPS = 64 * 1024
"""A rate per connection below this is no yardstick for another mirror's."""
YARDSTICK_BYTES = 1024 * 1024
YARDSTICK_CONN_S = 0.1
"""A mirror's rate per connection (its bytes over its connection-seconds, estimated from each
download's progress between looks: :meth:`~modelget.engines.aria2.run._Run._observe`) is a yardstick for the others'
once it rests on this many bytes; its connection-seconds count as at least this many (a fast
mirror can fetch its share in less: on loopback 11 MB in 0.06 connection-seconds, and such a
rate is only ever underestimated, never ignored)."""
RATE_HALF_LIFE_S = 5.0
"""Those totals count for half after this long: a yardstick follows the mirror's rate now."""
ENDGAME_RESTART_S = 0.2
"""What taking a mirror out of a download costs the mirrors left (a pause and resume, new
connections): :func:`_endgame` does it only when they would still finish sooner."""
ALONE_MIN_S = 0.1
"""The shortest span over which :func:`_endgame` measures a holder's own rate."""
STALLED_HOLDER_S = 0.5
"""At the end of a download, a holder that brought no byte for this long is stalled (told
with a reason); before that, no byte is no verdict (a machine under load can hold a
healthy connection's bytes back that long)."""
MAX_REREOLVES_PER_SOURCE = 3
"""A redirected source's URL is resolved again (expired) at most this often per download."""


@dataclass
class Delivered:
    """One mirror's bytes and connection-seconds (both decaying: ``RATE_HALF_LIFE_S``)."""

    bytes: float = 0.0
    conn_s: float = 0.0
    at: float = 0.0
    """When they were last updated."""
    flowing_at: float = -math.inf
    """When it last brought bytes."""

    def add(self, now: float, nbytes: float, conn_s: float) -> None:
        keep = 0.5 ** (max(0.0, now - self.at) / RATE_HALF_LIFE_S) if self.at else 1.0
        self.bytes = self.bytes * keep + nbytes
        self.conn_s = self.conn_s * keep + conn_s
        self.at = now
        if nbytes > 0:
            self.flowing_at = now


def yardstick(
    d: Delivered | None, now: float, hedge_s: float, *, lately: bool = True
) -> float | None:
    """A mirror's rate per connection (B/s) over its recent downloads, while bytes came from
    it lately (within twice the hedge budget: a mirror that finished its segments has no
    connection, but was fast a moment ago; ``lately=False``: however long ago, for a mirror
    idle on a download because it finished its share there); None when it rests on too
    little."""
    if d is None or (lately and now - d.flowing_at > 2 * hedge_s):
        return None
    if d.bytes < YARDSTICK_BYTES:
        return None
    return d.bytes / max(d.conn_s, YARDSTICK_CONN_S)


FASTER_ELSEWHERE = 4.0
"""A big file waits for a mirror this many times faster per connection than the mirrors
with room to start it (see :func:`wait_for_faster`)."""


def wait_for_faster(roomy: Sequence[float | None], busy: Sequence[float | None]) -> bool:
    """Whether a big file should wait for a busy mirror rather than start on the ones with
    connections to spare (rates per connection, B/s; None: not measured). A file started on
    a much slower mirror alone is the one that ends last: the fast mirror joins it only when
    it has room, restarting the download each time (bench S10: files 4-8 of 8 started on a
    mirror at 1 MB/s per connection while the one at 10 MB/s finished two others, and the
    pull took 1.3-1.5x the fast mirror alone). The busy mirror frees connections as its
    downloads end, and the slow one still serves its share of the files they share."""
    fast = max((r for r in busy if r is not None), default=None)
    if fast is None:
        return False
    if any(r is None for r in roomy):
        return False  # a roomy mirror not measured yet may be as fast
    return all(r is not None and fast >= FASTER_ELSEWHERE * r for r in roomy)


@dataclass
class Clock:
    """What the watchdog keeps of one source on one download between looks."""

    slow_since: float | None = None
    """Since when its connections together have been slower than ``lowest_speed_bps``."""
    idle_since: float | None = None
    """Since when aria2 has had no connection open to it."""
    behind_since: float | None = None
    """Since when its connections have been far behind another mirror's (``BEHIND_RATIO``)."""
    alone_completed: int = 0
    """The download's completed length when it was last seen holding the download's end
    alone (:func:`_endgame`)."""
    alone_at: float | None = None
    """When that was (None: not holding it alone at the last look)."""


@dataclass(frozen=True)
class MirrorLook:
    """One source of the download at a look."""

    mirror: str
    clock: Clock = field(default_factory=Clock)
    connections: int = 0
    """Connections aria2 has open to it on this download."""
    speed: float = 0.0
    """Their download speed together (B/s, aria2's average over seconds)."""
    bytes: int = 0
    """Its bytes on this download so far."""
    rate: float | None = None
    """Its rate per connection over its recent downloads (:func:`yardstick`)."""
    rate_before: float | None = None
    """The same, however long ago its bytes came (``yardstick(..., lately=False)``): what a
    mirror idle on the download since it finished its share there could do (:func:`_endgame`)."""
    recheckable: bool = False
    """A redirected source that may be resolved again (``MAX_REREOLVES_PER_SOURCE`` not
    spent, no check of its mirror under way)."""


@dataclass(frozen=True)
class Look:
    """A running download at a look, and the limits it is held to."""

    size: int
    completed: int
    progress_at: float
    """When its completed length last grew (or the stall clock last started again)."""
    connections: int
    """Connections aria2 has open for it (also those not yet among its servers)."""
    per_server: int
    """Its ``max-connection-per-server``."""
    sources: Sequence[MirrorLook]
    hedge_s: float
    """The hedge budget: how long a mirror may lag before the others take its work."""
    lowest_speed_bps: float
    stall_timeout_s: float


@dataclass(frozen=True)
class TakeOut:
    """Take a source's URIs out of the download, closing its connections (a pause around
    the change); ``report``: as a failure of its mirror, with ``reason``."""

    source: int
    """Its index in :attr:`Look.sources`."""
    mirror: str
    reason: str
    report: bool = True


@dataclass(frozen=True)
class Verdict:
    take_out: tuple[TakeOut, ...] = ()
    restart_clock: bool = False
    """The download's stall clock starts again (``progress_at`` = now)."""
    recheck: tuple[int, ...] = ()
    """Sources (indexes) whose idle redirect URL is checked, and resolved again if refused."""


def tick(
    clock: Clock,
    connections: int,
    speed: float,
    now: float,
    lowest_speed_bps: float,
    stall_timeout_s: float,
) -> None:
    """Start or stop a source's slow and idle clocks at a look (before :func:`decide`)."""
    clock.idle_since = (clock.idle_since or now) if not connections else None
    if connections and speed >= lowest_speed_bps:
        clock.slow_since = None
    elif connections:
        clock.slow_since = clock.slow_since or now
    elif clock.idle_since is not None and now - clock.idle_since >= stall_timeout_s:
        # A connection that stalls is closed by aria2's read timeout and opened again:
        # short gaps do not clear a slow mirror, a long idle spell does.
        clock.slow_since = None


def decide(look: Look, now: float, used: Callable[[], Collection[int]] = tuple) -> Verdict:
    """What to do with the download's mirrors at this look (see the module doc). ``used``:
    the sources (indexes) whose URIs aria2 lists as used, asked only when needed."""
    if len(look.sources) < 2:
        return Verdict()
    # In this order, each only when the ones before it decided nothing: they move clocks.
    verdict = _stalled(look, now, used)
    if verdict is None:
        verdict = _behind(look, now)
    if verdict is None:
        verdict = _endgame(look, now)
    if verdict is not None:
        return verdict
    if look.lowest_speed_bps <= 0:
        return Verdict()
    return _too_slow(look, now) or Verdict(recheck=_rechecks(look, now))


def _stalled(look: Look, now: float, used: Callable[[], Collection[int]]) -> Verdict | None:
    """aria2 averages a connection's speed over many seconds, so one that stalls after a
    burst still looks fast for a long while (and aria2's own timeout did not close it either,
    in tests): no byte at all for the stall budget (``STALL_HEDGE_MIN_S``) while connections
    are open means every mirror they are on is stalled. Those go when another mirror is left."""
    stalled = now - look.progress_at
    n = len(look.sources)
    connected = [i for i, s in enumerate(look.sources) if s.connections]
    stall_s = min(look.stall_timeout_s, max(STALL_HEDGE_MIN_S, look.hedge_s))
    if stalled >= stall_s and not connected and look.connections:
        # Connections that have had no answer yet are not among aria2's servers (the first
        # request of a download, sent to one URI to learn the size, is such a one while its
        # mirror does not answer): the URIs aria2 marks used are theirs.
        listed = set(used())
        connected = [i for i in range(n) if i in listed]
    if stalled >= stall_s and connected and len(connected) < n:
        why = f"stalled: no bytes for {stalled:.1f} s"
        return Verdict(
            tuple(TakeOut(i, look.sources[i].mirror, why) for i in connected), restart_clock=True
        )
    return None


def _behind(look: Look, now: float) -> Verdict | None:
    """The mirrors whose connections have been far behind another mirror's for the hedge
    budget lose their URIs on the download.

    aria2c never re-splits a running segment, and checks its own ``lowest-speed-limit``
    only on connections older than 10 s: a mirror that is slow (not below that floor),
    trickling, stalled after a burst, or that has sent no byte yet keeps the segments
    it took while the others finish theirs and wait. So a mirror whose rate per
    connection on this download stays under 1/``BEHIND_RATIO`` of another mirror's
    (:attr:`MirrorLook.rate`, over all that one's downloads) at every look for the hedge
    budget loses its URIs for this download; aria2 then hands its unfinished segments,
    minus what is on disk, to the others. A look without such a yardstick starts the clock
    again. The best mirror is never behind, so the last one is never dropped this way."""
    refs: dict[str, float] = {}
    for s in look.sources:
        if s.rate is not None:
            refs[s.mirror] = s.rate
    for s in look.sources:
        conns, speed = s.connections, s.speed
        others = [v for m, v in refs.items() if m != s.mirror]
        best = max(others, default=0.0)
        if conns and best >= MIN_REFERENCE_BPS and speed / conns < best / BEHIND_RATIO:
            s.clock.behind_since = s.clock.behind_since or now
        else:
            s.clock.behind_since = None
    late = [
        i
        for i, s in enumerate(look.sources)
        if s.clock.behind_since is not None and now - s.clock.behind_since >= look.hedge_s
    ]
    if not late or len(late) >= len(look.sources):
        return None
    out: list[TakeOut] = []
    for i in late:
        s = look.sources[i]
        conns, speed = s.connections, s.speed
        best_m = max((m for m in refs if m != s.mirror), key=lambda m: refs[m], default="?")
        best = refs.get(best_m, 0.0)
        seconds = now - (s.clock.behind_since or now)
        behind = f"while {best_m} sends {best / 1024:.0f} KiB/s per connection"
        if speed <= 0:
            why = f"stalled: no bytes for {seconds:.1f} s on {conns} connection(s), {behind}"
        else:
            # aria2's speed is an average over seconds: a connection that stalled after a
            # burst looks slow, not stalled, so the reason says both.
            why = (
                f"too slow or stalled: {speed / conns / 1024:.0f} KiB/s per connection "
                f"for {seconds:.1f} s, {behind} (over {BEHIND_RATIO} times more)"
            )
        out.append(TakeOut(i, s.mirror, why))
    return Verdict(tuple(out), restart_clock=True)


def _endgame(look: Look, now: float) -> Verdict | None:
    """The end of a download held by a slower mirror: take it out.

    aria2 hands out a download's segments (``min-split-size``, 1 MiB) as connections ask,
    so each mirror fetches in proportion to its speed until none is left; then the
    mirrors done with theirs sit idle on it while a slower one finishes the segments it
    took (aria2 never re-splits a running one): at 1 MB/s per connection, a second or
    more per download, and the pull's last download ends that much later (bench S10).

    While every connection open on a download is on one mirror, look after look, what the
    download brings is that mirror's, measured from the first of those looks (the bytes of
    each mirror are otherwise an estimate from aria2's speeds, averaged over seconds: a mirror
    whose connections bring a burst and stall looks fast for a while and is credited with
    the others' bytes; CI saw such a mirror taken out as merely slower). If another
    mirror of the download is idle on it after bringing some of its bytes, and that one
    alone would fetch what is left (at its rate per connection, :attr:`MirrorLook.rate`,
    on the download's connections) sooner than the holder at its measured rate, by more
    than ``ENDGAME_RESTART_S`` twice over, the holder's URIs are taken out of this
    download. Not a failure when it is merely slower (the mirror keeps its other
    downloads and no warning is given); a fault, reported, when it brought nothing for
    ``STALLED_HOLDER_S`` (stalled) or is over ``BEHIND_RATIO`` times slower. aria2 gives its
    unfinished segments, minus what is on disk, to the others. Measuring first costs a poll
    interval at the end of such a download (``STALLED_HOLDER_S`` when it stalled)."""
    holding = [i for i, s in enumerate(look.sources) if s.connections]
    alone = None
    if len(holding) == 1 and look.connections <= look.sources[holding[0]].connections:
        # Every connection of the download is its (aria2 names a connection among the
        # download's servers only some time after it opens: the others' bytes may flow
        # on connections it does not name yet).
        alone = holding[0]
    for i, s in enumerate(look.sources):
        if i != alone:
            s.clock.alone_at = None
    left = look.size - look.completed
    if alone is None or look.size <= SMALL_FILE or left <= 0 or len(look.sources) < 2:
        return None
    holder = look.sources[alone]
    clock = holder.clock
    since, before = clock.alone_at, clock.alone_completed
    if since is None:
        clock.alone_at, clock.alone_completed = now, look.completed
        return None  # its own bytes are measured from this look on
    span = now - since
    got = max(0, look.completed - before)
    if span < ALONE_MIN_S or (not got and span < STALLED_HOLDER_S):
        return None
    # The others are idle on the download after bringing some of its bytes: what they did,
    # even if longer ago than a yardstick's recency allows (a holder that trickles can keep
    # the download from stalling long after the others finished their shares).
    rates: list[float] = []
    for i, s in enumerate(look.sources):
        rate = s.rate if s.rate is not None else s.rate_before
        if i != alone and s.bytes > 0 and rate is not None:
            rates.append(rate)
    best = max(rates, default=0.0)
    if best < MIN_REFERENCE_BPS:
        return None
    conns = holder.connections
    rate = got / span
    if rate / conns >= best:
        return None
    others = best * min(max(1, look.per_server), _need(left))
    keep = left / rate if rate > 0 else math.inf
    if keep <= left / others + 2 * ENDGAME_RESTART_S:
        return None
    per_conn = rate / conns
    # Silent since its last bytes: a stall, whatever its average over the measure says (a
    # burst early in it made a stalled mirror look merely slower, and it went untold: the
    # flake of test_a_silent_first_mirror_is_hedged_onto_the_good_one[aria2-stalled]).
    quiet = span if rate <= 0 else now - look.progress_at
    if quiet >= STALLED_HOLDER_S:
        why = (
            f"stalled: no bytes for {quiet:.1f} s at the end of the download, while "
            f"another mirror sends {best / 1024:.0f} KiB/s per connection"
        )
        return Verdict((TakeOut(alone, holder.mirror, why, report=True),))
    why = (
        f"too slow or stalled: {per_conn / 1024:.0f} KiB/s per connection at the end of "
        f"the download, while another mirror sends {best / 1024:.0f} KiB/s per connection"
    )
    far = per_conn < best / BEHIND_RATIO
    return Verdict((TakeOut(alone, holder.mirror, why, report=far),))


def _too_slow(look: Look, now: float) -> Verdict | None:
    """A mirror whose connections together stay below ``lowest_speed_bps`` for
    ``stall_timeout_s`` while another mirror is doing better loses its URIs (aria2's own
    ``lowest-speed-limit`` waits until a connection is 10 s old)."""
    limit = look.lowest_speed_bps
    slow = [
        (i, now - s.clock.slow_since)
        for i, s in enumerate(look.sources)
        if s.clock.slow_since is not None and now - s.clock.slow_since >= look.stall_timeout_s
    ]
    healthy = [s for s in look.sources if s.clock.slow_since is None]
    if not (slow and healthy):
        return None
    return Verdict(
        tuple(
            TakeOut(
                i,
                look.sources[i].mirror,
                f"too slow: {look.sources[i].speed / 1024:.0f} KiB/s for {seconds:.0f} s "
                f"(below {limit / 1024:.0f} KiB/s)",
            )
            for i, seconds in slow
        )
    )


def _rechecks(look: Look, now: float) -> tuple[int, ...]:
    """aria2 keeps a URI that failed in the download's list (``tellStatus`` shows it as
    ``used`` like any other), so a signed redirect URL that expired cannot be seen there. A
    redirected source that has had no connection for ``stall_timeout_s`` is checked instead
    (one per mirror at a time); its idle clock starts again."""
    out: list[int] = []
    asked: set[str] = set()
    for i, s in enumerate(look.sources):
        idle = s.clock.idle_since is not None and now - s.clock.idle_since >= look.stall_timeout_s
        if idle and s.recheckable and s.mirror not in asked:
            s.clock.idle_since = now
            asked.add(s.mirror)
            out.append(i)
    return tuple(out)
