"""The load test: would this model load, and how fast do its tensors reach the device?

Two stages. ``check_model`` is pure file inspection (no torch): every safetensors header
parses, every tensor's dtype, shape and byte range are consistent and exactly tile the file;
a sharded model's index names only shards that are present and every tensor it maps exists
in its shard; ``config.json`` parses; a ``.bin`` that is not a PyTorch checkpoint (a
CTranslate2 ``model.bin``, say) is recognised and never handed to torch. ``load_model`` then
reads every tensor onto the device (torch: CUDA when available, else CPU; without torch:
numpy, from a memory map) and measures bytes, seconds, GB/s and time to the first tensor,
with where the bytes came from: the block device and filesystem (/proc/mounts), what the
disk read meanwhile (/proc/diskstats) and how much was already in the page cache (mincore).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, Literal

#: safetensors dtypes and their sizes in bytes.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_NUMPY_DTYPE = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "uint8",
    "F8_E4M3": "uint8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "uint16",  # numpy has no bfloat16: the raw 16-bit words
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
}
MAX_HEADER_BYTES = 100 * 1024 * 1024

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    """Absolute offset in the file."""
    end: int


@dataclass
class FileCheck:
    path: str
    kind: str
    """``safetensors``, ``index``, ``config``, ``pytorch``, ``other-bin`` or ``other``."""
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    tensors: int = 0
    bytes: int = 0
    note: str | None = None

    def fail(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)


@dataclass
class StorageInfo:
    mount_point: str | None = None
    device: str | None = None
    fstype: str | None = None


@dataclass
class LoadReport:
    path: str
    ok: bool
    checks: list[FileCheck]
    backend: str | None = None
    """``torch`` or ``numpy`` (None: not loaded, the checks failed)."""
    device: str | None = None
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    first_tensor_s: float | None = None
    storage: StorageInfo = field(default_factory=StorageInfo)
    disk_read_bytes: int | None = None
    disk_busy_pct: float | None = None
    cached_fraction: float | None = None
    """Share of the files' pages in the page cache before the load (None: unknown)."""
    notes: list[str] = field(default_factory=list)
    integrity: str = ""
    """How the bytes were checked against their digests before the load, in words: stamps
    (size + mtime against modelget's record, a changed file hashed), every file hashed
    (``--verify``), or not at all (no record)."""

    @property
    def gbps(self) -> float | None:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else None

    @property
    def problems(self) -> list[str]:
        return [f"{c.path}: {p}" for c in self.checks for p in c.problems]

    @property
    def exit_code(self) -> int:
        """0 when the model loads, 4 (a verification failure) when it would not."""
        from modelget.errors import EXIT_OK, EXIT_VERIFY

        return EXIT_OK if self.ok else EXIT_VERIFY


# --- stage 1: inspect the files ---------------------------------------------------------------


def read_header_json(path: Path) -> tuple[dict[str, Any], int]:
    """The raw JSON header of a safetensors file (``__metadata__`` included, nothing checked
    but its framing) and the file offset where the tensor data starts.

    Raises ``ValueError`` with a message for the user when the header cannot be read.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{size} bytes: too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise ValueError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, 8 + n


def read_safetensors_header(path: Path) -> tuple[list[TensorInfo], int]:
    """Parse and validate a safetensors header; return its tensors and the file size.

    Raises ``ValueError`` with a message for the user when anything is inconsistent.
    """
    size = path.stat().st_size
    header, data_start = read_header_json(path)
    tensors = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict):
            raise ValueError(f"tensor {name!r}: entry is not an object")
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError(f"tensor {name!r}: invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(f"tensor {name!r}: invalid data_offsets {offsets!r}")
        want = prod(shape) * DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != want:
            raise ValueError(
                f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for {dtype}{shape} "
                f"(needs {want})"
            )
        tensors.append(
            TensorInfo(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
        )
    tensors.sort(key=lambda t: (t.start, t.end))
    pos = data_start
    for t in tensors:
        if t.start != pos:
            what = "overlaps the previous one" if t.start < pos else "leaves a gap before it"
            raise ValueError(f"tensor {t.name!r} {what} (at byte {t.start}, expected {pos})")
        pos = t.end
    if pos != size:
        raise ValueError(
            f"tensors end at byte {pos} but the file has {size} bytes "
            + ("(truncated)" if pos > size else "(trailing bytes)")
        )
    return tensors, size


def pytorch_checkpoint_kind(path: Path) -> str | None:
    """``zip`` or ``pickle`` for a PyTorch checkpoint, else None (e.g. a CTranslate2 file)."""
    with path.open("rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                if any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                    return "zip"
        except zipfile.BadZipFile:
            return None
        return None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def _model_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts
    )


def check_model(root: Path) -> list[FileCheck]:
    """Inspect every file that a loader would read (see the module docstring)."""
    checks: list[FileCheck] = []
    headers: dict[str, set[str]] = {}
    files = _model_files(root)
    present = {p.relative_to(root).as_posix() for p in files}
    for dangling in sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink() and not p.exists()
    ):
        c = FileCheck(dangling, "missing")
        c.fail("the snapshot links to a blob that is not there (missing file)")
        checks.append(c)
    for p in files:
        rel = p.relative_to(root).as_posix()
        if rel.endswith(".safetensors"):
            c = FileCheck(rel, "safetensors")
            try:
                tensors, size = read_safetensors_header(p)
                c.tensors, c.bytes = len(tensors), size
                headers[rel] = {t.name for t in tensors}
            except (OSError, ValueError) as exc:
                c.fail(str(exc))
            checks.append(c)
        elif rel.endswith(".safetensors.index.json") or rel == "config.json":
            checks.append(FileCheck(rel, "index" if rel.endswith("index.json") else "config"))
        elif rel.endswith((".bin", ".pt", ".pth")):
            kind = pytorch_checkpoint_kind(p)
            c = FileCheck(rel, "pytorch" if kind else "other-bin", bytes=p.stat().st_size)
            if kind is None:
                c.note = "not a PyTorch checkpoint (e.g. CTranslate2): not given to torch"
            checks.append(c)
    for c in checks:
        p = root / c.path
        if c.kind == "config":
            try:
                if not isinstance(json.loads(p.read_text()), dict):
                    c.fail("config.json is not a JSON object")
            except (OSError, ValueError) as exc:
                c.fail(f"config.json does not parse: {exc}")
        elif c.kind == "index":
            _check_index(c, p, root, present, headers)
    return checks


def _check_index(
    c: FileCheck, p: Path, root: Path, present: set[str], headers: dict[str, set[str]]
) -> None:
    try:
        index = json.loads(p.read_text())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise ValueError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        c.fail(f"index does not parse: {exc}")
        return
    base = Path(c.path).parent
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault((base / str(shard)).as_posix(), []).append(str(tensor))
    for shard, names in sorted(by_shard.items()):
        if shard not in present:
            c.fail(f"names shard {shard} ({len(names)} tensors), which is not present")
            continue
        have = headers.get(shard)
        if have is None:
            continue  # the shard's own check reports why its header is unreadable
        missing = [n for n in names if n not in have]
        if missing:
            c.fail(
                f"maps {len(missing)} tensors to {shard} that it does not hold "
                f"(e.g. {missing[0]!r}): the index is stale"
            )
    c.tensors = len(weight_map)


# --- where the bytes live -----------------------------------------------------------------------


def storage_of(path: Path) -> StorageInfo:
    """The mount that holds ``path`` (longest matching mount point in /proc/mounts)."""
    real = os.path.realpath(path)
    best = StorageInfo()
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(
            best.mount_point or ""
        ):
            best = StorageInfo(mount, device, fstype)
    return best


def _diskstats(device: str | None) -> tuple[int, int] | None:
    """(sectors read, io ms) of a block device from /proc/diskstats."""
    if not device or not device.startswith("/dev/"):
        return None
    try:
        name = Path(os.path.realpath(device)).name
        for line in Path("/proc/diskstats").read_text().splitlines():
            parts = line.split()
            if len(parts) > 12 and parts[2] == name:
                return int(parts[5]), int(parts[12])
    except (OSError, ValueError):
        return None
    return None


def cached_fraction(paths: Iterable[Path]) -> float | None:
    """Share of these files' pages that are in the page cache (Linux ``mincore``), or None
    where that cannot be asked. Maps each file read-only through libc (Python's ``mmap``
    does not expose its address), asks, unmaps: nothing is read."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    failed = ctypes.c_void_p(-1).value
    total = cached = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        pages = (size + page - 1) // page
        vec = (ctypes.c_ubyte * pages)()
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr is None or addr == failed:
                return None
            try:
                if libc.mincore(addr, size, vec) != 0:
                    return None
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
        total += pages
        cached += sum(b & 1 for b in vec)
    return cached / total if total else None


# --- stage 2: load the tensors --------------------------------------------------------------


def _torch() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


def resolve_device(device: Device) -> tuple[str, Any | None]:
    """The device to load onto and the torch module (None: numpy on the CPU)."""
    torch = _torch()
    if device == "cuda":
        if torch is None or not torch.cuda.is_available():
            from modelget.errors import UsageError

            raise UsageError(
                "--device cuda needs torch with CUDA and a visible GPU",
                hint="install modelget[torch] with a CUDA build of torch, or use --device cpu",
            )
        return "cuda", torch
    if device == "auto" and torch is not None and torch.cuda.is_available():
        return "cuda", torch
    return "cpu", torch


def _load_safetensors_torch(path: Path, device: str, torch: Any, on_tensor: Any) -> int:
    from safetensors import safe_open

    n = 0
    with safe_open(str(path), framework="pt", device=device) as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensor = f.get_tensor(key)
            if not device.startswith("cuda"):
                # On the CPU safetensors hands back a tensor over its mmap: no byte has been
                # read yet (an 8 GB model "loaded" at 469 GB/s on the H200 host). A copy reads
                # every page, as a model's first forward pass would.
                tensor = tensor.clone()
            n += tensor.numel() * tensor.element_size()
            on_tensor()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n


def _load_safetensors_numpy(path: Path, on_tensor: Any) -> int:
    import numpy as np

    tensors, _ = read_safetensors_header(path)
    n = 0
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for t in tensors:
            count = t.end - t.start
            arr = np.frombuffer(mm, dtype=np.uint8, count=count, offset=t.start).copy()
            arr = arr.view(_NUMPY_DTYPE[t.dtype])
            n += arr.nbytes
            del arr
            on_tensor()
    return n


def load_model(root: Path, device: Device = "auto") -> LoadReport:
    """Check, then load every tensor (see the module docstring). Never raises for a broken
    model: the report says what is wrong (``ok`` False)."""
    checks = check_model(root)
    report = LoadReport(str(root), all(c.ok for c in checks), checks)
    report.storage = storage_of(root)
    if not report.ok:
        return report
    for c in checks:
        if c.note:
            report.notes.append(f"{c.path}: {c.note}")
    target, torch = resolve_device(device)
    report.device = target
    report.backend = "torch" if torch is not None else "numpy"
    if torch is None:
        report.notes.append("torch is not installed: tensors read with numpy on the CPU")
    weights = [root / c.path for c in checks if c.kind == "safetensors"]
    pickles = [root / c.path for c in checks if c.kind == "pytorch"]
    report.cached_fraction = cached_fraction(weights + pickles)
    before = _diskstats(report.storage.device)
    started = time.perf_counter()
    first: list[float] = []

    def on_tensor() -> None:
        report.tensors += 1
        if not first:
            first.append(time.perf_counter() - started)

    for path in weights:
        if torch is not None:
            report.bytes += _load_safetensors_torch(path, target, torch, on_tensor)
        else:
            report.bytes += _load_safetensors_numpy(path, on_tensor)
    for path in pickles:
        if torch is None:
            report.notes.append(f"{path.name}: a PyTorch checkpoint, not loaded without torch")
            continue
        state = torch.load(str(path), map_location=target, weights_only=True)
        for value in state.values() if isinstance(state, dict) else ():
            if hasattr(value, "element_size"):
                report.bytes += value.numel() * value.element_size()
                on_tensor()
        if target.startswith("cuda"):
            torch.cuda.synchronize()
    report.seconds = time.perf_counter() - started
    report.first_tensor_s = first[0] if first else None
    after = _diskstats(report.storage.device)
    if before is not None and after is not None:
        report.disk_read_bytes = (after[0] - before[0]) * 512
        report.disk_busy_pct = min(
            100.0, (after[1] - before[1]) / max(report.seconds * 1000, 1) * 100
        )
    if not weights and not pickles:
        report.notes.append("no safetensors or PyTorch weights to load")
    return report


def warm(root: Path) -> int:
    """Read every file of the model once so that its pages are in the page cache; bytes read."""
    total = 0
    for path in _model_files(root):
        with path.open("rb") as f:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while chunk := f.read(8 * 1024 * 1024):
                total += len(chunk)
    return total
