"""Pure ranking of mirrors from probe results. No I/O: same input, same order.

A mirror's *cost* is the time it would take to start and move a reference block:
``ttfb + REFERENCE_BYTES / throughput`` when throughput was measured, else ``ttfb``; it is
divided by the catalogue ``weight`` (a weight of 2 makes a mirror look twice as fast).
Usable mirrors come first, cheapest first; mirrors without a measured throughput come after
those with one (a number beats a guess); unusable mirrors last. Ties, at millisecond
resolution, keep catalogue order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modelget.datatypes import Mirror, ProbeResult, RankedMirror

REFERENCE_BYTES = 64 * 1024 * 1024

_USABLE_STATUSES = frozenset({"ok"})


def cost(result: ProbeResult, weight: float = 1.0) -> float | None:
    """Estimated seconds to fetch ``REFERENCE_BYTES`` from this mirror, weighted."""
    if result.status not in _USABLE_STATUSES or result.ttfb_s is None:
        return None
    seconds = result.ttfb_s
    if result.throughput_bps:
        seconds += REFERENCE_BYTES / result.throughput_bps
    return seconds / weight


def rank(mirrors: Sequence[Mirror], results: Mapping[str, ProbeResult]) -> list[RankedMirror]:
    """Order ``mirrors`` (catalogue order) best first, from their probe ``results``.

    A mirror is usable when enabled, probed ``ok`` and not known to lack the repo.
    Disabled and unprobed mirrors are ranked last, still in catalogue order.
    """
    keyed: list[tuple[tuple[int, int, float, int], RankedMirror]] = []
    for index, mirror in enumerate(mirrors):
        result = results.get(mirror.name)
        score = cost(result, mirror.weight) if (result and mirror.enabled) else None
        usable = score is not None and result is not None and result.has_repo is not False
        measured = 0 if (result and result.throughput_bps) else 1
        tier = 0 if usable else 1
        key = (tier, measured if usable else 0, round(score, 3) if usable and score else 0.0, index)
        keyed.append((key, RankedMirror(mirror, 0, result, score, usable)))
    keyed.sort(key=lambda pair: pair[0])
    return [
        RankedMirror(r.mirror, position, r.probe, r.score, r.usable)
        for position, (_, r) in enumerate(keyed, start=1)
    ]
