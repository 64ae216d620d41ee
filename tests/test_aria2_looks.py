"""How often the aria2 engine's run loop looks at aria2c (pure: :func:`look_interval`).

A look hands a download's newly finished pieces to the hashing thread, so the look interval
bounds what is left to hash after aria2's last byte (issue 14, item 4): a download that is
hashed as it arrives is looked at every ``HASH_POLL_INTERVAL_S``, everything else every
``POLL_INTERVAL_S``, and a source's retry or grace period is never overslept.
"""

from __future__ import annotations

from pathlib import Path

from modelget.engines import FetchJob, FetchResult
from modelget.engines.aria2.hashing import _Hashing
from modelget.engines.aria2.run import HASH_POLL_INTERVAL_S, POLL_INTERVAL_S, look_interval
from modelget.engines.aria2.sources import _Resolving
from modelget.engines.aria2.state import _Active

SHA = "a" * 64


def active(gid: str, *, sha256: str | None = SHA, size: int = 64 << 20) -> _Active:
    job = FetchJob(gid, f"{gid}.bin", size, Path(f"/nonexistent/{gid}"), (), sha256=sha256)
    state = _Active(job, FetchResult(gid, job.path, ok=False), started=0.0)
    state.gid = gid
    state.hashing = _Hashing.for_job(job)
    return state


def status(state: str = "active", speed: int = 50_000_000) -> dict[str, str]:
    return {"status": state, "downloadSpeed": str(speed), "completedLength": "1048576"}


def test_hash_poll_is_shorter_than_the_plain_poll() -> None:
    assert HASH_POLL_INTERVAL_S < POLL_INTERVAL_S


def test_a_download_hashed_as_it_arrives_is_looked_at_often() -> None:
    a = active("g1")
    assert look_interval([a], {"g1": status()}, now=10.0) == HASH_POLL_INTERVAL_S


def test_nothing_to_hash_as_it_arrives_means_the_plain_interval() -> None:
    no_digest = active("g1", sha256=None)  # nothing to hash: verified otherwise
    doubted = active("g2")
    assert doubted.hashing is not None
    doubted.hashing.doubt()  # hashed from the finished file instead
    stalled = active("g3")  # no byte moving: nothing new to hash
    waiting = active("g4")  # in aria2's queue, not started
    statuses = {
        "g1": status(),
        "g2": status(),
        "g3": status(speed=0),
        "g4": status("waiting"),
    }
    assert (
        look_interval([no_digest, doubted, stalled, waiting], statuses, now=10.0) == POLL_INTERVAL_S
    )


def test_one_download_hashed_as_it_arrives_sets_the_pace_for_all() -> None:
    plain = active("g1", sha256=None)
    hashed = active("g2")
    statuses = {"g1": status(), "g2": status()}
    assert look_interval([plain, hashed], statuses, now=10.0) == HASH_POLL_INTERVAL_S


def test_a_sources_retry_or_grace_is_never_overslept() -> None:
    retrying = active("g1", sha256=None)
    retrying.resolving = _Resolving(attempt=1, waiting={}, retry_at=10.03)
    assert abs(look_interval([retrying], {}, now=10.0) - 0.03) < 1e-9
    grace = active("g2", sha256=None)
    grace.resolving = _Resolving(attempt=1, waiting={}, first_ok_at=9.99, grace_s=0.05)
    assert abs(look_interval([grace], {}, now=10.0) - 0.04) < 1e-9
    overdue = active("g3", sha256=None)
    overdue.resolving = _Resolving(attempt=1, waiting={}, retry_at=9.0)
    assert look_interval([overdue], {}, now=10.0) == 0.0
