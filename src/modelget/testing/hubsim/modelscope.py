"""The ModelScope routes: ``/api/v1/models/{owner}/{name}`` (model info), ``.../repo/files``,
``.../revisions`` and ``.../repo?FilePath=`` (the file, or a 302 to the CDN with ``cdn=True``),
in ModelScope's JSON envelope; a private repo takes a bearer token or the ``m_session_id``
cookie. Datasets are the same under ``/api/v1/datasets/{owner}/{name}``, except that their
listing is ``.../repo/tree``, paged with ``PageNumber``/``PageSize`` (what modelscope-hub's
``list_dataset_files_paginated`` reads: it stops at the first page shorter than it asked for).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from modelget.datatypes import RepoType
from modelget.testing.hubsim.base import truthy
from modelget.testing.hubsim.files import FileServing
from modelget.testing.repos import Repo, Snapshot, TreeEntry

TAG_CREATED_AT = 4102444800  # 2100-01-01: legacy ModelScope clients never auto-pick these tags
DATASET_PAGE_SIZE = 100
"""``repo/tree``'s page size when the request names none."""


def ms_envelope(data: Any, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {
        "Code": code,
        "Data": data,
        "Message": message,
        "RequestId": str(uuid.uuid4()),
        "Success": code == 200,
    }


def ms_file_item(entry: TreeEntry, snap: Snapshot) -> dict[str, Any]:
    f = entry.file
    common = {
        "CommitMessage": "Upload",
        "CommittedDate": int(snap.created_at),
        "CommitterName": "hubsim",
        "InCheck": False,
        "Id": entry.oid,
        "Name": entry.path.rsplit("/", 1)[-1],
        "Path": entry.path,
        "Revision": snap.commit,
    }
    if f is None:
        return {**common, "IsLFS": False, "Mode": "16384", "Sha256": "", "Size": 0, "Type": "tree"}
    return {
        **common,
        "IsLFS": f.lfs,
        "Mode": "33188",
        "Sha256": f.sha256,
        "Size": f.size,
        "Type": "blob",
    }


class MsRoutes(FileServing):
    def _ms_error(self, status: int, message: str) -> None:
        self._send_json(status, ms_envelope(None, code=status, message=message))

    def _ms_api(
        self, repo: Repo | None, ms_id: str, tail: list[str], kind: RepoType = "model"
    ) -> None:
        if repo is None:
            self._ms_error(404, f"{kind} {ms_id} not found")
            return
        if repo.private and (status := self._auth_status(repo, cookie=True)) != 200:
            self._ms_error(status, "Unauthorized: please log in")
            return
        if self.command not in ("GET", "HEAD"):
            self._ms_error(405, "method not allowed")
        elif not tail:
            self._ms_model_info(repo, ms_id)
        elif tail == ["repo", "files"] and kind == "model":
            self._ms_files(repo)
        elif tail == ["repo", "tree"] and kind == "dataset":
            self._ms_dataset_tree(repo)
        elif tail == ["revisions"]:
            self._ms_revisions(repo)
        else:
            self._ms_error(404, f"{self._raw_path} not found")

    def _ms_model_info(self, repo: Repo, ms_id: str) -> None:
        owner, name = ms_id.split("/", 1)
        snap = repo.resolve(None)
        assert snap is not None
        data = {
            "Id": int(hashlib.sha1(ms_id.encode()).hexdigest()[:8], 16),
            "Name": name,
            "Path": owner,
            "Namespace": owner,
            "ChineseName": "",
            "Description": "",
            "CreatedTime": int(repo.created_at),
            "LastUpdatedTime": int(snap.created_at),
            "Downloads": 0,
            "Stars": 0,
            "IsPublished": 1,
            "Visibility": 1 if repo.private else 5,
            "Revision": snap.commit,
            "Tasks": [],
            "License": "",
        }
        self._send_json(200, ms_envelope(data))

    def _ms_files(self, repo: Repo) -> None:
        revision = self._query.get("Revision")
        snap = repo.resolve_ms(revision)
        if snap is None:
            self._ms_error(404, f"revision {revision} not found")
            return
        root = self._query.get("Root", "").strip("/")
        entries = snap.entries(root, recursive=truthy(self._query.get("Recursive")))
        if entries is None:
            self._ms_error(404, f"path {root} not found")
            return
        files = [ms_file_item(e, snap) for e in entries]
        self._send_json(200, ms_envelope({"Files": files}))

    def _ms_dataset_tree(self, repo: Repo) -> None:
        """A dataset's listing: one page (``PageNumber`` from 1) of the entries under ``Root``
        (``/`` or absent: the whole repo), directories included, as the models' listing."""
        revision = self._query.get("Revision")
        snap = repo.resolve_ms(revision)
        if snap is None:
            self._ms_error(404, f"revision {revision} not found")
            return
        try:
            number = int(self._query.get("PageNumber") or 1)
            size = int(self._query.get("PageSize") or DATASET_PAGE_SIZE)
        except ValueError:
            self._ms_error(400, "PageNumber and PageSize are numbers")
            return
        if number < 1 or size < 1:
            self._ms_error(400, "PageNumber and PageSize start at 1")
            return
        root = self._query.get("Root", "").strip("/")
        entries = snap.entries(root, recursive=truthy(self._query.get("Recursive")))
        if entries is None:
            self._ms_error(404, f"path {root} not found")
            return
        page = entries[(number - 1) * size : number * size]
        files = [ms_file_item(e, snap) for e in page]
        self._send_json(200, ms_envelope({"Files": files}))

    def _ms_revisions(self, repo: Repo) -> None:
        def created(commit: str) -> int:
            return int(repo.snapshots[commit].created_at)

        branches = [
            {"Revision": n, "CreatedAt": created(c), "CommitId": c}
            for n, c in repo.branches.items()
        ]
        if "master" not in repo.branches:
            default = repo.branches[repo.default_branch]
            branches.insert(
                0, {"Revision": "master", "CreatedAt": created(default), "CommitId": default}
            )
        tags = [
            {"Revision": n, "CreatedAt": TAG_CREATED_AT, "CommitId": c}
            for n, c in repo.tags.items()
        ]
        self._send_json(200, ms_envelope({"RevisionMap": {"Branches": branches, "Tags": tags}}))

    def _ms_file(self, repo: Repo | None, ms_id: str, path: str, kind: RepoType = "model") -> None:
        if self.command not in ("GET", "HEAD"):
            self._ms_error(405, "method not allowed")
            return
        if repo is None:
            self._ms_error(404, f"{kind} {ms_id} not found")
            return
        if (status := self._auth_status(repo, cookie=True)) != 200:
            self._ms_error(status, "Unauthorized: please log in")
            return
        revision = self._query.get("Revision")
        snap = repo.resolve_ms(revision)
        if snap is None:
            self._ms_error(404, f"revision {revision} not found")
            return
        if not path:
            self._ms_error(400, "FilePath is required")
            return
        f = snap.files.get(path)
        if f is None:
            self._ms_error(404, f"file {path} not found")
            return
        headers = [("X-Linked-ETag", f'"{f.sha256}"')]
        if self.server.sim.cdn and f.lfs:
            self._respond(302, [*headers, ("Location", self._signed_location(f.sha256))], None)
            return
        self._serve_file(f, f.sha256, headers)
