"""Lockfiles: which commit of which model, with every file's size and digests.

``modelget lock REPO_ID... > models.lock`` writes one; ``modelget pull --lock models.lock``
reproduces exactly those bytes. The format is JSON (deterministic: sorted, no timestamps, so
a lockfile diffs cleanly in review and two runs against the same mirrors write the same file)::

    {
      "lockfile": "modelget/1",
      "models": [
        {
          "repo_id": "sentence-transformers/all-MiniLM-L6-v2",
          "revision": "main",
          "commit": "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
          "files": [
            {"path": "config.json", "size": 612, "git_sha1": "72b987fd..."},
            {"path": "model.safetensors", "size": 90868376, "sha256": "53aa5117...", "lfs": true}
          ]
        }
      ]
    }

A dataset or a space carries ``"repo_type": "dataset"`` (or ``"space"``); a model has no such
key (absent means ``model``, so lockfiles written before repo types read as they did).

Everything read from a lockfile is checked as untrusted input: paths with
:func:`~modelget.manifest.check_path`, digests as hex of the right length, sizes as
non-negative integers. The comparison of a fresh manifest with a locked model
(:func:`check_entries`) is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelget.datatypes import (
    REPO_TYPES,
    Disagreement,
    FileEntry,
    RepoType,
    is_sha1_hex,
    is_sha256_hex,
)
from modelget.errors import LockfileError, ModelgetError, UnsafeManifestError
from modelget.manifest import check_path, check_repo_id, check_revision

FORMAT = "modelget/1"


@dataclass(frozen=True)
class LockedModel:
    """One model pinned by a lockfile: the commit and every file with its digests."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[FileEntry, ...]
    repo_type: RepoType = "model"

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Lockfile:
    models: tuple[LockedModel, ...]

    def select(self, repo_ids: Sequence[str]) -> tuple[LockedModel, ...]:
        """The locked models for ``repo_ids`` (all when empty); an unknown id is an error."""
        if not repo_ids:
            return self.models
        missing = [r for r in repo_ids if not any(m.repo_id == r for m in self.models)]
        if missing:
            raise LockfileError(
                f"not in the lockfile: {', '.join(missing)}",
                hint="run `modelget lock` again with these models, or pull them without --lock",
            )
        return tuple(m for m in self.models if m.repo_id in repo_ids)


# --- writing ---------------------------------------------------------------------------------


def _file_dict(entry: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": entry.path, "size": entry.size}
    if entry.sha256:
        out["sha256"] = entry.sha256.lower()
    if entry.git_sha1:
        out["git_sha1"] = entry.git_sha1.lower()
    if entry.lfs:
        out["lfs"] = True
    return out


def dumps(lock: Lockfile) -> str:
    """The lockfile as text (``modelget.dump_lockfile``): stable order, one trailing newline.

    Args:
        lock: what :func:`modelget.lock` returned (or :func:`load` read).
    """
    models = sorted(lock.models, key=lambda m: (m.repo_id, m.repo_type, m.commit))
    doc = {
        "lockfile": FORMAT,
        "models": [
            {
                "repo_id": m.repo_id,
                **({"repo_type": m.repo_type} if m.repo_type != "model" else {}),
                "revision": m.revision,
                "commit": m.commit,
                "files": [_file_dict(f) for f in sorted(m.files, key=lambda f: f.path)],
            }
            for m in models
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


# --- reading ---------------------------------------------------------------------------------


def _bad(where: str, message: str) -> LockfileError:
    return LockfileError(
        f"{where}: {message}",
        hint="regenerate it with `modelget lock REPO_ID... > models.lock`",
    )


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(where, f"`{key}` must be a non-empty string")
    return value


def _digest(
    obj: dict[str, Any], key: str, valid: Callable[[object], bool], where: str
) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not valid(value.lower()):
        raise _bad(where, f"`{key}` is not a {key.replace('_', ' ')} hex digest")
    return value.lower()


def _file(obj: Any, where: str) -> FileEntry:
    if not isinstance(obj, dict):
        raise _bad(where, "a file must be an object")
    path = _str(obj, "path", where)
    try:
        check_path(path)
    except UnsafeManifestError as exc:
        raise _bad(where, exc.message) from None
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(f"{where} ({path})", "`size` must be a non-negative integer")
    sha256 = _digest(obj, "sha256", is_sha256_hex, f"{where} ({path})")
    git_sha1 = _digest(obj, "git_sha1", is_sha1_hex, f"{where} ({path})")
    if not sha256 and not git_sha1:
        raise _bad(f"{where} ({path})", "a file needs a sha256 or a git_sha1")
    lfs = obj.get("lfs", False)
    if not isinstance(lfs, bool):
        raise _bad(f"{where} ({path})", "`lfs` must be true or false")
    return FileEntry(path, size, sha256, git_sha1, lfs)


def _model(obj: Any, where: str) -> LockedModel:
    if not isinstance(obj, dict):
        raise _bad(where, "a model must be an object")
    repo_id = _str(obj, "repo_id", where)
    try:
        check_repo_id(repo_id)
    except ModelgetError as exc:
        raise _bad(where, exc.message) from None
    where = f"{where} ({repo_id})"
    repo_type = obj.get("repo_type", "model")
    if repo_type not in REPO_TYPES:
        raise _bad(where, f"`repo_type` must be one of {', '.join(REPO_TYPES)}")
    commit = _str(obj, "commit", where)
    if not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit):
        raise _bad(where, f"`commit` must be a commit hash, not {commit!r}")
    revision = obj.get("revision", commit)
    if not isinstance(revision, str) or not revision:
        raise _bad(where, "`revision` must be a non-empty string")
    try:
        check_revision(revision)  # it names refs/<revision> in the cache
    except ModelgetError as exc:
        raise _bad(where, exc.message) from None
    files = obj.get("files")
    if not isinstance(files, list) or not files:
        raise _bad(where, "`files` must be a non-empty list")
    entries = tuple(_file(f, f"{where} files[{i}]") for i, f in enumerate(files))
    seen: set[str] = set()
    for e in entries:
        if e.path in seen:
            raise _bad(where, f"file listed twice: {e.path}")
        seen.add(e.path)
    return LockedModel(repo_id, revision, commit.lower(), entries, repo_type)


def loads(text: str, *, source: str = "lockfile") -> Lockfile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"{source}:{exc.lineno}", f"not JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("lockfile") != FORMAT:
        raise _bad(source, f'not a modelget lockfile (expected "lockfile": "{FORMAT}")')
    models = doc.get("models")
    if not isinstance(models, list):
        raise _bad(source, "`models` must be a list")
    parsed = tuple(_model(m, f"{source}: models[{i}]") for i, m in enumerate(models))
    keys = [(m.repo_type, m.repo_id, m.commit) for m in parsed]
    if len(set(keys)) != len(keys):
        raise _bad(source, "a model is locked twice at the same commit")
    return Lockfile(parsed)


def load(path: str | Path) -> Lockfile:
    """Read a lockfile (``modelget.load_lockfile``), checked as untrusted input.

    Args:
        path: a file written by ``modelget lock`` or :func:`dumps`.

    Raises:
        LockfileError: it cannot be read or is not a valid modelget lockfile (exit code 2).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockfileError(
            f"cannot read lockfile {path}: {exc}",
            hint="give the path of a file written by `modelget lock`",
        ) from None
    return loads(text, source=str(path))


# --- checking a fresh manifest against the lock (pure) ---------------------------------------


def _mismatch(locked: FileEntry, fresh: FileEntry) -> str | None:
    if locked.size != fresh.size:
        return f"size {fresh.size} != locked {locked.size}"
    common = False
    for kind, a, b in (
        ("sha256", locked.sha256, fresh.sha256),
        ("git sha1", locked.git_sha1, fresh.git_sha1),
    ):
        if a and b:
            common = True
            if a.lower() != b.lower():
                return f"{kind} {b[:12]}… != locked {a[:12]}…"
    if not common:
        return "the mirrors give no digest of the kind the lockfile recorded"
    return None


def check_entries(
    locked: LockedModel, fresh: Iterable[FileEntry]
) -> tuple[dict[str, FileEntry], list[str]]:
    """Compare the agreed manifest of ``locked.commit`` with the lock.

    Returns the entries to pull (the fresh ones, given the lock's sha256 where the mirrors
    gave only a git sha1, so the bytes are verified against the lock) and the problems: a
    locked file missing from the mirrors, or a size or digest that differs. Files the mirrors
    list beyond the lock are not problems: the pull asks only for the locked paths.
    """
    by_path = {f.path: f for f in fresh}
    entries: dict[str, FileEntry] = {}
    problems: list[str] = []
    for want in locked.files:
        got = by_path.get(want.path)
        if got is None:
            problems.append(f"{want.path}: not on the mirrors at {locked.commit[:12]}")
            continue
        reason = _mismatch(want, got)
        if reason:
            problems.append(f"{want.path}: {reason}")
            continue
        entries[want.path] = FileEntry(
            got.path,
            got.size,
            got.sha256 or want.sha256,
            got.git_sha1 or want.git_sha1,
            got.lfs or want.lfs,
        )
    return entries, problems


def agree_with_lock(
    locked: LockedModel, listings: Sequence[tuple[str, dict[str, FileEntry]]]
) -> tuple[dict[str, list[str]], list[Disagreement]]:
    """For each locked file: the mirrors (in the order given) whose copy matches the lock, and
    every mirror that does not. A locked pull never lets a majority of mirrors outvote the
    lock, as :func:`modelget.manifest.agree` lets them outvote the best-ranked mirror."""
    candidates: dict[str, list[str]] = {}
    disagreements: list[Disagreement] = []
    for want in locked.files:
        names: list[str] = []
        for mirror, files in listings:
            got = files.get(want.path)
            reason = "file missing" if got is None else _mismatch(want, got)
            if reason is None:
                names.append(mirror)
            else:
                disagreements.append(Disagreement(mirror, want.path, reason))
        candidates[want.path] = names
    return candidates, disagreements
