"""The command lines of modelget and its peers, exactly as the benchmarks run them.

Every tool downloads the same files from the same site (hub API + redirect to the nginx CDN):

* ``modelget pull`` (aria2 or httpx engine), into a fresh Hugging Face cache;
* ``huggingface_hub.snapshot_download`` (the real library, HF_ENDPOINT at the site, Xet off),
  into a fresh cache: one connection per file, 8 files at a time (its defaults);
* aria2c as hfd.sh runs it: ``-x4 -s4 -k1M -j5 -c --file-allocation=none`` over an input file
  of the files' resolve URLs (hfd.sh's defaults THREADS=4, CONCURRENT=5);
* raw aria2c with 16 connections per file and 16 files at a time (``-x16 -s16 -k1M -j16``),
  the mission's yardstick;
* hf_transfer (the Rust downloader behind ``HF_HUB_ENABLE_HF_TRANSFER``), called directly by
  ``bench/hf_transfer_driver.py``: 8 files at a time, 16 chunks of 10 MiB per file, the
  redirect resolved first as huggingface_hub does (skipped with a note when not installed);
* curl, one invocation fetching the files one after the other (``-L``, connection reused).

The peers verify nothing; modelget verifies every byte (sha256 / git blob sha1) and lays the
files out in the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import hf_transfer_driver
from bench.sites import BenchRepo, Site

HF_HUB_SNIPPET = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])"
)


@dataclass
class Invocation:
    """A command to run, its environment changes, and where its files land."""

    tool: str
    cmd: list[str]
    env: dict[str, str]
    out_root: Path
    """The directory holding the repo's files by their repo paths, once it is done."""
    setup_files: dict[Path, str] = field(default_factory=dict)
    """Files written before the clock starts (aria2c input files, catalogues)."""

    def display(self) -> str:
        """The command line as recorded in the report, with the environment variables that
        matter for this tool first (``COMMON_ENV`` applies to all and is stated once)."""
        shown = {k: v for k, v in self.env.items() if k in _SHOWN_ENV}
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(shown.items()))
        cmd = ["python", *self.cmd[1:]] if self.cmd[0] == sys.executable else self.cmd
        return (env + " " if env else "") + shlex.join(cmd)


_SHOWN_ENV = frozenset({"HF_ENDPOINT", "MODELGET_PROBE_TTL", "MODELGET_CACHE_DIR"})
COMMON_ENV = (
    "every tool runs with `HF_HOME=$WORK/hf-home HF_HUB_DISABLE_TELEMETRY=1 "
    "HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_XET=1`, no token and no proxy variables; "
    "`python` is the venv's interpreter with this checkout's `src` first on `PYTHONPATH`, its "
    "bytecode written before the runs as `pip install` writes it (`PYTHONDONTWRITEBYTECODE` unset)"
)


def base_env(home: Path) -> dict[str, str]:
    """The environment every tool gets: ours, minus tokens and proxies, HF home private."""
    # PYTHONDONTWRITEBYTECODE goes too: with it, an editable checkout's modules are compiled
    # from source at every start (measured 0.05-0.1 s of a modelget run), which no pip-installed
    # tool pays (pip writes the bytecode at install). ``precompile`` writes ours first.
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "HF_TOKEN",
            "HF_ENDPOINT",
            "HUGGING_FACE_HUB_TOKEN",
            "MODELSCOPE_API_TOKEN",
            "PYTHONDONTWRITEBYTECODE",
        )
        and not k.lower().endswith("_proxy")
    }
    env.update(
        {
            "HF_HOME": str(home / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_XET": "1",
            "MODELGET_CONFIG_DIR": str(home / "config"),
        }
    )
    return env


def precompile() -> None:
    """Write the bytecode of the modelget being measured, as ``pip install`` does for every
    installed tool: a checkout used in place would otherwise be timed compiling itself."""
    import compileall

    import modelget

    compileall.compile_dir(Path(modelget.__file__).parent, quiet=1)


def modelget(
    repo: BenchRepo,
    catalogue: Path,
    dest: Path,
    *,
    engine: str,
    env: Mapping[str, str],
    probe_cache: Path,
    extra: Sequence[str] = (),
) -> Invocation:
    cmd = [
        sys.executable, "-m", "modelget", "pull", repo.repo_id,
        "--mirrors", str(catalogue), "--cache-dir", str(dest), "--engine", engine, "--json",
        *extra,
    ]  # fmt: skip
    e = {**env, "MODELGET_CACHE_DIR": str(probe_cache)}
    return Invocation(f"modelget ({engine})", cmd, e, repo.snapshot(dest))


def hf_hub(repo: BenchRepo, site: Site, dest: Path, *, env: Mapping[str, str]) -> Invocation:
    cmd = [sys.executable, "-c", HF_HUB_SNIPPET, repo.repo_id, str(dest)]
    e = {**env, "HF_ENDPOINT": site.url}
    return Invocation(HF_HUB_LABEL, cmd, e, repo.snapshot(dest))


def _aria2_input(repo: BenchRepo, site: Site, dest: Path) -> str:
    lines = []
    for f in repo.files:
        path = Path(f.path)
        lines += [
            site.resolve_url(repo, f.path),
            f"  dir={dest / path.parent}",
            f"  out={path.name}",
        ]
    return "\n".join(lines) + "\n"


HFD_LABEL = "aria2c hfd.sh-style"
RAW_ARIA2C_LABEL = "aria2c -x16 (raw)"
HF_TRANSFER_LABEL = "hf_transfer"
HF_HUB_LABEL = "huggingface_hub"
CURL_LABEL = "curl (sequential)"
DRIVER = Path(__file__).resolve().parent / "hf_transfer_driver.py"


def aria2c(
    repo: BenchRepo,
    site: Site,
    dest: Path,
    *,
    connections: int,
    env: Mapping[str, str],
    input_file: Path,
    label: str,
    files_at_once: int = 5,
) -> Invocation:
    """hfd.sh's aria2c command (``connections=4``, 5 files at once), or raw aria2c with more
    connections (the raw peer: ``connections=16, files_at_once=16``)."""
    cmd = [
        "aria2c", "--no-conf", "--console-log-level=error", "--summary-interval=0",
        "--file-allocation=none", f"-x{connections}", f"-s{connections}", "-k1M",
        f"-j{files_at_once}", "-c", "-i", str(input_file),
    ]  # fmt: skip
    return Invocation(label, cmd, dict(env), dest, {input_file: _aria2_input(repo, site, dest)})


def raw_aria2c(
    repo: BenchRepo, site: Site, dest: Path, *, env: Mapping[str, str], input_file: Path
) -> Invocation:
    """The mission's yardstick: ``aria2c -x16 -s16 -k1M -j16``."""
    return aria2c(
        repo, site, dest, connections=16, env=env, input_file=input_file,
        label=RAW_ARIA2C_LABEL, files_at_once=16,
    )  # fmt: skip


def hf_transfer_missing() -> str | None:
    """None when ``hf_transfer`` can be imported by this interpreter, else why not (the
    bench then leaves that peer out and says so)."""
    if importlib.util.find_spec("hf_transfer") is None:
        return (
            f"hf_transfer is not installed in {sys.executable} "
            "(`pip install hf-transfer`, or `pip install -e '.[bench]'`)"
        )
    return None


def hf_transfer_listing(repo: BenchRepo, site: Site, dest: Path) -> str:
    """The driver's input: every file's resolve URL and where it goes."""
    entries = [
        {"url": site.resolve_url(repo, f.path), "path": str(dest / f.path)} for f in repo.files
    ]
    return json.dumps(entries, indent=1) + "\n"


def hf_transfer(
    repo: BenchRepo, site: Site, dest: Path, *, env: Mapping[str, str], input_file: Path
) -> Invocation:
    """hf_transfer through ``bench/hf_transfer_driver.py`` (see its docstring)."""
    cmd = [sys.executable, str(DRIVER), str(input_file)]
    return Invocation(
        HF_TRANSFER_LABEL, cmd, dict(env), dest, {input_file: hf_transfer_listing(repo, site, dest)}
    )


def curl(repo: BenchRepo, site: Site, dest: Path, *, env: Mapping[str, str]) -> Invocation:
    cmd = ["curl", "-fsS", "-L", "--create-dirs"]
    for f in repo.files:
        cmd += ["-o", str(dest / f.path), site.resolve_url(repo, f.path)]
    return Invocation(CURL_LABEL, cmd, dict(env), dest)


def short_display(inv: Invocation, repo: BenchRepo) -> str:
    """A shorter command line for the report: long file lists elided."""
    if inv.cmd and inv.cmd[0] == "curl":
        n = len(repo.files)
        return (
            "curl -fsS -L --create-dirs -o $DEST/FILE1 $SITE/REPO/resolve/main/FILE1 "
            f"-o $DEST/FILE2 … ({n} files, one after the other)"
        )
    if inv.cmd and inv.cmd[0] == "aria2c":
        return (
            inv.display() + "\n# input file: per file `$SITE/REPO/resolve/main/FILE` then "
            "`  dir=$DEST/…` and `  out=NAME` lines"
        )
    if inv.tool == HF_TRANSFER_LABEL and len(inv.cmd) == 3:
        return (
            f"python bench/hf_transfer_driver.py {inv.cmd[2]}\n"
            "# per file, 8 files at a time: HEAD $SITE/REPO/resolve/main/FILE (redirect not "
            "followed), then hf_transfer.download(url=LOCATION, filename=$DEST/FILE, "
            f"max_files={hf_transfer_driver.MAX_FILES}, chunk_size={hf_transfer_driver.CHUNK_SIZE}, "
            f"parallel_failures={hf_transfer_driver.PARALLEL_FAILURES}, "
            f"max_retries={hf_transfer_driver.MAX_RETRIES})"
        )
    return inv.display()
