"""Mirror sites for the benchmarks: the hub simulator for the Hub API, real nginx for the bytes.

A :class:`Site` is one Hugging Face-style mirror, as the real Hub is built: API calls and small
files come from the hub (here :class:`~modelget.testing.hubsim.HubSimulator`), and LFS files
are a 302 away, on a CDN (here one nginx, serving the blobs by sha256 with ``sendfile`` and an
optional per-connection ``limit_rate``). The hub is reached through the same nginx
(``/api/`` and ``/{org}/{name}/resolve/`` are proxied to it, uncapped), so one nginx carries
the whole mirror: the capped scenes can then shape a mirror by its ports, and
clients in a network namespace reach it on the veth address nginx also listens on. The CDN is
the same nginx on a second port: another origin, as the Hub's CDN is another host.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from modelget.testing.hubsim import HubSimulator
from modelget.testing.nginx import NginxServer, find_free_port
from modelget.testing.repos import RepoFile, derive_commit, scan_directory


class CdnHub(HubSimulator):
    """The hub simulator, redirecting LFS downloads to ``cdn_base`` (a real nginx) instead of
    its own Python CDN listener; the signed query string is kept (nginx ignores it)."""

    cdn_base = ""

    def signed_cdn_url(self, sha256: str, *, expires: float | None = None) -> str:
        exp = int(expires if expires is not None else time.time() + self.signed_url_ttl_s)
        return f"{self.cdn_base}/cdn/{sha256}?expires={exp}&sig={self._sign(sha256, exp)}"


@dataclass(frozen=True)
class BenchRepo:
    """A model the sites serve: a directory, its files (hashed once) and its commit."""

    repo_id: str
    directory: Path
    files: tuple[RepoFile, ...]
    commit: str

    @classmethod
    def scan(cls, repo_id: str, directory: Path, commit: str | None = None) -> BenchRepo:
        files = tuple(sorted(scan_directory(directory), key=lambda f: f.path))
        return cls(repo_id, directory, files, commit or derive_commit(files))

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def lfs_files(self) -> list[RepoFile]:
        return [f for f in self.files if f.lfs]

    def cache_folder(self) -> str:
        """The repo's folder name in a Hugging Face cache."""
        return "models--" + self.repo_id.replace("/", "--")

    def snapshot(self, cache_dir: Path) -> Path:
        return cache_dir / self.cache_folder() / "snapshots" / self.commit


def link_blobs(www: Path, repos: Iterable[BenchRepo]) -> None:
    """``www/cdn/{sha256}`` for every LFS file (hardlinks; copies across filesystems)."""
    cdn = www / "cdn"
    cdn.mkdir(parents=True, exist_ok=True)
    for repo in repos:
        for f in repo.lfs_files:
            dest = cdn / f.sha256
            # The same inode as the source, so that evicting the source from the page cache
            # (cold runs) evicts what nginx reads.
            with contextlib.suppress(OSError):
                if os.path.samefile(dest, f.source):
                    continue
            tmp = dest.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(f.source, tmp)
            except OSError:
                shutil.copyfile(f.source, tmp)
            os.replace(tmp, dest)


def _proxy_config(hub_port: int, listen: Sequence[tuple[str, int]]) -> str:
    lines = [f"        listen {ip}:{port};" for ip, port in listen]
    proxy = (
        "            limit_rate 0;\n"
        f"            proxy_pass http://127.0.0.1:{hub_port};\n"
        "            proxy_http_version 1.1;\n"
        "            proxy_set_header Host $http_host;\n"
        "            proxy_buffering off;\n"
    )
    lines += [
        "        location /api/ {",
        proxy + "        }",
        "        location ~ ^/[^/]+/[^/]+/resolve/ {",
        proxy + "        }",
    ]
    return "\n".join(lines) + "\n"


def _head(url: str) -> tuple[int, str | None, int | None]:
    """HEAD ``url``, redirects not followed: (status, Location, Content-Length)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.netloc, timeout=10)
    try:
        conn.request("HEAD", u.path + (f"?{u.query}" if u.query else ""))
        resp = conn.getresponse()
        resp.read()
        length = resp.getheader("Content-Length")
        return resp.status, resp.getheader("Location"), int(length) if length else None
    finally:
        conn.close()


def topology_problem(
    *,
    lfs_resolve: tuple[int, str | None],
    cdn_answer: tuple[int, int | None] | None,
    lfs_size: int,
    small_resolve: tuple[int, str | None] | None,
    cdn_base: str,
    hub_base: str,
) -> str:
    """Empty when a site answers as the Hub does, else what differs: an LFS file's resolve is
    a 302 to the CDN (another origin than the hub) whose blob URL answers 200 with the file's
    size; a small file's resolve answers 200 from the hub itself."""
    status, location = lfs_resolve
    if status != 302 or not location:
        return f"an LFS file's resolve answered {status}, not a 302 redirect"
    if not location.startswith(cdn_base + "/cdn/"):
        return f"the LFS redirect goes to {location.split('?')[0]}, not the CDN {cdn_base}"
    if urlsplit(cdn_base).netloc == urlsplit(hub_base).netloc:
        return "the CDN is the same origin as the hub"
    if cdn_answer is None or cdn_answer[0] != 200:
        return f"the CDN answered {cdn_answer[0] if cdn_answer else 'nothing'} for the blob"
    if cdn_answer[1] != lfs_size:
        return f"the CDN's blob has {cdn_answer[1]} bytes, not {lfs_size}"
    if small_resolve is not None and small_resolve[0] != 200:
        return f"a small file's resolve answered {small_resolve[0]}, not 200 from the hub"
    return ""


class Site:
    """One mirror: a hub simulator behind a real nginx that also serves its LFS blobs.

    ``extra_listen``: more addresses nginx listens on (the veth address of a shaped link);
    ``host``: the address clients use (and the hub's redirects point at).
    """

    def __init__(
        self,
        name: str,
        www: Path,
        repos: Sequence[BenchRepo],
        *,
        host: str = "127.0.0.1",
        extra_listen: Sequence[str] = (),
        limit_rate: int | None = None,
    ) -> None:
        self.name = name
        self.repos = list(repos)
        self.hub = CdnHub(cdn=True, name=name)
        self.hub.start()
        for repo in self.repos:
            self.hub.add_repo(repo.repo_id, repo.directory, commit=repo.commit)
        # Two ports, two origins: the hub's and the CDN's (huggingface_hub reads a file's
        # metadata from the redirect only when it leads to another origin, as on the Hub).
        self.port = find_free_port()
        self.cdn_port = find_free_port()
        while self.cdn_port == self.port:
            self.cdn_port = find_free_port()
        self.host = host
        listen = [
            (ip, p) for ip in ("127.0.0.1", *extra_listen) for p in (self.port, self.cdn_port)
        ]
        listen.remove(("127.0.0.1", self.port))  # NginxServer's own listen line
        self.nginx = NginxServer(
            www,
            port=self.port,
            name=f"bench-{name}",
            limit_rate=limit_rate,
            extra_config=_proxy_config(self.hub.port, listen),
            workers=1,
        )
        self.nginx.start()
        self.hub.cdn_base = f"http://{self.host}:{self.cdn_port}"
        self.dead = False

    @property
    def url(self) -> str:
        """The hub's base URL (what a catalogue or HF_ENDPOINT names)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ports(self) -> tuple[int, int]:
        """Every port the site sends from (hub and CDN), for shaping."""
        return (self.port, self.cdn_port)

    def resolve_url(self, repo: BenchRepo, path: str) -> str:
        return f"{self.url}/{repo.repo_id}/resolve/main/{path}"

    def check_topology(self, repo: BenchRepo) -> str:
        """Ask the site, as a client would, whether it is built like the Hub (see
        :func:`topology_problem`) and whether its CDN's per-connection cap is the one asked
        for (nginx's configuration, ``limit_rate``). Empty when it is; else what is wrong."""
        lfs = max(repo.lfs_files, key=lambda f: f.size, default=None)
        if lfs is None:
            return f"{repo.repo_id} has no LFS file to check"
        small = next((f for f in repo.files if not f.lfs), None)
        st, loc, _ = _head(self.resolve_url(repo, lfs.path))
        cdn: tuple[int, int | None] | None = None
        if st == 302 and loc:
            cst, _, clen = _head(loc)
            cdn = (cst, clen)
        small_answer = None
        if small is not None:
            sst, sloc, _ = _head(self.resolve_url(repo, small.path))
            small_answer = (sst, sloc)
        problem = topology_problem(
            lfs_resolve=(st, loc), cdn_answer=cdn, lfs_size=lfs.size,
            small_resolve=small_answer, cdn_base=self.hub.cdn_base, hub_base=self.url,
        )  # fmt: skip
        if problem:
            return problem
        config = self.nginx.config_text()
        want = self.nginx.limit_rate
        if want and f"limit_rate {int(want)};" not in config:
            return f"nginx's configuration has no limit_rate {want}"
        return ""

    @property
    def topology(self) -> str:
        """The site's shape in words (for the report)."""
        cap = self.nginx.limit_rate
        capped = (
            f"`limit_rate` {cap / 1e6:g} MB/s per connection" if cap else "no per-connection cap"
        )
        return (
            f"{self.name}: hub API and small files on :{self.port}; LFS resolve → 302 → "
            f"nginx CDN on :{self.cdn_port} ({capped})"
        )

    def set_limit_rate(self, rate: int | None) -> None:
        if rate != self.nginx.limit_rate:
            self.nginx.set_limit_rate(rate)

    # --- accounting ---

    def clear_log(self) -> None:
        self.nginx.clear_access_log()

    def log(self) -> list[dict[str, Any]]:
        time.sleep(0.05)  # nginx logs a request just after its last byte went out
        return self.nginx.access_log()

    def bytes_sent(self) -> dict[str, int]:
        """Body bytes sent since ``clear_log``: ``file`` (LFS blobs and small files through
        ``resolve``), ``api`` (everything else) and ``requests`` (count)."""
        out = {"file": 0, "api": 0, "requests": 0}
        for e in self.log():
            n = int(e.get("body_bytes_sent") or 0)
            uri = str(e.get("uri") or "")
            out["requests"] += 1
            if uri.startswith("/cdn/") or "/resolve/" in uri:
                out["file"] += n
            else:
                out["api"] += n
        return out

    # --- faults ---

    def kill(self) -> None:
        """The mirror dies: nginx's processes get SIGKILL (open connections end, new ones
        are refused) and the hub stops."""
        pids = [p for p in [self.nginx.pid, *self.nginx.worker_pids()] if p is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.hub.stop()
        self.dead = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nginx.close()
        with contextlib.suppress(Exception):
            self.hub.stop()


class Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...


def catalogue_yaml(sites: Sequence[Named], *, max_connections: int | None = None) -> str:
    """A ``mirrors.yaml`` listing ``sites`` as ``hf`` mirrors (defaults otherwise)."""
    lines = ["version: 1", "mirrors:"]
    for s in sites:
        lines += [f"  - name: {s.name}", "    kind: hf", f"    endpoint: {s.url}"]
        if max_connections is not None:
            lines.append(f"    max_connections: {max_connections}")
    return "\n".join(lines) + "\n"
