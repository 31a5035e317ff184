"""The words and figures every drill report shows, formatted once (pure).

The Markdown, HTML and JUnit reports print the same rows; this module decides what each
cell says, so the three never disagree. A figure that was not measured is
``NOT MEASURED``, never a guess and never a blank. Times are UTC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from payapi.drills.actions import Action
from payapi.drills.measure import overall
from payapi.drills.model import MARKERS, DrillRecord, DrillStatus, Verdict, VerdictKind

__all__ = [
    "MARKER_TITLES",
    "NOT_MEASURED",
    "ActionRow",
    "ProbeRow",
    "StepRow",
    "TimelineRow",
    "VerdictRow",
    "action_rows",
    "duration",
    "go_no_go",
    "margin",
    "one_line",
    "overall_verdict",
    "probe_rows",
    "step_rows",
    "timeline_rows",
    "utc",
    "verdict_rows",
    "xml_safe",
]

NOT_MEASURED = str(VerdictKind.NOT_MEASURED)

MARKER_TITLES = {
    "injected_at": "Failure injected",
    "detected_at": "Failure detected",
    "recovery_started_at": "Recovery started",
    "service_restored_at": "Service restored",
    "normal_at": "Normal operation",
}

# XML 1.0 forbids these (an ANSI colour code in a step's output would make the JUnit file
# unparseable); HTML and Markdown have no use for them either.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: object) -> str:
    return _NOT_XML.sub("", str(text))


def one_line(text: object) -> str:
    return " ".join(xml_safe(text).split())


def utc(when: datetime | None, missing: str = NOT_MEASURED) -> str:
    if when is None:
        return missing
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float | None, missing: str = NOT_MEASURED) -> str:
    """``25.0 s``, ``4 min 05 s``, ``2 h 30 min``."""
    if seconds is None:
        return missing
    s = abs(float(seconds))
    sign = "-" if seconds < 0 else ""
    if s < 60:
        return f"{sign}{s:.1f} s"
    whole = round(s)
    if whole < 3600:
        m, rest = divmod(whole, 60)
        return f"{sign}{m} min {rest:02d} s" if rest else f"{sign}{m} min"
    h, rest = divmod(whole, 3600)
    m = rest // 60
    return f"{sign}{h} h {m:02d} min" if m else f"{sign}{h} h"


def margin(seconds: float | None) -> str:
    """The objective minus the measured figure, signed: ``+3 min 20 s``, ``-5.0 s``."""
    if seconds is None:
        return NOT_MEASURED
    return ("+" if seconds >= 0 else "") + duration(seconds)


def overall_verdict(record: DrillRecord) -> str:
    """The drill's one word: the worst verdict; a drill that did not complete is its
    status (a completed part of it still shows in the rows)."""
    if record.status is not DrillStatus.COMPLETED:
        return record.status.name
    if not record.verdicts:
        return NOT_MEASURED
    return str(overall(v.verdict for v in record.verdicts))


def go_no_go(record: DrillRecord) -> str:
    if record.checklist is None:
        return "not recorded"
    return "GO" if record.checklist.go else "NO-GO"


@dataclass(frozen=True, slots=True)
class VerdictRow:
    component: str
    probe: str
    rto_objective: str
    rto: str
    rpo_objective: str
    rpo_window: str
    missing: str  # "2 of 31", "0 of 31"
    verdict: str
    margin: str
    detail: str
    kind: VerdictKind

    HEADERS: ClassVar[tuple[str, ...]] = (
        "Component",
        "RTO objective",
        "Measured RTO",
        "RPO objective",
        "Measured RPO window",
        "Missing / acknowledged",
        "Verdict",
        "Margin",
    )

    def cells(self) -> tuple[str, ...]:
        return (
            self.component,
            self.rto_objective,
            self.rto,
            self.rpo_objective,
            self.rpo_window,
            self.missing,
            self.verdict,
            self.margin,
        )


def _objective(seconds: float | None) -> str:
    return duration(seconds, missing="none in the plan")


def verdict_row(record: DrillRecord, v: Verdict) -> VerdictRow:
    rpo = record.measurements.rpo_by_probe.get(v.probe)
    missing = NOT_MEASURED if rpo is None else f"{rpo.missing} of {rpo.acknowledged}"
    return VerdictRow(
        component=v.component,
        probe=v.probe,
        rto_objective=_objective(v.rto_objective_seconds),
        rto=duration(v.rto_seconds),
        rpo_objective=_objective(v.rpo_objective_seconds),
        rpo_window=duration(v.rpo_window_seconds),
        missing=missing,
        verdict=str(v.verdict),
        margin=margin(v.margin_seconds),
        detail=one_line(v.detail),
        kind=v.verdict,
    )


def verdict_rows(record: DrillRecord) -> list[VerdictRow]:
    return [verdict_row(record, v) for v in record.verdicts]


@dataclass(frozen=True, slots=True)
class TimelineRow:
    marker: str
    title: str
    at: str
    since_injection: str


def timeline_rows(record: DrillRecord) -> list[TimelineRow]:
    m = record.measurements
    rows = []
    for name in MARKERS:
        at: datetime | None = getattr(m, name)
        since = NOT_MEASURED
        if at is not None and m.injected_at is not None:
            since = margin((at - m.injected_at).total_seconds())
        rows.append(TimelineRow(name, MARKER_TITLES[name], utc(at), since))
    return rows


@dataclass(frozen=True, slots=True)
class ProbeRow:
    probe: str
    attempts: str
    successes: str
    success_rate: str
    first_failure: str
    restored: str
    outage: str

    HEADERS: ClassVar[tuple[str, ...]] = (
        "Probe",
        "Attempts",
        "Successes",
        "Success rate",
        "First failure",
        "Restored",
        "Outage",
    )

    def cells(self) -> tuple[str, ...]:
        return (
            self.probe,
            self.attempts,
            self.successes,
            self.success_rate,
            self.first_failure,
            self.restored,
            self.outage,
        )


def probe_rows(record: DrillRecord) -> list[ProbeRow]:
    rows = []
    for name, p in sorted(record.measurements.probes.items()):
        rate = p.success_rate
        rows.append(
            ProbeRow(
                probe=name,
                attempts=str(p.attempts),
                successes=str(p.successes),
                success_rate=NOT_MEASURED if rate is None else f"{rate:.1%}",
                first_failure=utc(p.first_failure_at, missing="never failed"),
                restored=utc(p.restored_at, missing="-" if p.first_failure_at is None else "never"),
                outage=duration(p.outage_seconds),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class StepRow:
    name: str
    phase: str
    start: str
    end: str
    duration: str
    status: str
    output: str
    expected: str
    notes: str


def step_rows(record: DrillRecord) -> list[StepRow]:
    return [
        StepRow(
            name=one_line(s.name),
            phase=one_line(s.phase),
            start=utc(s.started_at),
            end=utc(s.ended_at, missing="did not end"),
            duration=duration(s.duration_seconds, missing="did not end"),
            status=s.status,
            output=one_line(s.output),
            expected=duration(s.expected_seconds, missing="-"),
            notes=one_line(s.notes),
        )
        for s in record.steps
    ]


@dataclass(frozen=True, slots=True)
class ActionRow:
    id: str
    title: str
    owner: str
    drill_id: str
    due: str

    HEADERS: ClassVar[tuple[str, ...]] = ("Id", "Title", "Owner", "From drill", "Due")

    def cells(self) -> tuple[str, ...]:
        return (self.id, self.title, self.owner, self.drill_id, self.due)


def action_rows(actions: Sequence[Action]) -> list[ActionRow]:
    return [
        ActionRow(
            a.id,
            one_line(a.title),
            one_line(a.owner),
            a.drill_id or "-",
            a.due.isoformat() if a.due else "-",
        )
        for a in actions
        if a.open
    ]
