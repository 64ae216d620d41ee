"""The Python API as a deployment script uses it: partial reporters, the ``modelget`` logger,
errors by code, against real pulls from the hub simulator."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

import modelget
from modelget.engines import EngineName
from modelget.events import EVENTS, LoggingReporter, NullReporter, Reporter, as_reporter
from modelget.testing.hubsim import HubSimulator

REPO = "acme/tiny"


@pytest.fixture
def hub(tmp_path: Path, sims: list[HubSimulator]) -> tuple[HubSimulator, Path, int]:
    """A simulator serving a small repo; the catalogue that names it; the repo's size."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"hidden": 8}\n')
    (src / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    sim.add_repo(REPO, src)
    cat = tmp_path / "m.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n")
    return sim, cat, sum(f.stat().st_size for f in src.iterdir())


def test_reporter_is_a_base_class_whose_every_event_does_nothing() -> None:
    assert issubclass(NullReporter, Reporter)
    assert "on_bytes" in EVENTS and "on_message" in EVENTS
    r = Reporter()
    r.on_plan("a/b", "0" * 40, 1, 2, 3)
    r.on_file_start("f", 1, ("m",))
    r.on_bytes("f", 1, None)
    r.on_file_resumed("f", 1)
    r.on_mirror_failed("f", "m", "why")
    r.on_verify_failed("f", ("m",), "why")
    r.on_file_done("f", 1, 0.1, False)
    r.on_message("info", "hi")
    r.on_connections({"m": 1})


def test_as_reporter_fills_in_the_events_an_object_lacks() -> None:
    class OnlyBytes:
        def __init__(self) -> None:
            self.n = 0

        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            self.n += nbytes

    counter = OnlyBytes()
    r = as_reporter(counter)
    assert isinstance(r, Reporter)
    r.on_bytes("f", 5, "m")
    r.on_message("warning", "ignored")  # not there: a no-op, not an AttributeError
    r.on_connections({"m": 2})
    assert counter.n == 5
    mine = NullReporter()
    assert as_reporter(mine) is mine
    assert isinstance(as_reporter(None), NullReporter)


def test_a_pull_reports_to_an_object_with_only_on_bytes_and_logs_no_warning(
    engine: EngineName,
    tmp_path: Path,
    hub: tuple[HubSimulator, Path, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The deployment script's progress counter: ``on_bytes`` alone. A clean pull logs its
    plan and summary at INFO, the per-file detail at DEBUG and nothing at WARNING."""
    _, cat, total = hub
    lock = threading.Lock()
    seen: list[int] = []

    class Progress:
        def on_bytes(self, path: str, nbytes: int, mirror: str | None) -> None:
            with lock:
                seen.append(nbytes)

    caplog.set_level(logging.DEBUG, logger="modelget")
    result = modelget.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine=engine, reporter=Progress()
    )
    assert result.status == "ok"
    assert sum(seen) == total == result.bytes_fetched
    ours = [r for r in caplog.records if r.name.startswith("modelget")]
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []
    infos = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    assert any(m.startswith(f"pulling {REPO} @ ") for m in infos), infos
    assert any(f"{REPO} @ " in m and ": ok, 2 fetched" in m for m in infos), infos
    debug = [r.getMessage() for r in ours if r.levelno == logging.DEBUG]
    assert any(m.startswith("model.safetensors: done") for m in debug), debug
    assert any(m.startswith("timings: ") for m in debug), debug


def test_a_warning_reaches_the_reporter_and_the_logger_once(
    tmp_path: Path, hub: tuple[HubSimulator, Path, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, cat, _ = hub
    messages: list[tuple[str, str]] = []

    class Messages(Reporter):
        def on_message(self, level: str, text: str) -> None:
            messages.append((level, text))

    caplog.set_level(logging.INFO, logger="modelget")
    result = modelget.pull(
        REPO,
        mirrors=cat,
        cache_dir=tmp_path / "cache",
        engine="httpx",
        reporter=Messages(),
        verify_tls=False,
    )
    assert result.status == "ok"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("TLS certificate checks are OFF")
    assert ("warning", warned[0]) in messages


def test_plan_logs_a_mirror_it_leaves_out(
    tmp_path: Path, hub: tuple[HubSimulator, Path, int], caplog: pytest.LogCaptureFixture
) -> None:
    """``plan`` has no reporter: what a pull would say about the mirrors goes to the log."""
    sim, _, _ = hub
    with socket.socket() as s:  # a port nothing listens on: the mirror is down
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cat = tmp_path / "two.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n"
        f"  - name: dead\n    kind: hf\n    endpoint: {dead}\n"
    )
    caplog.set_level(logging.WARNING, logger="modelget")
    plan = modelget.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")
    assert plan.repo_id == REPO
    warned = [r.getMessage() for r in caplog.records if r.name == "modelget"]
    assert any(m.startswith("dead is not used: down") for m in warned), warned


def test_errors_are_caught_by_class_or_by_code(
    tmp_path: Path, hub: tuple[HubSimulator, Path, int]
) -> None:
    _, cat, _ = hub
    with pytest.raises(modelget.ModelNotFoundError) as caught:
        modelget.pull("acme/none", mirrors=cat, cache_dir=tmp_path / "cache")
    assert isinstance(caught.value, modelget.ResolveError)
    assert caught.value.code == "model-not-found" and caught.value.exit_code == modelget.EXIT_ERROR
    with pytest.raises(modelget.UsageError) as usage:
        modelget.pull("../etc", mirrors=cat)
    assert usage.value.exit_code == modelget.EXIT_USAGE
    with pytest.raises(modelget.NotInCacheError):
        modelget.verify(REPO, cache_dir=tmp_path / "cache")


def test_verify_and_load_test_are_functions_of_the_package(
    tmp_path: Path, hub: tuple[HubSimulator, Path, int]
) -> None:
    _, cat, _ = hub
    cache = tmp_path / "cache"
    result = modelget.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx")
    checked = modelget.verify(REPO, cache_dir=cache)
    assert checked.ok and checked.count("ok") == 2
    assert modelget.verify(result.path).ok  # a directory works too
    assert modelget.model_root(REPO, cache_dir=cache) == Path(result.path)
    report = modelget.load_test(result.path, device="cpu")
    assert isinstance(report, modelget.LoadReport)


def test_the_library_prints_nothing_when_the_application_configures_no_logging() -> None:
    """Python's last-resort handler would print a WARNING to stderr; the library's
    ``NullHandler`` leaves that choice to the application (the CLI prints through its
    reporters, so a warning is never shown twice)."""
    code = (
        "import modelget\n"
        "from modelget.events import LoggingReporter, NullReporter\n"
        "LoggingReporter(NullReporter()).on_message('warning', 'not on stderr')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == "" and out.stdout == ""


def test_logging_reporter_passes_every_event_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Every(Reporter):
        pass

    def recorder(name: str) -> object:
        def record(*args: object) -> None:
            calls.append(name)

        return record

    inner = Every()
    for name in EVENTS:
        setattr(inner, name, recorder(name))
    caplog.set_level(logging.DEBUG, logger="modelget")
    r = LoggingReporter(inner)
    r.on_plan("a/b", "0" * 40, 1, 2, 3)
    r.on_file_start("f", 1, ("m",))
    r.on_bytes("f", 1, None)
    r.on_file_resumed("f", 1)
    r.on_mirror_failed("f", "m", "why")
    r.on_verify_failed("f", ("m",), "bad digest")
    r.on_file_done("f", 1, 0.1, False)
    r.on_message("info", "hi")
    counts: Mapping[str, int] = {"m": 1}
    r.on_connections(counts)
    r.on_lock_wait("f", "/locks/f.lock")
    assert calls == list(EVENTS)
    levels = {r.getMessage(): r.levelname for r in caplog.records}
    assert levels["f: failed verification (from m): bad digest; fetching it again"] == "WARNING"
    assert levels["f: mirror m: why"] == "INFO" and levels["hi"] == "INFO"
    assert levels["connections: m=1"] == "DEBUG"
    assert len(caplog.records) == len(EVENTS) - 1  # every event but on_bytes (progress)
