"""The planner is pure: a runbook and a folded journal in, the next decision out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payapi.recovery.planner import Kind, next_step
from payapi.recovery.run_state import RunStatus, fold
from payapi.recovery.runbook import Runbook

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def book(*steps: dict[str, Any], rollback_steps: list[dict[str, Any]] | None = None) -> Runbook:
    return Runbook.model_validate(
        {
            "name": "demo",
            "title": "Demo",
            "steps": list(steps),
            "rollback_steps": rollback_steps or [],
        }
    )


def ran(
    step: str, attempt: int, status: str, *, phase: str = "main", at: int = 0
) -> list[dict[str, Any]]:
    """The start and end records of one attempt, ending ``at`` seconds after T0."""
    end = (T0 + timedelta(seconds=at)).isoformat()
    return [
        {"type": "start", "step": step, "phase": phase, "attempt": attempt},
        {
            "type": "end",
            "step": step,
            "phase": phase,
            "attempt": attempt,
            "status": status,
            "end": end,
            "output": "boom" if status == "failed" else "done",
        },
    ]


def decide(rb: Runbook, *records: dict[str, Any]) -> Any:
    return next_step(rb, fold(records))


A = {"id": "a", "action": "noop"}
B = {"id": "b", "action": "noop"}


def test_a_new_run_starts_at_the_first_step() -> None:
    d = decide(book(A, B))
    assert (d.kind, d.step, d.attempt, d.not_before) == (Kind.RUN, "a", 1, None)


def test_completed_steps_are_never_run_again() -> None:
    d = decide(book(A, B), *ran("a", 1, "ok"))
    assert (d.kind, d.step, d.attempt) == (Kind.RUN, "b", 1)


def test_all_done() -> None:
    d = decide(book(A, B), *ran("a", 1, "ok"), *ran("b", 1, "ok"))
    assert d.kind is Kind.DONE and d.status is RunStatus.SUCCEEDED


def test_a_failed_step_without_retries_aborts_by_default() -> None:
    d = decide(book(A, B), *ran("a", 1, "failed"))
    assert (d.kind, d.step, d.status) == (Kind.ABORTED, "a", RunStatus.FAILED)
    assert "a failed after 1 attempt(s): boom" in d.reason


def test_retries_back_off_exponentially_up_to_the_max() -> None:
    step = {**A, "retries": 3, "backoff": {"initial": "2s", "multiplier": 3, "max": "10s"}}
    rb = book(step)
    d1 = decide(rb, *ran("a", 1, "failed", at=0))
    assert (d1.kind, d1.attempt, d1.not_before) == (Kind.RETRY, 2, T0 + timedelta(seconds=2))
    assert "retry 1 of 3 after 2s" in d1.reason
    d2 = decide(rb, *ran("a", 1, "failed", at=0), *ran("a", 2, "failed", at=5))
    assert (d2.attempt, d2.not_before) == (3, T0 + timedelta(seconds=5 + 6))
    d3 = decide(rb, *ran("a", 1, "failed"), *ran("a", 2, "failed"), *ran("a", 3, "failed", at=20))
    assert (d3.attempt, d3.not_before) == (4, T0 + timedelta(seconds=20 + 10))  # capped
    d4 = decide(
        rb,
        *ran("a", 1, "failed"),
        *ran("a", 2, "failed"),
        *ran("a", 3, "failed"),
        *ran("a", 4, "failed"),
    )
    assert d4.kind is Kind.ABORTED


def test_a_retry_that_succeeds_moves_on() -> None:
    rb = book({**A, "retries": 2}, B)
    d = decide(rb, *ran("a", 1, "failed"), *ran("a", 2, "ok"))
    assert (d.kind, d.step) == (Kind.RUN, "b")


def test_on_failure_continue_goes_on_and_says_so_at_the_end() -> None:
    rb = book({**A, "on_failure": "continue"}, B)
    d = decide(rb, *ran("a", 1, "failed"))
    assert (d.kind, d.step) == (Kind.RUN, "b")
    end = decide(rb, *ran("a", 1, "failed"), *ran("b", 1, "ok"))
    assert end.kind is Kind.DONE and "a failed, on_failure: continue" in end.reason


ROLLBACK_BOOK = book(
    A,
    {**B, "on_failure": "rollback", "rollback": "undo", "retries": 1},
    {"id": "c", "action": "noop"},
    rollback_steps=[{"id": "undo", "action": "noop", "retries": 1, "backoff": "3s"}],
)


def test_rollback_runs_once_retries_are_spent() -> None:
    base = [*ran("a", 1, "ok"), *ran("b", 1, "failed")]
    assert decide(ROLLBACK_BOOK, *base).kind is Kind.RETRY
    d = decide(ROLLBACK_BOOK, *base, *ran("b", 2, "failed"))
    assert (d.kind, d.step, d.attempt, d.failed_step, d.phase) == (
        Kind.ROLLBACK,
        "undo",
        1,
        "b",
        "rollback",
    )
    assert "roll back with undo" in d.reason


def test_a_rollback_that_succeeds_ends_the_run_rolled_back() -> None:
    recs = [
        *ran("a", 1, "ok"),
        *ran("b", 1, "failed"),
        *ran("b", 2, "failed"),
        *ran("undo", 1, "ok", phase="rollback"),
    ]
    d = decide(ROLLBACK_BOOK, *recs)
    assert (d.kind, d.status) == (Kind.ABORTED, RunStatus.ROLLED_BACK)
    assert "rolled back by undo" in d.reason


def test_a_rollback_has_its_own_retries_and_its_failure_fails_the_run() -> None:
    recs = [
        *ran("a", 1, "ok"),
        *ran("b", 1, "failed"),
        *ran("b", 2, "failed"),
        *ran("undo", 1, "failed", phase="rollback", at=7),
    ]
    d = decide(ROLLBACK_BOOK, *recs)
    assert (d.kind, d.step, d.attempt, d.not_before) == (
        Kind.ROLLBACK,
        "undo",
        2,
        T0 + timedelta(seconds=10),
    )
    d = decide(ROLLBACK_BOOK, *recs, *ran("undo", 2, "failed", phase="rollback"))
    assert (d.kind, d.status) == (Kind.ABORTED, RunStatus.FAILED)
    assert "its rollback undo failed too" in d.reason


def test_a_rollback_can_be_a_main_step_run_again() -> None:
    rb = book(A, {**B, "on_failure": "rollback", "rollback": "a"})
    d = decide(rb, *ran("a", 1, "ok"), *ran("b", 1, "failed"))
    assert (d.kind, d.step, d.attempt) == (Kind.ROLLBACK, "a", 1)


APPROVAL_BOOK = book(A, {**B, "approval": "dr-coordinator"})


def test_a_step_needing_approval_waits_for_it() -> None:
    d = decide(APPROVAL_BOOK, *ran("a", 1, "ok"))
    assert (d.kind, d.step, d.role) == (Kind.WAIT_APPROVAL, "b", "dr-coordinator")
    d = decide(
        APPROVAL_BOOK, *ran("a", 1, "ok"), {"type": "approval", "step": "b", "decision": "waiting"}
    )
    assert d.kind is Kind.WAIT_APPROVAL


def test_an_approved_step_runs_and_a_refused_one_aborts_the_run() -> None:
    approved = {"type": "approval", "step": "b", "decision": "approved", "by": "alice"}
    d = decide(APPROVAL_BOOK, *ran("a", 1, "ok"), approved)
    assert (d.kind, d.step) == (Kind.RUN, "b")
    refused = {
        "type": "approval",
        "step": "b",
        "decision": "refused",
        "by": "carol",
        "reason": "not now",
    }
    d = decide(APPROVAL_BOOK, *ran("a", 1, "ok"), refused)
    assert (d.kind, d.status) == (Kind.ABORTED, RunStatus.ABORTED)
    assert "refused by carol (not now)" in d.reason


def test_an_approval_holds_across_retries() -> None:
    rb = book({**A, "approval": "lead", "retries": 1})
    approved = {"type": "approval", "step": "a", "decision": "approved", "by": "alice"}
    d = decide(rb, approved, *ran("a", 1, "failed"))
    assert (d.kind, d.attempt) == (Kind.RETRY, 2)


def test_a_step_started_but_not_ended_is_rerun_from_its_start() -> None:
    rb = book(A, B)
    d = decide(rb, *ran("a", 1, "ok"), {"type": "start", "step": "b", "attempt": 1, "at": "t"})
    assert (d.kind, d.step, d.attempt, d.rerun) == (Kind.RUN, "b", 2, True)
    assert "never ended" in d.reason and "re-run from its start" in d.reason


def test_an_interrupted_attempt_does_not_spend_a_retry() -> None:
    rb = book(A)  # no retries at all
    recs = [
        {"type": "start", "step": "a", "attempt": 1},
        {"type": "interrupted", "step": "a", "attempt": 1},
        *ran("a", 2, "ok"),
    ]
    assert decide(rb, *recs).kind is Kind.DONE


def test_an_interrupted_rollback_is_rerun() -> None:
    recs = [
        *ran("a", 1, "ok"),
        *ran("b", 1, "failed"),
        *ran("b", 2, "failed"),
        {"type": "start", "step": "undo", "phase": "rollback", "attempt": 1},
    ]
    d = decide(ROLLBACK_BOOK, *recs)
    assert (d.kind, d.step, d.attempt, d.rerun) == (Kind.ROLLBACK, "undo", 2, True)


def test_resume_of_an_aborted_run_retries_the_failed_step_only() -> None:
    rb = book(A, B, {"id": "c", "action": "noop"})
    recs = [
        *ran("a", 1, "ok"),
        *ran("b", 1, "failed"),
        {"type": "finish", "status": "failed", "step": "b"},
    ]
    assert decide(rb, *recs).kind is Kind.ABORTED
    d = decide(rb, *recs, {"type": "resume"})
    assert (d.kind, d.step, d.attempt, d.not_before) == (Kind.RUN, "b", 2, None)


def test_a_refusal_survives_a_resume_the_run_stays_aborted() -> None:
    recs = [
        *ran("a", 1, "ok"),
        {"type": "approval", "step": "b", "decision": "refused", "by": "carol"},
        {"type": "finish", "status": "aborted", "step": "b"},
        {"type": "resume"},
    ]
    d = decide(APPROVAL_BOOK, *recs)
    assert (d.kind, d.status, d.step) == (Kind.ABORTED, RunStatus.ABORTED, "b")


def test_an_expired_approval_aborts_and_a_resume_asks_again() -> None:
    waiting = {"type": "approval", "step": "b", "decision": "waiting", "at": T0.isoformat()}
    recs = [*ran("a", 1, "ok"), waiting]
    d = next_step(APPROVAL_BOOK, fold(recs), T0 + timedelta(hours=2))
    assert (d.kind, d.status) == (Kind.ABORTED, RunStatus.ABORTED) and "expired" in d.reason
    recs += [{"type": "finish", "status": "aborted", "step": "b"}, {"type": "resume"}]
    assert next_step(APPROVAL_BOOK, fold(recs), T0 + timedelta(hours=2)).kind is (
        Kind.WAIT_APPROVAL
    )


def test_resume_of_a_rolled_back_run_starts_over_at_the_failed_step() -> None:
    recs = [
        *ran("a", 1, "ok"),
        *ran("b", 1, "failed"),
        *ran("b", 2, "failed"),
        *ran("undo", 1, "ok", phase="rollback"),
        {"type": "finish", "status": "rolled_back", "step": "b"},
        {"type": "resume"},
    ]
    d = decide(ROLLBACK_BOOK, *recs)
    assert (d.kind, d.step, d.attempt) == (Kind.RUN, "b", 3)


@pytest.mark.parametrize("status", ["ok", "failed"])
def test_the_planner_never_mutates_its_input(status: str) -> None:
    recs = ran("a", 1, status)
    state = fold(recs)
    before = repr(state)
    next_step(book(A), state)
    assert repr(state) == before


CLEANUP_BOOK = book(
    A,
    {**B, "approval": "dr-coordinator", "on_failure": "rollback", "rollback": "discard"},
    rollback_steps=[{"id": "discard", "action": "noop", "retries": 1}],
)
REFUSED = {"type": "approval", "step": "b", "decision": "refused", "by": "carol", "reason": "no"}


def test_a_refusal_cleans_up_with_the_steps_rollback_then_aborts() -> None:
    d = decide(CLEANUP_BOOK, *ran("a", 1, "ok"), REFUSED)
    assert (d.kind, d.step, d.attempt, d.failed_step) == (Kind.ROLLBACK, "discard", 1, "b")
    assert "refused by carol (no): clean up with discard" in d.reason
    d = decide(
        CLEANUP_BOOK, *ran("a", 1, "ok"), REFUSED, *ran("discard", 1, "ok", phase="rollback")
    )
    assert (d.kind, d.status, d.step) == (Kind.ABORTED, RunStatus.ABORTED, "b")
    assert d.reason.endswith("; cleaned up by discard")


def test_a_failed_clean_up_is_retried_and_the_run_still_ends_aborted() -> None:
    recs = [*ran("a", 1, "ok"), REFUSED, *ran("discard", 1, "failed", phase="rollback")]
    d = decide(CLEANUP_BOOK, *recs)
    assert (d.kind, d.step, d.attempt) == (Kind.ROLLBACK, "discard", 2)
    d = decide(CLEANUP_BOOK, *recs, *ran("discard", 2, "failed", phase="rollback"))
    assert (d.kind, d.status) == (Kind.ABORTED, RunStatus.ABORTED)
    assert "its clean-up discard failed (boom)" in d.reason


def test_an_expired_approval_does_not_clean_up() -> None:
    waiting = {"type": "approval", "step": "b", "decision": "waiting", "at": T0.isoformat()}
    d = next_step(CLEANUP_BOOK, fold([*ran("a", 1, "ok"), waiting]), T0 + timedelta(hours=5))
    assert (d.kind, d.status) == (Kind.ABORTED, RunStatus.ABORTED) and "expired" in d.reason
