"""Pure planning: what a pull will fetch, from where, and whether it fits on disk.

``make_plan`` takes everything it needs as arguments (the agreed manifest, the ordered
sources of each file, what is already complete locally, the free space, the measured
throughput) and returns a ``Plan``; it does no I/O, so ``--dry-run`` and the tests see exactly
what a pull would do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from modelget.datatypes import (
    Alternative,
    Disagreement,
    FileEntry,
    FileSource,
    Manifest,
    Plan,
    PlanItem,
)
from modelget.errors import InsufficientDiskSpaceError, NoMirrorError

#: Space kept free beyond the bytes to fetch: control files, metadata, a little slack.
MIN_RESERVE_BYTES = 64 * 1024 * 1024
RESERVE_FRACTION = 0.01


def required_bytes(fetch_bytes: int) -> int:
    """Bytes the destination filesystem must have free for a pull of ``fetch_bytes``.

    Files are written in place (``.incomplete`` beside their final name, then renamed on the
    same filesystem), so a pull needs the bytes it fetches plus a small reserve, not twice.
    """
    if fetch_bytes == 0:
        return 0
    return fetch_bytes + max(MIN_RESERVE_BYTES, int(fetch_bytes * RESERVE_FRACTION))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{n} B"  # pragma: no cover - loop always returns


def make_plan(
    reference: Manifest,
    wanted: Sequence[FileEntry],
    sources: Mapping[str, Sequence[FileSource]],
    *,
    present: Collection[str] = (),
    free_bytes: int | None = None,
    throughput_bps: Mapping[str, float] | None = None,
    disagreements: Sequence[Disagreement] = (),
    excluded: Sequence[str] = (),
    alternatives: Mapping[str, Sequence[Alternative]] | None = None,
) -> Plan:
    """Build the plan for ``wanted`` files of ``reference``.

    ``sources[path]`` lists the agreeing mirrors' URLs for that file, best first.
    ``present`` holds the paths already complete and verified at the destination.
    ``throughput_bps`` maps mirror name to measured bytes/second (for the ETA).
    ``alternatives[path]``: other copies of that file to try, in order, when the mirrors tie
    on it (``manifest.copies``); they go into the item as they are.
    Raises ``NoMirrorError`` when a file to fetch has no source, and
    ``InsufficientDiskSpaceError`` when ``free_bytes`` cannot hold the fetch.
    """
    items: list[PlanItem] = []
    for entry in sorted(wanted, key=lambda e: e.path):
        is_present = entry.path in present
        srcs = tuple(sources.get(entry.path, ()))
        if not srcs and not is_present:
            raise NoMirrorError(
                f"no mirror can serve {entry.path} of {reference.repo_id} at "
                f"{reference.commit[:12]}: every mirror that has it disagrees with the manifest",
                hint="run `modelget probe REPO_ID` to see which mirrors disagree",
            )
        alts = tuple(alternatives.get(entry.path, ())) if alternatives else ()
        items.append(PlanItem(entry, srcs, is_present, alts))

    total = sum(i.entry.size for i in items)
    fetch = sum(i.entry.size for i in items if not i.present)
    need = required_bytes(fetch)
    if free_bytes is not None and free_bytes < need:
        raise InsufficientDiskSpaceError(
            f"not enough disk space: the pull needs {_human(need)} "
            f"({_human(fetch)} of files + temporary space), the destination has {_human(free_bytes)}",
            hint="free some space, or choose another destination with --cache-dir or --local-dir",
        )

    eta: float | None = None
    if throughput_bps:
        used = {s.mirror for i in items if not i.present for s in i.sources}
        rate = sum(throughput_bps.get(m, 0.0) for m in used)
        if rate > 0:
            eta = fetch / rate
        elif fetch == 0:
            eta = 0.0
    elif fetch == 0:
        eta = 0.0

    return Plan(
        repo_id=reference.repo_id,
        revision=reference.revision,
        commit=reference.commit,
        manifest_mirror=reference.mirror,
        items=tuple(items),
        total_bytes=total,
        fetch_bytes=fetch,
        required_bytes=need,
        free_bytes=free_bytes,
        eta_s=eta,
        disagreements=tuple(disagreements),
        excluded=tuple(excluded),
    )
