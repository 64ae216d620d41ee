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
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from modelget.datatypes import Disagreement, FileEntry, Manifest, RepoType
from modelget.errors import UnsafeManifestError, UsageError

MAX_FILES = 100_000
"""A manifest listing more files than this is refused (the largest model repos hold a few
thousand; a listing this long is a broken or hostile mirror, and would only fill memory)."""
MAX_FILE_BYTES = 2**44
"""16 TiB: no model file is this large (the Hub caps files at 50 GB); a size beyond it is refused
as absurd before anything is fetched. Smaller sizes that do not fit are refused by the plan's
free-space check."""

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SHA1 = re.compile(r"[0-9a-fA-F]{40}")
_COMMIT = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,254}")
"""A commit names a directory (``snapshots/{commit}``): one safe path component."""


def check_path(path: str) -> str:
    """Refuse a manifest path that could escape the destination or collide oddly."""
    if not isinstance(path, str):
        raise UnsafeManifestError(
            f"refusing a file path from a mirror that is not a string: {path!r:.80}"
        )
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


def check_size(value: object, path: str) -> int:
    """A file size from a mirror, as an int from 0 to ``MAX_FILE_BYTES``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UnsafeManifestError(f"refusing {path!r}: its size {value!r:.40} is not a number")
    try:
        size = int(value)
    except ValueError:
        raise UnsafeManifestError(
            f"refusing {path!r}: its size {value!r:.40} is not a number"
        ) from None
    if size < 0 or size > MAX_FILE_BYTES:
        raise UnsafeManifestError(
            f"refusing {path!r}: its size {size} bytes is absurd (more than 16 TiB or negative)"
        )
    return size


def check_manifest(manifest: Manifest) -> Manifest:
    """Refuse a mirror's manifest that could make modelget write outside the destination or
    that no filesystem can hold: every name that becomes a path (the commit, each file path,
    each digest, which names the blob) is checked, and so are sizes, duplicates, a file that
    is also a directory, and the number of files. Returns ``manifest`` unchanged."""
    where = f"{manifest.mirror} ({manifest.repo_id})"
    commit = manifest.commit
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit) or ".." in commit:
        raise UnsafeManifestError(
            f"{where}: refusing the commit id {commit!r:.80}: it is not a plain name"
        )
    if len(manifest.files) > MAX_FILES:
        raise UnsafeManifestError(
            f"{where} lists {len(manifest.files)} files; more than {MAX_FILES} is refused"
        )
    paths: set[str] = set()
    for f in manifest.files:
        try:
            check_path(f.path)
            check_size(f.size, f.path)
        except UnsafeManifestError as exc:
            raise UnsafeManifestError(f"{where}: {exc.message}") from None
        if f.path in paths:
            raise UnsafeManifestError(f"{where} lists {f.path!r} twice")
        paths.add(f.path)
        if f.sha256 is not None and not (isinstance(f.sha256, str) and _SHA256.fullmatch(f.sha256)):
            raise UnsafeManifestError(
                f"{where}: refusing {f.path!r}: its sha256 {f.sha256!r:.80} is not 64 hex digits"
            )
        if f.git_sha1 is not None and not (
            isinstance(f.git_sha1, str) and _SHA1.fullmatch(f.git_sha1)
        ):
            raise UnsafeManifestError(
                f"{where}: refusing {f.path!r}: its git sha1 {f.git_sha1!r:.80} is not 40 hex digits"
            )
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise UnsafeManifestError(
                    f"{where} lists {'/'.join(parts[:i])!r} both as a file and as a directory"
                )
    return manifest


def _fold(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def check_collisions(files: Sequence[FileEntry]) -> None:
    """Refuse files whose paths are one path on a case-insensitive or normalising filesystem
    (``Config.json`` and ``config.json``; a composed and a decomposed ``é``): on macOS or
    Windows one would silently replace the other after both were verified. Refused on every
    filesystem, so a pull behaves the same wherever it runs."""
    seen: dict[str, str] = {}
    for f in files:
        folded = _fold(f.path)
        other = seen.get(folded)
        if other is not None:
            raise UnsafeManifestError(
                f"the repo has both {other!r} and {f.path!r}: they are the same file on a "
                "case-insensitive filesystem (macOS, Windows), so one would overwrite the other",
                hint="pull them one at a time, or leave one out with --exclude",
            )
        seen[folded] = f.path
    folded_paths = set(seen)
    for folded, path in seen.items():
        parts = folded.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in folded_paths:
                raise UnsafeManifestError(
                    f"the repo has a file {seen[prefix]!r} and a directory holding {path!r}: "
                    "they are the same name on a case-insensitive filesystem",
                    hint="leave one of them out with --include/--exclude",
                )


def _difference(ref: FileEntry, other: FileEntry) -> tuple[str, str, str] | None:
    """None when ``other`` agrees with ``ref``, else what differs: (field, ``other``'s value,
    ``ref``'s value)."""
    if ref.size != other.size:
        return "size", str(other.size), str(ref.size)
    if ref.sha256 and other.sha256:
        if ref.sha256.lower() != other.sha256.lower():
            return "sha256", f"{other.sha256[:12]}…", f"{ref.sha256[:12]}…"
        return None
    if ref.git_sha1 and other.git_sha1 and ref.git_sha1.lower() != other.git_sha1.lower():
        return "git sha1", f"{other.git_sha1[:12]}…", f"{ref.git_sha1[:12]}…"
    return None


def _compare(ref: FileEntry, other: FileEntry) -> str | None:
    """None when ``other`` agrees with ``ref``, else the reason it does not."""
    diff = _difference(ref, other)
    return None if diff is None else f"{diff[0]} {diff[1]} != {diff[2]}"


@dataclass(frozen=True)
class Copy:
    """One copy of a file as mirrors list it: the entry of its best-ranked holder, and every
    mirror whose entry agrees with it (that holder first, then in rank order)."""

    entry: FileEntry
    mirrors: tuple[str, ...]


def copies(
    reference: Manifest, others: Sequence[Manifest]
) -> tuple[dict[str, list[Copy]], list[Disagreement]]:
    """For each file of ``reference``, the copies to try, in order, and every disagreement.

    The mirrors (``reference`` first, then ``others``, in rank order) are grouped by the copy
    they list: the copy most of them agree on first (the best-ranked one's on a tie), then
    the same among the rest. When the first copy has more mirrors behind it than any other,
    it is the only one: the others are outvoted, named, and never used for the file. When
    it does not (a tie: two mirrors that disagree, say), every copy is kept, best first, and
    the bytes decide: the next one is tried when the one before cannot be fetched and
    verified; its mirrors' disagreements are ``standby`` until then (see :func:`settle`).
    """
    manifests = [reference, *others]
    listings = [m.by_path() for m in manifests]
    result: dict[str, list[Copy]] = {}
    disagreements: list[Disagreement] = []
    for ref in reference.files:
        listed = [
            (m.mirror, files.get(ref.path)) for m, files in zip(manifests, listings, strict=True)
        ]
        left = [(name, e) for name, e in listed if e is not None]
        groups: list[Copy] = []
        while left:
            best: tuple[str, FileEntry, list[str]] | None = None
            for holder, copy in left:
                agreeing = [name for name, other in left if _compare(copy, other) is None]
                if best is None or len(agreeing) > len(best[2]):
                    best = (holder, copy, agreeing)
            assert best is not None
            holder, copy, agreeing = best
            # Digests without a common kind make agreement non-transitive; the holder of the
            # copy goes first whatever happens (with transitive agreement it is first).
            groups.append(Copy(copy, (holder, *(n for n in agreeing if n != holder))))
            left = [(name, e) for name, e in left if name not in agreeing]
        if not groups:  # pragma: no cover - the reference itself lists every one of its files
            continue
        tie = len(groups) > 1 and len(groups[1].mirrors) >= len(groups[0].mirrors)
        result[ref.path] = groups if tie else groups[:1]
        chosen = groups[0]
        for name, maybe in listed:
            if maybe is None:
                disagreements.append(Disagreement(name, ref.path, "file missing"))
            elif name not in chosen.mirrors:
                reason = _compare(chosen.entry, maybe) or "disagrees with the other mirrors"
                if tie:
                    reason += (
                        f"; no majority: its copy is tried if {'+'.join(chosen.mirrors)}'s "
                        "cannot be fetched and verified"
                    )
                disagreements.append(Disagreement(name, ref.path, reason, standby=tie))
    return result, disagreements


def agree(
    reference: Manifest, others: Sequence[Manifest]
) -> tuple[dict[str, list[str]], list[Disagreement]]:
    """For each file of ``reference``: the mirrors (in the order given, ``reference`` first)
    whose copy agrees with the copy most mirrors agree on (on a tie, the earliest mirror's);
    plus every disagreement found. The first mirror listed for a file holds the chosen copy.
    (:func:`copies` also gives the other copies to try where the mirrors tie.)"""
    found, disagreements = copies(reference, others)
    return {path: list(groups[0].mirrors) for path, groups in found.items()}, disagreements


def settle(path: str, tried: Sequence[Copy], verified: int, how: str) -> list[Disagreement]:
    """Where the mirrors tied on ``path`` and copy ``tried[verified]`` turned out right
    (``how``: "verified, from B", say): every mirror of every other copy listed the file
    wrongly. One disagreement per such mirror, not standby, saying what it got wrong."""
    right = tried[verified].entry
    out: list[Disagreement] = []
    for k, copy in enumerate(tried):
        if k == verified:
            continue
        diff = _difference(right, copy.entry)
        reason = (
            f"it lists {diff[0]} {diff[1]}, but the bytes ({how}) have {diff[0]} {diff[2]}"
            if diff is not None
            else f"it lists another copy than the bytes ({how})"
        )
        out.extend(Disagreement(mirror, path, reason) for mirror in copy.mirrors)
    return out


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

    Explicit ``filenames`` (files, or folders: every file under ``dir/``) must all exist
    (else a usage error naming the missing ones) and then ``include``/``exclude`` globs
    (fnmatch over the whole path, ``dir/`` meaning ``dir/*``) narrow them further, exactly
    as huggingface_hub's ``filter_repo_objects``.
    """
    pool: Sequence[FileEntry] = files
    if filenames:
        by_path = {f.path: f for f in files}
        chosen: dict[str, FileEntry] = {}
        missing = []
        for name in filenames:
            if name in by_path:
                chosen.setdefault(name, by_path[name])
                continue
            # A folder (``1_Pooling/`` or ``1_Pooling``): every file under it.
            folder = name.rstrip("/") + "/"
            inside = [f for f in files if f.path.startswith(folder)] if folder != "/" else []
            if not inside:
                missing.append(name)
            for f in inside:
                chosen.setdefault(f.path, f)
        if missing:
            raise UsageError(
                f"not in the repo: {', '.join(missing)}",
                hint="check the file names with `modelget pull REPO --dry-run`",
            )
        pool = list(chosen.values())
    if not include and not exclude:
        # No glob: nothing to filter, and no import of huggingface_hub (0.1 s) for a pull.
        kept_paths = {f.path for f in pool}
        return list(pool), [f.path for f in files if f.path not in kept_paths]
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]

    kept = list(
        filter_repo_objects(
            pool,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            key=lambda f: f.path,
        )
    )
    if not kept and pool:
        raise UsageError(
            f"{_filters_shown(include, exclude)} match no file of the repo "
            f"({len(pool)} file(s) before the filters)",
            hint=_near_matches(include, [f.path for f in pool]),
        )
    kept_paths = {f.path for f in kept}
    left_out = [f.path for f in files if f.path not in kept_paths]
    return kept, left_out


def _filters_shown(include: Sequence[str], exclude: Sequence[str]) -> str:
    parts = [f"--include {p!r}" for p in include] + [f"--exclude {p!r}" for p in exclude]
    return " ".join(parts)


def _near_matches(include: Sequence[str], paths: Sequence[str]) -> str:
    """What the user may have meant: paths a pattern matches but for case, or paths close to
    its spelling; else a few of the repo's paths."""
    import difflib
    import fnmatch

    near: list[str] = []
    for pattern in include:
        near += [p for p in paths if fnmatch.fnmatch(p.lower(), pattern.lower())]
        near += difflib.get_close_matches(pattern, paths, n=3, cutoff=0.5)
        base = pattern.rsplit("/", 1)[-1]
        near += [p for p in paths if fnmatch.fnmatch(p.rsplit("/", 1)[-1], base)]
    shown = list(dict.fromkeys(near))[:5]
    if shown:
        return (
            "did you mean: "
            + ", ".join(shown)
            + " (globs match the whole path; `dir/` means `dir/*`)"
        )
    return (
        "the repo has e.g. " + ", ".join(sorted(paths)[:5]) + "; see `modelget pull REPO --dry-run`"
    )


class ParsedTarget(NamedTuple):
    """A target as the user wrote it (see :func:`parse_target`)."""

    repo_id: str
    revision: str | None
    paths: tuple[str, ...]
    repo_type: RepoType | None
    """What the text says the repo is (``hf://datasets/...``); None when it does not say."""


_URL_TYPES: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}


def parse_target(text: str) -> ParsedTarget:
    """What a user names a repo with, as ``(repo_id, revision, paths, repo_type)``:
    ``ORG/NAME``, ``ORG/NAME@REV`` (as ``modelget lock`` takes it), or huggingface_hub's
    file-system URL ``hf://[models/|datasets/|spaces/]ORG/NAME[@REV][/PATH]``
    (``@refs%2Fpr%2F1``: the revision is URL-quoted there). ``repo_type`` is the URL's
    ``models/``, ``datasets/`` or ``spaces/`` prefix, None without one (the caller's
    ``--repo-type``, default model, decides). Pure: the caller checks the id
    (:func:`check_repo_id`)."""
    from urllib.parse import unquote

    rest = text
    if text.startswith("hf://"):
        rest = text[len("hf://") :]
        kind, _, after = rest.partition("/")
        repo_type = _URL_TYPES.get(kind)
        if repo_type is not None:
            rest = after
        parts = rest.split("/")
        if len(parts) >= 2 and "@" in parts[1]:
            name, _, rev = parts[1].partition("@")
            paths = tuple(p for p in parts[2:] if p)
            return ParsedTarget(f"{parts[0]}/{name}", unquote(rev) or None, paths, repo_type)
        head, paths = "/".join(parts[:2]), tuple(p for p in parts[2:] if p)
        return ParsedTarget(head, None, ("/".join(paths),) if paths else (), repo_type)
    repo_id, at, rev = rest.partition("@")
    if at and not rev:
        raise UsageError(f"empty revision in {text!r}", hint="write REPO_ID@REVISION")
    return ParsedTarget(repo_id, (rev or None), (), None)


def target_type(text: str, said: RepoType | None, given: RepoType | None) -> RepoType:
    """The repo type of a target: what its URL says (``said``) or ``--repo-type`` (``given``),
    default model; the two disagreeing is a usage error."""
    if said is not None and given is not None and said != given:
        raise UsageError(
            f"{text!r} is a {said}, and --repo-type says {given}",
            hint="give the repo type once",
        )
    return said or given or "model"


def check_repo_id(repo_id: str) -> None:
    """ORG/NAME (or NAME) in the characters the hubs allow; it becomes a directory name."""
    parts = repo_id.split("/")
    if (
        not repo_id
        or len(parts) > 2
        or any(not p or p in (".", "..") or p.startswith(("-", ".")) for p in parts)
        or any(not all(c.isalnum() or c in "-_." for c in p) for p in parts)
        or len(repo_id) > 96
    ):
        raise UsageError(
            f"not a valid repo id: {repo_id!r}",
            hint="a repo id looks like ORG/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct",
        )


def check_revision(revision: str | None) -> None:
    """A branch, tag or commit name: it becomes a file name (``refs/{revision}``) in the cache,
    so only names git itself allows, and never one that climbs out of its directory."""
    if revision is None:
        return
    parts = revision.split("/")
    if (
        not revision
        or len(revision) > 255
        or revision.startswith("-")
        or any(ord(c) < 32 or ord(c) == 127 or c in "\\ ~^:?*[" for c in revision)
        or any(p in ("", ".", "..") or p.startswith(".") or p.endswith(".lock") for p in parts)
        or ".." in revision
        or "@{" in revision
    ):
        raise UsageError(
            f"not a valid revision: {revision!r:.100}",
            hint="a revision is a branch or tag name (main, v1.0, refs/pr/1) or a commit id",
        )
