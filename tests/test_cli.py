"""The real `modelget` command, run as a subprocess the way users and scripts run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelget", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_no_command_prints_help_and_exits_2() -> None:
    res = run_cli()
    assert res.returncode == 2
    assert "mirrors" in res.stderr


def test_version() -> None:
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("modelget ")


def test_unknown_flag_is_a_usage_error() -> None:
    res = run_cli("mirrors", "--no-such-flag")
    assert res.returncode == 2
    assert "error: usage" in res.stderr


def test_mirrors_lists_the_bundled_catalogue() -> None:
    res = run_cli("mirrors")
    assert res.returncode == 0, res.stderr
    for name in ("huggingface", "hf-mirror", "modelscope"):
        assert name in res.stdout
    assert "HF_TOKEN (unset)" in res.stdout
    assert "<builtin> (from builtin)" in res.stderr


def test_mirrors_json_never_shows_the_token_value() -> None:
    secret = "hf_thisIsASecretTokenValue123456"
    res = run_cli("mirrors", "--json", env={"HF_TOKEN": secret})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    hub = next(m for m in data["mirrors"] if m["name"] == "huggingface")
    assert hub["token_set"] is True
    assert secret not in res.stdout + res.stderr


def test_invalid_catalogue_names_file_line_field_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "mirrors.yaml"
    bad.write_text(
        "version: 1\n"
        "mirrors:\n"
        "  - name: corp\n"
        "    kind: ftp\n"
        "    endpoint: https://example.invalid\n"
    )
    res = run_cli("mirrors", "--mirrors", str(bad))
    assert res.returncode == 2
    assert "error: config-invalid" in res.stderr
    assert f"{bad}:4:" in res.stderr
    assert "kind" in res.stderr
    assert res.stdout == ""


def test_invalid_catalogue_with_json_gives_an_error_envelope(tmp_path: Path) -> None:
    bad = tmp_path / "mirrors.yaml"
    bad.write_text("version: 1\nmirrors:\n  - name: x\n    kind: hf\n")
    res = run_cli("mirrors", "--json", "--mirrors", str(bad))
    assert res.returncode == 2
    envelope = json.loads(res.stdout)
    assert envelope["error"]["code"] == "config-invalid"
    assert envelope["error"]["exit_code"] == 2
