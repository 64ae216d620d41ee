"""Pure manifest logic: which mirrors agree on which files, and which files are wanted.

The reference manifest comes from the best-ranked mirror that has the repo: it gives the
commit and the list of files. For each file, the copy that most mirrors agree on is the one
fetched (on a tie, the best-ranked mirror's), so one fast mirror with stale or wrong bytes
cannot outvote two that agree. A mirror is a candidate for a file only when its entry has the
same size and the same digest as that copy (sha256 where both sides have one, else the git
blob sha1 where both have one). When the two sides share no digest kind (ModelScope lists
sha256, HF gives only a git sha1 for small files) a size match is accepted: the bytes are
still verified against the chosen digest before they land, so a wrong answer costs a
refetch, never a bad file.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

from modelget.datatypes import Disagreement, FileEntry, Manifest
from modelget.errors import UnsafeManifestError, UsageError


def check_path(path: str) -> str:
    """Refuse a manifest path that could escape the destination or collide oddly."""
    bad = (
        not path
        or "\x00" in path
        or "\\" in path
        or path.startswith("/")
        or path != posixpath.normpath(path)
        or any(part in ("", ".", "..") for part in path.split("/"))
        or len(path) > 4096
    )
    if bad:
        raise UnsafeManifestError(f"refusing unsafe file path from a mirror: {path!r}")
    return path


def _compare(ref: FileEntry, other: FileEntry) -> str | None:
    """None when ``other`` agrees with ``ref``, else the reason it does not."""
    if ref.size != other.size:
        return f"size {other.size} != {ref.size}"
    if ref.sha256 and other.sha256:
        if ref.sha256.lower() != other.sha256.lower():
            return f"sha256 {other.sha256[:12]}… != {ref.sha256[:12]}…"
        return None
    if ref.git_sha1 and other.git_sha1 and ref.git_sha1.lower() != other.git_sha1.lower():
        return f"git sha1 {other.git_sha1[:12]}… != {ref.git_sha1[:12]}…"
    return None


def agree(
    reference: Manifest, others: Sequence[Manifest]
) -> tuple[dict[str, list[str]], list[Disagreement]]:
    """For each file of ``reference``: the mirrors (in the order given, ``reference`` first)
    whose copy agrees with the copy most mirrors agree on (on a tie, the earliest mirror's);
    plus every disagreement found. The first mirror listed for a file holds the chosen copy."""
    manifests = [reference, *others]
    listings = [m.by_path() for m in manifests]
    candidates: dict[str, list[str]] = {}
    disagreements: list[Disagreement] = []
    for ref in reference.files:
        copies = [
            (m.mirror, files.get(ref.path)) for m, files in zip(manifests, listings, strict=True)
        ]
        present = [(name, e) for name, e in copies if e is not None]
        chosen: FileEntry = ref
        chosen_by = reference.mirror
        group: list[str] = []
        for holder, copy in present:
            agreeing = [name for name, other in present if _compare(copy, other) is None]
            if len(agreeing) > len(group):
                chosen, chosen_by, group = copy, holder, agreeing
        # Digests without a common kind make agreement non-transitive; the holder of the
        # chosen copy goes first whatever happens (with transitive agreement it is first).
        candidates[ref.path] = [chosen_by, *(n for n in group if n != chosen_by)]
        for name, maybe in copies:
            if maybe is None:
                disagreements.append(Disagreement(name, ref.path, "file missing"))
            elif name not in group:
                reason = _compare(chosen, maybe) or "disagrees with the other mirrors"
                disagreements.append(Disagreement(name, ref.path, reason))
    return candidates, disagreements


def merge_digests(reference: FileEntry, others: Iterable[FileEntry]) -> FileEntry:
    """The reference entry, with a sha256 borrowed from an agreeing mirror when it lacks one.

    Only used for entries that already agree on size (and on any shared digest).
    """
    if reference.sha256:
        return reference
    for other in others:
        if other.sha256 and other.size == reference.size:
            return FileEntry(
                reference.path,
                reference.size,
                other.sha256.lower(),
                reference.git_sha1,
                reference.lfs,
            )
    return reference


def select_files(
    files: Sequence[FileEntry],
    *,
    filenames: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> tuple[list[FileEntry], list[str]]:
    """The wanted files and the paths left out, with ``hf download`` semantics.

    Explicit ``filenames`` must all exist (else a usage error naming the missing ones) and
    then ``include``/``exclude`` globs (fnmatch over the whole path, ``dir/`` meaning
    ``dir/*``) narrow them further, exactly as huggingface_hub's ``filter_repo_objects``.
    """
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]

    pool: Sequence[FileEntry] = files
    if filenames:
        by_path = {f.path: f for f in files}
        missing = [n for n in filenames if n not in by_path]
        if missing:
            raise UsageError(
                f"not in the repo: {', '.join(missing)}",
                hint="check the file names with `modelget pull REPO --dry-run`",
            )
        pool = [by_path[n] for n in dict.fromkeys(filenames)]
    kept = list(
        filter_repo_objects(
            pool,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            key=lambda f: f.path,
        )
    )
    kept_paths = {f.path for f in kept}
    left_out = [f.path for f in files if f.path not in kept_paths]
    return kept, left_out
