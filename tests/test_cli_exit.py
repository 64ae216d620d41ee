"""The `modelget` command leaves without the interpreter's teardown (``cli.run``): what an
orderly exit does for the program must still happen, in its order."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelget.cli import _exit_status


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_waits_for_threads_runs_atexit_and_flushes(tmp_path: Path) -> None:
    marker = tmp_path / "thread-finished"
    res = _run(
        """
        import atexit, sys, threading, time
        from pathlib import Path
        from modelget import cli

        marker = Path(sys.argv[1])

        def late() -> None:
            time.sleep(0.3)
            marker.write_text("done")

        threading.Thread(target=late).start()  # not a daemon: exit waits for it
        atexit.register(lambda: print("atexit ran"))  # buffered: flushed by the exit
        sys.stdout.write("unflushed ")
        sys.argv = ["modelget", "--version"]
        cli.run()
        print("never reached")
        """,
        str(marker),
    )
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "done"
    assert res.stdout.startswith("unflushed modelget ")
    assert res.stdout.rstrip().endswith("atexit ran")
    assert "never reached" not in res.stdout


@pytest.mark.parametrize(
    ("argv", "status"), [(["mirrors", "--no-such-flag"], 2), ([], 2), (["--help"], 0)]
)
def test_run_exits_with_mains_status(argv: list[str], status: int) -> None:
    res = _run(
        f"""
        import sys
        from modelget import cli
        sys.argv = ["modelget", *{argv!r}]
        cli.run()
        """
    )
    assert res.returncode == status, res.stderr


def test_exit_status_is_what_systemexit_would_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_status(None) == 0
    assert _exit_status(3) == 3
    assert _exit_status(256 + 4) == 4
    assert _exit_status("bad things") == 1
    assert capsys.readouterr().err == "bad things\n"
