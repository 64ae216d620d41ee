"""SIGTERM (docker stop, Kubernetes) is Ctrl-C: a one-line message, exit 143, the partial data
kept for a resume, no aria2 private directory left behind; and a stop prints no mirror error
that did not happen (issue 17 §5). Real simulator, real engines, a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from modelget.engines import EngineName
from modelget.testing.faults import Fault
from modelget.testing.hubsim import HubSimulator
from modelget.testing.signals import interruptible_cli

REPO = "acme/signals"
WEIGHTS = "model.safetensors"


def pull_cmd(cat: Path, cache: Path, engine: str, *extra: str) -> list[str]:
    return [
        *interruptible_cli(), "pull", REPO, "--mirrors", str(cat),
        "--cache-dir", str(cache), "--engine", engine, *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_signal_keeps_the_partial_data_leaves_no_temp_dir_and_says_one_line(
    sig: signal.Signals,
    engine: EngineName,
    tmp_path: Path,
    sims: list[HubSimulator],
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / WEIGHTS).write_bytes(os.urandom(32 * 1024 * 1024))
    (repo / "config.json").write_text("{}\n")
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    sim.add_repo(REPO, repo)
    sim.add_fault(Fault(route="hf-resolve", path_glob=WEIGHTS, rate_bps=4e6))
    cat = sim.write_catalogue(tmp_path / "m.yaml")
    cache, tmp = tmp_path / "c", tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "MODELGET_CACHE_DIR": str(tmp_path / "mg")}
    proc = subprocess.Popen(
        pull_cmd(cat, cache, engine, "--json", "--connections", "4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    # Stop once the pull itself reports bytes of the big file written (what the server sent
    # may still sit in socket buffers).
    for line in proc.stdout:
        event = json.loads(line)
        progress = event.get("event") == "progress" and event.get("path") == WEIGHTS
        if progress and event["bytes"] >= 2_000_000:
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    after = [json.loads(line)["event"] for line in out.splitlines()]
    assert after[-1] == "error" and "mirror_failed" not in after, after  # no false blame
    lines = [line for line in err.splitlines() if line.strip()]
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert lines[0].startswith("error: interrupted") and "terminated (SIGTERM)" in err
    else:
        assert proc.returncode == 130, err
        assert "interrupted" in err
    # One message (code line + its hint at most): no mirror blamed for our own stop.
    assert len(lines) <= 2, err
    assert not any("hub" in line for line in lines), err
    assert not list(tmp.glob("modelget-aria2-*")), list(tmp.iterdir())
    partial = list(cache.rglob("*.incomplete"))
    assert partial and partial[0].stat().st_size > 0
    sim.clear_faults()
    res = subprocess.run(
        pull_cmd(cat, cache, engine, "--json"), capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[-1]["status"] == "ok"
    assert any(e["event"] == "file_resumed" for e in events)
