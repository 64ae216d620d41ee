"""The nginx slice cache of docs/examples/nginx-hf-cache.conf as a team mirror (issue 18, item 6).

Real nginx (the shipped file, only its EDIT places filled in) in front of the hub simulator, whose
``resolve`` answers LFS files with a 302 to a signed, expiring URL on its "CDN" listener, as the
Hub does. modelget pulls through the cache as an ``hf`` mirror; the simulator's request log says
what the origin sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelget import api, settings
from modelget.engines import EngineName, EngineOptions
from modelget.errors import ModelgetError
from modelget.testing.faults import Fault
from modelget.testing.hubsim import HubSimulator
from modelget.testing.nginx import nginx_available
from modelget.testing.nginx_cache import EXAMPLE_CONF, NginxHfCache, nginx_has_slice_module

pytestmark = pytest.mark.nginx

REPO = "team/cached-model"
GATED = "team/gated-model"
TOKEN = "hf_team_secret_0123456789abcdef"
FAST = EngineOptions(
    stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3, min_split_bytes=1024 * 1024
)
SLICE = 4 * 1024 * 1024  # the example's `slice 4m`


@pytest.fixture(autouse=True)
def _need_nginx_with_slice() -> None:
    if not nginx_available():
        if settings.require_fixtures() or os.environ.get("CI"):
            pytest.fail("nginx is required here (scripts/bootstrap installs it)")
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")
    if not nginx_has_slice_module():
        pytest.skip("this nginx has no slice module (nginx -V lacks --with-http_slice_module)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LFS files (one spanning three 4 MiB slices) and a small git file."""
    root = tmp_path_factory.mktemp("model")
    (root / ".gitattributes").write_text(
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    )
    (root / "model.safetensors").write_bytes(os.urandom(2 * SLICE + 1024 * 1024 + 5))
    (root / "extra.bin").write_bytes(os.urandom(1024 * 1024 + 7))
    (root / "config.json").write_text('{"hidden_size": 384}\n')
    return root


@pytest.fixture
def hub(model_dir: Path) -> Iterator[HubSimulator]:
    sim = HubSimulator(name="origin", cdn=True).start()
    sim.add_repo(REPO, model_dir)
    sim.add_repo(GATED, model_dir, gated=True, token=TOKEN)
    yield sim
    sim.stop()


@pytest.fixture
def cache(hub: HubSimulator) -> Iterator[NginxHfCache]:
    server = NginxHfCache(hub.url)
    with server:
        yield server
    server.close()


def lfs_bytes(model_dir: Path) -> int:
    return sum(
        p.stat().st_size for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin")
    )


def catalogue(path: Path, cache: NginxHfCache, *, token_env: str | None = None) -> Path:
    """mirrors.yaml with the nginx cache as the one ``hf`` mirror."""
    token = f"    token_env: {token_env}\n" if token_env else ""
    path.write_text(
        f"version: 1\nmirrors:\n  - name: team-cache\n    kind: hf\n    endpoint: {cache.url}\n{token}"
    )
    return path


def pull(
    repo: str, cat: Path, cache_dir: Path, model_dir: Path, engine: EngineName = "httpx"
) -> None:
    """Pull ``repo`` into ``cache_dir`` and check every file against the source."""
    result = api.pull(repo, mirrors=cat, cache_dir=cache_dir, engine=engine, options=FAST)
    assert result.status == "ok", result.failed
    assert set(result.bytes_by_mirror) == {"team-cache"}
    snapshot = Path(result.path)
    for src in model_dir.iterdir():
        if src.name != ".gitattributes":
            assert hashlib.sha256((snapshot / src.name).read_bytes()).digest() == (
                hashlib.sha256(src.read_bytes()).digest()
            ), src.name


def cdn_bytes(hub: HubSimulator) -> int:
    return sum(r.bytes_sent for r in hub.requests(listener="cdn"))


def test_the_example_has_the_directives_the_docs_promise() -> None:
    text = EXAMPLE_CONF.read_text()
    # What the docs promise of this file; the tests below prove each one works.
    for directive in (
        "slice 4m;",
        "proxy_cache_key $mg_cdn_key$slice_range;",
        "proxy_set_header Range $slice_range;",
        "proxy_cache_lock on;",
        "proxy_cache_lock_timeout 300s;",
        "proxy_cache_bypass $http_authorization;",
        "proxy_no_cache $http_authorization;",
        "error_page 301 302 303 307 308 = @mg_follow;",
    ):
        assert directive in text, directive


def test_a_second_pull_is_served_from_the_cache(
    engine: EngineName, tmp_path: Path, hub: HubSimulator, cache: NginxHfCache, model_dir: Path
) -> None:
    cat = catalogue(tmp_path / "mirrors.yaml", cache)
    size = lfs_bytes(model_dir)

    pull(REPO, cat, tmp_path / "node1", model_dir, engine)

    # The first pull went through the hub's 302 and the CDN, each slice fetched once.
    assert hub.requests(route="hf-resolve", status=302)
    assert all(r.status == 206 for r in hub.requests(listener="cdn"))
    # (Measured: exactly the LFS bytes; one slice of slack. Without proxy_cache_lock the
    # concurrent misses made it 2.3-3x.)
    assert size <= cdn_bytes(hub) < size + SLICE
    # Slices are stored: 3 for the 9 MiB file, 1 for the 1 MiB one.
    assert len(cache.cached_files()) == 4

    # The hub signs every resolve anew (and the URLs the first node saw have expired): the
    # second node's CDN URLs differ from the first's in their query string only.
    hub.expire_signed_urls_now()
    hub.clear_log()
    pull(REPO, cat, tmp_path / "node2", model_dir, engine)

    # Another node, another cache: the hub still answered every resolve (302s, the small file,
    # the API), but the CDN sent nothing.
    assert hub.requests(route="hf-resolve", status=302)
    assert hub.requests(listener="cdn") == []
    hits = [e for e in cache.access_log() if e["cache_status"] == "HIT"]
    assert hits and {e["uri"].rsplit("/", 1)[-1] for e in hits} == {
        "model.safetensors",
        "extra.bin",
    }


def test_an_expired_signed_url_does_not_break_the_cached_path(
    tmp_path: Path, hub: HubSimulator, cache: NginxHfCache, model_dir: Path
) -> None:
    cat = catalogue(tmp_path / "mirrors.yaml", cache)
    pull(REPO, cat, tmp_path / "node1", model_dir)

    # From now on the hub hands out URLs that expired a minute ago and the CDN refuses them.
    hub.add_fault(Fault(expire_signed_urls=True))
    direct = httpx.get(hub.resolve_url(REPO, "extra.bin"), follow_redirects=True)
    assert direct.status_code == 403 and b"Request has expired" in direct.content
    hub.clear_log()

    pull(REPO, cat, tmp_path / "node2", model_dir)

    # The cache key has no signature in it: the cached slices answer, the CDN is never asked.
    assert hub.requests(route="hf-resolve", status=302)
    assert hub.requests(listener="cdn") == []
    # What is not cached yet does meet the expired URL (the cache does not hide the CDN's 403).
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").write_bytes(os.urandom(4096))
    (other / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    commit = hub.add_repo("team/not-cached", other)
    cold = httpx.get(f"{cache.url}/team/not-cached/resolve/{commit}/weights.bin")
    assert cold.status_code == 403 and b"Request has expired" in cold.content


def test_requests_with_a_token_neither_use_nor_fill_the_shared_cache(
    tmp_path: Path,
    hub: HubSimulator,
    cache: NginxHfCache,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = lfs_bytes(model_dir)
    monkeypatch.setenv("TEAM_TOKEN", TOKEN)
    with_token = catalogue(tmp_path / "token.yaml", cache, token_env="TEAM_TOKEN")
    anonymous = catalogue(tmp_path / "anonymous.yaml", cache)

    # A gated model pulled with a token: nothing is stored, and the token stays off the CDN.
    pull(GATED, with_token, tmp_path / "node1", model_dir)
    assert cdn_bytes(hub) >= size
    assert cache.cached_files() == []
    resolves = hub.requests(route="hf-resolve", path_glob=f"/{GATED}/*")
    assert resolves and all(r.authorization == f"Bearer {TOKEN}" for r in resolves)
    assert hub.requests(listener="cdn") and all(
        r.authorization is None for r in hub.requests(listener="cdn")
    )

    # The same blobs in a public model, pulled without a token, do fill the cache ...
    hub.clear_log()
    pull(REPO, anonymous, tmp_path / "node2", model_dir)
    assert cdn_bytes(hub) >= size
    assert len(cache.cached_files()) == 4

    # ... and a token request is still not answered from it: the CDN sends everything again.
    hub.clear_log()
    pull(GATED, with_token, tmp_path / "node3", model_dir)
    assert cdn_bytes(hub) >= size
    assert len(cache.cached_files()) == 4

    # Without the token the hub refuses the gated file, cached bytes or not: it is asked first.
    commit = hub.commit(GATED)
    refused = httpx.get(f"{cache.url}/{GATED}/resolve/{commit}/model.safetensors")
    assert refused.status_code == 401 and len(refused.content) < 1024
    monkeypatch.delenv("TEAM_TOKEN")
    with pytest.raises(ModelgetError):
        api.pull(GATED, mirrors=anonymous, cache_dir=tmp_path / "node4", options=FAST)


def test_paginated_listings_stay_on_the_cache(tmp_path: Path, model_dir: Path) -> None:
    with HubSimulator(name="paged", cdn=True, page_size=1) as hub:
        hub.add_repo(REPO, model_dir)
        server = NginxHfCache(hub.url)
        with server:
            pull(REPO, catalogue(tmp_path / "mirrors.yaml", server), tmp_path / "node", model_dir)
            pages = hub.requests(route="hf-api", path_glob=f"/api/models/{REPO}/tree/*")
            # Every page (one per file and directory) was asked through nginx: the hub's
            # `Link: <http://hub/...>; rel="next"` was rewritten to point at the cache.
            assert len(pages) >= 3
            through = [e for e in server.access_log() if "/tree/" in e["uri"]]
            assert len(through) == len(pages)
            assert all(r.query.get("cursor") for r in pages[1:])
        server.close()


def test_a_redirect_to_the_hubs_own_path_is_followed_with_the_token(
    tmp_path: Path,
    hub: HubSimulator,
    cache: NginxHfCache,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Hub answers some resolves with a relative redirect (`/api/resolve-cache/...` for small
    # files, a renamed repo): nginx follows it on the hub, and the token goes along there.
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "moved-config.json").write_bytes((model_dir / "config.json").read_bytes())
    commit = hub.add_repo("team/moved", moved, gated=True, token=TOKEN)
    target = f"/team/moved/resolve/{commit}/moved-config.json"
    hub.add_fault(Fault(route="hf-resolve", path_glob="config.json", redirect_to=target))
    monkeypatch.setenv("TEAM_TOKEN", TOKEN)

    pull(
        GATED,
        catalogue(tmp_path / "m.yaml", cache, token_env="TEAM_TOKEN"),
        tmp_path / "n",
        model_dir,
    )

    hops = hub.requests(route="hf-resolve", path_glob=target)
    assert hops and all(r.status in (200, 206) for r in hops)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hops)


def test_huggingface_hub_downloads_through_the_cache(
    tmp_path: Path, hub: HubSimulator, cache: NginxHfCache, model_dir: Path
) -> None:
    from huggingface_hub import hf_hub_download

    data = (model_dir / "model.safetensors").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    # huggingface_hub takes the file's commit, sha256 and size from the answer to its HEAD:
    # the hub's redirect said them, and the cache passes them on (the CDN does not send a size).
    head = httpx.head(f"{cache.url}/{REPO}/resolve/main/model.safetensors")
    assert head.status_code == 200
    assert head.headers["x-repo-commit"] == hub.commit(REPO)
    assert head.headers["x-linked-etag"] == f'"{sha}"'
    assert head.headers["x-linked-size"] == str(len(data))

    for n in (1, 2):
        hub.clear_log()
        path = hf_hub_download(
            REPO, "model.safetensors", endpoint=cache.url, cache_dir=tmp_path / f"hf{n}"
        )
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
        assert Path(path).resolve().name == sha  # the blob is named by the hub's X-Linked-Etag
    assert hub.requests(listener="cdn") == []  # the second download came from the cache
