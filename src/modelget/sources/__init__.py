"""Sources: one adapter per mirror kind behind one small protocol.

A source turns (mirror, repo id, revision) into a ``Manifest`` and gives the URL of each file
on that mirror. Adapters map their library's errors (huggingface_hub, modelscope_hub, httpx)
to ``modelget.errors`` where they happen. They never import each other, ``api`` or ``cli``.
"""

from __future__ import annotations

from typing import Protocol

from modelget.datatypes import FileEntry, Manifest, Mirror, MirrorKind, RepoType


class Source(Protocol):
    kind: MirrorKind

    def resolve(
        self,
        mirror: Mirror,
        repo_id: str,
        revision: str | None,
        *,
        timeout: float,
        repo_type: RepoType = "model",
    ) -> Manifest:
        """Pin ``revision`` (None: the mirror's default branch) to a commit and list files.
        A mirror kind that serves no repo of ``repo_type`` raises ``ModelNotFoundError``: the
        mirror lacks the repo (it is left out, as one that lacks a model)."""
        ...

    def file_url(self, mirror: Mirror, manifest: Manifest, entry: FileEntry) -> str:
        """The URL that serves ``entry``'s bytes on ``mirror`` (Range-capable)."""
        ...

    def ping_url(self, mirror: Mirror) -> str:
        """A cheap URL for a latency probe when no repo id is given."""
        ...


def get_source(kind: MirrorKind) -> Source:
    """The adapter for a catalogue ``kind`` (imported lazily: each pulls in its client)."""
    if kind == "hf":
        from modelget.sources.hf import HfSource

        return HfSource()
    if kind == "modelscope":
        from modelget.sources.modelscope import ModelScopeSource

        return ModelScopeSource()
    from modelget.sources.cdn import CdnSource

    return CdnSource()
