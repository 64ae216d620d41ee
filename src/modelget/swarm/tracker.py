"""Asking a tracker how a swarm is doing: its ``/scrape`` (BEP 48; opentracker serves it), the
counts of seeders (``complete``) and downloaders (``incomplete``) for an info-hash. What a
seeder's lifetime decision reads (``policy.keep_seeding``)."""

from __future__ import annotations

import urllib.parse
import urllib.request

from modelget.errors import TorrentError

SCRAPE_TIMEOUT_S = 5.0
MAX_SCRAPE_BYTES = 64 * 1024


def scrape_url(announce: str, info_hash: str) -> str | None:
    """The scrape URL for ``announce`` (its last path segment ``announce`` → ``scrape``), with
    the hash as its 20 raw bytes, percent-encoded; None when the tracker has no scrape URL."""
    parts = urllib.parse.urlsplit(announce)
    head, _, last = parts.path.rpartition("/")
    if parts.scheme not in ("http", "https") or not last.startswith("announce"):
        return None
    query = "info_hash=" + urllib.parse.quote_from_bytes(bytes.fromhex(info_hash), safe="")
    path = f"{head}/{last.replace('announce', 'scrape', 1)}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def scrape(announce: str, info_hash: str) -> dict[str, int] | None:
    """``complete``, ``incomplete`` and ``downloaded`` for ``info_hash``, or None when the
    tracker cannot say (unreachable, no scrape URL, a malformed or refused answer). Never
    through a proxy: the tracker is on the cluster's network."""
    from modelget.swarm.torrent import bdecode

    url = scrape_url(announce, info_hash)
    if url is None:
        return None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=SCRAPE_TIMEOUT_S) as response:
            body = response.read(MAX_SCRAPE_BYTES + 1)
        decoded = bdecode(body)
    except (OSError, ValueError, TorrentError):
        return None
    files = decoded.get(b"files") if isinstance(decoded, dict) else None
    if not isinstance(files, dict):
        return None
    stats = files.get(bytes.fromhex(info_hash))
    if not isinstance(stats, dict):
        return {"complete": 0, "incomplete": 0, "downloaded": 0}
    out: dict[str, int] = {}
    for key in ("complete", "incomplete", "downloaded"):
        value = stats.get(key.encode(), 0)
        out[key] = value if isinstance(value, int) and value >= 0 else 0
    return out
