"""Progress and outcome events. The core reports; it never draws.

Engines and ``api.pull`` call a ``Reporter`` from worker threads; implementations must be
thread-safe. The CLI (``cli/progress.py``) draws them with tqdm or prints them as JSON
lines. The Python API takes a ``Reporter`` subclass (override only the events you want: the
others do nothing) or any object with some of these methods (``as_reporter`` fills in the
rest), and logs what matters to the ``modelget`` logger (``LoggingReporter``): warnings at
WARNING, notes at INFO, the ``-v`` detail at DEBUG; a clean pull logs nothing at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

LOGGER = logging.getLogger("modelget")
"""The library's logger (``modelget.__init__`` gives it a ``NullHandler``: an application
that wants the records configures logging; the CLI prints through its reporters instead)."""


class Reporter:
    """What a pull reports, as it happens. Every method does nothing here: subclass and
    override the events you want. Methods are called from worker threads."""

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        """The plan is ready: ``files`` to fetch, ``fetch_bytes`` of ``total_bytes``."""

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        """A file's transfer starts (or resumes) from these mirrors, best first."""

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        """``nbytes`` more bytes of ``path`` arrived (from ``mirror`` when known)."""

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        """``have_bytes`` of ``path`` were already on disk from an earlier run."""

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        """A mirror failed or was dropped for ``path`` (its share goes to the others)."""

    def on_verify_failed(self, path: str, mirrors: tuple[str, ...], reason: str) -> None:
        """``path`` failed its digest; the bytes were quarantined and will be fetched again."""

    def on_file_done(self, path: str, size: int, seconds: float, reused: bool) -> None:
        """``path`` is verified and in place (``reused``: nothing was transferred)."""

    def on_message(self, level: str, text: str) -> None:
        """A one-off note for the user (``info`` or ``warning``)."""

    def on_connections(self, counts: Mapping[str, int]) -> None:
        """The scheduler changed how many connections each mirror gets (mirror → count)."""

    def on_lock_wait(self, path: str, lock: str) -> None:
        """Another process (modelget or huggingface_hub) holds ``path``'s lock file ``lock``:
        this pull waits for it, then reuses its bytes (once per file). By default it is told
        as a message, so a reporter that only overrides ``on_message`` still hears of it."""
        self.on_message("info", lock_wait_text(path, lock))


class NullReporter(Reporter):
    """A reporter that ignores every event."""


EVENTS = tuple(name for name in vars(Reporter) if name.startswith("on_"))
"""Every event's method name, in the order ``Reporter`` declares them."""


class _Partial(Reporter):
    """A user's object as a ``Reporter``: its own methods where it has them, a no-op for the
    events it does not handle (an object with only ``on_bytes`` is a progress counter)."""

    def __init__(self, target: object) -> None:
        self.target = target
        for name in EVENTS:
            method = getattr(target, name, None)
            if callable(method):
                setattr(self, name, method)


def as_reporter(obj: object | None) -> Reporter:
    """``obj`` as a ``Reporter``: itself when it is one, ``NullReporter()`` for None, else an
    adapter that calls the methods it has and ignores the events it has not."""
    if obj is None:
        return NullReporter()
    if isinstance(obj, Reporter):
        return obj
    return _Partial(obj)


_LEVELS = {"warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}


class LoggingReporter(Reporter):
    """Passes every event on to ``inner`` and logs to ``logger`` what a person would want in a
    log: warnings (``on_message`` at level ``warning``, a file that failed its digest) at
    WARNING; the plan, resumes, mirror failures and notes at INFO; per-file and connection
    detail (what ``modelget pull -v`` adds) at DEBUG. Never ``on_bytes``: it is progress."""

    def __init__(self, inner: Reporter, logger: logging.Logger = LOGGER) -> None:
        self.inner = inner
        self.log = logger
        for name in EVENTS:
            if name not in _LOGGED:  # passed on as they are, at no cost
                setattr(self, name, getattr(inner, name))

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        self.log.info(
            "pulling %s @ %s: %d files, %d of %d bytes to fetch",
            repo_id,
            commit[:12],
            files,
            fetch_bytes,
            total_bytes,
        )
        self.inner.on_plan(repo_id, commit, files, fetch_bytes, total_bytes)

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        self.log.debug("%s: %d bytes from %s", path, size, ", ".join(mirrors))
        self.inner.on_file_start(path, size, mirrors)

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        self.log.info("%s: resuming, %d bytes already here", path, have_bytes)
        self.inner.on_file_resumed(path, have_bytes)

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        self.log.info("%s: mirror %s: %s", path, mirror, reason)
        self.inner.on_mirror_failed(path, mirror, reason)

    def on_verify_failed(self, path: str, mirrors: tuple[str, ...], reason: str) -> None:
        self.log.warning(
            "%s: failed verification (from %s): %s; fetching it again",
            path,
            ", ".join(mirrors),
            reason,
        )
        self.inner.on_verify_failed(path, mirrors, reason)

    def on_file_done(self, path: str, size: int, seconds: float, reused: bool) -> None:
        if reused:
            self.log.debug("%s: already here", path)
        else:
            self.log.debug("%s: done (%d bytes, %.1f s)", path, size, seconds)
        self.inner.on_file_done(path, size, seconds, reused)

    def on_message(self, level: str, text: str) -> None:
        self.log.log(_LEVELS.get(level, logging.INFO), "%s", text)
        self.inner.on_message(level, text)

    def on_lock_wait(self, path: str, lock: str) -> None:
        self.log.info("%s", lock_wait_text(path, lock))
        self.inner.on_lock_wait(path, lock)

    def on_connections(self, counts: Mapping[str, int]) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "connections: %s", ", ".join(f"{m}={n}" for m, n in sorted(counts.items()))
            )
        self.inner.on_connections(counts)


_LOGGED = frozenset(name for name in vars(LoggingReporter) if name.startswith("on_"))


def report_connections(reporter: Reporter, counts: Mapping[str, int]) -> None:
    """``reporter.on_connections`` with a copy of ``counts`` (the caller keeps changing its
    own), tolerating a reporter written before that event."""
    method = getattr(reporter, "on_connections", None)
    if method is not None:
        method(dict(counts))


def lock_wait_text(path: str, lock: str) -> str:
    """What a person reads while a pull waits on another process's lock."""
    return (
        f"{path}: waiting for another process (modelget or huggingface_hub) "
        f"that is fetching it (lock {lock})"
    )


def report_lock_wait(reporter: Reporter, path: str, lock: str) -> None:
    """``reporter.on_lock_wait``, or the same note as a message for a reporter written
    before that event."""
    method = getattr(reporter, "on_lock_wait", None)
    if method is not None:
        method(path, lock)
    else:
        reporter.on_message("info", lock_wait_text(path, lock))
