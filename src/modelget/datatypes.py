"""Plain, frozen records shared by every stage. No I/O; imports nothing from modelget but
the exit codes of ``errors`` (a leaf as well)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeGuard
from urllib.parse import urlsplit

from modelget.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_VERIFY

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def is_commit(text: object) -> TypeGuard[str]:
    """A full git commit id: 40 lower-case hex digits, the whole text (as refs, records,
    lockfiles and the hubs' answers hold them; a trailing newline is not part of one)."""
    return isinstance(text, str) and _HEX40.fullmatch(text) is not None


def is_sha1_hex(text: object) -> TypeGuard[str]:
    """A git object id (a file's git blob SHA-1): 40 lower-case hex digits, the whole text."""
    return isinstance(text, str) and _HEX40.fullmatch(text) is not None


def is_sha256_hex(text: object) -> TypeGuard[str]:
    """A SHA-256 digest: 64 lower-case hex digits, the whole text."""
    return isinstance(text, str) and _HEX64.fullmatch(text) is not None


MirrorKind = Literal["hf", "modelscope", "cdn"]
MIRROR_KINDS: tuple[MirrorKind, ...] = ("hf", "modelscope", "cdn")

RepoType = Literal["model", "dataset", "space"]
"""The kind of Hub repository (``--repo-type``, as ``hf download``); ``model`` by default."""
REPO_TYPES: tuple[RepoType, ...] = ("model", "dataset", "space")
REPO_URL_PREFIXES: Mapping[RepoType, str] = MappingProxyType(
    {"model": "", "dataset": "datasets/", "space": "spaces/"}
)
"""What goes before a repo id in a URL path (huggingface_hub's ``REPO_TYPES_URL_PREFIXES``):
the Hub's ``/datasets/{repo}/resolve/...``, a cdn tree's ``datasets/{repo}/refs.json``."""

MS_REPO_TYPES: tuple[RepoType, ...] = ("model", "dataset")
"""The repo types ModelScope serves downloads of: its studios (spaces) are apps with no
download API (its client's ``download`` takes ``--repo-type model|dataset`` only)."""

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Mirror:
    """One entry of the catalogue: a place that serves model files over one protocol.

    ``token_env`` names the environment variable that holds this mirror's token; the token is
    sent to ``host`` (the endpoint's host) and to no other host. ``use_hf_login`` additionally
    lets the huggingface_hub login (``$HF_HOME/token``) stand in when that variable is unset;
    the bundled catalogue sets it only for huggingface.co.
    """

    name: str
    kind: MirrorKind
    endpoint: str
    token_env: str | None = None
    use_hf_login: bool = False
    enabled: bool = True
    weight: float = 1.0
    max_connections: int | None = None
    """This mirror's own cap on connections (None: adaptive, up to ``--connections``)."""
    id_map: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    source: str = "<builtin>"
    line: int | None = None
    verify_tls: bool = True
    """Check the endpoint's TLS certificate (the default). Not a catalogue field: only
    ``--insecure`` (``verify_tls=False`` in the API) turns it off, for one command."""
    hf_token: str | None = field(default=None, repr=False, compare=False, hash=False)
    """The ``--token`` of this command (``token=`` in the API), standing in for ``HF_TOKEN``
    wherever this entry would read that variable (see ``auth.mirror_token``). Not a catalogue
    field; set only on the entries that would (``auth.with_token``); never in a repr."""

    @property
    def host(self) -> str:
        """The host (and port, if any) that may receive this mirror's token."""
        return urlsplit(self.endpoint).netloc.lower()

    def map_repo_id(self, repo_id: str) -> str:
        """The id of ``repo_id`` on this mirror.

        ``id_map`` keys are exact ids or glob patterns over the whole id (exact ids win, then
        patterns in file order); a value ``ORG/*`` keeps the name and swaps the organisation.
        """
        if repo_id in self.id_map:
            return self.id_map[repo_id]
        for pattern, target in self.id_map.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(repo_id, pattern):
                if target.endswith("/*"):
                    return target[:-2] + "/" + repo_id.rsplit("/", 1)[-1]
                return target
        return repo_id


@dataclass(frozen=True)
class Catalogue:
    """The validated list of mirrors, in catalogue order (the tie-breaker for ranking)."""

    mirrors: tuple[Mirror, ...]
    version: int
    sources: tuple[str, ...]

    @property
    def enabled(self) -> tuple[Mirror, ...]:
        return tuple(m for m in self.mirrors if m.enabled)

    def get(self, name: str) -> Mirror:
        for m in self.mirrors:
            if m.name == name:
                return m
        raise KeyError(name)


# --- Resolve and plan (catalogue → probe/rank → sources → plan) -----------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of a repo at one commit, as a mirror describes it.

    ``sha256`` is the content digest (LFS files on HF, every file on ModelScope and cdn);
    ``git_sha1`` is the git blob id (``sha1(b"blob <size>\\0" + data)``), the only digest HF
    gives for small non-LFS files. At least one of the two is set for a verifiable file.
    """

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None
    lfs: bool = False

    @property
    def digest(self) -> tuple[str, str]:
        """The strongest digest known: ("sha256", hex) or ("git-sha1", hex)."""
        if self.sha256:
            return ("sha256", self.sha256)
        if self.git_sha1:
            return ("git-sha1", self.git_sha1)
        return ("none", "")


@dataclass(frozen=True)
class Manifest:
    """What one mirror says a repo holds at a revision: the commit and every file."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[FileEntry, ...]
    mirror: str
    mirror_repo_id: str = ""
    gated: bool = False
    repo_type: RepoType = "model"

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}


@dataclass(frozen=True)
class ProbeResult:
    """One mirror's measured health. Durations in seconds, throughput in bytes/second.

    ``status`` is one of: ``ok``, ``no-repo`` (alive, repo missing), ``auth`` (repo needs a
    token we do not have), ``rate-limited``, ``error`` (HTTP/protocol failure), ``down``
    (no connection or timeout), ``disabled``.
    """

    mirror: str
    kind: MirrorKind
    endpoint: str
    status: str
    connect_s: float | None = None
    ttfb_s: float | None = None
    throughput_bps: float | None = None
    has_repo: bool | None = None
    error: str | None = None
    probed_at: float = 0.0
    elapsed_s: float = 0.0

    @property
    def alive(self) -> bool:
        return self.status not in ("down", "disabled", "error")


@dataclass(frozen=True)
class RankedMirror:
    """A mirror with its place in the ranking (1 = best) and the numbers behind it."""

    mirror: Mirror
    rank: int
    probe: ProbeResult | None
    score: float | None
    usable: bool


@dataclass(frozen=True)
class FileSource:
    """Where one file can be fetched: the mirror and its URL for that file."""

    mirror: str
    url: str


@dataclass(frozen=True)
class Disagreement:
    """A mirror whose listing of a file differs from the copy used: never used for that file.

    ``standby``: the mirrors tied (no copy had more mirrors behind it than every other), so
    this mirror's copy is kept in reserve (``PlanItem.alternatives``) and the bytes decide:
    it is tried if the chosen copy cannot be fetched and verified. After a pull, a
    disagreement the bytes settled has ``standby`` False and a reason naming the verified
    copy; one still ``standby`` was never settled (the file failed with every copy)."""

    mirror: str
    path: str
    reason: str
    standby: bool = False


@dataclass(frozen=True)
class Alternative:
    """Another copy of a file (its entry as some mirrors list it, and those mirrors' URLs),
    kept when the mirrors tie on the file: tried, in order, when the chosen copy fails."""

    entry: FileEntry
    sources: tuple[FileSource, ...]


@dataclass(frozen=True)
class PlanItem:
    entry: FileEntry
    sources: tuple[FileSource, ...]
    present: bool
    alternatives: tuple[Alternative, ...] = ()
    """Other copies to try, in order, when ``entry`` cannot be fetched from ``sources`` and
    verified (only where the mirrors tie on this file; see ``Disagreement.standby``)."""


@dataclass(frozen=True)
class Plan:
    """What a pull will do: files in order, each with its ordered sources; totals; space."""

    repo_id: str
    revision: str
    commit: str
    manifest_mirror: str
    items: tuple[PlanItem, ...]
    total_bytes: int
    fetch_bytes: int
    required_bytes: int
    free_bytes: int | None
    eta_s: float | None
    disagreements: tuple[Disagreement, ...] = ()
    excluded: tuple[str, ...] = ()
    repo_type: RepoType = "model"

    @property
    def to_fetch(self) -> tuple[PlanItem, ...]:
        return tuple(i for i in self.items if not i.present)


# --- Pull outcome ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file. ``status``: ``fetched``, ``reused`` (already complete
    here, or fetched meanwhile by another process) or ``failed``."""

    path: str
    size: int
    status: str
    bytes_by_mirror: Mapping[str, int] = field(default_factory=dict, hash=False)
    seconds: float = 0.0
    error: str | None = None
    bad_mirrors: tuple[str, ...] = ()
    bytes_from_peers: int = 0
    """Bytes other nodes of a swarm brought (``pull --swarm``); not in ``bytes_by_mirror``."""


@dataclass(frozen=True)
class PullResult:
    """The result of a pull: where the model is, what moved, from where, how fast.

    ``status``: ``ok`` (every file in place and verified), ``partial`` (some failed) or
    ``error`` (none could be placed)."""

    repo_id: str
    revision: str
    commit: str
    path: str
    status: str
    engine: str
    files: tuple[FileOutcome, ...]
    bytes_fetched: int
    bytes_by_mirror: Mapping[str, int] = field(default_factory=dict, hash=False)
    elapsed_s: float = 0.0
    plan_s: float = 0.0
    transfer_s: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict, hash=False)
    """Seconds per stage (``probe``, ``plan``, ``engine_start``, ``first_byte``, ``transfer``,
    ``verify_tail``, ``layout``, ``total``; those measured), for ``--json`` and ``-v``."""
    connections: Mapping[str, int] = field(default_factory=dict, hash=False)
    """The most connections the scheduler gave each mirror at once during the pull."""
    disagreements: tuple[Disagreement, ...] = ()
    """Every mirror whose listing of a planned file differed from the copy that was used
    (outvoted by the others, or proved wrong by the verified bytes where the mirrors tied),
    with the reason; ``standby`` ones were never settled (that file failed)."""
    repo_type: RepoType = "model"
    bytes_from_mirrors: int = 0
    """Of ``bytes_fetched``, those the mirrors sent (the sum of ``bytes_by_mirror``)."""
    bytes_from_peers: int = 0
    """Of ``bytes_fetched``, those a swarm's other nodes sent (``pull --swarm``; else 0)."""
    swarm_role: str | None = None
    """``seed`` or ``peer`` in a swarm pull (``pull --swarm``); None otherwise."""

    @property
    def failed(self) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if f.status == "failed")

    @property
    def exit_code(self) -> int:
        """The process exit code this result stands for: 0 ok, 3 partial, 4 when every failed
        file failed verification (no good mirror left for it), else 1."""
        if self.status == "ok":
            return EXIT_OK
        if self.status == "partial":
            return EXIT_PARTIAL
        return EXIT_VERIFY if all(f.bad_mirrors for f in self.failed) else EXIT_ERROR
