"""The :class:`HubSimulator` itself: its repositories, URLs (signed CDN URLs included),
faults, the ``tamper`` hook, the request log's queries and the listeners' start and stop."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from modelget.datatypes import REPO_TYPES, REPO_URL_PREFIXES, RepoType, is_commit
from modelget.testing.faults import Fault, FaultRegistry
from modelget.testing.hubsim.records import RequestLog, RequestRecord, select
from modelget.testing.hubsim.server import Listener, start_listeners, stop_listeners
from modelget.testing.repos import (
    Repo,
    RepoFile,
    Snapshot,
    derive_commit,
    scan_directory,
)

Tamper = Callable[[str, str, Any], Any]
"""``(route, url_path, data) -> data``: see :meth:`HubSimulator.tamper`."""


class HubSimulator:
    """Hugging Face + ModelScope hub on 127.0.0.1, for tests. Use as a context manager.

    ``cdn``: also start a second listener and redirect LFS downloads to signed URLs on it.
    ``page_size``: paginate HF tree listings (``Link: <...>; rel="next"``).
    ``host_name``: the host name used in :attr:`url` (e.g. ``localhost``, so that the hub and
    the CDN, always addressed as 127.0.0.1, are different hosts); listeners bind 127.0.0.1.
    """

    def __init__(
        self,
        *,
        cdn: bool = False,
        name: str = "hub",
        signed_url_ttl_s: float = 3600,
        page_size: int | None = None,
        host_name: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
    ) -> None:
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.name = name
        self.cdn = cdn
        self.signed_url_ttl_s = signed_url_ttl_s
        self.page_size = page_size
        self.host_name = host_name
        self._want_ports = (port, cdn_port)
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        """The models; datasets and spaces are in ``_typed`` (the Hub's separate namespaces)."""
        self._typed: dict[str, dict[str, Repo]] = {
            "model": self._repos,
            "dataset": {},
            "space": {},
        }
        self._ms_ids: dict[str, dict[str, str]] = {"model": {}, "dataset": {}}
        """ModelScope id -> repo id, per type ModelScope serves (``/api/v1/models/``,
        ``/api/v1/datasets/``); it has no spaces to download (its studios are apps)."""
        self._blobs: dict[str, tuple[RepoFile, str]] = {}
        self._faults = FaultRegistry()
        self._reqlog = RequestLog()
        self._key = secrets.token_bytes(32)
        self._min_expires = 0
        """Signed URLs that expire before this are refused (see expire_signed_urls_now)."""
        self._stop = threading.Event()
        self._servers: dict[str, Listener] = {}
        self._threads: list[threading.Thread] = []
        self._tamper: Tamper | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> HubSimulator:
        """Bind the listeners and serve in background threads."""
        with self._lock:
            if self._servers:
                raise RuntimeError("simulator already started")
            self._stop.clear()
            self._servers, self._threads = start_listeners(self, self._want_ports, cdn=self.cdn)
        return self

    def stop(self) -> None:
        """Stop serving, abort open connections (stalls included) and join the threads."""
        with self._lock:
            servers, threads = list(self._servers.values()), self._threads
            self._servers, self._threads = {}, []
        if not servers:
            return
        self._stop.set()
        stop_listeners(servers, threads)

    def __enter__(self) -> HubSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<HubSimulator {self.name} {where} repos={sorted(self._repos)}>"

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def _server(self, listener: str) -> Listener:
        srv = self._servers.get(listener)
        if srv is None:
            raise RuntimeError(f"simulator {listener} listener is not running")
        return srv

    @property
    def port(self) -> int:
        return self._server("hub").server_port

    @property
    def cdn_port(self) -> int | None:
        return self._server("cdn").server_port if self.cdn else None

    def write_catalogue(self, path: Path) -> Path:
        """A mirrors.yaml at ``path`` with this simulator as its one ``hf`` mirror (named as
        the simulator), for a test's pull."""
        path.write_text(
            f"version: 1\nmirrors:\n  - name: {self.name}\n    kind: hf\n    endpoint: {self.url}\n"
        )
        return path

    @property
    def url(self) -> str:
        """Base URL of the hub, e.g. ``http://127.0.0.1:40123`` (the HF and MS endpoint)."""
        return f"http://{self.host_name}:{self.port}"

    @property
    def cdn_url(self) -> str | None:
        """Base URL of the CDN listener, or None without ``cdn=True``."""
        return f"http://127.0.0.1:{self.cdn_port}" if self.cdn else None

    # --- repositories ---------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        directory: str | Path,
        *,
        branch: str = "main",
        commit: str | None = None,
        tags: Iterable[str] = (),
        gated: bool = False,
        token: str | None = None,
        ms_id: str | None = None,
        repo_type: RepoType = "model",
    ) -> str:
        """Serve ``directory`` as ``repo_id`` at ``branch``; return the commit id.

        Adding the same ``repo_id`` again adds another revision (point another branch at it).
        The default commit id is derived from the files (paths, sizes, sha256). ``gated``
        (needs ``token``): metadata is public, downloads need ``Authorization: Bearer token``.
        ``token`` alone: a private repo. ``ms_id``: the id on the ModelScope routes.
        ``repo_type``: ``dataset`` or ``space`` serves it as the Hub does those
        (``/api/datasets/...``, ``/datasets/{repo}/resolve/...``), in their own namespace (a
        model and a dataset may share a name). Models and datasets are also on the ModelScope
        routes (``/api/v1/models/...``, ``/api/v1/datasets/...``, each its own namespace);
        spaces are not (ModelScope's studios have no download API).
        """
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {REPO_TYPES}, not {repo_type!r}")
        if repo_type == "space" and ms_id is not None:
            raise ValueError("spaces are not served on the ModelScope routes")
        if not repo_id or repo_id.startswith("/") or repo_id.endswith("/"):
            raise ValueError(f"invalid repo id {repo_id!r}")
        if gated and token is None:
            raise ValueError("a gated repo needs the token that unlocks it")
        if commit is not None and not is_commit(commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, not {commit!r}")
        files = scan_directory(Path(directory))
        commit = commit or derive_commit(files)
        created = time.time()
        snapshot = Snapshot.build(commit, files, created)
        tags = (tags,) if isinstance(tags, str) else tuple(tags)
        with self._lock:
            repos = self._typed[repo_type]
            existing = repos.get(repo_id)
            if existing is None:
                repo = Repo(
                    repo_id=repo_id,
                    ms_id=ms_id or repo_id,
                    created_at=created,
                    branches={branch: commit},
                    tags=dict.fromkeys(tags, commit),
                    snapshots={commit: snapshot},
                    gated=gated,
                    token=token,
                )
            else:
                old = existing.snapshots.get(commit)
                if old is not None and {p: f.sha256 for p, f in old.files.items()} != {
                    p: f.sha256 for p, f in snapshot.files.items()
                }:
                    raise ValueError(f"commit {commit} already exists with other files")
                repo = existing.with_revision(branch, snapshot, tags, created)
                if gated or token is not None or ms_id is not None:
                    if repo_type in self._ms_ids:
                        self._ms_ids[repo_type].pop(repo.ms_id, None)
                    repo = Repo(
                        repo_id=repo.repo_id,
                        ms_id=ms_id or repo.ms_id,
                        created_at=repo.created_at,
                        branches=repo.branches,
                        tags=repo.tags,
                        snapshots=repo.snapshots,
                        gated=gated or repo.gated,
                        token=token if token is not None else repo.token,
                    )
            repos[repo_id] = repo
            if repo_type in self._ms_ids:
                self._ms_ids[repo_type][repo.ms_id] = repo_id
            for f in snapshot.files.values():
                if f.lfs:
                    self._blobs.setdefault(f.sha256, (f, commit))
        return commit

    def repo(self, repo_id: str, repo_type: RepoType = "model") -> Repo:
        """The repository served as ``repo_id`` (KeyError if none)."""
        return self._typed[repo_type][repo_id]

    def repos_of(self, repo_type: str) -> dict[str, Repo]:
        """The repositories of one type (``model``, ``dataset``, ``space``), by id."""
        return self._typed[repo_type]

    def commit(
        self, repo_id: str, revision: str | None = None, repo_type: RepoType = "model"
    ) -> str:
        """The commit a revision (default: the default branch) of ``repo_id`` resolves to."""
        snap = self._typed[repo_type][repo_id].resolve(revision)
        if snap is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return snap.commit

    def _repo_by_ms_id(self, ms_id: str, repo_type: RepoType = "model") -> Repo | None:
        repo_id = self._ms_ids.get(repo_type, {}).get(ms_id)
        return self._typed[repo_type].get(repo_id) if repo_id is not None else None

    # --- URLs -----------------------------------------------------------------------------------

    def resolve_url(
        self, repo_id: str, path: str, revision: str = "main", repo_type: RepoType = "model"
    ) -> str:
        """The HF download URL of a file (``/datasets/{repo}/resolve/...`` for a dataset)."""
        repo = REPO_URL_PREFIXES[repo_type] + repo_id
        return f"{self.url}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def ms_file_url(
        self, ms_id: str, path: str, revision: str = "master", repo_type: RepoType = "model"
    ) -> str:
        """The ModelScope download URL of a file (``/api/v1/datasets/...`` for a dataset)."""
        return (
            f"{self.url}/api/v1/{repo_type}s/{ms_id}/repo"
            f"?Revision={quote(revision, safe='')}&FilePath={quote(path, safe='')}"
        )

    def signed_cdn_url(self, sha256: str, *, expires: float | None = None) -> str:
        """A CDN URL for an LFS blob, signed with this simulator's key."""
        if self.cdn_url is None:
            raise RuntimeError("the simulator has no CDN (cdn=False)")
        exp = int(expires if expires is not None else time.time() + self.signed_url_ttl_s)
        if expires is None:
            exp = max(exp, self._min_expires)
        return f"{self.cdn_url}/cdn/{sha256}?expires={exp}&sig={self._sign(sha256, exp)}"

    def expire_signed_urls_now(self) -> None:
        """Every CDN URL issued so far is refused as expired from now on (the CDN answers
        403 ``Request has expired``, as for a URL past its time); URLs issued later work.
        Lets a test make signed URLs expire at a chosen point of a download."""
        with self._lock:
            self._min_expires = int(time.time() + self.signed_url_ttl_s) + 1

    def _sign(self, sha256: str, expires: int) -> str:
        return hmac.new(self._key, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()

    # --- faults ---------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> int:
        """Activate a fault; returns a handle for :meth:`remove_fault`."""
        return self._faults.add(fault)

    def remove_fault(self, handle: int) -> bool:
        return self._faults.remove(handle)

    def clear_faults(self) -> int:
        """Remove every fault; returns how many there were."""
        return self._faults.clear()

    def fault_hits(self, handle: int) -> int:
        """How many requests the fault has affected so far."""
        return self._faults.applied(handle)

    @property
    def faults(self) -> list[dict[str, Any]]:
        """``[{"id", "fault", "seen", "applied"}]``."""
        return self._faults.snapshot()

    # --- a hostile mirror -----------------------------------------------------------------------

    def tamper(self, fn: Tamper | None) -> None:
        """Rewrite the JSON the hub answers with (None: stop): ``fn(route, path, data)`` gets
        the route (``hf-api`` or ``ms-api``), the decoded URL path and the data about to be
        sent (HF model info or tree page, ModelScope envelope) and returns what to send
        instead, so tests can play a mirror that lists hostile paths, digests or sizes."""
        self._tamper = fn

    # --- request log ----------------------------------------------------------------------------

    @property
    def log(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        return self._reqlog.records()

    def clear_log(self) -> None:
        self._reqlog.clear()

    def file_bytes_sent(self, path_contains: str = "") -> int:
        """File body bytes sent so far (routes hf-resolve, cdn, ms-file) on paths containing
        ``path_contains``. Responses still being sent count what has left so far (a throttled
        response is logged up front with the count it is about to send)."""
        return self._reqlog.file_bytes_sent(path_contains)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is in progress (e.g. after killing a client); True if so."""
        return self._reqlog.wait_idle(timeout)

    def requests(
        self,
        *,
        route: str | None = None,
        listener: str | None = None,
        method: str | None = None,
        path_glob: str | None = None,
        status: int | None = None,
    ) -> list[RequestRecord]:
        """The logged requests matching every given filter (``path_glob``: on the URL path)."""
        return select(
            self.log,
            route=route,
            listener=listener,
            method=method,
            path_glob=path_glob,
            status=status,
        )
