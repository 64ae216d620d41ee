"""The CUDA load test on a GPU machine: seeded synthetic checkpoint → local hub → pull → load test.

Run from the repository root on a machine with torch + CUDA (it needs no aria2c, nginx or
network: the pull uses the httpx engine against the hub simulator on 127.0.0.1)::

    PYTHONPATH=src python3 scripts/cuda_loadtest.py --gb 8 --out results.json

Steps, each through the real ``modelget`` command: make a seeded Llama-shaped sharded
checkpoint (``modelget.testing.fixtures.make_synthetic``), serve it from a
:class:`~modelget.testing.hubsim.HubSimulator`, ``modelget pull`` it into a fresh HF cache, then
``modelget load-test --device cuda --json`` with a cold page cache (``drop_caches``; needs root,
and the report's ``cached_fraction`` says whether it worked) and warm, then ``--device cpu``
warm. Writes every JSON report and the command lines to ``--out``; docs/benchmarks.md records
the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelget.testing import fixtures
from modelget.testing.hubsim import HubSimulator

REPO_ID = "synthetic/llama-cuda-loadtest"


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a script that reports to its operator


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _modelget(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "modelget", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if done.stderr.strip():
        _say(done.stderr.strip()[-2000:])
    return done.returncode, done.stdout, elapsed


def _gpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release()}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
            facts["cuda"] = torch.version.cuda
    except ImportError:
        facts["torch"] = None
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        facts["nvidia_smi"] = smi.stdout.strip()
    except OSError:
        facts["nvidia_smi"] = None
    facts["cpus"] = os.cpu_count()
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=8.0, help="checkpoint size in GB (1e9 bytes)")
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument("--out", type=Path, required=True, help="write the results JSON here")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="modelget-cuda-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"facts": _gpu_facts(), "commands": [], "runs": []}
    _say(json.dumps(results["facts"]))

    t0 = time.perf_counter()
    fixtures.make_synthetic(work / "src", int(args.gb * 1e9), shard_bytes=2 * 1024**3)
    results["generate_s"] = round(time.perf_counter() - t0, 2)
    _say(f"generated {args.gb} GB checkpoint in {results['generate_s']} s")

    hub = HubSimulator(name="hub").start()
    try:
        hub.add_repo(REPO_ID, work / "src")
        catalogue = work / "mirrors.yaml"
        catalogue.write_text(
            f"version: 1\nmirrors:\n  - name: local-hub\n    kind: hf\n    endpoint: {hub.url}\n"
        )
        cache = work / "hf-cache"
        env = dict(os.environ)
        common = ["--mirrors", str(catalogue), "--cache-dir", str(cache)]
        pull = ["pull", REPO_ID, *common, "--engine", "httpx"]
        pull += ["--connections", str(args.connections), "--json"]
        results["commands"].append("modelget " + " ".join(pull))
        rc, out, elapsed = _modelget(pull, env)
        results["pull"] = {"rc": rc, "wall_s": round(elapsed, 2), "last_event": out.strip()[-600:]}
        _say(f"pull rc={rc} in {elapsed:.1f} s")
        if rc != 0:
            args.out.write_text(json.dumps(results, indent=2))
            return rc
    finally:
        hub.stop()

    def load(device: str, cold: bool) -> None:
        dropped = _drop_caches() if cold else None
        cmd = ["load-test", REPO_ID, "--cache-dir", str(cache), "--device", device, "--json"]
        results["commands"].append("modelget " + " ".join(cmd))
        rc, out, elapsed = _modelget(cmd, env)
        try:
            report = json.loads(out)
        except json.JSONDecodeError:
            report = {"raw": out[-2000:]}
        results["runs"].append(
            {
                "device": device,
                "cold": cold,
                "drop_caches": dropped,
                "rc": rc,
                "wall_s": round(elapsed, 2),
                "report": report,
            }
        )
        _say(
            f"load-test {device} cold={cold} rc={rc} wall {elapsed:.2f} s: {json.dumps(report)[:600]}"
        )

    load("cuda", cold=True)
    for _ in range(args.warm_runs):
        load("cuda", cold=False)
    load("cpu", cold=False)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
