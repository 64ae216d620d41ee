"""ModelScope, through the official ``modelscope-hub`` client (``modelscope_hub.HubApi``).

ModelScope ids can differ from Hugging Face ids (``meta-llama/...`` is ``LLM-Research/...``):
the mirror entry's ``id_map`` translates them. With no revision given, ModelScope's default
branch ``master`` is used, as its own client does.

Datasets: the same client calls with ``repo_type="dataset"``, which modelscope-hub routes to
``/api/v1/datasets/{owner}/{name}/...`` (its listing is ``repo/tree``, paged: the client pages
through it). Spaces: ModelScope's studios are apps with no download API (its client's
``download`` takes ``--repo-type model|dataset`` only), so a ModelScope mirror lacks every space.

Tokens: ``HubApi()`` picks up ``MODELSCOPE_API_TOKEN`` or the stored login by itself; passing
``token=""`` is the client's documented way to run without local credentials, so a mirror whose
entry names no ``token_env`` never receives one.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any
from urllib.parse import quote

from modelget.auth import mirror_token
from modelget.datatypes import (
    MS_REPO_TYPES,
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
)
from modelget.http import is_transport_error
from modelget.manifest import check_manifest, check_path, check_size

DEFAULT_REVISION = "master"
_DEFAULT_CONFIG_LOCK = threading.Lock()


def _skip_certificate_checks(api: Any) -> None:
    """``--insecure``: no TLS certificate checks for this HubApi (this mirror only).

    modelscope-hub has no option for it; its clients talk through ``requests`` sessions, so
    each session of this HubApi is told not to verify. ``session.verify = False`` alone is
    not enough: requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override it per
    request, so the session's environment merge is wrapped too. urllib3's per-request
    warning is silenced: modelget warned once already.
    """
    import warnings

    from urllib3.exceptions import InsecureRequestWarning

    warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    for client in (api.legacy, api.openapi):
        for name in ("_session", "_read_session"):
            session = getattr(client, name, None)
            if session is not None:
                session.verify = False
                session.merge_environment_settings = _no_verify(session.merge_environment_settings)


def _no_verify(merge: Any) -> Any:
    def merged(*args: Any, **kwargs: Any) -> Any:
        settings = merge(*args, **kwargs)
        settings["verify"] = False
        return settings

    return merged


def _quiet_default_config() -> None:
    """Make modelscope-hub's process-wide default configuration without its warning that
    ``MODELSCOPE_DOMAIN`` is deprecated: modelget reads that variable itself (it may make the
    ``modelscope-endpoint`` mirror, docs/mirrors.md) and always gives the client an explicit
    endpoint, so the warning would be noise on every run. The client builds that configuration
    on first use (for its user agent, say) even when given an endpoint."""
    from modelscope_hub import get_default_config

    with _DEFAULT_CONFIG_LOCK, warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Environment variable MODELSCOPE_DOMAIN is deprecated"
        )
        get_default_config()


class ModelScopeSource:
    kind: MirrorKind = "modelscope"

    def _api(self, mirror: Mirror, timeout: float) -> Any:
        from modelscope_hub import HubApi

        _quiet_default_config()
        api = HubApi(endpoint=mirror.endpoint, token=mirror_token(mirror) or "")
        if not mirror.verify_tls:
            _skip_certificate_checks(api)
        return api

    def _map_error(
        self,
        exc: Exception,
        api: Any,
        mirror: Mirror,
        repo_id: str,
        ms_id: str,
        rev: str,
        repo_type: RepoType = "model",
    ) -> ModelgetError:
        import modelscope_hub as ms

        where = f"{mirror.name} ({mirror.endpoint})"
        shown = repo_id if ms_id == repo_id else f"{repo_id} (as {ms_id})"
        if repo_type != "model":
            shown = f"{repo_type} {shown}"
        if isinstance(exc, (ms.AuthenticationError, ms.PermissionDeniedError)):
            return AuthRequiredError(
                f"{where} refused access to {shown}",
                hint=f"set {mirror.token_env or 'a token_env'} for mirror {mirror.name}",
            )
        if isinstance(exc, ms.RateLimitError):
            retry = getattr(exc, "retry_after", None)
            return RateLimitedError(
                f"{where} is rate limiting requests (429)",
                retry_after_s=float(retry) if isinstance(retry, (int, float)) else None,
                hint="wait and retry, or add a token for this mirror",
            )
        if isinstance(exc, (ms.NotExistError, ms.NotFoundError)):
            try:
                exists = bool(api.repo_exists(ms_id, repo_type))
            except Exception:
                exists = False
            if exists:
                return RevisionNotFoundError(f"revision {rev!r} of {shown} not found on {where}")
            return ModelNotFoundError(f"{shown} not found on {where}")
        if isinstance(exc, (ms.NetworkError, ms.RequestTimeoutError)) or is_transport_error(exc):
            return MirrorUnavailableError(f"{where} is unreachable: {exc}")
        if isinstance(exc, ms.ServerError):
            return MirrorUnavailableError(f"{where} failed: {exc}")
        return ResolveError(f"{where}: unexpected answer for {shown}: {exc!r}")

    def resolve(
        self,
        mirror: Mirror,
        repo_id: str,
        revision: str | None,
        *,
        timeout: float,
        repo_type: RepoType = "model",
    ) -> Manifest:
        if repo_type not in MS_REPO_TYPES:
            # ModelScope's studios have no download API: the mirror lacks every space.
            raise ModelNotFoundError(
                f"{mirror.name} ({mirror.endpoint}): ModelScope serves no {repo_type} "
                f"downloads ({repo_id}); its studios are apps, not repos to fetch",
                hint="spaces come from Hugging Face (hf) mirrors",
            )
        ms_id = mirror.map_repo_id(repo_id)
        rev = revision or DEFAULT_REVISION
        api = self._api(mirror, timeout)
        try:
            # A dataset's listing is paged (repo/tree): the client pages through it all.
            listed = api.list_repo_files(ms_id, repo_type, revision=rev, recursive=True)
            commit = rev if is_commit(rev) else self._commit_of(api, ms_id, rev, repo_type)
        except ModelgetError:
            raise
        except Exception as exc:
            raise self._map_error(exc, api, mirror, repo_id, ms_id, rev, repo_type) from exc
        try:
            files = tuple(
                sorted(
                    (
                        FileEntry(
                            path=check_path(f.path),
                            size=check_size(f.size, f.path),
                            sha256=(f.sha256.lower() if f.sha256 else None),
                            lfs=bool(f.is_lfs),
                        )
                        for f in listed
                        if not f.is_dir
                    ),
                    key=lambda f: f.path,
                )
            )
        except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong type
            raise UnsafeManifestError(
                f"{mirror.name} ({repo_id}): malformed file listing: {type(exc).__name__}: {exc}"
            ) from None
        return check_manifest(
            Manifest(
                repo_id=repo_id,
                revision=rev,
                commit=commit,
                files=files,
                mirror=mirror.name,
                mirror_repo_id=ms_id,
                repo_type=repo_type,
            )
        )

    @staticmethod
    def _commit_of(api: Any, ms_id: str, rev: str, repo_type: RepoType = "model") -> str:
        """The commit id a branch or tag points at, when the service says; else ``rev``."""
        try:
            revisions = api.list_repo_revisions(ms_id, repo_type)
        except Exception:
            return rev
        entries: list[Any] = []
        if isinstance(revisions, dict):
            rmap = revisions.get("RevisionMap", revisions)
            entries = list(rmap.get("Branches") or []) + list(rmap.get("Tags") or [])
        elif isinstance(revisions, list):
            entries = revisions
        for entry in entries:
            if isinstance(entry, dict) and entry.get("Revision") == rev:
                commit = entry.get("CommitId") or entry.get("Commit")
                if is_commit(commit):
                    return commit
        return rev

    def file_url(self, mirror: Mirror, manifest: Manifest, entry: FileEntry) -> str:
        # The revision *name* goes in the URL, as ModelScope's own client does; the bytes are
        # verified against the manifest's sha256 whatever the branch does meanwhile.
        # modelscope-hub's own URL (``LegacyClient.get_download_url``), built here because the
        # engines fetch it, not the client: ``/api/v1/{models|datasets}/{owner}/{name}/repo``.
        repo = manifest.mirror_repo_id or manifest.repo_id
        return (
            f"{mirror.endpoint}/api/v1/{manifest.repo_type}s/{repo}/repo"
            f"?Revision={quote(manifest.revision, safe='')}&FilePath={quote(entry.path, safe='')}"
        )

    def ping_url(self, mirror: Mirror) -> str:
        return f"{mirror.endpoint}/api/v1/models/"
