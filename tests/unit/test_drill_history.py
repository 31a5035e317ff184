"""History (pure): every drill summarized, the RTO trend per drill (last vs the median of
the previous ones), and the test calendar's overdue drills with an injected now."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from payapi.core.plan import load_plan
from payapi.drills import history
from payapi.drills.model import DrillRecord, DrillStatus, Measurements
from tests.unit.drill_records import record, tabletop

PLAN = load_plan()  # the packaged plan: component monthly, functional/tabletop quarterly
DAY = timedelta(days=1)


def drill(n: int, rto: float | None, *, name: str = "redis-failure", **kw: object) -> DrillRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC) + n * 30 * DAY
    rec = record(drill_id=f"2026{n:02d}01T000000Z-{name}-00000{n % 10}", drill=name, **kw)  # type: ignore[arg-type]
    m = replace(rec.measurements, rto_seconds=rto)
    return replace(rec, started_at=at, ended_at=at + timedelta(minutes=5), measurements=m)


@pytest.mark.parametrize(
    ("scenario", "component", "tabletop", "kind"),
    [
        ("failure", "redis", False, "component"),
        ("failure", "redis", True, "tabletop"),
        ("region-outage", None, False, "full"),
        ("full-exercise", None, False, "full"),
        ("corruption", "db", False, "functional"),
        ("security-breach", None, False, "functional"),
        ("vendor-outage", None, False, "functional"),
        ("failure", None, False, "functional"),
    ],
)
def test_calendar_type(scenario: str, component: str | None, tabletop: bool, kind: str) -> None:
    assert history.calendar_type(scenario=scenario, component=component, tabletop=tabletop) == kind


@pytest.mark.parametrize(
    ("rtos", "direction"),
    [
        ((60.0, 50.0, 40.0), "improving"),  # 40 vs median 55
        ((40.0, 45.0, 80.0), "worsening"),
        ((40.0, 42.0, 41.5), "flat"),  # within 10 %
        ((3.0, 3.4, 3.9), "flat"),  # 0.7 s: under the one-second floor
        ((30.0, 300.0, 31.0, 29.0), "flat"),  # one odd drill does not swing the median
        ((40.0,), "unknown"),
    ],
)
def test_trend_compares_the_last_rto_with_the_median_before(
    rtos: tuple[float, ...], direction: str
) -> None:
    records = [drill(i + 1, rto) for i, rto in enumerate(rtos)]
    t = history.trend("redis-failure", reversed(records))  # any order in
    assert t.direction == direction, t.why
    assert [p.rto_seconds for p in t.series] == list(rtos)  # oldest first out
    assert t.first is not None and t.first.rto_seconds == rtos[0]
    assert t.best is not None and t.best.rto_seconds == min(rtos)


def test_a_drill_that_measured_no_rto_is_counted_not_plotted() -> None:
    records = [drill(1, 60.0), drill(2, None), drill(3, 30.0), tabletop()]
    t = history.trends(records)[0]
    assert t.drill == "redis-failure" and t.drills == 4
    assert [p.rto_seconds for p in t.series] == [60.0, 30.0]
    assert t.direction == "improving"
    assert t.to_json()["last"]["rto_seconds"] == 30.0


def test_summaries_carry_rto_rpo_and_verdicts() -> None:
    h = history.history(
        [record(rto_objective=20.0, lost=[3]), tabletop()],
        plan=PLAN,
        now=datetime(2026, 12, 9, tzinfo=UTC),
    )
    live, table = h.drills
    assert live.test_type == "component" and table.test_type == "tabletop"
    assert live.rto_seconds == pytest.approx(25.04) and live.rpo_missing == 1
    assert live.overall == "BREACHED"
    assert dict(live.verdicts) == {"redis": "BREACHED", "payment-eapi": "BREACHED"}
    assert table.rto_seconds is None and table.overall == "NOT MEASURED"
    out = h.to_json()
    assert out["drills"][0]["rpo"] == {"acknowledged": 31, "missing": 1, "window_seconds": 0.0}
    assert {c["test_type"] for c in out["calendar"]} == {
        "component",
        "functional",
        "full",
        "tabletop",
    }


def test_overdue_against_the_test_calendar() -> None:
    component = drill(1, 30.0)  # completed 2026-01-31 (component: monthly)
    refused = replace(drill(2, None), status=DrillStatus.REFUSED, measurements=Measurements())
    full = drill(3, 600.0, name="region-outage", scenario="region-outage", component=None)
    now = component.ended_at + timedelta(days=20)  # type: ignore[operator]
    by_type = {e.test_type: e for e in history.overdue(PLAN, [component, refused, full], now)}
    assert list(by_type) == list(PLAN.tests)  # the plan's order

    c = by_type["component"]
    assert c.last_drill_id == component.drill_id and not c.overdue  # the refused one is no test
    assert c.due_at == component.ended_at + PLAN.tests["component"].frequency.delta
    assert c.to_json()["due_in_seconds"] > 0
    assert not by_type["full"].overdue
    assert by_type["functional"].overdue and by_type["functional"].never
    assert by_type["tabletop"].overdue and by_type["tabletop"].to_json()["last_at"] is None

    later = now + timedelta(days=15)  # past a month since the component drill
    again = {e.test_type: e for e in history.overdue(PLAN, [component, full], later)}
    assert again["component"].overdue and not again["component"].never
    assert again["component"].to_json()["due_in_seconds"] < 0


def test_a_test_type_no_drill_maps_to_is_said_so() -> None:
    from payapi.core.plan import TestCadence

    tests = {**PLAN.tests, "chaos-day": TestCadence(title="Chaos day", frequency="annually")}  # type: ignore[arg-type]
    plan = PLAN.model_copy(update={"tests": tests})
    entry = history.overdue(plan, [], datetime(2026, 1, 1, tzinfo=UTC))[-1]
    assert entry.test_type == "chaos-day" and entry.overdue
    assert entry.note == "no drill maps to this test type"
