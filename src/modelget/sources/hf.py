"""Hugging Face Hub and every HF-compatible mirror (hf-mirror, olah, Artifactory, nginx caches).

Metadata comes from huggingface_hub's ``HfApi`` pointed at the mirror's endpoint: the revision
is pinned to its commit (``repo_info``), then the recursive tree at that commit gives sizes,
``lfs.sha256`` for LFS files and the git blob sha1 for the rest. Datasets and spaces are the
same calls under the Hub's prefixes (``/api/datasets/...``, ``/datasets/{repo}/resolve/...``).

Tokens: ``HfApi(token=None)`` would attach the user's implicit token (``HF_TOKEN`` or the
login file) to whatever endpoint it is given, a third-party mirror included. So this adapter
always passes the token explicitly: the mirror entry's own token, or ``False`` (send none).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from modelget import http
from modelget._version import __version__
from modelget.auth import mirror_token, takes_hf_token
from modelget.datatypes import (
    REPO_URL_PREFIXES,
    FileEntry,
    Manifest,
    Mirror,
    MirrorKind,
    RepoType,
    is_commit,
)
from modelget.errors import (
    AuthRequiredError,
    MirrorUnavailableError,
    ModelgetError,
    ModelNotFoundError,
    RateLimitedError,
    ResolveError,
    RevisionNotFoundError,
    UnsafeManifestError,
    UsageError,
)
from modelget.http import Origin, is_transport_error, origin, origin_of
from modelget.manifest import check_manifest, check_path, check_size

DEFAULT_REVISION = "main"


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def private_hint(mirror: Mirror) -> str:
    """How to show ``mirror`` a private repo: the token it takes (never the token itself)."""
    check = "check the repo id; if it is private, "
    if takes_hf_token(mirror):
        return check + f"pass --token (or set HF_TOKEN) for mirror {mirror.name}"
    if mirror.token_env:
        return check + f"set {mirror.token_env} for mirror {mirror.name}"
    return check + f"give mirror {mirror.name} a token_env in mirrors.yaml (docs/mirrors.md)"


def map_hf_error(exc: Exception, mirror: Mirror, repo_id: str, revision: str) -> ModelgetError:
    """Turn a huggingface_hub / HTTP-stack exception into a modelget error."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

    where = f"{mirror.name} ({mirror.endpoint})"
    if isinstance(exc, GatedRepoError):
        return AuthRequiredError(
            f"{repo_id} is gated on {where}: it needs a token with access",
            hint=f"accept the model's terms on the hub, then set {mirror.token_env or 'a token_env'} "
            f"for mirror {mirror.name}",
        )
    if isinstance(exc, RepositoryNotFoundError):
        # The Hub answers a request without a token for a repo that does not exist, or is
        # private, with 401 RepoNotFound (it does not say which): most often a typo, so not
        # "needs a token". A gated repo says GatedRepo (above): that one needs a token.
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401 and mirror_token(mirror) is None:
            return ModelNotFoundError(
                f"{repo_id} on {where}: not found (or private: pass a token)",
                hint=private_hint(mirror),
                maybe_private=True,
            )
        if mirror_token(mirror) is not None:
            return ModelNotFoundError(
                f"{repo_id} not found on {where} (or the token has no access to it)"
            )
        return ModelNotFoundError(f"{repo_id} not found on {where}")
    if isinstance(exc, HfRevisionNotFound):
        return RevisionNotFoundError(f"revision {revision!r} of {repo_id} not found on {where}")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 429:
            retry = _retry_after(exc)
            return RateLimitedError(
                f"{where} is rate limiting requests (429)"
                + (f"; it asks to retry after {retry:g} s" if retry is not None else ""),
                retry_after_s=retry,
                hint="wait and retry, or add a token for this mirror (authenticated limits are higher)",
            )
        if status in (401, 403):
            return AuthRequiredError(f"{where} refused access to {repo_id} ({status})")
        return MirrorUnavailableError(f"{where} answered HTTP {status} for {repo_id}")
    if is_transport_error(exc):
        return MirrorUnavailableError(f"{where} is unreachable: {exc}")
    return ResolveError(f"{where}: unexpected answer for {repo_id}: {exc!r}")


_UNVERIFIED: Counter[Origin] = Counter()
"""Origins whose certificates are not checked right now (count of resolves in flight)."""
_UNVERIFIED_LOCK = threading.Lock()
_installed = False


def prepare_unverified() -> None:
    """Install the client that can skip TLS checks per origin (see :func:`unverified`).

    huggingface_hub sends every request through one process-wide client and has no per-call
    ``verify``; its documented hook for custom certificates is ``set_client_factory``. The
    installed client's transport picks, per request, a verifying transport, or a
    non-verifying one for an origin inside :func:`unverified`; every other origin keeps full
    checks. Installing replaces the shared client, so call this before requests run in
    parallel (``api`` does, before the probes). Idempotent.
    """
    global _installed
    with _UNVERIFIED_LOCK:
        if _installed:
            return
        from huggingface_hub.utils import _http as hf_http

        if not hasattr(hf_http, "set_client_factory"):  # huggingface_hub < 1.0 (requests)
            raise UsageError(
                "--insecure with an hf mirror needs huggingface_hub >= 1.0",
                hint="pip install -U huggingface_hub",
            )
        # httpx or httpx2, whichever this huggingface_hub runs on.
        http = importlib.import_module(type(hf_http.get_session()).__module__.split(".")[0])
        verified, unverified_ = http.HTTPTransport(), http.HTTPTransport(verify=False)

        class ByOrigin(http.BaseTransport):  # type: ignore[misc,name-defined]
            def handle_request(self, request: Any) -> Any:
                url = request.url
                skip = _UNVERIFIED.get(origin_of(url.scheme, url.host, url.port), 0) > 0
                return (unverified_ if skip else verified).handle_request(request)

            def close(self) -> None:
                verified.close()
                unverified_.close()

        def factory() -> Any:
            # huggingface_hub's default_client_factory, with the transport above.
            return http.Client(
                event_hooks={"request": [hf_http.hf_request_event_hook]},
                follow_redirects=True,
                timeout=None,
                transport=ByOrigin(),
            )

        hf_http.set_client_factory(factory)
        _installed = True


@contextlib.contextmanager
def unverified(endpoint: str) -> Iterator[None]:
    """huggingface_hub skips TLS certificate checks for ``endpoint``'s origin (and no other)
    while inside this block (``--insecure``)."""
    prepare_unverified()
    key = origin(endpoint)
    with _UNVERIFIED_LOCK:
        _UNVERIFIED[key] += 1
    try:
        yield
    finally:
        with _UNVERIFIED_LOCK:
            _UNVERIFIED[key] -= 1
            if _UNVERIFIED[key] <= 0:
                del _UNVERIFIED[key]


_Listing = tuple[str, bool, list[tuple[Any, Any, Any, Any]]]
"""A repo at a revision: its commit, whether it is gated, and per file (path, size, git blob
id, LFS sha256 or None), values as the mirror sent them (checked by the caller)."""

MAX_TREE_PAGES = 1000


def _plain_listing(
    mirror: Mirror, mirror_repo: str, rev: str, timeout: float, repo_type: RepoType = "model"
) -> _Listing | None:
    """The same two calls ``HfApi`` makes (model info at ``rev``, then the recursive tree at
    its commit), made with httpx directly: importing huggingface_hub and building its client
    cost about 0.12 s of CPU before the first byte of a pull. Only well-formed 200 answers are
    taken; anything else (an HTTP error, a redirect, an unexpected body, a next page on another
    origin) gives None, and the caller asks again through ``HfApi``, which maps it exactly as
    before. A connection failure or timeout is the mirror's answer and raised as such, so a
    dead mirror does not cost its timeout twice. The token (the mirror's own, never an
    implicit one) goes to the mirror's endpoint only: no redirect is followed."""
    import httpx

    headers: dict[str, str] = {}
    token = mirror_token(mirror)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    base = mirror.endpoint.rstrip("/")
    api = f"{base}/api/{repo_type}s/{mirror_repo}"
    origin = urlsplit(base)[:2]
    try:
        with http.client(timeout=timeout, verify_tls=mirror.verify_tls, headers=headers) as client:
            answer = client.get(f"{api}/revision/{quote(rev, safe='')}")
            info = answer.json() if answer.status_code == 200 else None
            if not isinstance(info, dict):
                return None
            commit, gated = info.get("sha"), info.get("gated", False)
            if not is_commit(commit):
                return None
            if not isinstance(gated, (bool, str)):
                return None
            files: list[tuple[Any, Any, Any, Any]] = []
            url: str | None = f"{api}/tree/{commit}"
            params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
            for _ in range(MAX_TREE_PAGES):
                if url is None:
                    return commit, bool(gated), files
                answer = client.get(url, params=params)
                page = answer.json() if answer.status_code == 200 else None
                if not isinstance(page, list):
                    return None
                for e in page:
                    if not isinstance(e, dict) or e.get("type") not in ("file", "directory"):
                        return None
                    if e["type"] != "file":
                        continue
                    lfs = e.get("lfs")
                    if lfs is not None and not (
                        isinstance(lfs, dict) and isinstance(lfs.get("oid"), str)
                    ):
                        return None
                    files.append(
                        (e.get("path"), e.get("size"), e.get("oid"), lfs["oid"] if lfs else None)
                    )
                following = answer.links.get("next", {}).get("url")
                if following is not None and urlsplit(following)[:2] != origin:
                    return None
                url, params = following, None
            return None
    except httpx.TransportError as exc:
        raise MirrorUnavailableError(
            f"{mirror.name} ({mirror.endpoint}) is unreachable: {exc}"
        ) from exc
    except (httpx.HTTPError, ValueError):  # a body that is not JSON, a bad URL, ...
        return None


class HfSource:
    kind: MirrorKind = "hf"

    def _api(self, mirror: Mirror) -> Any:
        from huggingface_hub import HfApi

        token = mirror_token(mirror)
        return HfApi(
            endpoint=mirror.endpoint,
            token=token if token else False,
            library_name="modelget",
            library_version=__version__,
        )

    def resolve(
        self,
        mirror: Mirror,
        repo_id: str,
        revision: str | None,
        *,
        timeout: float,
        repo_type: RepoType = "model",
    ) -> Manifest:
        mirror_repo = mirror.map_repo_id(repo_id)
        rev = revision or DEFAULT_REVISION
        listing = _plain_listing(mirror, mirror_repo, rev, timeout, repo_type)
        if listing is None:
            listing = self._listing(mirror, repo_id, mirror_repo, rev, timeout, repo_type)
        commit, gated, entries = listing
        try:
            files = tuple(
                sorted(
                    (
                        FileEntry(
                            path=check_path(path),
                            size=check_size(size, path),
                            sha256=(lfs_sha256.lower() if lfs_sha256 is not None else None),
                            git_sha1=None if lfs_sha256 is not None else (blob_id or None),
                            lfs=lfs_sha256 is not None,
                        )
                        for path, size, blob_id, lfs_sha256 in entries
                    ),
                    key=lambda f: f.path,
                )
            )
        except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong type
            raise UnsafeManifestError(
                f"{mirror.name} ({repo_id}): malformed file listing: {type(exc).__name__}: {exc}"
            ) from None
        if gated and mirror_token(mirror) is None:
            raise AuthRequiredError(
                f"{repo_id} is gated on {mirror.name} ({mirror.endpoint}): downloading needs a token",
                hint=f"accept the model's terms on the hub, then set "
                f"{mirror.token_env or 'a token_env'} for mirror {mirror.name}",
            )
        return check_manifest(
            Manifest(
                repo_id=repo_id,
                revision=rev,
                commit=commit,
                files=files,
                mirror=mirror.name,
                mirror_repo_id=mirror_repo,
                gated=gated,
                repo_type=repo_type,
            )
        )

    def _listing(
        self,
        mirror: Mirror,
        repo_id: str,
        mirror_repo: str,
        rev: str,
        timeout: float,
        repo_type: RepoType = "model",
    ) -> _Listing:
        """The commit, the gated flag and the files, through huggingface_hub's ``HfApi``
        (which maps every error the hub can answer)."""
        from huggingface_hub.hf_api import RepoFile

        api = self._api(mirror)
        tls = contextlib.nullcontext() if mirror.verify_tls else unverified(mirror.endpoint)
        try:
            with tls:
                info = api.repo_info(
                    mirror_repo, revision=rev, repo_type=repo_type, timeout=timeout
                )
                commit = info.sha
                if not commit:
                    raise ResolveError(f"{mirror.name} gave no commit for {repo_id}@{rev}")
                if not is_commit(commit):
                    raise UnsafeManifestError(
                        f"{mirror.name} ({repo_id}): refusing the commit id {commit!r:.80}: "
                        "it is not 40 hex digits"
                    )
                entries = [
                    e
                    for e in api.list_repo_tree(
                        mirror_repo, revision=commit, recursive=True, repo_type=repo_type
                    )
                    if isinstance(e, RepoFile)
                ]
        except ModelgetError:
            raise
        except Exception as exc:
            raise map_hf_error(exc, mirror, repo_id, rev) from exc
        try:
            files = [
                (e.path, e.size, e.blob_id, e.lfs.sha256 if e.lfs is not None else None)
                for e in entries
            ]
        except AttributeError as exc:  # an lfs field of the wrong type
            raise UnsafeManifestError(
                f"{mirror.name} ({repo_id}): malformed file listing: {type(exc).__name__}: {exc}"
            ) from None
        return commit, bool(getattr(info, "gated", False)), files

    def file_url(self, mirror: Mirror, manifest: Manifest, entry: FileEntry) -> str:
        repo = REPO_URL_PREFIXES[manifest.repo_type] + (manifest.mirror_repo_id or manifest.repo_id)
        return f"{mirror.endpoint}/{repo}/resolve/{manifest.commit}/{quote(entry.path)}"

    def ping_url(self, mirror: Mirror) -> str:
        return f"{mirror.endpoint}/api/models?limit=1"
