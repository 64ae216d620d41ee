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


# --- the --json envelope (docs/json.md) ----------------------------------------------------


def json_lines(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """stdout as JSON lines: every line one object; the last one the final envelope, whose
    ``exit_code`` is the process's."""
    lines = res.stdout.splitlines()
    assert lines, res.stderr
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) and "event" in o for o in objects), res.stdout
    last = objects[-1]
    assert last["event"] in ("result", "error", "summary"), last
    assert last["schema"] == 1 and last["exit_code"] == res.returncode, (last, res.stderr)
    assert "command" in last
    return objects


def test_every_command_with_json_prints_json_lines_ending_in_one_envelope(
    tmp_path: Path, sims: list[Any]
) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from modelget.testing.hubsim import HubSimulator

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text('{"hidden": 4}\n')
    save_file({"w": np.arange(16, dtype=np.float32).reshape(4, 4)}, str(repo / "model.safetensors"))
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    sim.add_repo("acme/tiny", repo)
    sim.add_repo("acme/other", repo)
    cat = tmp_path / "m.yaml"
    cat.write_text(f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {sim.url}\n")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    where = ["--mirrors", str(cat), *cache]
    lockfile = tmp_path / "models.lock"
    locked = run_cli("lock", "acme/tiny", "acme/other", "--mirrors", str(cat), "-o", str(lockfile))
    assert locked.returncode == 0, locked.stderr
    runs = {
        "mirrors": ["mirrors", "--mirrors", str(cat)],
        "probe": ["probe", "acme/tiny", "--mirrors", str(cat)],
        "doctor": ["doctor", "acme/tiny", *where, "--timeout", "3"],
        "plan": ["pull", "acme/tiny", "--dry-run", *where],
        "pull": ["pull", "acme/tiny", *where, "--engine", "httpx"],
        "verify": ["verify", "acme/tiny", *cache],
        "ls": ["ls", *cache],
        "load-test": ["load-test", "acme/tiny", *cache, "--device", "cpu"],
        "export": ["export", "acme/tiny", "--to", str(tmp_path / "tree"), *cache],
        "rm": ["rm", "acme/tiny", "--yes", *cache],
        "verify-gone": ["verify", "acme/tiny", *cache],
    }
    finals = {}
    for name, argv in runs.items():
        res = run_cli(*argv, "--json")
        objects = json_lines(res)
        finals[name] = objects[-1]
        assert finals[name]["command"] == argv[0]
        if name == "pull":  # progress events stream first, the result last
            assert {"plan", "file_done"} <= {o["event"] for o in objects[:-1]}
            assert all("schema" not in o for o in objects[:-1])
        else:
            assert len(objects) == 1, res.stdout
    assert all(finals[n]["exit_code"] == 0 for n in runs if n not in ("doctor", "verify-gone"))
    assert finals["mirrors"]["mirrors"][0]["name"] == "hub"
    assert finals["plan"]["plan"]["repo_id"] == "acme/tiny"
    assert finals["pull"]["event"] == "result" and finals["pull"]["status"] == "ok"
    assert finals["verify"]["counts"]["ok"] == 2 and finals["ls"]["models"]
    assert finals["load-test"]["ok"] is True
    assert finals["rm"]["dry_run"] is False
    gone = finals["verify-gone"]
    assert gone["event"] == "error" and gone["exit_code"] == gone["error"]["exit_code"] == 1

    # Several models (--lock): a result line each, then a summary with the worst exit code.
    res = run_cli("pull", "--lock", str(lockfile), "--dry-run", *where, "--json")
    *results, summary = json_lines(res)
    assert [r["plan"]["repo_id"] for r in results] == ["acme/other", "acme/tiny"]
    assert summary["event"] == "summary" and res.returncode == 0
    assert summary["results"] == [
        {"repo_id": "acme/other", "exit_code": 0},
        {"repo_id": "acme/tiny", "exit_code": 0},
    ]


def test_an_error_with_json_is_one_line(tmp_path: Path) -> None:
    """A bad repo id, a bad flag, a bad catalogue: exit 2 and one JSON line, not a
    pretty-printed document over many lines."""
    bad = tmp_path / "mirrors.yaml"
    bad.write_text("version: 1\nmirrors:\n  - name: x\n    kind: hf\n")
    for argv, code in (
        (["pull", "../etc", "--dry-run"], "usage"),
        (["probe", "not a repo"], "usage"),
        (["ls", "--no-such-flag"], "usage"),
        (["mirrors", "--mirrors", str(bad)], "config-invalid"),
    ):
        res = run_cli(*argv, "--json")
        assert res.returncode == 2, res.stderr
        assert len(res.stdout.splitlines()) == 1, res.stdout
        (error,) = json_lines(res)
        assert error["event"] == "error" and error["command"] == argv[0]
        assert error["error"]["code"] == code and error["error"]["exit_code"] == 2
        assert f"error: {code}" in res.stderr  # and the person at the terminal is told too


def test_an_interrupt_with_json_ends_in_an_error_envelope(
    monkeypatch: Any, capsys: Any, tmp_path: Path
) -> None:
    from modelget import cli
    from modelget.cli import commands

    def interrupted(args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "ls", interrupted)
    assert cli.main(["ls", "--cache-dir", str(tmp_path), "--json"]) == 130
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    error = json.loads(line)
    assert error["error"]["code"] == "interrupted" and error["exit_code"] == 130
    # One line that says what happened and what to do (it was the bare code).
    assert err.strip() == (
        "error: interrupted: interrupted (Ctrl-C); what was downloaded is kept; "
        "run the same command again to resume"
    )


def test_a_payload_cannot_overwrite_the_envelope() -> None:
    import pytest

    from modelget.cli.render import envelope

    assert json.loads(envelope("result", "ls", {"models": []}, 0)) == {
        "event": "result",
        "schema": 1,
        "command": "ls",
        "models": [],
        "exit_code": 0,
    }
    with pytest.raises(ValueError, match="exit_code"):
        envelope("result", "ls", {"exit_code": 3}, 0)


def test_the_cli_keeps_httpx_from_importing_its_own_command_line_client() -> None:
    """``import httpx`` imports its CLI (click, rich) when they are installed; the modelget CLI
    stops that in its own process, the Python API leaves the caller's interpreter alone."""
    probe = (
        "import sys\n"
        "{setup}\n"
        "import httpx\n"
        "print(sys.modules.get('httpx._main') is not None, 'rich' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(setup: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", probe.format(setup=setup)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return out.stdout.strip()

    assert run("from modelget import cli; cli._skip_httpx_cli()") == "False False"
    import importlib.util

    if importlib.util.find_spec("rich") and importlib.util.find_spec("click"):
        assert run("import modelget.api") == "True True"  # the library changes nothing


def test_a_bug_under_json_still_ends_in_one_error_envelope(
    monkeypatch: Any, capsys: Any, tmp_path: Path
) -> None:
    from modelget import cli
    from modelget.cli import commands

    def broken(args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "ls", broken)
    assert cli.main(["ls", "--cache-dir", str(tmp_path), "--json"]) == 1
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    error = json.loads(line)
    assert error["event"] == "error" and error["error"]["code"] == "internal-error"
    assert "RuntimeError: boom" in err and "Traceback" in err  # for the bug report
