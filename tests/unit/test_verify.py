"""`payapi verify system`'s verdicts (pure): percentiles and the baseline comparison."""

from __future__ import annotations

from payapi.ops.security import Check
from payapi.ops.verify import Latency, VerifyReport, percentile, performance_check


def test_percentiles_by_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(list(reversed(samples)), 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_the_first_run_becomes_the_baseline() -> None:
    c = performance_check(Latency(200, 3.0, 9.0), None)
    assert c.ok and "recorded as the baseline" in c.detail


def test_p99_beyond_three_times_the_baseline_fails_and_ratios_are_reported() -> None:
    base = Latency(200, 2.0, 10.0)
    ok = performance_check(Latency(200, 4.0, 30.0), base)
    assert ok.ok and "p99 x3.00" in ok.detail and "p50 x2.00" in ok.detail
    slow = performance_check(Latency(200, 4.0, 30.1), base)
    assert not slow.ok and "beyond x3" in slow.detail


def test_failed_payments_fail_the_performance_check() -> None:
    c = performance_check(Latency(190, 2.0, 5.0), Latency(200, 2.0, 5.0), failures=10)
    assert not c.ok and "10 of 200" in c.detail
    assert not performance_check(Latency(0, 0.0, 0.0), None).ok


def test_latency_round_trips_through_the_baseline_file_format() -> None:
    lat = Latency.of([1.0, 2.0, 3.0, 4.0])
    assert Latency.from_json(lat.to_json()) == Latency(4, 2.0, 4.0)
    assert Latency.from_json({"p50_ms": "x"}) is None


def test_the_system_is_verified_only_when_every_check_passes() -> None:
    good = VerifyReport("primary", (Check("health.eapi", True, "ok"),))
    assert good.exit_code == 0
    bad = VerifyReport("dr", (Check("health.eapi", True, ""), Check("performance", False, "")))
    assert bad.exit_code == 1 and bad.to_json()["failed"] == ["performance"]
