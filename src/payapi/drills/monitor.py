"""What ``payapi drill monitor ID`` shows: a snapshot of a drill from its files alone
(the journal and the samples), so it works from another terminal while the drill runs,
and after it ended."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payapi.core import run_journal
from payapi.core.plan import Plan
from payapi.drills import journal as files
from payapi.drills.runner import objectives

__all__ = ["snapshot"]


def snapshot(
    folder: Path, drill_id: str, plan: Plan, *, now: datetime | None = None
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    record = files.load(folder, drill_id, with_samples=True)
    raw = run_journal.read(files.journal_path(folder, drill_id)).records
    phases = [r["phase"] for r in raw if r.get("type") == "phase"]
    probes: dict[str, dict[str, Any]] = {}
    for s in record.samples:
        p = probes.setdefault(s.probe, {"attempts": 0, "successes": 0, "last_ok": None})
        p["attempts"] += 1
        p["successes"] += int(s.ok)
        p["last_ok"] = s.ok
    for p in probes.values():
        p["success_rate"] = p["successes"] / p["attempts"] if p["attempts"] else None
    injected = record.measurements.injected_at
    start = next((r for r in raw if r.get("type") == "start"), {})
    judged = [j.get("component") for j in (start.get("spec") or {}).get("judge", [])]
    rtos = [r for c in judged if c and (r := objectives(plan, str(c))[0]) is not None]
    end = record.ended_at or now
    return {
        "drill_id": record.drill_id,
        "drill": record.drill,
        "status": str(record.status),
        "phase": phases[-1] if phases else "start",
        "started_at": record.started_at.isoformat(),
        "injected_at": injected.isoformat() if injected else None,
        "elapsed_seconds": (end - record.started_at).total_seconds(),
        "elapsed_since_injection_seconds": (
            (end - injected).total_seconds() if injected is not None else None
        ),
        "rto_objective_seconds": min(rtos) if rtos else None,
        "probes": probes,
        "steps": [{"name": s.name, "status": s.status} for s in record.steps],
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
    }
