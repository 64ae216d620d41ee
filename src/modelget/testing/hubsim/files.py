"""File bodies: 200 / 206 / 416 with exact single-range handling (RFC 7233), ``If-Range`` and
the range faults; the signed, expiring URLs of the CDN listener and its S3-style answers."""

from __future__ import annotations

import hmac
import time

from modelget.testing.faults import BodySource
from modelget.testing.hubsim.base import HandlerBase, Headers
from modelget.testing.repos import RepoFile

UNSATISFIABLE = (-1, -1)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (first, last) inclusive; ``(-1, -1)`` if unsatisfiable;
    None when the header is to be ignored (malformed or multi-range: answer 200)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if not first_s:
        if not last_s.isdigit():
            return None
        n = int(last_s)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - n), size - 1
    if not first_s.isdigit() or (last_s and not last_s.isdigit()):
        return None
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, min(int(last_s), size - 1) if last_s else size - 1


class FileServing(HandlerBase):
    def _serve_file(self, f: RepoFile, etag: str, headers: Headers) -> None:
        """200 / 206 / 416 for a file, honouring Range, If-Range and the range faults."""
        headers = [
            *headers,
            ("ETag", f'"{etag}"'),
            ("Accept-Ranges", "bytes"),
            ("Content-Type", "application/octet-stream"),
        ]
        if self.command == "GET" and f.size > 0:
            self._take_body_faults()
        eff = self._effects
        range_header = self.headers.get("Range")
        if range_header is not None and not eff.ignore_range and self._if_range_matches(etag):
            rng = parse_range(range_header, f.size)
            if rng == UNSATISFIABLE:
                self._respond(416, [*headers, ("Content-Range", f"bytes */{f.size}")], None)
                return
            if rng is not None:
                first, last = rng
                if eff.wrong_content_range:
                    first = min(max(0, first + eff.wrong_content_range), f.size - 1)
                    last = min(max(first, last + eff.wrong_content_range), f.size - 1)
                headers.append(("Content-Range", f"bytes {first}-{last}/{f.size}"))
                body = BodySource(last - first + 1, path=f.source, offset=first)
                self._respond(206, headers, body)
                return
        self._respond(200, headers, BodySource(f.size, path=f.source))

    def _if_range_matches(self, etag: str) -> bool:
        validator = self.headers.get("If-Range")
        # Strong comparison; we send no Last-Modified, so a date never matches.
        return validator is None or validator.strip() == f'"{etag}"'

    def _signed_location(self, sha256: str) -> str:
        sim = self.server.sim
        expired = self._effects.expire_signed_urls
        return sim.signed_cdn_url(sha256, expires=time.time() - 60 if expired else None)

    # --- the CDN listener -----------------------------------------------------------------------

    def _cdn(self, sha256: str, blob: tuple[RepoFile, str] | None) -> None:
        sim = self.server.sim
        if self.command not in ("GET", "HEAD"):
            self._send_text(405, "Method Not Allowed")
            return
        expires, sig = self._query.get("expires", ""), self._query.get("sig", "")
        if not expires.isdigit() or not hmac.compare_digest(sim._sign(sha256, int(expires)), sig):
            self._send_s3_error(403, "SignatureDoesNotMatch", "The request signature is invalid")
            return
        if (
            int(expires) < time.time()
            or int(expires) < sim._min_expires
            or self._effects.expire_signed_urls
        ):
            self._send_s3_error(403, "AccessDenied", "Request has expired")
            return
        if blob is None:
            self._send_s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        f, commit = blob
        headers = [("X-Repo-Commit", commit), ("X-Linked-Etag", f'"{f.sha256}"')]
        self._serve_file(f, f.sha256, headers)

    def _send_s3_error(self, status: int, code: str, message: str) -> None:
        data = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()
        self._respond(status, [("Content-Type", "application/xml")], BodySource(len(data), data))
