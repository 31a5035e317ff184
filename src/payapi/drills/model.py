"""The values a drill is made of: probe samples, the drill's markers, measurements and
verdicts, its steps, and the whole record the reports are written from.

Frozen value objects, built by the runner (or read back from a drill's journal with
:func:`DrillRecord.from_json`) and consumed by the pure arithmetic of
:mod:`payapi.drills.measure` and by the reports. Times are timezone-aware UTC datetimes;
a figure that was not measured is ``None`` (shown as ``NOT MEASURED``), never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "MARKERS",
    "Checklist",
    "ChecklistItem",
    "DrillRecord",
    "DrillStatus",
    "Measurements",
    "ProbeOutage",
    "Rpo",
    "Sample",
    "StepRecord",
    "Verdict",
    "VerdictKind",
    "iso",
    "parse_iso",
]

# The marker names of a drill's timeline, in the order they happen.
MARKERS = ("injected_at", "detected_at", "recovery_started_at", "service_restored_at", "normal_at")


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def parse_iso(text: object) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


class DrillStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # every phase ran; verdicts say whether the objectives were met
    ABORTED = "aborted"  # an abort condition, Ctrl-C or SIGTERM stopped it; restore-normal ran
    FAILED = "failed"  # a step failed (injection, recovery, verification)
    REFUSED = "refused"  # the checklist or the steady state said no; nothing was injected


class VerdictKind(StrEnum):
    MET = "MET"
    BREACHED = "BREACHED"
    NOT_MEASURED = "NOT MEASURED"


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe attempt: ``at`` when it was sent, ``end`` when its answer (or error)
    came. ``ref`` names the write when it was acknowledged (a payment id, a token's
    digest, a vault version), so it can be looked for after recovery. ``detail`` is one
    line: an HTTP status or an error class, never a secret."""

    probe: str
    at: datetime
    end: datetime
    ok: bool
    ref: str | None = None
    detail: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.end - self.at).total_seconds() * 1000.0

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "at": self.at.isoformat(),
            "end": self.end.isoformat(),
            "ok": self.ok,
            "ref": self.ref,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Sample:
        at, end = parse_iso(d["at"]), parse_iso(d["end"])
        assert at is not None and end is not None
        return cls(str(d["probe"]), at, end, bool(d["ok"]), d.get("ref"), str(d.get("detail", "")))


@dataclass(frozen=True, slots=True)
class ProbeOutage:
    """What one probe saw after the injection: its first failure and the first success
    after it (None: it never failed, or never came back), and its success rate."""

    probe: str
    attempts: int
    successes: int
    first_failure_at: datetime | None
    restored_at: datetime | None
    outage_seconds: float | None  # restored_at - injected_at; 0.0 when it never failed

    @property
    def success_rate(self) -> float | None:
        return None if self.attempts == 0 else self.successes / self.attempts

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "attempts": self.attempts,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "first_failure_at": iso(self.first_failure_at),
            "restored_at": iso(self.restored_at),
            "outage_seconds": self.outage_seconds,
        }


@dataclass(frozen=True, slots=True)
class Rpo:
    """The acknowledged writes of one probe, and those missing after recovery."""

    acknowledged: int
    missing: int
    window_seconds: float  # the time the missing writes span (0 when none is missing)
    first_missing_at: datetime | None = None
    last_missing_at: datetime | None = None
    missing_refs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "missing": self.missing,
            "window_seconds": self.window_seconds,
            "first_missing_at": iso(self.first_missing_at),
            "last_missing_at": iso(self.last_missing_at),
            "missing_refs": list(self.missing_refs[:50]),  # enough to find them
        }


@dataclass(frozen=True)
class Measurements:
    """The drill's markers and the figures computed from them (:mod:`.measure`).

    ``rto_seconds`` and ``rpo`` are the headline figures of the end-to-end payment probe;
    ``probes`` and ``rpo_by_probe`` hold every probe's own."""

    injected_at: datetime | None = None
    detected_at: datetime | None = None
    recovery_started_at: datetime | None = None
    service_restored_at: datetime | None = None
    normal_at: datetime | None = None
    rto_seconds: float | None = None
    rpo: Rpo | None = None
    probes: Mapping[str, ProbeOutage] = field(default_factory=dict)
    rpo_by_probe: Mapping[str, Rpo] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        rpo = self.rpo.to_json() if self.rpo else None
        return {
            "injected_at": iso(self.injected_at),
            "detected_at": iso(self.detected_at),
            "recovery_started_at": iso(self.recovery_started_at),
            "service_restored_at": iso(self.service_restored_at),
            "normal_at": iso(self.normal_at),
            "rto_seconds": self.rto_seconds,
            "rpo": rpo,
            "probes": {k: v.to_json() for k, v in self.probes.items()},
            "rpo_by_probe": {k: v.to_json() for k, v in self.rpo_by_probe.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Measurements:
        def rpo(x: Mapping[str, Any] | None) -> Rpo | None:
            if x is None:
                return None
            return Rpo(
                int(x["acknowledged"]),
                int(x["missing"]),
                float(x["window_seconds"]),
                parse_iso(x.get("first_missing_at")),
                parse_iso(x.get("last_missing_at")),
                tuple(x.get("missing_refs", ())),
            )

        probes = {
            k: ProbeOutage(
                k,
                int(v["attempts"]),
                int(v["successes"]),
                parse_iso(v.get("first_failure_at")),
                parse_iso(v.get("restored_at")),
                v.get("outage_seconds"),
            )
            for k, v in d.get("probes", {}).items()
        }
        by_probe = {k: r for k, v in d.get("rpo_by_probe", {}).items() if (r := rpo(v))}
        return cls(
            **{m: parse_iso(d.get(m)) for m in MARKERS},
            rto_seconds=d.get("rto_seconds"),
            rpo=rpo(d.get("rpo")),
            probes=probes,
            rpo_by_probe=by_probe,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """One component judged against ``dr-plan.yaml``. ``margin_seconds`` is objective
    minus measured (negative when breached): of the RTO when it was measured, else of
    the RPO window."""

    component: str
    probe: str
    rto_objective_seconds: float | None
    rpo_objective_seconds: float | None
    rto_seconds: float | None
    rpo_window_seconds: float | None
    rto_verdict: VerdictKind
    rpo_verdict: VerdictKind
    verdict: VerdictKind
    margin_seconds: float | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "probe": self.probe,
            "rto_objective_seconds": self.rto_objective_seconds,
            "rpo_objective_seconds": self.rpo_objective_seconds,
            "rto_seconds": self.rto_seconds,
            "rpo_window_seconds": self.rpo_window_seconds,
            "rto_verdict": str(self.rto_verdict),
            "rpo_verdict": str(self.rpo_verdict),
            "verdict": str(self.verdict),
            "margin_seconds": self.margin_seconds,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(
            str(d["component"]),
            str(d.get("probe", "")),
            d.get("rto_objective_seconds"),
            d.get("rpo_objective_seconds"),
            d.get("rto_seconds"),
            d.get("rpo_window_seconds"),
            VerdictKind(d.get("rto_verdict", d["verdict"])),
            VerdictKind(d.get("rpo_verdict", d["verdict"])),
            VerdictKind(d["verdict"]),
            d.get("margin_seconds"),
            str(d.get("detail", "")),
        )


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a drill as its journal holds it (Chaos Toolkit's activity run)."""

    name: str
    phase: str
    started_at: datetime
    ended_at: datetime | None
    status: str  # ok | failed | skipped | running | tabletop
    output: str = ""
    expected_seconds: float | None = None  # tabletop: what the runbook expects
    notes: str = ""  # tabletop: the participants' answers

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "started_at": self.started_at.isoformat(),
            "ended_at": iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "status": self.status,
            "output": self.output,
            "expected_seconds": self.expected_seconds,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StepRecord:
        started = parse_iso(d["started_at"])
        assert started is not None
        return cls(
            str(d["name"]),
            str(d.get("phase", "")),
            started,
            parse_iso(d.get("ended_at")),
            str(d["status"]),
            str(d.get("output", "")),
            d.get("expected_seconds"),
            str(d.get("notes", "")),
        )


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    item: str
    done: bool
    by: str | None


@dataclass(frozen=True, slots=True)
class Checklist:
    """The seed's Pre-Test Checklist as the operator ticked it, and the Go/No-Go."""

    items: tuple[ChecklistItem, ...]
    go: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [{"item": i.item, "done": i.done, "by": i.by} for i in self.items],
            "go": self.go,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Checklist:
        items = tuple(
            ChecklistItem(str(i["item"]), bool(i["done"]), i.get("by")) for i in d["items"]
        )
        return cls(items, bool(d["go"]))


@dataclass(frozen=True)
class DrillRecord:
    """Everything known of one drill: what the reports are written from."""

    drill_id: str
    drill: str  # the spec's name
    scenario: str
    component: str | None
    environment: str
    tabletop: bool
    status: DrillStatus
    started_at: datetime
    ended_at: datetime | None
    steps: tuple[StepRecord, ...] = ()
    measurements: Measurements = field(default_factory=Measurements)
    verdicts: tuple[Verdict, ...] = ()
    checklist: Checklist | None = None
    participants: tuple[str, ...] = ()
    incident_id: str | None = None
    reason: str = ""  # why it aborted, failed or was refused; one line
    samples: tuple[Sample, ...] = ()  # the probes' ground truth (the chart's data)

    def to_json(self, *, with_samples: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "drill_id": self.drill_id,
            "drill": self.drill,
            "scenario": self.scenario,
            "component": self.component,
            "environment": self.environment,
            "tabletop": self.tabletop,
            "status": str(self.status),
            "started_at": self.started_at.isoformat(),
            "ended_at": iso(self.ended_at),
            "reason": self.reason,
            "checklist": self.checklist.to_json() if self.checklist else None,
            "participants": list(self.participants),
            "incident_id": self.incident_id,
            "steps": [s.to_json() for s in self.steps],
            "measurements": self.measurements.to_json(),
            "verdicts": [v.to_json() for v in self.verdicts],
        }
        if with_samples:
            out["samples"] = [s.to_json() for s in self.samples]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], samples: Sequence[Sample] = ()) -> DrillRecord:
        started = parse_iso(d["started_at"])
        assert started is not None
        checklist = d.get("checklist")
        return cls(
            drill_id=str(d["drill_id"]),
            drill=str(d["drill"]),
            scenario=str(d["scenario"]),
            component=d.get("component"),
            environment=str(d.get("environment", "")),
            tabletop=bool(d.get("tabletop", False)),
            status=DrillStatus(d["status"]),
            started_at=started,
            ended_at=parse_iso(d.get("ended_at")),
            steps=tuple(StepRecord.from_json(s) for s in d.get("steps", ())),
            measurements=Measurements.from_json(d.get("measurements") or {}),
            verdicts=tuple(Verdict.from_json(v) for v in d.get("verdicts", ())),
            checklist=Checklist.from_json(checklist) if checklist else None,
            participants=tuple(d.get("participants", ())),
            incident_id=d.get("incident_id"),
            reason=str(d.get("reason", "")),
            samples=tuple(samples),
        )
