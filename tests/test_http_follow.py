"""The one redirect follower, ``modelget.http.follow``: credentials only to their own origin
(default ports normalised), non-HTTP targets refused, hops capped.

The origin logic runs against ``httpx.MockTransport`` (pure: the hosts and default ports it
needs, ``https://hub.example:443``, cannot be bound on loopback); the same rules are then
checked against two real servers on 127.0.0.1, one origin each."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from modelget import http
from modelget.engines.redirects import ResolveURLError, resolve_final_url

TOKEN = {"Authorization": "Bearer secret"}

Seen = list[tuple[str, str, str | None]]
"""(method, URL, Authorization) of every request, in order."""


def _mock(routes: dict[str, httpx.Response], seen: Seen) -> httpx.Client:
    """A client whose transport answers ``routes`` by URL (404 otherwise) and logs requests."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.headers.get("Authorization")))
        answer = routes.get(str(request.url))
        if answer is None:
            return httpx.Response(404)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.Client(transport=httpx.MockTransport(handle))


def _to(location: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"Location": location})


def _ok(body: bytes = b"bytes") -> httpx.Response:
    return httpx.Response(200, content=body)


def _refused(client: httpx.Client, url: str, **options: Any) -> http.RedirectError:
    """The error ``follow`` raises for ``url`` (it must not yield a final answer)."""
    options.setdefault("max_hops", 5)
    try:
        with http.follow(client, "GET", url, **options):
            pass
    except http.RedirectError as exc:
        return exc
    raise AssertionError(f"{url} was followed to a final answer")


# --- pure: httpx.MockTransport ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "target", "kept"),
    [
        pytest.param("https://hub.example/f", "https://hub.example/g", True, id="same-origin"),
        pytest.param("https://hub.example/f", "https://hub.example:443/g", True, id="explicit-443"),
        pytest.param("https://hub.example:443/f", "https://HUB.example/g", True, id="443-to-bare"),
        pytest.param("http://hub.example/f", "http://hub.example:80/g", True, id="explicit-80"),
        pytest.param("https://hub.example/f", "https://cdn.example/g", False, id="other-host"),
        pytest.param("https://hub.example/f", "http://hub.example/g", False, id="https-to-http"),
        pytest.param("http://hub.example/f", "https://hub.example/g", False, id="http-to-https"),
        pytest.param("https://hub.example/f", "https://hub.example:8443/g", False, id="port"),
    ],
)
def test_credentials_go_only_to_hops_on_their_own_origin(
    start: str, target: str, kept: bool
) -> None:
    seen: Seen = []
    final = str(httpx.URL(target))  # httpx drops a default port and lower-cases the host
    routes = {str(httpx.URL(start)): _to(target), final: _ok()}
    with (
        _mock(routes, seen) as client,
        http.follow(client, "GET", start, credentials=TOKEN, max_hops=5, stream=False) as got,
    ):
        assert got.response.status_code == 200
        assert got.response.content == b"bytes"
        assert got.hops == 1
        assert got.url == final
    assert seen[0][2] == "Bearer secret", "the first hop is on the token's own origin"
    assert seen[1][2] == ("Bearer secret" if kept else None)


def test_credentials_come_back_when_a_later_hop_returns_to_their_origin() -> None:
    seen: Seen = []
    routes = {
        "https://hub.example/f": _to("https://cdn.example/x"),
        "https://cdn.example/x": _to("https://hub.example:443/g"),
        "https://hub.example:443/g": _ok(),
    }
    with (
        _mock(routes, seen) as client,
        http.follow(client, "GET", "https://hub.example/f", credentials=TOKEN, max_hops=5),
    ):
        pass
    assert [auth for _, _, auth in seen] == ["Bearer secret", None, "Bearer secret"]


def test_credentials_origin_can_be_another_url_than_the_first() -> None:
    """The probe's token belongs to the mirror's endpoint, not to the file URL it samples."""
    seen: Seen = []
    routes = {
        "https://files.example/f": _to("https://hub.example/f"),
        "https://hub.example/f": _ok(),
    }
    with (
        _mock(routes, seen) as client,
        http.follow(
            client,
            "GET",
            "https://files.example/f",
            credentials=TOKEN,
            credentials_origin="https://hub.example",
            max_hops=5,
        ),
    ):
        pass
    assert [auth for _, _, auth in seen] == [None, "Bearer secret"]


def test_every_hop_gets_the_plain_headers_and_they_win_over_credentials() -> None:
    got_headers: list[httpx.Headers] = []

    def handle(request: httpx.Request) -> httpx.Response:
        got_headers.append(request.headers)
        if request.url.host == "hub.example":
            return _to("https://cdn.example/x")
        return _ok()

    with (
        httpx.Client(transport=httpx.MockTransport(handle)) as client,
        http.follow(
            client,
            "GET",
            "https://hub.example/f",
            headers={"Range": "bytes=0-0", "X-Same": "plain"},
            credentials={**TOKEN, "X-Same": "credential"},
            max_hops=5,
        ),
    ):
        pass
    assert [h["Range"] for h in got_headers] == ["bytes=0-0", "bytes=0-0"]
    assert [h["X-Same"] for h in got_headers] == ["plain", "plain"]
    assert "Authorization" not in got_headers[1]


@pytest.mark.parametrize("max_hops", [0, 1, 3])
def test_hops_are_capped(max_hops: int) -> None:
    seen: Seen = []
    routes = {f"https://hub.example/{i}": _to(f"/{i + 1}") for i in range(10)}
    with _mock(routes, seen) as client:
        refused = _refused(client, "https://hub.example/0", max_hops=max_hops)
    assert refused.kind == "too-many"
    assert str(refused) == f"more than {max_hops} redirects"
    assert refused.hops == max_hops
    assert refused.status == 302
    assert len(seen) == max_hops + 1, "the answer after the last allowed hop ends the walk"


def test_exactly_max_hops_redirects_are_followed() -> None:
    routes = {f"https://hub.example/{i}": _to(f"/{i + 1}") for i in range(3)}
    routes["https://hub.example/3"] = _ok()
    with (
        _mock(routes, []) as client,
        http.follow(client, "GET", "https://hub.example/0", max_hops=3) as got,
    ):
        assert (got.hops, got.url, got.response.status_code) == (3, "https://hub.example/3", 200)


@pytest.mark.parametrize(
    "target", ["ftp://hub.example/f", "file:///etc/passwd", "ws://hub.example/f", "git:/x"]
)
def test_a_non_http_target_is_refused_before_any_request_to_it(target: str) -> None:
    seen: Seen = []
    routes = {"https://hub.example/f": _to(target)}
    with _mock(routes, seen) as client:
        refused = _refused(client, "https://hub.example/f", credentials=TOKEN, max_hops=5)
    assert refused.kind == "non-http"
    assert refused.hops == 1
    assert refused.status == 302
    assert refused.scheme == target.split(":")[0]
    assert str(refused).startswith("redirected to a non-HTTP URL (")
    assert len(seen) == 1


def test_a_location_httpx_cannot_parse_is_refused() -> None:
    routes = {"https://hub.example/f": _to("data:,x")}  # "," is not a path: httpx.InvalidURL
    with _mock(routes, []) as client:
        refused = _refused(client, "https://hub.example/f", max_hops=5)
    assert (refused.kind, refused.hops) == ("bad-location", 0)
    assert str(refused) == "a redirect with an invalid Location"


def test_a_non_http_first_url_is_refused() -> None:
    seen: Seen = []
    with _mock({}, seen) as client:
        refused = _refused(client, "ftp://hub.example/f", max_hops=5)
    assert (refused.kind, refused.hops, refused.status) == ("non-http", 0, None)
    assert seen == []


def test_a_redirect_without_location_is_refused() -> None:
    routes = {"https://hub.example/f": httpx.Response(307)}
    with _mock(routes, []) as client:
        refused = _refused(client, "https://hub.example/f", max_hops=5)
    assert refused.kind == "no-location"
    assert (refused.status, refused.hops) == (307, 0)
    assert str(refused) == "HTTP 307 without a Location"


def test_on_response_sees_every_answer_and_303_turns_into_get() -> None:
    seen: Seen = []
    routes = {
        "https://hub.example/a": _to("/b", 303),
        "https://hub.example/b": _to("/c", 307),
        "https://hub.example/c": _ok(),
    }
    statuses: list[int] = []
    with (
        _mock(routes, seen) as client,
        http.follow(
            client,
            "POST",
            "https://hub.example/a",
            max_hops=5,
            on_response=lambda r: statuses.append(r.status_code),
        ) as got,
    ):
        assert got.response.read() == b"bytes"
    assert statuses == [303, 307, 200]
    assert [m for m, _, _ in seen] == ["POST", "GET", "GET"]


def test_the_final_answer_is_returned_whatever_its_status() -> None:
    routes = {"https://hub.example/f": _to("https://cdn.example/f"), "https://cdn.example/f": _ok()}
    routes["https://cdn.example/f"] = httpx.Response(403, content=b"expired")
    with (
        _mock(routes, []) as client,
        http.follow(client, "GET", "https://hub.example/f", max_hops=5, stream=False) as got,
    ):
        assert (got.response.status_code, got.response.content, got.hops) == (403, b"expired", 1)


# --- real servers on 127.0.0.1 -----------------------------------------------------------------


class _Server:
    """A loopback HTTP server answering with ``route(path)`` -> (status, headers, body) and
    logging (path, Authorization) of every request."""

    def __init__(self, route: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.log: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.log.append((self.path, self.headers.get("Authorization")))
                status, headers, body = route(self.path)
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[_Server, _Server]]:
    """``hub`` redirects ``/same`` to itself (``/data``), ``/cross*`` to ``cdn`` (``/data*``),
    ``/loop`` to itself forever and ``/ftp`` to an ftp URL; ``cdn`` serves anything (JSON for
    a ``.json`` path)."""
    cdn = _Server(
        lambda path: (200, {}, b'{"from": "cdn"}' if path.endswith(".json") else b"cdn bytes")
    )

    def hub_route(path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/same":
            return 302, {"Location": "/data"}, b""
        if path.startswith("/cross"):
            return 302, {"Location": f"{cdn.url}/data{path[len('/cross') :]}"}, b""
        if path == "/loop":
            return 301, {"Location": "/loop"}, b""
        if path == "/ftp":
            return 302, {"Location": "ftp://127.0.0.1/data"}, b""
        return 200, {}, b"hub bytes"

    hub = _Server(hub_route)
    yield hub, cdn
    hub.close()
    cdn.close()


def test_real_servers_token_kept_on_the_same_origin_dropped_on_another(
    servers: tuple[_Server, _Server],
) -> None:
    hub, cdn = servers
    with http.client(timeout=10) as client:
        with http.follow(client, "GET", f"{hub.url}/same", credentials=TOKEN, max_hops=5) as got:
            assert got.response.read() == b"hub bytes"
            assert (got.hops, got.url) == (1, f"{hub.url}/data")
        with http.follow(client, "GET", f"{hub.url}/cross", credentials=TOKEN, max_hops=5) as got:
            assert got.response.read() == b"cdn bytes"
            assert (got.hops, got.url) == (1, f"{cdn.url}/data")
    assert hub.log == [
        ("/same", "Bearer secret"),
        ("/data", "Bearer secret"),
        ("/cross", "Bearer secret"),
    ]
    assert cdn.log == [("/data", None)], "the other origin (another port) never sees the token"


def test_real_servers_loop_capped_and_ftp_refused(servers: tuple[_Server, _Server]) -> None:
    hub, _ = servers
    with http.client(timeout=10) as client:
        loop = _refused(client, f"{hub.url}/loop", max_hops=3)
        ftp = _refused(client, f"{hub.url}/ftp", max_hops=3)
    assert loop.kind == "too-many"
    assert [path for path, _ in hub.log].count("/loop") == 4
    assert ftp.kind == "non-http"


def test_resolve_final_url_words_the_follower_s_refusals_as_before(
    servers: tuple[_Server, _Server],
) -> None:
    """``resolve_final_url`` (aria2's resolution) is a caller of the follower: same errors."""
    hub, cdn = servers
    with http.client(timeout=10) as client:
        resolved = resolve_final_url(client, f"{hub.url}/cross", TOKEN)
        assert (resolved.url, resolved.hops, resolved.same_origin) == (f"{cdn.url}/data", 1, False)
        with pytest.raises(ResolveURLError, match=r"more than 2 redirects"):
            resolve_final_url(client, f"{hub.url}/loop", max_hops=2)
        with pytest.raises(ResolveURLError, match=r"redirected to a non-HTTP URL \(ftp\)"):
            resolve_final_url(client, f"{hub.url}/ftp")
    assert cdn.log == [("/data", None)]


def test_the_cdn_source_s_metadata_goes_through_the_follower(
    servers: tuple[_Server, _Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``cdn`` mirror's JSON files (once httpx's own follower) follow the one rule: its
    token goes to its endpoint's origin, not to the host a redirect points at."""
    from modelget.datatypes import Mirror
    from modelget.errors import MirrorUnavailableError
    from modelget.sources.cdn import CdnSource

    hub, cdn = servers
    monkeypatch.setenv("CDN_TOKEN", "secret")
    mirror = Mirror(name="m", kind="cdn", endpoint=hub.url, token_env="CDN_TOKEN")
    source = CdnSource()
    assert source._get_json(mirror, f"{hub.url}/cross.json", 10) == (200, {"from": "cdn"})
    assert hub.log == [("/cross.json", "Bearer secret")]
    assert cdn.log == [("/data.json", None)]
    with pytest.raises(MirrorUnavailableError, match="unreachable: redirected to a non-HTTP"):
        source._get_json(mirror, f"{hub.url}/ftp", 10)
