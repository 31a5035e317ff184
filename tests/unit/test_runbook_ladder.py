"""A ladder of remedies: ``skip_to`` (a step that succeeds skips the rungs after it) and
steps whose action does not apply (skipped, neither ok nor failed). Planner (pure),
format validation, executor journal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from payapi.core.journal import Journal
from payapi.recovery.actions import Action, ActionContext, ActionSkipped, register
from payapi.recovery.executor import Executor
from payapi.recovery.planner import Kind, next_step
from payapi.recovery.run_state import RunStatus, StepStatus, fold
from payapi.recovery.runbook import Runbook

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).isoformat()


def book(*steps: dict[str, Any]) -> Runbook:
    return Runbook.model_validate({"name": "ladder", "title": "Ladder", "steps": list(steps)})


def end(step: str, status: str, attempt: int = 1) -> list[dict[str, Any]]:
    return [
        {"type": "start", "step": step, "phase": "main", "attempt": attempt},
        {"type": "end", "step": step, "phase": "main", "attempt": attempt, "status": status,
         "end": T0, "output": status},
    ]  # fmt: skip


LADDER = book(
    {"id": "check", "action": "noop", "on_failure": "continue", "skip_to": "end"},
    {"id": "restart", "action": "noop", "on_failure": "continue", "skip_to": "verify"},
    {"id": "scale", "action": "noop", "on_failure": "continue", "skip_to": "verify"},
    {"id": "config", "action": "noop", "on_failure": "continue"},
    {"id": "verify", "action": "noop"},
)


def decide(*records: dict[str, Any]) -> Any:
    return next_step(LADDER, fold(records))


def test_healthy_at_the_check_skips_everything_and_the_run_succeeds() -> None:
    d = decide(*end("check", "ok"))
    assert (d.kind, d.step) == (Kind.SKIP, "restart")
    assert "check succeeded (skip to the end)" in d.reason
    recs = end("check", "ok") + [
        {"type": "skip", "step": s, "reason": "skipped"}
        for s in ("restart", "scale", "config", "verify")
    ]
    d = decide(*recs)
    assert d.kind is Kind.DONE and d.status is RunStatus.SUCCEEDED
    assert "skipped: restart, scale, config, verify" in d.reason


def test_a_failed_rung_goes_on_and_the_first_that_works_skips_to_verify() -> None:
    assert decide(*end("check", "failed")).step == "restart"
    recs = end("check", "failed") + end("restart", "ok")
    d = decide(*recs)
    assert (d.kind, d.step) == (Kind.SKIP, "scale")
    recs += [{"type": "skip", "step": "scale", "reason": "x"}]
    assert (decide(*recs).kind, decide(*recs).step) == (Kind.SKIP, "config")
    recs += [{"type": "skip", "step": "config", "reason": "x"}]
    d = decide(*recs)
    assert (d.kind, d.step) == (Kind.RUN, "verify")  # the target itself runs
    d = decide(*recs, *end("verify", "ok"))
    assert d.kind is Kind.DONE and d.status is RunStatus.SUCCEEDED


def test_every_rung_failing_ends_at_a_verification_that_fails() -> None:
    recs = [r for s in ("check", "restart", "scale", "config") for r in end(s, "failed")]
    assert decide(*recs).step == "verify"
    d = decide(*recs, *end("verify", "failed"))
    assert d.kind is Kind.ABORTED and d.status is RunStatus.FAILED


def test_a_step_whose_action_did_not_apply_is_finished_and_skips_nothing() -> None:
    recs = end("check", "failed") + end("restart", "skipped")
    state = fold(recs)
    assert state.step("restart").status is StepStatus.SKIPPED
    assert state.step("restart").failures == 0
    d = next_step(LADDER, state)
    assert (d.kind, d.step) == (Kind.RUN, "scale")  # not a success: the ladder goes on


def test_resume_never_reruns_a_skipped_step() -> None:
    recs = [*end("check", "ok"), {"type": "skip", "step": "restart", "reason": "x"}]
    recs += [{"type": "resume", "by": "me", "previous_status": "running"}]
    assert (decide(*recs).kind, decide(*recs).step) == (Kind.SKIP, "scale")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"id": "a", "action": "noop", "skip_to": "nowhere"}, {"id": "b", "action": "noop"}],
         "is not a later step"),
        ([{"id": "a", "action": "noop"}, {"id": "b", "action": "noop", "skip_to": "a"}],
         "is not a later step"),
        ([{"id": "end", "action": "noop"}], "no step may be named 'end'"),
    ],
)  # fmt: skip
def test_skip_to_must_name_a_later_step(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        book(*steps)


class _NotHereParams(BaseModel):
    pass


@register
class _NotHere(Action[_NotHereParams]):
    name = "test_not_here"
    Params: ClassVar[type[BaseModel]] = _NotHereParams

    def run(self, params: _NotHereParams, ctx: ActionContext) -> str:
        raise ActionSkipped("no standby here")


def test_the_executor_journals_skips_and_actions_that_do_not_apply(tmp_path: Path) -> None:
    rb = book(
        {"id": "check", "action": "fail", "on_failure": "continue", "skip_to": "end"},
        {"id": "failover", "action": "test_not_here", "on_failure": "continue",
         "skip_to": "verify", "verify": {"action": "fail"}},
        {"id": "restart", "action": "noop", "skip_to": "verify"},
        {"id": "config", "action": "fail"},
        {"id": "verify", "action": "noop"},
    )  # fmt: skip
    result = Executor(journal_dir=tmp_path, journal=Journal.silent()).start(rb, {})
    assert result.state.status is RunStatus.SUCCEEDED
    s = result.state
    assert s.step("failover").status is StepStatus.SKIPPED  # its verification never ran
    assert s.step("failover").output == "no standby here"
    assert s.step("restart").status is StepStatus.OK
    assert s.step("config").status is StepStatus.SKIPPED
    assert s.step("verify").status is StepStatus.OK
    types = [json.loads(x)["type"] for x in result.path.read_text().splitlines()]
    assert types.count("skip") == 1
