"""Which answer is the bytes we asked for (``engines.responses.check``), from plain dicts."""

from __future__ import annotations

from typing import Any

import pytest

from modelget.engines.responses import (
    Accept,
    Discard,
    Drop,
    Renew,
    Retry,
    check,
    parse_content_range,
)

SIZE = 1000


def verdict(status: int, headers: dict[str, str], **kw: Any) -> object:
    args: dict[str, Any] = {
        "first": 0,
        "size": SIZE,
        "if_range": None,
        "redirected": False,
        "where": "http://m/f",
        "path": "model.safetensors",
        "mirror": "m",
    }
    args.update(kw)
    return check(status, headers, **args)


def test_a_206_with_the_asked_range_is_accepted_and_its_strong_etag_kept() -> None:
    got = verdict(206, {"Content-Range": "bytes 100-999/1000", "ETag": '"v1"'}, first=100)
    assert got == Accept('"v1"')
    assert verdict(206, {"Content-Range": "bytes 0-9/1000", "ETag": 'W/"weak"'}) == Accept(None)


@pytest.mark.parametrize(
    "content_range",
    ["bytes 104-999/1000", "bytes 100-999/1004", "bytes */1000", "", "bytes 100-1000/1000"],
)
def test_a_206_for_other_bytes_drops_the_mirror(content_range: str) -> None:
    got = verdict(206, {"Content-Range": content_range}, first=100)
    assert isinstance(got, Drop) and "wrong Content-Range" in got.message


def test_a_200_is_the_whole_file_only_from_byte_0() -> None:
    assert verdict(200, {"Content-Length": str(SIZE)}) == Accept(None)
    got = verdict(200, {"Content-Length": str(SIZE)}, first=100)
    assert isinstance(got, Drop) and "ignores Range" in got.message
    got = verdict(200, {"Content-Length": "996"})
    assert isinstance(got, Drop) and "serves 996 bytes" in got.message


def test_a_200_with_another_etag_than_if_range_means_the_file_changed() -> None:
    got = verdict(200, {"ETag": '"v2"'}, first=100, if_range='"v1"')
    assert isinstance(got, Discard) and "changed on mirror m" in got.message
    # the same ETag: a server that ignores Range, not a changed file
    got = verdict(200, {"ETag": '"v1"'}, first=100, if_range='"v1"')
    assert isinstance(got, Drop) and "ignores Range" in got.message


def test_html_and_compressed_answers_are_not_the_file() -> None:
    got = verdict(206, {"Content-Type": "text/html; charset=utf-8"})
    assert isinstance(got, Drop) and "HTML page" in got.message
    page = verdict(200, {"Content-Type": "text/html"}, path="docs/index.html")
    assert page == Accept(None)  # an .html file may be HTML
    got = verdict(206, {"Content-Encoding": "gzip", "Content-Range": "bytes 0-9/1000"})
    assert isinstance(got, Drop) and "gzip" in got.message


def test_error_statuses_retry_or_drop_and_a_refused_signed_url_is_renewed() -> None:
    assert verdict(503, {"Retry-After": "7"}) == Retry(
        "HTTP 503 from http://m/f", retry_after=7.0, throttled=True
    )
    assert verdict(500, {}) == Retry("HTTP 500 from http://m/f")
    assert isinstance(verdict(404, {}), Drop)
    assert isinstance(verdict(403, {}), Drop)  # the mirror's own URL refuses
    assert isinstance(verdict(403, {}, redirected=True), Renew)  # a signed URL expired


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 0-9/10") == (0, 9, 10)
    assert parse_content_range(" bytes 5-5/6 ") == (5, 5, 6)
    for bad in ("bytes 9-0/10", "bytes 0-10/10", "items 0-1/2", "bytes x-1/2", "bytes 0-1"):
        assert parse_content_range(bad) is None
