"""The aria2 engine's watchdog decisions, from plain data: no server, no aria2c, no clock."""

from __future__ import annotations

from collections.abc import Sequence

from modelget.engines.aria2 import watchdog
from modelget.engines.aria2.watchdog import Clock, Delivered, Look, MirrorLook, Verdict

MB = 1024 * 1024
FAST = 4 * MB  # B/s per connection
HEDGE = 1.0


def look(
    sources: Sequence[MirrorLook],
    *,
    size: int = 256 * MB,
    completed: int = 64 * MB,
    progress_at: float = 10.0,
    connections: int | None = None,
    per_server: int = 4,
    lowest_speed_bps: float = 0.0,
    stall_timeout_s: float = 30.0,
) -> Look:
    return Look(
        size=size,
        completed=completed,
        progress_at=progress_at,
        connections=sum(s.connections for s in sources) if connections is None else connections,
        per_server=per_server,
        sources=sources,
        hedge_s=HEDGE,
        lowest_speed_bps=lowest_speed_bps,
        stall_timeout_s=stall_timeout_s,
    )


def mirror(
    name: str,
    conns: int = 4,
    speed: float = 4 * FAST,
    *,
    rate: float | None = FAST,
    nbytes: int = 32 * MB,
    clock: Clock | None = None,
) -> MirrorLook:
    return MirrorLook(name, clock or Clock(), conns, speed, nbytes, rate)


def taken(v: Verdict) -> list[str]:
    return [t.mirror for t in v.take_out]


def test_all_healthy_nothing_happens() -> None:
    a, b = mirror("a"), mirror("b")
    for now in (10.0, 10.5, 11.0, 15.0):
        v = watchdog.decide(look([a, b], progress_at=now), now)
        assert v == Verdict()
    assert a.clock.behind_since is None and b.clock.behind_since is None


def test_one_mirror_is_never_judged() -> None:
    slow = mirror("slow", speed=1.0, rate=1.0)
    assert watchdog.decide(look([slow], progress_at=0.0), 100.0) == Verdict()


def test_far_behind_loses_its_uris_after_the_hedge_budget() -> None:
    fast = mirror("fast")
    slow = mirror("slow", conns=4, speed=4 * 16 * 1024, rate=None)  # 16 KiB/s per connection
    first = watchdog.decide(look([fast, slow], progress_at=10.0), 10.0)
    assert first == Verdict()  # behind, but not for the hedge budget yet
    assert slow.clock.behind_since == 10.0 and fast.clock.behind_since is None
    assert watchdog.decide(look([fast, slow], progress_at=10.5), 10.5) == Verdict()
    v = watchdog.decide(look([fast, slow], progress_at=11.0), 11.0)
    assert taken(v) == ["slow"] and v.take_out[0].source == 1
    assert v.take_out[0].report and v.restart_clock
    assert "too slow or stalled: 16 KiB/s per connection for 1.0 s" in v.take_out[0].reason
    assert "while fast sends 4096 KiB/s per connection" in v.take_out[0].reason


def test_a_mirror_never_seen_is_not_judged_too_early() -> None:
    # A mirror whose connections have sent no byte yet: behind only once the hedge budget
    # has passed, and then as stalled.
    fast = mirror("fast")
    new = mirror("new", conns=2, speed=0.0, rate=None, nbytes=0)
    for now in (10.0, 10.3, 10.9):
        assert watchdog.decide(look([fast, new], progress_at=now), now) == Verdict()
    v = watchdog.decide(look([fast, new], progress_at=11.0), 11.0)
    assert taken(v) == ["new"]
    assert v.take_out[0].reason.startswith("stalled: no bytes for 1.0 s on 2 connection(s)")


def test_no_yardstick_no_judgement() -> None:
    # Neither mirror's rate rests on enough bytes: nobody is behind anybody, however long.
    a = mirror("a", rate=None)
    b = mirror("b", speed=1024.0, rate=None)
    for now in (10.0, 20.0, 30.0):
        assert watchdog.decide(look([a, b], progress_at=now), now) == Verdict()


def test_a_look_without_the_gap_starts_the_clock_again() -> None:
    fast = mirror("fast")
    slow = mirror("slow", speed=4 * 16 * 1024, rate=None)
    watchdog.decide(look([fast, slow], progress_at=10.0), 10.0)
    caught_up = mirror("slow", speed=4 * FAST, rate=None, clock=slow.clock)
    watchdog.decide(look([fast, caught_up], progress_at=10.6), 10.6)
    assert slow.clock.behind_since is None
    v = watchdog.decide(look([fast, slow], progress_at=11.2), 11.2)
    assert v == Verdict()  # behind again since 11.2 only


def test_the_best_mirror_is_never_behind() -> None:
    # Both far below the other's rate per connection: neither is dropped (the last is kept).
    a = mirror("a", speed=1024.0, rate=FAST)
    b = mirror("b", speed=1024.0, rate=FAST)
    watchdog.decide(look([a, b], progress_at=10.0), 10.0)
    assert watchdog.decide(look([a, b], progress_at=12.0), 12.0) == Verdict()


def endgame(
    holder: MirrorLook, idle: MirrorLook, looks: Sequence[tuple[float, int]], **kw: int
) -> list[Verdict]:
    """The watchdog's verdicts at looks (time, completed) at a 64 MiB download held by
    ``holder`` alone, with ``idle`` done with its share."""
    return [
        watchdog.decide(
            look([holder, idle], size=64 * MB, completed=done, progress_at=now, **kw), now
        )
        for now, done in looks
    ]


def test_silent_holder_at_the_end_is_stalled_with_a_reason() -> None:
    # 200 KiB/s per connection by aria2's lagging average, but no byte comes.
    holder = MirrorLook("holder", Clock(), 4, 4 * 200 * 1024, 20 * MB, None)
    idle = mirror("idle", conns=0, speed=0.0, nbytes=40 * MB)
    first, early, late = endgame(holder, idle, [(10.0, 60 * MB), (10.2, 60 * MB), (10.5, 60 * MB)])
    assert first == Verdict()  # its own bytes are measured from here
    assert early == Verdict()  # no byte for 0.2 s: not yet a stall
    assert taken(late) == ["holder"]
    out = late.take_out[0]
    assert out.report  # a fault, told
    assert out.reason.startswith("stalled: no bytes for 0.5 s at the end of the download")
    assert not late.restart_clock


def test_a_merely_slower_holder_goes_silently() -> None:
    # aria2 says 4 MiB/s per connection; 2 MiB/s per connection arrive; the idle one had 4.
    holder = MirrorLook("holder", Clock(), 4, 4 * FAST, 20 * MB, None)
    idle = mirror("idle", conns=0, speed=0.0, nbytes=40 * MB)
    got = int(4 * FAST / 2 * 0.2)
    first, second = endgame(holder, idle, [(10.0, 40 * MB), (10.2, 40 * MB + got)])
    assert first == Verdict()
    assert taken(second) == ["holder"]
    assert not second.take_out[0].report
    assert second.take_out[0].reason.startswith("too slow or stalled: 2048 KiB/s per connection")


def test_a_holder_silent_since_its_last_bytes_is_stalled_and_told() -> None:
    """Bytes early in the measure, then none for 0.6 s: over the whole measure it looks merely
    slower (not told), but it has stalled, and the user is told so."""
    holder = MirrorLook("holder", Clock(), 4, 4 * FAST, 20 * MB, None)
    idle = mirror("idle", conns=0, speed=0.0, nbytes=40 * MB)
    got = int(4 * FAST / 2 * 0.2)  # 2 MiB/s per connection over 0.2 s, then nothing
    first = watchdog.decide(
        look([holder, idle], size=64 * MB, completed=40 * MB, progress_at=10.0), 10.0
    )
    assert first == Verdict()
    late = watchdog.decide(
        look([holder, idle], size=64 * MB, completed=40 * MB + got, progress_at=10.2), 10.8
    )
    assert taken(late) == ["holder"]
    out = late.take_out[0]
    assert out.report
    assert out.reason.startswith("stalled: no bytes for 0.6 s at the end of the download")


def test_a_holder_whose_connections_burst_then_stall_is_told_not_silently_slower() -> None:
    """A new connection now and then brings 64 KiB and stalls: aria2's average says 1 MiB/s
    per connection (and the estimated split of bytes may credit it with the others'), while
    80 KiB/s per connection arrive: measured while it holds the download alone."""
    holder = MirrorLook("holder", Clock(), 4, 4 * MB, 20 * MB, FAST)  # a yardstick, wrong
    idle = mirror("idle", conns=0, speed=0.0, nbytes=40 * MB)
    first, second = endgame(holder, idle, [(10.0, 60 * MB), (10.2, 60 * MB + 64 * 1024)])
    assert first == Verdict()
    assert taken(second) == ["holder"]
    out = second.take_out[0]
    assert out.report and "stalled" in out.reason
    assert out.reason.startswith("too slow or stalled: 80 KiB/s per connection")


def test_a_mirror_that_finished_its_share_long_ago_is_still_the_yardstick() -> None:
    """The other mirror brought its share and has been idle on the download for longer than
    a yardstick's recency (its ``rate`` is gone): what it did before still measures the
    holder, which trickles a burst now and then and so never lets the download stall."""
    holder = MirrorLook("holder", Clock(), 4, 4 * MB, 20 * MB, None)
    idle = MirrorLook("idle", Clock(), 0, 0.0, 40 * MB, None, rate_before=FAST)
    first, second = endgame(holder, idle, [(30.0, 60 * MB), (30.2, 60 * MB + 64 * 1024)])
    assert first == Verdict()
    assert taken(second) == ["holder"] and second.take_out[0].report
    # With nothing at all to measure it by, nothing is decided.
    lone = MirrorLook("holder", Clock(), 4, 4 * MB, 20 * MB, None)
    blank = MirrorLook("idle", Clock(), 0, 0.0, 40 * MB, None)
    assert endgame(lone, blank, [(30.0, 60 * MB), (30.6, 60 * MB)]) == [Verdict()] * 2


def test_a_holder_is_measured_only_while_it_holds_every_connection() -> None:
    # aria2 counts 12 connections on the download and names the holder's 4: the others'
    # bytes may be flowing on connections not named yet, so nothing is measured (aria2's
    # lagging average still says the holder is fast: no other rule acts).
    holder = MirrorLook("holder", Clock(), 4, 4 * FAST, 20 * MB, None)
    idle = mirror("idle", conns=0, speed=0.0, nbytes=40 * MB)
    looks = [(10.0, 60 * MB), (10.6, 60 * MB), (11.2, 60 * MB)]
    assert endgame(holder, idle, looks, connections=12) == [Verdict()] * 3
    assert holder.clock.alone_at is None
    # Once they are all its own, it is measured from that look on.
    first, second = endgame(holder, idle, [(12.0, 60 * MB), (12.5, 60 * MB)])
    assert first == Verdict() and taken(second) == ["holder"]
    # Another mirror opening a connection ends the measure.
    holder.clock.alone_at = 12.5
    both = [holder, mirror("idle", conns=1, speed=FAST, nbytes=40 * MB)]
    watchdog.decide(look(both, size=64 * MB, completed=61 * MB, progress_at=13.0), 13.0)
    assert holder.clock.alone_at is None


def test_endgame_waits_when_the_holder_finishes_soon_enough() -> None:
    # A little left, the holder nearly as fast: taking it out would cost more than it saves.
    holder = mirror("holder", conns=4, speed=4 * FAST, rate=None)
    idle = mirror("idle", conns=0, speed=0.0)
    got = int(4 * FAST * 0.9 * 0.2)
    done = 64 * MB - 2 * MB
    assert endgame(holder, idle, [(10.0, done), (10.2, done + got)]) == [Verdict()] * 2


def test_endgame_not_for_a_small_file() -> None:
    holder = MirrorLook("holder", Clock(), 1, 1024.0, 1 * MB, None)
    idle = mirror("idle", conns=0, speed=0.0)
    for now in (10.0, 10.6):
        small = look([holder, idle], size=4 * MB, completed=2 * MB, progress_at=now)
        assert watchdog.decide(small, now) == Verdict()


def test_stalled_connections_lose_their_mirrors_while_another_is_left() -> None:
    a = mirror("a", conns=4, speed=4 * FAST)  # aria2's lagging average: still looks fast
    b = mirror("b", conns=0, speed=0.0)
    v = watchdog.decide(look([a, b], progress_at=7.5), 10.0)
    assert taken(v) == ["a"] and v.restart_clock
    assert v.take_out[0].reason == "stalled: no bytes for 2.5 s"


def test_stall_without_named_servers_asks_which_uris_aria2_uses() -> None:
    a = mirror("a", conns=0, speed=0.0)
    b = mirror("b", conns=0, speed=0.0)
    asked: list[bool] = []

    def used() -> set[int]:
        asked.append(True)
        return {1}

    v = watchdog.decide(look([a, b], progress_at=7.0, connections=1), 10.0, used)
    assert asked and taken(v) == ["b"]
    # Not stalled long enough: aria2 is not asked.
    asked.clear()
    assert watchdog.decide(look([a, b], progress_at=9.0, connections=1), 10.0, used) == Verdict()
    assert not asked


def test_too_slow_for_the_stall_timeout_with_a_healthy_other() -> None:
    slow_clock = Clock(slow_since=0.0)
    slow = MirrorLook("slow", slow_clock, 1, 2048.0, 1 * MB, None)
    ok = mirror("ok", conns=1, speed=FAST, rate=None)
    v = watchdog.decide(look([slow, ok], progress_at=5.0, lowest_speed_bps=10240), 5.0)
    assert v == Verdict()  # not for stall_timeout_s yet
    v = watchdog.decide(
        look([slow, ok], progress_at=30.0, lowest_speed_bps=10240, stall_timeout_s=30.0), 30.0
    )
    assert taken(v) == ["slow"]
    assert v.take_out[0].reason == "too slow: 2 KiB/s for 30 s (below 10 KiB/s)"


def test_tick_starts_and_clears_the_slow_and_idle_clocks() -> None:
    c = Clock()

    def tick(conns: int, speed: float, now: float) -> tuple[float | None, float | None]:
        watchdog.tick(c, conns, speed, now, 10_000, 30.0)
        return c.slow_since, c.idle_since

    assert tick(2, 1000.0, 1.0) == (1.0, None)
    assert tick(0, 0.0, 2.0) == (1.0, 2.0)  # a short gap keeps it slow
    assert tick(0, 0.0, 40.0) == (None, 2.0)  # a long idle spell clears it
    assert tick(2, 50_000.0, 41.0) == (None, None)


def test_an_idle_redirect_is_rechecked_once_per_mirror() -> None:
    a = MirrorLook("a", Clock(idle_since=0.0), recheckable=True)
    a2 = MirrorLook("a", Clock(idle_since=0.0), recheckable=True)
    b = MirrorLook("b", Clock(), 4, 4 * FAST, 8 * MB, None)
    v = watchdog.decide(look([a, a2, b], progress_at=40.0, lowest_speed_bps=1.0), 40.0)
    assert v == Verdict(recheck=(0,))
    assert a.clock.idle_since == 40.0 and a2.clock.idle_since == 0.0


def test_yardstick_rests_on_enough_recent_bytes() -> None:
    d = Delivered()
    d.add(1.0, 512 * 1024, 0.5)
    assert watchdog.yardstick(d, 1.0, HEDGE) is None  # too few bytes
    d.add(2.0, 4 * MB, 1.0)
    rate = watchdog.yardstick(d, 2.0, HEDGE)
    assert rate is not None and rate > 2 * MB
    assert watchdog.yardstick(d, 2.0 + 2 * HEDGE + 0.1, HEDGE) is None  # none came lately
    assert watchdog.yardstick(None, 2.0, HEDGE) is None


# --- which mirrors a big file starts on ------------------------------------------------------


def test_a_big_file_waits_for_a_much_faster_busy_mirror() -> None:
    """10 MB/s per connection against 1 MB/s: the file waits for the fast mirror's room
    rather than start on the slow one alone (bench S10: those files ended the pull)."""
    assert watchdog.wait_for_faster([1e6], [10e6])


def test_a_big_file_starts_where_there_is_room_unless_much_faster_elsewhere() -> None:
    assert not watchdog.wait_for_faster([4e6], [10e6])  # 2.5x: not enough to wait
    assert not watchdog.wait_for_faster([1e6], [None])  # the busy one is not measured
    assert not watchdog.wait_for_faster([None], [10e6])  # a roomy one may be as fast
    assert not watchdog.wait_for_faster([1e6, 5e6], [10e6])  # one roomy mirror is close
    assert not watchdog.wait_for_faster([1e6], [])  # nothing busy to wait for
