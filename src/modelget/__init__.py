"""modelget: get a model's files onto this machine fast, intact and ready to load.

    import modelget
    result = modelget.pull("Qwen/Qwen2.5-0.5B-Instruct")   # -> PullResult
    plan = modelget.plan("Qwen/Qwen2.5-0.5B-Instruct")     # -> Plan (what pull would do)
    summary = modelget.probe("Qwen/Qwen2.5-0.5B-Instruct") # -> ProbeSummary (ranked mirrors)
    lock = modelget.lock(["Qwen/Qwen2.5-0.5B-Instruct"])   # -> Lockfile (commit + digests)
    for model in lock.models:                              # ... later, on another machine:
        modelget.pull(model.repo_id, locked=model)         # exactly the locked bytes
    modelget.verify("Qwen/Qwen2.5-0.5B-Instruct").ok       # re-hash what is on disk
    modelget.load_test("Qwen/Qwen2.5-0.5B-Instruct").ok    # every tensor loads

Every error is a ``modelget.ModelgetError`` with a stable ``code`` and an ``exit_code``; every
error class is exported here. Progress goes to a ``modelget.Reporter`` (subclass it and
override what you need), notes to the ``modelget`` logger. The whole API: docs/api.md.

The pipeline functions are loaded on first use, so ``import modelget`` stays fast. The names
of the API's functions win over the modules of the same name (``modelget.plan``,
``modelget.probe``, ``modelget.verify``, ``modelget.export``, ``modelget.doctor`` are always
the functions); code that wants such a module imports from it (``from modelget.verify import
hash_file``).
"""

from __future__ import annotations

import logging
import sys
import types
from typing import TYPE_CHECKING, Any

from modelget.catalogue import load_catalogue
from modelget.datatypes import (
    Catalogue,
    FileEntry,
    FileOutcome,
    Manifest,
    Mirror,
    Plan,
    PlanItem,
    ProbeResult,
    PullResult,
    RankedMirror,
)
from modelget.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_USAGE,
    EXIT_VERIFY,
    AuthRequiredError,
    ConfigError,
    EngineUnavailableError,
    FixtureError,
    InsufficientDiskSpaceError,
    InternalError,
    Interrupted,
    LayoutError,
    LockedCommitMissingError,
    LockfileError,
    LockMismatchError,
    MirrorsUnreachableError,
    MirrorUnavailableError,
    ModelgetError,
    ModelNotFoundError,
    NoMirrorError,
    NotInCacheError,
    OfflineMissingError,
    RateLimitedError,
    ResolveError,
    RevisionNotFoundError,
    TorrentError,
    TorrentMismatchError,
    TransferError,
    UnsafeManifestError,
    UsageError,
    VerificationError,
)
from modelget.events import NullReporter, Reporter
from modelget.swarm.options import SwarmOptions

if TYPE_CHECKING:
    from modelget.api import (
        ProbeSummary,
        doctor,
        export,
        list_models,
        load_test,
        lock,
        model_root,
        plan,
        probe,
        pull,
        remove,
        swarm_serve,
        verify,
    )
    from modelget.cache import CachedModel, RemoveResult, VerifyResult
    from modelget.doctor import DoctorReport
    from modelget.engines import EngineOptions
    from modelget.export import ExportResult
    from modelget.loadtest import LoadReport
    from modelget.lockfile import LockedModel, Lockfile
    from modelget.lockfile import dumps as dump_lockfile
    from modelget.lockfile import load as load_lockfile
    from modelget.swarm.serve import SwarmServeResult

from modelget._version import __version__

# A library logs and leaves the handlers to the application: without one configured, nothing
# is printed (not even warnings, which Python's last-resort handler would print).
logging.getLogger("modelget").addHandler(logging.NullHandler())

__all__ = [  # noqa: RUF022 (plain sorted(), as tests/test_public_api.py checks)
    "AuthRequiredError",
    "CachedModel",
    "Catalogue",
    "ConfigError",
    "DoctorReport",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "EXIT_VERIFY",
    "EngineOptions",
    "EngineUnavailableError",
    "ExportResult",
    "FileEntry",
    "FileOutcome",
    "FixtureError",
    "InsufficientDiskSpaceError",
    "InternalError",
    "Interrupted",
    "LayoutError",
    "LoadReport",
    "LockMismatchError",
    "LockedCommitMissingError",
    "LockedModel",
    "Lockfile",
    "LockfileError",
    "Manifest",
    "Mirror",
    "MirrorUnavailableError",
    "MirrorsUnreachableError",
    "ModelNotFoundError",
    "ModelgetError",
    "NoMirrorError",
    "NotInCacheError",
    "NullReporter",
    "OfflineMissingError",
    "Plan",
    "PlanItem",
    "ProbeResult",
    "ProbeSummary",
    "PullResult",
    "RankedMirror",
    "RateLimitedError",
    "RemoveResult",
    "Reporter",
    "ResolveError",
    "RevisionNotFoundError",
    "SwarmOptions",
    "SwarmServeResult",
    "TorrentError",
    "TorrentMismatchError",
    "TransferError",
    "UnsafeManifestError",
    "UsageError",
    "VerificationError",
    "VerifyResult",
    "__version__",
    "doctor",
    "dump_lockfile",
    "export",
    "list_models",
    "load_catalogue",
    "load_lockfile",
    "load_test",
    "lock",
    "model_root",
    "plan",
    "probe",
    "pull",
    "remove",
    "swarm_serve",
    "verify",
]

# name -> (module, attribute there)
_LAZY = {
    **{
        name: ("modelget.api", name)
        for name in (
            "doctor",
            "export",
            "list_models",
            "load_test",
            "lock",
            "model_root",
            "plan",
            "probe",
            "pull",
            "remove",
            "swarm_serve",
            "verify",
            "ProbeSummary",
        )
    },
    "CachedModel": ("modelget.cache", "CachedModel"),
    "RemoveResult": ("modelget.cache", "RemoveResult"),
    "VerifyResult": ("modelget.cache", "VerifyResult"),
    "DoctorReport": ("modelget.doctor", "DoctorReport"),
    "EngineOptions": ("modelget.engines", "EngineOptions"),
    "ExportResult": ("modelget.export", "ExportResult"),
    "LoadReport": ("modelget.loadtest", "LoadReport"),
    "Lockfile": ("modelget.lockfile", "Lockfile"),
    "LockedModel": ("modelget.lockfile", "LockedModel"),
    "dump_lockfile": ("modelget.lockfile", "dumps"),
    "load_lockfile": ("modelget.lockfile", "load"),
    "SwarmServeResult": ("modelget.swarm.serve", "SwarmServeResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modelget' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The package, where an API function's name is never taken by its module.

    Importing a submodule sets it as an attribute of its package, so importing
    ``modelget.plan`` (the planner, which ``modelget.api`` itself imports) would replace the
    function ``modelget.plan`` with the module. This keeps the function: the module is still
    in ``sys.modules`` for ``from modelget.plan import ...``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
