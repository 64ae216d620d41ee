"""Tokens, the aria2c RPC and TLS, against real servers on 127.0.0.1, for both engines.

A token may reach only the host (scheme, host and port) of the mirror entry that names it:
never another mirror, never a host a redirect points at (at resolve time or later, while the
bytes move), never aria2c (its command line, environment, files, RPC options), never a log,
an error message, a repr or the JSON output.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelget import api, cli
from modelget.datatypes import FileEntry, FileSource, Mirror, PlanItem
from modelget.engines import EngineName, EngineOptions, FetchJob, FetchResult, aria2c_path
from modelget.errors import ModelgetError
from modelget.events import NullReporter
from modelget.testing.hubsim import Fault, HubSimulator

REPO = "acme/tiny"
TOKEN = "hf_SECRETofficialTOKEN0123456789"
IMPLICIT = "hf_IMPLICITneverSENTanywhere987"
MS_IMPLICIT = "ms-IMPLICITneverSENTanywhere654"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3, min_split_bytes=1 << 20)
SECRETS = (TOKEN, IMPLICIT, MS_IMPLICIT)


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGET_CACHE_DIR", str(tmp_path / "_mg"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    d = tmp_path / "src" / "tiny"
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 8}\n')  # small: served by the hub itself
    (d / "model.safetensors").write_bytes(os.urandom(3 << 20))  # LFS: via the CDN redirect
    return d


def start(sims: list[HubSimulator], **kw: Any) -> HubSimulator:
    sim = HubSimulator(**kw).start()
    sims.append(sim)
    return sim


def no_secret(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret[:6]}... found in {where}"


def make_engine(name: EngineName) -> Any:
    if name == "aria2":
        from modelget.engines.aria2 import Aria2Engine

        return Aria2Engine(FAST)
    from modelget.engines.httpx_engine import HttpxEngine

    return HttpxEngine(FAST)


def run_engine(name: EngineName, jobs: list[FetchJob]) -> list[FetchResult]:
    """The jobs through ``name`` as a pull runs them (``execute.fetch``): aria2c never gets a
    token, and hands back a file served only with one, which the httpx engine then fetches."""
    from modelget.engines.httpx_engine import HttpxEngine
    from modelget.execute import fetch

    eng = make_engine(name)
    fallback = HttpxEngine(FAST)
    try:
        results: list[FetchResult] = fetch(
            eng,
            jobs,
            reporter=NullReporter(),
            cancel=threading.Event(),
            on_complete=None,
            fallback=lambda: fallback,
        )
    finally:
        eng.close()
        fallback.close()
    return results


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "skip",
    [
        pytest.param(0, id="redirects-at-once"),
        pytest.param(1, id="redirects-after-the-check"),
    ],
)
@pytest.mark.parametrize(
    "host",
    [
        pytest.param("localhost", id="other-host"),
        pytest.param("127.0.0.1", id="same-host-other-port"),
    ],
)
def test_a_token_never_follows_a_redirect_to_another_host(
    engine: EngineName,
    skip: int,
    host: str,
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
) -> None:
    # The token's own mirror starts sending clients to another host: at once, or only after
    # it answered the engine's first request (aria2c would send a download's headers on to
    # any host it is redirected to, aria2 issue #1176). The file is big enough that both
    # engines ask for it in several ranges.
    name = "model.safetensors"
    # "Another host" is another origin: the same 127.0.0.1 on another port counts too.
    official = start(sims, name="official", host_name=host)
    official.add_repo(REPO, repo, gated=True, token=TOKEN)
    other = start(sims, name="other")
    other.add_repo(REPO, repo)
    handle = official.add_fault(
        Fault(
            route="hf-resolve",
            path_glob=name,
            skip=skip,
            redirect_to=other.resolve_url(REPO, name),
        )
    )
    dest = tmp_path / "d"
    dest.mkdir()
    want = (repo / name).read_bytes()
    from modelget.engines import SourceURL

    job = FetchJob(
        key=name,
        path=name,
        size=len(want),
        dest=dest / f"{name}.incomplete",
        sources=(
            SourceURL(
                "official", official.resolve_url(REPO, name), {"Authorization": f"Bearer {TOKEN}"}
            ),
        ),
    )
    [result] = run_engine(engine, [job])
    assert result.ok, result
    assert job.dest.read_bytes() == want
    assert official.fault_hits(handle) > 0, "the mirror did redirect"
    assert other.log, "the redirect was followed"
    assert all(r.authorization is None for r in other.log), [r.user_agent for r in other.log]
    on_official = [r for r in official.log if r.route == "hf-resolve"]
    assert on_official and all(r.authorization == f"Bearer {TOKEN}" for r in on_official)


# --- a whole pull: servers, aria2c, disk, logs, output ----------------------------------------


class Aria2Spy:
    """Looks at every aria2c this process starts while a pull runs: its command line, its
    environment and every file in its private directory (conf, log, control files)."""

    def __init__(self) -> None:
        self.seen: dict[int, list[tuple[str, bytes]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Aria2Spy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _children(self) -> list[int]:
        me = os.getpid()
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if int(fields[1]) == me and "aria2c" in stat.split(")")[0]:
                out.append(int(entry))
        return out

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self._children():
                items = self.seen.setdefault(pid, [])
                proc = Path("/proc", str(pid))
                try:
                    items.append(("cmdline", (proc / "cmdline").read_bytes()))
                    items.append(("environ", (proc / "environ").read_bytes()))
                    cwd = Path(os.readlink(proc / "cwd"))
                    for f in cwd.rglob("*"):
                        if f.is_file():
                            items.append((str(f), f.read_bytes()))
                except OSError:
                    continue


def test_a_pull_sends_the_token_to_its_host_only_and_writes_it_nowhere(
    engine: EngineName,
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The official hub (its token in OFFICIAL_TOKEN) redirects LFS files to its CDN, another
    # origin; a second mirror has no token. HF_TOKEN and MODELSCOPE_API_TOKEN are set too:
    # no entry names them, so they must go nowhere.
    official = start(sims, name="official", cdn=True, host_name="localhost")
    official.add_repo(REPO, repo, gated=True, token=TOKEN)
    other = start(sims, name="other")
    other.add_repo(REPO, repo)
    # Slow enough that the spy sees aria2c at work.
    for sim in (official, other):
        sim.add_fault(Fault(route="*", path_glob="model.safetensors", rate_bps=3e6))
    monkeypatch.setenv("OFFICIAL_TOKEN", TOKEN)
    monkeypatch.setenv("HF_TOKEN", IMPLICIT)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", MS_IMPLICIT)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: official\n    kind: hf\n    endpoint: {official.url}\n"
        "    token_env: OFFICIAL_TOKEN\n"
        f"  - name: other\n    kind: hf\n    endpoint: {other.url}\n"
        f"  - name: ms\n    kind: modelscope\n    endpoint: {other.url}\n    enabled: false\n"
    )
    dest = tmp_path / "cache"
    caplog.set_level(logging.DEBUG)
    with Aria2Spy() as spy:
        argv = ["pull", REPO, "--mirrors", str(cat), "--cache-dir", str(dest), "--json"]
        code = cli.main([*argv, "--engine", engine])
    out, err = capsys.readouterr()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "result" and events[-1]["status"] == "ok"

    # The servers: the token on the official hub only, nothing anywhere else.
    hub = official.requests(listener="hub")
    assert hub and all(r.authorization == f"Bearer {TOKEN}" for r in hub)
    cdn = official.requests(listener="cdn")
    assert cdn and all(r.authorization is None for r in cdn)
    assert other.log and all(r.authorization is None for r in other.log)
    for r in official.log + other.log:
        no_secret(r.path + json.dumps(r.query) + (r.cookie or ""), f"a request to {r.host}")

    # What modelget printed and logged.
    no_secret(out, "stdout (--json)")
    no_secret(err, "stderr")
    no_secret(caplog.text, "the log (DEBUG)")
    for record in caplog.records:
        no_secret(repr(record.args), "log record arguments")

    # aria2c: command line, environment, conf, log and control files while it ran.
    if engine == "aria2":
        assert spy.seen, "aria2c was seen at work"
        for pid, items in spy.seen.items():
            assert any(name == "cmdline" for name, _ in items)
            for name, data in items:
                no_secret(data, f"aria2c {pid} {name}")
    # Disk: nothing under the test directory holds a token, and no aria2 directory is left.
    for f in tmp_path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            no_secret(f.read_bytes(), str(f))
    assert not [p for pid, items in spy.seen.items() for p, _ in items if os.path.exists(p)]


@pytest.mark.parametrize("gated", [False, True], ids=["private", "gated"])
def test_a_refused_token_is_not_repeated_in_errors_or_json(
    gated: bool,
    engine: EngineName,
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The mirror refuses the token: a private repo answers 404 (as the Hub does), a gated one
    # lists its files and refuses the downloads (401). Neither the error, nor the pull's
    # result, nor anything the CLI prints repeats the token.
    hub = start(sims, name="hub")
    hub.add_repo(REPO, repo, gated=gated, token="hf_theRIGHTtoken")
    monkeypatch.setenv("OFFICIAL_TOKEN", TOKEN)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        f"  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n    token_env: OFFICIAL_TOKEN\n"
    )
    shown: list[str] = []
    try:
        result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", engine=engine, options=FAST)
        assert gated and result.status == "error"
        assert all(f.error for f in result.files)
        shown.append(repr(result))
    except ModelgetError as error:
        assert not gated and error.code == "model-not-found", error
        shown += [repr(error), str(error.to_dict()), repr(error.__cause__)]
    assert hub.log and all(r.authorization == f"Bearer {TOKEN}" for r in hub.log)
    no_secret("\n".join(shown), "the error or result")
    argv = ["pull", REPO, "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")]
    for extra in ([], ["--json"]):
        code = cli.main([*argv, "--engine", engine, *extra])
        out, err = capsys.readouterr()
        assert code == 1
        no_secret(out + err, f"the CLI's output {extra}")
    code = cli.main(["mirrors", "--mirrors", str(cat), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["mirrors"][0]["token_set"] is True
    no_secret(out + err, "modelget mirrors --json")


def test_engine_jobs_and_mirrors_do_not_show_a_token_in_their_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelget.execute import source_urls

    monkeypatch.setenv("OFFICIAL_TOKEN", TOKEN)
    mirror = Mirror("official", "hf", "https://hub.example", token_env="OFFICIAL_TOKEN")
    item = PlanItem(
        FileEntry("config.json", 10, git_sha1="a" * 40),
        (FileSource("official", "https://hub.example/acme/tiny/resolve/c/config.json"),),
        False,
    )
    [source] = source_urls(item, {"official": mirror})
    assert source.headers == {"Authorization": f"Bearer {TOKEN}"}  # the engine gets it...
    job = FetchJob("k", "config.json", 10, tmp_path / "x", (source,))
    for obj in (source, job, mirror, FAST):
        no_secret(repr(obj), type(obj).__name__)  # ...but no repr or log line shows it


# --- aria2c's RPC ------------------------------------------------------------------------------


@pytest.mark.aria2
def test_aria2c_rpc_refuses_calls_without_the_secret() -> None:
    if aria2c_path() is None:
        pytest.skip("aria2c not installed")
    from modelget.engines.aria2 import Aria2Engine

    eng = Aria2Engine(FAST)
    try:
        url = f"http://127.0.0.1:{eng.rpc_port}/jsonrpc"

        def call(method: str, params: list[Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": "t", "method": method, "params": params}
            response = httpx.post(url, json=body, timeout=5, trust_env=False)
            data: dict[str, Any] = response.json()
            return data

        # aria2c answers a refused call after about 2 s (against guessing): ask at once.
        refused = [
            (method, [*params, *extra])
            for params in ([], ["token:wrong-secret"], [f"token:{eng._secret}x"])
            for method, extra in (
                ("aria2.getGlobalOption", []),
                ("aria2.addUri", [["http://127.0.0.1:9/x"]]),
            )
        ]
        with ThreadPoolExecutor(len(refused)) as pool:
            answers = list(pool.map(lambda c: call(*c), refused))
        for answer in answers:
            assert answer.get("error", {}).get("message") == "Unauthorized", answer
        assert eng.api.get_downloads() == []  # no addUri got through
        assert "result" in call("aria2.getVersion", [f"token:{eng._secret}"])
        assert len(eng._secret) >= 32
        # A second engine gets another secret.
        other = Aria2Engine(FAST)
        try:
            assert other._secret != eng._secret
        finally:
            other.close()
    finally:
        eng.close()


# --- TLS ---------------------------------------------------------------------------------------


class Messages(NullReporter):
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def on_message(self, level: str, text: str) -> None:
        self.messages.append((level, text))


@pytest.fixture
def nginx_ok() -> None:
    from modelget.testing.nginx import nginx_available

    if not nginx_available():
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (scripts/bootstrap installs it)")
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")


def cdn_tree(root: Path, repo: Path) -> None:
    """``repo`` as a modelget.cdn/1 tree under ``root``."""
    import hashlib

    commit = "a" * 40
    files = []
    for f in sorted(repo.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            blob = root / "blobs" / "sha256" / sha[:2] / sha
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            files.append({"path": f.relative_to(repo).as_posix(), "size": len(data), "sha256": sha})
    (root / REPO / "manifests").mkdir(parents=True)
    (root / REPO / "refs.json").write_text(
        json.dumps({"format": "modelget.cdn/1", "refs": {"main": commit}})
    )
    doc = {"format": "modelget.cdn/1", "repo_id": REPO, "commit": commit, "files": files}
    (root / REPO / "manifests" / f"{commit}.json").write_text(json.dumps(doc))


@pytest.fixture
def tls_mirror(
    request: pytest.FixtureRequest, tmp_path: Path, repo: Path, sims: list[HubSimulator]
) -> Iterator[tuple[str, Path, Any]]:
    """(kind, catalogue, nginx): a mirror behind nginx with a self-signed certificate; an
    ``hf`` or ``modelscope`` one is the hub simulator behind an nginx TLS proxy."""
    from modelget.testing.nginx import NginxServer
    from modelget.testing.tls import self_signed_cert

    kind: str = request.param
    cert = self_signed_cert(tmp_path / "tls")
    root = tmp_path / "www"
    root.mkdir()
    extra = ""
    if kind == "cdn":
        cdn_tree(root, repo)
    else:
        hub = start(sims, name="behind-tls")
        hub.add_repo(REPO, repo)
        extra = (
            "        location ~ ^/(api|acme)/ {\n"
            f"            proxy_pass http://127.0.0.1:{hub.port};\n"
            "            proxy_set_header Host $http_host;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_buffering off;\n"
            "        }\n"
        )
    with NginxServer(root, tls=cert, extra_config=extra) as nginx:
        cat = tmp_path / "m.yaml"
        cat.write_text(
            f"version: 1\nmirrors:\n  - name: self-signed\n    kind: {kind}\n"
            f"    endpoint: {nginx.url}\n"
        )
        yield kind, cat, nginx


KINDS = ["cdn", "hf", "modelscope"]


def file_requests(nginx: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in nginx.access_log()
        if "/blobs/" in e["uri"] or "/resolve/" in e["uri"] or e["uri"].endswith("/repo")
    ]


@pytest.mark.nginx
@pytest.mark.parametrize("tls_mirror", KINDS, indirect=True)
def test_tls_is_verified_by_default_and_a_self_signed_mirror_is_refused(
    nginx_ok: None, tls_mirror: tuple[str, Path, Any], tmp_path: Path
) -> None:
    _, cat, nginx = tls_mirror
    assert nginx.url.startswith("https://")
    with pytest.raises(ModelgetError) as info:
        api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", engine="httpx", options=FAST)
    assert info.value.code == "no-mirror"
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
    assert "--insecure" in (info.value.hint or "")
    assert not file_requests(nginx)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.incomplete"))


@pytest.mark.nginx
@pytest.mark.parametrize("tls_mirror", KINDS, indirect=True)
def test_insecure_pulls_from_a_self_signed_mirror_and_warns(
    nginx_ok: None,
    engine: EngineName,
    tls_mirror: tuple[str, Path, Any],
    tmp_path: Path,
    repo: Path,
) -> None:
    kind, cat, nginx = tls_mirror
    reporter = Messages()
    result = api.pull(
        REPO,
        mirrors=cat,
        cache_dir=tmp_path / "c",
        engine=engine,
        options=FAST,
        reporter=reporter,
        verify_tls=False,
    )
    assert result.status == "ok", result
    snapshot = Path(result.path)
    for f in repo.rglob("*"):
        if f.is_file():
            assert (snapshot / f.relative_to(repo)).read_bytes() == f.read_bytes()
    assert file_requests(nginx), "the bytes came over TLS from the self-signed mirror"
    warnings = [text for level, text in reporter.messages if level == "warning"]
    assert any("TLS certificate checks are OFF" in w for w in warnings), reporter.messages
    # The opt-out was for that call only: the next default call checks certificates again
    # (probe, metadata client and engines alike).
    with pytest.raises(ModelgetError, match="CERTIFICATE_VERIFY_FAILED"):
        api.plan(REPO, mirrors=cat, cache_dir=tmp_path / "c2")
    if kind == "hf":
        from huggingface_hub import HfApi

        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            HfApi(endpoint=nginx.url, token=False).model_info(REPO)


@pytest.mark.nginx
@pytest.mark.parametrize("tls_mirror", ["cdn"], indirect=True)
def test_cli_insecure_warns_on_stderr_and_in_json(
    nginx_ok: None,
    tls_mirror: tuple[str, Path, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, cat, _ = tls_mirror
    base = ["--mirrors", str(cat), "--cache-dir", str(tmp_path / "c")]
    code = cli.main(["pull", REPO, *base, "--engine", "httpx"])
    out, err = capsys.readouterr()
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err and "--insecure" in err
    for extra in (["--quiet"], ["--dry-run"]):
        code = cli.main(["pull", REPO, *base, "--insecure", "--engine", "httpx", *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "warning: TLS certificate checks are OFF (--insecure)" in err, extra
    code = cli.main(["pull", REPO, *base, "--insecure", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert any(
        e["event"] == "message" and e["level"] == "warning" and "OFF" in e["text"] for e in events
    )
    assert "warning: TLS certificate checks are OFF" in err
    code = cli.main(["probe", REPO, "--mirrors", str(cat), "--insecure"])
    out, err = capsys.readouterr()
    assert code == 0 and "warning: TLS certificate checks are OFF" in err
    assert "self-signed" in out and " ok " in out


# --- one origin rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint", "same"),
    [
        ("https://hub.example/api/x", "https://hub.example", True),
        ("https://hub.example:443/api/x", "https://hub.example", True),  # the default port
        ("https://HUB.example/x", "https://hub.example:443", True),
        ("http://hub.example:80/x", "http://hub.example", True),
        ("http://hub.example/x", "https://hub.example", False),  # another scheme
        ("https://hub.example:8443/x", "https://hub.example", False),  # another port
        ("https://hub.example.evil.test/x", "https://hub.example", False),
        ("https://hub.example@evil.test/x", "https://hub.example", False),  # userinfo trick
        ("https://evil.test/hub.example", "https://hub.example", False),
    ],
)
def test_every_token_check_applies_one_origin_rule(url: str, endpoint: str, same: bool) -> None:
    """The token scoping of the sources (``auth.same_host``), the redirect follower and the
    engines (``http.same_origin``) and the probe's TLS exceptions (``http.origin``) agree on
    what an origin is: before ``http.py``, ``same_host`` compared ``netloc`` strings, so
    ``https://hub:443`` and ``https://hub`` were two origins for it and one for the engines."""
    from modelget.auth import same_host
    from modelget.datatypes import Mirror
    from modelget.engines.redirects import same_origin as redirects_same_origin
    from modelget.http import origin, same_origin

    mirror = Mirror(name="m", kind="hf", endpoint=endpoint)
    assert same_host(url, mirror) is same
    assert same_origin(url, endpoint) is same
    assert redirects_same_origin(url, endpoint) is same
    assert (origin(url) == origin(endpoint)) is same


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy that records each request's absolute URL (and whether it
    carried an Authorization header) and relays it."""

    seen: list[tuple[str, bool]]

    def do_GET(self) -> None:
        self.seen.append((self.path, "Authorization" in self.headers))
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")
        }
        req = urllib.request.Request(self.path, headers=headers, method="GET")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        try:
            with opener.open(req, timeout=10) as up:
                status, body, out = up.status, up.read(), up.headers
        except urllib.error.HTTPError as exc:
            status, body, out = exc.code, exc.read(), exc.headers
        self.send_response(status)
        for k, v in out.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_every_request_of_a_pull_goes_through_the_environment_s_proxy(
    tmp_path: Path, sims: list[HubSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY holds for the probe, the metadata calls and the transfer alike (one client
    factory, ``http.client``): nothing reaches the mirror around the proxy."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text('{"a": 1}\n')
    (repo / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024))
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    hub.add_repo("acme/proxied", repo)
    handler: type[_ForwardProxy] = type("Recorder", (_ForwardProxy,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
        cat = tmp_path / "m.yaml"
        cat.write_text(
            f"version: 1\nmirrors:\n  - name: hub\n    kind: hf\n    endpoint: {hub.url}\n"
        )
        result = api.pull("acme/proxied", mirrors=cat, cache_dir=tmp_path / "cache", engine="httpx")
    finally:
        server.shutdown()
        server.server_close()
    assert result.status == "ok"
    proxied = [url for url, _ in handler.seen]
    assert any("/api/models" in u for u in proxied), proxied  # the probe and the metadata
    assert any(u.endswith("/model.safetensors") for u in proxied), proxied  # the transfer
    assert len(hub.log) <= len(proxied)  # every request the hub saw came through the proxy
