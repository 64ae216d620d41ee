"""A pull from what is on disk: no request at all.

Two ways in: offline mode (``HF_HUB_OFFLINE=1``, ``MODELGET_OFFLINE=1``, ``--offline``,
``pull(offline=True)``), and a pull whose mirrors are all unreachable while the destination
already holds what it asks for (then with a warning). Either way the answer is a snapshot
that is *complete* for the request, or ``OfflineMissingError`` naming what is missing.

Complete is judged against modelget's **record** of the commit: after every pull, the entries
of the files it verified into place (path, size, digests) and the paths of the commit it left
out, written beside the files (``models--{org}--{name}/.modelget/{commit}.json`` in the cache,
``DIR/.cache/huggingface/modelget/{commit}.json`` in a local dir) and merged with what an
earlier pull of the same commit recorded (a commit's files never change). A request (the file
names, ``--include``/``--exclude``, or a lockfile's list) is matched against that list with
the same rules as online; every selected file must have been recorded *and* still be there at
its size (the cheap check a pull makes of what it reuses; ``modelget verify`` re-hashes).
Where there is no record (a snapshot that huggingface_hub, or a modelget before records,
made), the files that are there are the snapshot, as huggingface_hub takes it offline, and
the result says that completeness was not checked.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelget import layout
from modelget.datatypes import FileEntry, FileOutcome, PullResult
from modelget.errors import OfflineMissingError, UsageError
from modelget.events import Reporter
from modelget.lockfile import LockedModel
from modelget.manifest import select_files

RECORD_VERSION = 1
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Record:
    """What modelget knows it put in place for one commit."""

    repo_id: str
    commit: str
    files: dict[str, FileEntry]
    """Verified into place, by path."""
    others: frozenset[str] = field(default_factory=frozenset)
    """The commit's other paths (left out by a filter, or failed): known, not here."""


def record_path(repo_id: str, commit: str, cache_dir: Path, local_dir: Path | None) -> Path:
    if local_dir is not None:
        return local_dir / ".cache" / "huggingface" / "modelget" / f"{commit}.json"
    return layout.repo_dir(cache_dir, repo_id) / ".modelget" / f"{commit}.json"


def read_record(path: Path) -> Record | None:
    """The record at ``path``; None when there is none or it is unreadable (then the files
    on disk decide, as for a snapshot modelget did not make)."""
    try:
        raw = json.loads(path.read_text())
        files = {
            str(p): FileEntry(
                str(p),
                int(f["size"]),
                f.get("sha256") or None,
                f.get("git_sha1") or None,
                bool(f.get("lfs", False)),
            )
            for p, f in raw["files"].items()
        }
        return Record(str(raw["repo_id"]), str(raw["commit"]), files, frozenset(raw["others"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_record(
    path: Path, record: Record, still_here: Callable[[FileEntry], bool] = lambda _e: True
) -> None:
    """Merge ``record`` into the one at ``path`` (atomically). A file an earlier pull recorded
    stays recorded while ``still_here`` finds it in place (this pull may have left it out of
    its filter); the paths of both records that are not in place are kept as ``others``."""
    old = read_record(path)
    same = old is not None and old.commit == record.commit and old.repo_id == record.repo_id
    files = dict(old.files) if old is not None and same else {}
    others = set(old.others) if old is not None and same else set()
    for p in record.others:
        if p in files and not still_here(files[p]):
            del files[p]
        if p not in files:
            others.add(p)
    files.update(record.files)
    others -= set(files)
    body = {
        "version": RECORD_VERSION,
        "repo_id": record.repo_id,
        "commit": record.commit,
        "files": {
            p: {
                "size": e.size,
                **({"sha256": e.sha256} if e.sha256 else {}),
                **({"git_sha1": e.git_sha1} if e.git_sha1 else {}),
                "lfs": e.lfs,
            }
            for p, e in sorted(files.items())
        },
        "others": sorted(others),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, path)


def record_pull(
    repo_id: str,
    commit: str,
    placed: Sequence[FileEntry],
    others: Sequence[str],
    cache_dir: Path,
    local_dir: Path | None,
) -> None:
    """After a pull: ``placed`` are verified and in place; ``others`` are the rest."""

    def still_here(entry: FileEntry) -> bool:
        found = layout.scan(
            [entry], repo_id=repo_id, commit=commit, cache_dir=cache_dir, local_dir=local_dir
        )
        return entry.path in found

    write_record(
        record_path(repo_id, commit, cache_dir, local_dir),
        Record(repo_id, commit, {e.path: e for e in placed}, frozenset(others)),
        still_here,
    )


# --- answering a pull from disk -------------------------------------------------------------


def _local_commit(local_dir: Path) -> str | None:
    """The commit a local dir's files were downloaded at (hf's metadata: first line), when
    they agree; None when there is none or they disagree."""
    meta_root = local_dir / ".cache" / "huggingface" / "download"
    commits: set[str] = set()
    for root, _dirs, names in os.walk(meta_root):
        for name in names:
            if name.endswith(".metadata"):
                try:
                    first = (Path(root) / name).read_text().split("\n", 1)[0].strip()
                except OSError:
                    continue
                if _COMMIT.fullmatch(first):
                    commits.add(first)
    return commits.pop() if len(commits) == 1 else None


def _commit_of(repo_id: str, revision: str | None, cache_dir: Path, local_dir: Path | None) -> str:
    want = revision or "main"
    if local_dir is not None:
        commit = _local_commit(local_dir)
        if commit is None:
            raise OfflineMissingError(
                f"{local_dir} holds no complete download of {repo_id} "
                "(no huggingface_hub metadata naming one commit)",
                hint="pull it once with the network: `modelget pull "
                f"{repo_id} --local-dir {local_dir}`",
            )
        if _COMMIT.fullmatch(want) and want != commit:
            raise OfflineMissingError(
                f"{local_dir} holds commit {commit} of {repo_id}, not {want}",
                hint="pull that revision once with the network",
            )
        return commit
    if _COMMIT.fullmatch(want):
        return want
    ref = layout.repo_dir(cache_dir, repo_id) / "refs" / want
    try:
        commit = ref.read_text().strip() if not ref.is_symlink() else ""
    except OSError:
        commit = ""
    if not _COMMIT.fullmatch(commit):
        raise OfflineMissingError(
            f"{repo_id}@{want} is not in the cache at {cache_dir} (no refs/{want})",
            hint=f"pull it once with the network: `modelget pull {repo_id}"
            + (f" --revision {revision}`" if revision else "`"),
        )
    return commit


def _on_disk(repo_id: str, commit: str, cache_dir: Path, local_dir: Path | None) -> dict[str, int]:
    """Without a record: the snapshot's files that are there (path → size)."""
    root = local_dir if local_dir is not None else layout.snapshot_dir(cache_dir, repo_id, commit)
    found: dict[str, int] = {}
    for dirpath, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir.split(os.sep)[0] == ".cache":
            dirs[:] = []
            continue
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if name.endswith(".tmp"):  # a link or file being replaced right now
                continue
            try:
                st = os.stat(Path(dirpath) / name)  # a snapshot link must resolve
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = st.st_size
    return found


def from_disk(
    repo_id: str,
    filenames: Sequence[str] = (),
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    cache_dir: Path,
    local_dir: Path | None = None,
    locked: LockedModel | None = None,
    reporter: Reporter | None = None,
) -> PullResult:
    """The pull's answer from disk alone (see the module doc), or ``OfflineMissingError``.
    Says through ``reporter`` when there was no record to check completeness against."""
    commit = (
        locked.commit if locked is not None else _commit_of(repo_id, revision, cache_dir, local_dir)
    )
    shown = f"{repo_id}@{commit[:12]}"
    record = read_record(record_path(repo_id, commit, cache_dir, local_dir))
    checked = record is not None
    if record is not None:
        known = [*record.files.values(), *(FileEntry(p, 0) for p in sorted(record.others))]
    else:
        known = [
            FileEntry(p, size)
            for p, size in sorted(_on_disk(repo_id, commit, cache_dir, local_dir).items())
        ]
        if not known:
            where = local_dir if local_dir is not None else cache_dir
            raise OfflineMissingError(
                f"{shown} is not in {where}",
                hint=f"pull it once with the network: `modelget pull {repo_id}`",
            )
    if locked is not None:
        filenames, include, exclude = locked.paths, (), ()
    try:
        wanted, _ = select_files(known, filenames=filenames, include=include, exclude=exclude)
    except UsageError as exc:  # a file name that is not among the known ones
        raise OfflineMissingError(
            f"{shown} on disk lacks what was asked: {exc.message}",
            hint="pull it once with the network",
        ) from None
    missing: list[str] = []
    if record is not None:
        recorded = [e for e in wanted if e.path in record.files]
        missing = [e.path for e in wanted if e.path not in record.files]
        present = layout.scan(
            recorded, repo_id=repo_id, commit=commit, cache_dir=cache_dir, local_dir=local_dir
        )
        missing += [e.path for e in recorded if e.path not in present]
        if locked is not None:
            missing += [
                e.path
                for e in locked.files
                if e.path in record.files and record.files[e.path].digest != e.digest
            ]
    if missing:
        shown_missing = ", ".join(sorted(set(missing))[:10]) + (
            f" and {len(set(missing)) - 10} more" if len(set(missing)) > 10 else ""
        )
        raise OfflineMissingError(
            f"{shown} is not complete on disk: missing {shown_missing}",
            hint="pull it with the network to complete it (only the missing files are fetched)",
        )
    if not checked and reporter is not None:
        reporter.on_message(
            "warning",
            f"{shown}: no modelget record of this commit (another tool downloaded it): "
            "using the files that are there, completeness not checked",
        )
    path = local_dir if local_dir is not None else layout.snapshot_dir(cache_dir, repo_id, commit)
    files = tuple(FileOutcome(e.path, e.size, "reused") for e in wanted)
    return PullResult(
        repo_id=repo_id,
        revision=locked.revision if locked is not None else revision or "main",
        commit=commit,
        path=str(path),
        status="ok",
        engine="none",
        files=files,
        bytes_fetched=0,
    )
