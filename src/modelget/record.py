"""What modelget knows it put in place: one record per repo commit, beside the files.

After every pull, the entries of the files it verified into place (path, size, digests), the
commit's other paths (left out by a filter, or failed), and a **stamp** per file verified in
this run: the size and modification time (ns) of the bytes when their digest last matched.
Written in ``models--{org}--{name}/.modelget/{commit}.json`` (``datasets--``, ``spaces--``; cache) or
``DIR/.cache/huggingface/modelget/{commit}.json`` (local dir), merged with earlier records of
the same commit (a commit's files never change). ``modelget verify`` refreshes the stamps of
what it hashed.

Who reads it: an offline pull (is the request complete on disk?), a pull (a reused file whose
stamp changed is hashed again before it is trusted), and ``load-test`` (a file whose stamp
changed is hashed; ``--verify`` hashes all). A stamp is a cheap witness, not a proof: bytes
rewritten in place with the same size and time go unseen until a full hash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelget import layout
from modelget.datatypes import REPO_TYPES, FileEntry, RepoType, is_commit

Stamp = tuple[int, int]
"""(size, st_mtime_ns) of a file's bytes (a blob, or a local-dir file)."""

RECORD_VERSION = 1


@dataclass(frozen=True)
class Record:
    """What modelget knows it put in place for one commit."""

    repo_id: str
    commit: str
    files: dict[str, FileEntry]
    """Verified into place, by path."""
    others: frozenset[str] = field(default_factory=frozenset)
    """The commit's other paths (left out by a filter, or failed): known, not here."""
    stamps: dict[str, Stamp] = field(default_factory=dict)
    """Per path: the stamp of its bytes when their digest last matched."""
    repo_type: RepoType = "model"


def record_path(
    repo_id: str,
    commit: str,
    cache_dir: Path,
    local_dir: Path | None,
    repo_type: RepoType = "model",
) -> Path:
    if local_dir is not None:
        return layout.local_meta_dir(local_dir) / "modelget" / f"{commit}.json"
    return layout.repo_dir(cache_dir, repo_id, repo_type) / ".modelget" / f"{commit}.json"


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
        stamps = {
            str(p): (int(v[0]), int(v[1]))
            for p, v in raw.get("stamps", {}).items()
            if str(p) in files
        }
        repo_type = raw.get("repo_type", "model")  # absent: a model (records before 0.x)
        if repo_type not in REPO_TYPES:
            return None
        return Record(
            str(raw["repo_id"]),
            str(raw["commit"]),
            files,
            frozenset(raw["others"]),
            stamps,
            repo_type,
        )
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
    stamps: dict[str, Stamp] = dict(old.stamps) if old is not None and same else {}
    stamps.update(record.stamps)
    stamps = {p: v for p, v in stamps.items() if p in files}
    body = {
        "version": RECORD_VERSION,
        "repo_id": record.repo_id,
        **({"repo_type": record.repo_type} if record.repo_type != "model" else {}),
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
        "stamps": {p: list(v) for p, v in sorted(stamps.items())},
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
    verified: Sequence[FileEntry] = (),
    repo_type: RepoType = "model",
) -> None:
    """After a pull: ``placed`` are in place; ``others`` are the rest of the commit;
    ``verified`` (among ``placed``) had their digest checked in this run: they get a stamp."""

    def still_here(entry: FileEntry) -> bool:
        found = layout.scan(
            [entry],
            repo_id=repo_id,
            commit=commit,
            cache_dir=cache_dir,
            local_dir=local_dir,
            repo_type=repo_type,
        )
        return entry.path in found

    stamps = {}
    for entry in verified:
        stamp = stamp_of(file_path(entry, repo_id, commit, cache_dir, local_dir, repo_type))
        if stamp is not None:
            stamps[entry.path] = stamp
    write_record(
        record_path(repo_id, commit, cache_dir, local_dir, repo_type),
        Record(repo_id, commit, {e.path: e for e in placed}, frozenset(others), stamps, repo_type),
        still_here,
    )


def file_path(
    entry: FileEntry,
    repo_id: str,
    commit: str,
    cache_dir: Path,
    local_dir: Path | None,
    repo_type: RepoType = "model",
) -> Path:
    """Where ``entry``'s bytes are: the local-dir file, or its blob in the cache."""
    if local_dir is not None:
        return layout.local_file_path(local_dir, entry)
    return layout.blob_path(cache_dir, repo_id, entry, repo_type)


def stamp_of(path: Path) -> Stamp | None:
    """The file's (size, mtime_ns), following a snapshot link to its blob; None if absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def changed(stamps: Mapping[str, Stamp], path: str, where: Path) -> bool:
    """True when ``path`` has a stamp and the bytes at ``where`` no longer match it."""
    stamp = stamps.get(path)
    return stamp is not None and stamp_of(where) != stamp


def add_stamps(path: Path, stamps: Mapping[str, Stamp]) -> None:
    """Refresh the stamps of files just hashed and found good (``modelget verify``)."""
    old = read_record(path)
    if old is None or not stamps:
        return
    fresh = {p: v for p, v in stamps.items() if p in old.files}
    write_record(path, Record(old.repo_id, old.commit, {}, frozenset(), fresh, old.repo_type))


def record_of_dir(root: Path) -> tuple[Record, Path] | None:
    """The record describing a model directory (a cache snapshot, a local dir, a ModelScope
    snapshot) and the file it is in; None when modelget recorded nothing there."""
    root = root.absolute()
    if root.parent.name == "snapshots" and layout.parse_folder_name(root.parent.parent.name):
        where = root.parent.parent / ".modelget" / f"{root.name}.json"
        rec = read_record(where)
        return (rec, where) if rec is not None else None
    folder = layout.local_meta_dir(root) / "modelget"
    try:
        candidates = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for candidate in candidates:
        rec = read_record(candidate)
        if rec is not None and is_commit(rec.commit):
            return rec, candidate
    return None
