"""Probe, rank, agree and plan against real servers on 127.0.0.1 (hub simulator, nginx)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelget import api
from modelget.errors import (
    AuthRequiredError,
    InsufficientDiskSpaceError,
    ModelgetError,
    ModelNotFoundError,
    RateLimitedError,
    RevisionNotFoundError,
)
from modelget.testing import fixtures
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/tiny"


def write_catalogue(path: Path, *entries: str) -> Path:
    body = "version: 1\nmirrors:\n" + "".join(
        textwrap.indent(textwrap.dedent(e), "  ") for e in entries
    )
    path.write_text(body)
    return path


def hf_entry(name: str, url: str, extra: str = "") -> str:
    return f"- name: {name}\n  kind: hf\n  endpoint: {url}\n{extra}"


def ms_entry(name: str, url: str, extra: str = "") -> str:
    return f"- name: {name}\n  kind: modelscope\n  endpoint: {url}\n{extra}"


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 8}\n')
    (d / "sub" / "notes.txt").write_text("hello\n")
    (d / "model.safetensors").write_bytes(os.urandom(300_000))
    return d


def start(sims: list[HubSimulator], **kw: object) -> HubSimulator:
    sim = HubSimulator(**kw).start()  # type: ignore[arg-type]
    sims.append(sim)
    return sim


def dead_url() -> str:
    """A loopback port with nothing listening: connection refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_probe_ranks_by_injected_latency_and_a_dead_mirror_costs_nothing(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    latencies = {"m250": 0.25, "m10": 0.01, "m60": 0.06}
    entries = []
    for name, delay in latencies.items():
        sim = start(sims, name=name)
        sim.add_repo(REPO, tiny_repo)
        sim.add_fault(Fault(route="*", latency_s=delay))
        entries.append(hf_entry(name, sim.url))
    entries.append(hf_entry("dead", dead_url()))
    cat = write_catalogue(tmp_path / "m.yaml", *entries)

    started = time.perf_counter()
    summary = api.probe(REPO, mirrors=cat, timeout=3.0)
    wall = time.perf_counter() - started

    assert [r.mirror.name for r in summary.ranked] == ["m10", "m60", "m250", "dead"]
    assert [r.usable for r in summary.ranked] == [True, True, True, False]
    assert summary.ranked[3].probe is not None and summary.ranked[3].probe.status == "down"
    slowest = max(r.probe.elapsed_s for r in summary.ranked[:3] if r.probe)
    # Concurrent: the whole probe lasts about as long as the slowest live mirror.
    assert wall < slowest + 1.0
    for r in summary.ranked[:3]:
        assert r.probe is not None and r.probe.has_repo is True
        assert r.probe.throughput_bps and r.probe.throughput_bps > 0


def test_a_hanging_mirror_costs_at_most_its_timeout(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="ok")
    sim.add_repo(REPO, tiny_repo)
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts TCP connections but never answers a request
    try:
        cat = write_catalogue(
            tmp_path / "m.yaml",
            hf_entry("ok", sim.url),
            hf_entry("hang", f"http://127.0.0.1:{hang.getsockname()[1]}"),
        )
        started = time.perf_counter()
        summary = api.probe(REPO, mirrors=cat, timeout=1.0)
        wall = time.perf_counter() - started
    finally:
        hang.close()
    assert [r.mirror.name for r in summary.ranked] == ["ok", "hang"]
    assert summary.ranked[1].probe is not None and summary.ranked[1].probe.status == "down"
    assert wall < 4.0


def test_probe_without_repo_measures_latency_only(tmp_path: Path, sims: list[HubSimulator]) -> None:
    a = start(sims, name="a")
    b = start(sims, name="b")
    b.add_fault(Fault(route="*", latency_s=0.1))
    cat = write_catalogue(tmp_path / "m.yaml", hf_entry("b", b.url), hf_entry("a", a.url))
    summary = api.probe(None, mirrors=cat, timeout=2.0)
    assert [r.mirror.name for r in summary.ranked] == ["a", "b"]
    assert all(r.probe and r.probe.has_repo is None for r in summary.ranked)


def test_dry_run_plan_for_the_real_minilm_fixture(
    tmp_path: Path, minilm_dir: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="hub", cdn=True)
    mirror = start(sims, name="mirror")
    ms = start(sims, name="ms")
    commit = hub.add_repo(fixtures.MINILM_REPO_ID, minilm_dir, commit=fixtures.MINILM_REVISION)
    mirror.add_repo(fixtures.MINILM_REPO_ID, minilm_dir, commit=fixtures.MINILM_REVISION)
    ms.add_repo(fixtures.MINILM_REPO_ID, minilm_dir, ms_id="AI-ModelScope/all-MiniLM-L6-v2")
    # Latency decides the order (a plan takes no throughput sample; loopback alone is too
    # noisy to rank by).
    mirror.add_fault(Fault(route="*", latency_s=0.03))
    ms.add_fault(Fault(route="*", latency_s=0.06))
    cat = write_catalogue(
        tmp_path / "m.yaml",
        hf_entry("mirror", mirror.url),
        hf_entry("hub", hub.url),
        ms_entry(
            "ms",
            ms.url,
            '  id_map:\n    "sentence-transformers/*": "AI-ModelScope/*"\n',
        ),
    )
    plan = api.plan(fixtures.MINILM_REPO_ID, mirrors=cat, cache_dir=tmp_path / "cache")
    assert plan.commit == commit == fixtures.MINILM_REVISION
    assert plan.manifest_mirror == "hub"
    assert {i.entry.path for i in plan.items} == set(fixtures.MINILM_FILES)
    for item in plan.items:
        want = fixtures.MINILM_FILES[item.entry.path]
        assert item.entry.size == want.size
        # LFS sha256 from the hub; for the small files, the git sha1 from the hub and a
        # sha256 from the agreeing ModelScope mirror.
        assert item.entry.sha256 == want.sha256
        assert item.entry.git_sha1 == want.git_sha1
        assert [s.mirror for s in item.sources] == ["hub", "mirror", "ms"]
        assert not item.present
    big = next(i for i in plan.items if i.entry.path == "model.safetensors")
    assert big.entry.lfs
    assert (
        big.sources[0].url
        == f"{hub.url}/{fixtures.MINILM_REPO_ID}/resolve/{commit}/model.safetensors"
    )
    assert (
        "AI-ModelScope/all-MiniLM-L6-v2/repo?Revision=master&FilePath=model.safetensors"
        in big.sources[2].url
    )
    assert plan.total_bytes == sum(f.size for f in fixtures.MINILM_FILES.values())
    assert plan.fetch_bytes == plan.total_bytes
    assert plan.disagreements == ()


def test_a_mirror_with_a_different_file_is_excluded_for_that_file_and_named(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    evil_dir = tmp_path / "evil"
    shutil.copytree(tiny_repo, evil_dir)
    data = bytearray((evil_dir / "model.safetensors").read_bytes())
    data[1000] ^= 0xFF
    (evil_dir / "model.safetensors").write_bytes(bytes(data))
    good = start(sims, name="good")
    evil = start(sims, name="evil")
    commit = good.add_repo(REPO, tiny_repo)
    evil.add_repo(REPO, evil_dir, commit=commit)  # same commit id, different bytes
    evil.add_fault(Fault(route="*", latency_s=0.05))  # rank it second
    cat = write_catalogue(
        tmp_path / "m.yaml", hf_entry("evil", evil.url), hf_entry("good", good.url)
    )

    plan = api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")
    sources = {i.entry.path: [s.mirror for s in i.sources] for i in plan.items}
    assert sources == {
        "config.json": ["good", "evil"],
        "model.safetensors": ["good"],
        "sub/notes.txt": ["good", "evil"],
    }
    assert [(d.mirror, d.path) for d in plan.disagreements] == [("evil", "model.safetensors")]
    assert "sha256" in plan.disagreements[0].reason

    res = run_cli(
        "pull", REPO, "--dry-run", "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")
    )
    assert res.returncode == 0, res.stderr
    assert "disagreement: evil is not used for model.safetensors" in res.stderr


def test_filters_revision_and_explicit_files(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    first = sim.add_repo(REPO, tiny_repo)
    v2 = tmp_path / "v2"
    shutil.copytree(tiny_repo, v2)
    (v2 / "extra.bin").write_bytes(b"x" * 10)
    second = sim.add_repo(REPO, v2, branch="dev", tags=["v2.0"])
    cat = write_catalogue(tmp_path / "m.yaml", hf_entry("hub", sim.url))
    cache = tmp_path / "cache"

    def paths(**kw: object) -> list[str]:
        p = api.plan(REPO, mirrors=cat, cache_dir=cache, **kw)  # type: ignore[arg-type]
        return [i.entry.path for i in p.items]

    assert paths() == ["config.json", "model.safetensors", "sub/notes.txt"]
    assert paths(include=["*.json"]) == ["config.json"]
    assert paths(exclude=["sub/*"]) == ["config.json", "model.safetensors"]
    assert paths(filenames=["sub/notes.txt"]) == ["sub/notes.txt"]
    assert "extra.bin" in paths(revision="dev")
    assert api.plan(REPO, mirrors=cat, cache_dir=cache, revision="v2.0").commit == second
    assert api.plan(REPO, mirrors=cat, cache_dir=cache, revision=first).commit == first


def test_files_already_in_the_hf_cache_are_marked_present(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    from huggingface_hub import snapshot_download

    sim = start(sims, name="hub")
    sim.add_repo(REPO, tiny_repo)
    cache = tmp_path / "cache"
    snapshot_download(
        REPO, endpoint=sim.url, cache_dir=cache, allow_patterns=["config.json"], token=False
    )
    cat = write_catalogue(tmp_path / "m.yaml", hf_entry("hub", sim.url))
    plan = api.plan(REPO, mirrors=cat, cache_dir=cache)
    assert {i.entry.path: i.present for i in plan.items} == {
        "config.json": True,
        "model.safetensors": False,
        "sub/notes.txt": False,
    }
    assert plan.fetch_bytes == plan.total_bytes - (tiny_repo / "config.json").stat().st_size


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelget", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_cli_dry_run_json_and_table(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    commit = sim.add_repo(REPO, tiny_repo)
    cat = write_catalogue(tmp_path / "m.yaml", hf_entry("hub", sim.url))
    res = run_cli(
        "pull",
        REPO,
        "--dry-run",
        "--json",
        "--mirrors",
        str(cat),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)["plan"]
    assert plan["commit"] == commit
    sizes = {f["path"]: f["size"] for f in plan["files"]}
    assert sizes["model.safetensors"] == 300_000
    model = next(f for f in plan["files"] if f["path"] == "model.safetensors")
    assert (
        model["sha256"]
        == hashlib.sha256((tiny_repo / "model.safetensors").read_bytes()).hexdigest()
    )
    assert model["sources"][0]["url"].startswith(sim.url)

    res = run_cli(
        "pull", REPO, "--dry-run", "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")
    )
    assert res.returncode == 0, res.stderr
    assert "model.safetensors" in res.stdout and "fetch" in res.stdout and commit in res.stdout

    res = run_cli("probe", REPO, "--mirrors", str(cat))
    assert res.returncode == 0, res.stderr
    assert "hub" in res.stdout and "RANK" in res.stdout


@pytest.mark.parametrize(
    ("case", "code", "exc"),
    [
        ("unknown-repo", "model-not-found", ModelNotFoundError),
        ("unknown-revision", "revision-not-found", RevisionNotFoundError),
        ("gated", "auth-required", AuthRequiredError),
        ("rate-limited", "rate-limited", RateLimitedError),
    ],
)
def test_resolve_errors_are_clear_with_exit_codes(
    case: str,
    code: str,
    exc: type[Exception],
    tmp_path: Path,
    tiny_repo: Path,
    sims: list[HubSimulator],
) -> None:
    sim = start(sims, name="hub")
    repo, revision = REPO, None
    if case == "unknown-repo":
        repo = "acme/nope"
        sim.add_repo(REPO, tiny_repo)
    elif case == "unknown-revision":
        sim.add_repo(REPO, tiny_repo)
        revision = "no-such-branch"
    elif case == "gated":
        sim.add_repo(REPO, tiny_repo, gated=True, token="hf_gatedSecret")
    else:
        sim.add_repo(REPO, tiny_repo)
        sim.add_fault(Fault(route="hf-api", status=429, retry_after=1))
    second = start(sims, name="other")  # a second mirror without the repo
    cat = write_catalogue(
        tmp_path / "m.yaml", hf_entry("hub", sim.url), hf_entry("other", second.url)
    )

    with pytest.raises(exc) as info:
        api.plan(repo, revision=revision, mirrors=cat, cache_dir=tmp_path / "c")
    assert "hub" in str(info.value)
    args = ["pull", repo, "--dry-run", "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")]
    if revision:
        args += ["--revision", revision]
    res = run_cli(*args, env={"MODELGET_PROBE_TTL": "0"})
    assert res.returncode == 1
    assert f"error: {code}" in res.stderr
    if case == "rate-limited":
        assert "retry after 1 s" in res.stderr


def test_no_mirror_has_the_repo_lists_every_mirror(
    tmp_path: Path, sims: list[HubSimulator]
) -> None:
    a = start(sims, name="a")
    b = start(sims, name="b")
    cat = write_catalogue(tmp_path / "m.yaml", hf_entry("a", a.url), ms_entry("b", b.url))
    with pytest.raises(ModelNotFoundError) as info:
        api.plan("acme/missing", mirrors=cat, cache_dir=tmp_path / "c")
    assert "a:" in info.value.message and "b:" in info.value.message


def test_invalid_repo_id_is_a_usage_error(tmp_path: Path) -> None:
    res = run_cli("pull", "../../etc", "--dry-run")
    assert res.returncode == 2
    assert "not a valid repo id" in res.stderr


def test_tokens_reach_only_the_mirror_that_names_them(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    official = start(sims, name="official", cdn=True)
    third = start(sims, name="third-party")
    ms = start(sims, name="ms")
    for sim in (official, third, ms):
        sim.add_repo(REPO, tiny_repo)
    monkeypatch.setenv("OFFICIAL_TOKEN", "tok_official_123")
    monkeypatch.setenv("HF_TOKEN", "hf_implicit_should_never_travel")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms_implicit_should_never_travel")
    cat = write_catalogue(
        tmp_path / "m.yaml",
        hf_entry("official", official.url, "  token_env: OFFICIAL_TOKEN\n"),
        hf_entry("third-party", third.url),
        ms_entry("ms", ms.url),
    )
    api.probe(REPO, mirrors=cat, timeout=3.0)
    api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c")

    on_official = official.requests(listener="hub")
    assert on_official and all(r.authorization == "Bearer tok_official_123" for r in on_official)
    assert official.requests(listener="cdn"), "the throughput probe follows the LFS redirect"
    assert all(r.authorization is None for r in official.requests(listener="cdn"))
    for sim in (third, ms):
        assert sim.log
        assert all(r.authorization is None for r in sim.log), sim.name
        assert all("should_never_travel" not in (r.cookie or "") for r in sim.log), sim.name


def test_back_to_back_plans_do_not_reprobe(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "mg"))
    hub = start(sims, name="hub")
    other = start(sims, name="other")
    for sim in (hub, other):
        sim.add_repo(REPO, tiny_repo)
    cat = write_catalogue(
        tmp_path / "m.yaml", hf_entry("hub", hub.url), hf_entry("other", other.url)
    )

    def pings() -> int:  # latency probes: one per mirror per probe
        return len([r for r in hub.log if r.path == "/api/models"])

    def samples() -> int:
        return len([r for r in hub.log if r.range])

    api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c")
    assert (pings(), samples()) == (1, 0)  # a plan takes no throughput sample
    api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c")
    assert (pings(), samples()) == (1, 0)  # cached: no second probe
    monkeypatch.setenv("MODELGET_PROBE_TTL", "0")
    api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c")
    assert (pings(), samples()) == (2, 0)


def test_the_probe_cache_is_per_revision_and_never_keeps_a_failure(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "mg"))
    hub = start(sims, name="hub")
    hub.add_repo(REPO, tiny_repo)
    cat = write_catalogue(tmp_path / "m.yaml", hf_entry("hub", hub.url))
    # A typo'd revision fails, and the next pull of main is not poisoned by it.
    with pytest.raises(ModelgetError) as err:
        api.plan(REPO, mirrors=cat, revision="mian", cache_dir=tmp_path / "c")
    assert err.value.code == "revision-not-found"
    assert api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c").items
    # An outage is not remembered either: the mirror is asked again as soon as it is back.
    down = start(sims, name="later")
    down_url = down.url
    down.stop()
    cat2 = write_catalogue(tmp_path / "m2.yaml", hf_entry("later", down_url))
    with pytest.raises(ModelgetError):
        api.plan(REPO, mirrors=cat2, cache_dir=tmp_path / "c")
    back = HubSimulator(name="later", port=int(down_url.rsplit(":", 1)[1])).start()
    sims.append(back)
    back.add_repo(REPO, tiny_repo)
    assert api.plan(REPO, mirrors=cat2, cache_dir=tmp_path / "c").items


def test_cdn_mirror_on_real_nginx_agrees_with_the_hub(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelget.datatypes import Manifest

    # The latency fault below comes after a first plan: no cached probe of the hub from
    # before it (a mirror's fresh good answer is reused while others are probed anew).
    monkeypatch.setenv("MODELGET_PROBE_TTL", "0")
    from modelget.sources.cdn import blob_path, manifest_document
    from modelget.testing.nginx import NginxServer, nginx_available

    if not nginx_available():
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")
    hub = start(sims, name="hub")
    commit = hub.add_repo(REPO, tiny_repo)
    tree = tmp_path / "cdn"
    hub_manifest = api.plan(
        REPO,
        mirrors=write_catalogue(tmp_path / "h.yaml", hf_entry("hub", hub.url)),
        cache_dir=tmp_path / "c",
    )
    from modelget.datatypes import FileEntry

    files = []
    for item in hub_manifest.items:
        data = (tiny_repo / item.entry.path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        target = tree / blob_path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files.append(FileEntry(item.entry.path, len(data), sha))
    (tree / REPO / "manifests").mkdir(parents=True)
    (tree / REPO / "refs.json").write_text(
        json.dumps({"format": "modelget.cdn/1", "refs": {"main": commit}})
    )
    (tree / REPO / "manifests" / f"{commit}.json").write_text(
        manifest_document(Manifest(REPO, "main", commit, tuple(files), "cdn"))
    )
    with NginxServer(tree) as nginx:
        hub.add_fault(Fault(route="*", latency_s=0.05))
        cat = write_catalogue(
            tmp_path / "m.yaml",
            hf_entry("hub", hub.url),
            f"- name: team-cdn\n  kind: cdn\n  endpoint: {nginx.url}\n",
        )
        plan = api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c")
        assert plan.manifest_mirror == "team-cdn"
        for item in plan.items:
            assert [s.mirror for s in item.sources] == ["team-cdn", "hub"]
            assert item.sources[0].url.startswith(f"{nginx.url}/blobs/sha256/")
        assert any("/manifests/" in r["uri"] for r in nginx.access_log())


def test_refuses_when_the_destination_is_too_small(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=False
    ).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        sim = start(sims, name="hub")
        sim.add_repo(REPO, tiny_repo)
        cat = write_catalogue(tmp_path / "m.yaml", hf_entry("hub", sim.url))
        with pytest.raises(InsufficientDiskSpaceError):
            api.plan(REPO, mirrors=cat, cache_dir=small)
        res = run_cli("pull", REPO, "--dry-run", "--mirrors", str(cat), "--cache-dir", str(small))
        assert res.returncode == 1
        assert "error: disk-full" in res.stderr and "not enough disk space" in res.stderr
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_the_snapshot_is_the_hf_commit_when_modelscope_ranks_first(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    hub = start(sims, name="hub")
    ms = start(sims, name="ms")
    commit = hub.add_repo(REPO, tiny_repo)
    ms.add_repo(REPO, tiny_repo, ms_id="acme-ms/tiny")
    hub.add_fault(Fault(route="*", latency_s=0.08))  # ModelScope answers first: it ranks first
    cat = write_catalogue(
        tmp_path / "m.yaml",
        hf_entry("hub", hub.url),
        ms_entry("ms", ms.url, '  id_map:\n    "acme/*": "acme-ms/*"\n'),
    )
    plan = api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")
    assert plan.commit == commit and plan.manifest_mirror == "hub"  # not ModelScope's "master"
    for item in plan.items:
        assert [s.mirror for s in item.sources] == ["ms", "hub"]  # still in rank order
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine="httpx")
    assert result.status == "ok" and Path(result.path).name == commit
