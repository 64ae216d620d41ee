"""modelget: get a model's files onto this machine fast, intact and ready to load.

    import modelget
    result = modelget.pull("Qwen/Qwen2.5-0.5B-Instruct")   # -> PullResult
    plan = modelget.plan("Qwen/Qwen2.5-0.5B-Instruct")     # -> Plan (what pull would do)
    summary = modelget.probe("Qwen/Qwen2.5-0.5B-Instruct") # -> ProbeSummary (ranked mirrors)
    lock = modelget.lock(["Qwen/Qwen2.5-0.5B-Instruct"])   # -> Lockfile (commit + digests)
    for model in lock.models:                              # ... later, on another machine:
        modelget.pull(model.repo_id, locked=model)         # exactly the locked bytes

The pipeline functions are loaded on first use, so ``import modelget`` stays fast.
"""

from __future__ import annotations

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
from modelget.errors import ConfigError, ModelgetError

if TYPE_CHECKING:
    from modelget.api import ProbeSummary, doctor, export, lock, plan, probe, pull
    from modelget.engines import EngineOptions
    from modelget.lockfile import LockedModel, Lockfile

from modelget._version import __version__

__all__ = [
    "Catalogue",
    "ConfigError",
    "EngineOptions",
    "FileEntry",
    "FileOutcome",
    "LockedModel",
    "Lockfile",
    "Manifest",
    "Mirror",
    "ModelgetError",
    "Plan",
    "PlanItem",
    "ProbeResult",
    "ProbeSummary",
    "PullResult",
    "RankedMirror",
    "__version__",
    "doctor",
    "export",
    "load_catalogue",
    "lock",
    "plan",
    "probe",
    "pull",
]

_LAZY = {
    "pull": "modelget.api",
    "plan": "modelget.api",
    "probe": "modelget.api",
    # modelget.api.verify is not re-exported: modelget.verify is the digest module.
    "list_models": "modelget.api",
    "remove": "modelget.api",
    "lock": "modelget.api",
    "doctor": "modelget.api",
    "export": "modelget.api",
    "Lockfile": "modelget.lockfile",
    "LockedModel": "modelget.lockfile",
    "ProbeSummary": "modelget.api",
    "EngineOptions": "modelget.engines",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modelget' has no attribute {name!r}")
