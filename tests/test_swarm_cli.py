"""``modelget pull --swarm ...``, ``export --torrents`` and ``swarm serve`` on the command line:
the flags' checks, the role from ``RANK``, the JSON fields."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelget import api, cli
from modelget.cli.commands import duration
from modelget.engines import aria2c_path
from modelget.errors import UsageError
from modelget.swarm.torrent import make_torrent, torrent_relpath
from modelget.testing.hubsim import HubSimulator

REPO = "acme/swarm-cli"
BIG = "model.safetensors"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("1d", 86400.0)],
)
def test_duration(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-1", "5 minutes", "1w"])
def test_a_bad_duration_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        duration(text)


def _last_json(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


@pytest.mark.parametrize(
    "argv",
    [
        ["pull", "acme/x", "--swarm-role", "seed"],
        ["pull", "acme/x", "--swarm-dir", "d"],
        ["pull", "acme/x", "--swarm", "tracker:6969"],
        ["pull", "acme/x", "--swarm", "lpd", "--seed-for", "soon"],
        ["pull", "acme/x", "--swarm", "lpd", "--swarm-stall", "0"],
        ["pull", "acme/x", "--swarm", "lpd", "--swarm-port", "0"],
        ["swarm", "serve", "acme/x"],
    ],
)
def test_swarm_flags_are_checked(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli.main([*argv, "--json"])
    except SystemExit as exc:  # argparse's own errors end this way (after the JSON line)
        code = int(exc.code or 0)
    out, _ = capsys.readouterr()
    assert code == 2
    if out.strip():
        assert _last_json(out)["error"]["code"] == "usage"


@pytest.mark.skipif(aria2c_path() is None, reason="aria2c is not installed")
@pytest.mark.timeout(90)
def test_rank_zero_seeds_a_cold_model_then_serves_it(
    tmp_path: Path,
    sims: list[HubSimulator],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random.Random(181).randbytes(3 * 1024 * 1024 + 3)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / BIG).write_bytes(data)
    (repo / "config.json").write_text("{}\n")
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    hub.add_repo(REPO, repo)
    cat = tmp_path / "m.yaml"
    cat.write_text(
        "version: 1\nmirrors:\n"
        + textwrap.indent(f"- name: hub\n  kind: hf\n  endpoint: {hub.url}\n", "  ")
    )
    monkeypatch.setenv("RANK", "0")
    tdir = tmp_path / "torrents"
    swarm = ["--swarm", "http://127.0.0.1:9/announce", "--swarm-dir", str(tdir)]
    swarm += ["--swarm-interface", "127.0.0.1"]
    code = cli.main(
        [
            "pull",
            REPO,
            "--mirrors",
            str(cat),
            "--cache-dir",
            str(tmp_path / "c"),
            "--json",
            *swarm,
            "--seed-for",
            "0",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0, out
    result = _last_json(out)
    assert result["swarm_role"] == "seed"
    assert result["bytes_from_peers"] == 0
    assert result["bytes_from_mirrors"] == result["bytes_fetched"] >= len(data)
    torrent, sha = make_torrent(repo / BIG)
    assert (tdir / torrent_relpath(sha)).read_bytes() == torrent.to_bytes()

    code = cli.main(
        [
            "swarm",
            "serve",
            REPO,
            "--cache-dir",
            str(tmp_path / "c"),
            "--json",
            *swarm,
            "--seed-for",
            "1s",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0, out
    served = _last_json(out)
    assert served["info_hashes"] == [torrent.info_hash]
    assert served["bytes"] == len(data)

    exported = api.export(REPO, tmp_path / "tree", cache_dir=tmp_path / "c", torrents=True)
    assert exported.torrents == 1
    assert (tmp_path / "tree" / "torrents" / torrent_relpath(sha)).read_bytes() == (
        torrent.to_bytes()
    )
