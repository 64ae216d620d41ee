"""The hf_transfer peer: ``python bench/hf_transfer_driver.py LISTING.json``.

hf_transfer (the Rust downloader huggingface_hub uses with ``HF_HUB_ENABLE_HF_TRANSFER=1``)
has no command line; this driver calls ``hf_transfer.download`` directly, the way
huggingface_hub does: 8 files at a time (a thread pool of 8, like ``snapshot_download``'s
``max_workers``), each file cut into 10 MiB chunks fetched 16 at a time
(``max_files=16, chunk_size=10485760``, huggingface_hub's chunk size; huggingface_hub's own call passes
``parallel_failures=3, max_retries=5``, so does this one).

Redirects: huggingface_hub does not hand hf_transfer the ``resolve`` URL. Its HEAD request
(``get_hf_file_metadata``) does not follow a redirect to another host, and the file is then
downloaded from the ``Location`` (the CDN), so each chunk goes straight to the CDN instead of
through the hub's redirect once per chunk. This driver does the same: per file, a HEAD
without following redirects, then ``hf_transfer.download(url=<Location or the resolve URL>)``.
That HEAD is inside the timed run, as it is inside huggingface_hub's.

``LISTING.json`` is ``[{"url": RESOLVE_URL, "path": DEST_FILE}, ...]``, written by
:func:`bench.peers.hf_transfer` before the clock starts. Exits 0 when every file is in.
Importing this module does not import hf_transfer (the bench and the tests import it).
"""

from __future__ import annotations

import http.client
import importlib
import json
import sys
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FILES_AT_ONCE = 8
MAX_FILES = 16
CHUNK_SIZE = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE
PARALLEL_FAILURES = 3
MAX_RETRIES = 5
REDIRECTS = (301, 302, 303, 307, 308)


def redirect_target(url: str, status: int, location: str | None) -> str:
    """Where to download ``url`` from after a HEAD answered ``status``/``location``: the
    redirect's target (relative locations joined to ``url``), else ``url`` itself."""
    if status in REDIRECTS and location:
        return urllib.parse.urljoin(url, location)
    return url


def head(url: str, timeout: float = 30.0) -> tuple[int, str | None]:
    """One HEAD request, redirects not followed: (status, Location header)."""
    u = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.netloc, timeout=timeout)
    try:
        target = u.path + (f"?{u.query}" if u.query else "")
        conn.request("HEAD", target or "/", headers={"Accept-Encoding": "identity"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Location")
    finally:
        conn.close()


def fetch(hf_transfer: Any, url: str, path: str) -> None:
    status, location = head(url)
    if status >= 400:
        raise RuntimeError(f"HEAD {url}: HTTP {status}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    hf_transfer.download(
        url=redirect_target(url, status, location),
        filename=path,
        max_files=MAX_FILES,
        chunk_size=CHUNK_SIZE,
        parallel_failures=PARALLEL_FAILURES,
        max_retries=MAX_RETRIES,
    )


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python bench/hf_transfer_driver.py LISTING.json", file=sys.stderr)
        return 2
    hf_transfer = importlib.import_module("hf_transfer")
    listing = json.loads(Path(argv[0]).read_text())
    with ThreadPoolExecutor(FILES_AT_ONCE) as pool:
        futures = [pool.submit(fetch, hf_transfer, e["url"], e["path"]) for e in listing]
        for fut in futures:
            fut.result()  # the first failure ends the run with a traceback and exit code 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
