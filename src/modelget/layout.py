"""Where files land, and what is already complete there.

Default destination: the Hugging Face cache layout, exactly as huggingface_hub writes it
(``models--{org}--{name}/blobs/{etag}``, ``snapshots/{commit}/{path}`` links, ``refs/{rev}``),
so transformers, vLLM and huggingface_hub find the model offline. With ``--local-dir``, real
files in a plain directory plus huggingface_hub's ``.cache/huggingface/download/*.metadata``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from modelget.datatypes import FileEntry


def repo_folder_name(repo_id: str) -> str:
    """``models--org--name``, as huggingface_hub names a model repo's cache folder."""
    return "models--" + "--".join(repo_id.split("/"))


def etag_of(entry: FileEntry) -> str:
    """The blob name huggingface_hub uses: the sha256 of LFS files, else the git blob sha1."""
    if entry.lfs and entry.sha256:
        return entry.sha256
    return entry.git_sha1 or entry.sha256 or ""


def snapshot_dir(cache_dir: Path, repo_id: str, commit: str) -> Path:
    return cache_dir / repo_folder_name(repo_id) / "snapshots" / commit


def _metadata_ok(local_dir: Path, entry: FileEntry, commit: str) -> bool:
    meta = local_dir / ".cache" / "huggingface" / "download" / f"{entry.path}.metadata"
    try:
        lines = meta.read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 2 and lines[0].strip() == commit and lines[1].strip() == etag_of(entry)


def scan(
    entries: Iterable[FileEntry],
    *,
    repo_id: str,
    commit: str,
    cache_dir: Path,
    local_dir: Path | None = None,
) -> set[str]:
    """Paths of ``entries`` already complete at the destination (cheap: no hashing).

    In the cache, a file counts when its snapshot link resolves to ``blobs/<etag>`` of the
    right size (huggingface_hub's own notion of "cached"); in a local dir, when it has the
    right size and a metadata sidecar naming this commit and etag.
    """
    present: set[str] = set()
    snap = snapshot_dir(cache_dir, repo_id, commit)
    for entry in entries:
        if local_dir is not None:
            target = local_dir / entry.path
            try:
                ok = target.is_file() and target.stat().st_size == entry.size
            except OSError:
                ok = False
            if ok and _metadata_ok(local_dir, entry, commit):
                present.add(entry.path)
            continue
        link = snap / entry.path
        try:
            if not link.is_file() or link.stat().st_size != entry.size:
                continue
        except OSError:
            continue
        if link.is_symlink() and Path(os.path.realpath(link)).name != etag_of(entry):
            continue
        present.add(entry.path)
    return present


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
