"""The swarm's pure decisions: role, stall fallback, waiting for a cold torrent, seeding
lifetime, which files go through the swarm, the peers/mirrors split, and the options' checks."""

from __future__ import annotations

import pytest

from modelget.errors import UsageError
from modelget.swarm import policy
from modelget.swarm.options import SwarmOptions
from modelget.swarm.policy import Progress


@pytest.mark.parametrize(
    ("role", "rank", "seeders", "want"),
    [
        ("seed", None, 1, "seed"),
        ("peer", ("RANK", "0"), 1, "peer"),
        ("auto", ("RANK", "0"), 1, "seed"),
        ("auto", ("RANK", "1"), 1, "peer"),
        ("auto", ("SLURM_PROCID", "3"), 4, "seed"),
        ("auto", ("JOB_COMPLETION_INDEX", "4"), 4, "peer"),
        ("auto", ("RANK", "0"), 0, "peer"),
        ("auto", None, 1, "peer"),
    ],
)
def test_choose_role(role: str, rank: tuple[str, str] | None, seeders: int, want: str) -> None:
    got, why = policy.choose_role(role, rank, seeders)  # type: ignore[arg-type]
    assert got == want
    assert why


@pytest.mark.parametrize("value", ["x", "-1", "1.5", ""])
def test_a_rank_that_is_not_a_number_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="RANK"):
        policy.choose_role("auto", ("RANK", value), 1)


def test_rank_variables_are_read_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelget import settings

    for name in settings.SWARM_RANK_VARS:
        monkeypatch.delenv(name, raising=False)
    assert settings.swarm_rank() is None
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "7")
    assert settings.swarm_rank() == ("JOB_COMPLETION_INDEX", "7")
    monkeypatch.setenv("SLURM_PROCID", "2")
    assert settings.swarm_rank() == ("SLURM_PROCID", "2")
    monkeypatch.setenv("RANK", " 0 ")
    assert settings.swarm_rank() == ("RANK", "0")


@pytest.mark.parametrize(
    ("since", "added", "want"),
    [
        (1.0, False, "wait"),
        (30.0, False, "add-mirrors"),
        (29.9, True, "wait"),
        (31.0, True, "give-up"),
    ],
)
def test_stall_action(since: float, added: bool, want: str) -> None:
    assert policy.stall_action(Progress(since, added), 30.0) == want


def test_wait_for_a_cold_torrent() -> None:
    # No heartbeat: stall_s from the start.
    assert policy.wait_for_torrent(5.0, None, 30.0)
    assert not policy.wait_for_torrent(31.0, None, 30.0)
    # The seeder says it is fetching the blob: wait as long as it keeps saying so.
    assert policy.wait_for_torrent(600.0, 1.0, 30.0)
    assert not policy.wait_for_torrent(600.0, 45.0, 30.0)
    # A stale heartbeat (a seeder that crashed) does not cut the first stall_s short: the new
    # seeder may not have beaten yet.
    assert policy.wait_for_torrent(5.0, 45.0, 30.0)


@pytest.mark.parametrize(
    ("seeding", "bound", "downloading", "want"),
    [
        (0.0, 0.0, 5, False),  # --seed-for 0
        (1.0, 600.0, 0, True),  # at least MIN_SEED_S
        (policy.MIN_SEED_S, 600.0, 0, False),
        (100.0, 600.0, 2, True),
        (100.0, 600.0, None, True),  # cannot say (LPD, tracker gone): until the bound
        (600.0, 600.0, 2, False),
        (3.0, 2.0, 2, False),
    ],
)
def test_keep_seeding(seeding: float, bound: float, downloading: int | None, want: bool) -> None:
    assert policy.keep_seeding(seeding, bound, downloading) is want


def test_through_swarm() -> None:
    assert policy.through_swarm(policy.MIN_SWARM_BYTES, "a" * 64)
    assert not policy.through_swarm(policy.MIN_SWARM_BYTES - 1, "a" * 64)
    assert not policy.through_swarm(10**9, None)  # no sha256: not a blob a torrent can name


def test_mirror_share_and_split() -> None:
    assert policy.mirror_share(0, 0) == 1.0
    assert policy.mirror_share(100, 0) == 1.0
    assert policy.mirror_share(0, 100) == 0.0
    assert policy.mirror_share(300, 100) == 0.75
    assert policy.split_bytes(1000, 250.4) == (750, 250)
    assert policy.split_bytes(1000, 5000.0) == (0, 1000)
    assert policy.split_bytes(1000, -1.0) == (1000, 0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tracker": "tracker:6969"}, "not a tracker URL"),
        ({"tracker": "ftp://t/announce"}, "not a tracker URL"),
        ({"seeders": -1}, "seeders"),
        ({"seed_for_s": -1.0}, "seed-for"),
        ({"stall_s": 0.0}, "stall"),
        ({"port": 70000}, "port"),
        ({"role": "leader"}, "role"),
    ],
)
def test_options_check(kw: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"tracker": "http://t:6969/announce", **kw}
    with pytest.raises(UsageError, match=match):
        SwarmOptions(**base).check()  # type: ignore[arg-type]


def test_options_accept_lpd_and_urls() -> None:
    SwarmOptions("lpd").check()
    SwarmOptions("udp://t:6969").check()
    assert SwarmOptions("lpd").lpd
    assert not SwarmOptions("http://t/announce").lpd
