"""Resolve a source URL to the URL that serves the bytes, without leaking its headers.

A mirror's headers (``SourceURL.headers``, e.g. ``Authorization``) may be sent only to the
scheme, host and port of the mirror's own URL. Hubs answer a download URL with a redirect to
a signed CDN/object-store URL; that URL carries its own credentials (the signature) and must
not see the token. :func:`resolve_final_url` follows redirects with the one follower,
:func:`modelget.http.follow` (at most ``max_hops``; the headers only on hops that stay on
the source's origin), and returns the final URL, so an engine that cannot be trusted to drop headers across redirects (aria2c
sends a custom ``header`` to every host it is redirected to) gets a URL that needs none.

The probe is a ``GET`` with ``Range: bytes=0-0`` rather than a ``HEAD``: presigned S3-style
URLs are signed for one method, and a ``HEAD`` on a ``GET``-signed URL is refused. At most
one body byte is read; a server that ignores the Range is not drained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from modelget import http
from modelget.errors import MirrorUnavailableError
from modelget.http import origin, redact_url, same_origin
from modelget.retry import parse_retry_after

__all__ = [
    "DEFAULT_MAX_HOPS",
    "ResolveURLError",
    "ResolvedURL",
    "origin",
    "redact_url",
    "resolve_final_url",
    "same_origin",
]
"""``origin``, ``same_origin`` and ``redact_url`` live in :mod:`modelget.http`; they are
re-exported here for one release."""

DEFAULT_MAX_HOPS = 5


@dataclass(frozen=True)
class ResolvedURL:
    """Where a source URL leads."""

    source_url: str
    url: str
    """The final URL: it answered the probe with 200/206 (or 416 for an empty file)."""
    status: int
    size: int | None
    """The resource's total size, from ``Content-Range`` (or ``Content-Length`` on a 200)."""
    hops: int
    """Redirects followed (0: ``url`` is ``source_url``)."""

    @property
    def redirected(self) -> bool:
        return self.hops > 0

    @property
    def same_origin(self) -> bool:
        """The final URL is on the source's own origin: its headers may be sent there."""
        return same_origin(self.url, self.source_url)


class ResolveURLError(MirrorUnavailableError):
    """A source URL could not be resolved to a URL that serves bytes.

    ``status`` is the HTTP status that ended the walk (None for a network error or a redirect
    problem); the message never contains header values or a URL's query.
    """

    code = "url-unresolvable"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.retry_after = retry_after
        """Seconds from the answer's ``Retry-After`` header, if it had one."""


def _total_size(response: httpx.Response) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    if response.status_code == 200:
        length = response.headers.get("Content-Length", "")
        if length.isdigit():
            return int(length)
    return None


def _redirect_error(exc: http.RedirectError, url: str, max_hops: int) -> ResolveURLError:
    """The follower's refusal as this module has always worded it."""
    if exc.kind in ("no-location", "bad-location"):
        return ResolveURLError(f"{redact_url(exc.url)}: {exc}", status=exc.status)
    if exc.kind == "non-http":
        return ResolveURLError(
            f"redirected to a non-HTTP URL ({exc.scheme or 'no scheme'})", url=exc.url
        )
    return ResolveURLError(f"{redact_url(url)}: more than {max_hops} redirects", url=url)


def _failed_url(exc: httpx.HTTPError, url: str) -> str:
    """The URL of the hop a network error happened on (``url`` if httpx does not say)."""
    try:
        return str(exc.request.url)
    except RuntimeError:
        return url


def resolve_final_url(
    client: httpx.Client,
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    max_hops: int = DEFAULT_MAX_HOPS,
) -> ResolvedURL:
    """Follow ``url``'s redirects by hand and return the URL that serves the bytes.

    ``headers`` go only to hops on ``url``'s own origin (scheme, host, port). ``client`` must
    not follow redirects itself (``follow_redirects=False``, httpx's default). Raises
    :class:`ResolveURLError` for an error status, a network error, a redirect without
    ``Location``, a non-http(s) target or more than ``max_hops`` redirects.
    """
    try:
        with http.follow(
            client,
            "GET",
            url,
            headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"},
            credentials=headers,
            max_hops=max_hops,
        ) as got:
            # Leaving the block closes the response unread: a 200 (Range ignored) is not
            # drained, httpx drops that connection instead.
            current, hop, response = got.url, got.hops, got.response
            status = response.status_code
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            size = _total_size(response)
    except http.RedirectError as exc:
        raise _redirect_error(exc, url, max_hops) from None
    except httpx.HTTPError as exc:
        where = _failed_url(exc, url)
        raise ResolveURLError(
            f"{redact_url(where)}: {type(exc).__name__}: {exc}", url=where
        ) from None
    if status in (200, 206):
        return ResolvedURL(url, current, status, size, hop)
    if status == 416 and size == 0:
        return ResolvedURL(url, current, status, 0, hop)
    raise ResolveURLError(
        f"{redact_url(current)}: HTTP {status}",
        status=status,
        url=current,
        retry_after=retry_after,
    )
