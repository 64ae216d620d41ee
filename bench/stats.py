"""Pure helpers: medians, ratios, targets and Markdown tables (no I/O; unit-tested)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

MB = 1_000_000
"""Rates and sizes in the report are decimal: 1 MB = 10^6 bytes, 1 GB = 10^9 bytes."""


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (NaN when there are none)."""
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def ratio(a: float, b: float) -> float:
    """``a / b``; NaN when either is NaN or ``b`` is 0."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


@dataclass(frozen=True)
class Summary:
    """Median, min and max of a scene's runs."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [v for v in values if not math.isnan(v)]
        if not vals:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(vals), min(vals), max(vals), len(vals))

    def text(self, fmt: str = "{:.2f}", unit: str = "") -> str:
        """``"4.21 s (4.10–4.50, n=3)"``; just the median when n is 1; "n/a" when n is 0."""
        if self.n == 0:
            return "n/a"
        mid = fmt.format(self.median) + unit
        if self.n == 1:
            return mid
        return f"{mid} ({fmt.format(self.low)}–{fmt.format(self.high)}, n={self.n})"


@dataclass(frozen=True)
class Target:
    """A goal such as "≥ 0.95" or "≤ 1.10" for one number."""

    op: Literal[">=", "<="]
    value: float

    def met(self, x: float) -> bool | None:
        """Whether ``x`` meets the target (None when ``x`` is NaN)."""
        if math.isnan(x):
            return None
        return x >= self.value if self.op == ">=" else x <= self.value

    def text(self, fmt: str = "{:g}") -> str:
        return ("≥ " if self.op == ">=" else "≤ ") + fmt.format(self.value)

    def verdict(self, x: float) -> str:
        """One of ``met``, ``missed`` or ``n/a``."""
        ok = self.met(x)
        return "n/a" if ok is None else ("met" if ok else "missed")


def fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s"


def fmt_bytes(n: float) -> str:
    """Decimal units: ``1500000`` → ``"1.50 MB"``."""
    if math.isnan(n):
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_rate(bps: float) -> str:
    """Bytes per second in MB/s (10^6)."""
    if math.isnan(bps):
        return "n/a"
    return f"{bps / MB:.1f} MB/s"


def fmt_ratio(x: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}×"


def fmt_pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f} %"


def parse_rate(text: str) -> int:
    """``"40M"`` → 40_000_000 bytes/s (decimal k/M/G suffixes; a bare number is bytes/s)."""
    t = text.strip().upper().removesuffix("B/S").removesuffix("/S").removesuffix("B")
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:], 1.0)
    number = t[:-1] if t[-1:] in "KMG" else t
    value = float(number) * scale
    if value <= 0:
        raise ValueError(f"a rate must be positive: {text!r}")
    return int(value)


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None
) -> str:
    """A GitHub Markdown table. ``align``: one of ``l``/``r``/``c`` per column (default l)."""
    heads = list(headers)
    body = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    for row in body:
        if len(row) != len(heads):
            raise ValueError(f"row has {len(row)} cells, the table {len(heads)} columns")
    spec = align or "l" * len(heads)
    if len(spec) != len(heads):
        raise ValueError("align needs one letter per column")
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(heads) + " |",
        "| " + " | ".join(rule[a] for a in spec) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def replace_between(text: str, begin: str, end: str, new: str) -> str:
    """``text`` with everything between the marker lines ``begin`` and ``end`` replaced by
    ``new`` (the markers stay); both markers appended at the end when absent."""
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    block = f"{begin}\n{new.rstrip()}\n{end}"
    if start < 0 or stop < 0:
        return text.rstrip() + "\n\n" + block + "\n"
    return text[:start] + block + text[stop + len(end) :]


def fastest_peer(medians: Mapping[str, float], peers: Iterable[str]) -> tuple[str, float]:
    """The peer among ``peers`` with the lowest median time in ``medians`` (a peer that did
    not run, or has no successful run, i.e. NaN, is left out): ``(label, time)``, or
    ``("", NaN)`` when none ran."""
    best = ("", math.nan)
    for label in peers:
        t = medians.get(label, math.nan)
        if not math.isnan(t) and (math.isnan(best[1]) or t < best[1]):
            best = (label, t)
    return best
