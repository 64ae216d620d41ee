"""The real `modelget` command, run as a subprocess the way users and scripts run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


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


# --- a pull whose every file fails --------------------------------------------------------------


def test_failure_summary_groups_files_by_reason_without_urls() -> None:
    from modelget.cli import failure_summary

    url = "http://127.0.0.1:4242/acme/gone/resolve/" + "5" * 40
    httpx_style = [
        (
            f"s{i}.bin",
            f"no mirror could serve the rest of the file: a: HTTP 404 from {url}/s{i}.bin; "
            f"b: HTTP 404 from {url}/s{i}.bin; a: HTTP 404 from {url}/s{i}.bin",
        )
        for i in range(12)
    ]
    aria2_style = (
        "c.json",
        f"no mirror could serve the rest of the file: b: {url}/c.json: HTTP 503",
    )
    verify = ("x.bin", "x.bin: sha256 " + "a" * 64 + " does not match the manifest's " + "b" * 64)
    lines = failure_summary([*httpx_style, aria2_style, verify], 20, verbose=False)
    assert lines[0] == "error: 14 of 20 files failed:"
    assert lines[1] == (
        "  12 × no mirror could serve the rest of the file: a: HTTP 404; b: HTTP 404 "
        "(s0.bin, s1.bin, s2.bin, +9 more)"
    )
    assert lines[2] == "  1 × no mirror could serve the rest of the file: b: HTTP 503 (c.json)"
    assert lines[3] == "  1 × sha256 … does not match the manifest's … (x.bin)"
    assert len(lines) == 5 and "-v" in lines[4]
    assert not any("http://" in line for line in lines)
    # More reasons than the summary shows: the rest are counted.
    many = [(f"f{i}", f"reason {i}") for i in range(6)]
    assert failure_summary(many, 6, verbose=False)[-2] == "  3 more with other errors"
    # One file: one line, digests kept; -v: the full error, URLs and all.
    assert failure_summary([verify], 1, verbose=False) == [f"error: {verify[1]}"]
    (one,) = failure_summary([aria2_style], 1, verbose=True)
    assert one == f"error: c.json: {aria2_style[1]}"
    verbose = failure_summary([*httpx_style, aria2_style], 13, verbose=True)
    assert verbose[:13] == [f"  {p}: {e}" for p, e in [*httpx_style, aria2_style]]
    assert verbose[13] == "error: 13 of 13 files failed:" and "-v" not in verbose[-1]


def test_a_pull_whose_every_file_fails_prints_one_short_error(
    tmp_path: Path, engine: str, sims: list[Any]
) -> None:
    """Every file 404s on both mirrors: one ``error:`` line and a line per reason, no URL
    (before: a line of up to 545 characters per file); ``-v`` gives each file's full error,
    and the ``--json`` result keeps every failure complete."""
    from modelget.testing.hubsim import Fault, HubSimulator

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    for i in range(12):
        (repo / f"shard-{i:02d}.bin").write_bytes(os.urandom(20_000))
    (repo / "sub" / "config.json").write_text("{}\n")
    body = "version: 1\nmirrors:\n"
    for name in ("a", "b"):
        sim = HubSimulator(name=name).start()
        sims.append(sim)
        sim.add_repo("acme/gone", repo)
        sim.add_fault(Fault(route="hf-resolve", status=404))
        body += f"  - name: {name}\n    kind: hf\n    endpoint: {sim.url}\n"
    cat = tmp_path / "m.yaml"
    cat.write_text(body)
    argv = ["pull", "acme/gone", "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")]
    argv += ["--engine", engine]

    res = run_cli(*argv)
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: 13 of 13 files failed:"], res.stderr
    summary = res.stderr[res.stderr.index(errors[0]) :].splitlines()
    assert len(summary) <= 5, res.stderr
    assert "13 × " in summary[1] and "a: HTTP 404" in summary[1] and "b: HTTP 404" in summary[1]
    assert "http://" not in res.stderr, res.stderr  # nor in the mirror-failure notes
    assert max(len(line) for line in res.stderr.splitlines()) < 200, res.stderr

    verbose = run_cli(*argv, "-v")
    assert verbose.returncode == 1
    full = [line for line in verbose.stderr.splitlines() if line.startswith("  shard-")]
    assert len(full) == 12 and all("http://" in line for line in full), verbose.stderr

    as_json = run_cli(*argv, "--json")
    result = json.loads(as_json.stdout.splitlines()[-1])
    assert result["event"] == "result" and result["exit_code"] == 1
    assert len(result["files"]) == 13
    for f in result["files"]:
        assert f["status"] == "failed" and f"/{f['path']}" in f["error"] and "404" in f["error"]
