"""Real nginx as the static CDN of the tests: ranges, ETags, logs, rate limit, clean shutdown."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelget import settings
from modelget.engines.aria2.process import pid_alive
from modelget.testing.nginx import NginxError, NginxServer, nginx_available

pytestmark = pytest.mark.nginx

SIZE = 1024 * 1024 + 123


@pytest.fixture(autouse=True)
def _need_nginx() -> None:
    if not nginx_available():
        if settings.require_fixtures() or os.environ.get("CI"):
            pytest.fail("nginx is required here (scripts/bootstrap installs it)")
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "1_Pooling").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(SIZE))
    (root / "config.json").write_text('{"hidden_size": 384}\n' * 200)
    (root / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (root / "1_Pooling" / "config.json").write_text('{"pooling": "mean"}\n')
    return root


@pytest.fixture
def cdn(site: Path) -> Iterator[NginxServer]:
    server = NginxServer(site, name="cdn")
    with server:
        yield server
    server.close()


def test_serves_files(cdn: NginxServer, site: Path) -> None:
    with httpx.Client(base_url=cdn.url) as client:
        r = client.get("/model.safetensors")
        assert r.status_code == 200
        assert r.content == (site / "model.safetensors").read_bytes()
        assert r.headers["content-length"] == str(SIZE)
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["accept-ranges"] == "bytes"
        assert r.headers["etag"].startswith('"')
        for rel in (".gitattributes", "1_Pooling/config.json", "config.json"):
            r = client.get("/" + rel)
            assert r.status_code == 200 and r.content == (site / rel).read_bytes(), rel
        head = client.head("/model.safetensors")
        assert head.status_code == 200 and head.headers["content-length"] == str(SIZE)
        assert client.get("/missing.bin").status_code == 404
        assert client.get("/1_Pooling/").status_code == 403  # no autoindex


def test_no_gzip(cdn: NginxServer) -> None:
    r = httpx.get(f"{cdn.url}/config.json", headers={"Accept-Encoding": "gzip, deflate"})
    assert r.status_code == 200
    assert "content-encoding" not in r.headers
    assert r.headers["content-length"] == str(len(r.content))


def test_ranges(cdn: NginxServer, site: Path) -> None:
    data = (site / "model.safetensors").read_bytes()
    url = f"{cdn.url}/model.safetensors"
    with httpx.Client() as client:
        r = client.get(url, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 100-199/{SIZE}"
        assert r.content == data[100:200]
        r = client.get(url, headers={"Range": f"bytes={SIZE - 10}-"})
        assert r.status_code == 206 and r.content == data[-10:]
        r = client.get(url, headers={"Range": "bytes=-7"})
        assert r.status_code == 206 and r.content == data[-7:]
        r = client.get(url, headers={"Range": f"bytes=0-{SIZE + 1000}"})
        assert r.status_code == 206 and r.content == data
        assert r.headers["content-range"] == f"bytes 0-{SIZE - 1}/{SIZE}"

        r = client.get(url, headers={"Range": f"bytes={SIZE}-"})
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{SIZE}"


def test_if_range(cdn: NginxServer, site: Path) -> None:
    data = (site / "model.safetensors").read_bytes()
    url = f"{cdn.url}/model.safetensors"
    with httpx.Client() as client:
        head = client.head(url)
        etag, modified = head.headers["etag"], head.headers["last-modified"]
        for validator in (etag, modified):
            r = client.get(url, headers={"Range": "bytes=10-19", "If-Range": validator})
            assert r.status_code == 206 and r.content == data[10:20]
        for stale in ('"0-0"', "Mon, 01 Jan 2001 00:00:00 GMT"):
            r = client.get(url, headers={"Range": "bytes=10-19", "If-Range": stale})
            assert r.status_code == 200 and r.content == data  # changed: the whole file


def test_access_log(cdn: NginxServer) -> None:
    with httpx.Client(base_url=cdn.url) as client:
        client.get("/model.safetensors?download=true", headers={"Range": "bytes=0-99"})
        client.get("/config.json", headers={"Authorization": "Bearer test-token"})
        client.get("/nope")
    first, second, third = cdn.access_log(min_entries=3)
    assert first["request_method"] == "GET"
    assert first["uri"] == "/model.safetensors" and first["args"] == "download=true"
    assert first["status"] == 206 and first["body_bytes_sent"] == 100
    assert first["http_range"] == "bytes=0-99" and first["http_authorization"] is None
    assert first["bytes_sent"] > first["body_bytes_sent"]
    assert first["server_port"] == cdn.port
    assert first["http_user_agent"].startswith("python-httpx")
    assert second["http_authorization"] == "Bearer test-token"
    assert second["http_range"] is None and second["status"] == 200
    assert second["connection"] == first["connection"]  # keep-alive reuse
    assert third["status"] == 404
    assert isinstance(first["time"], float) and isinstance(first["request_time"], float)

    cdn.clear_access_log()
    assert cdn.access_log() == []
    httpx.get(f"{cdn.url}/config.json")
    assert [e["uri"] for e in cdn.access_log(min_entries=1)] == ["/config.json"]


def _timed_get(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = httpx.get(url)
    return time.perf_counter() - t0, len(r.content)


def test_limit_rate(site: Path) -> None:
    # nginx sends one second's worth at once, then waits for the rate to catch up:
    # ~1.05 MB at 600 kB/s takes ~1 s (unlimited: milliseconds).
    with NginxServer(site, limit_rate=600_000) as server:
        assert "limit_rate 600000;" in server.conf_path.read_text()
        slow, n = _timed_get(f"{server.url}/model.safetensors")
        assert n == SIZE
        assert slow >= 0.5
        server.set_limit_rate(None)
        assert "limit_rate 0;" in server.conf_path.read_text()
        fast, n = _timed_get(f"{server.url}/model.safetensors")
        assert n == SIZE
        assert fast < slow


def test_stop_leaves_no_process(site: Path) -> None:
    server = NginxServer(site).start()
    master = server.pid
    assert master is not None
    workers = server.worker_pids()
    assert workers and all(pid_alive(p) for p in workers)
    httpx.get(f"{server.url}/config.json")  # leave a keep-alive connection behind
    server.stop()
    assert not server.running
    assert not pid_alive(master)
    assert not any(pid_alive(p) for p in workers)
    found = subprocess.run(["pgrep", "-f", str(server.prefix)], capture_output=True, check=False)
    assert found.stdout.strip() == b""
    assert server.access_log(min_entries=1)  # logs stay readable after stop
    prefix = server.prefix
    server.close()
    assert not prefix.exists()


def test_two_servers_at_once(tmp_path: Path) -> None:
    roots = []
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        (root / "who.txt").write_text(name)
        roots.append(root)
    with NginxServer(roots[0], name="one") as one, NginxServer(roots[1], name="two") as two:
        assert one.port != two.port
        assert httpx.get(f"{one.url}/who.txt").text == "one"
        assert httpx.get(f"{two.url}/who.txt").text == "two"
        assert one.prefix != two.prefix
    assert not one.running and not two.running


def test_bad_config_reports_error_log(site: Path) -> None:
    server = NginxServer(site, extra_config="        no_such_directive on;")
    with pytest.raises(NginxError, match="no_such_directive"):
        server.start()
    assert not server.running
    server.close()
