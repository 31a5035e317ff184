"""Every drill so far, the RTO trend per drill, and the test calendar: pure.

No clock and no I/O: records and ``now`` come in as arguments
(``tests/unit/test_drill_history.py``).

- **Test type.** The plan's test calendar (``dr-plan.yaml`` ``tests:``) has four types;
  :func:`calendar_type` says which one a drill is: a tabletop drill is ``tabletop``; the
  ``region-outage`` and ``full-exercise`` scenarios are ``full`` (the whole primary region
  goes); a ``failure`` of one component is ``component``; every other scenario
  (``corruption``, ``security-breach``, ``vendor-outage``…) tests a function of the
  platform, ``functional``.
- **Trend** of one drill (by its name: ``redis-failure``): the RTOs it measured, oldest
  first (a drill that measured none is counted, not plotted). The last RTO is compared
  with the **median of the previous ones**, which one odd drill cannot swing: more than
  ``max(10 %, 1 s)`` lower is ``improving``, higher is ``worsening``, else ``flat``; with
  fewer than two measured RTOs it is ``unknown``. Best is the lowest.
- **Overdue.** Per test type of the plan, the last *completed* drill of that type (a
  refused, failed or aborted drill did not test the recovery); it is overdue when
  ``now`` is past its end plus the type's frequency, or when there never was one.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from payapi.core.plan import Plan
from payapi.drills.model import DrillRecord, DrillStatus, iso
from payapi.drills.report_text import overall_verdict

__all__ = [
    "CalendarEntry",
    "DrillSummary",
    "History",
    "Point",
    "Trend",
    "calendar_type",
    "calendar_type_of",
    "history",
    "overdue",
    "summarize",
    "trend",
    "trends",
]

FULL_SCENARIOS = frozenset({"region-outage", "full-exercise"})
TREND_SHARE = 0.10  # a change smaller than this share of the baseline is flat...
TREND_FLOOR_SECONDS = 1.0  # ...and so is one under a second (probe granularity)

TestType = Literal["component", "functional", "full", "tabletop"]
Direction = Literal["improving", "worsening", "flat", "unknown"]


def calendar_type(*, scenario: str, component: str | None, tabletop: bool) -> TestType:
    """The test calendar's type of a drill (see the module doc)."""
    if tabletop:
        return "tabletop"
    if scenario in FULL_SCENARIOS:
        return "full"
    if scenario == "failure" and component:
        return "component"
    return "functional"


def calendar_type_of(record: DrillRecord) -> TestType:
    return calendar_type(
        scenario=record.scenario, component=record.component, tabletop=record.tabletop
    )


def _ended(record: DrillRecord) -> datetime:
    return record.ended_at or record.started_at


# --------------------------------------------------------------------------- drills


@dataclass(frozen=True, slots=True)
class DrillSummary:
    drill_id: str
    drill: str
    scenario: str
    component: str | None
    status: DrillStatus
    tabletop: bool
    test_type: TestType
    started_at: datetime
    ended_at: datetime | None
    rto_seconds: float | None
    rpo_acknowledged: int | None
    rpo_missing: int | None
    rpo_window_seconds: float | None
    verdicts: tuple[tuple[str, str], ...]  # (component, verdict)
    overall: str

    def to_json(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "drill": self.drill,
            "scenario": self.scenario,
            "component": self.component,
            "status": str(self.status),
            "tabletop": self.tabletop,
            "test_type": self.test_type,
            "started_at": self.started_at.isoformat(),
            "ended_at": iso(self.ended_at),
            "rto_seconds": self.rto_seconds,
            "rpo": {
                "acknowledged": self.rpo_acknowledged,
                "missing": self.rpo_missing,
                "window_seconds": self.rpo_window_seconds,
            },
            "verdicts": [{"component": c, "verdict": v} for c, v in self.verdicts],
            "overall_verdict": self.overall,
        }


def summarize(record: DrillRecord) -> DrillSummary:
    m = record.measurements
    return DrillSummary(
        drill_id=record.drill_id,
        drill=record.drill,
        scenario=record.scenario,
        component=record.component,
        status=record.status,
        tabletop=record.tabletop,
        test_type=calendar_type_of(record),
        started_at=record.started_at,
        ended_at=record.ended_at,
        rto_seconds=m.rto_seconds,
        rpo_acknowledged=m.rpo.acknowledged if m.rpo else None,
        rpo_missing=m.rpo.missing if m.rpo else None,
        rpo_window_seconds=m.rpo.window_seconds if m.rpo else None,
        verdicts=tuple((v.component, str(v.verdict)) for v in record.verdicts),
        overall=overall_verdict(record),
    )


# --------------------------------------------------------------------------- trends


@dataclass(frozen=True, slots=True)
class Point:
    drill_id: str
    at: datetime
    rto_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "at": self.at.isoformat(),
            "rto_seconds": self.rto_seconds,
        }


@dataclass(frozen=True, slots=True)
class Trend:
    drill: str
    drills: int  # every drill of this name, measured or not
    series: tuple[Point, ...]  # the measured RTOs, oldest first
    direction: Direction
    why: str

    @property
    def first(self) -> Point | None:
        return self.series[0] if self.series else None

    @property
    def last(self) -> Point | None:
        return self.series[-1] if self.series else None

    @property
    def best(self) -> Point | None:
        return min(self.series, key=lambda p: p.rto_seconds, default=None)

    def to_json(self) -> dict[str, Any]:
        def point(p: Point | None) -> dict[str, Any] | None:
            return p.to_json() if p else None

        return {
            "drill": self.drill,
            "drills": self.drills,
            "measured": len(self.series),
            "series": [p.to_json() for p in self.series],
            "first": point(self.first),
            "last": point(self.last),
            "best": point(self.best),
            "direction": self.direction,
            "why": self.why,
        }


def trend(drill: str, records: Iterable[DrillRecord]) -> Trend:
    """The RTO trend of the drills called ``drill`` among ``records``."""
    mine = sorted((r for r in records if r.drill == drill), key=lambda r: r.started_at)
    series = tuple(
        Point(r.drill_id, r.started_at, float(r.measurements.rto_seconds))
        for r in mine
        if not r.tabletop and r.measurements.rto_seconds is not None
    )
    if len(series) < 2:
        return Trend(drill, len(mine), series, "unknown", "a trend needs two measured RTOs")
    baseline = statistics.median(p.rto_seconds for p in series[:-1])
    change = series[-1].rto_seconds - baseline
    tolerance = max(TREND_SHARE * baseline, TREND_FLOOR_SECONDS)
    direction: Direction
    if change < -tolerance:
        direction = "improving"
    elif change > tolerance:
        direction = "worsening"
    else:
        direction = "flat"
    why = (
        f"last {series[-1].rto_seconds:.1f}s vs median {baseline:.1f}s of the "
        f"{len(series) - 1} before (tolerance {tolerance:.1f}s)"
    )
    return Trend(drill, len(mine), series, direction, why)


def trends(records: Sequence[DrillRecord]) -> list[Trend]:
    """One trend per drill name, in name order."""
    return [trend(name, records) for name in sorted({r.drill for r in records})]


# --------------------------------------------------------------------------- calendar


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    test_type: str
    title: str
    frequency: str  # as the plan says it: "monthly"
    last_drill_id: str | None
    last_at: datetime | None
    due_at: datetime | None  # None: never run (due now), or a frequency of "indefinite"
    overdue: bool
    now: datetime
    note: str = ""

    @property
    def never(self) -> bool:
        return self.last_drill_id is None

    def to_json(self) -> dict[str, Any]:
        due_in = None if self.due_at is None else (self.due_at - self.now).total_seconds()
        return {
            "test_type": self.test_type,
            "title": self.title,
            "frequency": self.frequency,
            "last_drill_id": self.last_drill_id,
            "last_at": iso(self.last_at),
            "due_at": iso(self.due_at),
            "due_in_seconds": due_in,
            "overdue": self.overdue,
            "never": self.never,
            "note": self.note,
        }


KNOWN_TYPES: tuple[TestType, ...] = ("component", "functional", "full", "tabletop")


def overdue(plan: Plan, records: Iterable[DrillRecord], now: datetime) -> list[CalendarEntry]:
    """Per test type of the plan (in the plan's order): the last completed drill of
    that type and whether the next one is overdue at ``now``."""
    last: dict[str, DrillRecord] = {}
    for r in records:
        if r.status is not DrillStatus.COMPLETED:
            continue
        of = calendar_type_of(r)
        if of not in last or _ended(r) > _ended(last[of]):
            last[of] = r
    out = []
    for kind, cadence in plan.tests.items():
        note = "" if kind in KNOWN_TYPES else "no drill maps to this test type"
        done = last.get(kind)
        if done is None:
            out.append(
                CalendarEntry(
                    kind, cadence.title, cadence.frequency.text, None, None, None, True, now, note
                )
            )
            continue
        at = _ended(done)
        due = None if cadence.frequency.forever else at + cadence.frequency.delta
        out.append(
            CalendarEntry(
                kind,
                cadence.title,
                cadence.frequency.text,
                done.drill_id,
                at,
                due,
                due is not None and now > due,
                now,
                note,
            )
        )
    return out


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class History:
    drills: tuple[DrillSummary, ...]
    trends: tuple[Trend, ...]
    calendar: tuple[CalendarEntry, ...]
    unreadable: int = 0  # journals that could not be read (left out)

    def to_json(self) -> dict[str, Any]:
        return {
            "drills": [d.to_json() for d in self.drills],
            "trends": [t.to_json() for t in self.trends],
            "calendar": [c.to_json() for c in self.calendar],
            "unreadable": self.unreadable,
        }


def history(
    records: Sequence[DrillRecord], *, plan: Plan, now: datetime, unreadable: int = 0
) -> History:
    ordered = sorted(records, key=lambda r: r.started_at)
    return History(
        drills=tuple(summarize(r) for r in ordered),
        trends=tuple(trends(ordered)),
        calendar=tuple(overdue(plan, ordered, now)),
        unreadable=unreadable,
    )
