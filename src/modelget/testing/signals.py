"""The ``modelget`` command for tests that stop it with a signal."""

from __future__ import annotations

import sys

_MAIN = (
    "import signal, sys; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'modelget'; "
    "from modelget.cli import main; "
    "sys.exit(main())"
)


def interruptible_cli() -> list[str]:
    """``python -m modelget`` that takes Ctrl-C (SIGINT) as a terminal's user would send it.

    A shell starts a background job with SIGINT ignored, every process below it inherits
    that, and Python then leaves SIGINT ignored (as it should: ``nohup``, ``&``). A test
    suite started that way would see a pull shrug off Ctrl-C; this child puts Python's own
    handler back first. Append the arguments (``pull ...``)."""
    return [sys.executable, "-c", _MAIN]
