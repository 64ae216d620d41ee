"""The machine, the versions, and the Markdown the bench writes into docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers import COMMON_ENV
from bench.results import Headline, SceneResult
from bench.stats import markdown_table

BEGIN = "<!-- bench:results:begin (written by python -m bench; edit outside these markers) -->"
END = "<!-- bench:results:end -->"
SWARM_BEGIN = "<!-- bench:swarm:begin (written by python -m bench --scenes S12; edit outside these markers) -->"
SWARM_END = "<!-- bench:swarm:end -->"
OWN_SECTIONS = {"S12": (SWARM_BEGIN, SWARM_END, "Swarm mode (issue 18): results of the last run")}
"""Scenes written into a section of their own (a run of only them leaves the main one alone)."""


def _out(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout + done.stderr).strip()


def machine(work: Path) -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    disk = ""
    with contextlib.suppress(OSError):
        st = os.statvfs(work)
        dev = _out(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(work)])
        name = Path(dev.split()[0]).name if dev else ""
        rot = Path(f"/sys/block/{name}/queue/rotational")
        kind = ""
        if rot.exists():
            kind = "rotational" if rot.read_text().strip() == "1" else "non-rotational"
        disk = (
            f"{dev} ({kind} as the kernel reports it; virtual disk), "
            f"{st.f_blocks * st.f_frsize / 1e9:.0f} GB, {st.f_bavail * st.f_frsize / 1e9:.0f} GB free"
        )
    vm = _out(["systemd-detect-virt", "--vm"]) or ("a VM" if "hypervisor" in _cpuflags() else "")
    container = _out(["systemd-detect-virt", "--container"])
    virt = ", ".join(
        x
        for x in (
            f"{vm} guest" if vm and vm != "none" else "",
            container if container != "none" else "",
        )
        if x
    )
    return {
        "CPU": f"{cpu} × {os.cpu_count()} cores" + (f" ({virt})" if virt else ""),
        "memory": mem,
        "kernel": platform.release(),
        "OS": _os_release(),
        "cache disk": disk,
    }


def _cpuflags() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    return ""


def _os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def versions(repo_root: Path) -> dict[str, str]:
    import httpx
    import huggingface_hub

    import modelget

    commit = _out(["git", "-C", str(repo_root), "rev-parse", "--short=12", "HEAD"])
    dirty = _out(["git", "-C", str(repo_root), "status", "--porcelain", "--untracked-files=no"])
    branch = _out(["git", "-C", str(repo_root), "rev-parse", "--abbrev-ref", "HEAD"])
    aria2 = _out(["aria2c", "--version"]).splitlines()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    curl = _out(["curl", "--version"]).splitlines()
    return {
        "modelget": f"{modelget.__version__}, commit {commit} ({branch})"
        + (" + uncommitted changes" if dirty else "")
        + f", from {Path(modelget.__file__).parent}",
        "aria2c": aria2[0] if aria2 else "not found",
        "nginx": re.sub(r"^nginx version: ", "", _out([nginx, "-v"])),
        "curl": curl[0].split(" (")[0] if curl else "not found",
        "huggingface_hub": huggingface_hub.__version__,
        "httpx": httpx.__version__,
        "Python": sys.version.split()[0],
    }


def _headline_rows(heads: Sequence[Headline]) -> list[list[str]]:
    rows = []
    for h in heads:
        target = h.target_text or (h.target.text() if h.target is not None else "")
        verdict = h.target.verdict(h.value) if h.target is not None else ""
        rows.append([h.scene, h.metric, h.shown, target, verdict, h.note])
    return rows


def render(
    scenes: Sequence[SceneResult],
    *,
    meta: dict[str, Any],
    machine_info: dict[str, str],
    version_info: dict[str, str],
    title: str = "Results of the last run",
) -> str:
    out: list[str] = []
    out.append(f"## {title}\n")
    out.append(
        f"- date: {meta['date']}; profile **{meta['profile']}** ({meta['runs']} run(s) per "
        f"tool and case); whole run {meta['duration_s'] / 60:.1f} min\n"
        f"- command: `{meta['command']}`\n"
        f"- load average (1 min) at the start of the runs: {meta['load']}; "
        f"{meta['load_note']}\n"
        f"- shaped link: {meta['link']}\n"
    )
    out.append("### Machine\n")
    out.append(markdown_table(["", ""], [[k, v] for k, v in machine_info.items()]))
    out.append("\n### Versions\n")
    out.append(markdown_table(["", ""], [[k, v] for k, v in version_info.items()]))
    heads = [h for s in scenes for h in s.headlines if h.scene != "C"]
    out.append("\n### Headline numbers against the targets\n")
    out.append(
        "Times are medians; a ratio \"÷ X\" is this tool's time divided by X's (below 1: "
        "faster), \"vs X\" is X's time divided by modelget's (above 1: modelget faster).\n\n"
    )
    out.append(
        markdown_table(
            ["scene", "metric", "value", "target", "verdict", "note"],
            _headline_rows(heads),
            "llrrll",
        )
    )
    for s in scenes:
        out.append(f"\n### {s.id}: {s.title}\n")
        if s.skipped:
            out.append(f"Skipped: {s.skipped}.\n")
            continue
        out.extend(line + "\n" for line in s.setup)
        if s.commands:
            out.append(
                "\nCommand lines (`$WORK` is the bench's work directory; "
                + COMMON_ENV
                + "):\n\n```sh\n"
            )
            for tool, cmd in s.commands.items():
                out.append(f"# {tool}\n{cmd}\n")
            out.append("```\n")
        out.extend("\n" + t for t in s.tables)
        out.extend("\n" + n + "\n" for n in s.notes)
    return "".join(out)
