"""Load and validate the mirror catalogue (``mirrors.yaml``). Format reference: docs/mirrors.md.

Which file is used: ``--mirrors FILE`` > ``$MODELGET_MIRRORS`` > ``<config dir>/mirrors.yaml``
(when it exists) > the bundled ``modelget/mirrors.yaml``. A user file replaces the bundled
catalogue, or extends it when it says ``extends: builtin``.

The YAML is composed into a node tree (never loaded blindly) so that every error can name the
file, the 1-based line and the field (``mirrors[2].endpoint``) it is about. Bad input only ever
raises :class:`~modelget.errors.ConfigError`; secrets found where they do not belong are never
repeated in an error message.

What a field may hold is declared once, as a row of a schema table (``_MIRROR``, and
``_VERSION``/``_EXTENDS`` for the document): its types, its rules, each with the message and
hint it gives, whether it is required, whether its value may be a secret (then no message
shows it), how it is converted. ``_Parser`` walks the node tree and checks each value against
its row, so a line number comes straight from the value's node. To add a mirror field, add a
row, the attribute (with its default) on :class:`~modelget.datatypes.Mirror` and a line in the
field table of docs/mirrors.md::

    _Field("timeout", (int, float), "timeout must be a number of seconds, {got}",
           "e.g. `timeout: 30`", rules=(_Rule(lambda v: v > 0, "timeout must be > 0, {got}"),))

A validation library was measured and not used: pydantic takes ~45 ms to import (msgspec is not
installed), ``modelget --help`` takes ~90 ms in all and imports this module (``import
modelget`` does), and its errors would still have to be mapped back to nodes for line numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import date
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modelget import settings
from modelget.datatypes import MIRROR_KINDS, Catalogue, Mirror, MirrorKind
from modelget.errors import ConfigError

__all__ = [
    "BUILTIN_SOURCE",
    "MIRROR_FIELDS",
    "SUPPORTED_VERSIONS",
    "CatalogueLocation",
    "CatalogueOrigin",
    "builtin_catalogue",
    "builtin_text",
    "catalogue_path_and_origin",
    "load_catalogue",
    "mirror_from_fields",
    "parse_catalogue",
]

BUILTIN_SOURCE = "<builtin>"
"""``Mirror.source`` / ``Catalogue.sources`` entry of the bundled catalogue."""

SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
TOP_LEVEL_KEYS: tuple[str, ...] = ("version", "extends", "mirrors")
MAX_CONNECTIONS_RANGE: tuple[int, int] = (1, 64)
MAX_CATALOGUE_BYTES = 1 << 20
"""A catalogue is a few KiB; anything over 1 MiB is some other file named by mistake."""

CatalogueOrigin = Literal["--mirrors", "MODELGET_MIRRORS", "user config", "builtin"]

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?", re.ASCII)
_ORG_RE = re.compile(r"[A-Za-z0-9][\w.-]*", re.ASCII)
_ID_PATTERN_RE = re.compile(r"[\w.*?\[\]!-]+(?:/[\w.*?\[\]!-]+)?", re.ASCII)
_GLOB_CHARS = "*?["
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Words that make a key mean "a credential is written here" (``token``, ``hf_token``,
# ``api-key``, ...). Matched in the lower-cased key with "-" read as "_"; a key that mentions
# "env" (``token_env`` or a misspelling of it) names a variable instead.
_SECRET_KEY_WORDS = (
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "authorization",
    "bearer",
    "credential",
)
_TOKEN_PREFIXES = ("hf_", "ms-", "sk-", "ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "xox")
_KIND_ALIASES: Mapping[str, MirrorKind] = MappingProxyType(
    {
        "huggingface": "hf",
        "hugging-face": "hf",
        "hugging_face": "hf",
        "hf-mirror": "hf",
        "hub": "hf",
        "ms": "modelscope",
        "model-scope": "modelscope",
        "static": "cdn",
        "http": "cdn",
        "https": "cdn",
        "nginx": "cdn",
        "s3": "cdn",
    }
)
_KIND_HELP = (
    "hf = a Hugging Face Hub API (huggingface.co or a mirror of it), "
    "modelscope = the ModelScope API, cdn = a static file tree served over HTTP"
)
_FORBIDDEN_KEY_MESSAGE = (
    "tokens are never written in mirrors.yaml; put it in an environment variable and name it "
    "with token_env"
)


# --------------------------------------------------------------------------------------------
# Which file


class CatalogueLocation(NamedTuple):
    """The catalogue file :func:`load_catalogue` would read, and why it was chosen.

    ``path`` is None for the bundled catalogue (``origin == "builtin"``).
    """

    path: Path | None
    origin: CatalogueOrigin

    @property
    def display(self) -> str:
        """The path as shown to a user: the file, or ``<builtin>``."""
        return BUILTIN_SOURCE if self.path is None else str(self.path)


def catalogue_path_and_origin(path: str | os.PathLike[str] | None = None) -> CatalogueLocation:
    """Which catalogue file would be used, and why (no file is read).

    ``path`` is the ``--mirrors`` argument. The order is ``--mirrors`` > ``$MODELGET_MIRRORS`` >
    ``<config dir>/mirrors.yaml`` when it exists > the bundled catalogue.
    """
    if path is not None:
        given = os.fspath(path)
        if not given.strip():
            raise ConfigError(
                "--mirrors was given an empty path",
                field="--mirrors",
                hint="pass the path of a mirrors.yaml, or leave --mirrors out",
            )
        return CatalogueLocation(_absolute(given), "--mirrors")
    from_env = settings.env("MODELGET_MIRRORS")
    if from_env is not None:
        return CatalogueLocation(_absolute(from_env), "MODELGET_MIRRORS")
    user = _user_catalogue()
    if user is not None:
        return CatalogueLocation(user, "user config")
    return CatalogueLocation(None, "builtin")


def _absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _user_catalogue() -> Path | None:
    try:
        candidate = _absolute(str(settings.config_dir() / "mirrors.yaml"))
    except (RuntimeError, KeyError, OSError):  # no home directory to derive it from
        return None
    try:
        present = candidate.exists() or candidate.is_symlink()
    except (OSError, ValueError):
        present = True  # let the read report what is wrong with it
    return candidate if present else None


# --------------------------------------------------------------------------------------------
# Loading


def load_catalogue(path: str | os.PathLike[str] | None = None) -> Catalogue:
    """The validated catalogue: ``path`` (``--mirrors``), else ``$MODELGET_MIRRORS``, else the
    user's ``mirrors.yaml``, else the bundled one (docs/mirrors.md).

    Args:
        path: a catalogue file (default: the first of the others that exists).

    Raises:
        ConfigError: any problem, with the file, line and field.
    """
    location = catalogue_path_and_origin(path)
    if location.path is None:
        return builtin_catalogue()
    text = _read_text(location.path, location.origin)
    return parse_catalogue(text, str(location.path))


def builtin_text() -> str:
    """The text of the bundled ``modelget/mirrors.yaml``."""
    try:
        return (resources.files("modelget") / "mirrors.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"the bundled mirrors.yaml cannot be read ({exc.__class__.__name__})",
            path=BUILTIN_SOURCE,
            hint="reinstall modelget",
        ) from exc


@functools.lru_cache(maxsize=1)
def builtin_catalogue() -> Catalogue:
    """The bundled catalogue, parsed once (the records are immutable)."""
    return parse_catalogue(builtin_text(), BUILTIN_SOURCE)


def _read_text(path: Path, origin: CatalogueOrigin) -> str:
    shown = str(path)
    described = {
        "--mirrors": f"--mirrors names {shown}",
        "MODELGET_MIRRORS": f"MODELGET_MIRRORS points to {shown}",
        "user config": f"the user catalogue {shown}",
        "builtin": f"the bundled catalogue {shown}",
    }[origin]
    hint = {
        "--mirrors": "check the path given to --mirrors",
        "MODELGET_MIRRORS": (
            "fix MODELGET_MIRRORS, or unset it to use the user or bundled catalogue"
        ),
        "user config": f"fix or remove {shown}; without it the bundled catalogue is used",
        "builtin": "reinstall modelget",
    }[origin]

    def fail(what: str, exc: BaseException | None = None) -> ConfigError:
        error = ConfigError(f"{described}, which {what}", path=shown, hint=hint)
        if exc is not None:
            error.__cause__ = exc
        return error

    try:
        if path.is_dir():
            raise fail("is a directory, not a file")
        size = path.stat().st_size
        if size > MAX_CATALOGUE_BYTES:
            raise fail(f"is {size} bytes: too big to be a mirrors.yaml (at most 1 MiB)")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise fail("does not exist", exc) from exc
    except PermissionError as exc:
        raise fail("cannot be read (permission denied)", exc) from exc
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc.__class__.__name__})", exc) from exc
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise fail("is not a valid path", exc) from exc
    if len(data) > MAX_CATALOGUE_BYTES:
        raise fail("is too big to be a mirrors.yaml (at most 1 MiB)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded)",
            path=shown,
            line=line,
            hint="save the file as UTF-8; mirrors.yaml is a text file",
        ) from exc


# --------------------------------------------------------------------------------------------
# Parsing


def parse_catalogue(text: str, source: str, *, base: Catalogue | None = None) -> Catalogue:
    """Parse and validate catalogue ``text``; ``source`` names it in errors and records.

    A document with ``extends: builtin`` is applied on top of ``base`` (default: the bundled
    catalogue). Raises :class:`ConfigError` (and nothing else) for any invalid input.
    """
    root = _compose(text, source)
    return _Parser(source).catalogue(root, base)


def _compose(text: str, source: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}, {exc.problem}"
        raise ConfigError(
            f"YAML syntax error: {problem}",
            path=source,
            line=mark.line + 1 if mark is not None else None,
            hint="fix the YAML syntax at this line (indent with spaces, quote values with ': ')",
        ) from exc
    except yaml.reader.ReaderError as exc:
        line = text[: max(exc.position, 0)].count("\n") + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise ConfigError(
            f"YAML syntax error: the control character {shown} is not allowed in a YAML file",
            path=source,
            line=line,
            hint="remove the control character (or save the file as plain UTF-8 text)",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"YAML syntax error ({exc.__class__.__name__})",
            path=source,
            hint="fix the YAML syntax",
        ) from exc
    except (ValueError, OverflowError) as exc:
        # PyYAML's scanner lets some escapes through to Python: "\U00110000" reaches chr()
        # and raises ValueError (found by the hypothesis fuzz test).
        raise ConfigError(
            f"YAML syntax error: {exc}",
            path=source,
            hint="fix the escape sequence in a double-quoted string (\\U takes 8 hex digits "
            "up to 0010FFFF)",
        ) from exc
    except RecursionError as exc:
        raise ConfigError(
            "the YAML is nested too deeply",
            path=source,
            hint="a catalogue is a mapping holding a list of flat mirror mappings",
        ) from exc


class _Composite:
    """Stands for a list or mapping where a scalar was expected (for type errors)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


_A_LIST = _Composite("a list")
_A_MAPPING = _Composite("a mapping")

_Entries = dict[str, tuple[Node, Node]]
"""Key -> (key node, value node) of one mapping, in file order."""


def _looks_like_token(value: str) -> bool:
    """Whether ``value`` looks like a credential rather than a name."""
    stripped = value.strip()
    lowered = stripped.lower()
    if lowered.startswith(("bearer ", "basic ", "token ")):
        return True
    if stripped.startswith(_TOKEN_PREFIXES):
        return True
    for segment in re.split(r"[^A-Za-z0-9]+", stripped):
        has_digit = any(c.isdigit() for c in segment)
        has_lower = any(c.islower() for c in segment)
        has_upper = any(c.isupper() for c in segment)
        if len(segment) >= 16 and has_digit and has_lower and has_upper:
            return True
        if len(segment) >= 24 and has_digit and (has_lower or has_upper):
            return True
    return False


def _show(value: str, limit: int = 60) -> str:
    """``value`` quoted for a message, or ``<redacted>`` when it may be a secret."""
    if _looks_like_token(value):
        return "<redacted>"
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _type_of(value: object) -> str:
    """What ``value`` is, without showing it."""
    if isinstance(value, _Composite):
        return value.what
    if value is None:
        return "nothing (null)"
    if value == "":
        return "an empty string"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    return f"a value of type {type(value).__name__}"  # none that YAML's safe constructor makes


def _got(value: object) -> str:
    if isinstance(value, bool):
        return f"got the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        digits = str(value)
        return f"got the integer {digits if len(digits) <= 24 else digits[:21] + '...'}"
    if isinstance(value, float):
        return f"got the number {value!r}"
    if isinstance(value, str):
        return f"got the string {_show(value)}"
    return f"got {_type_of(value)}"


def _env_suggestion(name: str | None, kind: str | None, endpoint: str | None) -> str:
    try:
        host = urlsplit(endpoint).hostname if endpoint else None
    except ValueError:
        host = None
    if kind == "hf" and host == "huggingface.co":
        return "HF_TOKEN"
    if kind == "modelscope" and host in ("modelscope.cn", "www.modelscope.cn"):
        return "MODELSCOPE_API_TOKEN"
    stem = re.sub(r"[^A-Z0-9]+", "_", (name or "").upper()).strip("_")
    if not stem or stem[0].isdigit():
        stem = "MIRROR" + ("_" + stem if stem else "")
    return f"{stem}_TOKEN"


def _is_secret_key(key: str) -> bool:
    normal = key.strip().lower().replace("-", "_")
    if "env" in normal:
        return False
    return any(word in normal for word in _SECRET_KEY_WORDS)


def _closest(word: str, candidates: tuple[str, ...] | list[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


# --------------------------------------------------------------------------------------------
# The schema: what each field may hold, and what to say when it does not


class _Invalid(Exception):
    """``(message, hint)``: a value breaks a rule (the parser adds file, line and field)."""


_Hint = str | Callable[[Any], str]
"""A template (as for messages), or a function of the value that never echoes it."""


class _Rule(NamedTuple):
    """A constraint on a value of the field's type: ``test(value)`` is true when it holds, else
    ``message`` (None: the field's own) and ``hint`` (None: the field's) say what is wrong."""

    test: Callable[[Any], object]
    message: str | None = None
    hint: _Hint | None = None


_OF_ANOTHER_TYPE = (_Rule(lambda _: False),)


class _Field(NamedTuple):
    """One row of a schema: a key and what its value may be.

    The value must be a scalar of one of ``types`` (``int`` takes no boolean; with ``NoneType``
    a ``null`` is None), else ``message``; then each rule must hold; then ``convert`` makes it
    the record's value. ``read``, when given, reads the node instead (a structured value).
    Messages and hints are ``str.format`` templates over ``{name}`` (the key), ``{got}`` (what
    the value is: a string quoted, or ``<redacted>`` if it looks like a token; only its type
    when the field is ``secret``), ``{shown}`` (a string value alone, quoted or redacted),
    ``{value}`` (a number) and ``{suggestion}`` (a variable name for this mirror's token).
    """

    name: str
    types: tuple[type, ...]
    message: str
    hint: _Hint
    rules: tuple[_Rule, ...] = ()
    required: bool = False
    secret: bool = False
    convert: Callable[[Any], Any] | None = None
    read: Callable[[_Parser, Node, str], Any] | None = None

    def check(self, value: object, suggestion: str) -> Any:
        """``value`` converted, or :class:`_Invalid` for the first rule it breaks."""
        if value is None and type(None) in self.types:
            return None
        typed = isinstance(value, self.types) and (bool in self.types or type(value) is not bool)
        for rule in self.rules if typed else _OF_ANOTHER_TYPE:
            if rule.test(value):
                continue
            got = f"got {_type_of(value)} (value not shown)" if self.secret else _got(value)
            names = {"name": self.name, "suggestion": suggestion, "got": got, "shown": got}
            if isinstance(value, str) and not self.secret:
                names["shown"] = _show(value)
            message = (rule.message or self.message).format_map({"value": value, **names})
            hint = self.hint if rule.hint is None else rule.hint
            raise _Invalid(
                message, hint.format_map(names) if isinstance(hint, str) else hint(value)
            )
        return value if self.convert is None else self.convert(value)


def _float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer too big for a float
        return math.inf


def _name_example(value: str) -> str:
    fixed = re.sub(r"[^a-z0-9._-]+", "-", value.lower()).strip("-._")
    return f"e.g. `name: {fixed if fixed and _NAME_RE.fullmatch(fixed) else 'corp-hf'}`"


def _kind_hint(value: object) -> str:
    word = value.strip().lower() if isinstance(value, str) else ""
    guess = word and (_KIND_ALIASES.get(word) or _closest(word, MIRROR_KINDS))
    return (f"did you mean `kind: {guess}`? " if guess else "") + _KIND_HELP


def _url_parses(value: str) -> bool:
    try:
        _ = urlsplit(value).port  # a bad port or IPv6 literal raises ValueError
    except ValueError:
        return False
    return True


def _no_credentials(value: str) -> bool:
    """No ``user[:password]@`` before the host. Checked first, on the raw text (never raises),
    so that no later message about the same URL (an unparsable port, a missing scheme) can
    show a password."""
    authority = value.split("://", 1)[1] if "://" in value else value
    return "@" not in re.split(r"[/?#]", authority, maxsplit=1)[0]


def _base_url(value: str) -> str:
    """The scheme lowercased, trailing slashes dropped; the rest as written."""
    scheme = urlsplit(value).scheme.lower()
    return scheme + value[len(scheme) :].rstrip("/")


def _id_map(parser: _Parser, node: Node, field: str) -> Mapping[str, str]:
    """``id_map``: repo ids or glob patterns over them -> this mirror's ids; null is empty."""
    if not isinstance(node, MappingNode):
        value = parser.scalar(node, field)
        if value is None:
            return MappingProxyType({})
        raise _Invalid(f"id_map must be a mapping, {_got(value)}", _ID_MAP_HINT)
    result: dict[str, str] = {}
    for key, (key_node, value_node) in parser.mapping(node, field, indexed=True).items():
        where = f"{field}[{key!r}]"
        is_pattern = any(c in key for c in _GLOB_CHARS)
        if not (_ID_PATTERN_RE if is_pattern else _REPO_ID_RE).fullmatch(key):
            message = f"{_show(key)} is not a repo id (`org/name`) or a glob pattern over one"
            raise parser.error(key_node, where, message, _ID_MAP_HINT)
        target = parser.scalar(value_node, where)
        problem = _id_target_problem(key, is_pattern, target)
        if problem:
            raise parser.error(value_node, where, *problem)
        result[key] = str(target)
    return MappingProxyType(result)


def _id_target_problem(key: str, is_pattern: bool, target: object) -> tuple[str, str] | None:
    if not isinstance(target, str):
        message = f"the target of an id_map entry must be a repo id string, {_got(target)}"
        return message, _ID_MAP_HINT
    if not any(c in target for c in _GLOB_CHARS):
        if _REPO_ID_RE.fullmatch(target):
            return None
        return f"target {_show(target)} is not a repo id (`org/name`) or `ORG/*`", _ID_MAP_HINT
    org = target[:-2]
    if not (target.endswith("/*") and _ORG_RE.fullmatch(org)):
        message = (
            f"target {_show(target)}: a `*` in a target is only allowed as `ORG/*` (the same "
            "name under ORG)"
        )
        return message, _ID_MAP_HINT
    if is_pattern:
        return None
    return (
        f"{_show(key)} is an exact id, so its target must be an exact id, not {_show(target)}",
        f"write the full id, e.g. `{_show(key)}: {org}/{key.rsplit('/', 1)[-1]}`",
    )


_ID_MAP_HINT = (
    'id_map maps repo ids to this mirror\'s ids, e.g. `"meta-llama/*": "LLM-Research/*"` or '
    '`"microsoft/phi-4": "LLM-Research/phi-4"`'
)
_URL_EXAMPLE = "e.g. `endpoint: https://hf.example.com`"
_NO_QUERY = "give the base URL only; never put a token in a URL, use token_env"
_BOOLEAN = "{name} must be true or false, {got}"
_BOOLEAN_HINT = "write `{name}: true` or `{name}: false` (no quotes)"
_LOW, _HIGH = MAX_CONNECTIONS_RANGE

_MIRROR: tuple[_Field, ...] = (
    _Field(
        "name",
        (str,),
        "name must be a string, {got}",
        "e.g. `name: corp-hf`",
        rules=(
            _Rule(
                _NAME_RE.fullmatch,
                "name must be lowercase letters, digits, '.', '_' or '-', starting with a letter "
                "or digit; {got}",
                _name_example,
            ),
        ),
        required=True,
    ),
    _Field(
        "kind",
        (str,),
        f"kind must be one of {', '.join(MIRROR_KINDS)}; {{got}}",
        _kind_hint,
        rules=(_Rule(MIRROR_KINDS.__contains__),),
        required=True,
    ),
    _Field(
        "endpoint",
        (str,),
        "endpoint must be an http:// or https:// URL, {got}",
        _URL_EXAMPLE,
        rules=(
            _Rule(
                lambda v: not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v),
                "endpoint must not contain spaces or control characters",
                f"remove them ({_URL_EXAMPLE}); percent-encode a space in a path as %20",
            ),
            _Rule(
                _no_credentials,
                "endpoint must not contain credentials (`user:password@`); credentials in URLs "
                "are refused (the value is not shown)",
                "remove `user:password@` from the URL (rotate the password if the file was "
                "shared), put the token in an environment variable and name it with token_env",
            ),
            _Rule(_url_parses, "endpoint {shown} is not a valid URL"),
            _Rule(
                lambda v: urlsplit(v).scheme.lower() in ("http", "https") and urlsplit(v).netloc,
                "endpoint must be an absolute http:// or https:// URL, {got}",
            ),
            _Rule(lambda v: urlsplit(v).hostname, "endpoint has no host name"),
            _Rule(
                lambda v: "?" not in v,
                "endpoint must not have a query string (`?...`) (the value is not shown)",
                _NO_QUERY,
            ),
            _Rule(
                lambda v: "#" not in v,
                "endpoint must not have a fragment (`#...`) (the value is not shown)",
                _NO_QUERY,
            ),
        ),
        required=True,
        convert=_base_url,
    ),
    _Field(
        "token_env",
        (str, type(None)),
        "token_env must be the name of an environment variable that holds the token, {got}",
        "delete the value here (rotate the token if this file was shared), run "
        "`export {suggestion}=<your token>` and write `token_env: {suggestion}`",
        rules=(
            _Rule(bool),  # an empty string names no variable: the field's message
            _Rule(
                lambda v: not _looks_like_token(v),
                "this looks like a token (value redacted): a token must never be written inline "
                "in mirrors.yaml; token_env names the environment variable that holds it",
            ),
            _Rule(
                _ENV_NAME_RE.fullmatch,
                "token_env is not a valid environment variable name (letters, digits and _, not "
                "starting with a digit; value not shown); it names the variable that holds the "
                "token, and a token must never be written inline",
            ),
        ),
        secret=True,
    ),
    _Field("use_hf_login", (bool,), _BOOLEAN, _BOOLEAN_HINT),
    _Field("enabled", (bool,), _BOOLEAN, _BOOLEAN_HINT),
    _Field(
        "weight",
        (int, float),
        "weight must be a number > 0, {got}",
        "e.g. `weight: 2` to prefer this mirror, `weight: 0.5` to prefer others (default 1)",
        rules=(
            _Rule(lambda v: 0 < _float(v) < math.inf, "weight must be a finite number > 0, {got}"),
        ),
        convert=_float,
    ),
    _Field(
        "max_connections",
        (int,),
        "max_connections must be an integer, {got}",
        f"an integer from {_LOW} to {_HIGH} (default: none, the count adapts up to "
        "--connections), e.g. `max_connections: 8`",
        rules=(
            _Rule(
                lambda v: _LOW <= v <= _HIGH, f"{{name}} must be from {_LOW} to {_HIGH}, {{got}}"
            ),
        ),
    ),
    _Field("id_map", (), "", _ID_MAP_HINT, read=_id_map),
)
"""The fields of one mirror entry, as docs/mirrors.md lists them. A new field is a row here and
an attribute (with its default) of :class:`~modelget.datatypes.Mirror`."""

MIRROR_FIELDS: tuple[str, ...] = tuple(row.name for row in _MIRROR)
REQUIRED_FIELDS: tuple[str, ...] = tuple(row.name for row in _MIRROR if row.required)
_MIRROR_ROWS: Mapping[str, _Field] = MappingProxyType({row.name: row for row in _MIRROR})

_SUPPORTED = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
_VERSION = _Field(
    "version",
    (int,),
    f"version must be an integer ({_SUPPORTED}), {{got}}",
    "write `version: 1` (no quotes)",
    rules=(
        _Rule(
            SUPPORTED_VERSIONS.__contains__,
            f"unsupported catalogue version {{value}}; this modelget supports version {_SUPPORTED}",
            "write `version: 1`, or upgrade modelget if the file was written for a newer one",
        ),
    ),
    required=True,
)
_EXTENDS = _Field(
    "extends",
    (str,),
    "the only allowed value of extends is `builtin`, {got}",
    "write `extends: builtin` to start from the bundled mirrors, or remove the line to replace "
    "them",
    rules=(_Rule("builtin".__eq__),),
)
# `mirrors` holds _MIRROR entries; what it may be depends on extends: _Parser.mirror_list.


@dataclasses.dataclass
class _Spec:
    """One validated catalogue entry before it becomes a :class:`Mirror`."""

    node: Node
    where: str
    name: str
    values: dict[str, Any]
    """The fields given, other than ``name``, by key (the :class:`Mirror` attribute)."""
    nodes: dict[str, Node]

    @property
    def line(self) -> int:
        return _line(self.node) or 1


def _line(node: Node | None) -> int | None:
    if node is None or node.start_mark is None:
        return None
    return int(node.start_mark.line) + 1


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    # ---- helpers ----------------------------------------------------------------------------

    def error(
        self, node: Node | None, field: str | None, message: str, hint: str | None = None
    ) -> ConfigError:
        return ConfigError(message, path=self.source, line=_line(node), field=field, hint=hint)

    def scalar(self, node: Node, field: str) -> object:
        """The Python value of a scalar node, or a :class:`_Composite` for a list/mapping."""
        if isinstance(node, MappingNode):
            return _A_MAPPING
        if isinstance(node, SequenceNode):
            return _A_LIST
        try:
            return self._constructor.construct_object(node, deep=True)
        # PyYAML's constructors raise assorted exceptions (ValueError, KeyError, AttributeError,
        # ConstructorError, ...) for malformed explicitly tagged scalars such as `!!int abc`;
        # this is the boundary where all of them become a ConfigError.
        except Exception as exc:
            raise self.error(
                node,
                field,
                f"this value cannot be read as {_tag(node.tag)}",
                hint="remove the explicit `!!` tag, or quote the value",
            ) from exc

    def key(self, node: Node, where: str) -> str:
        value = self.scalar(node, where)
        if not isinstance(value, str):
            raise self.error(
                node,
                where or None,
                f"mapping keys must be strings, {_got(value)}",
                hint="quote the key",
            )
        return value

    def mapping(
        self,
        node: MappingNode,
        where: str,
        *,
        indexed: bool = False,
        _active: frozenset[int] = frozenset(),
    ) -> _Entries:
        """The entries of ``node`` in file order; duplicate keys are an error, ``<<`` merges
        are applied (explicit keys win). ``indexed``: name keys ``where['key']`` in errors,
        not ``where.key``."""
        active = _active | {id(node)}
        merged: _Entries = {}
        explicit: _Entries = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for part in self.merge_sources(value_node, where):
                    if id(part) in active:
                        raise self.error(
                            value_node,
                            where or None,
                            "recursive `<<` merge: a mapping merges itself",
                            hint="merge a separate anchored mapping, e.g. `<<: *defaults`",
                        )
                    entries = self.mapping(part, where, indexed=indexed, _active=active)
                    for key, entry in entries.items():
                        merged.setdefault(key, entry)
                continue
            key = self.key(key_node, where)
            if key in explicit:
                first = _line(explicit[key][0])
                raise self.error(
                    key_node,
                    f"{where}[{key!r}]" if indexed else _child(where, key),
                    f"duplicate key {_show(key)} (first at line {first}); YAML would silently "
                    "keep only the last one",
                    hint="remove one of the two",
                )
            explicit[key] = (key_node, value_node)
        result = merged
        for key, entry in explicit.items():
            result[key] = entry
        return result

    def merge_sources(self, node: Node, where: str) -> list[MappingNode]:
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(isinstance(n, MappingNode) for n in node.value):
            return list(node.value)
        raise self.error(
            node,
            where or None,
            "a `<<` merge takes a mapping (or a list of mappings)",
            hint="anchor a mapping (`- &defaults {kind: hf, max_connections: 8}`) and merge it "
            "with `<<: *defaults`",
        )

    def value(self, row: _Field, node: Node, where: str, suggestion: str = "") -> Any:
        """``node`` read as ``row`` says; a broken rule becomes a located ConfigError."""
        field = _child(where, row.name)
        try:
            if row.read is not None:
                return row.read(self, node, field)
            return row.check(self.scalar(node, field), suggestion)
        except _Invalid as exc:
            message, hint = exc.args  # raised below, outside the handler: no error's context
        raise self.error(node, field, message, hint)

    def reject_unknown(
        self,
        entries: _Entries,
        where: str,
        known: tuple[str, ...],
        what: str,
        tail: str,
        secret_hint: Callable[[str], str],
    ) -> None:
        """An error for the first key not in ``known``: a key that names a secret gets
        ``secret_hint(key)``, any other a "did you mean" and ``tail``."""
        for key, (key_node, _) in entries.items():
            if key in known:
                continue
            if _is_secret_key(key):
                raise self.error(
                    key_node, _child(where, key), _FORBIDDEN_KEY_MESSAGE, secret_hint(key)
                )
            close = _closest(key, known)
            raise self.error(
                key_node,
                _child(where, key),
                f"{what} {_show(key)}",
                hint=(f"did you mean `{close}`? " if close else "") + tail,
            )

    # ---- document ---------------------------------------------------------------------------

    def catalogue(self, root: Node | None, base: Catalogue | None) -> Catalogue:
        if root is None or (isinstance(root, ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
            raise self.error(
                None,
                None,
                "the catalogue is empty",
                hint="write `version: 1` and a `mirrors:` list (see docs/mirrors.md), or "
                "`version: 1` and `extends: builtin` to start from the bundled mirrors",
            )
        if not isinstance(root, MappingNode):
            raise self.error(
                root,
                None,
                "the catalogue must be a mapping with `version:` and `mirrors:` keys, "
                + _got(self.scalar(root, "")),
                hint="start the file with `version: 1` then `mirrors:` (see docs/mirrors.md)",
            )
        entries = self.mapping(root, "")
        if "version" not in entries:
            raise self.error(
                root,
                "version",
                "missing `version:`",
                hint="add `version: 1` at the top of the file",
            )
        version: int = self.value(_VERSION, entries["version"][1], "")
        self.reject_unknown(
            entries,
            "",
            TOP_LEVEL_KEYS,
            "unknown top-level key",
            "the top level takes only version, extends and mirrors",
            lambda _: (
                "e.g. `token_env: CORP_HF_TOKEN` in the mirror's entry, and "
                "`export CORP_HF_TOKEN=<your token>` in your shell"
            ),
        )
        if "extends" in entries:
            self.value(_EXTENDS, entries["extends"][1], "")
            if base is None:
                if self.source == BUILTIN_SOURCE:
                    raise self.error(
                        entries["extends"][0],
                        "extends",
                        "the bundled catalogue cannot extend itself",
                        hint="remove `extends:` from the bundled mirrors.yaml",
                    )
                base = builtin_catalogue()
            specs = self.mirror_list(root, entries, True, {m.name for m in base.mirrors})
            return self.extend(base, specs, version)
        specs = self.mirror_list(root, entries, False, set())
        mirrors = tuple(self.build(spec, None) for spec in specs)
        return Catalogue(mirrors=mirrors, version=version, sources=(self.source,))

    def mirror_list(
        self, root: MappingNode, entries: _Entries, extends: bool, base_names: set[str]
    ) -> list[_Spec]:
        hint_empty = (
            "list at least one mirror (name, kind, endpoint), or add `extends: builtin` to keep "
            "the bundled mirrors"
        )
        if "mirrors" not in entries:
            if extends:
                return []
            raise self.error(root, "mirrors", "missing `mirrors:`", hint=hint_empty)
        node = entries["mirrors"][1]
        if isinstance(node, SequenceNode):
            items: list[Node] = list(node.value)
        else:
            value = self.scalar(node, "mirrors")
            if value is not None:
                raise self.error(
                    node,
                    "mirrors",
                    f"mirrors must be a list of mirrors, {_got(value)}",
                    hint="write each mirror as a list item starting with `- name: ...`",
                )
            items = []
        if not items and not extends:
            raise self.error(
                node, "mirrors", "mirrors must list at least one mirror", hint=hint_empty
            )
        specs: list[_Spec] = []
        seen: dict[str, _Spec] = {}
        for index, item in enumerate(items):
            spec = self.mirror(item, f"mirrors[{index}]", extends, base_names)
            if spec.name in seen:
                first, again = _line(seen[spec.name].nodes["name"]), _line(spec.nodes["name"])
                where_ = (
                    f"lines {first} and {again}"
                    if first != again
                    else f"line {first}, listed twice through an alias"
                )
                raise self.error(
                    spec.nodes["name"],
                    f"{spec.where}.name",
                    f"duplicate mirror name {spec.name!r} ({where_})",
                    hint="mirror names must be unique: rename or delete one of them",
                )
            seen[spec.name] = spec
            specs.append(spec)
        return specs

    # ---- one mirror -------------------------------------------------------------------------

    def mirror(self, node: Node, where: str, extends: bool, base_names: set[str]) -> _Spec:
        if not isinstance(node, MappingNode):
            raise self.error(
                node,
                where,
                f"each mirror must be a mapping with name, kind and endpoint, "
                f"{_got(self.scalar(node, where))}",
                hint="e.g. `- name: my-mirror` / `  kind: hf` / `  endpoint: https://...`",
            )
        entries = self.mapping(node, where)
        suggestion = _env_suggestion(
            _plain_text(entries.get("name")),
            _plain_text(entries.get("kind")),
            _plain_text(entries.get("endpoint")),
        )
        self.reject_unknown(
            entries,
            where,
            MIRROR_FIELDS,
            "unknown mirror field",
            "known fields: " + ", ".join(MIRROR_FIELDS),
            lambda key: (
                f"delete `{key}` (rotate the token if this file was shared); then "
                f"write `token_env: {suggestion}` here and run `export {suggestion}=<your token>`"
            ),
        )
        if "name" not in entries:
            raise self.error(
                node,
                f"{where}.name",
                "missing required field `name`",
                hint="every mirror needs a unique `name` (e.g. `name: corp-hf`)",
            )
        nodes: dict[str, Node] = {"name": entries["name"][1]}
        name: str = self.value(_MIRROR_ROWS["name"], nodes["name"], where)
        values: dict[str, Any] = {}
        for key, (_, value_node) in entries.items():
            nodes[key] = value_node
            if key != "name":
                values[key] = self.value(_MIRROR_ROWS[key], value_node, where, suggestion)
        if not (extends and name in base_names):  # a new mirror, not an override
            for required in REQUIRED_FIELDS:
                if required not in entries:
                    raise self.error(
                        node,
                        f"{where}.{required}",
                        f"missing required field `{required}` in mirror {name!r}",
                        hint=self.missing_hint(name, extends, base_names),
                    )
        return _Spec(node=node, where=where, name=name, values=values, nodes=nodes)

    def missing_hint(self, name: str, extends: bool, base_names: set[str]) -> str:
        need = "a mirror needs name, kind (hf, modelscope or cdn) and endpoint (an https:// URL)"
        if not extends:
            return need
        close = _closest(name, sorted(base_names))
        guess = f"did you mean {close!r}? " if close else ""
        return (
            f"{guess}{name!r} is not a bundled mirror, so it is a new one and {need}; bundled "
            f"mirrors (which need only the fields you change): {', '.join(sorted(base_names))}"
        )

    # ---- records ----------------------------------------------------------------------------

    def build(self, spec: _Spec, inherited: Mirror | None) -> Mirror:
        if inherited is None:
            # mirror() made sure a new mirror has both
            start = Mirror(
                name=spec.name, kind=spec.values["kind"], endpoint=spec.values["endpoint"]
            )
        else:
            start = inherited
        mirror = dataclasses.replace(start, **spec.values, source=self.source, line=spec.line)
        if mirror.use_hf_login and mirror.kind != "hf":
            written = "use_hf_login" in spec.nodes
            node = spec.nodes.get("use_hf_login") or spec.nodes.get("kind") or spec.node
            raise self.error(
                node,
                f"{spec.where}.use_hf_login",
                f"use_hf_login is only allowed for kind hf (this mirror is kind {mirror.kind})",
                hint=(
                    "remove use_hf_login"
                    if written
                    else f"add `use_hf_login: false` (the bundled {spec.name!r} turns it on)"
                )
                + "; the huggingface_hub login is only ever offered to an hf mirror",
            )
        return mirror

    def extend(self, base: Catalogue, specs: list[_Spec], version: int) -> Catalogue:
        overrides = {spec.name: spec for spec in specs}
        mirrors = [
            self.build(overrides[m.name], m) if m.name in overrides else m for m in base.mirrors
        ]
        base_names = {m.name for m in base.mirrors}
        mirrors.extend(self.build(spec, None) for spec in specs if spec.name not in base_names)
        return Catalogue(
            mirrors=tuple(mirrors),
            version=version,
            sources=(*base.sources, self.source),
        )


def _plain_text(entry: tuple[Node, Node] | None) -> str | None:
    """The text of a plain string scalar (for hints only; no validation, no construction)."""
    if entry is None:
        return None
    node = entry[1]
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return str(node.value)
    return None


def _tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix) :] if tag.startswith(prefix) else tag


def _child(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# --------------------------------------------------------------------------------------------
# Mirrors given outside a file


def mirror_from_fields(
    fields: Mapping[str, object], *, source: str, where: str, hint: str | None = None
) -> Mirror:
    """A :class:`Mirror` from field values given outside a catalogue file (an environment
    variable, a command-line option), checked by the same rows as a file's entries.

    ``source`` becomes :attr:`Mirror.source` (``HF_ENDPOINT``, ``--endpoint``); ``where`` names
    what the user wrote in the error (``HF_ENDPOINT``, ``--endpoint hf=...``: never the value);
    ``hint``, when given, replaces the row's hint (which speaks of mirrors.yaml). Raises
    :class:`ConfigError`. Structured fields (``id_map``) cannot be given this way.
    """
    suggestion = _env_suggestion(
        _str_or_none(fields.get("name")),
        _str_or_none(fields.get("kind")),
        _str_or_none(fields.get("endpoint")),
    )
    values: dict[str, Any] = {}
    for key, value in fields.items():
        row = _MIRROR_ROWS[key]  # a KeyError here is a caller's bug, not the user's input
        if row.read is not None:
            raise ValueError(f"{key} cannot be given outside a catalogue file")
        try:
            values[key] = row.check(value, suggestion)
        except _Invalid as exc:
            message, row_hint = exc.args
            problem = ConfigError(message, field=where, hint=hint or row_hint)
        else:
            continue
        raise problem  # outside the handler: no error's context to leak a value through
    missing = [name for name in REQUIRED_FIELDS if name not in values]
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    if values.get("use_hf_login") and values["kind"] != "hf":
        raise ValueError("use_hf_login is only allowed for kind hf")
    return Mirror(**values, source=source, line=None)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
