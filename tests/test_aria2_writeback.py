"""The aria2 engine's writeback thread on its own, on real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelget.engines.aria2.writeback import Writeback, datasync


def _wait(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_it_flushes_the_files_it_follows_and_skips_missing_ones(tmp_path: Path) -> None:
    a = tmp_path / "a.incomplete"
    a.write_bytes(os.urandom(1 << 20))
    w = Writeback(interval_s=0.02)
    try:
        time.sleep(0.1)
        assert w.flushes == 0  # nothing followed: nothing flushed
        w.follow([a, tmp_path / "not-yet-created.incomplete"])
        assert _wait(lambda: w.flushes >= 3)  # the missing file is skipped, not fatal
        w.follow([])
        time.sleep(0.1)
        settled = w.flushes
        time.sleep(0.15)
        assert w.flushes == settled  # a file no longer followed is left alone
    finally:
        w.stop()
    assert not w._thread.is_alive()


def test_stop_ends_the_thread_without_another_flush(tmp_path: Path) -> None:
    a = tmp_path / "a.incomplete"
    a.write_bytes(b"x" * 4096)
    w = Writeback(interval_s=0.02)
    w.follow([a])
    assert _wait(lambda: w.flushes >= 1)
    w.stop()
    n = w.flushes
    time.sleep(0.1)
    assert w.flushes == n


def test_datasync_raises_for_a_file_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        datasync(tmp_path / "gone")
    f = tmp_path / "here"
    f.write_bytes(b"abc")
    datasync(f)  # a read-only descriptor is enough on Linux
