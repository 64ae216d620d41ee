"""Write the reference part of docs/api.md from the docstrings, so it stays true.

    python scripts/api_docs.py          # rewrite the generated part of docs/api.md
    python scripts/api_docs.py --check  # exit 1 when docs/api.md is not what it would write

The text above the ``BEGIN`` marker (the guide and the examples) is written by hand; the text
from the marker on is generated: every public function of ``modelget`` with each parameter
(from the docstring's ``Args:`` section, Google style), the ``Reporter`` events, the error
classes with their codes and exit codes, and the exit-code constants.
``tests/test_api_docs.py`` runs ``--check`` and checks that no parameter goes undocumented.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
BEGIN = "<!-- Generated from the docstrings by scripts/api_docs.py: edit those, then run it. -->"

FUNCTIONS = [
    "pull",
    "plan",
    "lock",
    "load_lockfile",
    "dump_lockfile",
    "probe",
    "verify",
    "load_test",
    "model_root",
    "list_models",
    "remove",
    "export",
    "swarm_serve",
    "doctor",
    "load_catalogue",
]
"""The public functions in the order the reference shows them (a test checks that every
function in ``modelget.__all__`` is here)."""

_SECTION = re.compile(r"^(Args|Returns|Raises):\s*$")
_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$")


def parse(doc: str | None) -> dict[str, Any]:
    """A Google-style docstring: ``text`` (the prose), ``args`` and ``raises`` (name ->
    text, in order), ``returns`` (text)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, Any] = {"text": [], "args": {}, "raises": {}, "returns": []}
    section: str | None = None
    current: list[str] | None = None
    for line in lines:
        head = _SECTION.match(line)
        if head:
            section, current = head.group(1).lower(), None
            continue
        if section is None:
            out["text"].append(line)
        elif section == "returns":
            out["returns"].append(line.strip())
        elif line.startswith("    ") and not line.startswith("        "):
            item = _ITEM.match(line.strip())
            if item:
                current = [item.group(2)]
                out[section][item.group(1)] = current
        elif current is not None and line.strip():
            current.append(line.strip())
    return {
        "text": "\n".join(out["text"]).strip(),
        "args": {k: " ".join(v) for k, v in out["args"].items()},
        "raises": {k: " ".join(v) for k, v in out["raises"].items()},
        "returns": " ".join(x for x in out["returns"] if x),
    }


def rst_to_md(text: str) -> str:
    """``code`` and :func:`name` / :class:`name` as Markdown code."""
    text = re.sub(r":(?:func|class|meth):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return rst_to_md(text).replace("|", "\\|").replace("\n", " ")


def signature(name: str, func: Callable[..., Any]) -> str:
    parts: list[str] = []
    star = False
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    returns = inspect.signature(func).return_annotation
    arrow = f" -> {returns}" if returns is not inspect.Signature.empty else ""
    return f"modelget.{name}({', '.join(parts)}){arrow}"


def function_section(name: str, func: Callable[..., Any]) -> list[str]:
    doc = parse(func.__doc__)
    out = [f"### `{name}`", "", "```python", signature(name, func), "```", ""]
    if doc["text"]:
        out += [rst_to_md(doc["text"]), ""]
    params = inspect.signature(func).parameters.values()
    if params:
        out += ["| parameter | type | default | meaning |", "|---|---|---|---|"]
        for p in params:
            default = "" if p.default is p.empty else f"`{p.default!r}`"
            kind = str(p.annotation) if p.annotation is not p.empty else ""
            meaning = doc["args"].get(p.name, "**undocumented**")
            out.append(f"| `{p.name}` | `{_cell(kind)}` | {default} | {_cell(meaning)} |")
        out.append("")
    if doc["returns"]:
        out += [f"**Returns** {rst_to_md(doc['returns'])}", ""]
    if doc["raises"]:
        out += ["**Raises**", ""]
        out += [f"- `{k}`: {rst_to_md(v)}" for k, v in doc["raises"].items()]
        out.append("")
    return out


def reporter_section() -> list[str]:
    from modelget.events import EVENTS, Reporter

    out = [
        "## `Reporter`: progress events",
        "",
        rst_to_md(inspect.cleandoc(Reporter.__doc__ or "")),
        "",
        "| method | called when |",
        "|---|---|",
    ]
    for name in EVENTS:
        method = getattr(Reporter, name)
        params = list(inspect.signature(method).parameters)[1:]
        summary = inspect.cleandoc(method.__doc__ or "").replace("\n", " ")
        out.append(f"| `{name}({', '.join(params)})` | {_cell(summary)} |")
    return [*out, ""]


def errors_section() -> list[str]:
    from modelget import errors

    out = [
        "## Errors",
        "",
        "Every error modelget raises on purpose is a `modelget.ModelgetError`, exported from",
        "`modelget` by its class name. Catch a class (a parent catches its children) or match",
        "`error.code` (stable, kebab-case, the `error.code` of `--json`); `error.message` says",
        "what went wrong, `error.hint` what to do (or None), `error.exit_code` is the CLI's exit",
        "code for it, and `error.to_dict()` is the `--json` error object.",
        "",
        "| class | parent | `code` | `exit_code` | meaning |",
        "|---|---|---|---|---|",
    ]
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.ModelgetError)
    ]
    for cls in classes:
        parent = cls.__mro__[1].__name__
        doc = (
            inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
            if "__doc__" in vars(cls) and cls.__doc__
            else ""
        )
        out.append(
            f"| `{cls.__name__}` | `{parent}` | `{cls.code}` | {cls.exit_code} | {_cell(doc)} |"
        )
    out += [
        "",
        "### Exit codes",
        "",
        "| constant | value |",
        "|---|---|",
    ]
    for name, value in vars(errors).items():
        if name.startswith("EXIT_"):
            out.append(f"| `modelget.{name}` | {value} |")
    return [*out, ""]


def generate() -> str:
    import modelget

    out = [BEGIN, "", "## Functions", ""]
    for name in FUNCTIONS:
        out += function_section(name, getattr(modelget, name))
    out += reporter_section()
    out += errors_section()
    return "\n".join(out).rstrip("\n") + "\n"


def render(current: str) -> str:
    head, marker, _ = current.partition(BEGIN)
    if not marker:
        raise SystemExit(f"{DOC}: the marker line is missing:\n{BEGIN}")
    return head + generate()


def main(argv: list[str]) -> int:
    current = DOC.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            sys.stderr.write(
                f"{DOC} is not what scripts/api_docs.py writes from the docstrings; run it\n"
            )
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
