"""``--json``: every command's error is one JSON line on stdout (JSON Lines, like every other
record), whichever way the command fails: argparse, a bad argument, or a failure found while
it runs (the real command, as a subprocess, the way scripts run it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelget.testing.hubsim import HubSimulator


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelget", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELGET_OFFLINE": "", "HF_HUB_OFFLINE": ""},
        timeout=60,
    )


def test_every_command_s_error_is_one_json_line(tmp_path: Path, sims: list[HubSimulator]) -> None:
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    cat = tmp_path / "m.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmirrors:\n  - name: x\n    kind: hf\n")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    cases: list[tuple[list[str], str, int]] = [
        (["mirrors", "--mirrors", str(bad)], "config-invalid", 2),
        (["mirrors", "--no-such-flag"], "usage", 2),
        (["probe", "not a repo"], "usage", 2),
        (["probe", "acme/x", "--mirrors", str(bad)], "config-invalid", 2),
        (["doctor", "not a repo"], "usage", 2),
        (["pull", "../etc", "--dry-run"], "usage", 2),
        (["pull", "acme/none", "--mirrors", str(cat), *cache], "model-not-found", 1),
        (["pull", "acme/none", "--dry-run", "--mirrors", str(cat), *cache], "model-not-found", 1),
        (["pull", "--lock", str(tmp_path / "no.lock"), *cache], "lockfile-invalid", 2),
        (["pull", "acme/none", "--offline", *cache], "offline-missing", 1),
        (["verify", "acme/none", *cache], "not-in-cache", 1),
        (["ls", "--no-such-flag"], "usage", 2),
        (["rm", "acme/none", "--yes", *cache], "not-in-cache", 1),
        (["load-test", "acme/none", *cache], "not-in-cache", 1),
        (["export", "acme/none", "--to", str(tmp_path / "tree"), *cache], "layout-failed", 1),
    ]
    seen_commands = set()
    for argv, code, exit_code in cases:
        res = run_cli(*argv, "--json")
        where = f"{argv}: {res.stdout!r} {res.stderr!r}"
        assert res.returncode == exit_code, where
        lines = res.stdout.splitlines()
        assert len(lines) == 1, where
        error: dict[str, Any] = json.loads(lines[0])
        assert list(error) == ["event", "schema", "command", "error", "exit_code"], where
        assert error["event"] == "error" and error["command"] == argv[0], where
        assert error["error"]["code"] == code, where
        assert error["exit_code"] == error["error"]["exit_code"] == exit_code, where
        assert f"error: {code}" in res.stderr, where
        seen_commands.add(argv[0])
    # Every command that takes --json (lock writes a lockfile instead: docs/json.md).
    assert seen_commands == {
        "mirrors",
        "probe",
        "doctor",
        "pull",
        "verify",
        "ls",
        "rm",
        "load-test",
        "export",
    }
