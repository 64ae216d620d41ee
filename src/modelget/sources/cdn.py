"""A static tree on any web server or bucket (nginx, S3, R2): modelget's own format.

Layout under the mirror's endpoint (format ``modelget.cdn/1``, see docs/mirrors.md):

    {repo_id}/refs.json                  {"format": "modelget.cdn/1", "refs": {"main": "<commit>", ...}}
    {repo_id}/manifests/{commit}.json    {"format": "modelget.cdn/1", "repo_id", "commit",
                                          "files": [{"path", "size", "sha256"[, "git_sha1"]}]}
    blobs/sha256/{sha256[:2]}/{sha256}   the bytes, content-addressed (shared by every repo)

A dataset's or a space's two JSON files are under ``datasets/{repo_id}/``, ``spaces/{repo_id}/``
(the Hub's URL prefixes); the blobs are shared with the models.

Every file is addressed by its sha256, so a tree can be published once and served by any
static server with Range support; nothing but the two JSON files needs a server-side index.
"""

from __future__ import annotations

import json
from typing import Any

from modelget import http
from modelget.auth import mirror_token
from modelget.datatypes import (
    REPO_URL_PREFIXES,
    FileEntry,
    Manifest,
    Mirror,
    MirrorKind,
    RepoType,
    is_commit,
    is_sha256_hex,
)
from modelget.errors import (
    AuthRequiredError,
    MirrorUnavailableError,
    ModelNotFoundError,
    RateLimitedError,
    ResolveError,
    RevisionNotFoundError,
)
from modelget.manifest import check_manifest, check_path

FORMAT = "modelget.cdn/1"
DEFAULT_REVISION = "main"
MAX_REDIRECTS = 20
"""Redirects followed for the JSON files (httpx's own limit, which applied before they went
through :func:`modelget.http.follow`)."""


def blob_path(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


class CdnSource:
    kind: MirrorKind = "cdn"

    def _get_json(self, mirror: Mirror, url: str, timeout: float) -> tuple[int, Any]:
        import httpx

        token = mirror_token(mirror)
        credentials = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            # The one redirect follower: the token only on hops on the mirror's own origin.
            with (
                http.client(timeout=timeout, verify_tls=mirror.verify_tls) as client,
                http.follow(
                    client,
                    "GET",
                    url,
                    credentials=credentials,
                    credentials_origin=mirror.endpoint,
                    max_hops=MAX_REDIRECTS,
                    stream=False,
                ) as got,
            ):
                response = got.response
        except http.RedirectError as exc:
            if exc.kind == "no-location" and exc.status is not None:
                return exc.status, None  # a redirect with nowhere to go: its status, as before
            raise MirrorUnavailableError(
                f"{mirror.name} ({mirror.endpoint}) is unreachable: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise MirrorUnavailableError(
                f"{mirror.name} ({mirror.endpoint}) is unreachable: {exc}"
            ) from exc
        if response.status_code == 200:
            try:
                return 200, response.json()
            except ValueError as exc:
                raise ResolveError(f"{mirror.name}: {url} is not valid JSON") from exc
        if response.status_code == 429:
            retry = response.headers.get("Retry-After")
            raise RateLimitedError(
                f"{mirror.name} ({mirror.endpoint}) is rate limiting requests (429)",
                retry_after_s=float(retry)
                if retry and retry.replace(".", "", 1).isdigit()
                else None,
            )
        if response.status_code in (401, 403):
            raise AuthRequiredError(
                f"{mirror.name} ({mirror.endpoint}) refused access ({response.status_code})",
                hint=f"set {mirror.token_env or 'a token_env'} for mirror {mirror.name}",
            )
        if response.status_code >= 500:
            raise MirrorUnavailableError(
                f"{mirror.name} ({mirror.endpoint}) answered HTTP {response.status_code}"
            )
        return response.status_code, None

    def resolve(
        self,
        mirror: Mirror,
        repo_id: str,
        revision: str | None,
        *,
        timeout: float,
        repo_type: RepoType = "model",
    ) -> Manifest:
        repo = mirror.map_repo_id(repo_id)
        rev = revision or DEFAULT_REVISION
        base = f"{mirror.endpoint}/{REPO_URL_PREFIXES[repo_type]}{repo}"
        if is_commit(rev):
            commit = rev
        else:
            status, refs = self._get_json(mirror, f"{base}/refs.json", timeout)
            if status == 404:
                raise ModelNotFoundError(
                    f"{repo_id} not found on {mirror.name} ({mirror.endpoint})"
                )
            if not isinstance(refs, dict) or refs.get("format") != FORMAT:
                raise ResolveError(f"{mirror.name}: {base}/refs.json is not a {FORMAT} refs file")
            found = (refs.get("refs") or {}).get(rev)
            if not isinstance(found, str) or not is_commit(found):
                raise RevisionNotFoundError(
                    f"revision {rev!r} of {repo_id} not found on {mirror.name} ({mirror.endpoint})"
                )
            commit = found
        status, doc = self._get_json(mirror, f"{base}/manifests/{commit}.json", timeout)
        if status == 404:
            raise RevisionNotFoundError(
                f"commit {commit} of {repo_id} not found on {mirror.name} ({mirror.endpoint})"
            )
        return self._parse(doc, mirror, repo_id, repo, rev, commit, repo_type)

    @staticmethod
    def _parse(
        doc: Any,
        mirror: Mirror,
        repo_id: str,
        repo: str,
        rev: str,
        commit: str,
        repo_type: RepoType = "model",
    ) -> Manifest:
        where = f"{mirror.name}: manifest of {repo_id}@{commit[:12]}"
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ResolveError(f"{where} is not a {FORMAT} manifest")
        if doc.get("commit") != commit:
            raise ResolveError(f"{where} names commit {doc.get('commit')!r}")
        raw = doc.get("files")
        if not isinstance(raw, list):
            raise ResolveError(f"{where} has no file list")
        files: list[FileEntry] = []
        for item in raw:
            if not isinstance(item, dict):
                raise ResolveError(f"{where} has a malformed file entry")
            path, size, sha = item.get("path"), item.get("size"), item.get("sha256")
            if not isinstance(path, str) or not isinstance(size, int) or size < 0:
                raise ResolveError(f"{where} has a malformed file entry: {item!r:.200}")
            if not isinstance(sha, str) or not is_sha256_hex(sha):
                raise ResolveError(f"{where}: {path} has no valid sha256")
            sha1 = item.get("git_sha1")
            files.append(
                FileEntry(
                    path=check_path(path),
                    size=size,
                    sha256=sha,
                    git_sha1=sha1 if isinstance(sha1, str) else None,
                    lfs=bool(item.get("lfs", False)),
                )
            )
        return check_manifest(
            Manifest(
                repo_id=repo_id,
                revision=rev,
                commit=commit,
                files=tuple(sorted(files, key=lambda f: f.path)),
                mirror=mirror.name,
                mirror_repo_id=repo,
                repo_type=repo_type,
            )
        )

    def file_url(self, mirror: Mirror, manifest: Manifest, entry: FileEntry) -> str:
        if not entry.sha256:
            raise ResolveError(f"{mirror.name}: {entry.path} has no sha256 (cdn trees need one)")
        return f"{mirror.endpoint}/{blob_path(entry.sha256)}"

    def ping_url(self, mirror: Mirror) -> str:
        return f"{mirror.endpoint}/"


def manifest_document(manifest: Manifest) -> str:
    """The JSON text of a ``modelget.cdn/1`` manifest (used by the exporter and tests)."""
    files = []
    for f in manifest.files:
        item: dict[str, Any] = {"path": f.path, "size": f.size, "sha256": f.sha256}
        if f.git_sha1:
            item["git_sha1"] = f.git_sha1
        if f.lfs:
            item["lfs"] = True
        files.append(item)
    return json.dumps(
        {"format": FORMAT, "repo_id": manifest.repo_id, "commit": manifest.commit, "files": files},
        indent=2,
        sort_keys=True,
    )
