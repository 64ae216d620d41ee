"""docs/api.md is true: every public function's every parameter is documented in its
docstring and in the reference, which is what scripts/api_docs.py writes from them."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import modelget
from modelget import errors
from modelget.events import EVENTS

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"


def public_functions() -> dict[str, Callable[..., Any]]:
    return {
        n: getattr(modelget, n)
        for n in modelget.__all__
        if inspect.isfunction(getattr(modelget, n))
    }


def args_section(doc: str) -> set[str]:
    """The names an ``Args:`` section documents (Google style)."""
    lines = inspect.cleandoc(doc).splitlines()
    if "Args:" not in lines:
        return set()
    names = set()
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break
        m = re.match(r"^    ([A-Za-z_]\w*): ", line)
        if m:
            names.add(m.group(1))
    return names


def reference_section(name: str) -> str:
    text = API_MD.read_text(encoding="utf-8")
    start = text.index(f"### `{name}`\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_parameter_of_every_public_function_is_documented() -> None:
    functions = public_functions()
    assert {"pull", "plan", "lock", "verify", "load_test", "doctor"} <= set(functions)
    missing = []
    for name, func in functions.items():
        documented = args_section(func.__doc__ or "")
        section = reference_section(name)
        for param in inspect.signature(func).parameters:
            if param not in documented:
                missing.append(f"{name}({param}): not in its docstring's Args")
            if f"| `{param}` |" not in section:
                missing.append(f"{name}({param}): not in docs/api.md")
    assert missing == []


def test_api_md_is_what_the_docstrings_say() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "api_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr


def test_api_md_lists_every_function_error_code_and_event() -> None:
    text = API_MD.read_text(encoding="utf-8")
    for name in public_functions():
        assert f"### `{name}`\n" in text, name
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.ModelgetError):
            assert f"| `{obj.__name__}` |" in text and f"| `{obj.code}` | {obj.exit_code} |" in text
    for name in EVENTS:
        assert f"| `{name}(" in text, name
    assert "](docs/api.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
