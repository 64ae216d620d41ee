"""The load test on the real fixtures: healthy models load, broken ones are named precisely."""

from __future__ import annotations

import json
import os
import shutil
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelget import cli, loadtest
from modelget.testing import fixtures
from modelget.testing.hubsim import HubSimulator


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _write_safetensors(path: Path, header: dict[str, object], data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _shards(root: Path) -> list[Path]:
    return sorted(root.glob("*.safetensors"))


def test_minilm_and_its_sharded_copy_load_and_every_tensor_is_counted(
    minilm_dir: Path, minilm_sharded_dir: Path
) -> None:
    single = loadtest.load_model(minilm_dir, "cpu")
    sharded = loadtest.load_model(minilm_sharded_dir, "cpu")
    for report in (single, sharded):
        assert report.ok, report.problems
        assert report.device == "cpu" and report.backend in ("torch", "numpy")
        assert report.tensors > 100 and report.first_tensor_s is not None
        assert report.seconds > 0 and report.gbps is not None
    # The same weights, cut differently: same tensors, same bytes.
    assert single.tensors == sharded.tensors and single.bytes == sharded.bytes
    header_bytes = sum(
        t.end - t.start
        for t in loadtest.read_safetensors_header(minilm_dir / "model.safetensors")[0]
    )
    assert single.bytes == header_bytes
    index = next(c for c in sharded.checks if c.kind == "index")
    assert index.ok and index.tensors == sharded.tensors


def test_a_ctranslate2_model_bin_is_recognised_and_never_given_to_torch(whisper_dir: Path) -> None:
    report = loadtest.load_model(whisper_dir, "cpu")
    assert report.ok
    (binary,) = [c for c in report.checks if c.path == "model.bin"]
    assert binary.kind == "other-bin" and binary.note and "not a PyTorch" in binary.note
    assert report.tensors == 0
    assert any("no safetensors or PyTorch weights" in n for n in report.notes)


def test_a_damaged_shard_is_caught(tmp_path: Path, minilm_sharded_dir: Path) -> None:
    root = _copy(minilm_sharded_dir, tmp_path / "m")
    shard = _shards(root)[1]
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size - 1000)
    report = loadtest.load_model(root, "cpu")
    assert not report.ok and report.backend is None  # nothing is loaded from a broken model
    assert any(shard.name in p and "truncated" in p for p in report.problems), report.problems


def test_a_shard_with_a_garbled_header_is_caught(tmp_path: Path, minilm_sharded_dir: Path) -> None:
    root = _copy(minilm_sharded_dir, tmp_path / "m")
    shard = _shards(root)[0]
    with shard.open("r+b") as f:
        f.seek(9)
        f.write(b"\xff\xfe")
    report = loadtest.load_model(root, "cpu")
    assert any(shard.name in p and "not valid JSON" in p for p in report.problems)


def test_a_missing_shard_is_named_by_the_index_check(
    tmp_path: Path, minilm_sharded_dir: Path
) -> None:
    root = _copy(minilm_sharded_dir, tmp_path / "m")
    gone = _shards(root)[2]
    gone.unlink()
    report = loadtest.load_model(root, "cpu")
    assert not report.ok
    assert any(gone.name in p and "not present" in p for p in report.problems), report.problems


def test_a_stale_index_is_caught(tmp_path: Path, minilm_sharded_dir: Path) -> None:
    root = _copy(minilm_sharded_dir, tmp_path / "m")
    (index_path,) = root.glob("*.index.json")
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    tensor = next(t for t, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][tensor] = shards[1]  # the index says the tensor is in the wrong shard
    index_path.write_text(json.dumps(index))
    report = loadtest.load_model(root, "cpu")
    assert not report.ok
    assert any("stale" in p and tensor in p for p in report.problems), report.problems


def test_a_broken_config_and_a_dangling_snapshot_link_are_caught(
    tmp_path: Path, minilm_dir: Path
) -> None:
    root = _copy(minilm_dir, tmp_path / "m")
    (root / "config.json").write_text("{not json")
    os.symlink("../../blobs/0000", root / "tokenizer.json.lost")
    report = loadtest.load_model(root, "cpu")
    assert any(p.startswith("config.json: config.json does not parse") for p in report.problems)
    assert any(p.startswith("tokenizer.json.lost: ") and "missing" in p for p in report.problems)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
        ({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12"),
        (
            {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}},
            b"\0" * 8,
            "invalid shape",
        ),
        (
            {
                "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
            },
            b"\0" * 6,
            "overlaps",
        ),
        (
            {
                "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]},
            },
            b"\0" * 6,
            "gap",
        ),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 5, "trailing"),
        ({"__metadata__": {"format": "pt"}}, b"", None),
    ],
)
def test_safetensors_headers_are_validated(
    tmp_path: Path, header: dict[str, object], data: bytes, message: str | None
) -> None:
    path = tmp_path / "x.safetensors"
    _write_safetensors(path, header, data)
    if message is None:
        loadtest.read_safetensors_header(path)
    else:
        with pytest.raises(ValueError, match=message):
            loadtest.read_safetensors_header(path)


def test_warm_puts_the_files_in_the_page_cache(tmp_path: Path, minilm_dir: Path) -> None:
    root = _copy(minilm_dir, tmp_path / "m")
    assert loadtest.warm(root) == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    fraction = loadtest.cached_fraction([root / "model.safetensors"])
    assert fraction is not None and fraction > 0.5


def test_storage_of_names_the_mount_that_holds_the_model(tmp_path: Path) -> None:
    info = loadtest.storage_of(tmp_path)
    assert info.mount_point is not None and str(tmp_path.resolve()).startswith(info.mount_point)
    assert info.fstype


@pytest.fixture
def hub(minilm_sharded_dir: Path) -> Iterator[HubSimulator]:
    sim = HubSimulator(name="hub").start()
    sim.add_repo(fixtures.MINILM_REPO_ID, minilm_sharded_dir)
    yield sim
    sim.stop()


def test_pull_load_test_and_load_test_by_repo_id_through_the_cli(
    tmp_path: Path, hub: HubSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = tmp_path / "m.yaml"
    cat.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            mirrors:
              - name: hub
                kind: hf
                endpoint: {hub.url}
            """
        )
    )
    cache = tmp_path / "cache"
    repo = fixtures.MINILM_REPO_ID
    common = ["--mirrors", str(cat), "--cache-dir", str(cache), "--engine", "httpx"]
    code = cli.main(["pull", repo, *common, "--load-test", "--warm", "--json"])
    out = capsys.readouterr().out.splitlines()
    result = json.loads(out[-1])
    assert code == 0 and result["load_test"]["ok"] and result["load_test"]["tensors"] > 100

    assert cli.main(["load-test", repo, "--cache-dir", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["exit_code"] == 0 and report["path"] == result["path"]

    # Break a shard's blob in the cache: the load test by id now fails with exit code 4.
    snapshot = Path(result["path"])
    shard = os.path.realpath(_shards(snapshot)[0])
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 10)
    assert cli.main(["load-test", repo, "--cache-dir", str(cache)]) == 4
    err = capsys.readouterr().err
    assert "would not load" in err and "truncated" in err

    assert cli.main(["load-test", "nobody/nothing", "--cache-dir", str(cache)]) != 0
    assert "not in the cache" in capsys.readouterr().err
