"""A drill's journal folds into its record; a journal whose runner died reads as aborted."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from payapi.core.run_journal import open_writer
from payapi.drills import journal
from payapi.drills.model import DrillStatus, Sample

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def start(drill_id: str) -> dict[str, object]:
    return {
        "type": "start",
        "drill_id": drill_id,
        "drill": "redis-failure",
        "scenario": "failure",
        "component": "redis",
        "environment": "lab",
        "tabletop": False,
        "started_at": T0.isoformat(),
        "checklist": {
            "items": [{"item": "Go/No-Go decision made", "done": True, "by": "ada"}],
            "go": True,
        },
    }


def test_a_finished_drill_reads_back_with_its_steps_markers_and_samples(tmp_path: Path) -> None:
    drill_id = journal.new_drill_id("redis-failure", T0)
    assert drill_id.startswith("20261207T100000Z-redis-failure-")
    with open_writer(journal.journal_path(tmp_path, drill_id), create=True) as w:
        w.append(start(drill_id))
        step = {"name": "inject", "phase": "inject", "started_at": T0.isoformat()}
        w.append({"type": "step_started", **step})
        w.append({"type": "step", **step, "ended_at": T0.isoformat(), "status": "ok"})
        w.append({"type": "marker", "name": "injected_at", "at": T0.isoformat()})
        w.append({"type": "end", "status": "completed", "ended_at": T0.isoformat()})
    sample = Sample("payments", T0, T0, True, "p1")
    journal.samples_path(tmp_path, drill_id).write_text(
        f'{json.dumps(sample.to_json())}\n{{"probe": "payme'  # a torn last line
    )
    rec = journal.load(tmp_path, drill_id, with_samples=True)
    assert rec.status is DrillStatus.COMPLETED and rec.component == "redis"
    assert [s.name for s in rec.steps] == ["inject"]
    assert rec.measurements.injected_at == T0
    assert rec.checklist is not None and rec.checklist.go
    assert rec.samples == (sample,)
    assert [r.drill_id for r in journal.load_all(tmp_path)] == [drill_id]


def test_a_runner_killed_mid_step_reads_as_aborted_with_the_step_running(tmp_path: Path) -> None:
    drill_id = journal.new_drill_id("db-failure", T0)
    path = journal.journal_path(tmp_path, drill_id)
    code = (
        "import sys, json; from pathlib import Path; from payapi.core.run_journal import "
        "open_writer\n"
        f"with open_writer(Path({str(path)!r}), create=True) as w:\n"
        f"    w.append({start(drill_id)!r})\n"
        f"    w.append({{'type': 'step_started', 'name': 'recover', 'phase': 'recover', "
        f"'started_at': {T0.isoformat()!r}}})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    rec = journal.load(tmp_path, drill_id)
    assert rec.status is DrillStatus.ABORTED and rec.reason == journal.RUNNER_DIED
    assert [(s.name, s.status) for s in rec.steps] == [("recover", "running")]
