"""Drill records made up for the report, history and CLI tests, and their journal files.

``record()`` is a Redis failure drill whose probes fail after the injection and recover:
the figures come from the real arithmetic (:mod:`payapi.drills.measure`), so the reports
are tested on what the runner will hand them. ``write_journal`` writes a record as the
runner's journal (:mod:`payapi.drills.journal`'s format), for the commands that read one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from payapi.core.run_journal import open_writer
from payapi.drills import journal, measure
from payapi.drills.model import (
    Checklist,
    ChecklistItem,
    DrillRecord,
    DrillStatus,
    Sample,
    StepRecord,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def samples(*, down_from: int = 10, down_until: int = 25) -> list[Sample]:
    """One payment and one token per second from -5 s to 40 s; both fail while down."""
    out: list[Sample] = []
    for i in range(-5, 41):
        up = not (down_from <= i < down_until)
        for probe, ms in (("payments", 40), ("tokens", 3)):
            at = sec(i)
            end = at + timedelta(milliseconds=ms if up else 2000)
            ref = f"{probe}:{i}" if up else None
            detail = "201" if up else "ConnectError"
            out.append(Sample(probe, at, end, up, ref, detail))
    return out


def record(
    *,
    drill_id: str = "20261207T100000Z-redis-failure-a1b2c3",
    rto_objective: float = 3600.0,
    rpo_objective: float = 900.0,
    lost: Sequence[int] = (),
    status: DrillStatus = DrillStatus.COMPLETED,
    started_at: datetime = T0,
    drill: str = "redis-failure",
    scenario: str = "failure",
    component: str | None = "redis",
    reason: str = "",
) -> DrillRecord:
    """A Redis failure: injected at 0 s, down from 10 s to 25 s, normal at 40 s.
    ``lost``: the seconds whose acknowledged payments are missing after recovery."""
    shift = started_at - T0
    smp = [replace(s, at=s.at + shift, end=s.end + shift) for s in samples()]
    gone = {f"payments:{i}" for i in lost}
    found = {
        p: [str(s.ref) for s in smp if s.ref and s.probe == p and s.ref not in gone]
        for p in ("payments", "tokens")
    }
    m = measure.measure(
        smp,
        injected_at=sec(0) + shift,
        recovery_started_at=sec(12) + shift,
        normal_at=sec(40) + shift,
        found=found,
    )
    verdicts = (
        measure.judge(
            "redis",
            "tokens",
            rto_objective=rto_objective,
            rpo_objective=rpo_objective,
            measurements=m,
        ),
        measure.judge(
            "payment-eapi",
            "payments",
            rto_objective=rto_objective,
            rpo_objective=rpo_objective,
            measurements=m,
        ),
    )
    steps = (
        StepRecord("steady state", "steady", sec(-5) + shift, sec(-4) + shift, "ok", "3 probes ok"),
        StepRecord("kill redis", "inject", sec(0) + shift, sec(1) + shift, "ok", "sent SIGKILL"),
        StepRecord("sentinel failover", "recover", sec(12) + shift, sec(25) + shift, "ok"),
        StepRecord("restore normal", "restore", sec(30) + shift, sec(40) + shift, "ok"),
    )
    checklist = Checklist(
        (
            ChecklistItem("Test plan reviewed and approved", True, "ada"),
            ChecklistItem("Go/No-Go decision made", True, "grace"),
        ),
        go=True,
    )
    return DrillRecord(
        drill_id=drill_id,
        drill=drill,
        scenario=scenario,
        component=component,
        environment="lab",
        tabletop=False,
        status=status,
        started_at=started_at - timedelta(seconds=6),
        ended_at=sec(41) + shift,
        steps=steps,
        measurements=m,
        verdicts=verdicts,
        checklist=checklist,
        participants=("ada", "grace"),
        incident_id="INC-20261207-001",
        reason=reason,
        samples=tuple(smp),
    )


def tabletop(drill_id: str = "20261208T090000Z-redis-failure-d4e5f6") -> DrillRecord:
    at = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    steps = (
        StepRecord(
            "kill redis",
            "inject",
            at,
            at + timedelta(minutes=3),
            "tabletop",
            "would send SIGKILL to the Redis primary",
            expected_seconds=5.0,
            notes="on-call knows where the primary runs",
        ),
        StepRecord(
            "sentinel failover",
            "recover",
            at + timedelta(minutes=3),
            at + timedelta(minutes=10),
            "tabletop",
            "would wait for Sentinel to promote a replica",
            expected_seconds=30.0,
            notes="nobody knew the Sentinel quorum; action: document it",
        ),
    )
    return DrillRecord(
        drill_id=drill_id,
        drill="redis-failure",
        scenario="failure",
        component="redis",
        environment="lab",
        tabletop=True,
        status=DrillStatus.COMPLETED,
        started_at=at,
        ended_at=at + timedelta(minutes=10),
        steps=steps,
        participants=("ada", "grace", "linus"),
    )


def write_journal(folder: Path, rec: DrillRecord) -> None:
    """``rec`` as the runner writes it: the journal, then its samples file."""
    start = {
        "type": "start",
        "drill_id": rec.drill_id,
        "drill": rec.drill,
        "scenario": rec.scenario,
        "component": rec.component,
        "environment": rec.environment,
        "tabletop": rec.tabletop,
        "started_at": rec.started_at.isoformat(),
        "checklist": rec.checklist.to_json() if rec.checklist else None,
        "participants": list(rec.participants),
    }
    with open_writer(journal.journal_path(folder, rec.drill_id), create=True) as w:
        w.append(start)
        for step in rec.steps:
            w.append({"type": "step_started", **step.to_json()})
            w.append({"type": "step", **step.to_json()})
        if rec.incident_id:
            w.append({"type": "incident", "incident_id": rec.incident_id})
        if rec.measurements.injected_at is not None:
            w.append(
                {
                    "type": "result",
                    "measurements": rec.measurements.to_json(),
                    "verdicts": [v.to_json() for v in rec.verdicts],
                }
            )
        end = rec.ended_at.isoformat() if rec.ended_at else None
        w.append({"type": "end", "status": str(rec.status), "ended_at": end, "reason": rec.reason})
    lines = "".join(json.dumps(s.to_json()) + "\n" for s in rec.samples)
    journal.samples_path(folder, rec.drill_id).write_text(lines)
