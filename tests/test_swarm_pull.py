"""Swarm mode end to end, on 127.0.0.1 only: the hub simulator as the origin, a real opentracker
as the tracker, each node a real pull (``api.pull`` in a thread, or ``modelget pull`` in a
process where a test kills it) with its own cache and its own aria2c. What is checked: every
node's files (sha256), what the origin sent (the simulator's log), and what the nodes say
(warnings, bytes from peers and from mirrors). No timing is asserted.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import api
from modelget.datatypes import PullResult
from modelget.engines import aria2c_path
from modelget.events import Reporter
from modelget.swarm.options import SwarmOptions
from modelget.swarm.torrent import BlobTorrent, make_torrent, torrent_relpath
from modelget.testing.hubsim import Fault, HubSimulator
from modelget.testing.tracker import Tracker, opentracker_path

REPO = "acme/swarm"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
SIZES = (10 * 1024 * 1024 + 777, 8 * 1024 * 1024 + 5)
BIG_TOTAL = sum(SIZES)
ORIGIN_RATE = 12_000_000
"""Origin bytes/s per response: the seeder's web seeds take a second or two, so the peers
fetch pieces from it while it downloads."""


@pytest.fixture(autouse=True)
def need_aria2c_and_opentracker() -> None:
    missing = [
        n for n, p in (("aria2c", aria2c_path()), ("opentracker", opentracker_path())) if not p
    ]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} required in CI (scripts/bootstrap installs them)")
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    rng = random.Random(18)
    return {name: rng.randbytes(size) for name, size in zip(SHARDS, SIZES, strict=True)}


@pytest.fixture
def repo_dir(tmp_path: Path, blobs: dict[str, bytes]) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name, data in blobs.items():
        (root / name).write_bytes(data)
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    return root


@pytest.fixture
def tracker() -> Iterator[Tracker]:
    with Tracker() as t:
        yield t


class Events(Reporter):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, str]] = []
        self.from_swarm = 0

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        if mirror == "swarm":
            with self.lock:
                self.from_swarm += nbytes

    def on_message(self, level: str, text: str) -> None:
        with self.lock:
            self.messages.append((level, text))

    def warnings(self) -> list[str]:
        with self.lock:
            return [t for lv, t in self.messages if lv == "warning"]


def origin(
    sims: list[HubSimulator], repo_dir: Path, tmp_path: Path, *names: str
) -> tuple[list[HubSimulator], Path]:
    """Simulators serving the repo (the first is the origin), a catalogue naming them, probed
    once (every node then reads the probe cache: the probe's sample is not the nodes' pull)."""
    started = []
    body = "version: 1\nmirrors:\n"
    for name in names or ("origin",):
        sim = HubSimulator(name=name).start()
        sims.append(sim)
        started.append(sim)
        sim.add_repo(REPO, repo_dir)
        body += textwrap.indent(f"- name: {name}\n  kind: hf\n  endpoint: {sim.url}\n", "  ")
    cat = tmp_path / "mirrors.yaml"
    cat.write_text(body)
    api.probe(REPO, mirrors=cat)
    for sim in started:
        sim.clear_log()
        sim.add_fault(Fault(route="hf-resolve", rate_bps=ORIGIN_RATE))
    return started, cat


def premade(repo_dir: Path, torrent_dir: Path, tracker: Tracker | None) -> list[BlobTorrent]:
    """The torrents an earlier pull or ``export --torrents`` made (on the tracker's list)."""
    out = []
    for name in SHARDS:
        torrent, sha = make_torrent(repo_dir / name)
        path = torrent_dir / torrent_relpath(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(torrent.to_bytes())
        out.append(torrent)
        if tracker is not None:
            tracker.allow(torrent.info_hash)
    return out


class Node:
    """One node's pull in a thread (its own cache dir)."""

    def __init__(
        self,
        name: str,
        tmp_path: Path,
        cat: Path,
        swarm: SwarmOptions,
        local_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.cache = tmp_path / f"node-{name}"
        self.events = Events()
        self.result: PullResult | None = None
        self.error: BaseException | None = None
        self.cancel = threading.Event()

        def work() -> None:
            try:
                self.result = api.pull(
                    REPO,
                    mirrors=cat,
                    cache_dir=self.cache,
                    local_dir=local_dir,
                    engine="httpx",
                    reporter=self.events,
                    swarm=swarm,
                    cancel=self.cancel,
                )
            except BaseException as exc:  # read by the test
                self.error = exc

        self.thread = threading.Thread(target=work, name=f"node-{name}", daemon=True)
        self.thread.start()

    def stop_seeding(self) -> None:
        """What Ctrl-C does after the pull: the node stops seeding (its pull result stands)."""
        self.cancel.set()

    def wait(self, timeout: float = 90) -> PullResult:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.cancel.set()
            self.thread.join(30)
            pytest.fail(f"node {self.name} did not finish; said {self.events.messages}")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def assert_files(result: PullResult, blobs: dict[str, bytes]) -> None:
    assert result.status == "ok", [(f.path, f.error) for f in result.failed]
    snap = Path(result.path)
    for name, data in blobs.items():
        got = hashlib.sha256((snap / name).read_bytes()).hexdigest()
        assert got == hashlib.sha256(data).hexdigest(), name
    assert (snap / "config.json").read_text() == '{"hidden_size": 8}\n'


def origin_big_bytes(sims: list[HubSimulator]) -> int:
    return sum(sim.file_bytes_sent(name) for sim in sims for name in SHARDS)


def opts(tracker: str, tmp: Path, role: str, **kw: object) -> SwarmOptions:
    return SwarmOptions(
        tracker=tracker,
        role=role,  # type: ignore[arg-type]
        torrent_dir=tmp / "torrents",
        interface="127.0.0.1",
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_three_nodes_pull_one_copy_from_the_origin(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """Pre-made torrents, one seeder (web seeds), two peers (none): every node's files are
    right and the origin sent the big blobs about once. The seeder seeds on after its pull
    until the tracker's scrape lists no downloading peer (not stopped by the test)."""
    (_sim,), cat = origin(sims, repo_dir, tmp_path)
    premade(repo_dir, tmp_path / "torrents", tracker)
    peers = [
        Node(f"p{i}", tmp_path, cat, opts(tracker.announce, tmp_path, "peer", seed_for_s=0))
        for i in (1, 2)
    ]
    seeder = Node("s", tmp_path, cat, opts(tracker.announce, tmp_path, "seed", seed_for_s=60))
    results = [p.wait() for p in peers]
    seeded = seeder.wait()
    for r in [*results, seeded]:
        assert_files(r, blobs)
    sent = origin_big_bytes(sims)
    assert sent <= 1.05 * BIG_TOTAL, sent / BIG_TOTAL
    for r in results:
        assert r.swarm_role == "peer"
        assert r.bytes_from_peers >= BIG_TOTAL
        assert r.bytes_from_mirrors < 1024 * 1024  # config.json only
    assert seeded.swarm_role == "seed"
    assert not any("swarm" in w for p in peers for w in p.events.warnings())
    # aria2c seeded the landed blobs through hardlinks, removed when it stopped: no copy left.
    for node in [*peers, seeder]:
        assert not (node.cache / "models--acme--swarm" / ".swarm").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cold_model_is_published_blob_by_blob(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """No torrent anywhere: the seeder fetches from the mirrors, publishes each blob's torrent
    once its sha256 matched, and seeds it; the peers wait for the torrents (the seeder's
    heartbeat) and get the blobs from it."""
    (_sim,), cat = origin(sims, repo_dir, tmp_path)
    tdir = tmp_path / "torrents"
    tracker.follow(tdir)  # the operator's hook: what is published is listed
    peers = [
        Node(f"p{i}", tmp_path, cat, opts(tracker.announce, tmp_path, "peer", seed_for_s=0))
        for i in (1, 2)
    ]
    seeder = Node("s", tmp_path, cat, opts(tracker.announce, tmp_path, "seed", seed_for_s=60))
    results = [p.wait() for p in peers]
    seeder.stop_seeding()
    seeded = seeder.wait()
    for r in [*results, seeded]:
        assert_files(r, blobs)
    for name in SHARDS:
        torrent, sha = make_torrent(repo_dir / name)
        assert (tdir / torrent_relpath(sha)).read_bytes() == torrent.to_bytes()
        assert not (tdir / torrent_relpath(sha)).with_suffix(".torrent.pending").exists()
    sent = origin_big_bytes(sims)
    assert sent <= 1.05 * BIG_TOTAL, sent / BIG_TOTAL
    for r in results:
        assert r.bytes_from_peers >= BIG_TOTAL


@pytest.mark.timeout(90)
def test_no_tracker_falls_back_to_the_mirrors(
    tmp_path: Path, repo_dir: Path, blobs: dict[str, bytes], sims: list[HubSimulator]
) -> None:
    """A tracker nobody answers at: the peer's swarm never moves, so after --swarm-stall it
    adds the mirrors, says so, and the pull completes."""
    (_sim,), cat = origin(sims, repo_dir, tmp_path)
    premade(repo_dir, tmp_path / "torrents", None)
    dead = "http://127.0.0.1:9/announce"
    node = Node("p", tmp_path, cat, opts(dead, tmp_path, "peer", stall_s=2.0, seed_for_s=0))
    result = node.wait()
    assert_files(result, blobs)
    assert any("adding the mirrors" in w for w in node.events.warnings()), node.events.messages
    assert result.bytes_from_mirrors >= BIG_TOTAL


@pytest.mark.timeout(90)
def test_a_torrent_that_disagrees_with_the_manifest_is_refused(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    (_sim,), cat = origin(sims, repo_dir, tmp_path)
    tdir = tmp_path / "torrents"
    first, second = (make_torrent(repo_dir / name) for name in SHARDS)
    # Shard 1's torrent file holds shard 2's torrent (another blob, another length).
    path = tdir / torrent_relpath(first[1])
    path.parent.mkdir(parents=True)
    path.write_bytes(second[0].to_bytes())
    node = Node(
        "p", tmp_path, cat, opts(tracker.announce, tmp_path, "peer", stall_s=2.0, seed_for_s=0)
    )
    result = node.wait()
    assert_files(result, blobs)
    refused = [w for w in node.events.warnings() if "refused" in w]
    assert refused and SHARDS[0] in refused[0], node.events.messages
    # The node fetched that blob from the mirrors, verified it, and put the right torrent in
    # the stale one's place.
    assert path.read_bytes() == first[0].to_bytes()


@pytest.mark.timeout(90)
def test_a_corrupt_web_seed_is_never_accepted(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """The seeder's web seeds: a mirror that corrupts every file it sends, and a good one.
    aria2 throws the bad pieces away; the blobs that land are right."""
    (bad, _good), cat = origin(sims, repo_dir, tmp_path, "bad", "good")
    bad.add_fault(Fault(route="hf-resolve", corrupt_every=(1 << 20)))
    premade(repo_dir, tmp_path / "torrents", tracker)
    node = Node(
        "s", tmp_path, cat, opts(tracker.announce, tmp_path, "seed", stall_s=3.0, seed_for_s=0)
    )
    result = node.wait()
    assert_files(result, blobs)
    assert bad.file_bytes_sent("") > 0  # it was asked


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_peers_finish_from_the_mirrors_when_the_seeder_dies(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """The seeder (a process) is killed while it fetches, after the peers got bytes from it:
    their swarm stalls, they add the mirrors and finish."""
    (sim,), cat = origin(sims, repo_dir, tmp_path)
    sim.clear_faults()
    sim.add_fault(Fault(route="hf-resolve", rate_bps=2_000_000))  # the seeder takes ~10 s
    premade(repo_dir, tmp_path / "torrents", tracker)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    seeder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelget",
            "pull",
            REPO,
            "--mirrors",
            str(cat),
            "--cache-dir",
            str(tmp_path / "node-s"),
            "--engine",
            "httpx",
            "--quiet",
            "--swarm",
            tracker.announce,
            "--swarm-role",
            "seed",
            "--swarm-dir",
            str(tmp_path / "torrents"),
            "--swarm-interface",
            "127.0.0.1",
            "--seed-for",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # The peers start once the seeder fetches (their stall clock must not run out while
        # a loaded machine starts the seeder's interpreter).
        deadline = time.monotonic() + 60
        while sim.file_bytes_sent("") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        peers = [
            Node(
                f"p{i}",
                tmp_path,
                cat,
                opts(tracker.announce, tmp_path, "peer", stall_s=6.0, seed_for_s=0),
            )
            for i in (1, 2)
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(p.events.from_swarm for p in peers):
            time.sleep(0.1)
        assert all(p.events.from_swarm for p in peers), "the peers got nothing from the seeder"
        os.killpg(seeder.pid, 9)
        seeder.wait(10)
        sim.clear_faults()
        results = [p.wait() for p in peers]
    finally:
        if seeder.poll() is None:
            os.killpg(seeder.pid, 9)
            seeder.wait(10)
    for r in results:
        assert_files(r, blobs)
        assert r.bytes_from_peers > 0
    # The swarm stalled, so a peer took the mirrors (one may then have got the rest from the
    # other, which uploads what its web seeds bring: that is the swarm working).
    said = [w for p in peers for w in p.events.warnings()]
    assert any("adding the mirrors" in w for w in said), said
    assert sum(r.bytes_from_mirrors for r in results) > 0


@pytest.mark.timeout(120)
def test_bytes_from_a_corrupt_only_web_seed_never_land(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """The only mirror corrupts every file: the swarm never completes a piece from it, the
    mirrors' engine gets bytes that fail their sha256, and nothing lands."""
    (bad,), cat = origin(sims, repo_dir, tmp_path)
    bad.add_fault(Fault(route="hf-resolve", corrupt_every=(1 << 20)))
    premade(repo_dir, tmp_path / "torrents", tracker)
    node = Node(
        "s", tmp_path, cat, opts(tracker.announce, tmp_path, "seed", stall_s=2.0, seed_for_s=0)
    )
    result = node.wait()
    assert result.status != "ok"
    assert {f.path for f in result.failed} >= set(SHARDS)
    assert all(f.bad_mirrors for f in result.failed)
    snap = Path(result.path)
    for name in SHARDS:
        assert not (snap / name).exists()
    blobs_dir = node.cache / "models--acme--swarm" / "blobs"
    for name, data in blobs.items():
        assert not (blobs_dir / hashlib.sha256(data).hexdigest()).exists(), name


@pytest.mark.timeout(120)
def test_export_torrents_and_swarm_serve_feed_a_late_joiner(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """A node that pulled the model the ordinary way exports it with --torrents and keeps it
    seeding (``swarm serve``); a late peer (into a --local-dir), pointed at the export's
    torrents/, gets every big blob from it: the origin sends none of them."""
    (sim,), cat = origin(sims, repo_dir, tmp_path)
    first = tmp_path / "first"
    done = api.pull(REPO, mirrors=cat, cache_dir=first, engine="httpx")
    assert_files(done, blobs)
    tree = tmp_path / "tree"
    exported = api.export(REPO, tree, cache_dir=first, torrents=True)
    assert exported.torrents == len(SHARDS)
    tdir = tree / "torrents"
    for name in SHARDS:
        torrent, sha = make_torrent(repo_dir / name)
        assert (tdir / torrent_relpath(sha)).read_bytes() == torrent.to_bytes()
        tracker.allow(torrent.info_hash)
    assert not list(tdir.rglob("*config*"))  # small files have no torrent
    sim.clear_log()

    stop = threading.Event()
    served: list[object] = []
    swarm = SwarmOptions(
        tracker.announce, torrent_dir=tdir, interface="127.0.0.1", seed_for_s=float("inf")
    )
    server = threading.Thread(
        target=lambda: served.append(api.swarm_serve(REPO, swarm, cache_dir=first, cancel=stop)),
        daemon=True,
    )
    server.start()
    try:
        late = Node(
            "late",
            tmp_path,
            cat,
            SwarmOptions(
                tracker.announce,
                role="peer",
                torrent_dir=tdir,
                interface="127.0.0.1",
                seed_for_s=0,
            ),
            local_dir=tmp_path / "late-local",
        )
        result = late.wait()
    finally:
        stop.set()
        server.join(30)
    assert_files(result, blobs)
    assert result.path == str(tmp_path / "late-local")
    assert not (tmp_path / "late-local" / ".cache" / "huggingface" / "swarm").exists()
    assert origin_big_bytes(sims) == 0
    assert result.bytes_from_peers >= BIG_TOTAL
    (report,) = served
    assert report.uploaded >= BIG_TOTAL  # type: ignore[attr-defined]
    assert len(report.info_hashes) == len(SHARDS)  # type: ignore[attr-defined]


TOKEN = "hf_swarmSECRETtoken"


@pytest.mark.timeout(120)
def test_a_gated_model_token_never_reaches_aria2c_or_the_cdn(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gated repo whose blobs redirect to a signed CDN URL: the seeder resolves the redirect
    in Python (the token only on the hub) and gives aria2c the signed URL; the CDN never sees
    the token, the peer's blobs come from the seeder, and no torrent holds a URL."""
    hub = HubSimulator(name="hub", cdn=True).start()
    sims.append(hub)
    hub.add_repo(REPO, repo_dir, gated=True, token=TOKEN)
    monkeypatch.setenv("OFFICIAL_TOKEN", TOKEN)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n    token_env: OFFICIAL_TOKEN\n"
    )
    api.probe(REPO, mirrors=cat)
    hub.clear_log()
    premade(repo_dir, tmp_path / "torrents", tracker)
    peer = Node("p", tmp_path, cat, opts(tracker.announce, tmp_path, "peer", seed_for_s=0))
    seeder = Node("s", tmp_path, cat, opts(tracker.announce, tmp_path, "seed", seed_for_s=30))
    assert_files(peer.wait(), blobs)
    seeder.stop_seeding()
    assert_files(seeder.wait(), blobs)
    cdn = hub.requests(route="cdn")
    assert cdn and all(r.authorization is None for r in cdn)
    assert any(r.user_agent == "modelget-aria2" for r in cdn)  # the web seeds
    assert all(r.authorization in (None, f"Bearer {TOKEN}") for r in hub.log)
    sent = sum(r.bytes_sent for r in cdn)
    assert sent <= 1.05 * BIG_TOTAL, sent / BIG_TOTAL
    for path in (tmp_path / "torrents").rglob("*.torrent"):
        data = path.read_bytes()
        assert b"http" not in data and TOKEN.encode() not in data


@pytest.mark.timeout(120)
def test_a_seeder_that_has_the_model_serves_it_without_fetching(
    tmp_path: Path,
    repo_dir: Path,
    blobs: dict[str, bytes],
    sims: list[HubSimulator],
    tracker: Tracker,
) -> None:
    """The seeder's cache already holds the model (every file reused): it still seeds the
    blobs, publishing their torrents (a cold --swarm-dir), and the peer gets them from it."""
    (sim,), cat = origin(sims, repo_dir, tmp_path)
    tdir = tmp_path / "torrents"
    tracker.follow(tdir)
    assert_files(api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "node-s", engine="httpx"), blobs)
    sim.clear_log()
    peer = Node("p", tmp_path, cat, opts(tracker.announce, tmp_path, "peer", seed_for_s=0))
    seeder = Node("s", tmp_path, cat, opts(tracker.announce, tmp_path, "seed", seed_for_s=60))
    result = peer.wait()
    seeder.stop_seeding()
    seeded = seeder.wait()
    assert_files(result, blobs)
    assert all(f.status == "reused" for f in seeded.files)
    assert origin_big_bytes(sims) == 0
    assert result.bytes_from_peers >= BIG_TOTAL
