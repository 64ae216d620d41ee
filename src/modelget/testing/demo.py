"""The offline demo behind ``scripts/demo``: real model, local mirrors, the real CLI.

It starts three local mirrors of ``sentence-transformers/all-MiniLM-L6-v2`` (the real model
files from a pinned PyPI wheel): an HF-style hub that redirects LFS files to a signed "CDN",
a slower HF-style mirror (150 ms added latency) and a ModelScope-style mirror. Then it runs the
``modelget`` command against them, exactly as a user would, with a catalogue that names
them: ``mirrors``, ``probe``, ``pull --dry-run``, ``pull`` (twice: the second transfers
nothing), loads the result offline with huggingface_hub and transformers, and runs the load
test. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from modelget.testing import fixtures
from modelget.testing.hubsim import Fault, HubSimulator

REPO_ID = fixtures.MINILM_REPO_ID


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - the demo talks to its user


def _run(args: Sequence[str], env: dict[str, str]) -> int:
    _say("\n$ " + " ".join(["modelget", *args]))
    done = subprocess.run([sys.executable, "-m", "modelget", *args], env=env, check=False)
    if done.returncode != 0:
        _say(f"(exit code {done.returncode})")
    return done.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelget.testing.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the demo directory")
    args = parser.parse_args(argv)

    try:
        model_dir = fixtures.minilm_dir()
    except Exception:
        fixtures.download_wheels()
        model_dir = fixtures.minilm_dir()

    work = Path(tempfile.mkdtemp(prefix="modelget-demo-"))
    hub = HubSimulator(cdn=True, name="hub").start()
    slow = HubSimulator(name="slow-mirror").start()
    ms = HubSimulator(name="modelscope").start()
    try:
        for sim in (hub, slow, ms):
            sim.add_repo(REPO_ID, model_dir, commit=fixtures.MINILM_REVISION)
        slow.add_fault(Fault(route="*", latency_s=0.15))
        ms.add_fault(Fault(route="*", latency_s=0.03))
        catalogue = work / "mirrors.yaml"
        catalogue.write_text(
            textwrap.dedent(
                f"""\
                version: 1
                mirrors:
                  - name: local-hub
                    kind: hf
                    endpoint: {hub.url}
                  - name: local-slow-mirror
                    kind: hf
                    endpoint: {slow.url}
                  - name: local-modelscope
                    kind: modelscope
                    endpoint: {ms.url}
                """
            )
        )
        env = {
            **os.environ,
            "HF_HOME": str(work / "hf-home"),
            "MODELGET_CACHE_DIR": str(work / "modelget-cache"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        env.pop("HF_TOKEN", None)
        _say(f"modelget demo: three local mirrors of {REPO_ID} (real files from PyPI)")
        _say(
            f"  local-hub          {hub.url}  (LFS files redirect to a signed CDN at {hub.cdn_url})"
        )
        _say(f"  local-slow-mirror  {slow.url}  (150 ms added latency)")
        _say(f"  local-modelscope   {ms.url}  (ModelScope API, 30 ms added latency)")
        _say(f"  catalogue          {catalogue}")
        failures = 0
        failures += _run(["mirrors", "--mirrors", str(catalogue)], env) != 0
        failures += _run(["probe", REPO_ID, "--mirrors", str(catalogue)], env) != 0
        failures += _run(["pull", REPO_ID, "--dry-run", "--mirrors", str(catalogue)], env) != 0
        failures += _run(["pull", REPO_ID, "--mirrors", str(catalogue)], env) != 0
        _say("\n(again: everything is in place and verified, nothing is transferred)")
        failures += _run(["pull", REPO_ID, "--mirrors", str(catalogue)], env) != 0
        _say("\n$ HF_HUB_OFFLINE=1 python -c 'snapshot_download(...); AutoTokenizer...'")
        check = subprocess.run(
            [
                sys.executable,
                "-c",
                "from huggingface_hub import snapshot_download\n"
                f"p = snapshot_download({REPO_ID!r}, local_files_only=True)\n"
                "print('huggingface_hub finds it offline at', p)\n"
                "try:\n"
                "    from transformers import AutoTokenizer\n"
                "except ImportError:\n"
                "    raise SystemExit(0)\n"
                f"tok = AutoTokenizer.from_pretrained({REPO_ID!r})\n"
                "print('transformers tokenizes offline:', tok('hello modelget')['input_ids'])\n",
            ],
            env={**env, "HF_HUB_OFFLINE": "1"},
            check=False,
        )
        failures += check.returncode != 0
        failures += _run(["load-test", REPO_ID], env) != 0
        _say(
            "\nThe model is in the Hugging Face cache above; load it offline with\n"
            f"  HF_HOME={env['HF_HOME']} HF_HUB_OFFLINE=1 python -c "
            f"\"from transformers import AutoModel; AutoModel.from_pretrained('{REPO_ID}')\""
            + ("" if args.keep else "\n(this demo's directory is removed now: --keep keeps it)")
            if not failures
            else "\nSome steps failed: see above."
        )
        return 1 if failures else 0
    finally:
        for sim in (hub, slow, ms):
            sim.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
