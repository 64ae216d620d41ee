"""Lockfiles: `modelget lock` pins commits and digests; `pull --lock` reproduces those bytes.

The format and the comparison are pure (unit tests); the rest runs the real CLI against the hub
simulator on 127.0.0.1: a moved branch, a commit that is gone, and a mirror that serves other
bytes under the locked commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from modelget import api, cli
from modelget.datatypes import FileEntry
from modelget.errors import LockedCommitMissingError, LockfileError
from modelget.lockfile import LockedModel, Lockfile, check_entries, dumps, load, loads
from modelget.testing.hubsim import HubSimulator

REPO = "acme/tiny"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA1_A = "1" * 40
COMMIT = "c" * 40


# --- the format (pure) -----------------------------------------------------------------------


def _locked(*files: FileEntry) -> LockedModel:
    return LockedModel(REPO, "main", COMMIT, files)


def test_dumps_then_loads_round_trips_and_is_deterministic() -> None:
    lock = Lockfile(
        (
            _locked(
                FileEntry("model.safetensors", 10, SHA_A, None, True),
                FileEntry("config.json", 3, None, SHA1_A),
            ),
        )
    )
    text = dumps(lock)
    again = loads(text)
    assert dumps(again) == text
    doc = json.loads(text)
    assert doc["lockfile"] == "modelget/1"
    # sorted by path, lfs only where true, no timestamps
    assert [f["path"] for f in doc["models"][0]["files"]] == ["config.json", "model.safetensors"]
    assert doc["models"][0]["files"][0] == {"path": "config.json", "size": 3, "git_sha1": SHA1_A}
    assert again.models[0].files[1] == FileEntry("model.safetensors", 10, SHA_A, None, True)


def _doc(**file: object) -> str:
    entry: dict[str, object] = {"path": "a.bin", "size": 1, "sha256": SHA_A}
    entry.update(file)
    model = {"repo_id": REPO, "revision": "main", "commit": COMMIT, "files": [entry]}
    return json.dumps({"lockfile": "modelget/1", "models": [model]})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"lockfile": "other/9", "models": []}), "not a modelget lockfile"),
        (_doc(path="../etc/passwd"), "unsafe file path"),
        (_doc(path="/abs"), "unsafe file path"),
        (_doc(path="a\\b"), "unsafe file path"),
        (_doc(size=-1), "non-negative integer"),
        (_doc(size="12"), "non-negative integer"),
        (_doc(sha256="xyz"), "hex digest"),
        (_doc(sha256=SHA_A + "\n"), "hex digest"),  # the whole text is the digest
        (_doc(sha256=SHA_A, git_sha1=SHA1_A + "\n"), "hex digest"),
        (_doc(sha256=None), "needs a sha256 or a git_sha1"),
        (_doc(lfs="yes"), "true or false"),
    ],
)
def test_loads_rejects_malformed_lockfiles_with_a_clear_error(text: str, needle: str) -> None:
    with pytest.raises(LockfileError) as info:
        loads(text, source="models.lock")
    assert needle in info.value.message
    assert info.value.exit_code == 2


def test_loads_rejects_bad_repo_ids_revisions_commits_and_duplicates() -> None:
    base = json.loads(_doc())
    bad_id = json.loads(_doc())
    bad_id["models"][0]["repo_id"] = "../evil"
    with pytest.raises(LockfileError, match="not a valid repo id"):
        loads(json.dumps(bad_id))
    bad_commit = json.loads(_doc())
    bad_commit["models"][0]["commit"] = "main"
    with pytest.raises(LockfileError, match="commit hash"):
        loads(json.dumps(bad_commit))
    bad_rev = json.loads(_doc())
    bad_rev["models"][0]["revision"] = "../../../escape"  # would name refs/<revision>
    with pytest.raises(LockfileError, match="not a valid revision"):
        loads(json.dumps(bad_rev))
    dup = json.loads(_doc())
    dup["models"][0]["files"].append(dup["models"][0]["files"][0])
    with pytest.raises(LockfileError, match="listed twice"):
        loads(json.dumps(dup))
    twice = dict(base, models=base["models"] * 2)
    with pytest.raises(LockfileError, match="locked twice"):
        loads(json.dumps(twice))


def test_load_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(LockfileError, match="cannot read lockfile"):
        load(tmp_path / "missing.lock")


def test_select_by_repo_id() -> None:
    lock = Lockfile((_locked(FileEntry("a", 1, SHA_A)),))
    assert lock.select([]) == lock.models
    assert lock.select([REPO]) == lock.models
    with pytest.raises(LockfileError, match="not in the lockfile: other/model"):
        lock.select(["other/model"])


def test_check_entries_accepts_the_same_bytes_and_ignores_extra_files() -> None:
    locked = _locked(FileEntry("a", 1, SHA_A), FileEntry("b", 2, None, SHA1_A))
    fresh = [FileEntry("a", 1, SHA_A), FileEntry("b", 2, None, SHA1_A), FileEntry("new", 5, SHA_B)]
    entries, problems = check_entries(locked, fresh)
    assert problems == []
    assert sorted(entries) == ["a", "b"]


@pytest.mark.parametrize(
    ("fresh", "needle"),
    [
        ([], "a: not on the mirrors"),
        ([FileEntry("a", 2, SHA_A)], "size 2 != locked 1"),
        ([FileEntry("a", 1, SHA_B)], "sha256"),
        ([FileEntry("a", 1, None, SHA1_A)], "no digest of the kind"),
    ],
)
def test_check_entries_names_each_difference(fresh: list[FileEntry], needle: str) -> None:
    _, problems = check_entries(_locked(FileEntry("a", 1, SHA_A)), fresh)
    assert len(problems) == 1
    assert needle in problems[0]


def test_check_entries_verifies_against_the_locks_sha256_when_a_mirror_gives_only_sha1() -> None:
    locked = _locked(FileEntry("a", 1, SHA_A, SHA1_A))
    entries, problems = check_entries(locked, [FileEntry("a", 1, None, SHA1_A)])
    assert problems == []
    assert entries["a"].sha256 == SHA_A


# --- against the hub simulator ------------------------------------------------------------------


def _model_dir(root: Path, version: int) -> Path:
    """A small repo: a config (small git file) and a 3 MB weights file (LFS)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"version": version}))
    (root / "model.safetensors").write_bytes(hashlib.sha256(b"%d" % version).digest() * 98304)
    return root


def _catalogue(path: Path, *sims: HubSimulator) -> Path:
    body = "version: 1\nmirrors:\n"
    for i, sim in enumerate(sims):
        body += f"  - name: m{i}\n    kind: hf\n    endpoint: {sim.url}\n"
    path.write_text(body)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _pull_args(lockfile: Path, cat: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "pull",
        *extra,
        "--lock",
        str(lockfile),
        "--mirrors",
        str(cat),
        "--cache-dir",
        str(cache),
        "--engine",
        "httpx",
        "--quiet",
    ]


def test_lock_then_pull_reproduces_the_locked_commit_after_the_branch_moves(
    tmp_path: Path, sims: list[HubSimulator], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    v1 = _model_dir(tmp_path / "v1", 1)
    old = hub.add_repo(REPO, v1)
    cat = _catalogue(tmp_path / "m.yaml", hub)

    code, out, err = _run(capsys, "lock", REPO, "--mirrors", str(cat))
    assert code == 0, err
    lock = loads(out)
    (model,) = lock.models
    assert (model.repo_id, model.revision, model.commit) == (REPO, "main", old)
    by_path = {f.path: f for f in model.files}
    weights = (v1 / "model.safetensors").read_bytes()
    assert by_path["model.safetensors"].sha256 == hashlib.sha256(weights).hexdigest()
    assert by_path["model.safetensors"].size == len(weights)
    assert by_path["config.json"].git_sha1  # a small file: the git blob id
    assert f"locked {REPO} @ main -> {old}" in err
    lockfile = tmp_path / "models.lock"
    lockfile.write_text(out)

    # main moves on to a new commit with other weights
    new = hub.add_repo(REPO, _model_dir(tmp_path / "v2", 2))
    assert new != old

    cache = tmp_path / "cache"
    code, out, err = _run(capsys, *_pull_args(lockfile, cat, cache))
    assert code == 0, err
    snapshot = Path(out.strip())
    assert snapshot.name == old
    assert (snapshot / "model.safetensors").read_bytes() == weights
    assert (snapshot / "config.json").read_text() == (v1 / "config.json").read_text()
    # the locked ref points at the locked commit, so the model loads by that name offline
    refs = cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main"
    assert refs.read_text() == old
    # an unlocked pull gets the new commit
    code, out, err = _run(
        capsys, "pull", REPO, "--mirrors", str(cat), "--cache-dir", str(cache), "-q"
    )
    assert code == 0, err
    assert Path(out.strip()).name == new


def test_pull_lock_fails_clearly_when_no_mirror_has_the_commit(
    tmp_path: Path, sims: list[HubSimulator], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    hub.add_repo(REPO, _model_dir(tmp_path / "v2", 2))  # the locked commit is not there
    cat = _catalogue(tmp_path / "m.yaml", hub)
    gone = "d" * 40
    entry = {"path": "config.json", "size": 13, "git_sha1": SHA1_A}
    model = {"repo_id": REPO, "revision": "main", "commit": gone, "files": [entry]}
    lockfile = tmp_path / "models.lock"
    lockfile.write_text(json.dumps({"lockfile": "modelget/1", "models": [model]}))
    cache = tmp_path / "cache"

    code, out, err = _run(capsys, *_pull_args(lockfile, cat, cache))
    assert code == 1
    assert "error: locked-commit-missing" in err
    assert f"commit {gone} of {REPO}, pinned by the lockfile, is on no mirror" in err
    assert "m0:" in err  # what the mirror said
    assert out == ""
    assert not (cache / f"models--{REPO.replace('/', '--')}" / "snapshots").exists()

    with pytest.raises(LockedCommitMissingError):
        api.pull(REPO, mirrors=cat, cache_dir=cache, locked=loads(lockfile.read_text()).models[0])


def test_pull_lock_refuses_a_mirror_serving_other_bytes_under_the_locked_commit(
    tmp_path: Path, sims: list[HubSimulator], capsys: pytest.CaptureFixture[str]
) -> None:
    good = HubSimulator(name="good").start()
    bad = HubSimulator(name="bad").start()
    sims.extend([good, bad])
    commit = good.add_repo(REPO, _model_dir(tmp_path / "v1", 1))
    # the same commit id, other weights: a tampered or broken mirror
    bad.add_repo(REPO, _model_dir(tmp_path / "evil", 666), commit=commit)
    lockfile = tmp_path / "models.lock"
    code, out, err = _run(
        capsys, "lock", REPO, "--mirrors", str(_catalogue(tmp_path / "g.yaml", good))
    )
    assert code == 0, err
    lockfile.write_text(out)
    cache = tmp_path / "cache"

    # only the bad mirror: refused before any byte moves, exit 4, the mirror named
    only_bad = _catalogue(tmp_path / "b.yaml", bad)
    code, out, err = _run(capsys, *_pull_args(lockfile, only_bad, cache))
    assert code == 4
    assert "error: lock-mismatch" in err
    assert "m0: " in err
    assert "model.safetensors: sha256" in err
    assert not any(
        r.route in ("hf-resolve", "cdn") and r.user_agent != "modelget-probe"
        for r in bad.requests()
    )

    # two bad mirrors that agree with each other outvote the good one in an unlocked pull;
    # a locked pull takes only the locked bytes, from the one mirror that has them
    bad2 = HubSimulator(name="bad2").start()
    sims.append(bad2)
    bad2.add_repo(REPO, tmp_path / "evil", commit=commit)
    three = _catalogue(tmp_path / "three.yaml", bad, bad2, good)
    code, out, err = _run(capsys, *_pull_args(lockfile, three, cache))
    assert code == 0, err
    locked = {f.path: f for f in loads(lockfile.read_text()).models[0].files}
    weights = (Path(out.strip()) / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == locked["model.safetensors"].sha256


def test_lock_cli_writes_a_file_and_pull_lock_rejects_conflicting_arguments(
    tmp_path: Path, sims: list[HubSimulator], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = HubSimulator(name="hub").start()
    sims.append(hub)
    commit = hub.add_repo(REPO, _model_dir(tmp_path / "v1", 1), branch="dev")
    cat = _catalogue(tmp_path / "m.yaml", hub)
    lockfile = tmp_path / "out" / "models.lock"
    lockfile.parent.mkdir()
    code, out, err = _run(
        capsys,
        "lock",
        f"{REPO}@dev",
        "--exclude",
        "*.json",
        "--mirrors",
        str(cat),
        "-o",
        str(lockfile),
    )
    assert code == 0, err
    assert out == ""
    (model,) = load(lockfile).models
    assert (model.revision, model.commit) == ("dev", commit)
    assert model.paths == ("model.safetensors",)
    assert os.listdir(lockfile.parent) == ["models.lock"]  # no temporary file left

    cache = tmp_path / "cache"
    for extra in (["--revision", "main"], ["--include", "*.json"]):
        code, _, err = _run(capsys, *_pull_args(lockfile, cat, cache, *extra))
        assert code == 2
        assert "--lock takes the commit and the files from the lockfile" in err
    code, _, err = _run(capsys, *_pull_args(lockfile, cat, cache, "other/model"))
    assert code == 2
    assert "not in the lockfile: other/model" in err
    code, _, err = _run(capsys, "pull", "--mirrors", str(cat))
    assert code == 2
    assert "pull needs a REPO_ID" in err

    # dry run shows the locked plan; a real pull fetches only the locked file
    code, out, err = _run(capsys, *_pull_args(lockfile, cat, cache, "--dry-run"))
    assert code == 0, err
    assert f"-> commit {commit}" in out
    code, out, err = _run(capsys, *_pull_args(lockfile, cat, cache))
    assert code == 0, err
    assert sorted(p.name for p in Path(out.strip()).iterdir()) == ["model.safetensors"]
    refs = cache / f"models--{REPO.replace('/', '--')}" / "refs"
    assert (refs / "dev").read_text() == commit
