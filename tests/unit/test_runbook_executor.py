"""The executor: acts on the planner's decisions, journals every step, audits through an
injected sink, asks an injected approval policy; no database needed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payapi.core import run_journal
from payapi.core.journal import Journal, Status
from payapi.recovery.approval import Answer, ApprovalDecision, ApprovalRequest
from payapi.recovery.executor import Executor
from payapi.recovery.run_state import RunStatus
from payapi.recovery.runbook import Runbook


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


class Audit:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, type_: str, subject: str, details: Mapping[str, Any]) -> None:
        if self.fail:
            raise OSError("database down")
        self.events.append((type_, subject, dict(details)))


def book(*steps: dict[str, Any], **extra: Any) -> Runbook:
    return Runbook.model_validate({"name": "demo", "title": "Demo", "steps": list(steps), **extra})


def executor(tmp_path: Path, **kw: Any) -> tuple[Executor, Clock]:
    clock = Clock()
    kw.setdefault("journal", Journal.silent())
    return Executor(journal_dir=tmp_path, clock=clock, sleep=clock.sleep, **kw), clock


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_run_journals_every_step_with_a_checkpoint(tmp_path: Path) -> None:
    audit = Audit()
    ex, _ = executor(tmp_path, audit=audit)
    rb = book(
        {"id": "a", "action": "noop", "params": {"message": "hello {{ who }}"}},
        {"id": "b", "action": "noop", "verify": {"action": "noop", "params": {"message": "fine"}}},
        parameters={"who": {"default": "ops"}},
    )
    result = ex.start(rb, rb.resolve({}))
    assert result.ok and result.state.status is RunStatus.SUCCEEDED
    recs = records(result.path)
    assert [r["type"] for r in recs] == [
        "run",
        "start",
        "end",
        "checkpoint",
        "start",
        "end",
        "checkpoint",
        "finish",
    ]
    end_a = recs[2]
    assert {k for k in end_a} >= {
        "step",
        "start",
        "end",
        "duration",
        "status",
        "output",
        "attempt",
        "approved_by",
    }
    assert end_a["output"] == "hello ops"
    assert recs[5]["output"] == "nothing to do; verified (noop): fine"
    assert recs[6]["completed"] == ["a", "b"]
    assert recs[0]["definition"]["name"] == "demo" and recs[0]["params"] == {"who": "ops"}
    assert [t for t, _, _ in audit.events] == [
        "runbook.step.started",
        "runbook.step.ended",
        "runbook.step.started",
        "runbook.step.ended",
    ]
    assert audit.events[1][1] == f"runbook:demo/{result.run_id}"
    assert audit.events[1][2]["status"] == "ok" and "output" not in audit.events[1][2]


def test_retries_wait_their_backoff_and_the_progress_journal_sees_each_attempt(
    tmp_path: Path,
) -> None:
    progress = Journal()
    ex, clock = executor(tmp_path, journal=progress)
    rb = book(
        {
            "id": "flaky",
            "action": "fail",
            "params": {"attempts": 2},
            "retries": 3,
            "backoff": {"initial": 2, "multiplier": 2},
        }
    )
    result = ex.start(rb, {})
    assert result.ok
    assert clock.slept == [2.0, 4.0]
    attempts = [s for s in progress.steps if s.name.split(" (")[0] == "flaky"]
    failures = [s.name for s in progress.steps if "failed:" in s.name]
    assert failures == [
        "flaky: attempt 1 failed: failed on purpose",
        "flaky: attempt 2 failed: failed on purpose",
    ]
    assert [s.status for s in attempts] == [Status.FAILED, Status.FAILED, Status.OK]
    assert attempts[2].name == "flaky (attempt 3)"
    st = result.state.step("flaky")
    assert (st.attempts, st.failures, st.output) == (3, 2, "succeeded at attempt 3")


def test_an_abort_stops_the_run_and_resume_retries_only_the_failed_step(tmp_path: Path) -> None:
    marker = tmp_path / "side-effect"
    ex, _ = executor(tmp_path)
    rb = book(
        {
            "id": "append",
            "action": "shell",
            "params": {"argv": ["sh", "-c", f"echo x >> {marker}"]},
        },
        {"id": "gate", "action": "shell", "params": {"argv": ["test", "-e", str(tmp_path / "go")]}},
    )
    first = ex.start(rb, {})
    assert first.state.status is RunStatus.FAILED and "gate failed" in first.reason
    (tmp_path / "go").touch()
    again = ex.resume(first.run_id)
    assert again.ok
    assert marker.read_text() == "x\n"  # the completed step's side effect happened once
    assert again.state.resumes == 1
    with pytest.raises(Exception, match="already succeeded") as exc:
        ex.resume(first.run_id)
    assert getattr(exc.value, "exit_code", None) == 2


def test_resume_reruns_a_step_that_started_and_never_ended_and_says_so(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    rb = book({"id": "a", "action": "noop"}, {"id": "b", "action": "noop"})
    result = ex.start(rb, {})
    # Make the journal look like a process killed in the middle of b.
    recs = records(result.path)
    cut = next(i for i, r in enumerate(recs) if r["type"] == "start" and r["step"] == "b")
    result.path.write_text("".join(json.dumps(r) + "\n" for r in recs[: cut + 1]) + '{"type":"e')
    again = ex.resume(result.run_id)
    assert again.ok
    recs = records(result.path)
    interrupted = [r for r in recs if r["type"] == "interrupted"]
    assert (
        len(interrupted) == 1 and interrupted[0]["step"] == "b" and interrupted[0]["attempt"] == 1
    )
    assert "re-run from its start" in interrupted[0]["note"]
    assert [r["attempt"] for r in recs if r["type"] == "start" and r["step"] == "a"] == [1]
    assert [r["attempt"] for r in recs if r["type"] == "start" and r["step"] == "b"] == [1, 2]


def test_a_rollback_runs_and_ends_the_run_rolled_back(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    rb = book(
        {"id": "a", "action": "fail", "on_failure": "rollback", "rollback": "undo"},
        {"id": "never", "action": "noop"},
        rollback_steps=[{"id": "undo", "action": "noop", "params": {"message": "undone"}}],
    )
    result = ex.start(rb, {})
    assert result.state.status is RunStatus.ROLLED_BACK
    assert result.state.step("undo", "rollback").output == "undone"
    assert result.state.step("never").attempts == 0


def test_a_timeout_fails_the_attempt(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    rb = book({"id": "slow", "action": "shell", "params": {"argv": ["sleep", "5"]}, "timeout": 0.2})
    result = ex.start(rb, {})
    assert result.state.status is RunStatus.FAILED
    assert "timed out" in result.state.step("slow").output


def test_bad_params_at_run_time_fail_the_step_with_one_line(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    rb = book(
        {"id": "a", "action": "sleep", "params": {"seconds": "{{ n }}"}},
        parameters={"n": {"type": "str", "default": "soon"}},
    )
    result = ex.start(rb, rb.resolve({}))
    assert "action sleep: seconds:" in result.state.step("a").output


class Policy:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked: list[ApprovalRequest] = []

    def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        self.asked.append(request)
        return ApprovalDecision(self.answer, "bob" if self.answer is Answer.APPROVED else None)


def test_the_default_policy_approves_and_the_journal_says_by_whom(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    result = ex.start(book({"id": "a", "action": "noop", "approval": "lead"}), {})
    assert result.ok and result.state.step("a").approved_by == "policy:allow-all"


def test_an_approval_policy_is_asked_and_its_answer_journaled(tmp_path: Path) -> None:
    rb = book({"id": "a", "action": "noop"}, {"id": "b", "action": "noop", "approval": "lead"})
    pending = Policy(Answer.PENDING)
    ex, _ = executor(tmp_path, policy=pending, requested_by="alice")
    waiting = ex.start(rb, {})
    assert waiting.state.status is RunStatus.WAITING_APPROVAL
    assert pending.asked[0].role == "lead" and pending.asked[0].requested_by == "alice"
    assert waiting.state.step("b").attempts == 0
    ex.policy = Policy(Answer.APPROVED)
    done = ex.resume(waiting.run_id)
    assert done.ok and done.state.step("b").approved_by == "bob"
    assert done.state.step("a").attempts == 1
    ex2, _ = executor(tmp_path, policy=Policy(Answer.REFUSED))
    refused = ex2.start(rb, {})
    assert refused.state.status is RunStatus.ABORTED and "refused" in refused.reason


def test_a_failing_audit_sink_never_stops_the_run(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path, audit=Audit(fail=True))
    result = ex.start(book({"id": "a", "action": "noop"}), {})
    assert result.ok
    notes = [r["text"] for r in records(result.path) if r["type"] == "note"]
    assert notes and all("not written: OSError" in n for n in notes)


def test_outputs_lose_url_credentials(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    rb = book({"id": "a", "action": "noop", "params": {"message": "postgresql://app:pw@db/x"}})
    result = ex.start(rb, {})
    (end,) = [r for r in records(result.path) if r["type"] == "end"]
    assert end["output"] == "postgresql://app@db/x"


def test_a_run_being_driven_cannot_be_resumed_twice(tmp_path: Path) -> None:
    ex, _ = executor(tmp_path)
    result = ex.start(book({"id": "a", "action": "fail"}), {})
    with run_journal.open_writer(result.path, create=False), pytest.raises(run_journal.RunBusy):
        ex.resume(result.run_id)
