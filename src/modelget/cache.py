"""Keep, check and clean: what the Hugging Face cache holds, whether it is intact, removal.

A blob's name is its digest (sha256 for LFS files, the git blob sha1 otherwise), so checking
a snapshot needs no manifest: each ``snapshots/{commit}/{path}`` link names the digest its
bytes must have. A ``--local-dir`` download is checked against the etag in huggingface_hub's
``.cache/huggingface/download/{path}.metadata``.

Every repo type is handled: ``models--``, ``datasets--`` and ``spaces--`` folders. The
ModelScope cache (``{root}/models/{owner}--{name}/snapshots/{revision}``, ``datasets/`` for a
dataset, modelget's metadata in ``.modelget/{revision}/`` beside ``snapshots/``) is checked as
a local dir (``ms_snapshots`` finds a repo's by id), listed and cleaned by ``list_ms_models``
and ``remove_ms``.
Removal never follows a symbolic link and never deletes outside ``models--{org}--{name}``
(or the dataset's, the space's folder).
Nothing here prints; the CLI renders what these functions return.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelget import layout
from modelget.datatypes import RepoType, is_sha1_hex, is_sha256_hex
from modelget.errors import EXIT_OK, EXIT_VERIFY, LayoutError, NotInCacheError, UsageError
from modelget.verify import hash_file

FileStatus = Literal["ok", "missing", "corrupted", "extra"]

PARTIAL_SUFFIXES = (".incomplete", ".incomplete.ranges", ".incomplete.aria2")
_META_PARTS = (".cache", "huggingface", "download")


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict. ``expected``/``got``: digests (hex); ``detail``: why, in words."""

    path: str
    status: FileStatus
    expected: str | None = None
    got: str | None = None
    commit: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class VerifyResult:
    target: str
    kind: Literal["cache", "local-dir", "modelscope"]
    path: str
    repo_id: str | None
    commits: tuple[str, ...]
    files: tuple[FileCheck, ...]
    repaired: tuple[str, ...] = ()
    """With ``repair``: the files that failed and were fetched again (``files`` is the check
    made after that)."""
    repo_type: RepoType = "model"

    @property
    def problems(self) -> tuple[FileCheck, ...]:
        """Missing or corrupted files (an ``extra`` file is reported, not a failure)."""
        return tuple(f for f in self.files if f.status in ("missing", "corrupted"))

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 when every file checks out, 4 (a verification failure) otherwise."""
        return EXIT_OK if self.ok else EXIT_VERIFY

    def count(self, status: FileStatus) -> int:
        return sum(1 for f in self.files if f.status == status)


@dataclass(frozen=True)
class CachedRevision:
    commit: str
    refs: tuple[str, ...]
    files: int
    size_bytes: int
    last_used: float


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    path: str
    revisions: tuple[CachedRevision, ...]
    size_on_disk: int
    partial_bytes: int
    last_used: float
    repo_type: RepoType = "model"
    layout: Literal["hf", "modelscope"] = "hf"


@dataclass(frozen=True)
class RemoveResult:
    repo_id: str
    path: str
    commits: tuple[str, ...]
    refs: tuple[str, ...]
    blobs: tuple[str, ...]
    partials: tuple[str, ...]
    kept_commits: tuple[str, ...]
    skipped: tuple[str, ...]
    freed_bytes: int
    repo_removed: bool
    dry_run: bool
    repo_type: RepoType = "model"
    layout: Literal["hf", "modelscope"] = "hf"


# --- helpers -------------------------------------------------------------------------------


def repo_id_of(folder_name: str) -> str:
    """``models--org--name`` → ``org/name`` (huggingface_hub's rule; ``datasets--``,
    ``spaces--`` alike)."""
    return "/".join(folder_name.split("--")[1:])


def repo_type_of(folder_name: str) -> RepoType:
    """``datasets--org--name`` → ``dataset`` (a folder of no known type: ``model``)."""
    parsed = layout.parse_folder_name(folder_name)
    return parsed[1] if parsed is not None else "model"


def _pull_hint(repo_id: str, repo_type: RepoType, tail: str = "") -> str:
    extra = f" --repo-type {repo_type}" if repo_type != "model" else ""
    return f"`modelget pull {repo_id}{extra}{tail}`"


def _walk(root: Path, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, Path]]:
    """Every non-directory under ``root`` (links included, never followed), sorted, as
    (relative posix path, path). Linked directories count as entries, not as trees."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames.sort()
        for name in list(dirnames):
            if (rel_dir + name) in skip:
                dirnames.remove(name)
            elif (here / name).is_symlink():
                dirnames.remove(name)
                filenames.append(name)
        for name in sorted(filenames):
            yield rel_dir + name, here / name


def _link_target(link: Path) -> Path:
    """Where a symlink points, normalised lexically (nothing followed)."""
    return Path(os.path.normpath(os.path.join(link.parent, os.readlink(link))))


def _digest_kind(etag: str) -> Literal["sha256", "git-sha1"] | None:
    if is_sha256_hex(etag):
        return "sha256"
    if is_sha1_hex(etag):
        return "git-sha1"
    return None


def _check(
    file: Path, rel: str, etag: str, commit: str | None, memo: dict[tuple[str, str], str]
) -> FileCheck:
    etag = etag.strip().strip('"').lower()
    kind = _digest_kind(etag)
    if kind is None:
        return FileCheck(rel, "extra", etag or None, None, commit, "no digest recorded for it")
    key = (os.path.realpath(file), kind)
    got = memo.get(key)
    if got is None:
        try:
            digests = hash_file(file, sha256=kind == "sha256", git_sha1=kind == "git-sha1")
        except OSError as exc:
            return FileCheck(rel, "missing", etag, None, commit, f"cannot read it: {exc}")
        got = (digests.sha256 if kind == "sha256" else digests.git_sha1) or ""
        memo[key] = got
    if got == etag:
        return FileCheck(rel, "ok", etag, got, commit)
    return FileCheck(
        rel, "corrupted", etag, got, commit, f"{kind} {got} does not match the recorded {etag}"
    )


def _index_gaps(root: Path, present: set[str], commit: str | None) -> list[FileCheck]:
    """Shards a ``*.index.json`` names (weight_map values) that are not in ``present``."""
    gaps: list[FileCheck] = []
    seen: set[str] = set()
    for rel in sorted(present):
        if not rel.endswith(".index.json"):
            continue
        try:
            data = json.loads((root / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the index itself is reported missing or corrupted
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            continue
        base = posixpath.dirname(rel)
        for shard in sorted({str(v) for v in weight_map.values()}):
            path = posixpath.normpath(posixpath.join(base, shard)) if base else shard
            if path not in present and path not in seen:
                seen.add(path)
                gaps.append(
                    FileCheck(
                        path,
                        "missing",
                        None,
                        None,
                        commit,
                        f"named in {rel} (weight_map) but not in the snapshot",
                    )
                )
    return gaps


def _safe_revision(revision: str) -> bool:
    parts = revision.split("/")
    return (
        bool(revision)
        and not revision.startswith("/")
        and all(p not in ("", ".", "..") for p in parts)
    )


def _snapshot_names(repo: Path) -> list[str]:
    snaps = repo / "snapshots"
    try:
        return sorted(e.name for e in os.scandir(snaps) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _refs(repo: Path) -> dict[str, str]:
    """``{revision: commit}`` from ``refs/`` (``refs/pr/1`` style names included)."""
    found: dict[str, str] = {}
    root = repo / "refs"
    if not root.is_dir() or root.is_symlink():
        return found
    for rel, path in _walk(root):
        if path.is_symlink() or not path.is_file() or rel.endswith(".tmp"):
            continue
        try:
            found[rel] = path.read_text().strip()
        except OSError:
            continue
    return found


def resolve_revision(repo: Path, repo_id: str, revision: str) -> str:
    """The cached commit that ``revision`` (a ref name or a commit) names (``repo``: the
    repo's cache folder, of any type)."""
    snapshots = _snapshot_names(repo)
    refs = _refs(repo)
    if _safe_revision(revision):
        commit = refs.get(revision)
        if commit is not None:
            if commit in snapshots:
                return commit
            raise NotInCacheError(
                f"refs/{revision} of {repo_id} points at {commit}, which is not in the cache",
                hint="run "
                + _pull_hint(repo_id, repo_type_of(repo.name), f" --revision {revision}"),
            )
        if revision in snapshots:
            return revision
    cached = ", ".join(sorted(set(refs) | set(snapshots))) or "none"
    raise NotInCacheError(
        f"revision {revision!r} of {repo_id} is not in the cache (cached: {cached})",
        hint="`modelget ls` lists the cached models and their revisions",
    )


def repo_or_error(cache_dir: Path, repo_id: str, repo_type: RepoType = "model") -> Path:
    repo = layout.repo_dir(cache_dir, repo_id, repo_type)
    if not repo.is_dir():
        what = repo_id if repo_type == "model" else f"{repo_type} {repo_id}"
        raise NotInCacheError(
            f"{what} is not in the cache at {cache_dir}",
            hint="`modelget ls --cache-dir DIR` lists the cached repos; "
            f"{_pull_hint(repo_id, repo_type)} fetches it",
        )
    return repo


# --- verify --------------------------------------------------------------------------------


def _verify_snapshot(repo: Path, commit: str, memo: dict[tuple[str, str], str]) -> list[FileCheck]:
    snap = repo / "snapshots" / commit
    blobs = Path(os.path.normpath(repo / "blobs"))
    checks: list[FileCheck] = []
    present: set[str] = set()
    for rel, path in _walk(snap):
        present.add(rel)
        if not path.is_symlink():
            checks.append(
                FileCheck(rel, "extra", None, None, commit, "a copy, not a link into blobs/")
            )
            continue
        target = _link_target(path)
        etag = target.name
        if target.parent != blobs:
            checks.append(
                FileCheck(rel, "extra", None, None, commit, f"links outside blobs/: {target}")
            )
        elif not os.path.lexists(target):
            checks.append(
                FileCheck(
                    rel, "missing", etag, None, commit, f"blob {etag} is gone (dangling link)"
                )
            )
        else:
            checks.append(_check(target, rel, etag, commit, memo))
    checks += _index_gaps(snap, present, commit)
    checks.sort(key=lambda f: f.path)
    return checks


def verify_repo(
    cache_dir: Path, repo_id: str, revision: str | None = None, repo_type: RepoType = "model"
) -> VerifyResult:
    """Re-hash every file of ``repo_id``'s cached snapshots (or just ``revision``'s)."""
    repo = repo_or_error(cache_dir, repo_id, repo_type)
    commits = [resolve_revision(repo, repo_id, revision)] if revision else _snapshot_names(repo)
    if not commits:
        raise NotInCacheError(
            f"{repo_id} has no snapshot in the cache at {cache_dir}",
            hint=f"run {_pull_hint(repo_id, repo_type)}",
        )
    return _verify_repo_dir(repo_id, repo, commits)


def _verify_repo_dir(target: str, repo: Path, commits: list[str]) -> VerifyResult:
    memo: dict[tuple[str, str], str] = {}
    files: list[FileCheck] = []
    for commit in commits:
        files += _verify_snapshot(repo, commit, memo)
    return VerifyResult(
        target,
        "cache",
        str(repo),
        repo_id_of(repo.name),
        tuple(commits),
        tuple(files),
        repo_type=repo_type_of(repo.name),
    )


def verify_dir(path: Path, revision: str | None = None) -> VerifyResult:
    """Verify a directory: a cache snapshot, a ``models--org--name`` folder (``datasets--``,
    ``spaces--``), a ModelScope snapshot (``layout.is_ms_snapshot``), or a local dir."""
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    real = path.resolve()
    if real.parent.name == "snapshots" and layout.parse_folder_name(real.parent.parent.name):
        if revision is not None:
            raise UsageError("--revision does not apply to a snapshot directory")
        return _verify_repo_dir(str(path), real.parent.parent, [real.name])
    if layout.parse_folder_name(real.name) and (real / "snapshots").is_dir():
        repo_id = repo_id_of(real.name)
        commits = [resolve_revision(real, repo_id, revision)] if revision else _snapshot_names(real)
        return _verify_repo_dir(str(path), real, commits)
    if revision is not None:
        raise UsageError("--revision does not apply to a local directory")
    if layout.is_ms_snapshot(real):
        return _verify_local_dir(real, "modelscope")
    return _verify_local_dir(path)


def _verify_local_dir(
    root: Path, kind: Literal["local-dir", "modelscope"] = "local-dir"
) -> VerifyResult:
    """A ``--local-dir`` download, or a ModelScope snapshot (``kind``: its metadata is
    beside it, ``layout.local_meta_dir``, so nothing inside it is skipped)."""
    meta_root = layout.local_meta_dir(root) / "download"
    skip = ("/".join(_META_PARTS[:2]),) if kind == "local-dir" else ()
    ms_type = layout.ms_type_of(root) if kind == "modelscope" else None
    if kind == "modelscope" and not meta_root.is_dir():
        raise UsageError(
            f"{root} is a ModelScope snapshot that modelget did not pull (no metadata in "
            f"{meta_root.parent}): nothing to check its files against",
            hint="pull it with `modelget pull REPO_ID --layout modelscope`",
        )
    if not meta_root.is_dir():
        raise UsageError(
            f"{root} is neither a snapshot in a Hugging Face cache nor a --local-dir download "
            f"(no {'/'.join(_META_PARTS)} metadata)",
            hint="pass a repo id, a snapshots/COMMIT directory, or a directory filled by "
            "`modelget pull --local-dir` or `hf download --local-dir`",
        )
    memo: dict[tuple[str, str], str] = {}
    files: list[FileCheck] = []
    present: set[str] = set()
    commits: set[str] = set()
    for rel, path in _walk(root, skip=skip):
        present.add(rel)
        try:
            lines = (meta_root / f"{rel}.metadata").read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) < 2:
            files.append(FileCheck(rel, "extra", None, None, None, "no metadata: unverifiable"))
            continue
        commit = lines[0].strip() or None
        if commit:
            commits.add(commit)
        files.append(_check(path, rel, lines[1], commit, memo))
    for rel, _ in _walk(meta_root):
        name = rel.removesuffix(".metadata")
        if rel.endswith(".metadata") and name not in present:
            try:
                lines = (meta_root / rel).read_text().splitlines()
            except OSError:
                lines = []
            etag = lines[1].strip() if len(lines) > 1 else None
            commit = lines[0].strip() if lines else None
            files.append(
                FileCheck(name, "missing", etag, None, commit, "metadata names it, file is gone")
            )
            present.add(name)
    files += _index_gaps(root, present, None)
    files.sort(key=lambda f: f.path)
    return VerifyResult(
        str(root),
        kind,
        str(root),
        root.parent.parent.name.replace("--", "/", 1) if ms_type is not None else None,
        tuple(sorted(commits)),
        tuple(files),
        repo_type=ms_type or "model",
    )


# --- ls ------------------------------------------------------------------------------------


def _used(path: Path) -> float:
    try:
        st = path.lstat()
    except OSError:
        return 0.0
    return max(st.st_atime, st.st_mtime)


def _blob_sizes(repo: Path) -> tuple[dict[str, int], dict[str, int]]:
    """``({blob: size}, {partial file: size})`` of the regular files in ``blobs/``."""
    blobs: dict[str, int] = {}
    partials: dict[str, int] = {}
    root = repo / "blobs"
    if root.is_symlink():
        return blobs, partials
    try:
        entries = list(os.scandir(root))
    except OSError:
        return blobs, partials
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        (partials if e.name.endswith(PARTIAL_SUFFIXES) else blobs)[e.name] = size
    return blobs, partials


def _linked_blobs(repo: Path, commit: str) -> tuple[set[str], int]:
    """Blob names the snapshot's links point at, and the bytes of the copies in it."""
    blobs = Path(os.path.normpath(repo / "blobs"))
    names: set[str] = set()
    copies = 0
    for _, path in _walk(repo / "snapshots" / commit):
        if path.is_symlink():
            target = _link_target(path)
            if target.parent == blobs:
                names.add(target.name)
        else:
            with contextlib.suppress(OSError):
                copies += path.lstat().st_size
    return names, copies


def _describe(repo: Path) -> CachedModel:
    snapshots = _snapshot_names(repo)
    used_by_snap = {c: _used(repo / "snapshots" / c) for c in snapshots}
    refs = _refs(repo)
    ref_used = [_used(repo / "refs" / r) for r in refs]
    blob_sizes, partial_sizes = _blob_sizes(repo)
    revisions = []
    for commit in snapshots:
        names, copies = _linked_blobs(repo, commit)
        count = sum(1 for _ in _walk(repo / "snapshots" / commit))
        rev_refs = tuple(sorted(r for r, c in refs.items() if c == commit))
        used = max([used_by_snap[commit], *(_used(repo / "refs" / r) for r in rev_refs)])
        revisions.append(
            CachedRevision(
                commit,
                rev_refs,
                count,
                sum(blob_sizes.get(n, 0) for n in names) + copies,
                used,
            )
        )
    size = sum(blob_sizes.values()) + sum(partial_sizes.values())
    size += sum(_linked_blobs(repo, c)[1] for c in snapshots)
    return CachedModel(
        repo_id_of(repo.name),
        str(repo),
        tuple(revisions),
        size,
        sum(partial_sizes.values()),
        max([0.0, *used_by_snap.values(), *ref_used]),
        repo_type_of(repo.name),
    )


def list_models(cache_dir: Path) -> tuple[CachedModel, ...]:
    """Every repo in the cache (``models--*``, ``datasets--*``, ``spaces--*`` folders, as
    huggingface_hub's ``scan_cache_dir``), sorted by folder name."""
    try:
        entries = sorted(os.scandir(cache_dir), key=lambda e: e.name)
    except OSError:
        return ()
    return tuple(
        _describe(Path(e.path))
        for e in entries
        if layout.parse_folder_name(e.name) and e.is_dir(follow_symlinks=False)
    )


# --- rm ------------------------------------------------------------------------------------


def _locked(cache_dir: Path, repo_id: str, name: str, repo_type: RepoType = "model") -> bool:
    """Whether a pull (modelget's or huggingface_hub's) holds the lock of blob ``name``."""
    etag = name.split(".", 1)[0]
    lock_file = cache_dir / ".locks" / layout.repo_folder_name(repo_id, repo_type) / f"{etag}.lock"
    if not lock_file.exists():
        return False
    from filelock import FileLock, Timeout

    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


def _tree_bytes(root: Path) -> int:
    total = 0
    for _, path in _walk(root):
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total


def _unlink(path: Path, repo: Path) -> None:
    # By construction every path is repo/<sub>/<name>; check it anyway, lexically.
    if os.path.commonpath([os.path.normpath(path), os.path.normpath(repo)]) != os.path.normpath(
        repo
    ):
        raise LayoutError(f"refusing to delete {path}: outside {repo}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove(
    cache_dir: Path,
    repo_id: str,
    revision: str | None = None,
    *,
    dry_run: bool = False,
    repo_type: RepoType = "model",
) -> RemoveResult:
    """Remove ``repo_id``'s snapshot of ``revision`` (or every snapshot), the blobs no
    remaining snapshot links to, partial downloads, and refs to removed commits."""
    repo = layout.repo_dir(cache_dir, repo_id, repo_type)
    for part in (repo, repo / "blobs", repo / "snapshots", repo / "refs"):
        if part.is_symlink():
            raise LayoutError(
                f"{part} is a symbolic link; modelget deletes nothing through links",
                hint="remove the link (or what it points at) yourself",
            )
    repo = repo_or_error(cache_dir, repo_id, repo_type)
    snapshots = _snapshot_names(repo)
    gone = [resolve_revision(repo, repo_id, revision)] if revision is not None else snapshots
    kept = [c for c in snapshots if c not in gone]
    refs = _refs(repo)
    gone_refs = sorted(r for r, c in refs.items() if c not in kept)
    blob_sizes, partial_sizes = _blob_sizes(repo)
    referenced: set[str] = set()
    for commit in kept:
        referenced |= _linked_blobs(repo, commit)[0]
    skipped = sorted(
        n
        for n in [*blob_sizes, *partial_sizes]
        if n not in referenced and _locked(cache_dir, repo_id, n, repo_type)
    )
    if not kept and skipped:
        raise LayoutError(
            f"a pull of {repo_id} is running ({len(skipped)} files locked); nothing was removed",
            hint="try again when it has finished",
        )
    blobs = sorted(n for n in blob_sizes if n not in referenced and n not in skipped)
    partials = sorted(n for n in partial_sizes if n not in skipped)
    if kept:
        freed = sum(blob_sizes[n] for n in blobs) + sum(partial_sizes[n] for n in partials)
        freed += sum(_linked_blobs(repo, c)[1] for c in gone)
    else:
        freed = _tree_bytes(repo)
    if not dry_run:
        if kept:
            for commit in gone:
                _unlink(repo / "snapshots" / commit, repo)
            for ref in gone_refs:
                _unlink(repo / "refs" / ref, repo)
                parent = (repo / "refs" / ref).parent
                while parent != repo / "refs" and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
            for name in [*blobs, *partials]:
                _unlink(repo / "blobs" / name, repo)
        else:
            shutil.rmtree(repo)
    return RemoveResult(
        repo_id=repo_id,
        path=str(repo),
        commits=tuple(gone),
        refs=tuple(gone_refs),
        blobs=tuple(blobs),
        partials=tuple(partials),
        kept_commits=tuple(kept),
        skipped=tuple(skipped),
        freed_bytes=freed,
        repo_removed=not kept,
        dry_run=dry_run,
        repo_type=repo_type,
    )


# --- the ModelScope cache --------------------------------------------------------------------
#
# ``{root}/models/{owner}--{name}/snapshots/{revision}/{path}`` (real files, named after the
# revision string asked for) and modelget's metadata in ``.modelget/{revision}/`` beside
# ``snapshots/`` (``layout.local_meta_dir``): per-file ``download/{path}.metadata``, partial
# files and locks, ``quarantine/``, the record ``modelget/{commit}.json``.


def _ms_meta(repo: Path, revision: str) -> Path:
    return repo / ".modelget" / revision


def _ms_commit(repo: Path, revision: str) -> str:
    """The commit modelget recorded for a snapshot (the revision's name when none)."""
    from modelget import record

    found = record.record_of_dir(repo / "snapshots" / revision)
    return found[0].commit if found is not None else revision


def _ms_describe(repo: Path, repo_type: RepoType = "model") -> CachedModel:
    revisions = []
    for rev in _snapshot_names(repo):
        snap = repo / "snapshots" / rev
        revisions.append(
            CachedRevision(
                _ms_commit(repo, rev),
                (rev,),
                sum(1 for _ in _walk(snap)),
                _tree_bytes(snap),
                _used(snap),
            )
        )
    partial = _partial_bytes(repo / ".modelget")
    return CachedModel(
        repo.name.replace("--", "/", 1),
        str(repo),
        tuple(revisions),
        _tree_bytes(repo),
        partial,
        max([0.0, *(r.last_used for r in revisions)]),
        repo_type,
        "modelscope",
    )


def _partial_files(root: Path) -> dict[str, int]:
    """``{relative path: size}`` of the partial downloads (``*.incomplete``) under ``root``."""
    found: dict[str, int] = {}
    if root.is_symlink():
        return found
    for rel, path in _walk(root):
        if not rel.endswith(PARTIAL_SUFFIXES):
            continue
        with contextlib.suppress(OSError):
            st = path.lstat()
            found[rel] = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return found


def _partial_bytes(root: Path) -> int:
    return sum(_partial_files(root).values())


def list_ms_models(root: Path) -> tuple[CachedModel, ...]:
    """Every model and dataset in the ModelScope cache at ``root`` (``models/{owner}--{name}``
    and ``datasets/{owner}--{name}`` folders with a ``snapshots/`` folder; the legacy
    ``models/{owner}/{name___}`` ones are not listed), models first, each sorted by folder
    name. ``revisions[].refs`` holds the snapshot's name (the revision string), ``commit`` the
    commit modelget recorded for it (else that name)."""
    found: list[CachedModel] = []
    for folder, repo_type in layout.MS_FOLDERS.items():
        try:
            entries = sorted(os.scandir(root / folder), key=lambda e: e.name)
        except OSError:
            continue
        found += (
            _ms_describe(Path(e.path), repo_type)
            for e in entries
            if "--" in e.name
            and e.is_dir(follow_symlinks=False)
            and (Path(e.path) / "snapshots").is_dir()
            and not (Path(e.path) / "snapshots").is_symlink()
        )
    return tuple(found)


def ms_cached(root: Path, ms_id: str, repo_type: RepoType = "model") -> bool:
    """Whether the ModelScope cache at ``root`` has a ``snapshots/`` folder for ``ms_id``."""
    return (layout.ms_repo_dir(root, ms_id, repo_type) / "snapshots").is_dir()


def _ms_what(ms_id: str, repo_type: RepoType) -> str:
    return ms_id if repo_type == "model" else f"{repo_type} {ms_id}"


def ms_snapshots(
    root: Path, ms_id: str, revision: str | None = None, repo_type: RepoType = "model"
) -> list[Path]:
    """The snapshot folders of ``ms_id`` in the ModelScope cache at ``root``: the one named
    ``revision`` (``master``, ``v1.0``: the revision string a pull was given), else every one,
    sorted by name. Links are not snapshots. NotInCacheError when there is none."""
    repo = layout.ms_repo_dir(root, ms_id, repo_type)
    what = _ms_what(ms_id, repo_type)
    flag = "" if repo_type == "model" else f" --repo-type {repo_type}"
    if not ms_cached(root, ms_id, repo_type) or (repo / "snapshots").is_symlink():
        raise NotInCacheError(
            f"{what} is not in the ModelScope cache at {root}",
            hint="`modelget ls --layout modelscope --cache-dir DIR` lists the cached repos; "
            f"`modelget pull REPO_ID{flag} --layout modelscope` fetches it",
        )
    names = _snapshot_names(repo)
    if revision is not None and (not _safe_revision(revision) or revision not in names):
        raise NotInCacheError(
            f"revision {revision!r} of {what} is not in the ModelScope cache "
            f"(cached: {', '.join(names) or 'none'})",
            hint="`modelget ls --layout modelscope` lists the cached repos and their revisions",
        )
    if not names:
        raise NotInCacheError(
            f"{what} has no snapshot in the ModelScope cache at {root}",
            hint=f"run `modelget pull REPO_ID{flag} --layout modelscope`",
        )
    return [repo / "snapshots" / name for name in ([revision] if revision else names)]


def merge_ms_checks(
    target: str, ms_id: str, repo_type: RepoType, snapshots: list[Path], results: list[VerifyResult]
) -> VerifyResult:
    """One result for a repo's ModelScope snapshots checked one by one: one snapshot's as it
    is; several, each file's path (and each repaired one) prefixed with its snapshot's name
    (``master/config.json``), since two revision names may hold the same commit."""
    if len(results) == 1:
        return VerifyResult(
            target,
            "modelscope",
            str(snapshots[0]),
            ms_id,
            results[0].commits,
            results[0].files,
            results[0].repaired,
            repo_type,
        )
    files: list[FileCheck] = []
    repaired: list[str] = []
    for snap, result in zip(snapshots, results, strict=True):
        files += (
            FileCheck(f"{snap.name}/{f.path}", f.status, f.expected, f.got, f.commit, f.detail)
            for f in result.files
        )
        repaired += (f"{snap.name}/{p}" for p in result.repaired)
    return VerifyResult(
        target,
        "modelscope",
        str(snapshots[0].parent.parent),
        ms_id,
        tuple(sorted({c for r in results for c in r.commits})),
        tuple(files),
        tuple(repaired),
        repo_type,
    )


def _ms_locked(meta: Path) -> list[str]:
    """The per-file locks (``download/{path}.lock``) a running pull holds in ``meta``."""
    from filelock import FileLock, Timeout

    held: list[str] = []
    download = meta / "download"
    if not download.is_dir() or download.is_symlink():
        return held
    for rel, path in _walk(download):
        if not rel.endswith(".lock") or path.is_symlink():
            continue
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            held.append(rel)
            continue
        except OSError:
            continue
        lock.release()
    return held


def remove_ms(
    root: Path,
    ms_id: str,
    revision: str | None = None,
    *,
    dry_run: bool = False,
    repo_type: RepoType = "model",
) -> RemoveResult:
    """Remove ``ms_id``'s snapshot of ``revision`` (its folder name: ``master``, ``v1.0``, a
    commit) or every snapshot from the ModelScope cache at ``root``, with modelget's
    metadata beside it (``.modelget/{revision}/``); the whole ``{owner}--{name}`` folder when
    no snapshot remains. Nothing is followed through a symbolic link, nothing outside that
    folder is touched, and a revision a running pull holds a lock in is refused (a
    dataset's folder is ``datasets/{owner}--{name}``)."""
    repo = layout.ms_repo_dir(root, ms_id, repo_type)
    what = _ms_what(ms_id, repo_type)
    for part in (repo, repo / "snapshots", repo / ".modelget"):
        if part.is_symlink():
            raise LayoutError(
                f"{part} is a symbolic link; modelget deletes nothing through links",
                hint="remove the link (or what it points at) yourself",
            )
    if not ms_cached(root, ms_id, repo_type):
        raise NotInCacheError(
            f"{what} is not in the ModelScope cache at {root}",
            hint="`modelget ls --layout modelscope --cache-dir DIR` lists the cached models",
        )
    snapshots = _snapshot_names(repo)
    if revision is not None and (not _safe_revision(revision) or revision not in snapshots):
        raise NotInCacheError(
            f"revision {revision!r} of {what} is not in the ModelScope cache "
            f"(cached: {', '.join(snapshots) or 'none'})",
            hint="`modelget ls --layout modelscope` lists the cached models and their revisions",
        )
    gone = [revision] if revision is not None else snapshots
    kept = [r for r in snapshots if r not in gone]
    for rev in gone:
        if _ms_meta(repo, rev).is_symlink():
            raise LayoutError(
                f"{_ms_meta(repo, rev)} is a symbolic link; modelget deletes nothing through links",
                hint="remove the link (or what it points at) yourself",
            )
        held = _ms_locked(_ms_meta(repo, rev))
        if held:
            raise LayoutError(
                f"a pull of {what} @ {rev} is running ({len(held)} files locked); "
                "nothing was removed",
                hint="try again when it has finished",
            )
    partials = sorted(f"{rev}/{rel}" for rev in gone for rel in _partial_files(_ms_meta(repo, rev)))
    if kept:
        freed = sum(
            _tree_bytes(repo / "snapshots" / rev) + _tree_bytes(_ms_meta(repo, rev)) for rev in gone
        )
    else:
        freed = _tree_bytes(repo)
    if not dry_run:
        if kept:
            for rev in gone:
                _unlink(repo / "snapshots" / rev, repo)
                _unlink(_ms_meta(repo, rev), repo)
        else:
            shutil.rmtree(repo)
    return RemoveResult(
        repo_id=ms_id,
        path=str(repo),
        commits=tuple(gone),
        refs=(),
        blobs=(),
        partials=tuple(partials),
        kept_commits=tuple(kept),
        skipped=(),
        freed_bytes=freed,
        repo_removed=not kept,
        dry_run=dry_run,
        repo_type=repo_type,
        layout="modelscope",
    )
