"""A run's journal file: durable JSON lines, a truncated last line ignored and cut off
before the next append, one driver at a time; and its records folded into a state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from payapi.core import run_journal
from payapi.core.run_journal import RunBusy, open_writer
from payapi.recovery.run_state import RunStatus, StepStatus, fold

RUN = "20260101T120000Z-demo-abc123"


def test_records_are_lines_and_a_truncated_last_line_is_ignored(tmp_path: Path) -> None:
    path = run_journal.path_of(tmp_path, RUN)
    with open_writer(path, create=True) as w:
        w.append({"type": "run", "run_id": RUN})
        w.append({"type": "start", "step": "a", "attempt": 1})
    with path.open("ab") as f:
        f.write(b'{"type":"end","step":"a","sta')  # killed mid-write
    read = run_journal.read(path)
    assert [r["type"] for r in read.records] == ["run", "start"]
    assert read.damaged_lines == 1
    state = fold(read.records, read.damaged_lines)
    assert state.step("a").status is StepStatus.RUNNING


def test_a_writer_cuts_the_partial_tail_before_appending(tmp_path: Path) -> None:
    path = run_journal.path_of(tmp_path, RUN)
    with open_writer(path, create=True) as w:
        w.append({"type": "run", "run_id": RUN})
    with path.open("ab") as f:
        f.write(b'{"type":"end","st')
    with open_writer(path, create=False) as w:
        w.append({"type": "resume"})
    lines = path.read_bytes().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["run", "resume"]
    assert run_journal.read(path).damaged_lines == 0


def test_a_damaged_middle_line_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / f"{RUN}.jsonl"
    path.write_bytes(b'{"type":"run"}\nnot json\n[1]\n{"type":"resume"}\n')
    read = run_journal.read(path)
    assert [r["type"] for r in read.records] == ["run", "resume"]
    assert read.damaged_lines == 2


def test_one_driver_at_a_time(tmp_path: Path) -> None:
    path = run_journal.path_of(tmp_path, RUN)
    with open_writer(path, create=True) as w:
        w.append({"type": "run"})
        assert run_journal.is_busy(path)
        # Another process (flock is per open file: a second open here would also block).
        code = (
            "import sys; from pathlib import Path; from payapi.core.run_journal import "
            "open_writer, RunBusy\n"
            "try:\n  with open_writer(Path(sys.argv[1]), create=False): pass\n"
            "except RunBusy: sys.exit(7)\n"
        )
        res = subprocess.run([sys.executable, "-c", code, str(path)], check=False)
        assert res.returncode == 7
        with pytest.raises(RunBusy), open_writer(path, create=False):
            pass
    assert not run_journal.is_busy(path)


def test_a_new_run_never_overwrites_one(tmp_path: Path) -> None:
    path = run_journal.path_of(tmp_path, RUN)
    with open_writer(path, create=True):
        pass
    with (
        pytest.raises(run_journal.RunJournalError, match="already exists"),
        open_writer(path, create=True),
    ):
        pass


def test_run_ids_are_checked_before_they_become_paths(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a run id") as exc:
        run_journal.path_of(tmp_path, "../../etc/passwd")
    assert getattr(exc.value, "exit_code", None) == 2
    with pytest.raises(Exception, match="no run") as exc:
        run_journal.read(run_journal.path_of(tmp_path, RUN))
    assert getattr(exc.value, "exit_code", None) == 2


def test_run_ids_are_listed_oldest_first(tmp_path: Path) -> None:
    for rid in ("20260102T000000Z-b-000001", "20260101T000000Z-a-000002"):
        (tmp_path / f"{rid}.jsonl").write_text("")
    (tmp_path / "notes.jsonl").write_text("")
    assert run_journal.run_ids(tmp_path) == [
        "20260101T000000Z-a-000002",
        "20260102T000000Z-b-000001",
    ]
    assert run_journal.run_ids(tmp_path / "missing") == []


def test_fold_counts_attempts_and_failures_and_a_resume_clears_the_failed_step() -> None:
    records = [
        {"type": "run", "run_id": RUN, "runbook": "demo", "params": {"n": 1}},
        {"type": "start", "step": "a", "attempt": 1, "at": "t1"},
        {"type": "end", "step": "a", "attempt": 1, "status": "ok", "end": "t2", "output": "x"},
        {"type": "start", "step": "b", "attempt": 1},
        {"type": "end", "step": "b", "attempt": 1, "status": "failed", "output": "boom"},
        {"type": "start", "step": "b", "attempt": 2},
        {"type": "end", "step": "b", "attempt": 2, "status": "failed", "output": "boom"},
        {"type": "finish", "status": "failed", "step": "b", "reason": "b failed"},
    ]
    state = fold(records)
    assert state.status is RunStatus.FAILED and state.finished_step == "b"
    assert state.step("a").status is StepStatus.OK and state.step("a").output == "x"
    b = state.step("b")
    assert (b.status, b.attempts, b.failures) == (StepStatus.FAILED, 2, 2)
    resumed = fold([*records, {"type": "resume", "by": "ops"}])
    assert resumed.status is RunStatus.RUNNING and resumed.resumes == 1
    b = resumed.step("b")
    assert (b.status, b.attempts, b.failures) == (StepStatus.PENDING, 2, 0)
    assert resumed.step("a").status is StepStatus.OK


def test_fold_keeps_rollbacks_apart_and_records_approvals() -> None:
    state = fold(
        [
            {"type": "approval", "step": "a", "decision": "approved", "by": "alice"},
            {"type": "start", "step": "a", "attempt": 1},
            {"type": "end", "step": "a", "attempt": 1, "status": "failed"},
            {"type": "start", "step": "undo", "phase": "rollback", "attempt": 1},
            {"type": "end", "step": "undo", "phase": "rollback", "attempt": 1, "status": "ok"},
            {"type": "approval", "step": "c", "decision": "waiting"},
            {"type": "future-record", "step": "a"},
        ]
    )
    assert state.step("a").approved_by == "alice"
    assert state.step("undo").status is StepStatus.PENDING  # not a main step
    assert state.step("undo", "rollback").status is StepStatus.OK
    assert state.step("c").status is StepStatus.WAITING_APPROVAL
