"""docs/cluster.md: its manifests and scripts are never run on a cluster here, so at least their
syntax is checked (YAML parses, Kubernetes objects name their kind, the mirrors.yaml snippet is
a valid catalogue, shell blocks pass ``bash -n``), its links lead somewhere, and it names only
the swarm options issue 18 defines."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from modelget.catalogue import parse_catalogue

DOCS = Path(__file__).resolve().parents[1] / "docs"
CLUSTER = DOCS / "cluster.md"
BLOCK = re.compile(r"^( *)```(\w+)\n(.*?)^\1```$", re.M | re.S)
SWARM_OPTIONS = {
    "--swarm",
    "--swarm-role",
    "--swarm-seeders",
    "--swarm-dir",
    "--seed-for",
    "--swarm-stall",
    "--swarm-interface",
    "--swarm-port",
}


def blocks(lang: str) -> list[str]:
    text = CLUSTER.read_text()
    return [
        textwrap.dedent(textwrap.indent(body, indent))
        for indent, kind, body in BLOCK.findall(text)
        if kind == lang
    ]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


def test_yaml_blocks_parse() -> None:
    docs = blocks("yaml")
    assert len(docs) >= 4
    kinds = []
    for text in docs:
        (doc,) = list(yaml.safe_load_all(text))
        assert isinstance(doc, dict), text
        if "apiVersion" in doc:
            kinds.append(doc["kind"])
            assert doc["metadata"]["name"]
        else:
            catalogue = parse_catalogue(text, "docs/cluster.md")
            assert any(m.kind == "hf" and m.name == "rack-cache" for m in catalogue.mirrors)
    assert sorted(kinds) == ["Job", "NetworkPolicy", "StatefulSet"]


def test_the_indexed_job_is_indexed_and_the_statefulset_passes_the_ordinal_as_rank() -> None:
    by_kind = {d["kind"]: d for d in map(yaml.safe_load, blocks("yaml")) if "kind" in d}
    job = by_kind["Job"]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"]
    init = by_kind["StatefulSet"]["spec"]["template"]["spec"]["initContainers"][0]
    rank = {e["name"]: e for e in init["env"]}["RANK"]
    assert "pod-index" in rank["valueFrom"]["fieldRef"]["fieldPath"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_shell_blocks_are_valid_shell() -> None:
    scripts = blocks("sh")
    assert len(scripts) >= 5
    for script in scripts:
        done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert done.returncode == 0, f"{done.stderr}\n{script}"


def test_only_the_swarm_options_of_issue_18_are_named() -> None:
    named = set(re.findall(r"(--swarm[\w-]*|--seed-for)", CLUSTER.read_text()))
    assert named == SWARM_OPTIONS


def test_links_lead_somewhere() -> None:
    text = CLUSTER.read_text()
    own = anchors(CLUSTER)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, frag = target.partition("#")
        dest = (DOCS / path) if path else CLUSTER
        assert dest.exists(), target
        if frag and dest in (CLUSTER, DOCS / "mirrors.md"):
            assert frag in (own if dest == CLUSTER else anchors(dest)), target
    assert (DOCS / "examples" / "nginx-hf-cache.conf").is_file()
    assert "(cluster.md" in (DOCS / "mirrors.md").read_text()
    assert "(docs/cluster.md)" in (DOCS.parent / "README.md").read_text()
