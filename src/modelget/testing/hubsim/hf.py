"""The Hugging Face Hub routes: ``/api/models/{repo}[/revision/{rev}]``, ``.../tree/{rev}[/{path}]``
(paginated with ``Link`` when the simulator has a ``page_size``), ``.../refs`` and
``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (ETag, X-Repo-Commit, X-Linked-Etag / -Size, a
302 to a signed CDN URL for LFS files with ``cdn=True``), errors with ``X-Error-Code``. Datasets
and spaces: the same under ``/api/datasets/``, ``/api/spaces/`` and ``/datasets/{repo}/resolve/``,
``/spaces/{repo}/resolve/``, each type its own namespace."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from modelget.testing.hubsim.base import Headers, truthy
from modelget.testing.hubsim.files import FileServing
from modelget.testing.repos import Repo, Snapshot, TreeEntry


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def split_revision(repo: Repo | None, segs: list[str]) -> tuple[str, str]:
    """Split decoded path segments into (revision, path); the revision may hold slashes."""
    if not segs:
        return "", ""
    if repo is not None:
        for k in range(1, len(segs) + 1):
            candidate = "/".join(segs[:k])
            if repo.resolve(candidate) is not None:
                return candidate, "/".join(segs[k:])
    return segs[0], "/".join(segs[1:])


def hf_tree_item(entry: TreeEntry, snap: Snapshot, expand: bool) -> dict[str, Any]:
    f = entry.file
    item: dict[str, Any]
    if f is None:
        item = {"type": "directory", "oid": entry.oid, "size": 0, "path": entry.path}
    else:
        item = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
        if f.lfs:
            item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    if expand:
        item["lastCommit"] = {"id": snap.commit, "title": "Upload", "date": iso(snap.created_at)}
    return item


_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
"""The Hub's API path segment of each repo type (``/api/datasets/...``)."""

_INFO_EXTRAS: dict[str, Any] = {
    # What the Hub adds to each type's info (model_info, dataset_info, space_info).
    "model": lambda rid: {"modelId": rid, "downloads": 0, "library_name": None},
    "dataset": lambda rid: {"downloads": 0, "description": "", "cardData": {}},
    "space": lambda rid: {
        "sdk": "static",
        "subdomain": rid.replace("/", "-").lower(),
        "host": "https://" + rid.replace("/", "-").lower() + ".hf.space",
        "runtime": {"stage": "RUNNING", "hardware": {"current": None, "requested": None}},
    },
}


class HfRoutes(FileServing):
    def _hf_error(
        self, status: int, code: str | None, message: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        hdrs: Headers = [("X-Error-Message", message), *headers]
        if code:
            hdrs.append(("X-Error-Code", code))
        self._send_json(status, {"error": message}, hdrs)

    def _hf_repo_not_found(self, repo_id: str, repo_type: str = "model") -> None:
        """As the Hub answers for a repo that does not exist, or is private and not for this
        token (it never says which): 401 to a request without a token, 404 to one with."""
        status = 401 if self._presented_token(cookie=False) is None else 404
        message = (
            "Repository Not Found for url: "
            f"{self._raw_path}. Please make sure you specified the correct `repo_id` and "
            "`repo_type`. If you are trying to access a private or gated repo, make sure you "
            "are authenticated."
        )
        self._hf_error(status, "RepoNotFound", message)

    def _hf_api(self, segs: list[str]) -> None:
        sim = self.server.sim
        if segs == ["agent-harnesses"]:
            self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
            return
        kind = _API_TYPES.get(segs[0]) if segs else None
        if len(segs) < 2 or kind is None:
            if segs and segs[0] == "kernels" and len(segs) >= 2:
                self._hf_repo_not_found("/".join(segs[1:3]), "kernel")
            else:
                self._hf_error(404, None, "Not Found")
            return
        rest, repos = segs[1:], sim.repos_of(kind)
        if len(rest) >= 2 and f"{rest[0]}/{rest[1]}" in repos:
            repo_id, tail = f"{rest[0]}/{rest[1]}", rest[2:]
        elif rest[0] in repos:
            repo_id, tail = rest[0], rest[1:]
        else:
            self._hf_repo_not_found("/".join(rest[:2]), kind)
            return
        repo = repos[repo_id]
        if repo.private and self._auth_status(repo) != 200:
            self._hf_repo_not_found(repo_id, kind)
        elif not tail:
            self._hf_model_info(repo, None, kind)
        elif tail[0] == "revision" and len(tail) >= 2:
            self._hf_model_info(repo, "/".join(tail[1:]), kind)
        elif tail[0] == "tree" and len(tail) >= 2:
            rev, path = split_revision(repo, tail[1:])
            self._hf_tree(repo, rev, path)
        elif tail == ["refs"]:
            self._hf_refs(repo)
        else:
            self._hf_error(404, None, "Not Found")

    def _hf_model_info(self, repo: Repo, revision: str | None, kind: str = "model") -> None:
        snap = repo.resolve(revision)
        if snap is None:
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        blobs = truthy(self._query.get("blobs"))
        siblings: list[dict[str, Any]] = []
        for f in snap.files.values():
            sib: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sib["size"] = f.size
                sib["blobId"] = f.oid
                if f.lfs:
                    sib["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sib)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {
            "_id": hashlib.sha1(f"{kind}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": author,
            "sha": snap.commit,
            "lastModified": iso(snap.created_at),
            "createdAt": iso(repo.created_at),
            "private": repo.private,
            "disabled": False,
            "gated": "auto" if repo.gated else False,
            "tags": [],
            "likes": 0,
            "siblings": siblings,
            "usedStorage": snap.total_size,
            **_INFO_EXTRAS[kind](repo.repo_id),
        }
        self._send_json(200, info)

    def _hf_tree(self, repo: Repo, revision: str, path: str) -> None:
        snap = repo.resolve(revision)
        if snap is None:
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        entries = snap.entries(path, recursive=truthy(self._query.get("recursive")))
        if entries is None:
            self._hf_error(
                404,
                "EntryNotFound",
                f"{path} does not exist on {revision}",
                [("X-Repo-Commit", snap.commit)],
            )
            return
        expand = truthy(self._query.get("expand"))
        items = [hf_tree_item(e, snap, expand) for e in entries]
        headers: Headers = []
        page = self.server.sim.page_size
        if page is not None:
            try:
                cursor = max(0, int(self._query.get("cursor", "0")))
            except ValueError:
                cursor = 0
            if cursor + page < len(items):
                query = {k: v for k, v in self._query.items() if k != "cursor"}
                query["cursor"] = str(cursor + page)
                qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
                host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
                headers.append(("Link", f'<http://{host}{self._raw_path}?{qs}>; rel="next"'))
            items = items[cursor : cursor + page]
        self._send_json(200, items, headers)

    def _hf_refs(self, repo: Repo) -> None:
        def refs(names: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in names.items()
            ]

        self._send_json(
            200,
            {
                "branches": refs(dict(repo.branches), "heads"),
                "converts": [],
                "tags": refs(dict(repo.tags), "tags"),
            },
        )

    def _hf_resolve(
        self, repo_id: str, repo: Repo | None, revision: str, path: str, kind: str = "model"
    ) -> None:
        if repo is None or (repo.private and self._auth_status(repo) != 200):
            self._hf_repo_not_found(repo_id, kind)
            return
        snap = repo.resolve(revision)
        if snap is None:
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        commit = [("X-Repo-Commit", snap.commit)]
        if repo.gated and (status := self._auth_status(repo)) != 200:
            message = (
                f"Access to {kind} {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            self._hf_error(status, "GatedRepo", message, commit)
            return
        f = snap.files.get(path)
        if f is None:
            self._hf_error(404, "EntryNotFound", f"Entry not found: {path}", commit)
            return
        if not f.lfs:
            self._serve_file(f, f.git_sha1, commit)
            return
        headers = [
            *commit,
            ("X-Linked-Etag", f'"{f.sha256}"'),
            ("X-Linked-Size", str(f.size)),
        ]
        if self.server.sim.cdn:
            location = self._signed_location(f.sha256)
            self._respond(302, [*headers, ("ETag", f'"{f.oid}"'), ("Location", location)], None)
            return
        self._serve_file(f, f.sha256, headers)
