"""The ids and positionals of the ecosystem (issue 17 §4): ``REPO@REV``, ``hf://`` URLs,
folders as positionals, and a single-file pull printing the file's path, as ``hf download``."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelget import cli
from modelget.datatypes import FileEntry
from modelget.errors import UsageError
from modelget.manifest import parse_target, select_files
from modelget.testing.hubsim import HubSimulator

REPO = "acme/ids"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("acme/ids", ("acme/ids", None, ())),
        ("acme/ids@v1", ("acme/ids", "v1", ())),
        ("hf://acme/ids", ("acme/ids", None, ())),
        ("hf://models/acme/ids", ("acme/ids", None, ())),
        ("hf://acme/ids@refs%2Fpr%2F1", ("acme/ids", "refs/pr/1", ())),
        (
            "hf://acme/ids@main/1_Pooling/config.json",
            ("acme/ids", "main", ("1_Pooling", "config.json")),
        ),
        ("hf://acme/ids/config.json", ("acme/ids", None, ("config.json",))),
    ],
)
def test_targets_parse_like_the_hub_clients(
    text: str, want: tuple[str, str | None, tuple[str, ...]]
) -> None:
    repo_id, rev, paths, _ = parse_target(text)
    assert (repo_id, rev) == want[:2]
    assert "/".join(paths) == "/".join(want[2])


@pytest.mark.parametrize("text", ["acme/ids@"])
def test_bad_targets_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_target(text)


def test_a_folder_positional_selects_every_file_under_it() -> None:
    files = [
        FileEntry(p, 1, git_sha1="a" * 40)
        for p in ["config.json", "1_Pooling/config.json", "1_Pooling/x.json", "2_Dense/y.bin"]
    ]
    for name in ("1_Pooling/", "1_Pooling"):
        kept, _ = select_files(files, filenames=[name])
        assert sorted(f.path for f in kept) == ["1_Pooling/config.json", "1_Pooling/x.json"]
    with pytest.raises(UsageError, match="3_Nothing"):
        select_files(files, filenames=["3_Nothing/"])


@pytest.fixture
def hub(tmp_path: Path, sims: list[HubSimulator]) -> tuple[HubSimulator, Path, str]:
    repo = tmp_path / "repo"
    (repo / "1_Pooling").mkdir(parents=True)
    (repo / "config.json").write_text("{}\n")
    (repo / "1_Pooling" / "config.json").write_text('{"pooling": 1}\n')
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    commit = sim.add_repo(REPO, repo)
    v2 = tmp_path / "repo-v2"  # the simulator serves a commit's files from its directory
    (v2 / "1_Pooling").mkdir(parents=True)
    (v2 / "config.json").write_text('{"changed": 1}\n')
    (v2 / "1_Pooling" / "config.json").write_text('{"pooling": 1}\n')
    sim.add_repo(REPO, v2, branch="v2")
    cat = sim.write_catalogue(tmp_path / "m.yaml")
    return sim, cat, commit


def test_cli_takes_repo_at_rev_hf_urls_and_prints_a_single_file_s_path(
    tmp_path: Path, hub: tuple[HubSimulator, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, cat, commit = hub
    cache = tmp_path / "cache"
    base = ["--mirrors", str(cat), "--cache-dir", str(cache), "--quiet"]
    assert cli.main(["pull", f"{REPO}@v2", "config.json", *base]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.name == "config.json" and printed.read_text() == '{"changed": 1}\n'
    assert cli.main(["pull", f"hf://{REPO}@{commit}/config.json", *base]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.read_text() == "{}\n" and commit in str(printed)
    assert cli.main(["pull", REPO, "1_Pooling/", *base]) == 0
    snapshot = Path(capsys.readouterr().out.strip())
    assert (snapshot / "1_Pooling" / "config.json").is_file()
    code = cli.main(["pull", f"{REPO}@v2", "--revision", "main", *base])
    assert code == 2 and "two revisions" in capsys.readouterr().err
