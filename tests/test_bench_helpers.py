"""The benchmark harness (``bench/``, issue #6) imports, and its pure helpers work.

Only pure logic here: the benchmarks themselves (servers, peers, timings) never run in the
test suite (``python -m bench`` runs them). No timing is asserted.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# bench/ sits next to src/ and tests/ (shipped in the sdist, not in the wheel).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import hf_transfer_driver, peers, report, stats
from bench.harness import FULL, QUICK, complete, write_shards
from bench.results import Headline, SceneResult
from bench.run import build_parser
from bench.scenes import PEER_LABELS, SCENES, _vs_peers
from bench.sites import BenchRepo, catalogue_yaml, topology_problem
from modelget.catalogue import parse_catalogue
from modelget.loadtest import read_safetensors_header
from modelget.testing.repos import RepoFile


def test_median_and_ratio() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(stats.median([]))
    assert stats.median([1.0, math.nan, 5.0]) == 3.0  # NaN runs (failed) are left out
    assert stats.ratio(6.0, 3.0) == 2.0
    assert math.isnan(stats.ratio(1.0, 0.0))
    assert math.isnan(stats.ratio(math.nan, 1.0))


def test_summary_text_shows_the_median_and_the_range() -> None:
    s = stats.Summary.of([4.5, 4.1, 4.21])
    assert (s.median, s.low, s.high, s.n) == (4.21, 4.1, 4.5, 3)
    assert s.text("{:.2f}", " s") == "4.21 s (4.10–4.50, n=3)"
    assert stats.Summary.of([2.0]).text("{:.1f}", " s") == "2.0 s"
    assert stats.Summary.of([]).text() == "n/a"


def test_targets() -> None:
    at_least = stats.Target(">=", 0.95)
    assert at_least.met(0.96) is True and at_least.met(0.9) is False
    assert at_least.met(math.nan) is None and at_least.verdict(math.nan) == "n/a"
    at_most = stats.Target("<=", 1.1)
    assert at_most.verdict(1.1) == "met" and at_most.verdict(1.2) == "missed"
    assert at_most.text() == "≤ 1.1" and at_least.text() == "≥ 0.95"


def test_formatting() -> None:
    assert stats.fmt_bytes(1_500_000) == "1.50 MB"
    assert stats.fmt_bytes(4_050_034_041) == "4.05 GB"
    assert stats.fmt_bytes(12) == "12 B"
    assert stats.fmt_rate(399_000_000) == "399.0 MB/s"
    assert stats.fmt_ratio(1.234) == "1.23×"
    assert stats.fmt_pct(0.0512) == "5.1 %"
    assert stats.fmt_s(1.234) == "1.23 s" and stats.fmt_s(12.34) == "12.3 s"
    assert stats.parse_rate("40M") == 40_000_000
    assert stats.parse_rate("800K") == 800_000
    assert stats.parse_rate("4MB/s") == 4_000_000
    with pytest.raises(ValueError):
        stats.parse_rate("0")


def test_markdown_table() -> None:
    text = stats.markdown_table(["tool", "time"], [["a|b", "1 s"], ["c", "2 s"]], "lr")
    assert text.splitlines() == [
        "| tool | time |",
        "| --- | ---: |",
        "| a\\|b | 1 s |",
        "| c | 2 s |",
    ]
    with pytest.raises(ValueError):
        stats.markdown_table(["a", "b"], [["only one"]])


def test_replace_between_keeps_what_is_outside_the_markers() -> None:
    doc = "# Bench\n\nintro\n\n<!-- b -->\nold\n<!-- e -->\n\nanalysis\n"
    out = stats.replace_between(doc, "<!-- b -->", "<!-- e -->", "new table")
    assert out == "# Bench\n\nintro\n\n<!-- b -->\nnew table\n<!-- e -->\n\nanalysis\n"
    appended = stats.replace_between("# Bench\n", "<!-- b -->", "<!-- e -->", "t")
    assert appended == "# Bench\n\n<!-- b -->\nt\n<!-- e -->\n"


@dataclass
class _Mirror:
    name: str
    url: str


def test_the_bench_catalogue_is_one_modelget_accepts() -> None:
    text = catalogue_yaml(
        [_Mirror("mirror-a", "http://127.0.0.1:8001"), _Mirror("mirror-b", "http://10.0.0.1:9")],
        max_connections=16,
    )
    cat = parse_catalogue(text, "bench")
    assert [m.name for m in cat.mirrors] == ["mirror-a", "mirror-b"]
    assert {m.kind for m in cat.mirrors} == {"hf"}
    assert {m.max_connections for m in cat.mirrors} == {16}


def _repo(tmp_path: Path) -> BenchRepo:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"x" * 10)
    (src / "sub" / "config.json").write_bytes(b"{}")
    files = (
        RepoFile("model.safetensors", src / "model.safetensors", 10, "a" * 64, "b" * 40, True),
        RepoFile("sub/config.json", src / "sub" / "config.json", 2, "c" * 64, "d" * 40, False),
    )
    return BenchRepo("acme/model", src, files, "e" * 40)


def test_peer_command_lines(tmp_path: Path) -> None:
    repo = _repo(tmp_path)

    @dataclass
    class _Site:
        url: str = "http://127.0.0.1:8001"

        def resolve_url(self, repo: BenchRepo, path: str) -> str:
            return f"{self.url}/{repo.repo_id}/resolve/main/{path}"

    site = _Site()
    env = peers.base_env(tmp_path)
    assert "HF_TOKEN" not in env and env["HF_HUB_DISABLE_XET"] == "1"
    hfd = peers.aria2c(
        repo, site, tmp_path / "d", connections=4, env=env,  # type: ignore[arg-type]
        input_file=tmp_path / "in.txt", label="hfd",
    )  # fmt: skip
    assert {"-x4", "-s4", "-k1M", "-j5", "-c", "--file-allocation=none"} <= set(hfd.cmd)
    listing = hfd.setup_files[tmp_path / "in.txt"]
    assert "http://127.0.0.1:8001/acme/model/resolve/main/sub/config.json" in listing
    assert f"  dir={tmp_path / 'd' / 'sub'}" in listing and "  out=config.json" in listing
    mg = peers.modelget(
        repo, tmp_path / "m.yaml", tmp_path / "c", engine="httpx", env=env,
        probe_cache=tmp_path / "p",
    )  # fmt: skip
    assert mg.cmd[1:4] == ["-m", "modelget", "pull"] and "--json" in mg.cmd
    assert mg.out_root == tmp_path / "c" / "models--acme--model" / "snapshots" / ("e" * 40)
    shown = mg.display()
    assert shown.startswith("MODELGET_CACHE_DIR=") and " python -m modelget pull " in shown
    assert "HF_HOME" not in shown  # common settings are stated once, not per command
    curl = peers.curl(repo, site, tmp_path / "d", env=env)  # type: ignore[arg-type]
    assert curl.cmd.count("-o") == 2 and "-L" in curl.cmd
    raw = peers.raw_aria2c(repo, site, tmp_path / "d", env=env, input_file=tmp_path / "in.txt")  # type: ignore[arg-type]
    assert {"-x16", "-s16", "-k1M", "-j16", "-c"} <= set(raw.cmd) and "-j5" not in raw.cmd
    assert raw.tool == peers.RAW_ARIA2C_LABEL
    hft = peers.hf_transfer(repo, site, tmp_path / "d", env=env, input_file=tmp_path / "h.json")  # type: ignore[arg-type]
    assert hft.cmd[1:] == [str(peers.DRIVER), str(tmp_path / "h.json")]
    assert json.loads(hft.setup_files[tmp_path / "h.json"]) == [
        {"url": "http://127.0.0.1:8001/acme/model/resolve/main/model.safetensors",
         "path": str(tmp_path / "d" / "model.safetensors")},
        {"url": "http://127.0.0.1:8001/acme/model/resolve/main/sub/config.json",
         "path": str(tmp_path / "d" / "sub" / "config.json")},
    ]  # fmt: skip
    shown = peers.short_display(hft, repo)
    assert "max_files=16" in shown and "chunk_size=10485760" in shown


def test_hf_transfer_driver_follows_the_redirect_itself() -> None:
    url = "http://hub:1/acme/model/resolve/main/model.safetensors"
    assert hf_transfer_driver.redirect_target(url, 302, "http://cdn:2/cdn/abc?sig=1") == (
        "http://cdn:2/cdn/abc?sig=1"
    )
    assert hf_transfer_driver.redirect_target(url, 307, "/other/path") == "http://hub:1/other/path"
    assert hf_transfer_driver.redirect_target(url, 200, None) == url  # a small file: the hub
    assert hf_transfer_driver.redirect_target(url, 302, None) == url
    assert hf_transfer_driver.FILES_AT_ONCE == 8 and hf_transfer_driver.MAX_FILES == 16
    assert hf_transfer_driver.main([]) == 2  # usage, without importing hf_transfer


def test_fastest_peer_leaves_out_peers_that_did_not_run() -> None:
    med = {"a": 3.0, "b": math.nan, "c": 2.0, "modelget (aria2)": 1.0}
    assert stats.fastest_peer(med, ["a", "b", "c", "d"]) == ("c", 2.0)
    name, t = stats.fastest_peer(med, ["b", "d"])
    assert name == "" and math.isnan(t)


def test_headlines_against_the_fastest_peer_and_raw_aria2c() -> None:
    med = dict.fromkeys(PEER_LABELS, 4.0)
    med[peers.HFD_LABEL] = 2.0
    med["modelget (aria2)"] = 2.0
    med["modelget (httpx)"] = 3.0
    heads = {h.metric: h for h in _vs_peers("S9", "shards", med, capped=True)}
    h = heads["shards: aria2 ÷ fastest peer"]
    assert h.value == 1.0 and h.target == stats.Target("<=", 1.05) and peers.HFD_LABEL in h.note
    assert heads["shards: httpx ÷ fastest peer"].value == 1.5
    raw = heads["shards: aria2 ÷ raw aria2c -x16 (per-connection cap)"]
    assert raw.value == 0.5 and raw.target == stats.Target("<=", 0.7)
    uncapped = _vs_peers("S2", "MiniLM, warm", med, capped=False)
    assert [x.metric for x in uncapped] == [
        "MiniLM, warm: aria2 ÷ fastest peer",
        "MiniLM, warm: httpx ÷ fastest peer",
    ]


def test_topology_problem_is_empty_only_for_a_hub_like_site() -> None:
    good = {
        "lfs_resolve": (302, "http://10.0.0.1:9002/cdn/abc?expires=1&sig=x"),
        "cdn_answer": (200, 10),
        "lfs_size": 10,
        "small_resolve": (200, None),
        "cdn_base": "http://10.0.0.1:9002",
        "hub_base": "http://10.0.0.1:9001",
    }
    assert topology_problem(**good) == ""  # type: ignore[arg-type]
    bad: list[tuple[str, object, str]] = [
        ("lfs_resolve", (200, None), "not a 302"),
        ("lfs_resolve", (302, "http://10.0.0.1:9001/cdn/abc"), "not the CDN"),
        ("hub_base", "http://10.0.0.1:9002", "same origin"),
        ("cdn_answer", (404, None), "answered 404"),
        ("cdn_answer", (200, 9), "9 bytes"),
        ("small_resolve", (302, "http://x/"), "small file"),
    ]
    for key, value, why in bad:
        assert why in topology_problem(**{**good, key: value})  # type: ignore[arg-type]


def test_write_shards_writes_exact_valid_shards(tmp_path: Path) -> None:
    write_shards(tmp_path / "m", 3, 4096, seed=0)
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
    ]
    shard = tmp_path / "m" / "model-00002-of-00003.safetensors"
    assert shard.stat().st_size == 4096
    tensors, size = read_safetensors_header(shard)  # valid safetensors, or it raises
    assert size == 4096 and len(tensors) == 1 and tensors[0].end == 4096
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["layers.1.weight"] == "model-00002-of-00003.safetensors"
    first = shard.read_bytes()
    write_shards(tmp_path / "m", 3, 4096, seed=0)  # deterministic
    assert shard.read_bytes() == first
    with pytest.raises(ValueError):
        write_shards(tmp_path / "tiny", 1, 100)


def test_complete_checks_every_file_by_size(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"x" * 10)
    assert complete(out, repo) == "sub/config.json missing"
    (out / "sub" / "config.json").write_bytes(b"{}!")
    assert complete(out, repo) == "sub/config.json has 3 bytes, not 2"
    (out / "sub" / "config.json").write_bytes(b"{}")
    assert complete(out, repo) == ""


def test_report_renders_headlines_with_verdicts() -> None:
    scene = SceneResult("S6", "Re-pull", setup=["one site"], commands={"modelget": "python -m x"})
    scene.headlines += [
        Headline("S6", "re-pull time", 0.4, "0.40 s", stats.Target("<=", 1.0), target_text="≤ 1 s"),
        Headline("S6", "re-pull bytes", 5.0, "5 B", stats.Target("<=", 0), target_text="0 bytes"),
    ]
    scene.tables.append(stats.markdown_table(["a"], [["1"]]))
    skipped = SceneResult("S3", "Two mirrors", skipped="needs root")
    meta = {
        "date": "2026-01-01 00:00 UTC",
        "profile": "full",
        "runs": 3,
        "duration_s": 60.0,
        "command": "python -m bench",
        "load": "0.5 – 1.0",
        "load_note": "",
        "link": "none",
    }
    text = report.render([scene, skipped], meta=meta, machine_info={"CPU": "x"}, version_info={})
    assert "| S6 | re-pull time | 0.40 s | ≤ 1 s | met |  |" in text
    assert "| S6 | re-pull bytes | 5 B | 0 bytes | missed |  |" in text
    assert "### S3: Two mirrors\nSkipped: needs root." in text
    assert "# modelget\npython -m x\n" in text


def test_parser_and_profiles() -> None:
    args = build_parser().parse_args(["--quick", "--scenes", "S1,S2", "--no-doc"])
    assert args.quick and args.scenes == "S1,S2" and args.no_doc
    assert set(SCENES) == {
        "C",
        "S1",
        "S2",
        "S3",
        "S4",
        "S5",
        "S6",
        "S7",
        "S8",
        "S9",
        "S10",
        "S11",
        "S12",
        "D",
    }
    assert FULL.runs >= 3 and FULL.big_gb >= 4.0 and QUICK.runs == 1
    assert FULL.big_gb / FULL.shard_gb >= 3  # several shards
    assert (FULL.shards, FULL.shard_bytes, FULL.s9_conn) == (8, 64_000_000, 4_000_000)
    assert FULL.s10_fast_uplink > FULL.s10_slow_uplink and FULL.s8_connections == 64


def test_swarm_scene_is_registered_and_writes_its_own_section() -> None:
    from bench import swarm

    assert SCENES["S12"] is swarm.s12
    begin, end, _title = report.OWN_SECTIONS["S12"]
    doc = "\n".join(["# B", report.BEGIN, "main", report.END, begin, "old", end, ""])
    new = stats.replace_between(doc, begin, end, "swarm figures")
    assert "main" in new and "old" not in new and "swarm figures" in new
    assert new.index(report.END) < new.index("swarm figures")
    assert swarm.QUICK.nodes >= 2 and swarm.FULL.shard_bytes > swarm.QUICK.shard_bytes


def test_swarm_case_verdicts() -> None:
    from bench.swarm import CaseRun, NodeRun

    good = {"status": "ok", "exit_code": 0}
    nodes = [NodeRun(0, 4.0, 0, good), NodeRun(1, 6.0, 0, good)]
    case = CaseRun("warm-2", nodes, 100, 3, 7.0, 0.5)
    assert case.ok and case.slowest_s == 6.0 and case.fastest_s == 4.0
    nodes[1].bad_files = ["model.safetensors: sha256 differs"]
    assert not bool(case.ok)  # a wrong file fails the case, whatever the times
    nodes[1].bad_files, nodes[1].result = [], {"status": "partial", "exit_code": 3}
    assert not bool(case.ok)
    nodes[1].done_s = None
    assert math.isnan(case.slowest_s)  # a node that never finished has no "slowest" time
