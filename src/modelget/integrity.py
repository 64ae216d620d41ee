"""Keeping what landed intact: the cheap check before a load, the stamps a full check
refreshes, and the repair of what failed (see :mod:`modelget.record` for the stamps).

``before_load`` checks a model directory's bytes against their digests before a tensor is
loaded: by stamps (a file whose size or mtime changed since its digest last matched is
hashed), or every file hashed. ``restamp`` records the stamp of every file a ``verify`` hashed
and found good. ``repair`` fetches again the files a ``verify`` found missing or corrupted,
through the pull it is handed (this stage does not call the facade itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from modelget import cache, record
from modelget.cache import VerifyResult
from modelget.errors import UsageError, VerificationError
from modelget.verify import check

FetchAgain = Callable[..., list[str]]
"""``fetch_again(repo_id, paths, revision=, cache_dir=, local_dir=, repo_type=)``: pull those
files again (repairing), return the paths fetched."""


def restamp(result: VerifyResult) -> None:
    """Record the stamp of every file this check hashed and found good."""
    root = Path(result.path)
    for commit in result.commits:
        good = [f.path for f in result.files if f.status == "ok" and f.commit in (commit, None)]
        if result.kind == "cache":
            where = root / ".modelget" / f"{commit}.json"
            files = {p: root / "snapshots" / commit / p for p in good}
        else:
            found = record.record_of_dir(root)
            if found is None or found[0].commit != commit:
                continue
            where = found[1]
            files = {p: root / p for p in good}
        stamps = {p: s for p, f in files.items() if (s := record.stamp_of(f)) is not None}
        with contextlib.suppress(OSError):  # a read-only cache can be verified, not stamped
            record.add_stamps(where, stamps)


def repair(result: VerifyResult, fetch_again: FetchAgain) -> list[str]:
    """Fetch again the files ``result`` found missing or corrupted, commit by commit (only
    those: nothing else is touched), through ``fetch_again``; the paths it fetched."""
    root = Path(result.path)
    bad: dict[str, list[str]] = {}
    for f in result.problems:
        bad.setdefault(f.commit or "", []).append(f.path)
    repo_type = result.repo_type
    if result.kind == "cache":
        repo_id, cache_root, local = result.repo_id, root.parent, None
    else:
        found = record.record_of_dir(root)
        if found is None:
            raise UsageError(
                f"cannot repair {root}: nothing says which repo it holds (it was not pulled by "
                "modelget)",
                hint="pull it again: modelget pull REPO_ID --local-dir DIR --repair",
            )
        repo_id, cache_root, local = found[0].repo_id, None, root
        repo_type = found[0].repo_type
        bad = {found[0].commit: [p for paths in bad.values() for p in paths]}
    assert repo_id is not None
    done: list[str] = []
    for commit, paths in bad.items():
        done += fetch_again(
            repo_id,
            sorted(set(paths)),
            revision=commit or None,
            cache_dir=cache_root,
            local_dir=local,
            repo_type=repo_type,
        )
    return done


def before_load(root: Path, *, full: bool) -> tuple[str, list[tuple[str, str]]]:
    """How the model's bytes were checked, and each file that failed with why."""
    if full:
        result = cache.verify_dir(root)
        restamp(result)
        failed = [(f.path, f"{f.status}: {f.detail}") for f in result.problems]
        return f"every file hashed ({len(result.files)} files)", failed
    found = record.record_of_dir(root)
    if found is None:
        return "not checked: modelget has no record of these files (--verify hashes them)", []
    rec, record_file = found
    bad: list[tuple[str, str]] = []
    hashed, unstamped = 0, 0
    fresh: dict[str, record.Stamp] = {}
    for path, entry in sorted(rec.files.items()):
        where = root / path
        if not where.exists():
            continue  # not part of this directory's files (a filtered pull): the loader says
        if path not in rec.stamps:
            unstamped += 1
            continue
        if not record.changed(rec.stamps, path, where):
            continue
        hashed += 1
        try:
            check(where, entry)
        except VerificationError as exc:
            bad.append((path, f"the bytes changed since they were verified: {exc.message}"))
            continue
        stamp = record.stamp_of(where)
        if stamp is not None:
            fresh[path] = stamp
    if fresh:
        with contextlib.suppress(OSError):
            record.add_stamps(record_file, fresh)
    how = f"stamps (size + mtime) of {len(rec.stamps)} files"
    if hashed:
        how += f", {hashed} changed and hashed"
    if unstamped:
        how += f", {unstamped} without a stamp not checked"
    return how + " (--verify hashes every file)", bad
