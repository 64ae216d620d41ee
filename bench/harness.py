"""The bench's working state: data sets, sites, the shaped link, and measured runs.

A :class:`Bench` prepares the two models once (the seeded synthetic checkpoint in the data
directory, reused across runs, and the real MiniLM fixture), starts sites on demand, and
measures one tool run at a time with :meth:`Bench.measure`: destination directories are
removed and the page cache written back (``sync``) before each run, the source files are
evicted from the page cache for "cold" runs (``posix_fadvise(DONTNEED)`` on those files only,
so other processes' cache is left alone), and the sites' access logs give the bytes each
run made them send.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import peers, procs
from bench.netns import ShapedLink
from bench.sites import BenchRepo, Site, link_blobs
from modelget.testing import fixtures

SYNTH_REPO_ID = "bench/synthetic-llama"
HALF_REPO_ID = "bench/synthetic-llama-half"
SHARDS_REPO_ID = "bench/eight-shards"


@dataclass(frozen=True)
class Profile:
    """Sizes, caps and run counts of one kind of bench run (rates in bytes/s)."""

    name: str
    runs: int
    big_gb: float
    shard_gb: float
    half_shards: int
    s1_big_conn: int
    s1_big_link: int
    s1_small_conn: int
    s1_small_link: int
    s3_mirror: int
    s4_link: int
    s5_link: int
    shards: int
    """S9/S10/S8: ``shards`` safetensors shards of ``shard_bytes`` each, plus 3 small files."""
    shard_bytes: int
    s9_conn: int
    s9_link: int
    s10_fast_conn: int
    s10_fast_uplink: int
    s10_slow_conn: int
    s10_slow_uplink: int
    s8_connections: int


FULL = Profile(
    name="full",
    runs=3,
    big_gb=4.0,
    shard_gb=1.0,
    half_shards=2,
    s1_big_conn=40_000_000,
    s1_big_link=400_000_000,
    s1_small_conn=4_000_000,
    s1_small_link=400_000_000,
    s3_mirror=150_000_000,
    s4_link=200_000_000,
    s5_link=200_000_000,
    shards=8,
    shard_bytes=64_000_000,
    s9_conn=4_000_000,
    s9_link=400_000_000,
    s10_fast_conn=4_000_000,
    s10_fast_uplink=120_000_000,
    s10_slow_conn=1_000_000,
    s10_slow_uplink=40_000_000,
    s8_connections=64,
)
QUICK = Profile(
    name="quick",
    runs=1,
    big_gb=0.2,
    shard_gb=0.05,
    half_shards=2,
    s1_big_conn=10_000_000,
    s1_big_link=100_000_000,
    s1_small_conn=20_000_000,
    s1_small_link=100_000_000,
    s3_mirror=40_000_000,
    s4_link=50_000_000,
    s5_link=50_000_000,
    shards=8,
    shard_bytes=16_000_000,
    s9_conn=4_000_000,
    s9_link=100_000_000,
    s10_fast_conn=4_000_000,
    s10_fast_uplink=40_000_000,
    s10_slow_conn=1_000_000,
    s10_slow_uplink=13_000_000,
    s8_connections=64,
)


@dataclass
class Run:
    """One measured run of one tool."""

    scene: str
    case: str
    tool: str
    run: int
    wall_s: float
    rc: int
    ok: bool
    cache: str
    file_bytes: int = 0
    """File body bytes the sites' nginx logged as sent (blobs and resolve responses)."""
    api_bytes: int = 0
    link_bytes: int = 0
    """Bytes that crossed the shaped link (shaped runs only; 0 otherwise)."""
    requests: int = 0
    peak_rss: dict[str, int] = field(default_factory=dict)
    load1: float = math.nan
    killed_at_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def write_shards(out: Path, count: int, shard_bytes: int, *, seed: int = 0) -> None:
    """``count`` safetensors shards of exactly ``shard_bytes`` each (one seeded U8 tensor per
    shard, the header padded with spaces as the format allows), their index, a config.json and
    a generation_config.json: the "8 × 64 MB shards + 3 small files" model of S9/S10.
    Deterministic: the same arguments give the same bytes."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    names = [f"model-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]
    keep = {*names, "model.safetensors.index.json", "config.json", "generation_config.json"}
    for old in out.iterdir():
        if old.name not in keep:
            old.unlink()
    weight_map: dict[str, str] = {}
    header_room = 256
    for k, name in enumerate(names):
        tensor = f"layers.{k}.weight"
        data_len = shard_bytes - 8 - header_room
        if data_len <= 0:
            raise ValueError(f"shard_bytes must exceed {8 + header_room}")
        header = {tensor: {"dtype": "U8", "shape": [data_len], "data_offsets": [0, data_len]}}
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > header_room:
            raise ValueError("safetensors header too long")
        rng = np.random.Generator(np.random.PCG64([seed, k]))
        with (out / name).open("wb") as fh:
            fh.write(header_room.to_bytes(8, "little") + raw.ljust(header_room, b" "))
            left = data_len
            while left:
                n = min(left, 4 * 1024 * 1024)
                fh.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
                left -= n
        weight_map[tensor] = name
    index = {
        "metadata": {"total_size": count * (shard_bytes - 8 - header_room)},
        "weight_map": weight_map,
    }
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(
        json.dumps(
            {"architectures": ["BenchShards"], "model_type": "bench", "num_shards": count}, indent=2
        )
        + "\n"
    )
    (out / "generation_config.json").write_text(json.dumps({"do_sample": False}, indent=2) + "\n")


def _evict(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def modelget_result(stdout: str) -> dict[str, Any]:
    """The ``result`` object of ``modelget pull --json`` (empty when there is none)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"event": "result"' in line:
            with contextlib.suppress(ValueError):
                obj: dict[str, Any] = json.loads(line)
                return obj
    return {}


def complete(out_root: Path, repo: BenchRepo) -> str:
    """Empty when every file of ``repo`` is under ``out_root`` with its size; else what is
    wrong (size only: the peers verify nothing, modelget verifies itself)."""
    for f in repo.files:
        p = out_root / f.path
        try:
            size = p.stat().st_size
        except OSError:
            return f"{f.path} missing"
        if size != f.size:
            return f"{f.path} has {size} bytes, not {f.size}"
    return ""


class Bench:
    """Data, directories and measurement for one bench run."""

    def __init__(
        self,
        profile: Profile,
        data_dir: Path,
        work_dir: Path,
        *,
        link: ShapedLink | None,
        say: Callable[[str], None],
    ) -> None:
        self.profile = profile
        self.data_dir = data_dir
        self.work = work_dir
        self.link = link
        self.say = say
        self.runs: list[Run] = []
        self.work.mkdir(parents=True, exist_ok=True)
        self.www = self.data_dir / "www"
        self.big = self._synthetic()
        self.half = self._half()
        self.small = BenchRepo.scan(
            fixtures.MINILM_REPO_ID, fixtures.minilm_dir(), fixtures.MINILM_REVISION
        )
        self.shards = self._shards()
        link_blobs(self.www, [self.big, self.half, self.small, self.shards])
        self.hf_transfer_missing = peers.hf_transfer_missing()
        if self.hf_transfer_missing is not None:
            say(f"note: the hf_transfer peer is skipped in every scene: {self.hf_transfer_missing}")
        self.env = peers.base_env(self.work)
        peers.precompile()

    # --- data ---

    def _synthetic(self) -> BenchRepo:
        p = self.profile
        name = f"synthetic-{p.big_gb:g}GB-shard{p.shard_gb:g}GB-seed0"
        out = self.data_dir / name
        stamp = self.data_dir / f"{name}.complete"
        if not stamp.exists():
            self.say(f"writing the seeded synthetic checkpoint ({p.big_gb:g} GB) to {out}")
            t0 = time.perf_counter()
            fixtures.make_synthetic(
                out, int(p.big_gb * 1e9), shard_bytes=int(p.shard_gb * 1e9), seed=0
            )
            stamp.write_text("written by python -m bench\n")
            self.say(f"  done in {time.perf_counter() - t0:.1f} s")
        self.say(f"hashing {out} (once per bench run)")
        return BenchRepo.scan(SYNTH_REPO_ID, out)

    def _shards(self) -> BenchRepo:
        p = self.profile
        name = f"shards-{p.shards}x{p.shard_bytes}-seed0"
        out = self.data_dir / name
        stamp = self.data_dir / f"{name}.complete"
        if not stamp.exists():
            self.say(f"writing {p.shards} shards of {p.shard_bytes / 1e6:g} MB to {out}")
            write_shards(out, p.shards, p.shard_bytes, seed=0)
            stamp.write_text("written by python -m bench\n")
        return BenchRepo.scan(SHARDS_REPO_ID, out)

    def _half(self) -> BenchRepo:
        """The first ``half_shards`` shards and config.json as a repo of their own
        (hardlinks), for the scenes that do not need the whole checkpoint."""
        out = self.big.directory.parent / (self.big.directory.name + "-half")
        wanted = [f for f in self.big.files if f.path == "config.json"]
        wanted += sorted(
            (f for f in self.big.files if f.path.startswith("model-0")), key=lambda f: f.path
        )[: self.profile.half_shards]
        out.mkdir(parents=True, exist_ok=True)
        names = {f.path for f in wanted}
        for old in out.iterdir():
            if old.name not in names:
                old.unlink()
        for f in wanted:
            dest = out / f.path
            if dest.exists() and os.path.samefile(dest, f.source):
                continue
            dest.unlink(missing_ok=True)
            os.link(f.source, dest)
        return BenchRepo.scan(HALF_REPO_ID, out)

    # --- sites ---

    def site(
        self,
        name: str,
        repos: Sequence[BenchRepo],
        *,
        shaped: bool,
        limit_rate: int | None = None,
    ) -> Site:
        if shaped and self.link is None:
            raise RuntimeError("this scene needs the shaped link (root, iproute2)")
        extra = [self.link.host_ip] if self.link is not None else []
        host = self.link.host_ip if shaped and self.link is not None else "127.0.0.1"
        site = Site(name, self.www, repos, host=host, extra_listen=extra, limit_rate=limit_rate)
        problem = site.check_topology(repos[0])
        if problem:
            site.close()
            raise RuntimeError(f"site {name} is not built like the Hub: {problem}")
        return site

    @contextlib.contextmanager
    def sites(
        self,
        names: Sequence[str],
        repos: Sequence[BenchRepo],
        *,
        shaped: bool,
        limit_rate: int | None = None,
    ) -> Iterator[list[Site]]:
        made: list[Site] = []
        try:
            made.extend(self.site(n, repos, shaped=shaped, limit_rate=limit_rate) for n in names)
            yield made
        finally:
            for s in made:
                s.close()

    # --- directories ---

    def fresh(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def clean(self) -> None:
        """Remove every run's output (keeps the data sets)."""
        for child in self.work.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)

    # --- measuring ---

    def measure(
        self,
        scene: str,
        case: str,
        run: int,
        inv: peers.Invocation,
        sites: Sequence[Site],
        repo: BenchRepo,
        *,
        shaped: bool,
        cold: bool = False,
        kill_after_s: float | None = None,
        during: Callable[[], None] | None = None,
        during_at_s: float | None = None,
        expect_complete: bool = True,
    ) -> Run:
        """Run one invocation and record it (see the module docstring for the rules)."""
        for path, text in inv.setup_files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        os.sync()
        if cold:
            _evict([f.source for f in repo.files])
        for s in sites:
            s.clear_log()
        cmd = self.link.wrap(inv.cmd) if shaped and self.link is not None else inv.cmd
        timer = None
        if during is not None and during_at_s is not None:
            import threading

            timer = threading.Timer(during_at_s, during)
            timer.daemon = True
            timer.start()
        tx0 = self.link.tx_bytes() if shaped and self.link is not None else 0
        m = procs.run(cmd, env=inv.env, kill_after_s=kill_after_s)
        if timer is not None:
            timer.cancel()
        link_b = 0
        if shaped and self.link is not None:
            time.sleep(0.05)  # what was on the wire when the client died
            link_b = self.link.tx_bytes() - tx0
        file_b = api_b = reqs = 0
        for s in sites:
            if s.dead:
                continue
            sent = s.bytes_sent()
            file_b += sent["file"]
            api_b += sent["api"]
            reqs += sent["requests"]
        detail: dict[str, Any] = {}
        if inv.tool.startswith("modelget.pull"):
            detail["stdout_tail"] = m.stdout[-2000:]
        elif inv.tool.startswith("modelget"):
            res = modelget_result(m.stdout)
            for key in ("plan_s", "transfer_s", "elapsed_s", "bytes_fetched", "engine", "status"):
                if key in res:
                    detail[key] = res[key]
        error = ""
        if m.killed_at_s is None:
            if m.rc != 0:
                error = f"exit code {m.rc}: {m.stderr.strip()[-400:]}"
            elif expect_complete:
                error = complete(inv.out_root, repo)
        ok = not error
        r = Run(
            scene=scene,
            case=case,
            tool=inv.tool,
            run=run,
            wall_s=m.wall_s,
            rc=m.rc,
            ok=ok,
            cache="cold" if cold else "warm",
            file_bytes=file_b,
            api_bytes=api_b,
            link_bytes=link_b,
            requests=reqs,
            peak_rss=m.peak_rss,
            load1=m.load1,
            killed_at_s=m.killed_at_s,
            detail=detail,
            error=error,
        )
        self.runs.append(r)
        state = "killed" if m.killed_at_s is not None else ("ok" if ok else f"FAILED ({error})")
        over_link = f" ({link_b / 1e6:.1f} MB over the link)" if shaped else ""
        self.say(
            f"  {scene} {case} #{run} {inv.tool:<22} {m.wall_s:7.2f} s  "
            f"{file_b / 1e6:9.1f} MB sent{over_link}  load {m.load1:.2f}  {state}"
        )
        return r

    def runs_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.runs]
