"""Pure planning: what a pull will fetch, from where, and whether it fits on disk.

``assemble`` takes the manifests of the mirrors that can serve the repo (best first) and
decides, per wanted file, which copies to try in which order and from which mirrors;
``settle_present`` puts first a copy an earlier pull already verified here (the check of what
is here is handed in);

``make_plan`` takes everything it needs as arguments (the agreed manifest, the ordered
sources of each file, what is already complete locally, the free space, the measured
throughput) and returns a ``Plan``; it does no I/O, so ``--dry-run`` and the tests see exactly
what a pull would do.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

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
from modelget.lockfile import LockedModel, agree_with_lock
from modelget.manifest import Copy, check_collisions, copies, merge_digests, select_files, settle
from modelget.sizes import fmt_bytes

#: Space kept free beyond the bytes to fetch: control files, metadata, a little slack.
MIN_RESERVE_BYTES = 64 * 1024 * 1024
RESERVE_FRACTION = 0.01


@dataclass(frozen=True)
class Assembly:
    """Per wanted file (in manifest order) the copies to try, best first, each with its own
    mirrors' URLs; the disagreements found; the paths the filters left out."""

    reference: Manifest
    tries: dict[str, list[Alternative]]
    disagreements: list[Disagreement]
    excluded: list[str]


def assemble(
    manifests: Sequence[Manifest],
    file_url: Callable[[str, FileEntry], str],
    *,
    locked: LockedModel | None = None,
    lock_entries: Mapping[str, FileEntry] | None = None,
    filenames: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    reference_mirror: str | None = None,
) -> Assembly:
    """``manifests``: one per usable mirror, best first. The reference (its commit and file
    list) is ``reference_mirror``'s manifest when given and usable, else the best mirror's:
    the caller names the best-ranked mirror that speaks in Hugging Face commits (an ``hf`` or
    ``cdn`` mirror), so the snapshot is the HF commit whichever mirror ranks first (a
    ModelScope repo is another git repository: its revision is not HF's). Every file's
    sources stay in rank order. ``file_url(mirror, entry)``: that mirror's URL for the file.
    With ``locked``, the locked entries (``lock_entries``, by path) are the ones to pull."""
    rank = [m.mirror for m in manifests]
    ref_i = rank.index(reference_mirror) if reference_mirror in rank else 0
    reference = manifests[ref_i]
    others = [m for i, m in enumerate(manifests) if i != ref_i]
    files_of = {m.mirror: m.by_path() for m in manifests}
    groups: dict[str, list[Copy]]
    if locked is not None:
        entries = lock_entries or {}
        candidates, disagreements = agree_with_lock(
            locked, [(m.mirror, files_of[m.mirror]) for m in manifests]
        )
        # The locked copy; every source matches it.
        groups = {p: [Copy(entries[p], tuple(names))] for p, names in candidates.items() if names}
        wanted = [entries[p] for p in locked.paths]
        excluded = sorted({f.path for f in reference.files} - set(locked.paths))
    else:
        groups, disagreements = copies(reference, others)
        wanted, excluded = select_files(
            reference.files, filenames=filenames, include=include, exclude=exclude
        )
    check_collisions(wanted)

    def sourced(copy: Copy) -> Alternative:
        """The copy's entry (with a sha256 borrowed from its other mirrors if it lacks one)
        and each of its mirrors' URLs, in rank order."""
        names = copy.mirrors
        entry = merge_digests(copy.entry, (files_of[n][copy.entry.path] for n in names[1:]))
        ranked = sorted(names, key=rank.index)
        return Alternative(entry, tuple(FileSource(n, file_url(n, entry)) for n in ranked))

    tries: dict[str, list[Alternative]] = {}
    for wanted_entry in wanted:
        found = groups.get(wanted_entry.path)
        # Where the mirrors tie, every copy, best first; else the one most mirrors agree on
        # (it may not be the reference mirror's).
        tries[wanted_entry.path] = (
            [sourced(c) for c in found] if found else [Alternative(wanted_entry, ())]
        )
    return Assembly(reference, tries, list(disagreements), list(excluded))


def settle_present(
    tries: Mapping[str, list[Alternative]],
    disagreements: Sequence[Disagreement],
    here: Callable[[Sequence[FileEntry]], set[str]],
) -> tuple[set[str], dict[str, list[Alternative]], list[Disagreement]]:
    """What is already here (``here(entries)``: the paths of those entries complete and
    verified on disk), with each tie an earlier pull settled put in order: the copy found
    here first, the mirrors its bytes disproved named."""
    out = {path: list(t) for path, t in tries.items()}
    found = list(disagreements)
    present = here([t[0].entry for t in out.values()])
    for path, tried in out.items():
        if len(tried) < 2:
            continue
        # A tie already settled by an earlier pull: the copy here was verified when it landed.
        k = next(
            (
                k
                for k, alt in enumerate(tried)
                if (path in present if k == 0 else here([alt.entry]))
            ),
            None,
        )
        if k is None:
            continue
        present.add(path)
        settled = settle(
            path,
            [Copy(a.entry, tuple(s.mirror for s in a.sources)) for a in tried],
            k,
            "already here, verified when fetched",
        )
        found = [d for d in found if not (d.path == path and d.standby)] + settled
        out[path] = [tried[k], *tried[:k], *tried[k + 1 :]]
    return present, out, found


def required_bytes(fetch_bytes: int) -> int:
    """Bytes the destination filesystem must have free for a pull of ``fetch_bytes``.

    Files are written in place (``.incomplete`` beside their final name, then renamed on the
    same filesystem), so a pull needs the bytes it fetches plus a small reserve, not twice.
    """
    if fetch_bytes == 0:
        return 0
    return fetch_bytes + max(MIN_RESERVE_BYTES, int(fetch_bytes * RESERVE_FRACTION))


def make_plan(
    reference: Manifest,
    wanted: Sequence[FileEntry],
    sources: Mapping[str, Sequence[FileSource]],
    *,
    present: Collection[str] = (),
    free_bytes: int | None = None,
    space_at: str = "the destination",
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
    ``InsufficientDiskSpaceError`` when ``free_bytes`` cannot hold the fetch (``space_at``
    names the directory whose file system that is: every byte of a pull, partial files
    included, is written under one destination, the cache or the local dir).
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
            f"not enough disk space: the pull needs {fmt_bytes(need)} "
            f"({fmt_bytes(fetch)} of files + temporary space), {space_at} has "
            f"{fmt_bytes(free_bytes)} free",
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
