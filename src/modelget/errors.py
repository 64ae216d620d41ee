"""The one error root of modelget, with a stable code, a hint and an exit code.

Nothing here imports from the rest of modelget: every stage may raise these.

    ModelgetError                      exit 1
    ├── UsageError                     exit 2   bad command-line input
    ├── ConfigError                    exit 2   bad settings or mirrors.yaml (names file, line, field)
    ├── ResolveError                   exit 1
    │   ├── ModelNotFoundError         exit 1
    │   ├── RevisionNotFoundError      exit 1
    │   ├── AuthRequiredError          exit 1
    │   ├── RateLimitedError           exit 1
    │   ├── UnsafeManifestError        exit 1
    │   ├── NoMirrorError              exit 1
    │   └── LockedCommitMissingError   exit 1   (pull --lock: no mirror has the locked commit)
    ├── TransferError                  exit 1
    │   └── MirrorUnavailableError     exit 1
    ├── VerificationError              exit 4
    │   └── LockMismatchError          exit 4   (pull --lock: mirrors list other bytes)
    ├── LockfileError                  exit 2   (the lockfile is unreadable or malformed)
    ├── TorrentError                   exit 1   (swarm: a .torrent is malformed)
    │   └── TorrentMismatchError       exit 1   (swarm: a torrent is not the manifest's blob)
    ├── LayoutError                    exit 1
    │   └── InsufficientDiskSpaceError exit 1
    ├── NotInCacheError                exit 1   (verify/rm: model or revision not in the cache)
    ├── EngineUnavailableError         exit 1
    ├── FixtureError                   exit 1   (test/demo fixtures could not be prepared)
    └── Interrupted                    exit 130

Library errors (httpx, aria2p, yaml, huggingface_hub, modelscope_hub) are mapped to these at
the boundary where they happen, with ``raise ... from exc``; callers of the API never see them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_VERIFY = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""128 + SIGTERM, what a shell reports for a process SIGTERM ended (docker stop, Kubernetes)."""


class ModelgetError(Exception):
    """Root of every error modelget raises on purpose.

    ``code`` is kebab-case and stable: scripts match on it. ``hint`` tells the user what to do.
    (What is retried, and where, is decided from data by ``retry`` and the engines: no error
    carries flags for it.)
    """

    code: str = "error"
    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class UsageError(ModelgetError):
    """A bad argument: a malformed repo id or revision, a bad flag or option combination."""

    code = "usage"
    exit_code = EXIT_USAGE


class ConfigError(ModelgetError):
    """A settings value or a catalogue file is invalid.

    ``path``, ``line`` and ``field`` locate the problem so the message can point at it.
    """

    code = "config-invalid"
    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = path + (f":{line}" if line is not None else "") + ": "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}", hint=hint)
        self.path = path
        self.line = line
        self.field = field


class ResolveError(ModelgetError):
    """No mirror can serve what was asked for (each subclass says why)."""

    code = "resolve-failed"


class ModelNotFoundError(ResolveError):
    """No mirror has the repo. ``maybe_private``: the mirror answered as the Hub answers a request
    without a token for a repo that does not exist *or* is private (401 ``RepoNotFound``): a
    token may show it."""

    code = "model-not-found"

    def __init__(
        self, message: str, *, hint: str | None = None, maybe_private: bool = False
    ) -> None:
        super().__init__(message, hint=hint)
        self.maybe_private = maybe_private


class RevisionNotFoundError(ResolveError):
    """The repo exists, but not the branch, tag or commit asked for."""

    code = "revision-not-found"


class AuthRequiredError(ResolveError):
    """The repo needs a token that no mirror was given (or it was refused)."""

    code = "auth-required"


class RateLimitedError(ResolveError):
    """The mirrors refused with 429 (``retry_after_s`` when they said how long)."""

    code = "rate-limited"

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class UnsafeManifestError(ResolveError):
    """A mirror listed a path that could escape the destination (``..``, absolute, NUL...)."""

    code = "unsafe-manifest"


class NoMirrorError(ResolveError):
    """Mirrors answered, and none can serve the repo (or none is enabled)."""

    code = "no-mirror"


class MirrorsUnreachableError(NoMirrorError):
    """No mirror answered at all (down, timing out, failing): an outage or no egress, not a
    repo that is missing or private. A pull then falls back to what is on disk when that is
    complete."""

    code = "mirrors-unreachable"


class LockedCommitMissingError(ResolveError):
    """``pull --lock``: no mirror has the commit the lockfile pins (force-pushed, deleted)."""

    code = "locked-commit-missing"


class OfflineMissingError(ResolveError):
    """Offline (or every mirror unreachable): what the pull asks for is not complete on disk."""

    code = "offline-missing"


class TransferError(ModelgetError):
    """Files could not be transferred (a pull reports per-file failures in its result)."""

    code = "transfer-failed"


class MirrorUnavailableError(TransferError):
    """A mirror could not give a file's bytes (its URL did not resolve to one that serves them)."""

    code = "mirror-unavailable"


class VerificationError(ModelgetError):
    """Bytes do not match their recorded size or digest."""

    code = "verification-failed"
    exit_code = EXIT_VERIFY


class LockMismatchError(VerificationError):
    """``pull --lock``: the mirrors list the locked commit with other files, sizes or digests."""

    code = "lock-mismatch"


class LockfileError(ModelgetError):
    """The lockfile cannot be read or is not a modelget lockfile."""

    code = "lockfile-invalid"
    exit_code = EXIT_USAGE


class TorrentError(ModelgetError):
    """A ``.torrent`` file (untrusted input: swarm mode) is malformed, too big, or describes
    another blob than the manifest's entry (name or length disagree): it is refused."""

    code = "torrent-invalid"


class TorrentMismatchError(TorrentError):
    """A torrent whose name (sha256) or length disagree with the manifest entry it was
    meant for: refused, never downloaded."""

    code = "torrent-mismatch"


class LayoutError(ModelgetError):
    """Files could not be put in place (or a model is not in the cache for ``export``)."""

    code = "layout-failed"


class InsufficientDiskSpaceError(LayoutError):
    """The files do not fit on the destination's disk (or it filled)."""

    code = "disk-full"


class NotInCacheError(ModelgetError):
    """``verify``/``rm`` named a model or revision that the cache does not hold."""

    code = "not-in-cache"


class EngineUnavailableError(ModelgetError):
    """The engine cannot run: ``engine="aria2"`` without aria2c, or aria2c would not start."""

    code = "engine-unavailable"


class FixtureError(ModelgetError):
    """The test or demo fixtures could not be prepared."""

    code = "fixture-unavailable"


class InternalError(ModelgetError):
    """A bug: an exception modelget did not expect. The CLI reports it with this code (and the
    traceback on stderr, for the report) instead of dying without its JSON line."""

    code = "internal-error"


class Interrupted(ModelgetError):
    """Stopped on request (Ctrl-C, SIGTERM, ``cancel``); resumable state is kept."""

    code = "interrupted"
    exit_code = EXIT_INTERRUPTED
