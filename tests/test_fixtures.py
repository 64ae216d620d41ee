"""The real model fixtures: pinned bytes, the torch-free re-shard, the synthetic checkpoint."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from modelget.errors import FixtureError
from modelget.testing import fixtures as fx


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _link_wheels(dest: Path) -> None:
    """Put the already-downloaded fixture wheels into ``dest`` (hard links where possible)."""
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in fx.WHEELS:
        src = fx.wheels_dir() / wheel.filename
        try:
            os.link(src, dest / wheel.filename)
        except OSError:
            shutil.copyfile(src, dest / wheel.filename)


def _tensor_bytes(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), read by hand."""
    header, start = fx.read_safetensors_header(path)
    header.pop("__metadata__", None)
    data = path.read_bytes()
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[start + begin : start + end])
    return out


# -- pinned data ---------------------------------------------------------------------------------


def test_requirements_file_matches_wheels() -> None:
    text = importlib.resources.files("modelget.testing").joinpath(fx.REQUIREMENTS_FILE).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == [w.requirement for w in fx.WHEELS]
    for wheel in fx.WHEELS:
        assert wheel.filename.startswith(wheel.name.replace("-", "_") + "-" + wheel.version + "-")
        assert len(wheel.sha256) == 64


def test_pinned_tables_are_consistent() -> None:
    assert len(fx.MINILM_FILES) == 13
    assert len(fx.WHISPER_FILES) == 4
    assert [p for p, d in fx.MINILM_FILES.items() if d.lfs] == ["model.safetensors"]
    assert [p for p, d in fx.WHISPER_FILES.items() if d.lfs] == ["model.bin"]
    shards = [p for p in fx.MINILM_SHARDED_FILES if p.endswith(".safetensors")]
    assert shards == [fx.shard_name(i, 4) for i in range(1, 5)]
    assert "model.safetensors" not in fx.MINILM_SHARDED_FILES
    for path, digest in fx.MINILM_FILES.items():
        if path != "model.safetensors":
            assert fx.MINILM_SHARDED_FILES[path] == digest
    # Shards hold the tensors, their headers, and nothing else.
    shard_sizes = sum(fx.MINILM_SHARDED_FILES[p].size for p in shards)
    assert shard_sizes > fx.MINILM_TOTAL_TENSOR_BYTES


# -- the real snapshots --------------------------------------------------------------------------


def _check_snapshot(directory: Path, expected: Any) -> None:
    files = fx.list_files(directory)
    assert sorted(files) == sorted(expected)
    for rel, digest in expected.items():
        path = files[rel]
        assert path.stat().st_size == digest.size, rel
        assert _sha256(path) == digest.sha256, rel
        if digest.git_sha1 is not None:
            assert fx.git_blob_sha1(path) == digest.git_sha1, rel


@pytest.mark.fixtures
def test_minilm_snapshot(minilm_dir: Path) -> None:
    _check_snapshot(minilm_dir, fx.MINILM_FILES)
    assert (minilm_dir / ".gitattributes").is_file()
    assert (minilm_dir / "1_Pooling" / "config.json").is_file()
    # Upstream's .gitattributes is what makes model.safetensors (and only it) an LFS file.
    assert "model.safetensors filter=lfs" in (minilm_dir / ".gitattributes").read_text()
    header, _ = fx.read_safetensors_header(minilm_dir / "model.safetensors")
    assert header.pop("__metadata__") == {"format": "pt"}
    assert len(header) == fx.MINILM_TENSOR_COUNT
    assert fx.minilm_dir() == minilm_dir  # reuse returns the same directory


@pytest.mark.fixtures
def test_whisper_snapshot(whisper_dir: Path) -> None:
    _check_snapshot(whisper_dir, fx.WHISPER_FILES)
    config = json.loads((whisper_dir / "config.json").read_text())
    assert isinstance(config, dict)
    # model.bin is CTranslate2's format, not a zip/pickle torch checkpoint.
    assert not (whisper_dir / "model.bin").read_bytes()[:4].startswith((b"PK", b"\x80"))


@pytest.mark.fixtures
def test_minilm_sharded(minilm_dir: Path, minilm_sharded_dir: Path) -> None:
    _check_snapshot(minilm_sharded_dir, fx.MINILM_SHARDED_FILES)

    index = json.loads((minilm_sharded_dir / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_size": fx.MINILM_TOTAL_TENSOR_BYTES}
    original = _tensor_bytes(minilm_dir / "model.safetensors")
    assert len(original) == fx.MINILM_TENSOR_COUNT
    assert sorted(index["weight_map"]) == sorted(original)

    seen: dict[str, tuple[str, list[int], bytes]] = {}
    for i in range(1, 5):
        shard = minilm_sharded_dir / fx.shard_name(i, 4)
        header, _ = fx.read_safetensors_header(shard)
        assert header["__metadata__"] == {"format": "pt"}
        tensors = _tensor_bytes(shard)
        assert all(index["weight_map"][name] == shard.name for name in tensors)
        seen.update(tensors)
    assert seen == original  # every tensor: same dtype, shape and bytes

    # The safetensors library reads them back equal too.
    with safe_open(str(minilm_dir / "model.safetensors"), framework="np") as whole:
        for name in ("embeddings.position_ids", "encoder.layer.5.output.dense.weight"):
            shard = minilm_sharded_dir / index["weight_map"][name]
            with safe_open(str(shard), framework="np") as part:
                a, b = whole.get_tensor(name), part.get_tensor(name)
                assert a.dtype == b.dtype and a.shape == b.shape
                assert np.array_equal(a, b)

    for rel in fx.MINILM_FILES:
        if rel != "model.safetensors":
            assert (minilm_sharded_dir / rel).read_bytes() == (minilm_dir / rel).read_bytes()


@pytest.mark.fixtures
def test_reshard_is_deterministic(minilm_dir: Path, tmp_path: Path) -> None:
    fx.reshard(minilm_dir, tmp_path / "a", fx.MINILM_SHARD_BYTES)
    fx.reshard(minilm_dir, tmp_path / "b", fx.MINILM_SHARD_BYTES)
    a, b = fx.list_files(tmp_path / "a"), fx.list_files(tmp_path / "b")
    assert sorted(a) == sorted(b) == sorted(fx.MINILM_SHARDED_FILES)
    for rel in a:
        assert a[rel].read_bytes() == b[rel].read_bytes(), rel
    assert fx.verify_dir(tmp_path / "a", fx.MINILM_SHARDED_FILES) == []


def test_reshard_small_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    tensors: dict[str, npt.NDArray[Any]] = {
        "z.first": rng.standard_normal((64, 32)).astype(np.float32),  # 8192 B
        "a.second": np.arange(300, dtype=np.int64),  # 2400 B
        "m.third": rng.standard_normal(1000).astype(np.float16),  # 2000 B
        "b.big": rng.integers(0, 255, size=20000, dtype=np.uint8),  # 20000 B > limit
        "c.last": np.ones(5, dtype=np.float32),
    }
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "np", "k": "v"})
    (src / "config.json").write_text('{"x": 1}\n')
    (src / "sub" / "extra.txt").write_text("hello\n")

    dst = tmp_path / "dst"
    fx.reshard(src, dst, 10_000)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    shard_names = sorted(set(index["weight_map"].values()))
    n = len(shard_names)
    assert shard_names == [fx.shard_name(i, n) for i in range(1, n + 1)]
    assert not (dst / "model.safetensors").exists()
    assert (dst / "config.json").read_text() == '{"x": 1}\n'
    assert (dst / "sub" / "extra.txt").read_text() == "hello\n"
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())

    for name in shard_names:
        header, _ = fx.read_safetensors_header(dst / name)
        assert header.pop("__metadata__") == {"format": "np", "k": "v"}
        sizes = [e - b for b, e in (info["data_offsets"] for info in header.values())]
        assert len(sizes) == 1 or sum(sizes) <= 10_000  # greedy, oversized tensors alone
    for name, array in tensors.items():
        with safe_open(str(dst / index["weight_map"][name]), framework="np") as f:
            got = f.get_tensor(name)
        assert got.dtype == array.dtype and np.array_equal(got, array)


def test_reshard_errors(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match=r"no model\.safetensors"):
        fx.reshard(tmp_path, tmp_path / "out", 1000)
    with pytest.raises(ValueError, match="positive"):
        fx.reshard(tmp_path, tmp_path / "out", 0)


# -- building, reusing and repairing fixture directories ------------------------------------------


def test_missing_wheel_is_actionable(tmp_path: Path) -> None:
    with pytest.raises(FixtureError) as info:
        fx.minilm_dir(tmp_path)
    assert "python -m modelget.testing fixtures" in info.value.message
    assert info.value.hint
    assert not (tmp_path / "minilm").exists()
    assert fx.missing_wheels(tmp_path / "wheels") == list(fx.WHEELS)


@pytest.mark.fixtures
def test_missing_wheels_detects_corruption(minilm_dir: Path, tmp_path: Path) -> None:
    _link_wheels(tmp_path)
    assert fx.missing_wheels(tmp_path) == []
    assert fx.download_wheels(tmp_path) == [tmp_path / w.filename for w in fx.WHEELS]
    bad = tmp_path / fx.WHISPER_WHEEL.filename
    bad.unlink()
    bad.write_bytes(b"not a wheel")
    assert fx.missing_wheels(tmp_path) == [fx.WHISPER_WHEEL]


@pytest.mark.fixtures
def test_fixture_is_rebuilt_when_damaged(whisper_dir: Path, tmp_path: Path) -> None:
    _link_wheels(tmp_path / "wheels")
    built = fx.whisper_dir(tmp_path)
    assert built == tmp_path / "whisper"
    assert fx.verify_dir(built, fx.WHISPER_FILES) == []

    # Reuse is a stat-only check: nothing is rewritten.
    inode = (built / "model.bin").stat().st_ino
    assert fx.whisper_dir(tmp_path) == built
    assert (built / "model.bin").stat().st_ino == inode

    # Same-size in-place damage and an extra file are noticed and repaired.
    with (built / "config.json").open("r+b") as f:
        f.write(b"X")
    (built / "stray.txt").write_text("x")
    assert fx.whisper_dir(tmp_path) == built
    assert fx.verify_dir(built, fx.WHISPER_FILES) == []
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# -- synthetic checkpoints -----------------------------------------------------------------------


def test_synthetic_plan() -> None:
    dims, layers = fx.synthetic_plan(2_000_000_000)
    assert dims == fx.TINYLLAMA_DIMS and layers == 20  # research: 183 tensors, 2.02 GB
    assert fx.synthetic_plan(8_000_000_000) == (fx.TINYLLAMA_DIMS, 88)
    small, layers = fx.synthetic_plan(24_000_000)
    assert small.hidden_size < 2048 and layers >= 2
    tiny = fx.LlamaDims(hidden_size=128, intermediate_size=256, num_attention_heads=2,
                        num_key_value_heads=1, vocab_size=100)  # fmt: skip
    assert fx.synthetic_plan(1_000_000, tiny)[0] == tiny


def _check_synthetic(out: Path, digests: dict[str, str]) -> dict[str, Any]:
    files = fx.list_files(out)
    assert sorted(files) == sorted(digests)
    for rel, digest in digests.items():
        assert _sha256(files[rel]) == digest, rel

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    h, v = config["hidden_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    index: dict[str, Any] = json.loads((out / "model.safetensors.index.json").read_text())

    total = 0
    shapes: dict[str, list[int]] = {}
    for shard in sorted(set(index["weight_map"].values())):
        header, start = fx.read_safetensors_header(out / shard)
        header.pop("__metadata__")
        data = np.fromfile(out / shard, dtype="<u2", offset=start)
        end = 0
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            assert info["dtype"] == "BF16"
            assert index["weight_map"][name] == shard
            begin, stop = info["data_offsets"]
            assert begin == end  # contiguous
            end = stop
            values = data[begin // 2 : stop // 2]
            assert ((values >> 7) & 0xFF != 0xFF).all(), name  # no inf/nan
            if name.endswith("norm.weight"):
                assert (values == 0x3F80).all()
            else:
                assert ((values >> 7) & 0xFF == 120).all()  # |x| in [2^-7, 2^-6)
            shapes[name] = info["shape"]
        assert end == data.nbytes
        total += end
        with safe_open(str(out / shard), framework="np") as f:  # the library accepts the file
            assert sorted(f.keys()) == sorted(header)
            assert f.metadata() == {"format": "pt"}
    assert index["metadata"]["total_size"] == total
    assert sorted(shapes) == sorted(index["weight_map"])
    assert shapes["model.embed_tokens.weight"] == [v, h] == shapes["lm_head.weight"]
    layers = config["num_hidden_layers"]
    assert len(shapes) == 9 * layers + 3
    last = f"model.layers.{layers - 1}."
    assert shapes[last + "self_attn.k_proj.weight"] == [kv, h]
    assert shapes[last + "mlp.down_proj.weight"] == [h, config["intermediate_size"]]
    return index


def test_make_synthetic_small(tmp_path: Path) -> None:
    size = 24_000_000
    a = fx.make_synthetic(tmp_path / "a", size, shard_bytes=10_000_000, seed=0)
    b = fx.make_synthetic(tmp_path / "b", size, shard_bytes=10_000_000, seed=0)
    c = fx.make_synthetic(tmp_path / "c", size, shard_bytes=10_000_000, seed=1)
    assert a == b
    assert sorted(a) == sorted(c) and a["config.json"] == c["config.json"]
    assert all(a[k] != c[k] for k in a if k.endswith(".safetensors"))
    assert len([k for k in a if k.endswith(".safetensors")]) == 3

    index = _check_synthetic(tmp_path / "a", a)
    assert index["metadata"]["total_size"] >= size
    _check_synthetic(tmp_path / "c", c)

    # Tensor bytes do not depend on the shard layout; old shards are cleaned up.
    one = fx.make_synthetic(tmp_path / "a", size, shard_bytes=10**9, seed=0)
    assert [k for k in one if k.endswith(".safetensors")] == [fx.shard_name(1, 1)]
    _check_synthetic(tmp_path / "a", one)
    merged = _tensor_bytes(tmp_path / "a" / fx.shard_name(1, 1))
    for i in range(1, 4):
        for name, tensor in _tensor_bytes(tmp_path / "b" / fx.shard_name(i, 3)).items():
            assert merged[name] == tensor


def test_fixtures_main_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert fx.main(["--synthetic", str(out), "--size-gb", "0.004", "--shard-gb", "0.002"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic:" in printed and "model.safetensors.index.json" in printed
    assert (out / "config.json").is_file()


def test_fixtures_main_reports_missing_wheels(tmp_path: Path) -> None:
    assert fx.main(["build", "--root", str(tmp_path)]) == 1
