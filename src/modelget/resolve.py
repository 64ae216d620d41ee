"""Resolution: the enabled mirrors, probed at once, ranked, and the manifests they agree to
serve for one repo at one revision; or the single clearest error when none can.

enabled mirrors (catalogue) → probe (cached results where fresh) → rank → the usable mirrors
with a manifest, best first (with a lockfile: those at the locked commit, led by the best one
that lists the locked bytes). ``no_manifest_error`` is pure: which one error to report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelget import settings
from modelget.auth import with_token
from modelget.datatypes import Catalogue, FileEntry, Manifest, Mirror, RepoType
from modelget.endpoints import MirrorsArg, catalogue_in_force, select
from modelget.errors import (
    AuthRequiredError,
    LockedCommitMissingError,
    LockMismatchError,
    MirrorsUnreachableError,
    ModelgetError,
    ModelNotFoundError,
    NoMirrorError,
    RateLimitedError,
    RevisionNotFoundError,
    UnsafeManifestError,
    UsageError,
)
from modelget.events import Reporter
from modelget.lockfile import LockedModel, check_entries
from modelget.probe import ProbeReport, load_cached, store_cached
from modelget.probe import probe as run_probe
from modelget.rank import rank


@dataclass(frozen=True)
class Resolution:
    """The mirrors a pull may use for the repo, best first, and what the probe found."""

    order: list[Mirror]
    report: ProbeReport
    lock_entries: dict[str, FileEntry] = field(default_factory=dict)
    """With a lockfile: the locked entries, by path."""

    @property
    def manifests(self) -> dict[str, Manifest]:
        return self.report.manifests


def resolve(
    repo_id: str,
    revision: str | None,
    *,
    mirrors: MirrorsArg = None,
    verify_tls: bool = True,
    locked: LockedModel | None = None,
    reporter: Reporter | None = None,
    timings: dict[str, float] | None = None,
    token: str | None = None,
    repo_type: RepoType = "model",
) -> Resolution:
    """Probe the enabled mirrors for ``repo_id`` (a ``repo_type``) at ``revision`` and keep
    those that can serve it, best first; mirrors left out for a problem are named through
    ``reporter``. Raises the clearest single error when none can (see
    :func:`no_manifest_error`); a mirror kind without that repo type lacks the repo.
    ``token``: ``--token``, for the mirrors that take ``HF_TOKEN`` (``auth.with_token``).
    An endpoint variable that is set but not used (a catalogue file wins) is said once."""
    if not isinstance(mirrors, Catalogue):
        selection = select(mirrors)
        if selection.unused and reporter is not None:
            reporter.on_message(
                "info",
                f"{', '.join(selection.unused)} set but not used: the {selection.origin} "
                "catalogue is in force (docs/mirrors.md, endpoints)",
            )
        mirrors = selection.catalogue
    enabled = with_token(enabled_mirrors(mirrors, verify_tls), token)
    check_kinds_serve(enabled, repo_type)
    probe_started = time.perf_counter()
    report = probe_for_plan(enabled, repo_id, revision, repo_type)
    if timings is not None:
        timings["probe"] = time.perf_counter() - probe_started
    ranked = rank(enabled, report.results)
    order = [r.mirror for r in ranked if r.usable and r.mirror.name in report.manifests]
    if locked is not None:
        order = [m for m in order if report.manifests[m.name].commit == locked.commit]
    if not order:
        failure = no_manifest_error(repo_id, revision, report)
        if (
            locked is not None
            and isinstance(failure, (ModelNotFoundError, RevisionNotFoundError, NoMirrorError))
            and not isinstance(failure, MirrorsUnreachableError)  # no answer: nothing is known
        ):
            raise LockedCommitMissingError(
                f"commit {locked.commit} of {repo_id}, pinned by the lockfile, is on no mirror "
                f"now ({failure.code}):\n" + failure.message.split("\n", 1)[-1],
                hint="the commit may have been force-pushed away or the repo deleted: add a "
                "mirror that still has it (a team cdn export, say), or lock a new commit",
            ) from failure
        raise failure
    if reporter is not None:
        for r in ranked:
            probed = report.results.get(r.mirror.name)
            if r.mirror in order or probed is None or probed.status not in PROBLEMS:
                continue
            error = report.errors.get(r.mirror.name)
            why = error.message if error is not None else probed.error or probed.status
            reporter.on_message("warning", f"{r.mirror.name} is not used: {probed.status}: {why}")

    lock_entries: dict[str, FileEntry] = {}
    if locked is not None:
        order, lock_entries = reference_for_lock(locked, order, report.manifests)
    return Resolution(order, report, lock_entries)


def check_kinds_serve(enabled: list[Mirror], repo_type: RepoType) -> None:
    """A usage error when no enabled mirror's kind serves ``repo_type`` at all: a space asked
    of ModelScope mirrors only (ModelScope's studios have no download API), said up front
    rather than as each mirror lacking the repo."""
    if repo_type == "space" and enabled and all(m.kind == "modelscope" for m in enabled):
        names = ", ".join(m.name for m in enabled)
        raise UsageError(
            f"ModelScope has no spaces to download (its studios are apps, with no download "
            f"API), and every mirror in use is a ModelScope one ({names})",
            hint="spaces come from Hugging Face: use an hf mirror (leave out --only, or "
            "--only an hf mirror such as huggingface)",
        )


def enabled_mirrors(mirrors: MirrorsArg, verify_tls: bool = True) -> list[Mirror]:
    catalogue = catalogue_in_force(mirrors)
    enabled = list(catalogue.enabled)
    if not enabled:
        raise NoMirrorError(
            f"no mirror is enabled in {' + '.join(catalogue.sources)}",
            hint="enable at least one mirror (enabled: true), see docs/mirrors.md",
        )
    if not verify_tls:
        from dataclasses import replace

        enabled = [replace(m, verify_tls=False) for m in enabled]
        if any(m.kind == "hf" for m in enabled):
            from modelget.sources.hf import prepare_unverified

            # Before the probes run in parallel: this replaces huggingface_hub's client.
            prepare_unverified()
    return enabled


UNREACHABLE = frozenset({"down", "error"})
"""Probe states of a mirror that gave no answer about the repo (no connection, a timeout, a
server error): when every mirror is in one, the network (or every mirror) is down."""

PROBLEMS = frozenset({"down", "error", "rate-limited", "auth"})
"""Probe states worth a warning when a pull leaves the mirror out (not ``no-repo``: most
catalogues have mirrors that simply lack most repos)."""


def probe_for_plan(
    enabled: list[Mirror], repo_id: str, revision: str | None, repo_type: RepoType = "model"
) -> ProbeReport:
    """Fresh probes, or cached ones plus the manifests (which are never cached), every mirror
    at once. A pull takes no throughput sample: the ranking is by latency (and by the
    throughput a `modelget probe` measured, while its cached result is fresh), and the
    pull-wide scheduler measures every mirror on the real bytes and gives the faster ones the
    work. Measured (bench S3, S10, quick, two runs each): two mirrors, 0.1-0.45 s faster on
    both engines, and 16 MiB per mirror less over the link (the sample's bytes were thrown
    away)."""
    timeout = settings.probe_timeout_s()
    cache_file = settings.cache_dir() / "probes.json"
    cached = load_cached(cache_file, enabled, repo_id, settings.probe_ttl_s(), revision, repo_type)
    report = run_probe(
        enabled,
        repo_id,
        revision,
        timeout=timeout,
        sample="never",
        cached=cached,
        repo_type=repo_type,
    )
    fresh = {n: r for n, r in report.results.items() if cached is None or n not in cached}
    if fresh:
        store_cached(cache_file, enabled, repo_id, fresh, revision, repo_type)
    return report


def no_manifest_error(repo_id: str, revision: str | None, report: ProbeReport) -> ModelgetError:
    """The clearest single error when no mirror could describe the repo."""
    lines = [
        f"  {name}: {report.errors[name].message if name in report.errors else r.error or r.status}"
        for name, r in report.results.items()
    ]
    detail = "\n".join(lines)
    errors = list(report.errors.values())
    shown = repo_id + (f"@{revision}" if revision else "")
    unsafe = [e for e in errors if isinstance(e, UnsafeManifestError)]
    if unsafe:
        return UnsafeManifestError(
            f"refusing what the mirrors list for {shown} (nothing was written):\n{detail}",
            hint="a mirror that lists such paths, digests or sizes is broken or hostile: "
            "disable it in mirrors.yaml (enabled: false) and tell its operator",
        )
    auth = [e for e in errors if isinstance(e, AuthRequiredError)]
    if auth:
        return AuthRequiredError(f"{shown} needs a token:\n{detail}", hint=auth[0].hint)
    limited = [e for e in errors if isinstance(e, RateLimitedError)]
    if limited:
        return RateLimitedError(
            f"every mirror with {shown} is rate limiting:\n{detail}",
            retry_after_s=max((e.retry_after_s or 0.0) for e in limited) or None,
            hint=limited[0].hint,
        )
    if (
        errors
        and any(isinstance(e, RevisionNotFoundError) for e in errors)
        and all(isinstance(e, (ModelNotFoundError, RevisionNotFoundError)) for e in errors)
    ):
        return RevisionNotFoundError(
            f"revision {revision or '(default)'} of {repo_id} is on no mirror:\n{detail}",
            hint="check the branch, tag or commit name",
        )
    if (
        errors
        and all(isinstance(e, ModelNotFoundError) for e in errors)
        and len(errors) == len(report.results)
    ):
        private = [e for e in errors if isinstance(e, ModelNotFoundError) and e.maybe_private]
        if private:  # a mirror answered as the Hub does for a missing or private repo
            return ModelNotFoundError(
                f"{repo_id}: not found (or private: pass a token):\n{detail}",
                hint=private[0].hint,
                maybe_private=True,
            )
        return ModelNotFoundError(
            f"{repo_id} is on no mirror of the catalogue:\n{detail}",
            hint="check the repo id, or add a mirror that has it (docs/mirrors.md)",
        )
    if "CERTIFICATE_VERIFY_FAILED" not in detail and (
        report.results and all(r.status in UNREACHABLE for r in report.results.values())
    ):
        return MirrorsUnreachableError(
            f"no mirror could serve {shown}: none answered:\n{detail}",
            hint="check the network (proxy variables, DNS), or run `modelget probe` to see "
            "each mirror's state; a model already on disk is pulled with --offline",
        )
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return NoMirrorError(
            f"no mirror could serve {shown}:\n{detail}",
            hint="a mirror's TLS certificate is not trusted (self-signed, a private CA, or the "
            "wrong host): fix the certificate, or, on a network you trust, pass --insecure",
        )
    return NoMirrorError(
        f"no mirror could serve {shown}:\n{detail}",
        hint="run `modelget probe` to see each mirror's state",
    )


def reference_for_lock(
    locked: LockedModel, order: list[Mirror], manifests: dict[str, Manifest]
) -> tuple[list[Mirror], dict[str, FileEntry]]:
    """The mirrors in rank order, led by the best one whose manifest matches the lock, and the
    entries to pull; ``LockMismatchError`` when no mirror lists the locked bytes."""
    problems: dict[str, list[str]] = {}
    for mirror in order:
        entries, found = check_entries(locked, manifests[mirror.name].files)
        if not found:
            return [mirror, *(m for m in order if m is not mirror)], entries
        problems[mirror.name] = found
    detail = "\n".join(
        f"  {name}: "
        + "; ".join(found[:3])
        + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")
        for name, found in problems.items()
    )
    raise LockMismatchError(
        f"no mirror lists the bytes the lockfile pins for {locked.repo_id} @ "
        f"{locked.commit[:12]}:\n{detail}",
        hint="a mirror is serving other files under the same commit: remove it from the "
        "catalogue, or lock again if the change is expected",
    )
