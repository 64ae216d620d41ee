"""The public surface: __all__ is sorted and complete, and importing modelget stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import modelget


def test_all_is_sorted_and_resolvable() -> None:
    assert modelget.__all__ == sorted(modelget.__all__)
    for name in modelget.__all__:
        assert hasattr(modelget, name), name


def test_import_and_help_do_not_load_heavy_libraries() -> None:
    heavy = [
        "torch",
        "safetensors",
        "huggingface_hub",
        "modelscope_hub",
        "numpy",
        "aria2p",
        "httpx",
    ]
    code = (
        "import json, sys, modelget, modelget.cli\n"
        "try:\n    modelget.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    assert json.loads(out) == []
