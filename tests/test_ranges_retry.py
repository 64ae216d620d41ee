"""Pure pieces of the transfer: byte-range sets, segment cutting, the sidecar, retry policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tenacity import RetryCallState, Retrying

from modelget.engines.ranges import (
    RangeSet,
    Sidecar,
    load_sidecar,
    remove_sidecar,
    save_sidecar,
    sidecar_path,
)
from modelget.retry import AttemptError, backoff_s, parse_retry_after, transfer_wait

MiB = 1024 * 1024


def test_rangeset_merges_overlapping_and_adjacent_ranges() -> None:
    rs = RangeSet([(10, 20), (30, 40)])
    rs.add(20, 30)
    assert list(rs) == [(10, 40)]
    rs.add(0, 5)
    rs.add(3, 12)
    rs.add(50, 50)  # empty: ignored
    assert list(rs) == [(0, 40)] and rs.total() == 40


def test_rangeset_missing_is_the_complement_within_the_size() -> None:
    rs = RangeSet([(0, 10), (20, 30), (90, 120)])
    assert rs.missing(100) == [(10, 20), (30, 90)]
    assert RangeSet().missing(7) == [(0, 7)]
    assert RangeSet([(0, 7)]).covers(7)
    assert not RangeSet([(1, 7)]).covers(7)


def test_sidecar_round_trips_and_rejects_what_does_not_belong(tmp_path: Path) -> None:
    dest = tmp_path / "x.incomplete"
    dest.write_bytes(b"\0" * 100)
    sc = Sidecar("k", 100, RangeSet([(0, 10), (50, 60)]), {"hub": '"etag"'})
    save_sidecar(dest, sc)
    assert oct(sidecar_path(dest).stat().st_mode & 0o777) == "0o600"
    back = load_sidecar(dest, "k", 100)
    assert back is not None and back.done == sc.done and back.validators == sc.validators
    assert load_sidecar(dest, "other-key", 100) is None
    assert load_sidecar(dest, "k", 101) is None  # the file has another size
    raw = json.loads(sidecar_path(dest).read_text())
    raw["done"] = [[0, 1000]]  # beyond the file
    sidecar_path(dest).write_text(json.dumps(raw))
    assert load_sidecar(dest, "k", 100) is None
    sidecar_path(dest).write_text("{truncated")
    assert load_sidecar(dest, "k", 100) is None
    remove_sidecar(dest)
    assert not sidecar_path(dest).exists()
    assert load_sidecar(dest, "k", 100) is None


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0


def _state_after(exc: BaseException, attempt: int) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_transfer_wait_backs_off_exponentially_with_jitter_and_obeys_retry_after() -> None:
    wait = transfer_wait(0.5, cap=30.0)
    plain = AttemptError("reset")
    first = [wait(_state_after(plain, 1)) for _ in range(50)]
    third = [wait(_state_after(plain, 3)) for _ in range(50)]
    assert all(0.5 <= w <= 1.0 for w in first)
    assert all(2.0 <= w <= 2.5 for w in third)
    assert len(set(first)) > 1  # jitter
    assert all(w <= 30.5 for w in (wait(_state_after(plain, 20)) for _ in range(10)))
    told = AttemptError("HTTP 429", retry_after=4.0)
    assert wait(_state_after(told, 1)) == 4.0
    assert wait(_state_after(AttemptError("x", retry_after=10_000), 1)) == 120.0


def test_the_schedulers_backoff_is_transfer_waits() -> None:
    """The pull-wide scheduler waits tenacity's exponential backoff with jitter between a
    mirror's failures in a row on one file (Retry-After is applied by the scheduler itself)."""
    first = [backoff_s(0.5, 1) for _ in range(50)]
    third = [backoff_s(0.5, 3) for _ in range(50)]
    assert all(0.5 <= w <= 1.0 for w in first)
    assert all(2.0 <= w <= 2.5 for w in third)
    assert len(set(first)) > 1  # jitter: connections to one mirror do not retry in step
    assert backoff_s(0.5, 40) <= 30.5
