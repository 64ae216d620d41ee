"""Where files land, and what is already complete there.

Default destination: the Hugging Face cache layout, exactly as huggingface_hub writes it
(``models--{org}--{name}/blobs/{etag}``, ``snapshots/{commit}/{path}`` links, ``refs/{rev}``;
``datasets--`` and ``spaces--`` folders for the other repo types), so transformers, vLLM and huggingface_hub find the model offline. With ``--local-dir``, real
files in a plain directory plus huggingface_hub's ``.cache/huggingface/download/*.metadata``.
With ``--layout modelscope``, real files where the ModelScope client looks
(``{root}/models/{owner}--{name}/snapshots/{revision}/``, ``datasets/`` for a dataset): a local
dir whose metadata sits beside the snapshot instead of inside it (:func:`local_meta_dir`).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from modelget.datatypes import MS_REPO_TYPES, FileEntry, Mirror, RepoType

FOLDER_PREFIXES: dict[str, RepoType] = {
    "models--": "model",
    "datasets--": "dataset",
    "spaces--": "space",
}
"""The cache folder prefix of each repo type (huggingface_hub's ``{repo_type}s--``)."""

LayoutName = Literal["hf", "modelscope"]
"""``hf``: the Hugging Face cache (or ``--local-dir``); ``modelscope``: the ModelScope cache."""
LAYOUTS: tuple[LayoutName, ...] = ("hf", "modelscope")


def repo_folder_name(repo_id: str, repo_type: RepoType = "model") -> str:
    """``models--org--name`` (``datasets--``, ``spaces--``), as huggingface_hub names a repo's
    cache folder."""
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def parse_folder_name(name: str) -> tuple[str, RepoType] | None:
    """``models--org--name`` → (``org/name``, ``model``) (huggingface_hub's rule, every repo
    type); None for a folder that is no repo's."""
    for prefix, repo_type in FOLDER_PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :].replace("--", "/"), repo_type
    return None


def etag_of(entry: FileEntry) -> str:
    """The blob name huggingface_hub uses: the sha256 of LFS files, else the git blob sha1."""
    if entry.lfs and entry.sha256:
        return entry.sha256
    return entry.git_sha1 or entry.sha256 or ""


def snapshot_dir(cache_dir: Path, repo_id: str, commit: str, repo_type: RepoType = "model") -> Path:
    return cache_dir / repo_folder_name(repo_id, repo_type) / "snapshots" / commit


def _metadata_ok(local_dir: Path, entry: FileEntry, commit: str) -> bool:
    meta = local_meta_dir(local_dir) / "download" / f"{entry.path}.metadata"
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
    repo_type: RepoType = "model",
) -> set[str]:
    """Paths of ``entries`` already complete at the destination (cheap: no hashing).

    In the cache, a file counts when its snapshot link resolves to ``blobs/<etag>`` of the
    right size (huggingface_hub's own notion of "cached"); in a local dir, when it has the
    right size and a metadata sidecar naming this commit and etag.
    """
    present: set[str] = set()
    snap = snapshot_dir(cache_dir, repo_id, commit, repo_type)
    for entry in entries:
        if local_dir is not None:
            target = local_dir / entry.path
            try:
                st = target.lstat()  # a link planted there is never "present": it is replaced
                ok = stat.S_ISREG(st.st_mode) and st.st_size == entry.size
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


# --- writing: blobs, snapshot links, refs, local dirs -------------------------------------


def repo_dir(cache_dir: Path, repo_id: str, repo_type: RepoType = "model") -> Path:
    return cache_dir / repo_folder_name(repo_id, repo_type)


def blob_path(
    cache_dir: Path, repo_id: str, entry: FileEntry, repo_type: RepoType = "model"
) -> Path:
    return repo_dir(cache_dir, repo_id, repo_type) / "blobs" / etag_of(entry)


def incomplete_path(
    cache_dir: Path, repo_id: str, entry: FileEntry, repo_type: RepoType = "model"
) -> Path:
    """Where an engine writes ``entry`` while it downloads (resumable across processes)."""
    return repo_dir(cache_dir, repo_id, repo_type) / "blobs" / f"{etag_of(entry)}.incomplete"


def lock_path(
    cache_dir: Path, repo_id: str, entry: FileEntry, repo_type: RepoType = "model"
) -> Path:
    """huggingface_hub's own lock path, so modelget and hf never fetch a blob at once."""
    folder = repo_folder_name(repo_id, repo_type)
    return cache_dir / ".locks" / folder / f"{etag_of(entry)}.lock"


def commit_blob(tmp: Path, blob: Path) -> None:
    """Move a verified ``.incomplete`` file into place atomically."""
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, blob)


def _atomic_symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def link_snapshot(
    cache_dir: Path, repo_id: str, commit: str, entry: FileEntry, repo_type: RepoType = "model"
) -> Path:
    """``snapshots/{commit}/{path}`` → ``../../blobs/{etag}`` (relative, as huggingface_hub
    makes it); a real copy where the filesystem has no symlinks."""
    link = snapshot_dir(cache_dir, repo_id, commit, repo_type) / entry.path
    link.parent.mkdir(parents=True, exist_ok=True)
    blob = blob_path(cache_dir, repo_id, entry, repo_type)
    target = os.path.relpath(blob, link.parent)
    try:
        if link.is_symlink() and os.readlink(link) == target:
            return link
        _atomic_symlink(target, link)
    except OSError:
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        shutil.copyfile(blob, tmp)
        os.replace(tmp, link)
    return link


def write_ref(
    cache_dir: Path, repo_id: str, revision: str, commit: str, repo_type: RepoType = "model"
) -> None:
    """``refs/{revision}`` holding the commit, no trailing newline (huggingface_hub's format)."""
    if revision == commit:
        return
    ref = repo_dir(cache_dir, repo_id, repo_type) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ref.read_text() == commit:
            return
    except OSError:
        pass
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


# --- a --local-dir download: huggingface_hub's local-dir layout, the HF cache untouched ---
#
# ``hf download --local-dir`` writes nothing to the cache; neither does modelget. A file is
# fetched into ``DIR/.cache/huggingface/download/`` (its ``.incomplete`` beside hf's
# ``{path}.metadata`` and ``{path}.lock``), verified there, then renamed to ``DIR/{path}``.


def local_meta_dir(local_dir: Path) -> Path:
    """Where a local dir's metadata lives (hf's ``download/{path}.metadata``, partial files,
    locks, ``quarantine/``, modelget's ``modelget/{commit}.json`` record): ``DIR/.cache/huggingface``;
    for a ModelScope snapshot (:func:`is_ms_snapshot`), ``models/{owner}--{name}/.modelget/{rev}``
    (``datasets/...`` alike) beside ``snapshots/``, so the snapshot the ModelScope client returns holds the model's
    files only."""
    if is_ms_snapshot(local_dir):
        return local_dir.parent.parent / ".modelget" / local_dir.name
    return local_dir / ".cache" / "huggingface"


_local_meta_dir = local_meta_dir


def local_file_path(local_dir: Path, entry: FileEntry) -> Path:
    return local_dir / entry.path


def local_incomplete_path(local_dir: Path, entry: FileEntry) -> Path:
    """Where an engine writes ``entry`` of a local-dir download. Named after hf's
    ``{path}.metadata`` but not hf's own ``.incomplete`` name: hf resumes an incomplete file
    from its size, and modelget's may have holes (ranges land out of order)."""
    return _local_meta_dir(local_dir) / "download" / f"{entry.path}.{etag_of(entry)}.incomplete"


def local_lock_path(local_dir: Path, entry: FileEntry) -> Path:
    """huggingface_hub's lock for ``path`` in a local dir (``{path}.lock``): one fetch at a time."""
    return _local_meta_dir(local_dir) / "download" / f"{entry.path}.lock"


def local_quarantine_dir(local_dir: Path) -> Path:
    return _local_meta_dir(local_dir) / "quarantine"


def write_local_metadata(local_dir: Path, entry: FileEntry, commit: str) -> None:
    """huggingface_hub's ``.cache/huggingface/download/{path}.metadata`` (commit, etag, time),
    so that hf and modelget both see ``DIR/{path}`` as that file at that commit."""
    import time

    meta_root = _local_meta_dir(local_dir)
    meta = meta_root / "download" / f"{entry.path}.metadata"
    meta.parent.mkdir(parents=True, exist_ok=True)
    gitignore = meta_root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*")
    meta_tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    meta_tmp.write_text(f"{commit}\n{etag_of(entry)}\n{time.time()}\n")
    os.replace(meta_tmp, meta)


def place_in_local_dir(blob: Path, local_dir: Path, entry: FileEntry, commit: str) -> Path:
    """A real file at ``local_dir/path`` from a verified blob elsewhere (a cache blob:
    hardlinked where possible, else copied) and huggingface_hub's metadata beside it."""
    target = local_file_path(local_dir, entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(blob, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, target)
    write_local_metadata(local_dir, entry, commit)
    return target


# --- the ModelScope layout: what modelscope-hub's snapshot_download(local_files_only=True) reads
#
# modelscope-hub (``modelscope`` >= 1.38) keeps a repo at
# ``{root}/models/{owner}--{name}/snapshots/{revision}/{path}``: real files, no blobs, no refs,
# no metadata, the directory named after the revision *string* asked for (``master`` by
# default). A dataset is the same under ``{root}/datasets/`` (``HubApi._repo_cache_dir_path``:
# ``{type}s/{owner}--{name}``); ModelScope downloads no spaces. modelget fills that directory as it fills a ``--local-dir``; its own metadata goes to
# ``{root}/models/{owner}--{name}/.modelget/{revision}/`` (see docs/cache.md).


def auto_layout(narrowed: Iterable[Mirror] | None) -> LayoutName:
    """The layout of a pull that names none: ``modelscope`` when the user asked for ModelScope,
    i.e. narrowed the pull to mirrors that are all ModelScope ones (``--only``); ``hf``
    otherwise, a catalogue that enables only ModelScope included (transformers looks in the HF
    cache)."""
    kinds = {m.kind for m in narrowed or ()}
    return "modelscope" if kinds == {"modelscope"} else "hf"


MS_FOLDERS: dict[str, RepoType] = {f"{t}s": t for t in MS_REPO_TYPES}
"""The ModelScope cache's folder of each repo type it downloads (``{root}/datasets/...``)."""


def ms_repo_dir(root: Path, ms_id: str, repo_type: RepoType = "model") -> Path:
    """``{root}/models/{owner}--{name}`` (``datasets/`` for a dataset), as modelscope-hub
    names a repo's cache folder (dots kept: only the legacy clients wrote ``___``)."""
    if repo_type not in MS_REPO_TYPES:
        raise ValueError(f"the ModelScope cache holds no {repo_type}s")
    return root / f"{repo_type}s" / ms_id.replace("/", "--")


def ms_snapshot_dir(root: Path, ms_id: str, revision: str, repo_type: RepoType = "model") -> Path:
    return ms_repo_dir(root, ms_id, repo_type) / "snapshots" / revision


def is_ms_snapshot(path: Path) -> bool:
    """``path`` is ``…/models/{owner}--{name}/snapshots/{rev}`` (``datasets/`` alike: a
    ModelScope snapshot), not an HF cache snapshot (``models--{org}--{name}/snapshots/{commit}``)."""
    return ms_type_of(path) is not None


def ms_type_of(path: Path) -> RepoType | None:
    """The repo type of a ModelScope snapshot ``path`` (its ``models/``, ``datasets/``
    folder), None when ``path`` is no ModelScope snapshot."""
    repo = path.parent.parent
    if (
        path.parent.name == "snapshots"
        and "--" in repo.name
        and not repo.name.startswith(tuple(FOLDER_PREFIXES))
    ):
        return MS_FOLDERS.get(repo.parent.name)
    return None


def cache_quarantine_dir(cache_dir: Path, repo_id: str, repo_type: RepoType = "model") -> Path:
    return repo_dir(cache_dir, repo_id, repo_type) / ".quarantine"


def quarantine(tmp: Path, qdir: Path, entry: FileEntry, mirrors: Iterable[str]) -> Path:
    """Move bytes that failed verification aside (never into place), named for inspection, into
    ``qdir`` (:func:`cache_quarantine_dir` or :func:`local_quarantine_dir`)."""
    import time

    qdir.mkdir(parents=True, exist_ok=True)
    name = f"{etag_of(entry)}.{int(time.time())}.{'+'.join(mirrors) or 'unknown'}"
    dest = qdir / name
    os.replace(tmp, dest)
    for sidecar in (tmp.with_name(tmp.name + ".ranges"), tmp.with_name(tmp.name + ".aria2")):
        sidecar.unlink(missing_ok=True)
    return dest
