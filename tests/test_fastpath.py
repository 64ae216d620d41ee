"""Fixed costs before the first byte (issue 14): when the probe stops waiting for a mirror,
when it skips the throughput sample, the engine started while planning, the plain HF
metadata calls, and the stage timings. Pure logic first, then the hub simulator."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from modelget import api, engines
from modelget.datatypes import Mirror
from modelget.engines import Engine, EngineName, EngineOptions, FetchJob, FetchResult, OnComplete
from modelget.errors import ModelNotFoundError, UsageError
from modelget.events import NullReporter, Reporter
from modelget.probe import GRACE_MIN_S, MirrorClock, grace_s, next_check, overdue
from modelget.sources.hf import HfSource, _plain_listing
from modelget.testing.hubsim import HubSimulator

REPO = "acme/tiny"


# --- pure: when to stop waiting, when to sample --------------------------------------------


def test_nothing_is_given_up_while_no_mirror_has_answered() -> None:
    clocks = {"a": MirrorClock(last=0.0), "b": MirrorClock(last=0.0)}
    assert overdue(100.0, clocks) == []
    assert next_check(clocks) is None


def test_a_silent_mirror_is_given_up_after_the_grace_once_another_answered() -> None:
    clocks = {
        "fast": MirrorClock(last=0.05, latency_s=0.01, answered=True, done=True),
        "hole": MirrorClock(last=0.001),
    }
    assert grace_s(clocks["hole"], 0.01) == GRACE_MIN_S  # max(0.5 s, 4 x 10 ms)
    assert overdue(0.4, clocks) == []
    assert next_check(clocks) == pytest.approx(0.001 + GRACE_MIN_S)
    assert overdue(0.6, clocks) == ["hole"]


def test_the_grace_grows_with_the_best_latency() -> None:
    clocks = {
        "a": MirrorClock(last=1.0, latency_s=0.3, answered=True, done=True),
        "b": MirrorClock(last=0.0),
    }
    assert grace_s(clocks["b"], 0.3) == pytest.approx(1.2)
    assert overdue(1.1, clocks) == []
    assert overdue(1.3, clocks) == ["b"]


def test_a_far_mirror_is_judged_by_its_own_latency() -> None:
    clocks = {
        "near": MirrorClock(last=0.1, latency_s=0.005, answered=True, done=True),
        "far": MirrorClock(last=0.3, latency_s=0.3),  # answered its first byte, still listing
    }
    assert overdue(1.0, clocks) == []  # 0.7 s silent < 4 x its own 0.3 s
    assert overdue(1.6, clocks) == ["far"]


def test_finished_or_given_up_mirrors_are_not_overdue() -> None:
    clocks = {
        "a": MirrorClock(last=0.0, latency_s=0.01, answered=True, done=True),
        "b": MirrorClock(last=0.0, done=True),
        "c": MirrorClock(last=0.0, cut=True),
    }
    assert overdue(10.0, clocks) == []
    assert next_check(clocks) is None


# --- the hub simulator ----------------------------------------------------------------------


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 8}\n')
    (d / "sub" / "notes.txt").write_text("hello\n")
    (d / "model.safetensors").write_bytes(os.urandom(300_000))
    return d


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback port that accepts TCP connections and never answers a request."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    yield f"http://127.0.0.1:{hole.getsockname()[1]}"
    hole.close()


def serve(sims: list[HubSimulator], repo: Path, name: str, **kw: Any) -> HubSimulator:
    sim = HubSimulator(name=name, **kw).start()
    sim.add_repo(REPO, repo)
    sims.append(sim)
    return sim


def catalogue(path: Path, **endpoints: str) -> Path:
    path.write_text(
        "version: 1\nmirrors:\n"
        + "".join(f"  - name: {n}\n    kind: hf\n    endpoint: {u}\n" for n, u in endpoints.items())
    )
    return path


def samples(sim: HubSimulator) -> int:
    """The probe's throughput samples the simulator answered."""
    return len([r for r in sim.log if r.range and r.user_agent == "modelget-probe"])


class Messages(NullReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def on_message(self, level: str, text: str) -> None:
        with self.lock:
            self.lines.append(f"{level}: {text}")


def test_a_black_hole_mirror_is_skipped_once_the_good_one_answered(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], black_hole: str
) -> None:
    good = serve(sims, tiny_repo, "good")
    cat = catalogue(tmp_path / "m.yaml", hole=black_hole, good=good.url)
    summary = api.probe(REPO, mirrors=cat, timeout=30.0)
    hole = {r.mirror.name: r for r in summary.ranked}["hole"]
    assert [r.mirror.name for r in summary.ranked] == ["good", "hole"]
    assert hole.probe is not None and hole.probe.status == "down"
    assert "skipped" in (hole.probe.error or "") and "slow" in (hole.probe.error or "")
    # Far below the 30 s timeout: the probe did not wait for it (a bound that cannot flake).
    assert summary.report.elapsed_s < 20.0

    reporter = Messages()
    result = api.pull(
        REPO, mirrors=cat, cache_dir=tmp_path / "c", engine="httpx", reporter=reporter
    )
    assert result.status == "ok" and set(result.bytes_by_mirror) == {"good"}
    assert any(line.startswith("warning: hole is not used: down: slow") for line in reporter.lines)


def test_a_black_hole_that_is_the_only_mirror_gets_its_full_timeout(
    tmp_path: Path, black_hole: str
) -> None:
    cat = catalogue(tmp_path / "m.yaml", hole=black_hole)
    summary = api.probe(REPO, mirrors=cat, timeout=0.6)
    [hole] = summary.ranked
    assert hole.probe is not None and hole.probe.status == "down"
    assert "skipped" not in (hole.probe.error or "")  # its own timeout, not the grace
    assert "Timeout" in (hole.probe.error or "")


def test_a_pull_from_one_mirror_takes_no_throughput_sample(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = serve(sims, tiny_repo, "only")
    cat = catalogue(tmp_path / "m.yaml", only=sim.url)
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", engine="httpx")
    assert result.status == "ok"
    assert samples(sim) == 0


def test_a_pull_from_two_mirrors_takes_no_sample_and_probe_always_does(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    """A pull ranks by latency and lets the scheduler measure the mirrors on the real bytes
    (the sample's bytes were thrown away); `modelget probe` still measures throughput."""
    a, b = serve(sims, tiny_repo, "a"), serve(sims, tiny_repo, "b")
    cat = catalogue(tmp_path / "m.yaml", a=a.url, b=b.url)
    assert api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c", engine="httpx").status == "ok"
    assert (samples(a), samples(b)) == (0, 0)
    one = catalogue(tmp_path / "one.yaml", a=a.url)
    summary = api.probe(REPO, mirrors=one)  # `modelget probe` still measures
    assert samples(a) == 1
    assert summary.ranked[0].probe is not None and summary.ranked[0].probe.throughput_bps


# --- the engine starts while planning, and is always closed ---------------------------------


class Recording:
    """Wraps the real engine; records the calls the pull makes."""

    def __init__(self, inner: Engine, calls: list[str]) -> None:
        self.inner, self.calls, self.name = inner, calls, inner.name

    def prepare(self) -> None:
        self.calls.append("prepare")
        self.inner.prepare()

    def run(
        self,
        jobs: Sequence[FetchJob],
        *,
        reporter: Reporter,
        cancel: threading.Event,
        on_complete: OnComplete | None = None,
    ) -> list[FetchResult]:
        self.calls.append("run")
        return self.inner.run(jobs, reporter=reporter, cancel=cancel, on_complete=on_complete)

    def close(self) -> None:
        self.calls.append("close")
        self.inner.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    recorded: list[str] = []
    real = engines.select_engine

    def select(name: EngineName, options: EngineOptions, reporter: Reporter) -> Engine:
        recorded.append("select")
        return Recording(real("httpx", options, reporter), recorded)

    monkeypatch.setattr(engines, "select_engine", select)
    return recorded


def test_the_engine_is_prepared_run_and_closed_and_the_stages_are_timed(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator], calls: list[str]
) -> None:
    sim = serve(sims, tiny_repo, "hub")
    cat = catalogue(tmp_path / "m.yaml", hub=sim.url)
    result = api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c")
    assert result.status == "ok"
    assert calls == ["select", "prepare", "run", "close"]
    for stage in ("probe", "plan", "engine_start", "transfer", "total"):
        assert result.timings[stage] >= 0.0, stage
    assert result.timings["probe"] <= result.timings["plan"] <= result.timings["total"]


def test_a_plan_error_closes_the_engine_started_for_it(
    tmp_path: Path, sims: list[HubSimulator], calls: list[str]
) -> None:
    empty = HubSimulator(name="empty").start()
    sims.append(empty)
    cat = catalogue(tmp_path / "m.yaml", empty=empty.url)
    with pytest.raises(ModelNotFoundError):
        api.pull(REPO, mirrors=cat, cache_dir=tmp_path / "c")
    assert calls == ["select", "prepare", "close"]


def test_a_usage_error_starts_no_engine(tmp_path: Path, calls: list[str]) -> None:
    cat = catalogue(tmp_path / "m.yaml", hub="http://127.0.0.1:9")
    with pytest.raises(UsageError):
        api.pull(REPO, mirrors=cat, revision="a..b", cache_dir=tmp_path / "c")
    with pytest.raises(UsageError):
        api.pull("not a repo id", mirrors=cat, cache_dir=tmp_path / "c")
    assert calls == []


# --- HF metadata without huggingface_hub ----------------------------------------------------


def test_the_plain_listing_matches_hfapi_page_by_page(
    tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = serve(sims, tiny_repo, "hub", page_size=1)
    mirror = Mirror("hub", "hf", sim.url)
    plain = _plain_listing(mirror, REPO, "main", 5.0)
    assert plain is not None
    commit, gated, files = plain
    via_hfapi = HfSource()._listing(mirror, REPO, REPO, "main", 5.0)
    assert (commit, gated) == via_hfapi[:2]
    assert sorted(files) == sorted(via_hfapi[2])
    assert len(files) == 3 and any(lfs for *_, lfs in files)


def test_an_error_answer_goes_through_hfapi_for_its_exact_meaning(
    sims: list[HubSimulator],
) -> None:
    sim = HubSimulator(name="empty").start()
    sims.append(sim)
    mirror = Mirror("empty", "hf", sim.url)
    assert _plain_listing(mirror, REPO, "main", 5.0) is None
    with pytest.raises(ModelNotFoundError):
        HfSource().resolve(mirror, REPO, None, timeout=5.0)


def test_a_plan_imports_no_huggingface_hub(
    tmp_path: Path, tiny_repo: Path, sims: list[HubSimulator]
) -> None:
    sim = serve(sims, tiny_repo, "hub")
    cat = catalogue(tmp_path / "m.yaml", hub=sim.url)
    code = textwrap.dedent(
        f"""
        import sys
        from modelget import api
        plan = api.plan({REPO!r}, mirrors={str(cat)!r}, cache_dir={str(tmp_path / "c")!r})
        assert len(plan.items) == 3, plan
        print("huggingface_hub" in sys.modules, "modelget.engines.aria2" in sys.modules)
        """
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": src,
        "MODELGET_CACHE_DIR": str(tmp_path / "mg"),
        "NO_PROXY": "127.0.0.1",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_the_probe_cache_keeps_only_recent_entries(tmp_path: Path) -> None:
    """Every pull reads and rewrites the cache file: it must not grow with every mirror ever
    probed (it had reached 300 kB here, 40 ms of JSON per pull)."""
    import json
    import time

    from modelget.probe import CACHE_MAX_ENTRIES, _pruned

    now = time.time()
    data: dict[str, Any] = {f"old{i}": {"probed_at": now - 2 * 86400} for i in range(10)}
    data.update({f"new{i}": {"probed_at": now - i} for i in range(CACHE_MAX_ENTRIES + 5)})
    data["junk"] = "x"
    kept = _pruned(data, now)
    assert len(kept) == CACHE_MAX_ENTRIES
    assert not any(k.startswith("old") or k == "junk" for k in kept)
    assert "new0" in kept and f"new{CACHE_MAX_ENTRIES + 4}" not in kept
    json.dumps(kept)
