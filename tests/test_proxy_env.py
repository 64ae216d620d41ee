"""The environment's proxies hold for every request: the probe, the metadata, both engines'
transfers and the doctor, by one rule (httpx's, ``http.proxy_for``), against a real logging
forward proxy on loopback and a mirror that only the proxy reaches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelget import api, http
from modelget.doctor.network import first_hop
from modelget.engines import EngineName, EngineOptions, aria2c_path
from modelget.testing.hubsim import HubSimulator
from modelget.testing.proxy import ForwardProxy

REPO = "acme/proxied"
HIDDEN = "127.0.0.2"
"""The mirror's name in its URLs: nothing listens there (the simulator binds 127.0.0.1), so a
direct connect is refused; the proxy routes it to 127.0.0.1."""

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "config.json").write_text('{"a": 1}\n')
    (repo / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024))
    return repo


def _hub(sims: list[HubSimulator], tmp_path: Path, name: str, host: str) -> HubSimulator:
    hub = HubSimulator(name=name, host_name=host).start()
    sims.append(hub)
    hub.add_repo(REPO, _repo(tmp_path))
    return hub


def _catalogue(path: Path, *hubs: HubSimulator) -> Path:
    lines = ["version: 1", "mirrors:"]
    for hub in hubs:
        lines += [f"  - name: {hub.name}", "    kind: hf", f"    endpoint: {hub.url}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _need(engine: EngineName) -> None:
    if engine == "aria2" and aria2c_path() is None:
        pytest.skip("aria2c is not installed")


# --- the rule ---------------------------------------------------------------------------------

ENVS = [
    {"HTTP_PROXY": "http://p:1"},
    {"http_proxy": "http://p:1", "HTTP_PROXY": "http://upper:2"},
    {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"},
    {"ALL_PROXY": "p:3", "HTTP_PROXY": "http://p:1", "NO_PROXY": ".corp.net, 10.0.0.0/8"},
    {"HTTP_PROXY": "http://p:1", "no_proxy": "127.0.0.1,localhost,::1"},
    {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "https://x.org:8443"},
    {"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"},
]
URLS = [
    "http://example.com/a",
    "https://example.com/a",
    "https://www.example.com/",
    "https://notexample.com/",
    "http://corp.net/",
    "https://a.corp.net/",
    "http://10.0.0.0/",
    "http://10.1.2.3/",
    "http://127.0.0.1:8080/",
    "http://localhost/",
    "http://[::1]:81/",
    "https://x.org:8443/",
    "https://x.org/",
]


@pytest.mark.parametrize("env", ENVS, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_proxy_for_is_the_rule_httpx_follows(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``http.proxy_for`` (the probe's, the doctor's and aria2c's rule) picks the proxy the
    httpx clients pick, for every URL (lower case winning over upper, NO_PROXY's names,
    suffixes, addresses, schemes and ports, ``*``)."""
    import httpx

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with http.client(timeout=1.0) as client:
        for url in URLS:
            chosen = client._transport_for_url(httpx.URL(url))
            ours = http.proxy_for(url)
            if chosen is client._transport:
                assert ours is None, url
            else:
                keys = [k.pattern for k, v in client._mounts.items() if v is chosen]
                assert ours is not None and http.environment_proxies()[keys[0]] == ours, url
            assert first_hop(url).proxied is (ours is not None), url  # the doctor agrees


def test_aria2c_s_options_follow_the_same_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelget.engines.aria2.proxy import proxy_conf, proxy_problem

    monkeypatch.setenv("HTTP_PROXY", "http://us%40er:p%3Ass@proxy.corp:3128")
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3129")
    monkeypatch.setenv("NO_PROXY", "example.com,.corp.net,10.0.0.0/8,::1,https://x.org:8443")
    assert proxy_problem() is None
    assert proxy_conf() == [
        ("http-proxy", "http://proxy.corp:3128"),
        ("http-proxy-user", "us@er"),
        ("http-proxy-passwd", "p:ss"),
        ("https-proxy", "http://proxy.corp:3129"),
        ("no-proxy", "example.com,.example.com,.corp.net,10.0.0.0,::1,x.org"),
    ]
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_conf() == []
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:pw@proxy.corp:1080")
    monkeypatch.delenv("NO_PROXY")
    problem = proxy_problem()
    assert problem is not None and "socks5" in problem and "pw" not in problem


# --- a mirror only the proxy reaches -----------------------------------------------------------


def test_a_mirror_behind_a_proxy_is_up_for_the_probe_and_the_doctor(
    tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the upper-case HTTP_PROXY set, the probe opens no direct socket (which a
    proxy-only network refuses: the mirror was reported down) and agrees with the doctor."""
    hub = _hub(sims, tmp_path, "hub", HIDDEN)
    cat = _catalogue(tmp_path / "m.yaml", hub)
    with ForwardProxy(route={HIDDEN: "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        summary = api.probe(REPO, mirrors=cat, timeout=3.0)
        result = summary.report.results["hub"]
        assert result.status == "ok", result.error
        assert result.connect_s is None and result.ttfb_s is not None
        assert result.has_repo is True
        report = api.doctor(REPO, mirrors=cat, cache_dir=tmp_path / "c", timeout=3.0)
    checks = {c.name: c for c in report.mirror("hub").checks}
    assert checks["tcp"].status == "ok" and f"(proxy {proxy.url()})" in checks["tcp"].detail
    assert checks["repo"].status == "ok" and checks["ttfb"].status == "ok"
    targets = [r.target for r in proxy.log]
    assert any("/api/models/" in t for t in targets), targets
    assert all(t.startswith(f"http://{HIDDEN}:{hub.port}/") for t in targets), targets
    assert len(hub.log) <= len(proxy.log)  # every request the hub saw came through the proxy


@pytest.mark.parametrize("engine", ["httpx", "aria2"])
def test_every_request_of_a_pull_goes_through_the_upper_case_proxy(
    engine: EngineName, tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only ``HTTP_PROXY`` (aria2c reads only ``http_proxy`` itself, so it went direct), with
    a mirror no direct connection reaches: the probe, the metadata and both engines'
    transfers all go through the proxy."""
    _need(engine)
    hub = _hub(sims, tmp_path, "hub", HIDDEN)
    cat = _catalogue(tmp_path / "m.yaml", hub)
    with ForwardProxy(route={HIDDEN: "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine=engine)
    assert result.status == "ok" and result.engine == engine
    targets = [r.target for r in proxy.log]
    assert any("/api/models/" in t for t in targets), targets
    assert any(t.endswith("/model.safetensors") for t in targets), targets
    assert any(t.endswith("/config.json") for t in targets), targets
    assert len(hub.log) <= len(proxy.log)  # and nothing went around it (none could)


@pytest.mark.parametrize("engine", ["httpx", "aria2"])
def test_no_proxy_sends_its_hosts_direct(
    engine: EngineName, tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two mirrors: one behind the proxy, one named in NO_PROXY (lower case, which wins over
    the upper-case one): the proxy sees no request for the second, on either engine."""
    _need(engine)
    hidden = _hub(sims, tmp_path, "hidden", HIDDEN)
    direct = _hub(sims, tmp_path, "direct", "127.0.0.1")
    cat = _catalogue(tmp_path / "m.yaml", hidden, direct)
    with ForwardProxy(route={HIDDEN: "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
        result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine=engine)
    assert result.status == "ok"
    targets = [r.target for r in proxy.log]
    assert targets and all(t.startswith(f"http://{HIDDEN}:") for t in targets), targets
    assert direct.log  # reached, directly
    assert len(hidden.log) <= len(proxy.log)


def test_aria2c_gets_the_proxy_and_its_password_in_its_private_conf_only(
    tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy that wants credentials: aria2c sends them (the transfer works through it),
    and they are in its 0600 config file only, never on its command line, in its
    environment or in its log."""
    _need("aria2")
    from modelget.engines.aria2 import Aria2Engine

    secret = "pr0xy-s3cret"
    hub = _hub(sims, tmp_path, "hub", HIDDEN)
    cat = _catalogue(tmp_path / "m.yaml", hub)
    with ForwardProxy(route={HIDDEN: "127.0.0.1"}, credentials=f"alice:{secret}") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url(f"alice:{secret}"))
        engine = Aria2Engine(EngineOptions())
        try:
            engine.prepare()
            pid = engine.pid
            assert pid is not None
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            conf = engine._conf
            assert oct(conf.stat().st_mode & 0o777) == "0o600"
            assert oct(conf.parent.stat().st_mode & 0o777) == "0o700"
            assert f"http-proxy-passwd={secret}" in conf.read_text()
        finally:
            engine.close()
        assert secret.encode() not in cmdline and b"proxy" not in cmdline.lower()
        assert secret.encode() not in environ and b"PROXY" not in environ.upper()
        result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "cache", engine="aria2")
    assert result.status == "ok"
    transfer = [r for r in proxy.log if r.target.endswith("/model.safetensors")]
    assert transfer and all(r.proxy_authorization for r in transfer)
    assert secret not in repr(result)
