"""Hub simulator protocol details and fault injection, observed with a plain httpx client."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelget.testing import Fault, HubSimulator
from modelget.testing.repos import (
    LFS_SIZE_THRESHOLD,
    git_blob_sha1,
    is_lfs,
    parse_gitattributes,
    scan_directory,
)

SIZE = 1024 * 1024 + 321
REPO = "acme/faulty"


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(7).randbytes(SIZE)


@pytest.fixture
def repo_dir(tmp_path: Path, data: bytes) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "blob.txt").write_bytes(data)  # a regular (non-LFS) file: no .gitattributes match
    (root / "model.safetensors").write_bytes(data)  # LFS by the default patterns
    (root / "small.json").write_text('{"ok": true}')
    return root


@pytest.fixture
def sim(repo_dir: Path) -> Iterator[HubSimulator]:
    with HubSimulator() as s:
        s.add_repo(REPO, repo_dir)
        yield s


@pytest.fixture
def cdn_sim(repo_dir: Path) -> Iterator[HubSimulator]:
    with HubSimulator(cdn=True) as s:
        s.add_repo(REPO, repo_dir)
        yield s


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def url(sim: HubSimulator, path: str = "blob.txt") -> str:
    return sim.resolve_url(REPO, path)


def stream_until_error(http: httpx.Client, target: str) -> tuple[bytes, Exception | None]:
    """GET and read the body; returns (bytes received, the error that ended it, if any)."""
    got = bytearray()
    try:
        with http.stream("GET", target) as resp:
            for chunk in resp.iter_raw():
                got += chunk
    except httpx.HTTPError as exc:
        return bytes(got), exc
    return bytes(got), None


# --- protocol ---------------------------------------------------------------------------------


def test_plain_file_headers_and_head(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    commit = sim.commit(REPO)
    resp = http.get(url(sim))
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["ETag"] == f'"{git_blob_sha1(data)}"'
    assert resp.headers["X-Repo-Commit"] == commit
    assert resp.headers["Content-Length"] == str(SIZE)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in resp.headers
    assert "X-Linked-Etag" not in resp.headers

    head = http.head(url(sim))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(SIZE)
    assert head.headers["ETag"] == resp.headers["ETag"]

    lfs = http.head(url(sim, "model.safetensors"))
    sha = hashlib.sha256(data).hexdigest()
    assert lfs.status_code == 200
    assert lfs.headers["ETag"] == lfs.headers["X-Linked-Etag"] == f'"{sha}"'
    assert lfs.headers["X-Linked-Size"] == str(SIZE)
    assert not any(h.lower().startswith("x-xet") for h in lfs.headers)

    missing = http.head(url(sim, "nope.bin"))
    assert missing.status_code == 404
    assert missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == commit


def test_ranges(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    def get(range_value: str, **headers: str) -> httpx.Response:
        return http.get(url(sim), headers={"Range": range_value, **headers})

    r = get("bytes=10-19")
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{SIZE}"
    assert r.headers["Content-Length"] == "10"
    r = get(f"bytes={SIZE - 5}-")
    assert r.status_code == 206 and r.content == data[-5:]
    r = get("bytes=-7")
    assert r.status_code == 206 and r.content == data[-7:]
    assert r.headers["Content-Range"] == f"bytes {SIZE - 7}-{SIZE - 1}/{SIZE}"
    r = get(f"bytes=100-{SIZE + 1000}")
    assert r.status_code == 206 and r.content == data[100:]
    for unsatisfiable in (f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"):
        r = get(unsatisfiable)
        assert r.status_code == 416, unsatisfiable
        assert r.headers["Content-Range"] == f"bytes */{SIZE}"
    for ignored in ("bytes=0-1,5-9", "items=0-5", "bytes=9-2", "bytes=x-"):
        r = get(ignored)
        assert r.status_code == 200 and len(r.content) == SIZE, ignored

    etag = http.head(url(sim)).headers["ETag"]
    assert get("bytes=0-3", **{"If-Range": etag}).status_code == 206
    stale = get("bytes=0-3", **{"If-Range": '"0123"'})
    assert stale.status_code == 200 and stale.content == data
    head = http.head(url(sim), headers={"Range": "bytes=0-99"})
    assert head.status_code == 206 and head.headers["Content-Length"] == "100"
    assert head.content == b""


def test_cdn_redirect_signed_urls(cdn_sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    head = http.head(url(cdn_sim, "model.safetensors"))
    assert head.status_code == 302
    location = head.headers["Location"]
    assert location.startswith(f"http://127.0.0.1:{cdn_sim.cdn_port}/cdn/{sha}?expires=")
    assert head.headers["X-Linked-Etag"] == f'"{sha}"'
    assert head.headers["X-Linked-Size"] == str(SIZE)
    assert head.headers["X-Repo-Commit"] == cdn_sim.commit(REPO)
    assert "ETag" in head.headers
    # Regular files are not redirected.
    assert http.head(url(cdn_sim)).status_code == 200

    got = http.get(location)
    assert got.status_code == 200 and got.content == data
    assert got.headers["ETag"] == f'"{sha}"'
    part = http.get(location, headers={"Range": "bytes=5-9"})
    assert part.status_code == 206 and part.content == data[5:10]
    assert http.get(url(cdn_sim, "model.safetensors"), follow_redirects=True).content == data

    tampered = location.replace("sig=", "sig=0")
    assert http.get(tampered).status_code == 403
    expired = http.get(cdn_sim.signed_cdn_url(sha, expires=time.time() - 5))
    assert expired.status_code == 403 and "Request has expired" in expired.text

    cdn_sim.add_fault(Fault(route="hf-resolve", expire_signed_urls=True, times=1))
    stale = http.head(url(cdn_sim, "model.safetensors")).headers["Location"]
    assert http.get(stale).status_code == 403
    fresh = http.head(url(cdn_sim, "model.safetensors")).headers["Location"]
    assert http.get(fresh).status_code == 200
    cdn_sim.add_fault(Fault(route="cdn", expire_signed_urls=True, times=1))
    rejected = http.get(fresh)
    assert rejected.status_code == 403 and "Request has expired" in rejected.text
    assert http.get(fresh).status_code == 200

    # Expire every URL issued so far, now: the old one is refused, a new one works.
    cdn_sim.expire_signed_urls_now()
    rejected = http.get(fresh)
    assert rejected.status_code == 403 and "Request has expired" in rejected.text
    newer = http.head(url(cdn_sim, "model.safetensors")).headers["Location"]
    assert newer != fresh and http.get(newer).status_code == 200

    cdn_records = cdn_sim.requests(listener="cdn")
    assert cdn_records and all(r.port == cdn_sim.cdn_port for r in cdn_records)
    assert {r.route for r in cdn_records} == {"cdn"}


# --- body faults --------------------------------------------------------------------------------


def test_reset_after_bytes(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    handle = sim.add_fault(Fault(route="hf-resolve", reset_after_bytes=100_000, times=1))
    http.head(url(sim))  # a HEAD has no body: it neither triggers nor consumes the fault
    got, err = stream_until_error(http, url(sim))
    assert isinstance(err, httpx.ReadError)  # ECONNRESET
    assert got == data[:100_000]
    assert sim.fault_hits(handle) == 1
    assert sim.requests(method="GET")[-1].bytes_sent == 100_000
    assert http.get(url(sim)).content == data  # times=1: the next transfer is clean


def test_truncate_after_bytes(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    sim.add_fault(Fault(route="hf-resolve", path_glob="blob.*", truncate_after_bytes=4096))
    got, err = stream_until_error(http, url(sim))
    assert isinstance(err, httpx.RemoteProtocolError)  # clean EOF before Content-Length
    assert got == data[:4096]
    assert http.get(url(sim, "small.json")).status_code == 200  # path_glob did not match


def test_stall(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    sim.add_fault(Fault(route="hf-resolve", stall_after_bytes=1000, stall_s=0.6))
    got = bytearray()
    first_at = end_at = 0.0
    with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", url(sim)) as resp:
        for chunk in resp.iter_raw():
            if not got:
                first_at = time.monotonic()
            got += chunk
    end_at = time.monotonic()
    assert bytes(got) == data[:1000]
    assert end_at - first_at >= 0.3


def test_rate_limit(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    rate = 1_000_000  # ~1 MB/s over a 1 MiB body: about one second
    sim.add_fault(Fault(route="hf-resolve", rate_bps=rate))
    started = time.monotonic()
    assert http.get(url(sim)).content == data
    elapsed = time.monotonic() - started
    assert elapsed >= 0.5 * SIZE / rate
    assert elapsed < 10


def test_latency(sim: HubSimulator, http: httpx.Client) -> None:
    sim.add_fault(Fault(route="hf-api", latency_s=0.4))
    started = time.monotonic()
    assert http.get(f"{sim.url}/api/models/{REPO}").status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    assert http.head(url(sim)).status_code == 200  # other routes unaffected
    assert time.monotonic() - started < 0.3


def test_corruption_at_file_offsets(sim: HubSimulator, http: httpx.Client, data: bytes) -> None:
    offsets = (0, 1000, SIZE - 1)
    sim.add_fault(Fault(route="hf-resolve", corrupt_offsets=offsets))
    body = http.get(url(sim)).content
    diff = [i for i in range(SIZE) if body[i] != data[i]]
    assert diff == list(offsets)
    assert all(body[i] == data[i] ^ 0xFF for i in offsets)
    part = http.get(url(sim), headers={"Range": "bytes=990-1009"}).content
    assert part == body[990:1010] != data[990:1010]  # consistent with the full body

    sim.clear_faults()
    sim.add_fault(Fault(route="hf-resolve", corrupt_every=256 * 1024))
    body = http.get(url(sim)).content
    assert [i for i in range(0, SIZE) if body[i] != data[i]] == [0, 262144, 524288, 786432, 1048576]
    tail = http.get(url(sim), headers={"Range": "bytes=262140-262149"}).content
    assert tail[4] == data[262144] ^ 0xFF and tail[:4] == data[262140:262144]


def test_ignore_range_and_wrong_content_range(
    sim: HubSimulator, http: httpx.Client, data: bytes
) -> None:
    handle = sim.add_fault(Fault(route="hf-resolve", ignore_range=True, times=1))
    assert http.get(url(sim)).status_code == 200  # no Range: not counted
    assert sim.fault_hits(handle) == 0
    r = http.get(url(sim), headers={"Range": "bytes=100-199"})
    assert r.status_code == 200 and r.content == data
    r = http.get(url(sim), headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]

    sim.add_fault(Fault(route="hf-resolve", wrong_content_range=1))
    r = http.get(url(sim), headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 101-200/{SIZE}"
    assert r.content == data[101:201]


# --- request faults -----------------------------------------------------------------------------


def test_status_times_skip_retry_after(sim: HubSimulator, http: httpx.Client) -> None:
    sim.add_fault(
        Fault(
            route="hf-resolve", status=503, retry_after=7, error_code="Overloaded", skip=1, times=2
        )
    )
    statuses = [http.get(url(sim, "small.json")).status_code for _ in range(4)]
    assert statuses == [200, 503, 503, 200]
    sim.clear_faults()

    sim.add_fault(Fault(route="hf-resolve", status=429, retry_after=3, error_code="RateLimited"))
    r = http.head(url(sim))
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "3" and r.headers["X-Error-Code"] == "RateLimited"
    body = http.get(url(sim)).json()
    assert "error" in body
    sim.clear_faults()

    sim.add_fault(Fault(route="ms-api", status=500, method="GET"))
    r = http.get(f"{sim.url}/api/v1/models/{REPO}/repo/files")
    assert r.status_code == 500
    assert r.json()["Code"] == 500 and r.json()["Success"] is False
    assert http.get(url(sim, "small.json")).status_code == 200


def test_html_error_200_and_redirect_loop(sim: HubSimulator, http: httpx.Client) -> None:
    sim.add_fault(Fault(route="hf-api", html_error_200=True, times=1))
    r = http.get(f"{sim.url}/api/models/{REPO}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in r.text
    assert http.get(f"{sim.url}/api/models/{REPO}").json()["id"] == REPO

    sim.add_fault(Fault(route="hf-resolve", redirect_loop=True))
    r = http.get(url(sim))
    assert r.status_code == 302 and r.headers["Location"] == url(sim)
    with pytest.raises(httpx.TooManyRedirects):
        http.get(url(sim), follow_redirects=True)


# --- log, control API, lifecycle ----------------------------------------------------------------


def test_request_log(cdn_sim: HubSimulator, http: httpx.Client) -> None:
    cdn_sim.clear_log()
    head = http.head(
        url(cdn_sim, "model.safetensors"),
        headers={"Authorization": "Bearer secret", "Cookie": "m_session_id=abc"},
    )
    http.get(head.headers["Location"], headers={"Range": "bytes=0-9", "User-Agent": "probe/1"})
    http.get(f"{cdn_sim.url}/_sim/log")  # control requests are not logged
    hub, cdn = cdn_sim.log
    assert (hub.listener, hub.method, hub.route, hub.status) == ("hub", "HEAD", "hf-resolve", 302)
    assert hub.path == f"/{REPO}/resolve/main/model.safetensors"
    assert hub.authorization == "Bearer secret" and hub.cookie == "m_session_id=abc"
    assert hub.port == cdn_sim.port and hub.host == f"127.0.0.1:{cdn_sim.port}"
    assert (cdn.listener, cdn.method, cdn.route, cdn.status) == ("cdn", "GET", "cdn", 206)
    assert cdn.authorization is None and cdn.range == "bytes=0-9" and cdn.bytes_sent == 10
    assert cdn.user_agent == "probe/1" and cdn.port == cdn_sim.cdn_port
    assert set(cdn.query) == {"expires", "sig"}
    assert cdn_sim.requests(listener="cdn", status=206) == [cdn]
    assert cdn_sim.requests(path_glob="*/model.safetensors") == [hub]
    cdn_sim.clear_log()
    assert cdn_sim.log == []


def test_control_api(sim: HubSimulator, http: httpx.Client) -> None:
    ctl = f"{sim.url}/_sim"
    fault = Fault(route="hf-resolve", status=500, times=1, path_glob="small.*")
    created = http.post(f"{ctl}/faults", json=fault.to_dict())
    assert created.status_code == 200
    fault_id = created.json()["id"]
    assert http.get(url(sim, "small.json")).status_code == 500
    assert http.get(url(sim, "small.json")).status_code == 200
    listed = http.get(f"{ctl}/faults").json()["faults"]
    assert listed == [{"id": fault_id, "fault": fault.to_dict(), "seen": 2, "applied": 1}]
    assert http.delete(f"{ctl}/faults/{fault_id}").json() == {"removed": True}
    assert http.delete(f"{ctl}/faults/{fault_id}").status_code == 404

    http.post(f"{ctl}/faults", json={"route": "*", "latency_s": 0.01})
    assert http.delete(f"{ctl}/faults").json() == {"cleared": 1}
    assert sim.faults == []
    bad = http.post(f"{ctl}/faults", json={"route": "nowhere"})
    assert bad.status_code == 400
    assert http.post(f"{ctl}/faults", json={"bogus": 1}).status_code == 400

    log = http.get(f"{ctl}/log").json()["requests"]
    assert [(r["method"], r["status"]) for r in log] == [("GET", 500), ("GET", 200)]
    assert http.delete(f"{ctl}/log").status_code == 200
    assert http.get(f"{ctl}/log").json()["requests"] == []
    repos = http.get(f"{ctl}/repos").json()["repos"]
    assert repos[REPO]["branches"] == {"main": sim.commit(REPO)}


def test_fault_model() -> None:
    f = Fault(route="cdn", method="get", reset_after_bytes=0, corrupt_offsets=(3, 1))
    assert f.method == "GET" and f.is_body_fault and not f.needs_range
    assert Fault.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    assert Fault(ignore_range=True).needs_range
    assert not Fault(status=500, rate_bps=10).is_body_fault
    assert Fault.from_dict({"wrong_content_range": True}).wrong_content_range == 1
    for bad in ({"route": "x"}, {"times": -1}, {"rate_bps": 0}, {"status": 42}, {"listener": "x"}):
        with pytest.raises(ValueError):
            Fault.from_dict(bad)


def test_stop_interrupts_stalled_transfers(repo_dir: Path) -> None:
    sim = HubSimulator(name="stop-test").start()
    sim.add_repo(REPO, repo_dir)
    sim.add_fault(Fault(route="hf-resolve", stall_after_bytes=10, stall_s=60))
    sim.add_fault(Fault(route="hf-api", latency_s=60))
    conns = []
    for path in (f"/{REPO}/resolve/main/blob.txt", f"/api/models/{REPO}"):
        conn = socket.create_connection(("127.0.0.1", sim.port))
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        conns.append(conn)
    conns[0].recv(1)
    time.sleep(0.1)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 3
    assert not any(t.name.startswith("hubsim-stop-test") for t in threading.enumerate())
    for conn in conns:
        conn.close()
    sim.stop()  # idempotent


def test_lfs_rules_and_digests(tmp_path: Path) -> None:
    rules = parse_gitattributes(
        "# comment\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
        "weights/** filter=lfs\nweights/keep.bin -filter\n/top.dat filter=lfs\n"
    )
    assert is_lfs("a/b/c.bin", 10, rules)
    assert is_lfs("weights/x/y.txt", 10, rules)
    assert not is_lfs("weights/keep.bin", 10, rules)
    assert is_lfs("top.dat", 10, rules) and not is_lfs("sub/top.dat", 10, rules)
    assert not is_lfs("model.safetensors", 10, rules)  # .gitattributes replaces the defaults
    assert is_lfs("README.md", LFS_SIZE_THRESHOLD, rules)

    root = tmp_path / "r"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").write_text("h")
    (root / "sub" / "w.onnx").write_bytes(b"\0" * 10)
    (root / "big.txt").write_bytes(b"")
    os.truncate(root / "big.txt", LFS_SIZE_THRESHOLD)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    files = {f.path: f for f in scan_directory(root)}
    assert set(files) == {".hidden", "sub/w.onnx", "big.txt"}
    assert files["sub/w.onnx"].lfs and files["big.txt"].lfs and not files[".hidden"].lfs
    f = files["sub/w.onnx"]
    assert f.sha256 == hashlib.sha256(b"\0" * 10).hexdigest()
    assert f.git_sha1 == git_blob_sha1(b"\0" * 10)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\nsize 10\n"
    assert f.oid == git_blob_sha1(pointer.encode()) and f.pointer_size == len(pointer)


def test_cli_serve(repo_dir: Path, data: bytes) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelget.testing",
            "serve",
            "--repo",
            f"{REPO}={repo_dir}",
            "--cdn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:")
        assert info["cdn_url"].startswith("http://127.0.0.1:")
        with httpx.Client() as http:
            resp = http.get(f"{info['url']}/{REPO}/resolve/main/blob.txt")
            assert resp.status_code == 200 and resp.content == data
            lfs = http.get(f"{info['url']}/{REPO}/resolve/main/model.safetensors")
            assert lfs.status_code == 302
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
