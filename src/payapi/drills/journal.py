"""A drill's files under the drills folder: its journal and its probes' ground truth.

- ``<drill_id>.jsonl``: the journal (:mod:`payapi.core.run_journal`: one fsynced JSON
  line per record, locked by the runner while it runs). Records, by ``type``:
  ``start`` (what drill, where, the checklist, the participants), ``step_started`` and
  ``step`` (a step's start; its end as :class:`~payapi.drills.model.StepRecord`),
  ``marker`` (``injected_at``, ``recovery_started_at``, ``normal_at``), ``phase``,
  ``incident``, ``result`` (measurements and verdicts) and ``end`` (status, reason).
- ``<drill_id>.samples.jsonl``: every probe attempt (:class:`~payapi.drills.model.Sample`),
  the acknowledged writes among them: what RPO is counted against.

:func:`load` folds the journal into a :class:`~payapi.drills.model.DrillRecord`. A journal
without an ``end`` whose lock nobody holds belongs to a runner that died (kill -9): it
reads as ``aborted``, "the runner died", until ``payapi drill restore-normal`` ends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payapi.core import run_journal
from payapi.core.errors import UsageError
from payapi.drills.model import (
    Checklist,
    DrillRecord,
    DrillStatus,
    Measurements,
    Sample,
    StepRecord,
    Verdict,
    parse_iso,
)

__all__ = [
    "RUNNER_DIED",
    "drill_ids",
    "journal_path",
    "load",
    "load_all",
    "new_drill_id",
    "read_samples",
    "samples_path",
]

SAMPLES_SUFFIX = ".samples.jsonl"
RUNNER_DIED = "the drill runner died before it ended (run: payapi drill restore-normal)"


def new_drill_id(name: str, now: datetime) -> str:
    import secrets

    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())[:40]
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{slug or 'drill'}-{secrets.token_hex(3)}"


def journal_path(folder: Path, drill_id: str) -> Path:
    try:
        return run_journal.path_of(folder, drill_id)
    except UsageError:
        raise UsageError(f"not a drill id: {drill_id!r} (see: payapi drill history)") from None


def samples_path(folder: Path, drill_id: str) -> Path:
    return journal_path(folder, drill_id).with_name(f"{drill_id}{SAMPLES_SUFFIX}")


def drill_ids(folder: Path) -> list[str]:
    """Every drill in the folder, oldest first."""
    return run_journal.run_ids(folder)


def read_samples(path: Path) -> Iterator[Sample]:
    """The samples of a file; a damaged (truncated) line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for record in run_journal.parse(data).records:
        try:
            yield Sample.from_json(record)
        except (KeyError, ValueError, TypeError, AssertionError):
            continue


def load(folder: Path, drill_id: str, *, with_samples: bool = False) -> DrillRecord:
    path = journal_path(folder, drill_id)
    records = run_journal.read(path).records
    start = next((r for r in records if r.get("type") == "start"), None)
    if start is None:
        raise UsageError(f"drill {drill_id} has no start record in {path}")
    steps: list[StepRecord] = []
    running: dict[str, dict[str, Any]] = {}
    markers: dict[str, Any] = {}
    result: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    incident_id: str | None = None
    for r in records:
        kind = r.get("type")
        if kind == "step_started":
            running[str(r["name"])] = r
        elif kind == "step":
            running.pop(str(r["name"]), None)
            steps.append(StepRecord.from_json(r))
        elif kind == "marker":
            markers[str(r["name"])] = r["at"]
        elif kind == "incident":
            incident_id = r.get("incident_id")
        elif kind == "result":
            result = r
        elif kind == "end":
            end = r
    for r in running.values():  # a step that never ended (the runner died in it)
        steps.append(StepRecord.from_json({**r, "status": "running", "ended_at": None}))
    if result is not None:
        measurements = Measurements.from_json(result.get("measurements") or {})
        verdicts = tuple(Verdict.from_json(v) for v in result.get("verdicts", ()))
    else:
        measurements = Measurements.from_json(markers)
        verdicts = ()
    if end is not None:
        status, reason, ended = DrillStatus(end["status"]), str(end.get("reason", "")), end
    elif run_journal.is_busy(path):
        status, reason, ended = DrillStatus.RUNNING, "", {}
    else:
        status, reason, ended = DrillStatus.ABORTED, RUNNER_DIED, {}
    checklist = start.get("checklist")
    samples = tuple(read_samples(samples_path(folder, drill_id))) if with_samples else ()
    return DrillRecord(
        drill_id=drill_id,
        drill=str(start["drill"]),
        scenario=str(start["scenario"]),
        component=start.get("component"),
        environment=str(start.get("environment", "")),
        tabletop=bool(start.get("tabletop", False)),
        status=status,
        started_at=parse_iso(start["started_at"]) or datetime.now(UTC),
        ended_at=parse_iso(ended.get("ended_at")),
        steps=tuple(steps),
        measurements=measurements,
        verdicts=verdicts,
        checklist=Checklist.from_json(checklist) if checklist else None,
        participants=tuple(start.get("participants", ())),
        incident_id=incident_id,
        reason=reason,
        samples=samples,
    )


def load_all(folder: Path) -> list[DrillRecord]:
    """Every drill of the folder, oldest first; one whose journal is unreadable is left
    out (the history says how many were)."""
    out: list[DrillRecord] = []
    for drill_id in drill_ids(folder):
        try:
            out.append(load(folder, drill_id))
        except (UsageError, run_journal.RunJournalError, KeyError, ValueError):
            continue
    return out
