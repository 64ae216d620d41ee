"""Model repositories served by the hub simulator: files, digests, LFS status and revisions.

A repository is a set of snapshots (one per commit) plus branch and tag names pointing at
commits. Snapshots are built from directories on disk; the bytes are never loaded into memory,
only hashed (sha256 and the git blob sha1 in one streaming pass by ``verify.hash_file``,
cached per file identity).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from modelget.verify import hash_file

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
"""Files at least this large are LFS whatever ``.gitattributes`` says (the Hub's rule)."""

DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.bin",
    "*.gguf",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.ckpt",
    "*.model",
    "*.pkl",
    "*.npz",
    "*.tflite",
    "*.ot",
)
"""LFS patterns used when a repository has no ``.gitattributes``."""

_EXCLUDED_DIRS = frozenset({".git"})


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer text git stores in place of an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass(frozen=True)
class RepoFile:
    """One file of a snapshot, with the digests the hub protocols expose."""

    path: str
    """Repo-relative POSIX path, e.g. ``1_Pooling/config.json``."""
    source: Path
    size: int
    sha256: str
    git_sha1: str
    """Git blob sha1 of the content (the ETag of a regular file)."""
    lfs: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def pointer_size(self) -> int:
        return len(self.pointer)

    @property
    def oid(self) -> str:
        """The git blob id in the tree: of the LFS pointer for LFS files, else of the content."""
        return git_blob_sha1(self.pointer) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        """The Hub ETag (unquoted): sha256 for LFS files, git sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_sha1


@dataclass(frozen=True)
class TreeEntry:
    """A file or a directory in a listing."""

    path: str
    file: RepoFile | None
    """None for a directory."""
    oid: str

    @property
    def is_dir(self) -> bool:
        return self.file is None


@dataclass(frozen=True)
class Snapshot:
    """The files of one commit."""

    commit: str
    files: Mapping[str, RepoFile]
    created_at: float
    dir_oids: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, commit: str, files: Iterable[RepoFile], created_at: float) -> Snapshot:
        by_path = {f.path: f for f in sorted(files, key=lambda f: f.path)}
        dirs: set[str] = set()
        for path in by_path:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        dir_oids = {}
        for d in dirs:
            digest = hashlib.sha1(f"tree {d}\0".encode())
            for path, f in by_path.items():
                if path.startswith(d + "/"):
                    digest.update(f"{path} {f.oid}\n".encode())
            dir_oids[d] = digest.hexdigest()
        return cls(commit=commit, files=by_path, created_at=created_at, dir_oids=dir_oids)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files.values())

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.dir_oids

    def entries(self, path: str = "", *, recursive: bool = False) -> list[TreeEntry] | None:
        """Entries under directory ``path`` ("" = root), sorted by path; None if no such dir."""
        path = path.strip("/")
        if not self.is_dir(path):
            return None
        prefix = f"{path}/" if path else ""
        entries: list[TreeEntry] = []
        for d, oid in self.dir_oids.items():
            rest = d[len(prefix) :] if d.startswith(prefix) else None
            if rest and (recursive or "/" not in rest):
                entries.append(TreeEntry(d, None, oid))
        for p, f in self.files.items():
            rest = p[len(prefix) :] if p.startswith(prefix) else None
            if rest and (recursive or "/" not in rest):
                entries.append(TreeEntry(p, f, f.oid))
        entries.sort(key=lambda e: e.path)
        return entries


@dataclass(frozen=True)
class Repo:
    """A repository: snapshots by commit, branches and tags (name -> commit).

    Immutable: the simulator replaces the whole object when a revision is added, so request
    handlers always see a consistent repository without locking.
    """

    repo_id: str
    ms_id: str
    created_at: float
    branches: Mapping[str, str]
    """Insertion-ordered; the first is the default branch."""
    tags: Mapping[str, str]
    snapshots: Mapping[str, Snapshot]
    gated: bool = False
    token: str | None = None

    @property
    def default_branch(self) -> str:
        return next(iter(self.branches))

    @property
    def private(self) -> bool:
        return self.token is not None and not self.gated

    def resolve(self, revision: str | None) -> Snapshot | None:
        """Snapshot for a branch, tag or full commit id (None = default branch)."""
        rev = self.default_branch if revision is None else revision
        commit = self.branches.get(rev) or self.tags.get(rev)
        if commit is None and rev.startswith("refs/heads/"):
            commit = self.branches.get(rev[len("refs/heads/") :])
        if commit is None and rev.startswith("refs/tags/"):
            commit = self.tags.get(rev[len("refs/tags/") :])
        if commit is None and rev in self.snapshots:
            commit = rev
        return self.snapshots.get(commit) if commit is not None else None

    def resolve_ms(self, revision: str | None) -> Snapshot | None:
        """ModelScope semantics: missing/empty/``master`` means the default branch."""
        if not revision or (revision == "master" and "master" not in self.branches):
            return self.resolve(None)
        return self.resolve(revision)

    def with_revision(
        self, branch: str, snapshot: Snapshot, tags: Iterable[str], created_at: float
    ) -> Repo:
        branches = dict(self.branches)
        branches[branch] = snapshot.commit
        new_tags = dict(self.tags)
        new_tags.update((t, snapshot.commit) for t in tags)
        snapshots = dict(self.snapshots)
        snapshots.setdefault(snapshot.commit, snapshot)
        return Repo(
            repo_id=self.repo_id,
            ms_id=self.ms_id,
            created_at=self.created_at,
            branches=branches,
            tags=new_tags,
            snapshots=snapshots,
            gated=self.gated,
            token=self.token,
        )


# --- .gitattributes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _AttrRule:
    regex: re.Pattern[str]
    lfs: bool


def _translate_glob(pattern: str) -> str:
    """Regex for a gitignore-style glob over a full POSIX path (``*`` stops at ``/``)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i) and i + 2 == n and (i == 0 or pattern[i - 1] == "/"):
            out.append(".*")
            i += 2
        elif c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    if pattern.endswith("/"):
        return None  # directory patterns never match files in .gitattributes
    if "/" not in pattern:
        return re.compile("(?:.*/)?" + _translate_glob(pattern))
    return re.compile(_translate_glob(pattern.lstrip("/")))


def parse_gitattributes(text: str) -> list[_AttrRule]:
    """The ``filter`` rules of a ``.gitattributes`` file, in file order."""
    rules: list[_AttrRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        pattern, attrs = parts[0], parts[1:]
        if pattern.startswith("!"):
            continue
        state: bool | None = None
        for attr in attrs:
            if attr == "filter=lfs":
                state = True
            elif attr.startswith("filter=") or attr in ("-filter", "!filter"):
                state = False
        regex = _glob_regex(pattern)
        if state is not None and regex is not None:
            rules.append(_AttrRule(regex, state))
    return rules


def default_lfs_rules() -> list[_AttrRule]:
    rules = [_glob_regex(p) for p in DEFAULT_LFS_PATTERNS]
    return [_AttrRule(r, True) for r in rules if r is not None]


def is_lfs(path: str, size: int, rules: list[_AttrRule]) -> bool:
    """LFS if the last matching filter rule says ``filter=lfs``, or the file is >= 10 MiB."""
    if size >= LFS_SIZE_THRESHOLD:
        return True
    state = False
    for rule in rules:
        if rule.regex.fullmatch(path):
            state = rule.lfs
    return state


# --- hashing ------------------------------------------------------------------------------------

_digest_cache: dict[tuple[str, int, int, int, int], tuple[str, str]] = {}
_digest_lock = threading.Lock()


def file_digests(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) of a file, streamed (``verify.hash_file``); cached per
    (path, size, mtime, inode)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    with _digest_lock:
        cached = _digest_cache.get(key)
    if cached is not None:
        return st.st_size, cached[0], cached[1]
    got = hash_file(path, sha256=True, git_sha1=True)
    if got.size != st.st_size or path.stat().st_size != st.st_size:
        raise OSError(f"{path} changed while it was being hashed")
    assert got.sha256 is not None and got.git_sha1 is not None
    digests = (got.sha256, got.git_sha1)
    with _digest_lock:
        _digest_cache[key] = digests
    return st.st_size, digests[0], digests[1]


def scan_directory(directory: Path) -> list[RepoFile]:
    """Every file under ``directory`` (dotfiles included, ``.git/`` excluded), hashed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    paths: list[tuple[str, Path]] = []
    for root, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
        for name in filenames:
            full = Path(root, name)
            if full.is_file():
                paths.append((full.relative_to(directory).as_posix(), full))
    attrs = directory / ".gitattributes"
    rules = (
        parse_gitattributes(attrs.read_text(encoding="utf-8", errors="replace"))
        if attrs.is_file()
        else default_lfs_rules()
    )
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hubsim-hash") as pool:
        digests = list(pool.map(lambda item: file_digests(item[1]), paths))
    return [
        RepoFile(
            path=rel,
            source=full,
            size=size,
            sha256=sha256,
            git_sha1=sha1,
            lfs=is_lfs(rel, size, rules),
        )
        for (rel, full), (size, sha256, sha1) in zip(paths, digests, strict=True)
    ]


def derive_commit(files: Iterable[RepoFile]) -> str:
    """A deterministic 40-hex commit id for a file set (paths, sizes and sha256)."""
    digest = hashlib.sha1(b"hubsim-commit\n")
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return digest.hexdigest()
