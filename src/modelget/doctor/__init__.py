"""``modelget doctor``: why is my pull slow or stuck?

The checks a person would walk, run at once under one time budget (:func:`run`), then a pure
verdict that says in plain words what is wrong and which link is the slowest. The rooms:

- :mod:`~modelget.doctor.report`: the records (``Check``, ``MirrorReport``, ``Finding``,
  ``Verdict``, ``DoctorReport``) and a value's formatting; no I/O;
- :mod:`~modelget.doctor.verdict`: the verdict, pure, one finder per topic (mirrors, disk,
  disk against network, this machine);
- :mod:`~modelget.doctor.network`: per mirror, in one thread each: DNS, TCP, TLS, the repo
  (the source's own metadata call, the one a pull makes), time to first byte and a short
  throughput sample (a ``Range`` GET on the repo's largest file, or the mirror's ping URL
  without a repo id), and whether the mirror honours ``Range``;
- :mod:`~modelget.doctor.machine`: free space and filesystem at the cache, memory, CPUs, a
  sequential write + fsync and read of a scratch file in the cache directory, aria2c, and the
  GPUs torch sees (only when torch is installed; it is never imported otherwise).

This module is imported only by ``modelget.api.doctor`` (and the CLI's ``doctor`` command), so
``modelget --help`` never loads it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from modelget.datatypes import Mirror
from modelget.doctor.machine import (
    DISK_TEST_BYTES,
    check_aria2c,
    check_cpus,
    check_disk,
    check_disk_free,
    check_filesystem,
    check_gpu,
    check_memory,
)
from modelget.doctor.network import check_mirror, describe_error
from modelget.doctor.report import (
    LOCAL_CHECKS,
    MIRROR_CHECKS,
    Check,
    DoctorReport,
    Finding,
    Level,
    MirrorReport,
    Slot,
    Status,
    Verdict,
    fmt_value,
)
from modelget.doctor.verdict import is_network_fs, space_status, verdict
from modelget.sizes import fmt_bytes, fmt_rate, fmt_seconds

#: The client library each source kind imports on its first call: loaded before the clocks
#: start, so a mirror's metadata time is the network's, not the import's.
_CLIENT_MODULES = {"hf": "huggingface_hub.hf_api", "modelscope": "modelscope_hub"}


def _guarded(slot: Slot, work: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except Exception as exc:  # a diagnostic reports its own bugs instead of dying
            slot.fail_current(f"unexpected error: {describe_error(exc)}")
        finally:
            slot.finished = time.perf_counter()

    return run


def _preload(kinds: set[str]) -> None:
    import httpx  # noqa: F401  (every mirror's HTTP checks use it)

    for kind in kinds:
        if kind in _CLIENT_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(_CLIENT_MODULES[kind])


def _local_jobs(cache_dir: Path, disk_test_bytes: int) -> list[tuple[Slot, Callable[[], None]]]:
    """This machine's checks as four jobs: the quick ones, the disk test, aria2c, the GPU."""
    basics = Slot(("disk-free", "filesystem", "memory", "cpus"))

    def do_basics() -> None:
        basics.put(check_disk_free(cache_dir))
        basics.put(check_filesystem(cache_dir))
        basics.put(check_memory())
        basics.put(check_cpus())

    disk = Slot(("disk-write", "disk-read"))

    def do_disk() -> None:
        for check in check_disk(cache_dir, disk_test_bytes):
            disk.put(check)

    aria = Slot(("aria2c",))
    gpu = Slot(("gpu",))
    return [
        (basics, do_basics),
        (disk, do_disk),
        (aria, lambda: aria.put(check_aria2c())),
        (gpu, lambda: gpu.put(check_gpu())),
    ]


def _run_all(jobs: Sequence[tuple[Slot, Callable[[], None]]], deadline: float) -> None:
    """Start every job in a daemon thread; wait for them until ``deadline`` at most."""
    threads = [
        threading.Thread(target=_guarded(slot, work), name="modelget-doctor", daemon=True)
        for slot, work in jobs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))


def run(
    mirrors: Sequence[Mirror],
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    cache_dir: Path,
    timeout: float = 5.0,
    budget_s: float | None = None,
    disk_test_bytes: int = DISK_TEST_BYTES,
) -> DoctorReport:
    """Run every check at once; the whole run lasts at most ``budget_s`` (default
    ``2 * timeout + 2``). A check still waiting at the deadline fails ("no answer"); its
    thread is left to finish on its own (daemon)."""
    budget = budget_s if budget_s is not None else 2 * timeout + 2
    start = time.perf_counter()
    _preload({m.kind for m in mirrors})
    mirror_slots = [(m, Slot(MIRROR_CHECKS)) for m in mirrors]
    local_jobs = _local_jobs(cache_dir, disk_test_bytes)
    jobs = [
        (slot, functools.partial(check_mirror, m, repo_id, revision, timeout, slot))
        for m, slot in mirror_slots
    ]
    _run_all(jobs + local_jobs, start + budget)

    reports = [
        MirrorReport(
            m.name,
            m.kind,
            m.endpoint,
            slot.result(budget),
            (slot.finished or time.perf_counter()) - slot.started,
        )
        for m, slot in mirror_slots
    ]
    manifest = next((s.manifest for _, s in mirror_slots if s.manifest is not None), None)
    local = [c for slot, _ in local_jobs for c in slot.result(budget)]
    report = DoctorReport(
        repo_id=repo_id,
        revision=revision,
        cache_dir=str(cache_dir),
        mirrors=reports,
        local=sorted(local, key=lambda c: LOCAL_CHECKS.index(c.name)),
        repo_bytes=sum(f.size for f in manifest.files) if manifest else None,
        repo_files=len(manifest.files) if manifest else None,
        budget_s=budget,
    )
    _judge_free_space(report)
    report.elapsed_s = time.perf_counter() - start
    report.verdict = verdict(report)
    return report


def _judge_free_space(report: DoctorReport) -> None:
    """The ``disk-free`` check's status, once the repo's size is known."""
    free = report.local_check("disk-free")
    if free is None or free.status == "fail" or not isinstance(free.value, int):
        return
    free.status = space_status(free.value, report.repo_bytes)
    if free.status == "fail" and report.repo_bytes is not None:
        free.detail += f"; {report.repo_id} needs {fmt_bytes(report.repo_bytes)}"


__all__ = [
    "LOCAL_CHECKS",
    "MIRROR_CHECKS",
    "Check",
    "DoctorReport",
    "Finding",
    "Level",
    "MirrorReport",
    "Status",
    "Verdict",
    "check_aria2c",
    "check_cpus",
    "check_disk",
    "check_disk_free",
    "check_filesystem",
    "check_gpu",
    "check_memory",
    "fmt_bytes",
    "fmt_rate",
    "fmt_seconds",
    "fmt_value",
    "is_network_fs",
    "run",
    "space_status",
    "verdict",
]
