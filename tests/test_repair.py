"""Corruption is found and repaired, not only reported (issue 17 §2).

A blob whose bytes change under a complete snapshot: ``load-test`` fails naming it (cheaply,
by its stamp; with ``--verify`` by hashing), ``pull`` notices and fetches it again, ``pull
--repair`` and ``verify --repair`` fetch only what fails, ``pull --force-download`` fetches
everything. Real simulator, real engines, real files.
"""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.engines import EngineName, EngineOptions
from modelget.testing.hubsim import HubSimulator, RequestRecord

REPO = "acme/repair"
FAST = EngineOptions(stall_timeout_s=2.0, retry_wait_s=0.1, max_tries=3)
WEIGHTS = "model.safetensors"


def safetensors(n: int) -> bytes:
    """A valid safetensors file: one float32 tensor of ``n`` values."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    data = struct.pack(f"<{n}f", *(random.Random(7).random() for _ in range(n)))
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / WEIGHTS).write_bytes(safetensors(300_000))  # 1.2 MB
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    (root / "tokenizer.json").write_text('{"vocab": ["a", "b"]}\n')
    return root


@pytest.fixture
def hub(repo: Path, sims: list[HubSimulator]) -> HubSimulator:
    sim = HubSimulator(name="hub", cdn=True).start()
    sims.append(sim)
    sim.add_repo(REPO, repo)
    return sim


def sent(sim: HubSimulator, name: str) -> int:
    """Body bytes of a small (not LFS) file served: the hub serves those itself, by name."""

    def body(r: RequestRecord) -> bool:
        return r.route == "hf-resolve" and r.method == "GET" and r.bytes_sent > 1

    return sum(r.bytes_sent for r in sim.log if body(r) and r.path.endswith("/" + name))


def corrupt(path: Path, *, keep_mtime: bool) -> None:
    """Flip a byte in the tensor data of the file's bytes (a snapshot link's blob), same size;
    with ``keep_mtime`` its modification time is put back (what a stamp cannot see)."""
    real = Path(os.path.realpath(path))
    st = real.stat()
    os.chmod(real, 0o644)
    with open(real, "r+b") as f:
        f.seek(st.st_size - 100)
        byte = f.read(1)
        f.seek(st.st_size - 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_load_test_fails_on_a_changed_blob_and_names_it(
    tmp_path: Path, hub: HubSimulator, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx", options=FAST)
    good = api.load_test(first.path, device="cpu")
    assert good.ok and good.integrity.startswith("stamps")
    corrupt(Path(first.path) / WEIGHTS, keep_mtime=False)
    bad = api.load_test(first.path, device="cpu")
    assert not bad.ok and bad.exit_code == 4 and bad.tensors == 0
    assert any(WEIGHTS in p and "changed" in p for p in bad.problems), bad.problems
    code = cli.main(["load-test", first.path, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 4 and WEIGHTS in err and "integrity: stamps" in err


def test_load_test_verify_hashes_every_file_and_catches_what_a_stamp_cannot(
    tmp_path: Path, hub: HubSimulator
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx", options=FAST)
    corrupt(Path(first.path) / WEIGHTS, keep_mtime=True)
    full = api.load_test(first.path, device="cpu", verify=True)
    assert not full.ok and full.integrity.startswith("every file hashed")
    assert any(WEIGHTS in p and "corrupted" in p for p in full.problems), full.problems


def test_a_pull_notices_a_changed_blob_and_fetches_it_again(
    engine: EngineName, tmp_path: Path, hub: HubSimulator, repo: Path
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    corrupt(Path(first.path) / WEIGHTS, keep_mtime=False)
    again = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    status = {f.path: f.status for f in again.files}
    assert status == {WEIGHTS: "fetched", "config.json": "reused", "tokenizer.json": "reused"}
    assert (Path(again.path) / WEIGHTS).read_bytes() == (repo / WEIGHTS).read_bytes()
    assert api.load_test(again.path, device="cpu").ok


def test_pull_repair_hashes_what_is_there_and_fetches_only_what_fails(
    engine: EngineName, tmp_path: Path, hub: HubSimulator, repo: Path
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    corrupt(Path(first.path) / WEIGHTS, keep_mtime=True)  # the stamp still matches
    plain = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    assert plain.bytes_fetched == 0  # a plain pull trusts the stamp: that is what repair is for
    hub.clear_log()
    fixed = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST, repair=True)
    status = {f.path: f.status for f in fixed.files}
    assert status == {WEIGHTS: "fetched", "config.json": "reused", "tokenizer.json": "reused"}
    assert sent(hub, "config.json") == 0
    assert (Path(fixed.path) / WEIGHTS).read_bytes() == (repo / WEIGHTS).read_bytes()


def test_force_download_fetches_every_file_again(
    engine: EngineName, tmp_path: Path, hub: HubSimulator, repo: Path
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST)
    forced = api.pull(
        REPO, mirrors=cat, cache_dir=cache, engine=engine, options=FAST, force_download=True
    )
    assert {f.status for f in forced.files} == {"fetched"}
    assert forced.bytes_fetched == sum(f.stat().st_size for f in repo.iterdir())
    assert forced.path == first.path


def test_verify_repair_fetches_only_the_bad_file_without_deleting_the_revision(
    tmp_path: Path, hub: HubSimulator, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cat, cache = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "cache"
    first = api.pull(REPO, mirrors=cat, cache_dir=cache, engine="httpx", options=FAST)
    corrupt(Path(first.path) / WEIGHTS, keep_mtime=True)
    found = api.verify(REPO, cache_dir=cache)
    assert not found.ok and [f.path for f in found.problems] == [WEIGHTS]
    assert sent(hub, "config.json") > 0  # the first pull's, counted by that helper
    hub.clear_log()
    code = cli.main(
        ["verify", REPO, "--cache-dir", str(cache), "--repair", "--mirrors", str(cat), "--json"]
    )
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and payload["ok"] and payload["repaired"] == [WEIGHTS]
    assert sent(hub, "config.json") == 0 and sent(hub, "tokenizer.json") == 0
    assert (Path(first.path) / WEIGHTS).read_bytes() == (repo / WEIGHTS).read_bytes()
    assert api.load_test(first.path, device="cpu", verify=True).ok


def test_verify_repair_of_a_local_dir_modelget_pulled(
    engine: EngineName, tmp_path: Path, hub: HubSimulator, repo: Path
) -> None:
    cat, local = hub.write_catalogue(tmp_path / "m.yaml"), tmp_path / "model"
    api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", local_dir=local, engine=engine, options=FAST
    )
    corrupt(local / WEIGHTS, keep_mtime=True)
    (local / "tokenizer.json").unlink()
    result = api.verify(local, repair=True, mirrors=cat, engine=engine)
    assert result.ok and sorted(result.repaired) == ["model.safetensors", "tokenizer.json"]
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (local / name).read_bytes() == (repo / name).read_bytes()
    assert not (tmp_path / "c").exists()
