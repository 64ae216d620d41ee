"""Mirrors from outside a catalogue file (modelget.endpoints): the hub clients' endpoint
variables when no catalogue file is in force, ``--endpoint`` and ``--only``; pure rules first,
then pulls against hub simulators on 127.0.0.1 (docs/mirrors.md, "Endpoints from the
environment and the command line")."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelget import cli, settings
from modelget.catalogue import builtin_catalogue, parse_catalogue
from modelget.endpoints import adhoc_mirrors, only, select
from modelget.errors import ConfigError, UsageError
from modelget.testing.hubsim import HubSimulator

REPO = "acme/tiny"
HF_SECRET = "hf_ENDPOINTtokenSECRET0123456789"
MS_SECRET = "ms-ENDPOINTtokenSECRET987654321"
PASSWORD = "s3cretPassw0rdXYZ"


def names(mirrors: Any) -> list[str]:
    return [m.name for m in mirrors]


# --------------------------------------------------------------------------------------------
# The environment variables


def test_without_the_variables_the_bundled_catalogue_is_unchanged() -> None:
    selection = select()
    assert selection.catalogue == builtin_catalogue()
    assert (selection.origin, selection.unused) == ("builtin", ())


def test_hf_endpoint_replaces_the_bundled_hf_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hf.corp.example/hub/")
    catalogue = select().catalogue
    assert names(catalogue.mirrors) == ["hf-endpoint", "modelscope"]
    hf = catalogue.get("hf-endpoint")
    # As huggingface_hub: the trailing slash dropped; HF_TOKEN is its token, for its origin.
    assert (hf.kind, hf.endpoint, hf.host) == (
        "hf",
        "https://hf.corp.example/hub",
        "hf.corp.example",
    )
    assert (hf.token_env, hf.use_hf_login) == ("HF_TOKEN", False)
    assert (hf.source, hf.line) == ("HF_ENDPOINT", None)
    assert catalogue.sources == ("<builtin>", "HF_ENDPOINT")


def test_the_hf_login_goes_along_only_to_huggingface_co(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    assert select().catalogue.get("hf-endpoint").use_hf_login is True
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert select().catalogue.get("hf-endpoint").use_hf_login is False


def test_modelscope_variables_are_read_as_the_client_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "www.modelscope.ai")  # a host: https:// is added
    ms = select().catalogue.get("modelscope-endpoint")
    assert (ms.endpoint, ms.source, ms.token_env) == (
        "https://www.modelscope.ai",
        "MODELSCOPE_DOMAIN",
        "MODELSCOPE_API_TOKEN",
    )
    # ModelScope's own ids still apply (the bundled entry's id_map).
    assert ms.map_repo_id("meta-llama/Llama-3.2-1B") == "LLM-Research/Llama-3.2-1B"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:8000/")  # wins over the domain
    catalogue = select().catalogue
    assert names(catalogue.mirrors) == ["huggingface", "hf-mirror", "modelscope-endpoint"]
    assert catalogue.get("modelscope-endpoint").endpoint == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (f"https://user:{PASSWORD}@hf.example", "credentials"),
        (f"https://user:{PASSWORD}@hf.example:99999", "credentials"),  # not "not a valid URL"
        ("hf-mirror.com", "absolute http:// or https:// URL"),
        ("https://hf.example/?token=x", "query string"),
    ],
)
def test_a_bad_hf_endpoint_is_a_config_error_that_shows_no_password(
    monkeypatch: pytest.MonkeyPatch, value: str, shown: str
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", value)
    with pytest.raises(ConfigError) as info:
        select()
    assert info.value.exit_code == 2 and shown in info.value.message
    assert info.value.message.startswith("HF_ENDPOINT: ")
    assert PASSWORD not in str(info.value) + str(info.value.hint)
    assert "HF_TOKEN" in str(info.value.hint)


def test_a_credentials_url_in_a_file_is_refused_before_its_port_is_read() -> None:
    text = (
        "version: 1\nmirrors:\n  - name: a\n    kind: hf\n"
        f"    endpoint: https://bob:{PASSWORD}@hf.example:99999\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_catalogue(text, "m.yaml")
    assert "credentials" in info.value.message and PASSWORD not in info.value.message


def test_a_catalogue_file_wins_over_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "not a url at all")  # never even read: no error
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "www.modelscope.ai")
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n  - name: corp\n    kind: hf\n    endpoint: https://c.ex\n"
    )
    for how in ("--mirrors", "MODELGET_MIRRORS", "user config"):
        if how == "MODELGET_MIRRORS":
            monkeypatch.setenv("MODELGET_MIRRORS", str(cat))
        if how == "user config":
            monkeypatch.delenv("MODELGET_MIRRORS")
            user = settings.config_dir() / "mirrors.yaml"
            user.parent.mkdir(parents=True)
            user.write_text(cat.read_text())
        selection = select(cat if how == "--mirrors" else None)
        assert names(selection.catalogue.mirrors) == ["corp"]
        assert selection.origin == how
        assert selection.unused == ("HF_ENDPOINT", "MODELSCOPE_DOMAIN")


# --------------------------------------------------------------------------------------------
# --endpoint and --only


def test_endpoint_mirrors_are_named_after_their_hosts() -> None:
    made = adhoc_mirrors(
        [
            "https://hf-mirror.com/",
            "http://127.0.0.1:8080/a",
            "http://127.0.0.1:8080/b",
            "cdn=http://127.0.0.1:8080/b",
            "https://www.modelscope.cn",  # a ModelScope host: kind modelscope
            "https://hf-mirror.com",  # the same URL again counts once
        ]
    )
    assert [(m.name, m.kind, m.endpoint) for m in made] == [
        ("hf-mirror.com", "hf", "https://hf-mirror.com"),
        ("127.0.0.1-8080", "hf", "http://127.0.0.1:8080/a"),
        ("127.0.0.1-8080-2", "hf", "http://127.0.0.1:8080/b"),
        ("127.0.0.1-8080-3", "cdn", "http://127.0.0.1:8080/b"),
        ("www.modelscope.cn", "modelscope", "https://www.modelscope.cn"),
    ]
    assert all(m.token_env is None and not m.use_hf_login for m in made)
    assert {m.source for m in made} == {"--endpoint"}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("huggingface=https://hf.example", "kind must be one of"),
        ("hf-mirror.com", "absolute http:// or https:// URL"),
        (f"https://me:{PASSWORD}@hf.example:1", "credentials"),
        (f"me:{PASSWORD}@hf.example", "credentials"),
    ],
)
def test_a_bad_endpoint_is_a_usage_error(spec: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        adhoc_mirrors([spec])
    assert says in info.value.message and info.value.message.startswith("--endpoint: ")
    assert PASSWORD not in info.value.message


def test_endpoint_replaces_the_catalogue_and_ignores_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hf.corp.example")
    selection = select("/no/such/file.yaml", endpoints=["https://a.example"])  # never read
    assert names(selection.catalogue.mirrors) == ["a.example"]
    assert (selection.origin, selection.unused) == ("--endpoint", ("HF_ENDPOINT",))


def test_only_keeps_the_named_mirrors_in_catalogue_order_even_disabled() -> None:
    text = "version: 1\nextends: builtin\nmirrors:\n  - name: hf-mirror\n    enabled: false\n"
    catalogue = parse_catalogue(text, "m.yaml")
    picked = only(catalogue, ["modelscope", "hf-mirror"])
    assert names(picked.mirrors) == ["hf-mirror", "modelscope"]
    assert all(m.enabled for m in picked.mirrors)
    with pytest.raises(UsageError) as info:
        only(catalogue, ["hf-mirrr"])
    assert "hf-mirrr" in info.value.message and info.value.exit_code == 2
    assert "did you mean `hf-mirror`?" in str(info.value.hint)
    assert "huggingface, hf-mirror, modelscope" in str(info.value.hint)


# --------------------------------------------------------------------------------------------
# Against hub simulators


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    d = tmp_path / "src" / "tiny"
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 8}\n')
    (d / "model.safetensors").write_bytes(os.urandom(1 << 20))
    return d


def start(sims: list[HubSimulator], name: str) -> HubSimulator:
    sim = HubSimulator(name=name).start()
    sims.append(sim)
    return sim


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = cli.main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def pull_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["pull", REPO, "--cache-dir", str(tmp_path / "cache"), "--engine", "httpx", *extra]


def test_hf_endpoint_pulls_from_it_and_hf_token_goes_there_only(
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub = start(sims, "hub")
    hub.add_repo(REPO, repo, gated=True, token=HF_SECRET)  # downloads need HF_TOKEN
    ms = start(sims, "ms")  # asked too, but without the repo: the bytes come from the hub
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", ms.url)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", MS_SECRET)
    code, lines, err = run(capsys, *pull_args(tmp_path))
    assert code == 0, err
    assert lines[-1]["event"] == "result" and lines[-1]["status"] == "ok"
    assert hub.requests(route="hf-resolve"), "the pull used HF_ENDPOINT"
    assert all(r.authorization == f"Bearer {HF_SECRET}" for r in hub.log)
    assert ms.log and all(r.authorization in (None, f"Bearer {MS_SECRET}") for r in ms.log)
    assert all(HF_SECRET not in str(r.to_dict()) for r in ms.log)
    assert HF_SECRET not in err and HF_SECRET not in json.dumps(lines)


def test_a_catalogue_file_wins_over_hf_endpoint(
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listed, ignored = start(sims, "listed"), start(sims, "ignored")
    for sim in (listed, ignored):
        sim.add_repo(REPO, repo)
    monkeypatch.setenv("HF_ENDPOINT", ignored.url)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        f"version: 1\nmirrors:\n  - name: listed\n    kind: hf\n    endpoint: {listed.url}\n"
    )
    code, events, err = run(capsys, *pull_args(tmp_path, "--mirrors", str(cat)))
    assert code == 0, err
    assert listed.requests(route="hf-resolve") and not ignored.log
    # The pull says the variable is not used, once (it said nothing).
    said = [e["text"] for e in events if e.get("event") == "message"]
    assert sum("HF_ENDPOINT set but not used" in t for t in said) == 1, said
    code, (shown,), err = run(capsys, "mirrors", "--mirrors", str(cat))
    assert shown["unused"] == ["HF_ENDPOINT"] and shown["origin"] == "--mirrors"


def test_modelscope_domain_reaches_the_simulators_modelscope_api(
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ms = start(sims, "ms")
    ms.add_repo(REPO, repo)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", ms.url)  # with its http:// scheme, kept
    # --only: the bundled hf mirrors stay out of a test that must not leave 127.0.0.1.
    code, lines, err = run(capsys, *pull_args(tmp_path, "--only", "modelscope-endpoint"))
    assert code == 0, err
    assert lines[-1]["status"] == "ok"
    assert ms.requests(route="ms-file") and not ms.requests(route="hf-resolve")
    code, (shown,), err = run(capsys, "mirrors")
    row = next(m for m in shown["mirrors"] if m["name"] == "modelscope-endpoint")
    assert (row["endpoint"], row["source"]) == (ms.url, "MODELSCOPE_DOMAIN")


def test_two_endpoints_are_two_mirrors_and_only_picks_one(
    tmp_path: Path,
    repo: Path,
    sims: list[HubSimulator],
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = start(sims, "a"), start(sims, "b")
    for sim in (a, b):
        sim.add_repo(REPO, repo)
    code, (plan,), err = run(
        capsys, *pull_args(tmp_path, "--dry-run", "--endpoint", a.url, "--endpoint", b.url)
    )
    assert code == 0, err
    name_a, name_b = f"127.0.0.1-{a.port}", f"127.0.0.1-{b.port}"
    used = {s["mirror"] for f in plan["plan"]["files"] for s in f["sources"]}
    assert used == {name_a, name_b}

    a.clear_log()
    b.clear_log()
    argv = pull_args(tmp_path, "--endpoint", a.url, "--endpoint", b.url, "--only", name_b)
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert b.requests(route="hf-resolve") and not a.log


def test_an_unknown_only_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, (error,), _ = run(capsys, "pull", REPO, "--dry-run", "--only", "hf-mirrr")
    assert code == 2 and error["exit_code"] == 2 and error["error"]["code"] == "usage"
    assert "did you mean `hf-mirror`?" in error["error"]["hint"]
