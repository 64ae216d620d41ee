"""Which token (if any) a mirror gets. Tokens are attached per mirror entry, never globally.

The rule: a mirror receives a token only if its catalogue entry names one (``token_env``),
or for ``use_hf_login`` entries, the huggingface_hub login file. The token is then sent only
to the mirror endpoint's own host; adapters drop it on redirects to any other host.

``--token`` (``token=`` in the API) is ``HF_TOKEN``'s value for one command, by the same
rule: it goes exactly where ``HF_TOKEN`` would, to the entries that say ``token_env:
HF_TOKEN`` and to the ``use_hf_login`` hf entries whose own variable is unset (the login
reads ``HF_TOKEN`` first), and overrides the variable (and the login) there. Nowhere else:
a third-party mirror, or one with its own ``token_env``, never gets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from modelget.datatypes import Mirror
from modelget.errors import UsageError
from modelget.http import same_origin
from modelget.settings import read_token

HF_TOKEN_ENV = "HF_TOKEN"


def mirror_token(mirror: Mirror) -> str | None:
    """The token for ``mirror``, or None. Never logged, never written anywhere."""
    if mirror.token_env:
        token = (
            mirror.hf_token
            if mirror.token_env == HF_TOKEN_ENV and mirror.hf_token
            else read_token(mirror.token_env)
        )
        if token:
            return token
    if mirror.use_hf_login and mirror.kind == "hf":
        if mirror.hf_token:  # what get_token() would read first: HF_TOKEN
            return mirror.hf_token
        from huggingface_hub import get_token

        # get_token() also reads HF_TOKEN; for a use_hf_login entry that is the same intent.
        return get_token()
    return None


def takes_hf_token(mirror: Mirror) -> bool:
    """Whether ``mirror`` would read ``HF_TOKEN`` (so ``--token`` stands in for it there)."""
    return mirror.token_env == HF_TOKEN_ENV or (mirror.use_hf_login and mirror.kind == "hf")


def check_token(token: str | None) -> str | None:
    """``--token``'s value, stripped (None: not given); a usage error, which never repeats
    it, when it is blank or holds a space or a control character (it would not fit in a
    header, and is most likely two arguments run together)."""
    if token is None:
        return None
    token = token.strip()
    if not token or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        raise UsageError(
            "--token is empty or holds a space or a control character (value not shown)",
            hint="pass the token alone (--token hf_...), or set HF_TOKEN",
        )
    return token


def with_token(mirrors: Sequence[Mirror], token: str | None) -> list[Mirror]:
    """``mirrors``, those that take ``HF_TOKEN`` (:func:`takes_hf_token`) with ``token`` in
    its place; the others as they are (None: all as they are)."""
    token = check_token(token)
    if token is None:
        return list(mirrors)
    return [replace(m, hf_token=token) if takes_hf_token(m) else m for m in mirrors]


def same_host(url: str, mirror: Mirror) -> bool:
    """Whether ``url`` is on the mirror endpoint's own origin (scheme, host and port; the
    one rule of :func:`modelget.http.same_origin`)."""
    return same_origin(url, mirror.endpoint)
