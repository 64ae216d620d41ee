"""The swarm's decisions, pure: which role a node takes, what a stalled download does, how
long a node goes on seeding, and which files travel through the swarm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modelget.errors import UsageError
from modelget.swarm.options import SwarmRole

Role = Literal["seed", "peer"]
MIN_SWARM_BYTES = 1024 * 1024
"""Smaller files (and those without a sha256: git-stored, non-LFS) come from the mirrors."""
TRACKER_INTERVAL_S = 2
"""How often a node announces (opentracker's own interval is ~30 min): peers find each other,
and a seeder's scrape sees them, within seconds; a refused announce (a whitelist not yet
reloaded) is tried again within this long."""
MIN_SEED_S = 2 * TRACKER_INTERVAL_S + 2.0
"""A node seeds at least this long after its pull, unless ``seed_for_s`` is shorter: a peer
whose first announce the tracker refused (its whitelist not yet reloaded for a just-published
torrent) is not in the scrape until it announces again, one interval later."""


def through_swarm(size: int, sha256: str | None) -> bool:
    """Does a file travel through the swarm? The big blobs (LFS: a sha256 names them)."""
    return sha256 is not None and size >= MIN_SWARM_BYTES


def choose_role(role: SwarmRole, rank: tuple[str, str] | None, seeders: int) -> tuple[Role, str]:
    """The role and why. ``auto``: seed when the rank (the first of ``RANK``, ``SLURM_PROCID``,
    ``JOB_COMPLETION_INDEX`` set, as (name, value)) is below ``seeders``; peer otherwise, and
    when no rank is known (a lone node: name it ``--swarm-role seed``)."""
    if role in ("seed", "peer"):
        return role, f"--swarm-role {role}"
    if rank is None:
        return "peer", "no RANK, SLURM_PROCID or JOB_COMPLETION_INDEX: a peer"
    name, value = rank
    try:
        number = int(value)
    except ValueError:
        raise UsageError(
            f"{name}={value!r} is not a rank (a whole number)",
            hint="unset it, or name the role: --swarm-role seed|peer",
        ) from None
    if number < 0:
        raise UsageError(f"{name}={value!r} is not a rank (a whole number from 0)")
    if number < seeders:
        return "seed", f"{name}={number} < --swarm-seeders {seeders}: a seeder"
    return "peer", f"{name}={number} >= --swarm-seeders {seeders}: a peer"


StallAction = Literal["wait", "add-mirrors", "give-up"]


@dataclass(frozen=True)
class Progress:
    """What the loop knows of one swarm download."""

    since_progress_s: float
    """Seconds since its completed length last grew (or since it was added)."""
    mirrors_added: bool
    """Its mirrors were already added as web seeds (a seeder's from the start)."""


def stall_action(p: Progress, stall_s: float) -> StallAction:
    """No progress for ``stall_s``: a peer adds the ranked mirrors as web seeds (``changeUri``);
    with the mirrors added and still none for ``stall_s``, the download gives up and the file
    goes to the ordinary engine (a broken swarm costs time, never the pull)."""
    if p.since_progress_s < stall_s:
        return "wait"
    return "give-up" if p.mirrors_added else "add-mirrors"


def wait_for_torrent(waited_s: float, publisher_quiet_s: float | None, stall_s: float) -> bool:
    """A peer without the blob's torrent yet (a cold model): keep waiting for the seeder to
    publish it for ``stall_s`` from the start (a seeder starting with it, or a heartbeat file
    left by one that crashed), and after that while the seeder says it is fetching that blob
    (its heartbeat file is younger than ``stall_s``: ``publisher_quiet_s``)."""
    if waited_s < stall_s:
        return True
    return publisher_quiet_s is not None and publisher_quiet_s < stall_s


def keep_seeding(seeding_s: float, seed_for_s: float, downloading: int | None) -> bool:
    """After its own pull, does a node go on seeding? Never past ``seed_for_s``; at least
    ``MIN_SEED_S``; then while the tracker lists downloading peers (``downloading``: the sum of
    its scrapes' ``incomplete``; None when it cannot say, e.g. LPD or an unreachable tracker:
    until ``seed_for_s``)."""
    if seeding_s >= seed_for_s:
        return False
    if seeding_s < MIN_SEED_S or downloading is None:
        return True
    return downloading > 0


def split_bytes(completed: int, web_seed_bytes: float) -> tuple[int, int]:
    """(from peers, from mirrors) of a swarm download's ``completed`` bytes, given the bytes
    its web seeds were measured to deliver (their speeds summed over the polls: an estimate,
    clamped to what completed)."""
    mirrors = max(0, min(completed, round(web_seed_bytes)))
    return completed - mirrors, mirrors


def mirror_share(web_seed_bps: int, peer_bps: int) -> float:
    """The share of a swarm download's new bytes credited to the mirrors (its web seeds), from
    what aria2 says each side brings now: all of it with no peer sending, none with no web seed
    sending, else in proportion (an estimate: aria2 counts no bytes per source)."""
    if peer_bps <= 0:
        return 1.0
    if web_seed_bps <= 0:
        return 0.0
    return web_seed_bps / (web_seed_bps + peer_bps)
