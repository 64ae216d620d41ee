"""Retry policy: which failures are worth another try, and how long to wait. Pure.

Built from tenacity's small pieces (its wait strategies and ``RetryCallState``) so that the
engines' retry loops read as ``Retrying(stop=..., wait=transfer_wait(...), retry=...)``.
A server's ``Retry-After`` (on 429/503) wins over the exponential backoff, within a bound.
"""

from __future__ import annotations

import email.utils
import time

from tenacity import RetryCallState, Retrying, wait_exponential, wait_random

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 120.0


class AttemptError(Exception):
    """One attempt to fetch bytes from one mirror failed.

    ``retryable``: another attempt on the same mirror may succeed (a reset, a 503, a stall);
    otherwise the mirror is dropped for this file at once (a 404, wrong bytes, an HTML page).
    ``retry_after``: seconds the server asked us to wait. The message never holds a secret.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        throttled: bool = False,
        renew: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.throttled = throttled
        self.renew = renew
        """A signed redirect target was refused (expired): resolve the mirror's URL again
        and go on; not a failure of the mirror (unless it keeps happening)."""
        """The mirror said it is overloaded (429/503): fewer connections to it, not only a retry."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS


class transfer_wait:  # a tenacity-style wait strategy, named like theirs
    """Exponential backoff with jitter (``base``, doubling, up to ``cap``), unless the failed
    attempt carried a ``Retry-After``: then that, bounded by ``MAX_RETRY_AFTER_S``."""

    def __init__(self, base: float, cap: float = 30.0) -> None:
        self._backoff = wait_exponential(multiplier=base, max=cap) + wait_random(0, base)

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, AttemptError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER_S)
        return backoff


def backoff_s(base: float, attempt: int, cap: float = 30.0) -> float:
    """:class:`transfer_wait`'s wait before the ``attempt``-th retry in a row when the server
    gave no ``Retry-After`` (exponential from ``base`` with jitter, up to ``cap``): what the
    pull-wide scheduler waits before a mirror may try a file again."""
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(transfer_wait(base, cap)(state))
