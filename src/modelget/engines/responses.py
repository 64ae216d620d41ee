"""Is this answer the bytes we asked for? Pure: status and headers in, a verdict out.

An engine that asked a mirror for ``bytes=first-`` of a file (with ``If-Range`` when it holds a
partial copy from that mirror) hands the answer's status and headers to :func:`check` and
carries out what comes back: ``Accept`` (write the body at ``first``; keep the strong ETag for
the next ``If-Range``), ``Retry`` (the mirror may answer better later: back off), ``Drop`` (it
never will for this file: take it off the file), ``Renew`` (a signed redirect URL expired:
resolve the mirror's own URL again, not a failure), ``Discard`` (the file changed on the mirror
since the partial download: throw the partial file away, never mix two versions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelget.retry import parse_retry_after, status_is_retryable


@dataclass(frozen=True)
class Accept:
    etag: str | None
    """A strong validator to send as ``If-Range`` next time (None: none usable)."""


@dataclass(frozen=True)
class Retry:
    message: str
    retry_after: float | None = None
    throttled: bool = False
    """A 429/503: the mirror asks for fewer requests."""


@dataclass(frozen=True)
class Drop:
    message: str


@dataclass(frozen=True)
class Renew:
    message: str


@dataclass(frozen=True)
class Discard:
    message: str


Verdict = Accept | Retry | Drop | Renew | Discard


def check(
    status: int,
    headers: Mapping[str, str],
    *,
    first: int,
    size: int,
    if_range: str | None,
    redirected: bool,
    where: str,
    path: str,
    mirror: str,
) -> Verdict:
    """The verdict on an answer to a request for ``bytes=first-`` of a ``size``-byte file.

    ``headers``: looked up case-insensitively by the caller's mapping (httpx's are); ``if_range``:
    the ETag sent as ``If-Range``; ``redirected``: the answer came from a redirect target (a
    signed URL), not the mirror's own URL; ``where``: the URL for messages (redacted);
    ``path``: the file's path in the repo (an ``.html`` file may be HTML); ``mirror``: its
    name, for messages."""
    if status in (401, 403, 410) and redirected:
        return Renew(
            f"HTTP {status} from the redirect target {where} (signed URL expired?); resolving again"
        )
    if status not in (200, 206):
        message = f"HTTP {status} from {where}"
        if not status_is_retryable(status):
            return Drop(message)
        return Retry(
            message,
            retry_after=parse_retry_after(headers.get("Retry-After")),
            throttled=status in (429, 503),
        )
    content_type = headers.get("Content-Type", "").lower()
    if content_type.startswith("text/html") and not path.lower().endswith((".html", ".htm")):
        return Drop(f"HTTP {status} with an HTML page instead of the file ({where})")
    encoding = headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity"):
        return Drop(f"answered with Content-Encoding {encoding!r}")
    etag = headers.get("ETag")
    if status == 200:
        if if_range is not None and etag is not None and etag != if_range:
            return Discard(
                f"{path} changed on mirror {mirror} since the partial download (If-Range "
                "failed); the partial file was discarded, run the pull again"
            )
        # A 200 with the same ETag (or none) is a server that ignores Range, not a changed
        # file; whatever it sends is checked against the digest before it lands anyway.
        if first != 0:
            return Drop("answered a Range request with the whole file (HTTP 200): it ignores Range")
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != size:
            return Drop(f"serves {int(length)} bytes, the manifest says {size}")
    else:
        got = parse_content_range(headers.get("Content-Range", ""))
        if got is None or got[0] != first or got[2] != size:
            return Drop(
                f"wrong Content-Range {headers.get('Content-Range')!r} for bytes {first}- of {size}"
            )
    return Accept(etag if etag and not etag.startswith("W/") else None)


def parse_content_range(value: str) -> tuple[int, int, int] | None:
    """``bytes a-b/total`` → (a, b, total); None for anything else or an impossible range."""
    value = value.strip()
    if not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/", 1)
        a, b = span.split("-", 1)
        out = int(a), int(b), int(total)
    except ValueError:
        return None
    if out[0] > out[1] or out[1] >= out[2]:
        return None
    return out
