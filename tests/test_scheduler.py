"""The pull-wide scheduler's decisions, driven with literal numbers (no server, no clock)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from modelget.scheduler import Adaptive, Assign, MiB, Policy, Range, Scheduler, Wait


def _take(s: Scheduler, now: float = 0.0) -> Range:
    action = s.next(now)
    assert isinstance(action, Assign), action
    return action.range


def _drain(s: Scheduler, now: float = 0.0) -> list[Range]:
    out = []
    while isinstance(action := s.next(now), Assign):
        out.append(action.range)
    return out


def test_small_files_go_out_together_before_big_chunks() -> None:
    files = [("big", 512 * MiB, [(0, 512 * MiB)], ["a"])] + [
        (f"s{i}", 1000, [(0, 1000)], ["a"]) for i in range(10)
    ]
    s = Scheduler(files, [("a", None)], Policy(initial=4, ceiling=32))
    taken = _drain(s)
    # all ten small files first, each in one request, then the big file up to the target
    assert [r.file for r in taken[:10]] == [f"s{i}" for i in range(10)]
    assert all(r.start == 0 and r.end == 1000 for r in taken[:10])
    big = [r for r in taken if r.file == "big"]
    assert len(big) == 4  # the target: small files do not count against it
    assert s.peaks()["a"] == 14


def test_small_files_are_held_to_the_ceiling() -> None:
    files = [(f"s{i}", 10, [(0, 10)], ["a"]) for i in range(50)]
    s = Scheduler(files, [("a", None)], Policy(ceiling=8))
    assert len(_drain(s)) == 8
    assert isinstance(s.next(0.0), Wait)


def test_chunks_shrink_as_the_pool_empties() -> None:
    # The largest request starts at its most (no size ladder here: see the ladder's tests).
    p = Policy(initial=2, ceiling=2, min_chunk=1 * MiB, max_chunk=64 * MiB, first_request=64 * MiB)
    s = Scheduler([("big", 100 * MiB, [(0, 100 * MiB)], ["a"])], [("a", None)], p)
    sizes = []
    while True:
        action = s.next(0.0)
        if not isinstance(action, Assign):
            break
        r = action.range
        sizes.append(r.end - r.start)
        s.wrote(r, r.end - r.start, 0.0)
        s.release(r, 0.0)
    assert sum(sizes) == 100 * MiB
    assert sizes[0] == 25 * MiB  # 100 MiB over 2 × 2 connections
    assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # the last takes the crumb with it
    assert sizes[-1] >= 1 * MiB
    assert s.finished()


def test_a_mirror_only_gets_files_it_serves() -> None:
    files = [("x", 10, [(0, 10)], ["b"]), ("y", 10, [(0, 10)], ["a"])]
    s = Scheduler(files, [("a", None), ("b", None)])
    taken = _drain(s)
    assert {(r.file, r.mirror) for r in taken} == {("x", "b"), ("y", "a")}


def test_idle_connection_steals_the_tail_of_the_slowest_range() -> None:
    p = Policy(initial=2, ceiling=2, min_chunk=4 * MiB, steal_min=1 * MiB, small_file=0)
    s = Scheduler(
        [("big", 16 * MiB, [(0, 16 * MiB)], ["fast", "slow"])],
        [("fast", None), ("slow", None)],
        p,
    )
    ranges = _drain(s)
    assert not s.files["big"].queue  # four 4 MiB ranges, all in flight
    slow = [r for r in ranges if r.mirror == "slow"]
    fast = [r for r in ranges if r.mirror == "fast"]
    assert slow and fast
    # after 2 s: the fast connections have finished their ranges, a slow one crawls
    for r in fast:
        s.wrote(r, r.left(), 1.0)
        s.release(r, 1.0)
    victim = slow[0]
    s.wrote(victim, 2 * MiB, 1.0)  # 2 MiB/s, against 4 MiB/s for a fast connection
    for r in slow[1:]:
        s.wrote(r, r.left(), 1.0)
        s.release(r, 1.0)
    before_end = victim.end
    stolen = _take(s, 1.0)
    assert stolen.mirror == "fast"
    assert stolen.file == "big"
    assert stolen.end == before_end
    assert victim.end == stolen.start
    assert victim.left() >= p.steal_min
    # the owner now stops at the cut: bytes past it are not its own any more
    assert s.allowed(victim, victim.left() + 100) == victim.left()


def test_an_owner_too_slow_for_its_smallest_share_loses_the_whole_rest() -> None:
    """0.5 MiB/s against 4 MiB/s: the owner's smallest share (steal_min, 2 s) would end long
    after the fast connection could fetch all 3 MiB (0.75 s), so it takes them all."""
    p = Policy(initial=2, ceiling=2, min_chunk=4 * MiB, steal_min=1 * MiB, small_file=0)
    s = Scheduler(
        [("big", 16 * MiB, [(0, 16 * MiB)], ["fast", "slow"])],
        [("fast", None), ("slow", None)],
        p,
    )
    ranges = _drain(s)
    for r in ranges:
        if r.mirror == "fast":
            s.wrote(r, r.left(), 1.0)
            s.release(r, 1.0)
    slow = [r for r in ranges if r.mirror == "slow"]
    victim = slow[0]
    s.wrote(victim, 1 * MiB, 2.0)
    for r in slow[1:]:
        s.wrote(r, r.left(), 2.0)
        s.release(r, 2.0)
    pos, end = victim.pos, victim.end
    stolen = _take(s, 2.0)
    assert (stolen.mirror, stolen.start, stolen.end) == ("fast", pos, end)
    assert victim.left() == 0 and s.allowed(victim, 100) == 0


def test_steal_split_follows_the_speeds() -> None:
    p = Policy(initial=1, ceiling=1, min_chunk=100 * MiB, steal_min=1 * MiB)
    s = Scheduler([("big", 100 * MiB, [(0, 100 * MiB)], ["a", "b"])], [("a", None), ("b", None)], p)
    ra = _take(s)
    assert ra.mirror == "a" and ra.end == 100 * MiB
    s.wrote(ra, 10 * MiB, 1.0)  # 10 MiB/s; 90 MiB left
    rb = _take(s, 1.0)  # b knows no speed yet: half of what is left
    assert rb.mirror == "b"
    assert rb.start == 55 * MiB
    # b proves 3× faster per connection than a: on a's next release, a new steal favours b
    s.wrote(rb, 30 * MiB, 2.0)
    s.wrote(ra, 10 * MiB, 2.0)
    s.release(rb, 2.0)  # closed early: its rest goes back to the pool
    assert s.files["big"].queue == [(85 * MiB, 100 * MiB)]


def test_no_steal_of_a_range_that_ends_soon() -> None:
    p = Policy(initial=1, ceiling=1, min_chunk=8 * MiB, steal_after_s=0.5)
    s = Scheduler([("f", 8 * MiB, [(0, 8 * MiB)], ["a", "b"])], [("a", None), ("b", None)], p)
    r = _take(s)
    s.wrote(r, 6 * MiB, 1.0)  # 6 MiB/s; 2 MiB left = 0.33 s
    assert isinstance(s.next(1.0), Wait)


def test_a_silent_owner_is_hedged_after_a_while() -> None:
    p = Policy(initial=1, ceiling=1, min_chunk=64 * MiB, hedge_after_s=2.0)
    s = Scheduler([("f", 64 * MiB, [(0, 64 * MiB)], ["a", "b"])], [("a", None), ("b", None)], p)
    r = _take(s)
    assert isinstance(s.next(1.0), Wait)  # too early to tell
    stolen = _take(s, 2.5)  # no sign of life for 2.5 s (no latency measured yet: 2 s)
    assert stolen.mirror == "b"
    assert (stolen.start, stolen.end) == (0, 64 * MiB)  # the whole range: a hedge
    assert r.left() == 0
    # a is suspect now: while b serves the file, a gets no new work ...
    assert s.mirrors["a"].suspect_until > 2.5
    s.wrote(stolen, 1 * MiB, 3.0)
    s.release(r, 3.0)  # a's request ends (cut); nothing of it goes back to the pool
    assert s.files["f"].queue == []
    # ... and any byte from it clears that.
    s.answered(stolen, 2.6)
    assert s.mirrors["b"].latency() == pytest.approx(0.1)


def test_a_silent_flow_on_a_mirror_that_delivers_is_a_hiccup() -> None:
    """One connection silent while another to its mirror delivers: its range is hedged, but
    the mirror is not suspect (no work kept from it) and the takeover is marked a hiccup (no
    warning): a retransmission timeout of one flow on a full link, not the mirror's fault."""
    p = Policy(
        initial=2, ceiling=2, min_chunk=8 * MiB, max_chunk=8 * MiB, first_request=8 * MiB,
        hedge_after_s=2.0,
    )  # fmt: skip
    s = Scheduler([("f", 24 * MiB, [(0, 24 * MiB)], ["a", "b"])], [("a", None), ("b", None)], p)
    quiet, theirs, busy = _take(s), _take(s), _take(s)
    assert (quiet.mirror, theirs.mirror, busy.mirror) == ("a", "b", "a")
    s.wrote(theirs, 8 * MiB, 1.0)
    s.release(theirs, 1.0)  # b is idle now
    s.wrote(busy, 1 * MiB, 2.4)  # a's other connection delivers
    stolen = _take(s, 2.5)  # quiet: no sign of life for 2.5 s
    assert (stolen.mirror, stolen.start, stolen.end) == ("b", 0, 8 * MiB)
    (t,) = s.taken_over
    assert t.silent and t.hiccup
    assert s.mirrors["a"].suspect_until == 0.0
    # A mirror silent as a whole is suspect, as before (test_a_silent_owner_is_hedged...).


def test_a_silent_range_is_taken_over_before_new_chunks_go_out() -> None:
    """A flow that went silent mid-pull (a TCP retransmission timeout on a full link) holds
    its file's prefix: the next idle connection takes it over rather than a fresh chunk."""
    p = Policy(initial=2, ceiling=2, min_chunk=8 * MiB, max_chunk=8 * MiB, hedge_after_s=2.0)
    s = Scheduler([("f", 64 * MiB, [(0, 64 * MiB)], ["a"])], [("a", None)], p)
    first, second = _take(s), _take(s)
    assert (first.start, second.start) == (0, 8 * MiB)
    s.wrote(second, 8 * MiB, 1.0)
    s.release(second, 1.0)
    fresh = _take(s, 1.0)  # first is quiet for 1 s only: a new chunk
    assert fresh.start == 16 * MiB
    s.wrote(fresh, 8 * MiB, 2.5)
    s.release(fresh, 2.5)
    hedge = _take(s, 2.5)  # first has sent nothing for 2.5 s
    assert (hedge.start, hedge.end) == (0, 8 * MiB)
    assert first.left() == 0 and s.files["f"].queue == [(24 * MiB, 64 * MiB)]


def test_the_silence_budget_follows_the_measured_latency() -> None:
    p = Policy(hedge_after_s=2.0, hedge_factor=4.0, hedge_min_s=1.0, hedge_max_s=10.0)
    s = Scheduler([("f", 64 * MiB, [(0, 64 * MiB)], ["a", "b"])], [("a", None), ("b", None)], p)
    assert s.silence_budget("a") == 2.0  # nothing measured yet
    r = _take(s)
    s.answered(r, 0.01)
    assert s.silence_budget("a") == 1.0  # 4 × 10 ms, but never under a second
    assert s.silence_budget("b") == 1.0  # b has none of its own: the best mirror's
    far = _take(s, 0.0)
    s.answered(far, 0.5)
    assert s.silence_budget(far.mirror) == pytest.approx(2.0 if far.mirror == "b" else 1.0)


def test_a_slow_mirror_gets_no_new_chunk_in_the_endgame() -> None:
    """A mirror at 128 KB/s per connection beside one at 40 MB/s: once the fast one could end
    everything left before one of the slow one's chunks, the slow one gets nothing new."""
    p = Policy(initial=1, ceiling=1, min_chunk=1 * MiB, max_chunk=1 * MiB, small_file=0)
    s = Scheduler(
        [("f", 32 * MiB, [(0, 32 * MiB)], ["slow", "fast"])], [("slow", None), ("fast", None)], p
    )
    a = _take(s)
    b = _take(s)
    assert {a.mirror, b.mirror} == {"slow", "fast"}
    slow, fast = (a, b) if a.mirror == "slow" else (b, a)
    s.wrote(fast, 1 * MiB, 0.3)
    s.release(fast, 0.3)
    s.wrote(slow, 256 * 1024, 2.0)
    s.mirrors["fast"].adapt.last_rate = 40e6
    s.mirrors["slow"].adapt.last_rate = 128e3
    s.release(slow, 2.0)
    assert s.mirrors["slow"].conn_rate == pytest.approx(128 * 1024)
    got = _drain(s, 2.0)
    assert got and all(r.mirror == "fast" for r in got)


def _endgame_scene(owner_mirror: str) -> tuple[Scheduler, Range]:
    """Nothing queued; one range in flight on ``owner_mirror`` with 300 KiB left at 1 MiB/s
    (0.29 s to go, under ``steal_after_s``); the fast mirror's connections did 8 MiB/s."""
    p = Policy(initial=2, ceiling=2, min_chunk=1 * MiB, max_chunk=1 * MiB, small_file=0)
    s = Scheduler(
        [("f", 2 * MiB, [(0, 2 * MiB)], ["fast", "slow"])], [("fast", None), ("slow", None)], p
    )
    taken = _drain(s)
    owner = next(r for r in taken if r.mirror == owner_mirror)
    for r in taken:
        if r is not owner:
            s.wrote(r, r.left(), 0.125)  # 1 MiB in 0.125 s: 8 MiB/s
            s.release(r, 0.125)
    s.mirrors["fast"].conn_rate = 8 * MiB
    s.wrote(owner, owner.left() - 300 * 1024, 0.707)  # 724 KiB in 0.707 s: 1 MiB/s
    return s, owner


def test_the_endgame_takes_a_slow_mirrors_last_range_whole_even_when_it_ends_soon() -> None:
    """A paced server sends in bursts (nginx: one a second): a slow mirror's last 300 KiB may
    come a second late. A connection to a mirror 8 times faster per connection would fetch
    them in 0.04 s, under half of the owner's 0.29 s: it takes them all."""
    s, owner = _endgame_scene("slow")
    pos, end = owner.pos, owner.end
    stolen = _take(s, 0.707)
    assert (stolen.mirror, stolen.start, stolen.end) == ("fast", pos, end)
    assert owner.left() == 0
    assert [t.mirror for t in s.taken_over] == ["slow"]


def test_no_endgame_takeover_within_one_mirror() -> None:
    """The same 300 KiB at 1 MiB/s with one mirror only: its other connection did 8 MiB/s,
    yet it takes nothing over before ``steal_after_s`` (a connection to the same server is
    no faster source; the split rule applies as before)."""
    p = Policy(initial=2, ceiling=2, min_chunk=1 * MiB, max_chunk=1 * MiB, small_file=0)
    s = Scheduler([("f", 2 * MiB, [(0, 2 * MiB)], ["a"])], [("a", None)], p)
    first, owner = _drain(s)
    s.wrote(first, first.left(), 0.125)
    s.release(first, 0.125)
    s.mirrors["a"].conn_rate = 8 * MiB
    s.wrote(owner, owner.left() - 300 * 1024, 0.707)
    assert not isinstance(s.next(0.707), Assign)
    assert owner.left() == 300 * 1024


def test_the_first_count_step_does_not_wait_for_the_size_ladder() -> None:
    """At 1 MB/s a connection (a slow mirror), the first window quadruples the connections at
    once, although the size ladder then starts its first trial (the count waited for the
    ladder to settle: 2 s at 8 connections on bench S10's slow mirror)."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=0.5, min_chunk=1 * MiB)
    s = Scheduler([("f", 1024 * MiB, [(0, 1024 * MiB)], ["a"])], [("a", None)], p)
    ranges = _drain(s)
    assert len(ranges) == 8
    assert not s.tick(0.0)
    for r in ranges:
        s.wrote(r, 500_000, 0.5)  # 1 MB/s a connection
    assert s.tick(0.5)
    assert s.mirrors["a"].ladder.trial is not None  # the ladder's first trial is under way
    assert s.targets()["a"] == 32


def test_fast_connections_wait_for_the_size_ladder_before_the_count_grows() -> None:
    """At 40 MB/s a connection the count waits until the ladder has settled: doubling the
    connections of two 150 MB/s mirrors while their request size was on trial cost 3 %."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=0.5, min_chunk=1 * MiB)
    s = Scheduler([("f", 1024 * MiB, [(0, 1024 * MiB)], ["a"])], [("a", None)], p)
    ranges = _drain(s)
    assert not s.tick(0.0)
    for r in ranges:
        s.wrote(r, 20_000_000, 0.5)  # 40 MB/s a connection
    assert not s.tick(0.5)
    assert s.mirrors["a"].ladder.trial is not None
    assert s.targets()["a"] == 8


def test_a_failure_hands_the_range_to_another_mirror_at_once() -> None:
    p = Policy(initial=1, ceiling=1, min_chunk=64 * MiB)
    s = Scheduler([("f", 64 * MiB, [(0, 64 * MiB)], ["a", "b"])], [("a", None), ("b", None)], p)
    r = _take(s)
    assert r.mirror == "a"
    s.wrote(r, 10 * MiB, 1.0)
    assert s.failed(r, 1.0, "reset") is None  # a may try again later, not now
    again = _take(s, 1.0)
    assert again.mirror == "b"
    assert (again.start, again.end) == (10 * MiB, 64 * MiB)


def test_a_mirror_is_dropped_for_a_file_after_max_tries() -> None:
    p = Policy(initial=1, ceiling=1, max_tries=3, retry_wait=lambda n: 1.0)
    s = Scheduler([("f", 10, [(0, 10)], ["a"])], [("a", None)], p)
    now = 0.0
    for i in range(3):
        r = _take(s, now)
        why = s.failed(r, now, "HTTP 500")
        if i < 2:
            assert why is None
            assert isinstance(s.next(now), Wait)  # backing off
            now += 1.0
    assert why == "HTTP 500 (gave up after 3 tries)"
    assert s.stuck("f")
    assert s.next(now) is None
    assert s.finished()


def test_a_permanent_error_drops_at_once_and_bytes_reset_the_count() -> None:
    p = Policy(initial=1, ceiling=1, max_tries=2, retry_wait=lambda n: 0.0)
    s = Scheduler([("f", 100, [(0, 100)], ["a", "b"])], [("a", None), ("b", None)], p)
    r = _take(s)
    assert s.failed(r, 0.0, "HTTP 404", permanent=True) == "HTTP 404"
    r = _take(s)
    assert r.mirror == "b"
    s.failed(r, 0.0, "reset")
    r = _take(s)
    s.wrote(r, 10, 0.0)  # progress: the failure count starts over
    assert s.failed(r, 0.0, "reset") is None
    assert s.dropped("f") == {"a": "HTTP 404"}


def test_throttled_mirror_halves_and_waits() -> None:
    p = Policy(initial=8, ceiling=32, min_chunk=1 * MiB)
    s = Scheduler([("f", 1024 * MiB, [(0, 1024 * MiB)], ["a"])], [("a", None)], p)
    ranges = _drain(s)
    assert len(ranges) == 8
    s.failed(ranges[0], 1.0, "HTTP 429", throttled=True, retry_after=2.0)
    assert s.targets()["a"] == 3  # 7 still active, halved
    assert isinstance(s.next(1.5), Wait)  # Retry-After holds the whole mirror
    assert isinstance(s.next(3.5), Wait)  # at its (lower) target now


def test_adaptive_grows_while_the_rate_rises_and_undoes_a_useless_doubling() -> None:
    p = Policy(initial=4, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    per_conn = 4_000_000  # a link capped per connection, up to 40 MB/s in all
    now, total = 0.0, 0
    a.tick(now, total, busy=True)
    history = []
    for _ in range(12):
        now += 1.0
        total += min(a.target * per_conn, 40_000_000)
        a.tick(now, total, busy=True)
        history.append(a.target)
    # 4 MB/s per connection at the first look: a link capped per connection, so the first
    # step quadruples (4 → 16); 16 → 40 MB/s (the link) is a leap, quadrupled again to 64,
    # which gained nothing and was undone
    assert history[:2] == [16, 64]
    assert a.target == 16
    assert not a.growing


def test_adaptive_stays_put_on_a_saturated_link() -> None:
    p = Policy(initial=4, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    now, total = 0.0, 0
    a.tick(now, total, busy=True)
    for _ in range(6):
        now += 1.0
        total += 50_000_000  # the same whatever the count
        a.tick(now, total, busy=True)
    assert a.target == 4  # one doubling tried, undone
    assert not a.growing


def test_adaptive_undoes_a_doubling_only_when_a_second_window_agrees() -> None:
    """The first window after a doubling can catch the new connections in TCP's slow start;
    an undo lasts the whole pull, so it needs the mean of two windows to say no."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    a.tick(0.0, 0, busy=True)
    total = 8 * 40_000_000
    assert a.tick(1.0, total, busy=True) and a.target == 16  # 40 MB/s a connection
    total += 8 * 40_000_000  # the 8 new ones brought nothing yet: no gain in this window
    assert not a.tick(2.0, total, busy=True) and a.target == 16  # in doubt, not undone
    total += 16 * 25_000_000  # then the link's 400 MB/s: the mean gains 1.125x
    a.tick(3.0, total, busy=True)
    assert a.target == 16 and not a.growing  # kept (between keep_gain and grow_gain)

    b = Adaptive(64, p)
    b.tick(0.0, 0, busy=True)
    total = 8 * 40_000_000
    assert b.tick(1.0, total, busy=True) and b.target == 16
    for t in (2.0, 3.0):  # a saturated link: the same rate in both windows
        total += 8 * 40_000_000
        changed = b.tick(t, total, busy=True)
    assert changed and b.target == 8 and not b.growing


def test_adaptive_backs_off_on_429_and_respects_the_ceiling() -> None:
    p = Policy(initial=16, ceiling=20, settle_s=0.0, window_s=1.0)
    a = Adaptive(20, p)
    a.tick(0.0, 0, busy=True)
    a.tick(1.0, 10, busy=True)
    a.tick(2.0, 100, busy=True)
    assert a.target == 20  # doubled, but never above the ceiling
    a.throttle(2.5, 20)
    assert a.target == 10
    assert not a.tick(10.0, 10**9, busy=True)
    assert a.target == 10


def test_adaptive_does_not_grow_a_mirror_short_of_work() -> None:
    p = Policy(initial=4, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    a.tick(0.0, 0, busy=False)
    a.tick(1.0, 10**6, busy=False)
    a.tick(2.0, 10**8, busy=False)
    assert a.target == 4


def test_scheduler_grows_the_target_of_a_busy_mirror() -> None:
    p = Policy(
        initial=2, ceiling=8, min_chunk=1 * MiB, settle_s=0.0, window_s=0.5, first_request=64 * MiB
    )
    s = Scheduler([("f", 1024 * MiB, [(0, 1024 * MiB)], ["a"])], [("a", None)], p)
    ranges = _drain(s)
    assert len(ranges) == 2
    assert not s.tick(0.0)
    for r in ranges:
        s.wrote(r, 1 * MiB, 0.5)
    assert s.tick(0.5)  # measured at 2: 2 MB/s a connection, so quadrupled (capped at 8)
    assert s.targets()["a"] == 8
    assert len(_drain(s, 0.5)) == 6


def test_mirror_cap_from_the_catalogue_lowers_the_ceiling() -> None:
    s = Scheduler([("f", 10, [(0, 10)], ["a"])], [("a", 3), ("b", None)], Policy(ceiling=32))
    assert s.mirrors["a"].ceiling == 3
    assert s.mirrors["b"].ceiling == 32
    assert s.targets() == {"a": 3, "b": Policy().initial}


def test_at_most_max_files_under_way() -> None:
    files = [(f"f{i}", 8 * MiB, [(0, 8 * MiB)], ["a"]) for i in range(5)]
    p = Policy(initial=4, ceiling=4, max_files=2, min_chunk=8 * MiB, small_file=0)
    s = Scheduler(files, [("a", None)], p)
    taken = _drain(s)
    assert [r.file for r in taken] == ["f0", "f1"]  # two connections idle: no third file
    assert isinstance(s.next(0.0), Wait)
    s.wrote(taken[0], 8 * MiB, 1.0)
    s.release(taken[0], 1.0)
    assert [r.file for r in _drain(s, 1.0)] == ["f2"]


def test_adaptive_first_step_doubles_when_connections_are_fast() -> None:
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    a.tick(0.0, 0, busy=True)
    assert a.tick(1.0, 8 * 40_000_000, busy=True)  # 40 MB/s a connection: no per-flow cap
    assert a.target == 16


def _feed(a: Adaptive, rate_at: Callable[[int], float], windows: int, **kw: bool) -> list[int]:
    """Tick ``a`` once a second for ``windows`` windows at ``rate_at(target)`` bytes/s; the
    target after each."""
    now, total, seen = 0.0, 0.0, []
    a.tick(now, int(total), busy=True, **kw)
    for _ in range(windows):
        now += 1.0
        total += rate_at(a.target)
        a.tick(now, int(total), busy=True, **kw)
        seen.append(a.target)
    return seen


def _cpu_bound(target: int) -> float:
    """Loopback, the httpx engine (bench S2): every connection more costs CPU."""
    return {1: 550e6, 2: 700e6, 4: 620e6, 8: 560e6, 16: 480e6}[target]


def test_fast_connections_are_halved_while_the_rate_holds() -> None:
    """70 MB/s a connection at 8: fewer do as well for less CPU; halved down to the floor
    (2), never to one connection."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    seen = _feed(Adaptive(64, p), _cpu_bound, 6)
    assert seen == [4, 2, 2, 2, 2, 2]


def test_a_halving_that_loses_comes_back_and_growth_resumes() -> None:
    """A link capped per connection (70 MB/s each) behind 1.1 GB/s: a first look's halving
    to 4 loses half the rate; two windows agree, 8 comes back and grows as before."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    seen = _feed(a, lambda n: min(n * 70e6, 1.1e9), 10)
    assert seen[:3] == [4, 4, 8]  # halved, in doubt one window, back
    assert seen[3] > 8  # growing again
    assert a.target == 16  # 64 (a leap) gained nothing over 16's 1.1 GB/s: undone


def test_a_later_halving_that_loses_goes_back_one_step_and_stays() -> None:
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    seen = _feed(a, lambda n: {8: 560e6, 4: 580e6, 2: 250e6}.get(n, 560e6), 8)
    assert seen[:3] == [4, 2, 2]
    assert seen[3:] == [4, 4, 4, 4, 4]
    assert not a.growing and not a.shrinking


def test_no_halving_where_the_mirror_may_cap_each_connection() -> None:
    """``may_shrink=False`` (the size ladder found the mirror pacing longer requests, as
    nginx's limit_rate does): fast first looks double, as before."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    seen = _feed(Adaptive(64, p), _cpu_bound, 4, may_shrink=False)
    assert seen[0] == 16
    assert min(seen) == 8


def test_an_undone_doubling_of_fast_connections_goes_on_to_halve() -> None:
    """Doubled while nothing yet said the mirror does not pace (``may_shrink=False``), the
    doubling does not pay: it is undone and, the connections being fast, halved from there."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=1.0)
    a = Adaptive(64, p)
    a.tick(0.0, 0, busy=True)
    total = 8 * 70_000_000
    assert a.tick(1.0, total, busy=True, may_shrink=False) and a.target == 16
    total += 8 * 70_000_000  # no gain at 16 ...
    assert not a.tick(2.0, total, busy=True)  # (in doubt)
    total += 8 * 70_000_000  # ... confirmed: undone, and halved at once
    assert a.tick(3.0, total, busy=True)
    assert a.target == 4 and a.shrinking


def test_the_scheduler_halves_fast_connections_once_a_bigger_size_held() -> None:
    """Loopback-like: the mirror moves 560 MB/s in all, whatever the count (the client's CPU
    is the limit), and does not pace longer requests. Once the ladder's first trial has held,
    the connections (70 MB/s each) are halved, during the size trials, not after them."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=0.5, min_chunk=1 * MiB)
    s = Scheduler([("f", 8192 * MiB, [(0, 8192 * MiB)], ["a"])], [("a", None)], p)
    ladder = s.mirrors["a"].ladder
    now, dt, halved = 0.0, 0.01, None  # requests of 2 MiB take 0.03 s: a few steps each
    while now < 3.0 and halved is None:
        s.tick(now)
        if s.targets()["a"] < 8:
            halved = (now, ladder.size, ladder.settled)
        _drain(s, now)
        now += dt
        for r in list(s.active.values()):
            n = min(r.left(), int(560e6 / len(s.active) * dt))
            s.wrote(r, n, now)
            if r.left() == 0:
                s.release(r, now)
    assert halved is not None
    _at, size, settled = halved
    assert size > p.first_request and not settled
    assert s.targets()["a"] == 4


def test_the_scheduler_does_not_halve_a_mirror_that_paces_longer_requests() -> None:
    """nginx's limit_rate (a head start, then the cap): fast 2 MiB requests, the ladder's
    first trial fails, and the count is never halved, however fast the short requests are."""
    p = Policy(initial=8, ceiling=64, settle_s=0.0, window_s=0.5, min_chunk=1 * MiB)
    s = Scheduler([("f", 8192 * MiB, [(0, 8192 * MiB)], ["a"])], [("a", None)], p)

    targets: list[int] = []

    def paced(s: Scheduler, r: Range) -> float:
        targets.append(s.targets()["a"])
        return 70e6 if r.end - r.start <= 2 * MiB or r.cut else 4e6

    _simulate(s, paced, until=3.0, dt=0.01)
    assert s.mirrors["a"].ladder.settled
    assert s.mirrors["a"].ladder.size == p.first_request
    assert min(targets) == 8


def test_the_aria2_budget_never_halves() -> None:
    from modelget.engines import EngineOptions
    from modelget.engines.aria2.budget import _Budget
    from modelget.events import Reporter

    budget = _Budget(EngineOptions(), Reporter(), {})
    a = budget._adaptive("m", None)
    seen = _feed(a, lambda n: n * 100e6, 4)
    assert min(seen) >= 16


def test_a_slow_mirror_gets_smaller_chunks_than_a_fast_one() -> None:
    p = Policy(
        initial=1,
        ceiling=1,
        min_chunk=1 * MiB,
        max_chunk=256 * MiB,
        first_request=256 * MiB,
        small_file=0,
    )
    s = Scheduler(
        [("f", 1024 * MiB, [(0, 1024 * MiB)], ["fast", "slow"])],
        [("fast", None), ("slow", None)],
        p,
    )
    rf, rs = _take(s), _take(s)
    assert (rf.mirror, rs.mirror) == ("fast", "slow")
    s.wrote(rf, 40 * MiB, 1.0)  # 40 MiB/s
    s.wrote(rs, 10 * MiB, 1.0)  # 10 MiB/s
    base = s.chunk_size()
    assert s.chunk_size("slow", 1.0) < base < s.chunk_size("fast", 1.0)


# --- the size ladder: how long a mirror's requests may be ------------------------------------


def _simulate(
    s: Scheduler,
    rate_of: Callable[[Scheduler, Range], float],
    until: float,
    dt: float = 0.05,
) -> tuple[list[Range], list[int]]:
    """Run the scheduler against a pretend server: every ``dt`` each range in flight receives
    ``rate_of(s, range) * dt`` bytes; a range that is complete (or cut) ends. Returns every
    range opened and every range the scheduler cut."""
    opened: list[Range] = []
    cut: list[int] = []
    now = 0.0
    while now < until and not s.finished():
        s.tick(now)
        cut += s.cut
        s.cut = []
        opened += _drain(s, now)
        now += dt
        for r in list(s.active.values()):
            n = min(r.left(), int(rate_of(s, r) * dt))
            if n:
                s.wrote(r, n, now)
            if r.left() == 0:
                s.release(r, now)
    return opened, cut


def _paced(s: Scheduler, r: Range) -> float:
    """nginx's ``limit_rate`` of 4 MB/s with its head start, as seen by a client: a request
    that fits the head start comes at 40 MB/s per connection, a longer one at the cap."""
    return 40e6 if r.end - r.start <= 2 * MiB or r.cut else 4e6


LADDER = Policy(initial=4, ceiling=4, settle_s=0.0, window_s=0.5, min_chunk=1 * MiB)


def test_the_largest_request_grows_while_longer_ones_are_not_slower() -> None:
    s = Scheduler([("f", 4096 * MiB, [(0, 4096 * MiB)], ["a"])], [("a", None)], LADDER)
    ladder = s.mirrors["a"].ladder
    assert ladder.size == 2 * MiB and not ladder.settled
    opened, cut = _simulate(s, lambda s, r: 40e6, until=3.0)
    assert (ladder.size, ladder.settled) == (64 * MiB, True)  # 2 → 8 → 32 → 64 MiB
    assert not cut
    assert max(r.end - r.start for r in opened) == 64 * MiB
    # The connection count waited for the size (each measured at one setting of the other).
    assert s.targets()["a"] == 4


def test_a_size_the_mirror_paces_is_undone_and_its_requests_cut() -> None:
    s = Scheduler([("f", 4096 * MiB, [(0, 4096 * MiB)], ["a"])], [("a", None)], LADDER)
    ladder = s.mirrors["a"].ladder
    opened, cut = _simulate(s, _paced, until=1.5)
    assert (ladder.size, ladder.settled) == (2 * MiB, True)
    trials = [r for r in opened if r.trial]
    assert trials
    # The trial's requests, all still in flight (8 MiB at 4 MB/s), were cut ...
    assert all(r.cut and r.end == r.pos for r in trials)
    assert sorted(cut) == sorted(r.id for r in trials)
    # ... and their rest went back to the pool: every byte is fetched once, in short requests.
    later, _ = _simulate(s, _paced, until=1.5)
    assert later and all(r.end - r.start <= 2 * MiB + MiB // 2 for r in later)


def test_a_trial_that_slows_the_other_half_fails() -> None:
    """Longer bursts that disturb the shared link (queue overflows: every flow waits out a
    retransmission timeout) slow both halves alike: that is no reason to grow."""

    def disturbed(s: Scheduler, r: Range) -> float:
        trial_running = any(x.trial for x in s.active.values())
        return 10e6 if trial_running else 40e6

    s = Scheduler([("f", 4096 * MiB, [(0, 4096 * MiB)], ["a"])], [("a", None)], LADDER)
    _simulate(s, disturbed, until=1.5)
    ladder = s.mirrors["a"].ladder
    assert (ladder.size, ladder.settled) == (2 * MiB, True)


def test_the_whole_pull_fetches_every_byte_once_under_the_ladder() -> None:
    files = [(f"shard{i}", 64 * MiB, [(0, 64 * MiB)], ["a"]) for i in range(8)]
    s = Scheduler(files, [("a", None)], LADDER)
    opened, _ = _simulate(s, _paced, until=60.0)
    assert s.finished()
    got: dict[str, list[tuple[int, int]]] = {}
    for r in opened:
        got.setdefault(r.file, []).append((r.start, r.pos))
    for key, spans in got.items():
        covered = sorted(spans)
        assert covered[0][0] == 0 and sum(b - a for a, b in covered) == 64 * MiB, key
        assert all(a2 >= b1 for (_, b1), (a2, _) in itertools.pairwise(covered))


def test_one_connection_has_no_halves_to_compare() -> None:
    s = Scheduler([("f", 1024 * MiB, [(0, 1024 * MiB)], ["a"])], [("a", 1)], LADDER)
    assert (s.mirrors["a"].ladder.size, s.mirrors["a"].ladder.settled) == (64 * MiB, True)
