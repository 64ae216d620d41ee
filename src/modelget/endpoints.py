"""Mirrors from outside a catalogue file, and which mirrors a command uses.

- The hub clients' own variables: ``HF_ENDPOINT`` (huggingface_hub), ``MODELSCOPE_ENDPOINT`` and
  the older ``MODELSCOPE_DOMAIN`` (the ModelScope client). When no catalogue file is in force
  (neither ``--mirrors``, ``$MODELGET_MIRRORS`` nor a user ``mirrors.yaml``: the bundled
  catalogue), each one set becomes a mirror, ``hf-endpoint`` or ``modelscope-endpoint``, that
  takes the place of the bundled mirrors of its kind, as the client itself would use that
  endpoint instead of its default. A catalogue file wins over them: it is a deliberate list,
  while these variables are often set once in a profile for other tools.
- ``--endpoint [KIND=]URL`` (repeatable): ad-hoc mirrors for one command, instead of the
  catalogue (KIND ``hf`` unless given, or ``modelscope`` for a ModelScope host); no token.
- ``--only NAME`` (repeatable): only these mirrors of the ones in force (even a disabled one).

Every mirror made here is checked by the catalogue's own table of fields
(:func:`~modelget.catalogue.mirror_from_fields`): the same URL rules, and no value that may
hold a credential is ever shown. docs/mirrors.md, "Endpoints from the environment and the
command line", is the user's description.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import urlsplit

from modelget import settings
from modelget.catalogue import (
    builtin_catalogue,
    catalogue_path_and_origin,
    load_catalogue,
    mirror_from_fields,
)
from modelget.datatypes import MIRROR_KINDS, Catalogue, Mirror
from modelget.errors import ConfigError, UsageError

__all__ = [
    "ENDPOINT_SOURCE",
    "HF_ENDPOINT_MIRROR",
    "MODELSCOPE_ENDPOINT_MIRROR",
    "MirrorsArg",
    "Selection",
    "adhoc_mirrors",
    "catalogue_in_force",
    "env_mirrors",
    "only",
    "select",
]

MirrorsArg = str | os.PathLike[str] | Catalogue | None
"""What the API's ``mirrors=`` takes: a catalogue file, a :class:`Catalogue` (e.g. from
:func:`select`), or None (the catalogue in force, see :func:`select`)."""

HF_ENDPOINT_MIRROR = "hf-endpoint"
MODELSCOPE_ENDPOINT_MIRROR = "modelscope-endpoint"
ENDPOINT_SOURCE = "--endpoint"
""":attr:`Mirror.source` of an ``--endpoint`` mirror (and the Catalogue's only source)."""

_HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co"})
_MODELSCOPE_HOSTS = frozenset(
    {"modelscope.cn", "www.modelscope.cn", "modelscope.ai", "www.modelscope.ai"}
)
_KIND_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)=(.*)", re.DOTALL)
_ENDPOINT_VARIABLES = ("HF_ENDPOINT", "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN")


class Selection(NamedTuple):
    """The mirrors a command uses, where they came from, and what was set but not used."""

    catalogue: Catalogue
    origin: str
    """``--endpoint``, or the catalogue file's origin (``--mirrors``, ``MODELGET_MIRRORS``,
    ``user config``, ``builtin``)."""
    unused: tuple[str, ...] = ()
    """Endpoint variables that are set but not used (a catalogue file or --endpoint wins)."""


def select(
    path: str | os.PathLike[str] | None = None,
    *,
    endpoints: Sequence[str] = (),
    only_names: Sequence[str] = (),
) -> Selection:
    """The mirrors in force: the ``--endpoint`` mirrors if any, else the catalogue file
    (``path`` is ``--mirrors``), else the bundled catalogue with the endpoint variables'
    mirrors in place of the bundled ones of their kind; then ``--only``. Raises
    :class:`ConfigError` or :class:`UsageError` (both exit code 2)."""
    set_vars = tuple(name for name in _ENDPOINT_VARIABLES if _env(name))
    if endpoints:
        catalogue = Catalogue(adhoc_mirrors(endpoints), 1, (ENDPOINT_SOURCE,))
        selection = Selection(catalogue, ENDPOINT_SOURCE, set_vars)
    else:
        location = catalogue_path_and_origin(path)
        if location.path is None:
            catalogue = with_env_mirrors(builtin_catalogue())
            selection = Selection(catalogue, location.origin)
        else:
            selection = Selection(load_catalogue(path), location.origin, set_vars)
    if only_names:
        selection = selection._replace(catalogue=only(selection.catalogue, only_names))
    return selection


def catalogue_in_force(mirrors: MirrorsArg = None) -> Catalogue:
    """``mirrors`` itself when it is a :class:`Catalogue`, else :func:`select`'s catalogue for
    the file it names (None: the catalogue in force)."""
    if isinstance(mirrors, Catalogue):
        return mirrors
    return select(mirrors).catalogue


# --------------------------------------------------------------------------------------------
# The hub clients' variables


def _env(name: str) -> str | None:
    value = settings.env(name)
    return value.strip() if value and value.strip() else None


def env_mirrors() -> tuple[Mirror, ...]:
    """The mirrors the endpoint variables make (none set: none), each checked as a catalogue
    entry would be. Read as the clients read them: ``HF_ENDPOINT`` is a URL (huggingface_hub
    strips a trailing ``/`` and adds no scheme: one without is refused here, where the client
    would fail on every request); ``MODELSCOPE_ENDPOINT`` wins over ``MODELSCOPE_DOMAIN``, and
    either gets ``https://`` when it has no scheme (as modelscope-hub's
    ``HubConfig.normalize_endpoint``)."""
    made: list[Mirror] = []
    hf = _env("HF_ENDPOINT")
    if hf is not None:
        made.append(_env_mirror("HF_ENDPOINT", HF_ENDPOINT_MIRROR, "hf", hf, "HF_TOKEN"))
    for variable in ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"):
        value = _env(variable)
        if value is not None:
            if not value.lower().startswith(("http://", "https://")):
                value = "https://" + value
            mirror = _env_mirror(
                variable, MODELSCOPE_ENDPOINT_MIRROR, "modelscope", value, "MODELSCOPE_API_TOKEN"
            )
            made.append(mirror)
            break
    return tuple(made)


def _env_mirror(variable: str, name: str, kind: str, url: str, token_env: str) -> Mirror:
    example = "https://hf-mirror.com" if kind == "hf" else "https://www.modelscope.ai"
    fields: dict[str, object] = {"name": name, "kind": kind, "endpoint": url}
    fields["token_env"] = token_env
    if kind == "hf":
        # The huggingface_hub login was made for huggingface.co: only there does it go along.
        fields["use_hf_login"] = _host(url) in _HF_HOSTS
    hint = (
        f"set {variable} to the base URL of the {'Hub' if kind == 'hf' else 'ModelScope API'} "
        f"(e.g. {example}), or unset it; a token goes in {token_env}, never in the URL"
    )
    return mirror_from_fields(fields, source=variable, where=variable, hint=hint)


def with_env_mirrors(base: Catalogue) -> Catalogue:
    """``base`` with each endpoint variable's mirror in place of ``base``'s mirrors of its
    kind: at the first one's position, with its weight, connection cap and id_map (ModelScope's
    ids, e.g. ``LLM-Research/*``), and the variable's endpoint and token."""
    made = env_mirrors()
    if not made:
        return base
    mirrors = list(base.mirrors)
    for mirror in made:
        same_kind = [i for i, m in enumerate(mirrors) if m.kind == mirror.kind]
        if same_kind:
            first = mirrors[same_kind[0]]
            mirror = dataclasses.replace(
                mirror,
                weight=first.weight,
                max_connections=first.max_connections,
                id_map=first.id_map,
            )
            at = same_kind[0]
            mirrors = [m for m in mirrors if m.kind != mirror.kind]
            mirrors.insert(at, mirror)
        else:
            mirrors.append(mirror)
    sources = (*base.sources, *(m.source for m in made))
    return Catalogue(tuple(mirrors), base.version, sources)


# --------------------------------------------------------------------------------------------
# The command line


def adhoc_mirrors(specs: Sequence[str]) -> tuple[Mirror, ...]:
    """``--endpoint [KIND=]URL`` values as mirrors, in order: KIND ``hf``, ``modelscope`` or
    ``cdn`` (default ``hf``, or ``modelscope`` for a modelscope.cn/.ai host); each named after
    its host (``-PORT`` added when the URL has one, ``-2``, ``-3``... when taken); no token; a
    ModelScope one gets the bundled ModelScope entry's id_map. A URL given twice counts once.
    Raises :class:`UsageError`."""
    made: list[Mirror] = []
    for spec in specs:
        kind, url = _kind_and_url(spec)
        names = {m.name for m in made}
        fields: dict[str, object] = {"name": _free_name(_name_for(url), names), "kind": kind}
        fields["endpoint"] = url
        try:
            mirror = mirror_from_fields(
                fields,
                source=ENDPOINT_SOURCE,
                where=ENDPOINT_SOURCE,
                hint="write --endpoint [KIND=]URL, e.g. --endpoint https://hf-mirror.com or "
                "--endpoint modelscope=https://www.modelscope.ai (KIND: "
                + ", ".join(MIRROR_KINDS)
                + "); a mirror that needs a token goes in mirrors.yaml with token_env",
            )
        except ConfigError as exc:
            raise UsageError(exc.message, hint=exc.hint) from None
        if any(m.endpoint == mirror.endpoint and m.kind == mirror.kind for m in made):
            continue
        if mirror.kind == "modelscope":
            mirror = dataclasses.replace(mirror, id_map=_bundled_modelscope_id_map())
        made.append(mirror)
    return tuple(made)


def _kind_and_url(spec: str) -> tuple[str, str]:
    text = spec.strip()
    match = _KIND_PREFIX.fullmatch(text)
    if match is not None:
        return match.group(1), match.group(2).strip()
    return ("modelscope" if _host(text) in _MODELSCOPE_HOSTS else "hf"), text


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _name_for(url: str) -> str:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "endpoint"
    stem = host + (f"-{port}" if port is not None else "")
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    return name or "endpoint"


def _free_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _bundled_modelscope_id_map() -> Mapping[str, str]:
    for mirror in builtin_catalogue().mirrors:
        if mirror.kind == "modelscope":
            return mirror.id_map
    return MappingProxyType({})


def only(catalogue: Catalogue, names: Sequence[str]) -> Catalogue:
    """The mirrors of ``catalogue`` named by ``--only``, in catalogue order, enabled even if
    the catalogue disables them (naming one is asking for it). An unknown name is a
    :class:`UsageError` that lists the names there are."""
    known = [m.name for m in catalogue.mirrors]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            guess = f"did you mean `{close[0]}`? " if close else ""
            raise UsageError(
                f"--only {name!r}: no mirror of that name in {' + '.join(catalogue.sources)}",
                hint=f"{guess}the mirrors are: {', '.join(known)} (see `modelget mirrors`)",
            )
    wanted = set(names)
    chosen = tuple(
        dataclasses.replace(m, enabled=True) if not m.enabled else m
        for m in catalogue.mirrors
        if m.name in wanted
    )
    return dataclasses.replace(catalogue, mirrors=chosen)
