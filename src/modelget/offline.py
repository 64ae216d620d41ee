"""A pull from what is on disk: no request at all.

Two ways in: offline mode (``HF_HUB_OFFLINE=1``, ``MODELGET_OFFLINE=1``, ``--offline``,
``pull(offline=True)``), and a pull whose mirrors are all unreachable while the destination
already holds what it asks for (then with a warning). Either way the answer is a snapshot
that is *complete* for the request, or ``OfflineMissingError`` naming what is missing.

Complete is judged against modelget's **record** of the commit (:mod:`modelget.record`: the
files a pull verified into place and the commit's other paths, beside the files). A request (the file
names, ``--include``/``--exclude``, or a lockfile's list) is matched against that list with
the same rules as online; every selected file must have been recorded *and* still be there at
its size (the cheap check a pull makes of what it reuses; ``modelget verify`` re-hashes).
Where there is no record (a snapshot that huggingface_hub, or a modelget before records,
made), the files that are there are the snapshot, as huggingface_hub takes it offline, and
the result says that completeness was not checked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from modelget import layout
from modelget.datatypes import FileEntry, FileOutcome, PullResult, RepoType, is_commit
from modelget.errors import OfflineMissingError, UsageError
from modelget.events import Reporter
from modelget.lockfile import LockedModel
from modelget.manifest import select_files
from modelget.record import read_record, record_path

# --- answering a pull from disk -------------------------------------------------------------


def _local_commit(local_dir: Path) -> str | None:
    """The commit a local dir's files were downloaded at (hf's metadata: first line), when
    they agree; None when there is none or they disagree."""
    meta_root = layout.local_meta_dir(local_dir) / "download"
    commits: set[str] = set()
    for root, _dirs, names in os.walk(meta_root):
        for name in names:
            if name.endswith(".metadata"):
                try:
                    first = (Path(root) / name).read_text().split("\n", 1)[0].strip()
                except OSError:
                    continue
                if is_commit(first):
                    commits.add(first)
    return commits.pop() if len(commits) == 1 else None


def _pull_command(repo_id: str, repo_type: RepoType) -> str:
    return f"modelget pull {repo_id}" + (
        f" --repo-type {repo_type}" if repo_type != "model" else ""
    )


def _commit_of(
    repo_id: str,
    revision: str | None,
    cache_dir: Path,
    local_dir: Path | None,
    repo_type: RepoType = "model",
) -> str:
    want = revision or "main"
    if local_dir is not None:
        commit = _local_commit(local_dir)
        if commit is None:
            raise OfflineMissingError(
                f"{local_dir} holds no complete download of {repo_id} "
                "(no huggingface_hub metadata naming one commit)",
                hint="pull it once with the network: "
                f"`{_pull_command(repo_id, repo_type)} --local-dir {local_dir}`",
            )
        if is_commit(want) and want != commit:
            raise OfflineMissingError(
                f"{local_dir} holds commit {commit} of {repo_id}, not {want}",
                hint="pull that revision once with the network",
            )
        return commit
    if is_commit(want):
        return want
    ref = layout.repo_dir(cache_dir, repo_id, repo_type) / "refs" / want
    try:
        commit = ref.read_text().strip() if not ref.is_symlink() else ""
    except OSError:
        commit = ""
    if not is_commit(commit):
        raise OfflineMissingError(
            f"{repo_id}@{want} is not in the cache at {cache_dir} (no refs/{want})",
            hint=f"pull it once with the network: `{_pull_command(repo_id, repo_type)}"
            + (f" --revision {revision}`" if revision else "`"),
        )
    return commit


def _on_disk(root: Path) -> dict[str, int]:
    """Without a record: the snapshot's (or local dir's) files that are there (path → size)."""
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
    repo_type: RepoType = "model",
) -> PullResult:
    """The pull's answer from disk alone (see the module doc), or ``OfflineMissingError``.
    Says through ``reporter`` when there was no record to check completeness against."""
    commit = (
        locked.commit
        if locked is not None
        else _commit_of(repo_id, revision, cache_dir, local_dir, repo_type)
    )
    shown = f"{repo_id}@{commit[:12]}"
    path = (
        local_dir
        if local_dir is not None
        else layout.snapshot_dir(cache_dir, repo_id, commit, repo_type)
    )
    record = read_record(record_path(repo_id, commit, cache_dir, local_dir, repo_type))
    checked = record is not None
    if record is not None:
        known = [*record.files.values(), *(FileEntry(p, 0) for p in sorted(record.others))]
    else:
        known = [FileEntry(p, size) for p, size in sorted(_on_disk(path).items())]
        if not known:
            where = local_dir if local_dir is not None else cache_dir
            raise OfflineMissingError(
                f"{shown} is not in {where}",
                hint=f"pull it once with the network: `{_pull_command(repo_id, repo_type)}`",
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
            recorded,
            repo_id=repo_id,
            commit=commit,
            cache_dir=cache_dir,
            local_dir=local_dir,
            repo_type=repo_type,
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
        repo_type=repo_type,
    )
