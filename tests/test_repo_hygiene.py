"""The tree carries no merge leftovers: a conflict marker in a source or doc file is a defect
(one reached CHANGELOG.md once, through a merge that resolved the code and not the notes)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_no_file_holds_a_merge_conflict_marker() -> None:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    names = listed.stdout.splitlines() if listed.returncode == 0 else []
    if not names:  # not a git checkout (an sdist): look at what is there
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts
        ]
    suffixes = (".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".txt", ".sh")
    bad = []
    for name in names:
        path = ROOT / name
        if not name.endswith(suffixes) and name not in (".ci/run", "scripts/test"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if MARKER.search(text):
            bad.append(name)
    assert not bad, f"merge conflict markers in: {bad}"
