"""Which token (if any) a mirror gets. Tokens are attached per mirror entry, never globally.

The rule: a mirror receives a token only if its catalogue entry names one (``token_env``),
or for ``use_hf_login`` entries, the huggingface_hub login file. The token is then sent only
to the mirror endpoint's own host; adapters drop it on redirects to any other host.
"""

from __future__ import annotations

from modelget.datatypes import Mirror
from modelget.http import same_origin
from modelget.settings import read_token


def mirror_token(mirror: Mirror) -> str | None:
    """The token for ``mirror``, or None. Never logged, never written anywhere."""
    if mirror.token_env:
        token = read_token(mirror.token_env)
        if token:
            return token
    if mirror.use_hf_login and mirror.kind == "hf":
        from huggingface_hub import get_token

        # get_token() also reads HF_TOKEN; for a use_hf_login entry that is the same intent.
        return get_token()
    return None


def same_host(url: str, mirror: Mirror) -> bool:
    """Whether ``url`` is on the mirror endpoint's own origin (scheme, host and port; the
    one rule of :func:`modelget.http.same_origin`)."""
    return same_origin(url, mirror.endpoint)
