"""Bytes, rates and durations for people: one place for the units every report prints.

A leaf module (imports nothing of modelget). Sizes are decimal (1 MB = 10**6 bytes), as
download tools and disk vendors count them.
"""

from __future__ import annotations


def fmt_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB``; whole bytes below 1000, at most TB."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover - the loop always returns


def fmt_rate(bps: float) -> str:
    """Bytes per second -> ``MB/s`` (``GB/s`` from 10 GB/s on)."""
    return f"{bps / 1e6:.1f} MB/s" if bps < 1e10 else f"{bps / 1e9:.1f} GB/s"


def fmt_seconds(seconds: float) -> str:
    """Milliseconds below 10 s, then seconds with one decimal."""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"
