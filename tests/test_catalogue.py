"""modelget.catalogue: which mirrors.yaml is used, what it may say, and how it says it is wrong.

Bad-input cases mark the line the error must point at with a ``#<`` comment.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelget import settings as mg_settings
from modelget.catalogue import (
    BUILTIN_SOURCE,
    MIRROR_FIELDS,
    CatalogueLocation,
    builtin_catalogue,
    catalogue_path_and_origin,
    load_catalogue,
    parse_catalogue,
)
from modelget.datatypes import MIRROR_KINDS, Catalogue
from modelget.errors import EXIT_USAGE, ConfigError

SRC = "cat.yaml"
REPO_ROOT = Path(__file__).resolve().parents[1]
HF_TOKEN_LIKE = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def one(entry: str, *, extends: bool = False) -> str:
    """A catalogue whose only mirror is ``entry``; the entry's first line is file line 3
    (line 4 with ``extends``)."""
    lines = textwrap.dedent(entry).strip("\n").splitlines()
    body = "\n".join(("  - " if i == 0 else "    ") + line for i, line in enumerate(lines))
    return "version: 1\n" + ("extends: builtin\n" if extends else "") + "mirrors:\n" + body + "\n"


GOOD = "name: corp\nkind: hf\nendpoint: https://hf.corp.example\n"


def good_with(extra: str) -> str:
    """The GOOD mirror plus ``extra`` lines (which start at file line 6)."""
    return one(GOOD + textwrap.dedent(extra).strip("\n"))


def marked_line(text: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if "#<" in line:
            return number
    return None


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    field: str | None
    needle: str
    secret: str | None = None


def d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


BAD: list[Bad] = [
    # ---- the document ------------------------------------------------------------------------
    Bad("top-is-list", "- a  #<\n- b\n", None, "must be a mapping"),
    Bad("top-is-scalar", "just some text  #<\n", None, "must be a mapping"),
    Bad("version-missing", "mirrors:  #<\n  - name: a\n", "version", "missing `version:`"),
    Bad("version-2", "version: 2  #<\nmirrors: []\n", "version", "supports version 1"),
    Bad("version-string", 'version: "1"  #<\nmirrors: []\n', "version", "must be an integer"),
    Bad("version-bool", "version: true  #<\nmirrors: []\n", "version", "must be an integer"),
    Bad("version-float", "version: 1.0  #<\nmirrors: []\n", "version", "must be an integer"),
    Bad("version-dup", "version: 1\nversion: 1  #<\n", "version", "duplicate key"),
    Bad("top-unknown", "version: 1\nmirror:  #<\n  - name: a\n", "mirror", "unknown top-level"),
    Bad(
        "top-token",
        f"version: 1\ntoken: {HF_TOKEN_LIKE}  #<\nmirrors: []\n",
        "token",
        "tokens are never written in mirrors.yaml",
        HF_TOKEN_LIKE,
    ),
    Bad("extends-other", "version: 1\nextends: defaults  #<\n", "extends", "only allowed value"),
    Bad("extends-bool", "version: 1\nextends: true  #<\n", "extends", "only allowed value"),
    Bad("mirrors-missing", "version: 1  #<\n", "mirrors", "missing `mirrors:`"),
    Bad("mirrors-empty", "version: 1\nmirrors: []  #<\n", "mirrors", "at least one mirror"),
    Bad("mirrors-null", "version: 1\nmirrors:  #<\n", "mirrors", "at least one mirror"),
    Bad("mirrors-mapping", "version: 1\nmirrors:\n  name: a  #<\n", "mirrors", "must be a list"),
    # ---- YAML itself -------------------------------------------------------------------------
    Bad("yaml-tab", "version: 1\nmirrors:\n\t- name: x  #<\n", None, "YAML syntax error"),
    Bad("yaml-mapping-value", "version: 1: 2  #<\n", None, "YAML syntax error"),
    Bad("yaml-two-documents", "version: 1\n---  #<\nmirrors: []\n", None, "single document"),
    Bad("yaml-control-char", "version: 1\nmirrors: \x07  #<\n", None, "control character"),
    Bad("yaml-undefined-alias", "version: *nope  #<\n", None, "undefined alias"),
    Bad("yaml-bad-tag", "version: !!int one  #<\n", "version", "cannot be read as !!int"),
    Bad(
        "yaml-python-tag",
        one("name: !!python/object:os.system a  #<"),
        "mirrors[0].name",
        "cannot be read",
    ),
    Bad(
        "yaml-recursive-merge",
        "version: 1\nmirrors:\n  - &a  #<\n    <<: *a\n    name: x\n",
        "mirrors[0]",
        "recursive",
    ),
    # ---- one mirror: shape and required fields -----------------------------------------------
    Bad("mirror-scalar", "version: 1\nmirrors:\n  - huggingface  #<\n", "mirrors[0]", "mapping"),
    Bad(
        "name-missing",
        one("kind: hf  #<\nendpoint: https://x.example"),
        "mirrors[0].name",
        "missing required field `name`",
    ),
    Bad(
        "kind-missing",
        one("name: a  #<\nendpoint: https://x.example"),
        "mirrors[0].kind",
        "missing required field `kind`",
    ),
    Bad(
        "endpoint-missing",
        one("name: a  #<\nkind: hf"),
        "mirrors[0].endpoint",
        "missing required field `endpoint`",
    ),
    Bad("name-spaces", one("name: HF Mirror  #<"), "mirrors[0].name", "lowercase"),
    Bad("name-upper", one("name: Corp  #<"), "mirrors[0].name", "lowercase"),
    Bad("name-leading-dash", one("name: -corp  #<"), "mirrors[0].name", "lowercase"),
    Bad("name-int", one("name: 123  #<"), "mirrors[0].name", "must be a string"),
    Bad(
        "name-duplicate",
        "version: 1\nmirrors:\n"
        + "  - name: a\n    kind: hf\n    endpoint: https://a.example\n"
        + "  - name: a  #<\n    kind: hf\n    endpoint: https://b.example\n",
        "mirrors[1].name",
        "lines 3 and 6",
    ),
    Bad(
        "key-duplicate",
        one("name: a\nkind: hf\nkind: cdn  #<\nendpoint: https://a.example"),
        "mirrors[0].kind",
        "duplicate key",
    ),
    Bad("key-not-string", one("name: a\n1: x  #<"), "mirrors[0]", "keys must be strings"),
    Bad("field-unknown-typo", good_with("endpont: x  #<"), "mirrors[0].endpont", "unknown"),
    Bad("field-unknown-enable", good_with("enable: true  #<"), "mirrors[0].enable", "unknown"),
    Bad("field-unknown-other", good_with("mirror_url: x  #<"), "mirrors[0].mirror_url", "unknown"),
    # ---- kind ----------------------------------------------------------------------------------
    Bad("kind-unknown", one("name: a\nkind: huggingface  #<"), "mirrors[0].kind", "one of"),
    Bad("kind-list", one("name: a\nkind: [hf]  #<"), "mirrors[0].kind", "got a list"),
    # ---- endpoint ------------------------------------------------------------------------------
    Bad(
        "endpoint-ftp",
        one("name: a\nkind: hf\nendpoint: ftp://x.example  #<"),
        "mirrors[0].endpoint",
        "http",
    ),
    Bad(
        "endpoint-no-scheme",
        one("name: a\nkind: hf\nendpoint: huggingface.co  #<"),
        "mirrors[0].endpoint",
        "absolute",
    ),
    Bad(
        "endpoint-no-host",
        one("name: a\nkind: hf\nendpoint: 'https://'  #<"),
        "mirrors[0].endpoint",
        "absolute",
    ),
    Bad(
        "endpoint-port-only",
        one("name: a\nkind: hf\nendpoint: 'https://:8080'  #<"),
        "mirrors[0].endpoint",
        "host",
    ),
    Bad(
        "endpoint-userinfo",
        one("name: a\nkind: hf\nendpoint: https://bob:s3cr3tPassw0rd@hf.example  #<"),
        "mirrors[0].endpoint",
        "credentials",
        "s3cr3tPassw0rd",
    ),
    Bad(
        "endpoint-query",
        one("name: a\nkind: hf\nendpoint: https://hf.example/?key=q5Tq9ZzSECRETvalue  #<"),
        "mirrors[0].endpoint",
        "query",
        "q5Tq9ZzSECRETvalue",
    ),
    Bad(
        "endpoint-fragment",
        one("name: a\nkind: hf\nendpoint: 'https://hf.example/#top'  #<"),
        "mirrors[0].endpoint",
        "fragment",
    ),
    Bad(
        "endpoint-bad-ipv6",
        one("name: a\nkind: hf\nendpoint: 'https://[::1'  #<"),
        "mirrors[0].endpoint",
        "not a valid URL",
    ),
    Bad(
        "endpoint-bad-port",
        one("name: a\nkind: hf\nendpoint: 'https://hf.example:99999'  #<"),
        "mirrors[0].endpoint",
        "not a valid URL",
    ),
    Bad(
        "endpoint-space",
        one("name: a\nkind: hf\nendpoint: https://hf.example/a b  #<"),
        "mirrors[0].endpoint",
        "spaces",
    ),
    Bad(
        "endpoint-int",
        one("name: a\nkind: hf\nendpoint: 42  #<"),
        "mirrors[0].endpoint",
        "got the integer 42",
    ),
    # ---- token_env and secrets -----------------------------------------------------------------
    Bad(
        "token-env-hf",
        good_with(f"token_env: {HF_TOKEN_LIKE}  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        HF_TOKEN_LIKE,
    ),
    Bad(
        "token-env-bearer",
        good_with("token_env: Bearer zq81Kd02mm  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        "zq81Kd02mm",
    ),
    Bad(
        "token-env-sk",
        good_with("token_env: sk-proj-4fD9kQ2  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        "sk-proj-4fD9kQ2",
    ),
    Bad(
        "token-env-ms",
        good_with("token_env: ms-5f2c1e0a-77b1-4c3e  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        "ms-5f2c1e0a-77b1-4c3e",
    ),
    Bad(
        "token-env-random",
        good_with("token_env: aB3dE5fG7hJ9kL1mN3pQ  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        "aB3dE5fG7hJ9kL1mN3pQ",
    ),
    Bad(
        "token-env-hex",
        good_with("token_env: 9f86d081884c7d659a2feaa0c55ad015  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        "9f86d081884c7d659a2feaa0c55ad015",
    ),
    Bad(
        "token-env-bad-name",
        good_with("token_env: HF-TOKEN  #<"),
        "mirrors[0].token_env",
        "never be written inline",
        "HF-TOKEN",
    ),
    Bad(
        "token-env-int",
        good_with("token_env: 8675309  #<"),
        "mirrors[0].token_env",
        "name of an environment variable",
        "8675309",
    ),
    Bad("token-env-empty", good_with("token_env: ''  #<"), "mirrors[0].token_env", "empty string"),
    Bad(
        "field-token",
        good_with("token: zq81Kd02mmXy  #<"),
        "mirrors[0].token",
        "tokens are never written in mirrors.yaml",
        "zq81Kd02mmXy",
    ),
    Bad(
        "field-api-key",
        good_with("api_key: zq81Kd02mmXy  #<"),
        "mirrors[0].api_key",
        "tokens are never written in mirrors.yaml",
        "zq81Kd02mmXy",
    ),
    Bad(
        "field-api-key-dash",
        good_with("api-key: zq81Kd02mmXy  #<"),
        "mirrors[0].api-key",
        "tokens are never written in mirrors.yaml",
        "zq81Kd02mmXy",
    ),
    Bad(
        "field-password",
        good_with("password: hunter2hunter2  #<"),
        "mirrors[0].password",
        "tokens are never written in mirrors.yaml",
        "hunter2hunter2",
    ),
    Bad(
        "field-authorization",
        good_with("authorization: Bearer zq81Kd02mmXy  #<"),
        "mirrors[0].authorization",
        "tokens are never written in mirrors.yaml",
        "zq81Kd02mmXy",
    ),
    Bad(
        "field-secret",
        good_with("secret: zq81Kd02mmXy  #<"),
        "mirrors[0].secret",
        "tokens are never written in mirrors.yaml",
        "zq81Kd02mmXy",
    ),
    Bad(
        "field-hf-token",
        good_with(f"hf_token: {HF_TOKEN_LIKE}  #<"),
        "mirrors[0].hf_token",
        "tokens are never written in mirrors.yaml",
        HF_TOKEN_LIKE,
    ),
    # ---- booleans ------------------------------------------------------------------------------
    Bad(
        "use-hf-login-modelscope",
        one("name: ms\nkind: modelscope\nendpoint: https://ms.example\nuse_hf_login: true  #<"),
        "mirrors[0].use_hf_login",
        "only allowed for kind hf",
    ),
    Bad(
        "use-hf-login-string",
        good_with('use_hf_login: "yes"  #<'),
        "mirrors[0].use_hf_login",
        "true or false",
    ),
    Bad("enabled-string", good_with('enabled: "yes"  #<'), "mirrors[0].enabled", "true or false"),
    Bad("enabled-int", good_with("enabled: 1  #<"), "mirrors[0].enabled", "true or false"),
    Bad("enabled-null", good_with("enabled:  #<"), "mirrors[0].enabled", "true or false"),
    # ---- numbers -------------------------------------------------------------------------------
    Bad("weight-zero", good_with("weight: 0  #<"), "mirrors[0].weight", "> 0"),
    Bad("weight-negative", good_with("weight: -1.5  #<"), "mirrors[0].weight", "> 0"),
    Bad("weight-nan", good_with("weight: .nan  #<"), "mirrors[0].weight", "finite"),
    Bad("weight-inf", good_with("weight: .inf  #<"), "mirrors[0].weight", "finite"),
    Bad("weight-string", good_with("weight: fast  #<"), "mirrors[0].weight", "number"),
    Bad("weight-bool", good_with("weight: true  #<"), "mirrors[0].weight", "number"),
    Bad(
        "max-connections-zero",
        good_with("max_connections: 0  #<"),
        "mirrors[0].max_connections",
        "from 1 to 64",
    ),
    Bad(
        "max-connections-65",
        good_with("max_connections: 65  #<"),
        "mirrors[0].max_connections",
        "from 1 to 64",
    ),
    Bad(
        "max-connections-float",
        good_with("max_connections: 8.5  #<"),
        "mirrors[0].max_connections",
        "integer",
    ),
    Bad(
        "max-connections-string",
        good_with('max_connections: "8"  #<'),
        "mirrors[0].max_connections",
        "integer",
    ),
    Bad(
        "max-connections-bool",
        good_with("max_connections: true  #<"),
        "mirrors[0].max_connections",
        "integer",
    ),
    # ---- id_map --------------------------------------------------------------------------------
    Bad("id-map-list", good_with("id_map: [a/b]  #<"), "mirrors[0].id_map", "must be a mapping"),
    Bad(
        "id-map-bad-key",
        good_with("id_map:\n  'not an id!': a/b  #<"),
        "mirrors[0].id_map['not an id!']",
        "not a repo id",
    ),
    Bad(
        "id-map-star-in-name",
        good_with("id_map:\n  'meta-llama/*': LLM-Research/foo*  #<"),
        "mirrors[0].id_map['meta-llama/*']",
        "only allowed as `ORG/*`",
    ),
    Bad(
        "id-map-bare-star",
        good_with("id_map:\n  'meta-llama/*': '*'  #<"),
        "mirrors[0].id_map['meta-llama/*']",
        "only allowed as `ORG/*`",
    ),
    Bad(
        "id-map-exact-to-org-star",
        good_with("id_map:\n  meta-llama/Llama-3: LLM-Research/*  #<"),
        "mirrors[0].id_map['meta-llama/Llama-3']",
        "exact id",
    ),
    Bad(
        "id-map-bad-target",
        good_with("id_map:\n  a/b: 'x y/z'  #<"),
        "mirrors[0].id_map['a/b']",
        "not a repo id",
    ),
    Bad(
        "id-map-target-int",
        good_with("id_map:\n  a/b: 123  #<"),
        "mirrors[0].id_map['a/b']",
        "repo id string",
    ),
    Bad(
        "id-map-target-null",
        good_with("id_map:\n  a/b:  #<"),
        "mirrors[0].id_map['a/b']",
        "repo id string",
    ),
    Bad(
        "id-map-key-int",
        good_with("id_map:\n  2024: a/b  #<"),
        "mirrors[0].id_map",
        "keys must be strings",
    ),
    Bad(
        "id-map-duplicate",
        good_with("id_map:\n  a/b: c/d\n  a/b: e/f  #<"),
        "mirrors[0].id_map['a/b']",
        "duplicate key",
    ),
    # ---- extends: builtin ----------------------------------------------------------------------
    Bad(
        "extends-new-mirror-missing-kind",
        one("name: hf-mirrror  #<\nenabled: false", extends=True),
        "mirrors[0].kind",
        "missing required field `kind`",
    ),
    Bad(
        "extends-use-hf-login-on-modelscope",
        one("name: modelscope\nuse_hf_login: true  #<", extends=True),
        "mirrors[0].use_hf_login",
        "only allowed for kind hf",
    ),
    Bad(
        "extends-kind-change-keeps-hf-login",
        one("name: huggingface\nkind: modelscope  #<", extends=True),
        "mirrors[0].use_hf_login",
        "only allowed for kind hf",
    ),
    Bad(
        "extends-duplicate-override",
        "version: 1\nextends: builtin\nmirrors:\n"
        "  - {name: hf-mirror, enabled: false}\n  - {name: hf-mirror, weight: 2}  #<\n",
        "mirrors[1].name",
        "lines 4 and 5",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input_is_a_located_config_error(case: Bad) -> None:
    with pytest.raises(ConfigError) as info:
        parse_catalogue(case.text, SRC)
    error = info.value
    assert error.path == SRC
    assert error.line == marked_line(case.text), str(error)
    assert error.field == case.field, str(error)
    assert case.needle.lower() in str(error).lower(), str(error)
    assert error.hint, f"no hint for: {error}"
    assert error.exit_code == EXIT_USAGE == 2
    assert error.code == "config-invalid"
    if case.secret is not None:
        shown = f"{error} {error.hint} {error.to_dict()}"
        assert case.secret not in shown


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n", "---\n", "   \n", "~\n"], ids=repr
)
def test_empty_catalogue_is_an_error(text: str) -> None:
    with pytest.raises(ConfigError, match="empty") as info:
        parse_catalogue(text, SRC)
    assert info.value.path == SRC
    assert info.value.line is None
    assert info.value.hint and "version: 1" in info.value.hint


def test_error_string_is_path_line_field_message() -> None:
    text = good_with("weight: 0")
    with pytest.raises(ConfigError) as info:
        parse_catalogue(text, SRC)
    error = info.value
    assert str(error) == error.message
    assert (
        str(error)
        == f"{SRC}:6: mirrors[0].weight: weight must be a finite number > 0, got the integer 0"
    )


def test_hints_point_at_the_fix() -> None:
    def hint_for(text: str) -> str:
        with pytest.raises(ConfigError) as info:
            parse_catalogue(text, SRC)
        assert info.value.hint is not None
        return info.value.hint

    assert "`endpoint`" in hint_for(good_with("endpont: https://x.example"))
    assert "`enabled`" in hint_for(good_with("enable: false"))
    assert "`token_env`" in hint_for(good_with("tokenenv: HF_TOKEN"))
    assert "`mirrors`" in hint_for("version: 1\nmirror: []\n")
    assert "kind: hf" in hint_for(one("name: a\nkind: huggingface\nendpoint: https://a.example"))
    assert "'hf-mirror'" in hint_for(one("name: hf-mirrror\nenabled: false", extends=True))
    # a token_env error shows how to name the variable instead
    corp = hint_for(good_with(f"token_env: {HF_TOKEN_LIKE}"))
    assert "export CORP_TOKEN=" in corp and "token_env: CORP_TOKEN" in corp
    hf = hint_for(
        one(f"name: hub\nkind: hf\nendpoint: https://huggingface.co\ntoken_env: {HF_TOKEN_LIKE}")
    )
    assert "token_env: HF_TOKEN" in hf


# --------------------------------------------------------------------------------------------
# The bundled catalogue


def test_bundled_catalogue() -> None:
    catalogue = load_catalogue()
    assert isinstance(catalogue, Catalogue)
    assert catalogue.version == 1
    assert catalogue.sources == (BUILTIN_SOURCE,)
    assert [m.name for m in catalogue.mirrors] == ["huggingface", "hf-mirror", "modelscope"]

    hf = catalogue.get("huggingface")
    assert (hf.kind, hf.endpoint, hf.token_env, hf.use_hf_login) == (
        "hf",
        "https://huggingface.co",
        "HF_TOKEN",
        True,
    )
    assert hf.host == "huggingface.co"

    mirror = catalogue.get("hf-mirror")
    assert (mirror.kind, mirror.endpoint, mirror.token_env, mirror.use_hf_login) == (
        "hf",
        "https://hf-mirror.com",
        None,
        False,
    )

    ms = catalogue.get("modelscope")
    assert (ms.kind, ms.endpoint, ms.token_env, ms.use_hf_login) == (
        "modelscope",
        "https://modelscope.cn",
        "MODELSCOPE_API_TOKEN",
        False,
    )
    assert all(m.enabled and m.weight == 1.0 for m in catalogue.mirrors)
    # Adaptive connection counts, except the community mirror's cap.
    assert {m.name: m.max_connections for m in catalogue.mirrors} == {
        "huggingface": None,
        "hf-mirror": 16,
        "modelscope": None,
    }
    assert all(m.source == BUILTIN_SOURCE and m.line for m in catalogue.mirrors)
    assert catalogue.enabled == catalogue.mirrors


def test_repo_root_mirrors_yaml_is_the_packaged_one() -> None:
    packaged = (resources.files("modelget") / "mirrors.yaml").read_bytes()
    assert (REPO_ROOT / "mirrors.yaml").read_bytes() == packaged


@pytest.mark.parametrize(
    ("repo_id", "expected"),
    [
        ("meta-llama/Llama-3.2-1B-Instruct", "LLM-Research/Llama-3.2-1B-Instruct"),
        ("google/gemma-2-9b", "LLM-Research/gemma-2-9b"),
        ("google/gemma-3-1b-it", "LLM-Research/gemma-3-1b-it"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("THUDM/glm-4-9b-chat", "ZhipuAI/glm-4-9b-chat"),
        ("microsoft/phi-4", "LLM-Research/phi-4"),
        ("google/flan-t5-small", "google/flan-t5-small"),
    ],
)
def test_bundled_modelscope_id_map(repo_id: str, expected: str) -> None:
    assert builtin_catalogue().get("modelscope").map_repo_id(repo_id) == expected
    assert builtin_catalogue().get("huggingface").map_repo_id(repo_id) == repo_id


def test_exact_id_map_entry_wins_over_a_pattern() -> None:
    text = good_with(
        """
        id_map:
          "acme/*": "mirror-org/*"
          "acme/special": "elsewhere/special-v2"
        """
    )
    mirror = parse_catalogue(text, SRC).get("corp")
    assert mirror.map_repo_id("acme/special") == "elsewhere/special-v2"
    assert mirror.map_repo_id("acme/other") == "mirror-org/other"
    assert isinstance(mirror.id_map, MappingProxyType)
    assert list(mirror.id_map) == ["acme/*", "acme/special"]


# --------------------------------------------------------------------------------------------
# Values and defaults


def test_defaults_and_normalisation() -> None:
    catalogue = parse_catalogue(
        one("name: corp\nkind: cdn\nendpoint: http://127.0.0.1:8080/models//"), SRC
    )
    (mirror,) = catalogue.mirrors
    assert mirror.endpoint == "http://127.0.0.1:8080/models"
    assert mirror.host == "127.0.0.1:8080"
    assert (mirror.token_env, mirror.use_hf_login, mirror.enabled) == (None, False, True)
    assert (mirror.weight, mirror.max_connections, dict(mirror.id_map)) == (1.0, None, {})
    assert (mirror.source, mirror.line) == (SRC, 3)
    assert catalogue.sources == (SRC,)


def test_every_field() -> None:
    text = d(
        """
        version: 1
        mirrors:
          - name: corp-hf
            kind: hf
            endpoint: https://artifactory.corp.example/artifactory/api/huggingfaceml/hf-remote/
            token_env: ARTIFACTORY_TOKEN
            use_hf_login: false
            enabled: yes          # YAML booleans are fine
            weight: 2
            max_connections: 64
            id_map: {"acme/*": "acme-mirror/*"}
          - name: team.cdn_2
            kind: cdn
            endpoint: https://models.team.example
            enabled: off
            weight: 0.25
            max_connections: 1
            token_env: null
            id_map:
        """
    )
    corp, team = parse_catalogue(text, SRC).mirrors
    assert (
        corp.endpoint == "https://artifactory.corp.example/artifactory/api/huggingfaceml/hf-remote"
    )
    assert corp.token_env == "ARTIFACTORY_TOKEN"
    assert (corp.enabled, corp.weight, corp.max_connections) == (True, 2.0, 64)
    assert isinstance(corp.weight, float)
    assert corp.map_repo_id("acme/x") == "acme-mirror/x"
    assert (team.name, team.kind, team.enabled, team.weight) == ("team.cdn_2", "cdn", False, 0.25)
    assert (team.max_connections, team.token_env, dict(team.id_map)) == (1, None, {})
    assert (corp.line, team.line) == (3, 12)


def test_endpoint_scheme_is_lowercased_and_host_kept() -> None:
    text = one("name: a\nkind: hf\nendpoint: HTTPS://Hf.Example:8443/base/")
    (mirror,) = parse_catalogue(text, SRC).mirrors
    assert mirror.endpoint == "https://Hf.Example:8443/base"
    assert mirror.host == "hf.example:8443"


def test_the_same_entry_twice_through_an_alias() -> None:
    text = (
        "version: 1\nmirrors:\n  - &m {name: a, kind: hf, endpoint: 'https://a.example'}\n  - *m\n"
    )
    with pytest.raises(ConfigError, match="listed twice through an alias") as info:
        parse_catalogue(text, SRC)
    assert (info.value.line, info.value.field) == (3, "mirrors[1].name")


def test_every_mirror_disabled_is_valid() -> None:
    text = one("name: a\nkind: hf\nendpoint: https://a.example\nenabled: false")
    catalogue = parse_catalogue(text, SRC)
    assert catalogue.enabled == ()
    assert len(catalogue.mirrors) == 1


def test_anchors_aliases_and_merge_keys() -> None:
    text = d(
        """
        version: 1
        mirrors:
          - &base
            name: one
            kind: hf
            endpoint: https://one.example
            max_connections: 4
          - <<: *base
            name: two
            endpoint: &ep https://two.example
          - {<<: *base, name: three, endpoint: *ep, weight: 3}
        """
    )
    one_, two, three = parse_catalogue(text, SRC).mirrors
    assert (one_.name, two.name, three.name) == ("one", "two", "three")
    assert two.endpoint == three.endpoint == "https://two.example"
    assert two.kind == three.kind == "hf"
    assert two.max_connections == three.max_connections == 4
    assert three.weight == 3.0


def test_token_like_env_names_that_are_fine() -> None:
    for name in ("HF_TOKEN", "MODELSCOPE_API_TOKEN", "ARTIFACTORY_PROD2024_TOKEN", "_X", "hf"):
        mirror = parse_catalogue(good_with(f"token_env: {name}"), SRC).get("corp")
        assert mirror.token_env == name


# --------------------------------------------------------------------------------------------
# extends: builtin


def test_extends_overrides_only_given_fields_and_appends_new_mirrors() -> None:
    text = d(
        """
        version: 1
        extends: builtin
        mirrors:
          - name: corp-hf
            kind: hf
            endpoint: https://hf.corp.example
            token_env: CORP_HF_TOKEN
          - name: hf-mirror
            enabled: false
          - name: modelscope
            weight: 0.5
            id_map: {"acme/*": "acme-cn/*"}
          - name: team-cdn
            kind: cdn
            endpoint: https://models.team.example
        """
    )
    catalogue = parse_catalogue(text, "/home/u/mirrors.yaml")
    assert [m.name for m in catalogue.mirrors] == [
        "huggingface",
        "hf-mirror",
        "modelscope",
        "corp-hf",
        "team-cdn",
    ]
    assert catalogue.sources == (BUILTIN_SOURCE, "/home/u/mirrors.yaml")
    builtin = builtin_catalogue()
    assert catalogue.get("huggingface") == builtin.get("huggingface")

    hf_mirror = catalogue.get("hf-mirror")
    assert not hf_mirror.enabled
    assert hf_mirror.endpoint == "https://hf-mirror.com"
    assert (hf_mirror.source, hf_mirror.line) == ("/home/u/mirrors.yaml", 8)

    ms = catalogue.get("modelscope")
    assert (ms.weight, ms.kind, ms.token_env) == (0.5, "modelscope", "MODELSCOPE_API_TOKEN")
    assert dict(ms.id_map) == {"acme/*": "acme-cn/*"}  # id_map is replaced, not merged

    corp = catalogue.get("corp-hf")
    assert (corp.token_env, corp.source, corp.line) == ("CORP_HF_TOKEN", "/home/u/mirrors.yaml", 4)
    assert [m.name for m in catalogue.enabled] == [
        "huggingface",
        "modelscope",
        "corp-hf",
        "team-cdn",
    ]


@pytest.mark.parametrize("mirrors", ["", "mirrors: []\n", "mirrors:\n"])
def test_extends_without_mirrors_is_the_builtin(mirrors: str) -> None:
    catalogue = parse_catalogue(f"version: 1\nextends: builtin\n{mirrors}", SRC)
    assert catalogue.mirrors == builtin_catalogue().mirrors
    assert catalogue.sources == (BUILTIN_SOURCE, SRC)


def test_extends_can_remove_the_token() -> None:
    text = one("name: huggingface\ntoken_env: null\nuse_hf_login: false", extends=True)
    hf = parse_catalogue(text, SRC).get("huggingface")
    assert (hf.token_env, hf.use_hf_login, hf.endpoint) == (None, False, "https://huggingface.co")


def test_extends_a_given_base() -> None:
    base = parse_catalogue(one("name: a\nkind: cdn\nendpoint: https://a.example"), "base.yaml")
    text = one("name: a\nweight: 4", extends=True)
    catalogue = parse_catalogue(text, SRC, base=base)
    assert [(m.name, m.weight) for m in catalogue.mirrors] == [("a", 4.0)]
    assert catalogue.sources == ("base.yaml", SRC)


def test_a_file_without_extends_replaces_the_builtin(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(one("name: only\nkind: hf\nendpoint: https://only.example"))
    catalogue = load_catalogue(path)
    assert [m.name for m in catalogue.mirrors] == ["only"]
    assert catalogue.sources == (str(path),)
    assert catalogue.mirrors[0].source == str(path)


# --------------------------------------------------------------------------------------------
# Which file


def _write(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(one(f"name: {name}\nkind: hf\nendpoint: https://{name}.example"))
    return path


@pytest.fixture
def three_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    files = {
        "explicit": _write(tmp_path / "explicit.yaml", "explicit"),
        "env": _write(tmp_path / "env.yaml", "env"),
        "user": _write(mg_settings.config_dir() / "mirrors.yaml", "user"),
    }
    monkeypatch.setenv("MODELGET_MIRRORS", str(files["env"]))
    return files


def _names(catalogue: Catalogue) -> list[str]:
    return [m.name for m in catalogue.mirrors]


def test_precedence_explicit_path_wins(three_files: dict[str, Path]) -> None:
    assert _names(load_catalogue(three_files["explicit"])) == ["explicit"]
    assert _names(load_catalogue(str(three_files["explicit"]))) == ["explicit"]
    assert catalogue_path_and_origin(three_files["explicit"]) == CatalogueLocation(
        three_files["explicit"], "--mirrors"
    )


def test_precedence_env_over_user_config(three_files: dict[str, Path]) -> None:
    assert _names(load_catalogue()) == ["env"]
    location = catalogue_path_and_origin()
    assert (location.path, location.origin) == (three_files["env"], "MODELGET_MIRRORS")
    assert location.display == str(three_files["env"])


def test_precedence_user_config_over_builtin(
    three_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELGET_MIRRORS")
    assert _names(load_catalogue()) == ["user"]
    assert catalogue_path_and_origin() == CatalogueLocation(three_files["user"], "user config")
    three_files["user"].unlink()
    assert load_catalogue() == builtin_catalogue()
    location = catalogue_path_and_origin()
    assert location == CatalogueLocation(None, "builtin")
    assert location.display == BUILTIN_SOURCE


def test_user_config_may_extend_builtin() -> None:
    path = mg_settings.config_dir() / "mirrors.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(
        "version: 1\nextends: builtin\nmirrors:\n  - {name: hf-mirror, enabled: false}\n"
    )
    catalogue = load_catalogue()
    assert catalogue.sources == (BUILTIN_SOURCE, str(path))
    assert [m.name for m in catalogue.enabled] == ["huggingface", "modelscope"]


def test_relative_path_is_recorded_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "rel.yaml", "rel")
    monkeypatch.chdir(tmp_path)
    catalogue = load_catalogue("rel.yaml")
    assert catalogue.sources == (str(tmp_path / "rel.yaml"),)


def test_missing_files_name_the_path_and_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "x" / "y.yaml"
    with pytest.raises(ConfigError) as info:
        load_catalogue(missing)
    assert info.value.path == str(missing)
    assert str(info.value) == f"{missing}: --mirrors names {missing}, which does not exist"
    assert info.value.exit_code == 2

    monkeypatch.setenv("MODELGET_MIRRORS", str(missing))
    with pytest.raises(ConfigError) as info:
        load_catalogue()
    assert info.value.path == str(missing)
    assert str(info.value).endswith(f"MODELGET_MIRRORS points to {missing}, which does not exist")
    assert info.value.hint is not None and "unset" in info.value.hint


def test_user_config_problems(tmp_path: Path) -> None:
    path = mg_settings.config_dir() / "mirrors.yaml"
    path.mkdir(parents=True)
    with pytest.raises(ConfigError, match="is a directory") as info:
        load_catalogue()
    assert info.value.path == str(path)
    assert "user catalogue" in str(info.value)

    path.rmdir()
    path.symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_catalogue()


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"version: 1\n# caf\xe9\nmirrors: []\n")
    with pytest.raises(ConfigError, match="UTF-8") as info:
        load_catalogue(latin)
    assert (info.value.path, info.value.line) == (str(latin), 2)

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty") as info:
        load_catalogue(empty)
    assert info.value.path == str(empty)

    with pytest.raises(ConfigError, match="empty path"):
        load_catalogue("")

    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = _write(tmp_path / "locked.yaml", "locked")
        locked.chmod(0)
        try:
            with pytest.raises(ConfigError, match="permission denied"):
                load_catalogue(locked)
        finally:
            locked.chmod(0o600)


def test_yaml_errors_in_a_file_carry_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nmirrors:\n  - name: a\n   kind: hf\n")
    with pytest.raises(ConfigError, match="YAML syntax error") as info:
        load_catalogue(path)
    assert info.value.path == str(path)
    assert info.value.line == 4


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(
        b"\xef\xbb\xbf" + one("name: a\nkind: hf\nendpoint: https://a.example").encode()
    )
    assert _names(load_catalogue(path)) == ["a"]


def test_the_examples_in_docs_mirrors_md_are_valid() -> None:
    doc = (REPO_ROOT / "docs" / "mirrors.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "version:" in b]
    assert len(blocks) >= 4
    for block in blocks:
        assert parse_catalogue(block, "docs/mirrors.md").mirrors
    assert "## The `cdn` tree format" in doc


# --------------------------------------------------------------------------------------------
# Fuzzing: bad input raises ConfigError and nothing else

_WORDS = st.sampled_from(
    [
        "hf", "modelscope", "cdn", "huggingface", "hf-mirror", "builtin", "HF_TOKEN", "hf_abc",
        "https://hf.example", "http://127.0.0.1:8080/", "https://u:p@h.example", "ftp://x",
        "https://[::1", "meta-llama/*", "LLM-Research/*", "a/b", "*", "org/*x", "1", "", " ",
        "Bearer x", "!!int", "<<", "&a", "*a", "- x", "a: b", "\t", "#",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    _WORDS,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(_WORDS, st.text(max_size=8)), inner, max_size=3),
    ),
    max_leaves=8,
)
_FIELD_NAMES = st.sampled_from((*MIRROR_FIELDS, "token", "endpont", "api_key"))
_MIRRORS = st.fixed_dictionaries(
    {
        "name": st.one_of(
            st.sampled_from(["a", "b", "huggingface", "hf-mirror", "modelscope"]), _VALUES
        )
    },
    optional={
        "kind": st.one_of(st.sampled_from(MIRROR_KINDS), _VALUES),
        "endpoint": st.one_of(
            st.sampled_from(["https://a.example/", "http://127.0.0.1:1"]), _VALUES
        ),
        "token_env": st.one_of(st.sampled_from(["HF_TOKEN", "X"]), _VALUES),
        "use_hf_login": st.one_of(st.booleans(), _VALUES),
        "enabled": st.one_of(st.booleans(), _VALUES),
        "weight": st.one_of(st.floats(), _VALUES),
        "max_connections": st.one_of(st.integers(0, 70), _VALUES),
        "id_map": st.one_of(
            st.dictionaries(st.one_of(_WORDS, st.text(max_size=12)), _VALUES, max_size=3), _VALUES
        ),
    },
).flatmap(
    lambda entry: st.dictionaries(_FIELD_NAMES, _VALUES, max_size=2).map(
        lambda extra: {**extra, **entry}
    )
)
_DOCUMENTS = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), _VALUES)},
    optional={
        "extends": st.one_of(st.just("builtin"), _VALUES),
        "mirrors": st.one_of(st.lists(_MIRRORS, max_size=3), _VALUES),
        "mirror": _VALUES,
    },
)


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


_TEXTS = st.one_of(
    _DOCUMENTS.map(_dump),
    st.text(max_size=200),
    st.tuples(_DOCUMENTS.map(_dump), st.integers(min_value=0), st.text(max_size=4)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1) + 1 :]
    ),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_TEXTS)
def test_fuzzed_documents_raise_only_config_error(text: str) -> None:
    try:
        catalogue = parse_catalogue(text, SRC)
    except ConfigError as error:
        assert error.path == SRC
        assert error.exit_code == 2
        assert error.line is None or error.line >= 1
        return
    assert isinstance(catalogue, Catalogue)
    for mirror in catalogue.mirrors:
        assert mirror.kind in MIRROR_KINDS
        assert mirror.endpoint.startswith(("http://", "https://"))
        assert mirror.max_connections is None or 1 <= mirror.max_connections <= 64
        assert mirror.weight > 0
        assert isinstance(mirror.id_map, MappingProxyType)
