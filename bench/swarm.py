"""S12: swarm mode (issue 18, "Prove it"): N nodes pull one model behind one capped uplink.

The topology of the research prototype (cluster.md §2), in network namespaces
(:mod:`bench.swarmnet`): the origin, a hub simulator (:mod:`bench.swarm_origin`), behind a
WAN cap; N nodes with capped NICs on one bridge; opentracker on the bridge (whitelist mode, as
Debian builds it). Every node is a real ``modelget pull`` process in its own namespace, with its
own cache, destination and aria2c; node 0 has ``RANK=0`` (the seeder, ``--swarm-role auto``),
the others are peers. Cases:

- ``single``: node 0 alone, plain ``modelget pull``: T1, the single-node time every ratio uses;
- ``single-swarm``: node 0 alone with ``--swarm`` (torrents pre-made): what swarm mode costs
  one node;
- ``plain-N``: every node a plain ``modelget pull`` at once (today: N× the origin traffic);
- ``warm-N``: every node ``--swarm`` with the torrents pre-made: ``--swarm-dir`` is the
  ``torrents/`` of a ``modelget export --torrents`` tree (made before the cases, from a pull
  of its own);
- ``cold-N``: every node ``--swarm`` with an empty shared ``--swarm-dir``: the seeder publishes
  each blob's torrent as soon as it has passed sha256, the peers wait for it (the tracker's
  whitelist follows that directory, as an operator's hook would);
- ``cold-listed-N`` (diagnostic): the same with the info-hashes on the whitelist from the
  start, which tells what the whitelist's lag behind the publication costs.

Measured per node: seconds from the common start (just before the N processes are started) to
the moment its last file is in place (polled every 0.1 s: a file appears under its final name
only after its sha256 was checked), its exit code and ``--json`` result, and, after the case,
the sha256 of every file it has. The origin's egress is the simulator's own count of file bytes
sent, ÷ the model's size. Then ``loopback``: aria2's BitTorrent throughput, 1 seeder → 1 peer
on 127.0.0.1 with no shaping, through modelget's own swarm aria2c (``SwarmNode``, its option set).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from bench import netns, swarmnet
from bench.harness import Bench, Run, modelget_result, write_shards
from bench.results import Headline, SceneResult
from bench.sites import BenchRepo
from bench.stats import Target, fmt_bytes, fmt_ratio, fmt_s, markdown_table, ratio
from modelget.swarm.policy import TRACKER_INTERVAL_S
from modelget.testing.tracker import Tracker, opentracker_path
from modelget.verify import hash_file

SCENE = "S12"
REPO_ID = "bench/swarm"
TRACKER_PORT = 6969
ORIGIN_PORT = 8000
SEED_FOR = "120s"
"""A node seeds on after its pull while the tracker lists downloading peers, at most this long."""
MiB = 1024 * 1024


@dataclass(frozen=True)
class SwarmProfile:
    nodes: int
    shards: int
    shard_bytes: int
    wan_bps: int
    nic_bps: int
    loopback_bytes: int
    loopback_runs: int
    timeout_s: float
    queue: str = "short"
    """Under each cap: ``short`` (a bfifo of 10 ms of the rate, as the other shaped scenes'
    queues) or ``pfifo`` (htb's default 1000-packet FIFO, as the prototype's net.sh); see
    bench/swarmnet.py. ``python -m bench --swarm-queue`` sets it."""


FULL = SwarmProfile(
    nodes=8,
    shards=4,
    shard_bytes=64_000_000,
    wan_bps=12_500_000,  # 100 Mbit/s, the prototype's WAN
    nic_bps=50_000_000,  # 400 Mbit/s per node NIC, each way
    loopback_bytes=512 * MiB,
    loopback_runs=3,
    timeout_s=600,
)
QUICK = SwarmProfile(
    nodes=8,
    shards=4,
    shard_bytes=16_000_000,
    wan_bps=12_500_000,
    nic_bps=50_000_000,
    loopback_bytes=256 * MiB,
    loopback_runs=1,
    timeout_s=300,
)


@dataclass
class NodeRun:
    node: int
    done_s: float | None = None
    rc: int | None = None
    result: dict[str, Any] = field(default_factory=dict)
    bad_files: list[str] = field(default_factory=list)
    stderr_tail: str = ""


@dataclass
class CaseRun:
    case: str
    nodes: list[NodeRun]
    origin_file_bytes: int
    origin_requests: int
    wall_s: float
    load1: float

    @property
    def ok(self) -> bool:
        return all(
            n.done_s is not None and n.rc == 0 and not n.bad_files and _status_ok(n)
            for n in self.nodes
        )

    @property
    def slowest_s(self) -> float:
        times = [n.done_s for n in self.nodes if n.done_s is not None]
        return max(times) if len(times) == len(self.nodes) else float("nan")

    @property
    def fastest_s(self) -> float:
        times = [n.done_s for n in self.nodes if n.done_s is not None]
        return min(times) if times else float("nan")


def _status_ok(n: NodeRun) -> bool:
    """The node's ``--json`` result says every file is in place and verified."""
    return n.result.get("status") == "ok" and n.result.get("exit_code") == 0


def _sha256(path: Path) -> str:
    return hash_file(path).sha256 or ""


class _Origin:
    """The origin process in its namespace, spoken to over its stdin/stdout."""

    def __init__(self, net: swarmnet.SwarmNet, repo: BenchRepo) -> None:
        cmd = [
            sys.executable,
            "-m",
            "bench.swarm_origin",
            "--repo",
            f"{repo.repo_id}={repo.directory}",
            "--host",
            swarmnet.ORIGIN_IP,
            "--port",
            str(ORIGIN_PORT),
        ]
        self.proc = subprocess.Popen(
            net.wrap(swarmnet.ORIGIN_NS, cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        hello = self._read()
        self.url = str(hello["url"])
        self.commit = str(hello["commit"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the origin exited (code {self.proc.poll()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class _NsTracker(Tracker):
    """opentracker on the bridge (the testing fixture's, started in a namespace on the
    bridge's address instead of 127.0.0.1)."""

    def __init__(self, net: swarmnet.SwarmNet, root: Path) -> None:
        super().__init__(root)
        self.net = net
        self.port = TRACKER_PORT
        self.announce = f"http://{swarmnet.BRIDGE_IP}:{TRACKER_PORT}/announce"

    def start(self) -> _NsTracker:
        args = [
            self.exe,
            "-i",
            swarmnet.BRIDGE_IP,
            "-p",
            str(self.port),
            "-P",
            str(self.port),
            "-w",
            "whitelist.txt",
            "-u",
            "nobody",
            "-d",
            str(self.root),
        ]
        self.proc = subprocess.Popen(
            self.net.wrap(swarmnet.BRIDGE_NS, args),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        ready = self.net.wrap(swarmnet.BRIDGE_NS, ["ss", "-ltnH", f"sport = :{self.port}"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"opentracker exited at once (code {self.proc.returncode})")
            if subprocess.run(ready, capture_output=True, text=True).stdout.strip():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("opentracker did not start listening")


class SwarmScene:
    def __init__(self, b: Bench, p: SwarmProfile, net: swarmnet.SwarmNet, scratch: Path) -> None:
        self.b = b
        self.p = p
        self.net = net
        self.scratch = scratch
        self.repo = self._model()
        self.origin = _Origin(net, self.repo)
        self.catalogue = scratch / "mirrors.yaml"
        self.catalogue.write_text(
            f"version: 1\nmirrors:\n  - name: origin\n    kind: hf\n    endpoint: {self.origin.url}\n"
        )
        self.probe_cache = scratch / "probe-cache"
        self.premade = scratch / "export" / "torrents"
        self.info_hashes: list[str] = []
        self.commands: dict[str, str] = {}

    def _model(self) -> BenchRepo:
        p = self.p
        name = f"swarm-{p.shards}x{p.shard_bytes}-seed18"
        out = self.b.data_dir / name
        stamp = self.b.data_dir / f"{name}.complete"
        if not stamp.exists():
            self.b.say(f"writing {p.shards} shards of {p.shard_bytes / 1e6:g} MB to {out}")
            write_shards(out, p.shards, p.shard_bytes, seed=18)
            stamp.write_text("written by python -m bench\n")
        return BenchRepo.scan(REPO_ID, out)

    def export_torrents(self) -> None:
        """The warm cases' torrents, as a team makes them: one pull (unmeasured, node 0, into
        a cache of its own), then ``modelget export --to DIR --torrents``; ``DIR/torrents`` is
        the ``--swarm-dir``. Each is checked against modelget's torrent writer run on the
        origin's own file (the same bytes: the info dict is deterministic)."""
        from modelget.swarm.policy import through_swarm
        from modelget.swarm.torrent import make_torrent, read_torrent, torrent_relpath

        cache, tree = self.scratch / "export-cache", self.scratch / "export"
        env = {**self.b.env, "MODELGET_CACHE_DIR": str(self.probe_cache)}
        for cmd in (
            [sys.executable, "-m", "modelget", "pull", self.repo.repo_id, "--mirrors",
             str(self.catalogue), "--cache-dir", str(cache), "--quiet"],
            [sys.executable, "-m", "modelget", "export", self.repo.repo_id, "--to", str(tree),
             "--torrents", "--cache-dir", str(cache)],
        ):  # fmt: skip
            done = subprocess.run(
                self.net.wrap(swarmnet.node_ns(0), cmd),
                env=env,
                capture_output=True,
                text=True,
                timeout=self.p.timeout_s,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[2:4])} failed: {done.stderr.strip()[-400:]}")
        self.premade = tree / "torrents"
        self.info_hashes = []
        for f in self.repo.files:
            if not through_swarm(f.size, f.sha256 if f.lfs else None):
                continue
            path = self.premade / torrent_relpath(f.sha256)
            exported = read_torrent(path)
            mine, _ = make_torrent(f.source)
            if path.read_bytes() != mine.to_bytes():
                raise RuntimeError(f"export --torrents wrote {path} unlike the torrent writer's")
            self.info_hashes.append(exported.info_hash)
        shutil.rmtree(cache, ignore_errors=True)

    def probe(self) -> None:
        """One probe before the cases (each node then reads a copy of its cache: the probe's
        sample is not part of any node's pull, nor of the origin's egress)."""
        shutil.rmtree(self.probe_cache, ignore_errors=True)
        env = {**self.b.env, "MODELGET_CACHE_DIR": str(self.probe_cache)}
        cmd = [sys.executable, "-m", "modelget", "probe", "--mirrors", str(self.catalogue)]
        done = subprocess.run(
            self.net.wrap(swarmnet.node_ns(0), cmd),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"modelget probe failed: {done.stderr.strip()[-400:]}")

    # --- one case ------------------------------------------------------------------------

    def run_case(
        self, case: str, nodes: int, swarm: str | None, extra_args: Sequence[str] = ()
    ) -> CaseRun:
        """``swarm``: None (plain pulls), ``warm`` (torrents pre-made), ``cold`` (none: the
        seeder publishes them; the tracker's whitelist follows the torrent dir) or
        ``cold-listed`` (the same, the hashes on the whitelist from the start)."""
        root = self.scratch / case
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        tracker: _NsTracker | None = None
        torrent_dir = root / "swarm-dir"
        procs: list[subprocess.Popen[bytes]] = []
        outs: list[tuple[IO[str], IO[str]]] = []
        try:
            extra: list[str] = []
            if swarm is not None:
                tdir = root / "tracker"
                tracker = _NsTracker(self.net, tdir).start()
                if swarm == "warm":
                    shutil.copytree(self.premade, torrent_dir)
                    tracker.allow(*self.info_hashes)
                else:
                    torrent_dir.mkdir()
                    tracker.follow(torrent_dir, interval_s=0.1)
                    if swarm == "cold-listed":
                        tracker.allow(*self.info_hashes)
                extra = [
                    "--swarm",
                    tracker.announce,
                    "--swarm-dir",
                    str(torrent_dir),
                    "--seed-for",
                    SEED_FOR,
                ]
            self.origin.ask("clear")
            cmds = []
            for i in range(nodes):
                node_dir = root / f"n{i}"
                shutil.copytree(self.probe_cache, node_dir / "state")
                cmd = [
                    sys.executable,
                    "-m",
                    "modelget",
                    "pull",
                    self.repo.repo_id,
                    "--mirrors",
                    str(self.catalogue),
                    "--cache-dir",
                    str(node_dir / "hub"),
                    "--local-dir",
                    str(node_dir / "model"),
                    "--json",
                    *extra,
                    *extra_args,
                ]
                env = {**self.b.env, "MODELGET_CACHE_DIR": str(node_dir / "state"), "RANK": str(i)}
                cmds.append((self.net.wrap(swarmnet.node_ns(i), cmd), env))
            self.commands.setdefault(case, self._display(cmds[-1][0], root, nodes))
            os.sync()
            load1 = os.getloadavg()[0]
            t0 = time.monotonic()
            for i, (cmd, env) in enumerate(cmds):
                out: IO[str] = (root / f"n{i}.out").open("w")
                err: IO[str] = (root / f"n{i}.err").open("w")
                outs.append((out, err))
                procs.append(
                    subprocess.Popen(
                        cmd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                )
            runs = [NodeRun(i) for i in range(nodes)]
            deadline = t0 + self.p.timeout_s
            while time.monotonic() < deadline:
                now = time.monotonic()
                for r in runs:
                    if r.done_s is None and self._landed(root / f"n{r.node}" / "model"):
                        r.done_s = now - t0
                if all(r.done_s is not None or procs[r.node].poll() is not None for r in runs):
                    break
                time.sleep(0.1)
            # Seeding ends by itself (no downloading peer left on the tracker, or --seed-for).
            for pr in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pr.wait(max(1.0, deadline + 150 - time.monotonic()))
            wall = time.monotonic() - t0
            for pr in procs:
                if pr.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pr.pid, signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        pr.wait(15)
            for fo, fe in outs:
                fo.close()
                fe.close()
            sent = self.origin.ask("sent")
            for r in runs:
                r.rc = procs[r.node].poll()
                r.result = modelget_result((root / f"n{r.node}.out").read_text(errors="replace"))
                r.stderr_tail = (root / f"n{r.node}.err").read_text(errors="replace")[-1500:]
                r.bad_files = self._check(root / f"n{r.node}" / "model")
            res = CaseRun(case, runs, int(sent["file"]), int(sent["requests"]), wall, load1)
            self._say(res)
            return res
        finally:
            for pr in procs:
                if pr.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pr.pid, signal.SIGKILL)
                    pr.wait()
            for out, err in outs:
                out.close()
                err.close()
            if tracker is not None:
                tracker.stop()
            if not os.environ.get("MODELGET_BENCH_KEEP"):
                shutil.rmtree(root, ignore_errors=True)

    def _landed(self, dest: Path) -> bool:
        try:
            return all((dest / f.path).stat().st_size == f.size for f in self.repo.files)
        except OSError:
            return False

    def _check(self, dest: Path) -> list[str]:
        bad = []
        for f in self.repo.files:
            p = dest / f.path
            if not p.exists():
                bad.append(f"{f.path}: missing")
            elif _sha256(p) != f.sha256:
                bad.append(f"{f.path}: sha256 differs")
        return bad

    def _display(self, cmd: list[str], root: Path, nodes: int) -> str:
        text = " ".join(cmd)
        text = text.replace(sys.executable, "python").replace(str(root), "$CASE")
        text = text.replace(str(self.scratch), "$SCRATCH")
        last = nodes - 1
        text = text.replace(f"{swarmnet.node_ns(last)} ", f"{swarmnet.PREFIX}n$i ")
        text = text.replace(f"$CASE/n{last}/", "$CASE/n$i/")
        if nodes == 1:
            return f"RANK=0 {text.replace('$i', '0')}"
        return f"# node i = 0..{last}, started at once:\nRANK=$i {text}"

    def _say(self, c: CaseRun) -> None:
        size = self.repo.size
        state = "ok" if c.ok else "FAILED"
        times = " ".join("n/a" if n.done_s is None else f"{n.done_s:.1f}" for n in c.nodes)
        self.b.say(
            f"  {SCENE} {c.case:<13} nodes done at [{times}] s; origin sent "
            f"{c.origin_file_bytes / size:.2f}× the model; load {c.load1:.2f}  {state}"
        )
        for n in c.nodes:
            if n.bad_files or n.rc != 0 or n.done_s is None or not _status_ok(n):
                self.b.say(
                    f"    node {n.node}: rc {n.rc}, result status {n.result.get('status')}, "
                    f"bad {n.bad_files}, stderr: {n.stderr_tail[-600:]!r}"
                )


# --- loopback BitTorrent throughput --------------------------------------------------------


@dataclass
class LoopbackRun:
    size: int
    total_s: float
    """From the peer's addTorrent to its last byte (tracker announce and handshakes included)."""
    steady_bps: float
    """Between 10 % and 90 % of the file."""
    ok: bool


def _loopback_tracker(root: Path) -> Tracker:
    """The testing fixture's opentracker on a free 127.0.0.1 port, checked to be alive a
    moment after it answered: another process (a test suite running at the same time) may
    have taken the same port, and then the one that answered was not ours."""
    for _ in range(3):
        shutil.rmtree(root, ignore_errors=True)
        tracker = Tracker(root).start()
        time.sleep(0.5)
        if tracker.proc is not None and tracker.proc.poll() is None:
            return tracker
        tracker.stop()
    raise RuntimeError("opentracker on 127.0.0.1 exited at once, three times")


def loopback_bt(scratch: Path, size: int) -> LoopbackRun:
    """1 seeder → 1 peer, each modelget's swarm aria2c (``SwarmNode``), on 127.0.0.1 with no
    shaping, a tracker (opentracker) on 127.0.0.1 too; the file on ``scratch`` (a tmpfs)."""
    from modelget.swarm.node import SwarmNode
    from modelget.swarm.torrent import make_torrent

    root = scratch / "loopback"
    shutil.rmtree(root, ignore_errors=True)
    (root / "seed").mkdir(parents=True)
    src = root / "blob"
    with src.open("wb") as fh:
        left = size
        block = os.urandom(4 * MiB)
        n = 0
        while left:
            # A different block each time (a repeated block would be a repeated piece).
            chunk = hashlib.sha256(n.to_bytes(8, "little")).digest() + block
            fh.write(chunk[: min(left, 4 * MiB)])
            left -= min(left, 4 * MiB)
            n += 1
    torrent, sha = make_torrent(src)
    os.replace(src, root / "seed" / torrent.name)
    seeder = SwarmNode(root / "seed", lpd=False, interface=None, port=None)
    peer = SwarmNode(root / "peer", lpd=False, interface=None, port=None)
    tracker: Tracker | None = None
    try:
        tracker = _loopback_tracker(root / "tracker")
        tracker.allow(torrent.info_hash)
        data = torrent.to_bytes(tracker.announce)
        seeder.start()
        peer.start()
        sgid = seeder.add_torrent(data, seed_only=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = seeder.status(sgid)
            if st.get("seeder") == "true" and st.get("status") == "active":
                break
            time.sleep(0.05)
        time.sleep(1.0)  # the seeder's first announce
        t0 = time.monotonic()
        gid = peer.add_torrent(data)
        marks: dict[int, float] = {}
        done = 0
        while time.monotonic() < t0 + 120 and tracker.proc is not None:
            if tracker.proc.poll() is not None:
                break  # the tracker died: the peer cannot find the seeder any more
            st = peer.status(gid)
            done = int(st.get("completedLength", 0))
            now = time.monotonic()
            for pct in (10, 90):
                if pct not in marks and done >= size * pct // 100:
                    marks[pct] = now
            if done >= size or st.get("status") == "error":
                break
            time.sleep(0.02)
        total = time.monotonic() - t0
        ok = done >= size and _sha256(root / "peer" / torrent.name) == sha
        steady = (
            0.8 * size / (marks[90] - marks[10])
            if 10 in marks and 90 in marks and marks[90] > marks[10]
            else float("nan")
        )
        return LoopbackRun(size, total, steady, ok)
    finally:
        peer.stop()
        seeder.stop()
        if tracker is not None:
            tracker.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- the scene -----------------------------------------------------------------------------


def _why_not() -> str:
    why = netns.available()
    if why is not None:
        return why
    if opentracker_path() is None:
        return "opentracker is not installed (apt-get install opentracker)"
    if shutil.which("aria2c") is None:
        return "aria2c is not installed"
    return ""


QUEUE: str | None = None
"""``--swarm-queue``: overrides the profile's ``queue`` (set by bench.run)."""


def s12(b: Bench) -> SceneResult:
    p = QUICK if b.profile.name == "quick" else FULL
    if QUEUE is not None:
        p = replace(p, queue=QUEUE)
    res = SceneResult(
        SCENE,
        f"Swarm mode: {p.nodes} nodes behind a {p.wan_bps * 8 / 1e6:g} Mbit/s uplink (issue 18)",
    )
    why = _why_not()
    if why:
        res.skipped = why
        return res
    scratch_base = Path("/dev/shm") if Path("/dev/shm").is_dir() else b.work
    scratch = scratch_base / f"modelget-bench-swarm-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cases: dict[str, CaseRun] = {}
    loops: list[LoopbackRun] = []
    net = swarmnet.SwarmNet(p.nodes, p.wan_bps, p.nic_bps, leaf=p.queue)
    try:
        with net:
            sc = SwarmScene(b, p, net, scratch)
            try:
                sc.probe()
                sc.export_torrents()
                plan = [
                    ("single", 1, None),
                    ("single-swarm", 1, "warm"),
                    (f"plain-{p.nodes}", p.nodes, None),
                    (f"warm-{p.nodes}", p.nodes, "warm"),
                    (f"cold-{p.nodes}", p.nodes, "cold"),
                    (f"cold-listed-{p.nodes}", p.nodes, "cold-listed"),
                ]
                for case, n, swarm in plan:
                    cases[case] = sc.run_case(case, n, swarm)
            finally:
                sc.origin.close()
            res.commands = dict(sc.commands)
            repo = sc.repo
            tc_lines = sorted(set(net.commands))
        for k in range(p.loopback_runs):
            lr = loopback_bt(scratch, p.loopback_bytes)
            loops.append(lr)
            b.say(
                f"  {SCENE} loopback BT #{k + 1}: {lr.size / 1e6:.0f} MB in {lr.total_s:.2f} s "
                f"({lr.size / lr.total_s / 1e6:.0f} MB/s incl. start-up, "
                f"{lr.steady_bps / 1e6:.0f} MB/s from 10 to 90 %)  {'ok' if lr.ok else 'FAILED'}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _record(b, cases)
    _report(res, p, repo, cases, loops, tc_lines)
    return res


def _record(b: Bench, cases: dict[str, CaseRun]) -> None:
    """Every node's run in the bench's raw results (bench/results/*.json)."""
    for c in cases.values():
        for n in c.nodes:
            b.runs.append(
                Run(
                    scene=SCENE,
                    case=c.case,
                    tool=f"modelget node {n.node}",
                    run=1,
                    wall_s=n.done_s if n.done_s is not None else float("nan"),
                    rc=n.rc if n.rc is not None else -1,
                    ok=c.ok,
                    cache="warm",
                    file_bytes=c.origin_file_bytes if n.node == 0 else 0,
                    load1=c.load1,
                    detail={
                        k: n.result.get(k)
                        for k in (
                            "status",
                            "swarm_role",
                            "bytes_fetched",
                            "bytes_from_peers",
                            "elapsed_s",
                        )
                        if k in n.result
                    },
                    error="; ".join(n.bad_files),
                )
            )


def _report(
    res: SceneResult,
    p: SwarmProfile,
    repo: BenchRepo,
    cases: dict[str, CaseRun],
    loops: list[LoopbackRun],
    tc_lines: list[str],
) -> None:
    size = repo.size
    big = sum(f.size for f in repo.lfs_files)
    t1 = cases["single"].slowest_s if cases["single"].ok else float("nan")
    res.setup = [
        f"- network (bench/swarmnet.py, the prototype's net.sh in Python): origin namespace "
        f"behind a {p.wan_bps * 8 / 1e6:g} Mbit/s WAN cap (htb on its egress), {p.nodes} node "
        f"namespaces with {p.nic_bps * 8 / 1e6:g} Mbit/s NICs each way, one bridge; MTU 1500; "
        + (
            "under each cap a bfifo of 10 ms of its rate (`--swarm-queue short`)"
            if p.queue == "short"
            else "under each cap htb's default 1000-packet FIFO, as the prototype "
            "(`--swarm-queue pfifo`)"
        ),
        f"- model `{repo.repo_id}`: {p.shards} safetensors shards of {p.shard_bytes / 1e6:g} MB "
        f"+ 3 small files, {fmt_bytes(size)} in all ({fmt_bytes(big)} through the swarm: files "
        "≥ 1 MiB with a sha256)",
        "- warm torrents: the `torrents/` of `modelget export --to DIR --torrents` after one "
        "unmeasured pull made before the cases (each checked byte for byte against modelget's "
        "torrent writer run on the origin's file); cold: an empty shared `--swarm-dir`",
        "- origin: the hub simulator (bench/swarm_origin.py), no CDN redirect; egress = its "
        "count of file body bytes sent",
        f"- tracker: opentracker on the bridge, whitelist mode; every node announces every {TRACKER_INTERVAL_S} s; "
        f"`--seed-for {SEED_FOR}` (nodes seed on while the tracker lists downloading peers)",
        "- node data on a tmpfs (/dev/shm), as in the prototype; each node its own cache, "
        "destination (`--local-dir`) and probe cache (a copy of one probe made before the cases)",
        f"- each case once (it is 1 to {p.nodes} pulls at once); the loopback BitTorrent "
        f"measure {p.loopback_runs} time(s)",
        "- T1 = the single node's plain `modelget pull`; \"done\" = the node's last file in "
        "place under its final name (polled every 0.1 s), from the common start",
    ]
    shown = [c for c in tc_lines if any(k in c for k in ("mgsw-origin ", "mgsw-n0 ", "s-n0 "))]
    res.setup.append(
        "\nShaping (the origin's WAN, node 0's NIC up and down; the other nodes alike):\n\n```sh\n"
        + "\n".join(shown)
        + "\n```"
    )
    rows = []
    for c in cases.values():
        done = [n.done_s for n in c.nodes if n.done_s is not None]
        peers_b = sum(int(n.result.get("bytes_from_peers") or 0) for n in c.nodes)
        fetched = sum(int(n.result.get("bytes_fetched") or 0) for n in c.nodes)
        rows.append(
            [
                c.case,
                str(len(c.nodes)),
                fmt_ratio(c.origin_file_bytes / size),
                fmt_s(c.fastest_s),
                fmt_s(c.slowest_s),
                fmt_ratio(ratio(c.slowest_s, t1)),
                fmt_ratio(ratio(sorted(done)[len(done) // 2], t1)) if done else "n/a",
                f"{peers_b / fetched:.0%}" if fetched else "—",
                "ok" if c.ok else _why_failed(c),
                f"{c.load1:.2f}",
            ]
        )
    res.tables.append(
        markdown_table(
            [
                "case",
                "nodes",
                "origin egress ÷ model",
                "first done",
                "last done",
                "last ÷ T1",
                "median ÷ T1",
                "bytes from peers",
                "files (sha256) and status",
                "load",
            ],
            rows,
            "lrrrrrrrll",
        )
    )
    per_node = [
        [c.case]
        + [
            ("n/a" if n.done_s is None else f"{n.done_s:.1f}")
            + (" (seed)" if n.result.get("swarm_role") == "seed" else "")
            for n in c.nodes
        ]
        for c in cases.values()
        if len(c.nodes) > 1
    ]
    if per_node:
        width = max(len(r) for r in per_node)
        per_node = [r + [""] * (width - len(r)) for r in per_node]
        res.tables.append(
            "Seconds from the common start to each node's last file:\n\n"
            + markdown_table(["case", *(f"n{i}" for i in range(width - 1))], per_node)
        )
    if loops:
        res.tables.append(
            markdown_table(
                [
                    "loopback BT (1 seeder → 1 peer, no shaping)",
                    "size",
                    "time",
                    "MB/s incl. start-up",
                    "MB/s 10–90 %",
                    "sha256",
                ],
                [
                    [
                        f"run {k + 1}",
                        fmt_bytes(lr.size),
                        fmt_s(lr.total_s),
                        f"{lr.size / lr.total_s / 1e6:.0f}",
                        f"{lr.steady_bps / 1e6:.0f}",
                        "ok" if lr.ok else "FAILED",
                    ]
                    for k, lr in enumerate(loops)
                ],
                "lrrrrl",
            )
        )
    res.notes.append(
        "`cold-listed` is a diagnostic: the cold case with the blobs' info-hashes on the "
        "tracker's whitelist from the start. In `cold` the whitelist follows the torrent "
        "directory (polled every 0.1 s, then SIGHUP), as an operator's hook would; an announce "
        "that arrives before the reload is refused, and aria2 announces again only after "
        f"`--bt-tracker-interval` ({TRACKER_INTERVAL_S} s). The difference between the two rows "
        "is that race."
    )
    warm, cold, plain = (cases.get(f"{k}-{p.nodes}") for k in ("warm", "cold", "plain"))
    heads = res.headlines
    targets: list[tuple[CaseRun | None, float, str]] = [(warm, 1.15, "warm"), (cold, 1.5, "cold")]
    for maybe, bound, label in targets:
        if maybe is None:
            continue
        c = maybe
        note = "" if c.ok else _why_failed(c)
        heads.append(
            Headline(
                SCENE,
                f"origin egress ÷ model, {p.nodes} nodes {label}",
                c.origin_file_bytes / size,
                fmt_ratio(c.origin_file_bytes / size),
                Target("<=", 1.05),
                note,
            )
        )
        slow = ratio(c.slowest_s, t1)
        heads.append(
            Headline(
                SCENE,
                f"slowest node ÷ single-node time, {p.nodes} nodes {label}",
                slow,
                fmt_ratio(slow),
                Target("<=", bound),
                f"T1 {fmt_s(t1)}, slowest {fmt_s(c.slowest_s)}" + (f"; {note}" if note else ""),
            )
        )
    if plain is not None:
        heads.append(
            Headline(
                SCENE,
                f"{p.nodes} plain pulls: origin egress ÷ model, slowest ÷ T1",
                plain.origin_file_bytes / size,
                f"{fmt_ratio(plain.origin_file_bytes / size)}, "
                f"{fmt_ratio(ratio(plain.slowest_s, t1))}",
                note="the baseline swarm mode replaces (no target)",
            )
        )
    if loops:
        good = [lr.steady_bps for lr in loops if lr.ok and not math.isnan(lr.steady_bps)]
        best = max(good) if good else float("nan")
        heads.append(
            Headline(
                SCENE,
                "aria2 BitTorrent 1 → 1 on loopback, uncapped",
                best,
                f"{best / 1e6:.0f} MB/s",
                None,
                f"best of {len(good)} good run(s) of {len(loops)}, 10–90 % of "
                f"{fmt_bytes(loops[0].size)}; reported, no target",
            )
        )


def _why_failed(c: CaseRun) -> str:
    for n in c.nodes:
        if n.done_s is None:
            return f"node {n.node} not done (rc {n.rc})"
        if n.bad_files:
            return f"node {n.node}: {n.bad_files[0]}"
        if n.rc != 0 or not _status_ok(n):
            return f"node {n.node}: rc {n.rc}, status {n.result.get('status')}"
    return "ok"
