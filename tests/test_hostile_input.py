"""Bad and hostile input: what a broken or malicious mirror lists, and bad ids and revisions.

Every hostile listing here is served by a real server on 127.0.0.1 (the hub simulator's HF and
ModelScope APIs, rewritten with :meth:`HubSimulator.tamper`, or a ``cdn`` tree on real nginx)
and goes through the real clients (huggingface_hub, modelscope-hub, httpx). After each case the
whole test directory is scanned: nothing may appear outside the destination.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelget import api, cli, manifest
from modelget.catalogue import load_catalogue, parse_catalogue
from modelget.engines import EngineName, EngineOptions
from modelget.errors import (
    ConfigError,
    InsufficientDiskSpaceError,
    ModelgetError,
    UnsafeManifestError,
    UsageError,
)
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/tiny"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=2)
FILE_ROUTES = ("hf-resolve", "cdn", "ms-file")


# --- set-up ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "_mg"))


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    d = tmp_path / "src" / "tiny"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 8}\n')
    (d / "sub" / "notes.txt").write_text("hello\n")
    (d / "model.safetensors").write_bytes(os.urandom(300_000))
    return d


def start(sims: list[HubSimulator], **kw: Any) -> HubSimulator:
    sim = HubSimulator(**kw).start()
    sims.append(sim)
    return sim


def catalogue(path: Path, *entries: tuple[str, str, str]) -> Path:
    """entries: (name, kind, endpoint)."""
    body = "version: 1\nmirrors:\n"
    for name, kind, url in entries:
        body += f"  - name: {name}\n    kind: {kind}\n    endpoint: {url}\n"
    path.write_text(body)
    return path


def deep(tmp_path: Path) -> Path:
    """The destination, a few levels down: a path that climbs out of it (``../../..``) still
    lands inside the test directory, where :class:`Watch` sees it."""
    parent = tmp_path / "d1" / "d2" / "d3" / "d4"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / "cache"


def tree(root: Path) -> set[Path]:
    """Every path under ``root`` (files, links, directories), without following links."""
    out: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            out.add(Path(dirpath) / name)
    return out


class Watch:
    """What appeared under the test directory (and at absolute targets) during a case."""

    def __init__(self, tmp_path: Path, dest: Path, absolute: tuple[Path, ...] = ()) -> None:
        self.tmp_path, self.dest, self.absolute = tmp_path, dest, absolute
        self.before = tree(tmp_path)
        # Directories modelget may legitimately write to besides the destination.
        self.allowed = (dest, tmp_path / "_home", tmp_path / "_mg")

    def outside(self) -> list[Path]:
        new = tree(self.tmp_path) - self.before
        stray = [p for p in new if not any(p.is_relative_to(a) for a in self.allowed)]
        return sorted(stray) + [p for p in self.absolute if os.path.lexists(p)]


def attempt(call: Callable[[], object]) -> ModelgetError | object:
    """The error ``call`` raised, or what it returned (so a test can look at the disk first)."""
    try:
        return call()
    except ModelgetError as exc:
        return exc


def file_requests(sim: HubSimulator) -> list[Any]:
    """Requests for file bodies (not the probe's throughput sample)."""
    return [r for r in sim.log if r.route in FILE_ROUTES and r.user_agent != "modelget-probe"]


# --- tampering ---------------------------------------------------------------------------------

Edit = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def hf_tree(edit: Edit) -> Callable[[str, str, Any], Any]:
    """A tamper that rewrites the HF tree listing (the items of ``/api/models/.../tree/...``)."""

    def tamper(route: str, path: str, data: Any) -> Any:
        if route == "hf-api" and "/tree/" in path and isinstance(data, list):
            return edit([dict(i) for i in data])
        return data

    return tamper


def ms_files(edit: Edit) -> Callable[[str, str, Any], Any]:
    """A tamper that rewrites the ModelScope file list (``Data.Files`` of ``.../repo/files``)."""

    def tamper(route: str, path: str, data: Any) -> Any:
        if route == "ms-api" and path.endswith("/repo/files") and isinstance(data, dict):
            files = data["Data"]["Files"]
            return {**data, "Data": {**data["Data"], "Files": edit([dict(f) for f in files])}}
        return data

    return tamper


def rename(old: str, new: str, *, key: str) -> Edit:
    def edit(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            if item.get(key) == old:
                item[key] = new
                if "Name" in item:
                    item["Name"] = new.rsplit("/", 1)[-1]
        return items

    return edit


def add_copy(of: str, as_: str, *, key: str) -> Edit:
    def edit(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        extra = [dict(i, **{key: as_}) for i in items if i.get(key) == of]
        return items + extra

    return edit


def set_field(path: str, *, key: str, field: str, value: Any) -> Edit:
    def edit(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            if item.get(key) == path:
                if "." in field:
                    outer, inner = field.split(".")
                    item[outer] = {**item[outer], inner: value}
                else:
                    item[field] = value
        return items

    return edit


def hostile_mirror(
    sims: list[HubSimulator], repo: Path, kind: str, edit_for: Callable[[str], Edit]
) -> HubSimulator:
    """A simulator serving ``repo`` whose listing (HF tree or ModelScope file list) is edited
    by ``edit_for(key)`` (``key``: the listing's path field, ``path`` or ``Path``)."""
    sim = start(sims, name=f"hostile-{kind}")
    sim.add_repo(REPO, repo)
    if kind == "hf":
        sim.tamper(hf_tree(edit_for("path")))
    else:
        sim.tamper(ms_files(edit_for("Path")))
    return sim


# --- hostile paths -----------------------------------------------------------------------------

ABSOLUTE = Path(f"/tmp/modelget-escape-{uuid.uuid4().hex}")
HOSTILE_PATHS = [
    pytest.param("../../../../escaped.txt", id="dotdot"),
    pytest.param("sub/../../../../../escaped.txt", id="dotdot-inside"),
    pytest.param(str(ABSOLUTE), id="absolute"),
    pytest.param("..\\..\\..\\..\\escaped.txt", id="backslash"),
    pytest.param("sub/evil\x00.txt", id="nul"),
    pytest.param("./config.json", id="dot-segment"),
    pytest.param("sub//notes2.txt", id="empty-segment"),
]


@pytest.mark.parametrize("kind", ["hf", "modelscope"])
@pytest.mark.parametrize("hostile", HOSTILE_PATHS)
def test_a_hostile_path_in_a_listing_is_refused_and_nothing_is_written(
    kind: str, hostile: str, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = hostile_mirror(sims, tiny_repo, kind, lambda key: rename("config.json", hostile, key=key))
    cat = catalogue(tmp_path / "m.yaml", ("evil", kind, sim.url))
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest, (ABSOLUTE,))
    with pytest.raises(UnsafeManifestError) as info:
        api.pull(REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST)
    assert info.value.code == "unsafe-manifest" and info.value.exit_code == 1
    assert "evil:" in info.value.message and "refusing" in info.value.message
    assert watch.outside() == []
    assert not file_requests(sim), "nothing is fetched from a refused listing"
    assert not dest.exists() or not any(dest.rglob("*.incomplete"))


def test_cli_reports_a_hostile_listing_with_its_code_and_no_traceback(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], capsys: pytest.CaptureFixture[str]
) -> None:
    sim = hostile_mirror(
        sims, tiny_repo, "hf", lambda key: rename("config.json", "../../../../x", key=key)
    )
    cat = catalogue(tmp_path / "m.yaml", ("evil", "hf", sim.url))
    code = cli.main(["pull", REPO, "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: unsafe-manifest\n")
    assert "'../../../../x'" in err and "hint: a mirror that lists such paths" in err
    assert "Traceback" not in err


@pytest.mark.nginx
@pytest.mark.parametrize("hostile", HOSTILE_PATHS)
def test_a_hostile_path_in_a_cdn_manifest_on_nginx_is_refused(
    hostile: str, tmp_path: Path, tiny_repo: Path
) -> None:
    from modelget.testing.nginx import NginxServer, nginx_available

    if not nginx_available():
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")
    commit = "c" * 40
    root = tmp_path / "cdn"
    files = []
    for f in sorted(tiny_repo.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            blob = root / "blobs" / "sha256" / sha[:2] / sha
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            rel = f.relative_to(tiny_repo).as_posix()
            path = hostile if rel == "config.json" else rel
            files.append({"path": path, "size": len(data), "sha256": sha})
    (root / REPO / "manifests").mkdir(parents=True)
    (root / REPO / "refs.json").write_text(
        json.dumps({"format": "modelget.cdn/1", "refs": {"main": commit}})
    )
    manifest = {"format": "modelget.cdn/1", "repo_id": REPO, "commit": commit, "files": files}
    (root / REPO / "manifests" / f"{commit}.json").write_text(json.dumps(manifest))
    dest = deep(tmp_path)
    with NginxServer(root) as nginx:
        cat = catalogue(tmp_path / "m.yaml", ("evil-cdn", "cdn", nginx.url))
        watch = Watch(tmp_path, dest, (ABSOLUTE,))
        with pytest.raises(UnsafeManifestError):
            api.pull(REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST)
        assert watch.outside() == []
        assert not [e for e in nginx.access_log() if "/blobs/" in e["uri"]]


# --- hostile digests and commits: names that become paths ----------------------------------


@pytest.mark.parametrize(
    ("kind", "target", "field"),
    [
        pytest.param("hf", "model.safetensors", "lfs.oid", id="hf-lfs-sha256"),
        pytest.param("hf", "config.json", "oid", id="hf-git-sha1"),
        pytest.param("modelscope", "config.json", "Sha256", id="ms-sha256"),
    ],
)
def test_a_digest_that_is_a_path_is_refused_before_it_names_a_blob(
    kind: str,
    target: str,
    field: str,
    tmp_path: Path,
    tiny_repo: Path,
    sims: list[HubSimulator],
) -> None:
    # The cache names a blob by its digest (blobs/<sha256>, .locks/.../<sha256>.lock,
    # .quarantine/<sha256>...): a "digest" of ../../.. would put files outside the cache.
    evil = "../../../../escaped"
    sim = hostile_mirror(
        sims, tiny_repo, kind, lambda key: set_field(target, key=key, field=field, value=evil)
    )
    cat = catalogue(tmp_path / "m.yaml", ("evil", kind, sim.url))
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest)
    error = attempt(
        lambda: api.pull(REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST)
    )
    assert watch.outside() == []
    assert isinstance(error, UnsafeManifestError) and "hex digits" in error.message, error
    assert not file_requests(sim)


def test_a_commit_id_that_is_a_path_is_refused_and_the_good_mirror_serves(
    engine: EngineName, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    # The commit names the snapshot directory (snapshots/<commit>/...). This hub answers
    # "main" with a commit id that climbs out of the cache; a second, honest mirror serves the
    # same files. Without the check the files were linked at <tmp>/escaped/...
    evil = "../../../../escaped"
    hostile = start(sims, name="hostile")
    hostile.add_repo(REPO, tiny_repo)
    hostile.add_repo(REPO, tiny_repo, branch=evil)  # so the tree of "that commit" is served

    def tamper(route: str, path: str, data: Any) -> Any:
        if route == "hf-api" and isinstance(data, dict) and "sha" in data:
            return {**data, "sha": evil}
        return data

    hostile.tamper(tamper)
    honest = start(sims, name="honest")
    commit = honest.add_repo(REPO, tiny_repo)
    # The hostile hub must rank first: its throughput sample fails (the URL has no file), so
    # the honest one's fails too (once), and its answers are slower.
    honest.add_fault(Fault(route="hf-resolve", times=1, status=503))
    honest.add_fault(Fault(route="hf-api", latency_s=0.05))
    cat = catalogue(
        tmp_path / "m.yaml", ("hostile", "hf", hostile.url), ("honest", "hf", honest.url)
    )
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest)
    result = api.pull(REPO, mirrors=cat, cache_dir=dest, engine=engine, options=FAST)
    assert watch.outside() == []
    assert result.status == "ok" and result.commit == commit
    assert not file_requests(hostile)
    snapshot = Path(result.path)
    assert (snapshot / "config.json").read_bytes() == (tiny_repo / "config.json").read_bytes()


def test_a_hostile_mirror_beside_a_good_one_is_contained(
    engine: EngineName, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    hostile = hostile_mirror(
        sims, tiny_repo, "hf", lambda key: rename("config.json", "../../../../escaped", key=key)
    )
    honest = start(sims, name="honest")
    honest.add_repo(REPO, tiny_repo)
    honest.add_fault(Fault(route="*", latency_s=0.05))
    cat = catalogue(
        tmp_path / "m.yaml", ("hostile", "hf", hostile.url), ("honest", "hf", honest.url)
    )
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest)
    result = api.pull(REPO, mirrors=cat, cache_dir=dest, engine=engine, options=FAST)
    assert result.status == "ok"
    assert set(result.bytes_by_mirror) == {"honest"}
    assert watch.outside() == []
    assert not file_requests(hostile)


# --- collisions, duplicates, files that are also directories --------------------------------


@pytest.mark.parametrize(
    ("twin", "kind"),
    [
        pytest.param("Config.json", "hf", id="case-hf"),
        pytest.param("CONFIG.JSON", "modelscope", id="case-ms"),
        pytest.param("SUB/notes.txt", "hf", id="case-in-directory"),
    ],
)
def test_names_that_collide_after_case_folding_are_refused_with_both_named(
    twin: str, kind: str, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    of = "sub/notes.txt" if twin.startswith("SUB/") else "config.json"
    sim = hostile_mirror(sims, tiny_repo, kind, lambda key: add_copy(of, twin, key=key))
    cat = catalogue(tmp_path / "m.yaml", ("m", kind, sim.url))
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest)
    with pytest.raises(UnsafeManifestError) as info:
        api.pull(REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST)
    assert repr(of) in info.value.message and repr(twin) in info.value.message
    assert "case-insensitive" in info.value.message and "--exclude" in (info.value.hint or "")
    assert watch.outside() == [] and not file_requests(sim)
    # Leaving one of the two out is the way through.
    result = api.pull(
        REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST, exclude=[twin]
    )
    assert result.status == "ok"


def test_unicode_normalisation_twins_are_refused(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    composed = unicodedata.normalize("NFC", "caf\u00e9.txt")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    (tiny_repo / composed).write_text("a")
    sim = hostile_mirror(sims, tiny_repo, "hf", lambda key: add_copy(composed, decomposed, key=key))
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    with pytest.raises(UnsafeManifestError, match="case-insensitive"):
        api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda key: add_copy("config.json", "config.json", key=key), "twice", id="duplicate"
        ),
        pytest.param(
            lambda key: add_copy("config.json", "sub", key=key),
            "both as a file and as a directory",
            id="file-and-directory",
        ),
    ],
)
def test_duplicates_and_a_file_that_is_also_a_directory_are_refused(
    edit: Callable[[str], Edit],
    message: str,
    tmp_path: Path,
    tiny_repo: Path,
    sims: list[HubSimulator],
) -> None:
    sim = hostile_mirror(sims, tiny_repo, "hf", edit)
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    with pytest.raises(UnsafeManifestError, match=message):
        api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine="httpx", options=FAST)


# --- sizes and numbers -----------------------------------------------------------------------


SIZES = [
    pytest.param("hf", 2**50, "absurd", id="hf-one-pebibyte"),
    pytest.param("hf", -1, "absurd", id="hf-negative"),
    pytest.param("hf", "12abc", "not a number", id="hf-not-a-number"),
    pytest.param("hf", None, "not a number", id="hf-null"),
    pytest.param("hf", True, "not a number", id="hf-boolean"),
    pytest.param("modelscope", 2**50, "absurd", id="ms-one-pebibyte"),
    pytest.param("modelscope", -1, "absurd", id="ms-negative"),
    # modelscope-hub itself turns a missing size into 0 and fails on a non-number: the first
    # is caught by verification like any lie about a size, the second is a clear error.
    pytest.param("modelscope", "12abc", "unexpected answer", id="ms-not-a-number"),
]


@pytest.mark.parametrize(("kind", "value", "message"), SIZES)
def test_an_absurd_or_malformed_size_is_refused_before_any_download(
    kind: str,
    value: object,
    message: str,
    tmp_path: Path,
    tiny_repo: Path,
    sims: list[HubSimulator],
) -> None:
    field = "size" if kind == "hf" else "Size"
    sim = hostile_mirror(
        sims,
        tiny_repo,
        kind,
        lambda key: set_field("config.json", key=key, field=field, value=value),
    )
    cat = catalogue(tmp_path / "m.yaml", ("m", kind, sim.url))
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest)
    with pytest.raises(ModelgetError, match=message) as info:
        api.pull(REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST)
    if message != "unexpected answer":
        assert info.value.code == "unsafe-manifest"
    assert watch.outside() == [] and not file_requests(sim)


def test_a_size_larger_than_the_free_space_is_refused_before_any_download(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    huge = 2**43  # 8 TiB: under the sanity bound, over any test machine's free space
    dest = deep(tmp_path)
    if shutil.disk_usage(tmp_path).free > huge:
        pytest.skip("this filesystem has more than 8 TiB free")
    sim = hostile_mirror(
        sims,
        tiny_repo,
        "hf",
        lambda key: set_field("model.safetensors", key=key, field="size", value=huge),
    )
    sim.tamper(
        hf_tree(
            lambda items: set_field("model.safetensors", key="path", field="lfs.size", value=huge)(
                set_field("model.safetensors", key="path", field="size", value=huge)(items)
            )
        )
    )
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    with pytest.raises(InsufficientDiskSpaceError, match="not enough disk space"):
        api.pull(REPO, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST)
    assert not file_requests(sim)
    assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))


@pytest.mark.parametrize("kind", ["hf", "modelscope"])
def test_a_listing_with_more_files_than_the_cap_is_refused_quickly(
    kind: str, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    from modelget.manifest import MAX_FILES

    def flood(key: str) -> Edit:
        def edit(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            [template] = [i for i in items if i.get(key) == "config.json"]
            out = [dict(template, **{key: f"f/{n:06d}.json"}) for n in range(MAX_FILES + 1)]
            if "Name" in template:
                for item in out:
                    item["Name"] = item[key].rsplit("/", 1)[-1]
            return out

        return edit

    sim = hostile_mirror(sims, tiny_repo, kind, flood)
    cat = catalogue(tmp_path / "m.yaml", ("m", kind, sim.url))
    with pytest.raises(UnsafeManifestError, match=f"more than {MAX_FILES} is refused"):
        api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("kind", ["hf", "modelscope"])
def test_a_field_of_the_wrong_type_is_a_clear_error_not_a_crash(
    kind: str, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    key = "path" if kind == "hf" else "Path"
    sim = hostile_mirror(
        sims, tiny_repo, kind, lambda k: set_field("config.json", key=k, field=key, value=12345)
    )
    cat = catalogue(tmp_path / "m.yaml", ("m", kind, sim.url))
    with pytest.raises(ModelgetError) as info:
        api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")
    assert info.value.code in ("unsafe-manifest", "no-mirror"), info.value
    assert "12345" in info.value.message or "malformed" in info.value.message


def test_thousands_of_files_are_planned_in_reasonable_time(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    many = tmp_path / "src" / "many"
    for n in range(3000):
        d = many / f"d{n // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n:04d}.json").write_text(f'{{"n": {n}}}\n')
    sim = start(sims, name="hub")
    sim.add_repo(REPO, many)
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    plan = api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "cache")
    assert len(plan.items) == 3000


@pytest.mark.slow
def test_thousands_of_files_are_pulled(
    engine: EngineName, tmp_path: Path, sims: list[HubSimulator]
) -> None:
    many = tmp_path / "src" / "many"
    for n in range(2000):
        d = many / f"d{n // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n:04d}.json").write_text(f'{{"n": {n}}}\n')
    sim = start(sims, name="hub")
    sim.add_repo(REPO, many)
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine=engine, options=FAST)
    assert result.status == "ok" and len(result.files) == 2000
    snap = Path(result.path)
    assert (snap / "d19" / "f1999.json").read_text() == '{"n": 1999}\n'


# --- links at the destination --------------------------------------------------------------


def test_a_link_planted_at_a_file_s_place_is_replaced_never_written_through(
    engine: EngineName, tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = start(sims, name="hub")
    commit = sim.add_repo(REPO, tiny_repo)
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch\n")
    cache = tmp_path / "cache"
    local = tmp_path / "local"
    # A snapshot link and a local-dir file that point at a file outside the destination.
    snap = cache / "models--acme--tiny" / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(victim)
    local.mkdir()
    (local / "config.json").symlink_to(victim)
    want = (tiny_repo / "config.json").read_bytes()
    # A --local-dir pull writes the local dir only (the cache is not filled), then a cache pull.
    result = api.pull(
        REPO, mirrors=cat, cache_dir=cache, local_dir=local, engine=engine, options=FAST
    )
    assert result.status == "ok"
    assert victim.read_text() == "do not touch\n"
    assert not (local / "config.json").is_symlink()
    assert (local / "config.json").read_bytes() == want
    result = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    assert result.status == "ok"
    assert victim.read_text() == "do not touch\n"
    assert (snap / "config.json").read_bytes() == want
    assert os.path.realpath(snap / "config.json").startswith(str(cache))


# --- bad repo ids and revisions ------------------------------------------------------------


@pytest.mark.parametrize(
    "repo_id",
    [
        "../../etc",
        "a/b/c",
        "",
        "/abs",
        "org/",
        "-rf/x",
        "org/.hidden",
        "org/na me",
        "org/na\x00me",
        "org\\name",
        "o" * 97,
    ],
)
def test_bad_repo_ids_are_usage_errors(
    repo_id: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(["pull", "--dry-run", "--cache-dir", str(tmp_path / "c"), "--", repo_id])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: usage\nnot a valid repo id")
    assert "Traceback" not in err
    with pytest.raises(UsageError):
        api.probe(repo_id)


@pytest.mark.parametrize(
    "revision",
    [
        "../../../../escaped",
        "refs/../../x",
        "/abs",
        "main/",
        "a//b",
        "..",
        "with\\backslash",
        "nul\x00",
        "new\nline",
        "-x",
        "a b",
        "x.lock",
        "a@{1}",
        ".hidden",
        "r" * 256,
    ],
)
def test_bad_revisions_are_usage_errors(
    revision: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(
        ["pull", REPO, f"--revision={revision}", "--dry-run", "--cache-dir", str(tmp_path / "c")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: usage\nnot a valid revision")
    assert "Traceback" not in err


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "a" * 40, "release_2024-01"])
def test_good_revisions_pass_the_check(revision: str) -> None:
    manifest.check_revision(revision)


def test_a_revision_that_a_mirror_knows_cannot_write_a_ref_outside_the_cache(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    # The mirror has a branch named like a path; the ref file (refs/<revision>) would have
    # been written at <tmp>/escaped.
    evil = "../../../escaped"
    sim = start(sims, name="hub")
    sim.add_repo(REPO, tiny_repo, branch=evil)
    cat = catalogue(tmp_path / "m.yaml", ("m", "hf", sim.url))
    dest = deep(tmp_path)
    watch = Watch(tmp_path, dest)
    error = attempt(
        lambda: api.pull(
            REPO, revision=evil, mirrors=cat, cache_dir=dest, engine="httpx", options=FAST
        )
    )
    assert watch.outside() == []
    assert isinstance(error, UsageError) and "not a valid revision" in error.message, error
    assert not sim.log


# --- mirrors.yaml, fuzzed ------------------------------------------------------------------
# tests/test_catalogue.py fuzzes documents that are mostly wrong (only ConfigError may come
# out); these generate valid catalogues (they must load, field for field), raw bytes read
# from a file, and the CLI path (no traceback, exit 0 or 2).

_NAMES = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,15}", fullmatch=True)
_HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,6}){0,2}", fullmatch=True)
_PATHS = st.lists(st.from_regex(r"[A-Za-z0-9_.~-]{1,8}", fullmatch=True), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts)
)
_ENDPOINTS = st.builds(
    lambda scheme, host, port, path, slash: (
        f"{scheme}://{host}{f':{port}' if port else ''}{path}{'/' if slash else ''}"
    ),
    st.sampled_from(["http", "https", "HTTPS"]),
    _HOSTS,
    st.one_of(st.none(), st.integers(1, 65535)),
    _PATHS,
    st.booleans(),
)
_ENV_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True)
_ORGS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True)
_ID_MAPS = st.dictionaries(
    st.one_of(
        st.builds(lambda o, n: f"{o}/{n}", _ORGS, _ORGS),
        st.builds(lambda o: f"{o}/*", _ORGS),
    ),
    _ORGS,
    max_size=3,
).map(lambda m: {k: (f"{v}/*" if k.endswith("*") else f"{v}/model") for k, v in m.items()})


@st.composite
def _valid_mirror(draw: st.DrawFn, name: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["hf", "modelscope", "cdn"]))
    entry: dict[str, Any] = {"name": name, "kind": kind, "endpoint": draw(_ENDPOINTS)}
    optional = {
        "token_env": st.one_of(st.none(), _ENV_NAMES),
        "enabled": st.booleans(),
        "weight": st.floats(0.01, 100, allow_nan=False),
        "max_connections": st.integers(1, 64),
        "id_map": _ID_MAPS,
    }
    if kind == "hf":
        optional["use_hf_login"] = st.booleans()
    for key, strategy in optional.items():
        if draw(st.booleans()):
            entry[key] = draw(strategy)
    return entry


_VALID = st.lists(_NAMES, min_size=1, max_size=4, unique=True).flatmap(
    lambda names: st.tuples(*(_valid_mirror(n) for n in names))
)


@settings(max_examples=60, deadline=None, database=None)
@given(mirrors=_VALID, flow=st.booleans())
def test_fuzzed_valid_catalogues_load_field_for_field(
    mirrors: tuple[dict[str, Any], ...], flow: bool
) -> None:
    text = yaml.safe_dump(
        {"version": 1, "mirrors": list(mirrors)}, default_flow_style=flow, allow_unicode=True
    )
    catalogue = parse_catalogue(text, "fuzz.yaml")
    assert [m.name for m in catalogue.mirrors] == [e["name"] for e in mirrors]
    for got, want in zip(catalogue.mirrors, mirrors, strict=True):
        scheme, rest = want["endpoint"].split("://", 1)
        assert got.endpoint == f"{scheme.lower()}://{rest}".rstrip("/")
        assert got.kind == want["kind"]
        assert got.token_env == want.get("token_env")
        assert got.enabled == want.get("enabled", True)
        assert got.weight == want.get("weight", 1.0)
        assert got.max_connections == want.get("max_connections")
        assert dict(got.id_map) == want.get("id_map", {})
        assert got.use_hf_login == want.get("use_hf_login", False)
        assert got.source == "fuzz.yaml" and got.line is not None and got.line >= 1


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda head, junk: head + junk,
            st.sampled_from([b"version: 1\nmirrors:\n  - name: a\n", b"\xef\xbb\xbfversion: 1\n"]),
            st.binary(max_size=40),
        ),
    )
)
def test_fuzzed_catalogue_files_give_a_config_error_or_load(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mirrors.yaml"
    path.write_bytes(data)
    try:
        load_catalogue(path)
    except ConfigError as error:
        assert error.exit_code == 2 and str(path) in error.message
    # The command line: a message and exit code 2 (or 0), never a traceback.
    code = cli.main(["mirrors", "--mirrors", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error: config-invalid\n") and str(path) in err


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "version: 1\nmirrors:\n  - &m {name: a, kind: hf, endpoint: 'https://a.example'}\n"
            "  - *m\n",
            id="alias-duplicates-a-mirror",
        ),
        pytest.param(
            "version: 1\nx: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            )
            + "mirrors: [*i]\n",
            id="billion-laughs",
        ),
        pytest.param("version: 1\nmirrors: !!python/object:os.system [x]\n", id="python-tag"),
        pytest.param("version: 1\n" + "mirrors:\n" + "  " * 2000 + "- x\n", id="deep-indent"),
        pytest.param("version: 1\nmirrors: " + "[" * 5000 + "]" * 5000 + "\n", id="deep-nesting"),
        pytest.param("version: 1\nmirrors: []\n---\nversion: 1\n", id="two-documents"),
        pytest.param("\x00version: 1\n", id="nul"),
        pytest.param('version: 1\nmirrors: "\\U00110000"\n', id="escape-beyond-unicode"),
    ],
)
def test_hostile_catalogues_give_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_catalogue(text, "evil.yaml")
    assert info.value.exit_code == 2 and info.value.message.startswith("evil.yaml")
