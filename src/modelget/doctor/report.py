"""The doctor's records: one :class:`Check` per thing measured, grouped per mirror
(:class:`MirrorReport`) and for this machine, the :class:`Verdict` over them, and the whole
:class:`DoctorReport`; plus :func:`fmt_value` (a check's value for people) and the
:class:`Slot` each worker thread writes its checks into. No I/O here."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from modelget.sizes import fmt_bytes, fmt_rate, fmt_seconds

if TYPE_CHECKING:
    from modelget.datatypes import Manifest

Status = Literal["ok", "warn", "fail", "skip"]
Level = Literal["fail", "warn", "info"]

#: Every mirror lists these checks, in this order (skipped where they do not apply).
MIRROR_CHECKS = ("dns", "tcp", "tls", "repo", "ttfb", "range", "throughput")
#: This machine's checks, in this order.
LOCAL_CHECKS = (
    "disk-free",
    "filesystem",
    "memory",
    "cpus",
    "disk-write",
    "disk-read",
    "aria2c",
    "gpu",
)


@dataclass
class Check:
    """One check's outcome. ``value`` is in ``unit``: ``s`` (seconds), ``B`` (bytes), ``B/s``
    (bytes per second), ``""`` (a count or a word). ``detail`` says what was measured."""

    name: str
    status: Status
    value: float | int | str | None = None
    unit: str = ""
    detail: str = ""


@dataclass
class MirrorReport:
    name: str
    kind: str
    endpoint: str
    checks: list[Check]
    elapsed_s: float = 0.0

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True)
class Finding:
    """One sentence of the verdict. ``code`` is stable (scripts may match on it)."""

    level: Level
    code: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """``ok``: no check failed and nothing blocks a pull. ``slowest_mirror``: the mirror a
    pull would wait on longest (None when none is reachable). ``disk_limits``: the cache disk
    writes slower than the best mirror sends (None: not measured)."""

    ok: bool
    findings: tuple[Finding, ...]
    slowest_mirror: str | None = None
    disk_limits: bool | None = None

    @property
    def text(self) -> str:
        return "\n".join(f.message for f in self.findings)


@dataclass
class DoctorReport:
    repo_id: str | None
    revision: str | None
    cache_dir: str
    mirrors: list[MirrorReport]
    local: list[Check]
    repo_bytes: int | None = None
    repo_files: int | None = None
    elapsed_s: float = 0.0
    budget_s: float = 0.0
    verdict: Verdict | None = None

    def local_check(self, name: str) -> Check | None:
        return next((c for c in self.local if c.name == name), None)

    def mirror(self, name: str) -> MirrorReport:
        return next(m for m in self.mirrors if m.name == name)

    @property
    def failed(self) -> list[tuple[str, Check]]:
        """``(mirror name or "local", check)`` for every failed check."""
        out = [(m.name, c) for m in self.mirrors for c in m.checks if c.status == "fail"]
        return out + [("local", c) for c in self.local if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return self.verdict.ok if self.verdict is not None else not self.failed

    @property
    def exit_code(self) -> int:
        """0 when nothing stands in the way of a pull, 1 otherwise."""
        from modelget.errors import EXIT_ERROR, EXIT_OK

        return EXIT_OK if self.ok else EXIT_ERROR

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.verdict is not None:
            out["verdict"]["text"] = self.verdict.text
        out["ok"] = self.ok
        return out


def fmt_value(check: Check) -> str:
    """``check.value`` for people: ms / MB/s / GB, or as it is."""
    v = check.value
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if check.unit == "s":
            return fmt_seconds(float(v))
        if check.unit == "B/s":
            return fmt_rate(float(v))
        if check.unit == "B":
            return fmt_bytes(v)
        return f"{v:g}{(' ' + check.unit) if check.unit else ''}"
    return str(v)


class Slot:
    """The checks one worker has produced so far, by name (shared with the main thread)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.done: dict[str, Check] = {}
        self.lock = threading.Lock()
        self.manifest: Manifest | None = None
        self.started = time.perf_counter()
        self.finished: float | None = None

    def put(self, check: Check) -> None:
        with self.lock:
            self.done.setdefault(check.name, check)

    def skip_rest(self, detail: str) -> None:
        for name in self.names:
            self.put(Check(name, "skip", detail=detail))

    def fail_current(self, detail: str) -> None:
        with self.lock:
            current = next((n for n in self.names if n not in self.done), None)
        if current is not None:
            self.put(Check(current, "fail", detail=detail))
        self.skip_rest("not reached")

    def result(self, budget_s: float) -> list[Check]:
        with self.lock:
            out: list[Check] = []
            late = True
            for name in self.names:
                if name in self.done:
                    out.append(self.done[name])
                elif late:
                    out.append(Check(name, "fail", detail=f"no answer within {budget_s:g} s"))
                    late = False
                else:
                    out.append(Check(name, "skip", detail="not reached within the time budget"))
            return out
