"""The test tracker (real opentracker, whitelist mode, SIGHUP reload) and the scrape client."""

from __future__ import annotations

import hashlib
import urllib.parse
import urllib.request

import pytest

from modelget.swarm.tracker import scrape, scrape_url
from modelget.testing.tracker import Tracker, opentracker_path

needs_tracker = pytest.mark.skipif(
    opentracker_path() is None, reason="opentracker is not installed"
)


def test_scrape_url() -> None:
    h = "00" * 19 + "ff"
    assert scrape_url("http://t:6969/announce", h) == (
        "http://t:6969/scrape?info_hash=" + "%00" * 19 + "%FF"
    )
    assert scrape_url("http://t/x/announce.php?k=1", h) is not None
    assert scrape_url("http://t/track", h) is None
    assert scrape_url("udp://t:6969/announce", h) is None


def _announce(tracker: Tracker, info_hash: str, left: int, port: int) -> bytes:
    query = urllib.parse.urlencode(
        {
            "info_hash": bytes.fromhex(info_hash),
            "peer_id": b"-MG0001-" + bytes(12 - len(str(port))) + str(port).encode(),
            "port": port,
            "uploaded": 0,
            "downloaded": 0,
            "left": left,
            "compact": 1,
        }
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{tracker.announce}?{query}", timeout=5) as r:
        body: bytes = r.read()
    return body


@needs_tracker
def test_whitelist_reload_and_scrape() -> None:
    h = hashlib.sha1(b"blob").hexdigest()
    with Tracker() as tracker:
        assert b"not authorized" in _announce(tracker, h, 10, 7001).lower()
        tracker.allow(h)
        for _ in range(50):  # SIGHUP is handled asynchronously
            if b"not authorized" not in _announce(tracker, h, 10, 7001).lower():
                break
        else:
            pytest.fail("the whitelist was not reloaded")
        _announce(tracker, h, 0, 7002)
        assert scrape(tracker.announce, h) == {"complete": 1, "incomplete": 1, "downloaded": 0}
        proc = tracker.proc
        assert proc is not None
    assert proc.poll() is not None  # stopped
    assert scrape(tracker.announce, h) is None  # unreachable: cannot say
