"""Progress and outcome events. The core reports; it never draws.

Engines and ``api.pull`` call a ``Reporter`` from worker threads; implementations must be
thread-safe. The CLI (``cli/progress.py``) draws them with tqdm or prints them as JSON
lines; the Python API takes any object with these methods (``NullReporter`` ignores everything).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Reporter(Protocol):
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
        this pull waits for it, then reuses its bytes (once per file)."""


class NullReporter:
    """A reporter that ignores every event."""

    def on_plan(
        self, repo_id: str, commit: str, files: int, fetch_bytes: int, total_bytes: int
    ) -> None:
        pass

    def on_file_start(self, path: str, size: int, mirrors: tuple[str, ...]) -> None:
        pass

    def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
        pass

    def on_file_resumed(self, path: str, have_bytes: int) -> None:
        pass

    def on_mirror_failed(self, path: str, mirror: str, reason: str) -> None:
        pass

    def on_verify_failed(self, path: str, mirrors: tuple[str, ...], reason: str) -> None:
        pass

    def on_file_done(self, path: str, size: int, seconds: float, reused: bool) -> None:
        pass

    def on_message(self, level: str, text: str) -> None:
        pass

    def on_connections(self, counts: Mapping[str, int]) -> None:
        pass

    def on_lock_wait(self, path: str, lock: str) -> None:
        # A subclass that only overrides on_message still hears of the wait.
        self.on_message("info", lock_wait_text(path, lock))


def report_connections(reporter: Reporter, counts: Mapping[str, int]) -> None:
    """``reporter.on_connections(counts)``, tolerating a reporter written before that event."""
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
