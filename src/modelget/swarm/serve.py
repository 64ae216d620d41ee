"""``modelget swarm serve``: keep a model from the Hugging Face cache seeding for the nodes
that pull it with ``--swarm`` (late joiners), until stopped or ``seed_for_s``. Each big blob is
read once (its sha256 checked against its name, its torrent made in the same read), written
to ``torrent_dir`` when missing, hardlinked into the repo's ``.swarm`` directory and seeded."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from modelget.datatypes import RepoType
from modelget.engines import FetchJob
from modelget.errors import LayoutError, TorrentError
from modelget.events import Reporter
from modelget.layout import repo_dir
from modelget.swarm.options import SwarmOptions


@dataclass(frozen=True)
class SwarmServeResult:
    """What ``swarm serve`` seeded: the blobs' info-hashes, their bytes, for how long, and
    how much it uploaded."""

    repo_id: str
    commit: str
    info_hashes: tuple[str, ...]
    bytes: int
    seconds: float
    uploaded: int


def serve(
    repo_id: str,
    swarm: SwarmOptions,
    *,
    cache_dir: Path,
    revision: str | None,
    repo_type: RepoType,
    reporter: Reporter,
    cancel: threading.Event,
    verify_tls: bool = True,
) -> SwarmServeResult:
    from modelget.export import _resolve
    from modelget.swarm.engine import SwarmEngine
    from modelget.swarm.policy import through_swarm
    from modelget.swarm.torrent import make_torrent

    rdir = repo_dir(cache_dir, repo_id, repo_type)
    if not rdir.is_dir():
        raise LayoutError(
            f"{repo_id} is not in the Hugging Face cache at {cache_dir}",
            hint=f"run `modelget pull {repo_id}` first, or pass the cache with --cache-dir",
        )
    commit, _ = _resolve(rdir, repo_id, revision)
    blobs_dir = Path(os.path.realpath(rdir / "blobs"))
    snap = rdir / "snapshots" / commit
    seen: set[str] = set()
    jobs: list[FetchJob] = []
    for item in sorted(snap.rglob("*")):
        real = Path(os.path.realpath(item))
        if real.parent != blobs_dir or real.name in seen or not real.is_file():
            continue
        size = real.stat().st_size
        if not through_swarm(size, real.name) or len(real.name) != 64:
            continue
        seen.add(real.name)
        rel = item.relative_to(snap).as_posix()
        jobs.append(FetchJob(real.name, rel, size, real, (), sha256=real.name))
    engine = SwarmEngine(swarm, "seed", rdir / ".swarm", reporter, verify_tls=verify_tls)
    started = time.monotonic()
    hashes: list[str] = []
    total = 0
    try:
        engine.prepare()
        for job in jobs:
            try:
                torrent, sha = make_torrent(job.dest)
            except (OSError, TorrentError) as exc:
                reporter.on_message("warning", f"swarm: {job.path}: not seeded: {exc}")
                continue
            if sha != job.sha256:
                reporter.on_message(
                    "warning",
                    f"swarm: {job.path}: the cached blob is corrupt (sha256 {sha}): not seeded; "
                    "`modelget verify` names it, `modelget pull --repair` fixes it",
                )
                continue
            engine.publish(job, torrent, reporter)
            hashes.append(torrent.public().info_hash if swarm.lpd else torrent.info_hash)
            total += job.size
        if not hashes:
            raise LayoutError(f"{repo_id} @ {commit[:12]} has no blob to seed in {rdir}")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop seeding, say what it did
            engine.linger(cancel, seed_for_s=swarm.seed_for_s)
        uploaded = engine.uploaded()
    finally:
        engine.close()
    return SwarmServeResult(
        repo_id, commit, tuple(hashes), total, time.monotonic() - started, uploaded
    )
