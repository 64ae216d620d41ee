"""What a scene returns (its set-up, tables and headline numbers): the records every scene
module and the report share, below them all."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.stats import Target

ENGINES = ("aria2", "httpx")


@dataclass(frozen=True)
class Headline:
    scene: str
    metric: str
    value: float
    shown: str
    target: Target | None = None
    note: str = ""
    target_text: str = ""
    """How the target is shown, when ``target.text()`` would not say it well."""


@dataclass
class SceneResult:
    id: str
    title: str
    setup: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
