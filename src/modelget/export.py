"""Publish a model from the local Hugging Face cache as a ``cdn`` tree (``modelget.cdn/1``).

The cache is the source of truth: ``snapshots/{commit}/{path}`` links to ``blobs/{etag}``,
whose name is the sha256 (LFS files) or the git blob sha1 (small files). Every blob is verified
against its name before anything is written; then the blobs go in (hardlinked where the
filesystem allows, else copied; each via a temporary name and a rename), then the manifest,
then ``refs.json`` (merged with the refs already there), each atomically. A tree is therefore
never left pointing at bytes that are missing or wrong, and running the export again only
checks what is already there.

    {dest}/{repo_id}/refs.json
    {dest}/{repo_id}/manifests/{commit}.json
    {dest}/blobs/sha256/{sha[0:2]}/{sha}
    {dest}/torrents/sha256/{sha[0:2]}/{sha}.torrent      (with torrents=True: swarm mode)

With ``torrents=True`` each big blob's torrent (``modelget.swarm.torrent``: the same bytes any
node makes) is computed in the read that verifies the blob, and written beside the blobs:
``{dest}/torrents`` is a ``pull --swarm-dir``.

Nothing here prints; the CLI renders the ``ExportResult``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelget.datatypes import (
    REPO_URL_PREFIXES,
    FileEntry,
    Manifest,
    RepoType,
    is_commit,
    is_sha256_hex,
)
from modelget.errors import LayoutError, ModelgetError, UsageError, VerificationError
from modelget.layout import repo_dir
from modelget.manifest import check_path
from modelget.sources.cdn import DEFAULT_REVISION, FORMAT, blob_path, manifest_document
from modelget.verify import hash_file

_TMP = re.compile(r"^\..+\.\d+\.tmp$")  # layout's own transient temp files


@dataclass(frozen=True)
class ExportResult:
    """What an export did. ``files``/``bytes``: the snapshot's files and their total size;
    ``linked``/``copied``: blobs newly put in the tree; ``reused``: blobs already there and
    verified; ``refs``: the revision names that now point at ``commit`` in ``refs.json``."""

    repo_id: str
    commit: str
    dir: str
    manifest: str
    refs: tuple[str, ...]
    files: int
    bytes: int
    blobs: int
    linked: int
    copied: int
    reused: int
    torrents: int = 0
    """Torrents written (``torrents=True``; those already there and equal count too)."""


@dataclass(frozen=True)
class _Blob:
    source: Path
    entry: FileEntry
    torrent: bytes | None = None
    """The blob's published torrent (``torrents=True``, a blob that goes through a swarm)."""


def _read_ref(ref: Path) -> str | None:
    try:
        text = ref.read_text().strip()
    except OSError:
        return None
    return text if is_commit(text) else None


def _refs_in_cache(rdir: Path) -> dict[str, str]:
    """Every ``refs/{name}`` of the cached repo (``refs/pr/1`` too) → its commit."""
    refs_root = rdir / "refs"
    out: dict[str, str] = {}
    if not refs_root.is_dir():
        return out
    for ref in sorted(refs_root.rglob("*")):
        if not ref.is_file() or any(p.startswith(".") for p in ref.relative_to(refs_root).parts):
            continue
        commit = _read_ref(ref)
        if commit:
            out[ref.relative_to(refs_root).as_posix()] = commit
    return out


def _resolve(rdir: Path, repo_id: str, revision: str | None) -> tuple[str, tuple[str, ...]]:
    """The commit to export and the revision names to publish for it."""
    cached = _refs_in_cache(rdir)
    rev = revision or DEFAULT_REVISION
    pull_hint = f"run `modelget pull {repo_id} --revision {rev}` first (with the same cache)"
    if is_commit(rev):
        commit = rev
    elif rev in cached:
        commit = cached[rev]
    else:
        raise LayoutError(
            f"revision {rev!r} of {repo_id} is not in the cache at {rdir}"
            + (f" (cached refs: {', '.join(sorted(cached))})" if cached else ""),
            hint=pull_hint,
        )
    if not (rdir / "snapshots" / commit).is_dir():
        raise LayoutError(
            f"commit {commit} of {repo_id} has no snapshot in the cache at {rdir}", hint=pull_hint
        )
    if revision is not None and not is_commit(revision):
        names: tuple[str, ...] = (revision,)
    else:
        names = tuple(sorted(name for name, c in cached.items() if c == commit))
    return commit, names


def _entry_for(path: str, link: Path, blobs_dir: Path, torrents: bool = False) -> _Blob:
    """Verify one snapshot file against the digest its cache blob is named by (and, with
    ``torrents``, make a big blob's torrent in the same read)."""
    try:
        real = Path(os.path.realpath(link))
        size = real.stat().st_size
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read {link}: {exc}") from exc
    name = real.name if real.parent == Path(os.path.realpath(blobs_dir)) else ""
    if is_sha256_hex(name):
        torrent: bytes | None = None
        from modelget.swarm.policy import through_swarm

        if torrents and through_swarm(size, name):
            from modelget.swarm.torrent import make_torrent

            made, sha = make_torrent(real)
            torrent = made.to_bytes()
        else:
            sha = hash_file(real, sha256=True).sha256 or ""
        if sha != name:
            raise VerificationError(
                f"{path}: cached blob {real} is corrupt: its sha256 is {sha}",
                hint="refusing to publish it; pull the model again to repair the cache",
            )
        return _Blob(real, FileEntry(path=path, size=size, sha256=name, lfs=True), torrent)
    got = hash_file(real, sha256=True, git_sha1=True)
    assert got.sha256 is not None and got.git_sha1 is not None
    if is_commit(name):
        if got.git_sha1 != name:
            raise VerificationError(
                f"{path}: cached blob {real} is corrupt: its git blob sha1 is {got.git_sha1}",
                hint="refusing to publish it; pull the model again to repair the cache",
            )
        return _Blob(real, FileEntry(path=path, size=size, sha256=got.sha256, git_sha1=name))
    # A real file in the snapshot (a filesystem without symlinks gets copies): it counts
    # only if the cache holds a blob of that content under one of its digests.
    for digest, lfs in ((got.sha256, True), (got.git_sha1, False)):
        blob = blobs_dir / digest
        if blob.is_file() and blob.stat().st_size == size:
            return _Blob(
                real,
                FileEntry(
                    path=path,
                    size=size,
                    sha256=got.sha256,
                    git_sha1=None if lfs else got.git_sha1,
                    lfs=lfs,
                ),
            )
    raise VerificationError(
        f"{path}: {link} is not a link to a cache blob and matches none, so it cannot be verified",
        hint="refusing to publish it; pull the model again to repair the cache",
    )


def _snapshot_entries(rdir: Path, commit: str, torrents: bool = False) -> list[_Blob]:
    snap = rdir / "snapshots" / commit
    out: list[_Blob] = []
    for item in sorted(snap.rglob("*")):
        if item.is_dir() and not item.is_symlink():
            continue
        if _TMP.match(item.name):
            continue
        rel = item.relative_to(snap).as_posix()
        try:
            check_path(rel)
        except ModelgetError as exc:
            raise LayoutError(f"refusing to export an unsafe path {rel!r} from {snap}") from exc
        if not item.exists():
            raise LayoutError(
                f"{rel}: {item} is a broken link (its blob is missing from the cache)",
                hint="pull the model again to repair the cache",
            )
        out.append(_entry_for(rel, item, rdir / "blobs", torrents))
    if not out:
        raise LayoutError(f"the snapshot {snap} holds no files")
    return out


def _place(blob: _Blob, dest: Path) -> str:
    """Put ``blob`` at ``dest``: 'reused' (already there and right), 'linked' or 'copied'."""
    sha = blob.entry.sha256
    assert sha is not None
    if dest.is_file() and dest.stat().st_size == blob.entry.size:
        try:
            same = os.path.samefile(dest, blob.source)
        except OSError:
            same = False
        if same or hash_file(dest, sha256=True).sha256 == sha:
            return "reused"
        # A wrong blob in the tree (an old failed copy): replaced with verified bytes below.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(blob.source, tmp)
        how = "linked"
    except OSError:
        try:
            shutil.copyfile(blob.source, tmp)
            os.chmod(tmp, 0o644)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LayoutError(f"cannot write {dest}: {exc}") from exc
        how = "copied"
    os.replace(tmp, dest)
    return how


def _write_atomic(path: Path, text: str) -> None:
    _write_bytes_atomic(path, text.encode())


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LayoutError(f"cannot write {path}: {exc}") from exc


def _merged_refs(path: Path, names: tuple[str, ...], commit: str) -> str:
    refs: dict[str, Any] = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LayoutError(
                f"{path} exists but is not valid JSON; refusing to overwrite it"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise LayoutError(
                f"{path} exists but is not a {FORMAT} refs file; refusing to overwrite it"
            )
        old = doc.get("refs")
        if isinstance(old, dict):
            refs.update(old)
    for name in names:
        refs[name] = commit
    return json.dumps({"format": FORMAT, "refs": refs}, indent=2, sort_keys=True) + "\n"


def export_model(
    repo_id: str,
    dest: Path,
    *,
    cache_dir: Path,
    revision: str | None = None,
    repo_type: RepoType = "model",
    torrents: bool = False,
) -> ExportResult:
    """Write ``repo_id`` (at ``revision``, default ``main``) from the HF cache ``cache_dir``
    into the cdn tree rooted at ``dest``. Raises ``LayoutError`` when the model or revision is
    not cached, ``VerificationError`` (nothing written) when a cached blob is corrupt. A
    dataset's or a space's JSON files go under ``datasets/``, ``spaces/`` (the blobs are
    shared)."""
    rdir = repo_dir(cache_dir, repo_id, repo_type)
    if not rdir.is_dir():
        raise LayoutError(
            f"{repo_id} is not in the Hugging Face cache at {cache_dir}",
            hint=f"run `modelget pull {repo_id}` first, or pass the cache with --cache-dir",
        )
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--to {dest} exists and is not a directory")
    commit, names = _resolve(rdir, repo_id, revision)

    # 1. Verify every blob before writing anything.
    blobs = _snapshot_entries(rdir, commit, torrents)

    # 2. Blobs (content-addressed: a sha256 shared by two paths is placed once).
    counts = {"linked": 0, "copied": 0, "reused": 0}
    unique: dict[str, _Blob] = {}
    for b in blobs:
        assert b.entry.sha256 is not None
        unique.setdefault(b.entry.sha256, b)
    for sha, b in unique.items():
        counts[_place(b, dest / blob_path(sha))] += 1
    written = 0
    for sha, b in unique.items():
        if b.torrent is not None:
            from modelget.swarm.torrent import torrent_relpath

            tpath = dest / "torrents" / torrent_relpath(sha)
            if not (tpath.is_file() and tpath.read_bytes() == b.torrent):
                _write_bytes_atomic(tpath, b.torrent)
            written += 1

    # 3. The manifest, then refs.json: readers see the new revision only once it is complete.
    manifest = Manifest(
        repo_id=repo_id,
        revision=revision or DEFAULT_REVISION,
        commit=commit,
        files=tuple(sorted((b.entry for b in blobs), key=lambda f: f.path)),
        mirror="local-cache",
        mirror_repo_id=repo_id,
        repo_type=repo_type,
    )
    repo_root = dest / f"{REPO_URL_PREFIXES[repo_type]}{repo_id}"
    manifest_file = repo_root / "manifests" / f"{commit}.json"
    _write_atomic(manifest_file, manifest_document(manifest) + "\n")
    refs_file = repo_root / "refs.json"
    _write_atomic(refs_file, _merged_refs(refs_file, names, commit))

    return ExportResult(
        repo_id=repo_id,
        commit=commit,
        dir=str(dest),
        manifest=str(manifest_file),
        refs=names,
        files=len(blobs),
        bytes=sum(b.entry.size for b in blobs),
        blobs=len(unique),
        linked=counts["linked"],
        copied=counts["copied"],
        reused=counts["reused"],
        torrents=written,
    )
