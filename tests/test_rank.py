"""Ranking is a pure function of probe results and catalogue weights."""

from __future__ import annotations

import pytest

from modelget.datatypes import Mirror, ProbeResult
from modelget.rank import REFERENCE_BYTES, cost, rank


def _m(name: str, weight: float = 1.0, enabled: bool = True) -> Mirror:
    return Mirror(
        name=name, kind="hf", endpoint=f"https://{name}.example", weight=weight, enabled=enabled
    )


def _r(
    name: str,
    ttfb: float | None,
    rate: float | None = None,
    status: str = "ok",
    has_repo: bool | None = True,
) -> ProbeResult:
    return ProbeResult(
        mirror=name,
        kind="hf",
        endpoint=f"https://{name}.example",
        status=status,
        ttfb_s=ttfb,
        throughput_bps=rate,
        has_repo=has_repo,
    )


def names(ranked: list) -> list[str]:  # type: ignore[type-arg]
    return [r.mirror.name for r in ranked]


def test_latency_orders_mirrors_without_throughput() -> None:
    mirrors = [_m("a"), _m("b"), _m("c"), _m("dead")]
    results = {
        "a": _r("a", 0.25),
        "b": _r("b", 0.01),
        "c": _r("c", 0.06),
        "dead": _r("dead", None, status="down", has_repo=None),
    }
    ranked = rank(mirrors, results)
    assert names(ranked) == ["b", "c", "a", "dead"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert [r.usable for r in ranked] == [True, True, True, False]


def test_throughput_dominates_for_large_transfers() -> None:
    mirrors = [_m("near-slow"), _m("far-fast")]
    results = {
        "near-slow": _r("near-slow", 0.005, rate=4e6),
        "far-fast": _r("far-fast", 0.2, rate=100e6),
    }
    assert names(rank(mirrors, results)) == ["far-fast", "near-slow"]


def test_weight_is_a_multiplier_on_speed() -> None:
    mirrors = [_m("a"), _m("b", weight=3.0)]
    results = {"a": _r("a", 0.01, rate=20e6), "b": _r("b", 0.01, rate=10e6)}
    assert names(rank(mirrors, results)) == ["b", "a"]
    assert cost(results["b"], 3.0) == pytest.approx((0.01 + REFERENCE_BYTES / 10e6) / 3)


def test_ties_keep_catalogue_order() -> None:
    mirrors = [_m("first"), _m("second"), _m("third")]
    results = {n: _r(n, 0.05, rate=10e6) for n in ("third", "second", "first")}
    assert names(rank(mirrors, results)) == ["first", "second", "third"]


def test_measured_throughput_beats_unmeasured() -> None:
    mirrors = [_m("unmeasured"), _m("measured")]
    results = {"unmeasured": _r("unmeasured", 0.001), "measured": _r("measured", 0.5, rate=1e6)}
    assert names(rank(mirrors, results)) == ["measured", "unmeasured"]


@pytest.mark.parametrize("status", ["down", "error", "auth", "rate-limited", "no-repo"])
def test_unusable_statuses_rank_last(status: str) -> None:
    mirrors = [_m("bad"), _m("good")]
    results = {"bad": _r("bad", 0.001, rate=1e9, status=status), "good": _r("good", 1.0)}
    ranked = rank(mirrors, results)
    assert names(ranked) == ["good", "bad"]
    assert not ranked[1].usable


def test_mirror_without_the_repo_is_not_usable() -> None:
    mirrors = [_m("a"), _m("b")]
    results = {"a": _r("a", 0.001, has_repo=False, status="ok"), "b": _r("b", 0.1)}
    assert names(rank(mirrors, results)) == ["b", "a"]


def test_disabled_and_unprobed_mirrors_last_in_catalogue_order() -> None:
    mirrors = [_m("off", enabled=False), _m("unprobed"), _m("ok")]
    ranked = rank(mirrors, {"off": _r("off", 0.001), "ok": _r("ok", 0.3)})
    assert names(ranked) == ["ok", "off", "unprobed"]
    assert [r.usable for r in ranked] == [True, False, False]
