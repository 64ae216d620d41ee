"""Usage errors a new user meets in the first week (issue 17 §3, §4): exit 2, a message that
says what to do, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelget import cli
from modelget.cli.commands import rate
from modelget.errors import UsageError
from modelget.testing.hubsim import HubSimulator

REPO = "acme/usage"


@pytest.fixture
def hub(tmp_path: Path, sims: list[HubSimulator]) -> HubSimulator:
    repo = tmp_path / "repo"
    (repo / "1_Pooling").mkdir(parents=True)
    (repo / "model.safetensors").write_bytes(b"\0" * 4096)
    (repo / "config.json").write_text("{}\n")
    (repo / "1_Pooling" / "config.json").write_text("{}\n")
    sim = HubSimulator(name="hub").start()
    sims.append(sim)
    sim.add_repo(REPO, repo)
    return sim


def test_an_abbreviated_option_is_refused_not_guessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse would take --mirror for --mirrors (and --cache for --cache-dir) without a word.
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pull", REPO, "--mirror", str(tmp_path / "x.yaml")])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --mirror" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("50M", 50_000_000),
        ("800K", 800_000),
        ("1.5G", 1_500_000_000),
        ("2000", 2000),
        ("50MB/s", 50_000_000),
        ("64MiB", 64 * 1024 * 1024),
        ("1 KiB/s", 1024),
        ("10mb", 10_000_000),
    ],
)
def test_rates_read_decimal_and_binary_units(text: str, bps: int) -> None:
    assert rate(text) == bps


@pytest.mark.parametrize("text", ["", " ", "-5M", "0", "abc", "5X", "iB"])
def test_a_bad_rate_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        rate(text)


def test_an_empty_max_rate_on_the_command_line_is_a_usage_error(
    tmp_path: Path, hub: HubSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    code = cli.main(
        ["pull", REPO, "--mirrors", str(cat), "--cache-dir", str(tmp_path / "c"), "--max-rate", ""]
    )
    assert code == 2 and "not a rate" in capsys.readouterr().err


def test_an_include_that_matches_nothing_is_exit_2_names_near_matches_and_writes_nothing(
    tmp_path: Path, hub: HubSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = hub.write_catalogue(tmp_path / "m.yaml")
    cache = tmp_path / "c"
    code = cli.main(
        [
            "pull",
            REPO,
            "--mirrors",
            str(cat),
            "--cache-dir",
            str(cache),
            "--include",
            "*.SAFETENSORS",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "match no file" in err and "model.safetensors" in err  # the near match
    assert not cache.exists()  # no refs/main to a commit without a snapshot
