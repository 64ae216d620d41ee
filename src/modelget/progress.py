"""Moved to :mod:`modelget.cli.progress` (issue 16); this module re-exports it for one
release and then goes."""

from modelget.cli.progress import (
    JsonLinesReporter,
    TextReporter,
    TqdmReporter,
    connections_line,
    reporter_for,
    short_error,
)

__all__ = [
    "JsonLinesReporter",
    "TextReporter",
    "TqdmReporter",
    "connections_line",
    "reporter_for",
    "short_error",
]
