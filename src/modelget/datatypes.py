"""Plain, frozen records shared by every stage. No I/O; imports nothing from modelget."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

MirrorKind = Literal["hf", "modelscope", "cdn"]
MIRROR_KINDS: tuple[MirrorKind, ...] = ("hf", "modelscope", "cdn")

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Mirror:
    """One entry of the catalogue: a place that serves model files over one protocol.

    ``token_env`` names the environment variable that holds this mirror's token; the token is
    sent to ``host`` (the endpoint's host) and to no other host. ``use_hf_login`` additionally
    lets the huggingface_hub login (``$HF_HOME/token``) stand in when that variable is unset;
    the bundled catalogue sets it only for huggingface.co.
    """

    name: str
    kind: MirrorKind
    endpoint: str
    token_env: str | None = None
    use_hf_login: bool = False
    enabled: bool = True
    weight: float = 1.0
    max_connections: int = 8
    id_map: Mapping[str, str] = field(default=_EMPTY)
    source: str = "<builtin>"
    line: int | None = None

    @property
    def host(self) -> str:
        """The host (and port, if any) that may receive this mirror's token."""
        return urlsplit(self.endpoint).netloc.lower()

    def map_repo_id(self, repo_id: str) -> str:
        """The id of ``repo_id`` on this mirror.

        ``id_map`` keys are exact ids or glob patterns over the whole id (exact ids win, then
        patterns in file order); a value ``ORG/*`` keeps the name and swaps the organisation.
        """
        if repo_id in self.id_map:
            return self.id_map[repo_id]
        for pattern, target in self.id_map.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(repo_id, pattern):
                if target.endswith("/*"):
                    return target[:-2] + "/" + repo_id.rsplit("/", 1)[-1]
                return target
        return repo_id


@dataclass(frozen=True)
class Catalogue:
    """The validated list of mirrors, in catalogue order (the tie-breaker for ranking)."""

    mirrors: tuple[Mirror, ...]
    version: int
    sources: tuple[str, ...]

    @property
    def enabled(self) -> tuple[Mirror, ...]:
        return tuple(m for m in self.mirrors if m.enabled)

    def get(self, name: str) -> Mirror:
        for m in self.mirrors:
            if m.name == name:
                return m
        raise KeyError(name)
