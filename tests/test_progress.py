"""The CLI's reporters: JSON lines for scripts, tqdm bars and plain lines for people."""

from __future__ import annotations

import io
import json
import threading

import pytest

from modelget.cli import _rate
from modelget.errors import UsageError
from modelget.progress import JsonLinesReporter, TextReporter, TqdmReporter


def test_json_lines_are_parseable_and_progress_is_coalesced() -> None:
    out = io.StringIO()
    rep = JsonLinesReporter(out, interval_s=3600)
    rep.on_plan("org/m", "c" * 40, 1, 100, 100)
    rep.on_file_start("a.bin", 100, ("hub", "mirror"))

    def feed() -> None:
        for _ in range(100):
            rep.on_bytes("a.bin", 1, "hub")

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rep.on_mirror_failed("a.bin", "mirror", "reset after 10 bytes")
    rep.on_file_done("a.bin", 100, 1.5, False)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["plan", "file_start"]
    assert kinds.count("progress") == 1  # coalesced: one line per interval, not 400
    assert kinds[-2:] == ["mirror_failed", "file_done"]
    assert events[1]["mirrors"] == ["hub", "mirror"]


def test_tqdm_reporter_draws_an_overall_bar_and_file_bars() -> None:
    out = io.StringIO()
    rep = TqdmReporter(out)
    rep.on_plan("org/m", "c" * 40, 2, 2000, 2000)
    rep.on_file_start("a.bin", 1000, ("hub",))
    rep.on_file_start("b.bin", 1000, ("hub",))
    rep.on_bytes("a.bin", 1000, "hub")
    rep.on_file_done("a.bin", 1000, 0.1, False)
    rep.on_verify_failed("b.bin", ("evil",), "sha256 mismatch")
    rep.close()
    text = out.getvalue()
    assert "org/m (2 files)" in text
    assert "b.bin: failed verification (from evil)" in text


def test_text_reporter_says_what_happened() -> None:
    out = io.StringIO()
    rep = TextReporter(out)
    rep.on_plan("org/m", "c" * 40, 1, 10, 10)
    rep.on_file_resumed("a.bin", 5)
    rep.on_file_done("a.bin", 10, 0.5, False)
    rep.on_file_done("b.bin", 10, 0.0, True)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("pulling org/m @ cccccccccccc")
    assert "resuming" in lines[1] and "done" in lines[2] and "already here" in lines[3]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("50M", 50_000_000),
        ("800K", 800_000),
        ("1.5G", 1_500_000_000),
        ("1000", 1000),
        ("10MB/s", 10_000_000),
    ],
)
def test_rate_parsing(text: str, value: int) -> None:
    assert _rate(text) == value


@pytest.mark.parametrize("text", ["fast", "-1M", "0"])
def test_bad_rates_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        _rate(text)


def test_mirror_failures_are_shown_once_per_kind_unless_verbose() -> None:
    """A mirror that is down fails every file the same way: one short note (no URL) without
    -v, every note in full with it."""
    url = "http://127.0.0.1:9/acme/m/resolve/" + "c" * 40
    quiet, loud = io.StringIO(), io.StringIO()
    for out, verbose in ((quiet, False), (loud, True)):
        rep = TextReporter(out, verbose=verbose)
        for name in ("a.bin", "b.bin"):
            rep.on_mirror_failed(name, "bad", f"HTTP 404 from {url}/{name}")
        rep.on_mirror_failed("b.bin", "bad", "too slow")
        rep.on_mirror_failed("b.bin", "other", f"HTTP 404 from {url}/b.bin")
    assert quiet.getvalue().splitlines() == [
        "a.bin: mirror bad: HTTP 404",
        "b.bin: mirror bad: too slow",
        "b.bin: mirror other: HTTP 404",
    ]
    assert len(loud.getvalue().splitlines()) == 4 and url in loud.getvalue()
