"""A run's journal records folded into its state: pure, the planner's only input.

Records (one JSON object a line, ``type`` says which; every one has ``at``):

- ``run``: the header: ``run_id``, ``runbook`` (name), ``definition`` (the runbook as
  validated when the run began: a resume continues *that* runbook), ``params``,
  ``requested_by``.
- ``start``: ``step``, ``phase`` (``main`` | ``rollback``), ``attempt``, ``action``.
- ``end``: ``step``, ``phase``, ``attempt``, ``start``, ``end``, ``duration``,
  ``status`` (``ok`` | ``failed``), ``output``, ``approved_by``.
- ``skip``: ``step``, ``reason``: the planner skipped the step (an earlier step's
  ``skip_to``); it never ran. An ``end`` whose ``status`` is ``skipped`` is a step whose
  action said it does not apply here (e.g. no standby to fail over to).
- ``interrupted``: ``step``, ``phase``, ``attempt``: that attempt started and never ended
  (the process died); it is re-run from its start.
- ``approval``: ``step``, ``role``, ``decision`` (``waiting`` | ``approved`` |
  ``refused``), ``by``, ``reason``.
- ``checkpoint``: ``after`` (a step id), ``completed`` (every step done so far).
- ``finish``: ``status`` (see :class:`RunStatus`), ``step`` (the one that decided it),
  ``reason``.
- ``resume``: ``by``: a later process took the run over; it clears the failure of the
  step that ended the run, so that step is tried again. A refused approval is never
  cleared: the run stays aborted (the executor refuses to resume it).
- ``note``: ``text`` (e.g. an audit event that could not be written).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # started and not ended: in a folded journal, interrupted
    OK = "ok"
    FAILED = "failed"  # the last attempt failed (retries may remain)
    WAITING_APPROVAL = "waiting_approval"
    SKIPPED = "skipped"  # not run (skip_to), or its action did not apply: finished, not ok


class RunStatus(StrEnum):
    RUNNING = "running"  # no finish record: going on now, or killed (see is_busy)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a step failed and the run stopped (abort, or its rollback failed)
    ROLLED_BACK = "rolled_back"  # a step failed and its rollback succeeded
    WAITING_APPROVAL = "waiting_approval"
    # A step's approval was refused by a holder of its role (final: a resume refuses to
    # go on), or was not given within its timeout (a resume asks anew).
    ABORTED = "aborted"


@dataclass(frozen=True)
class StepState:
    id: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0  # attempts started, interrupted ones included
    failures: int = 0  # failed attempts since the last resume (retries are counted on it)
    started_at: str | None = None  # of the last attempt
    ended_at: str | None = None
    duration: float | None = None
    output: str = ""
    approved_by: str | None = None
    approval_refused: str | None = None  # the reason, when refused
    refused_by: str | None = None  # who refused it
    waiting_since: str | None = None  # the first request for its approval (expiry counts)
    interrupted: int = 0  # attempts that never ended

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.id,
            "status": str(self.status),
            "attempts": self.attempts,
            "failures": self.failures,
            "start": self.started_at,
            "end": self.ended_at,
            "duration": self.duration,
            "output": self.output,
            "approved_by": self.approved_by,
            "waiting_since": self.waiting_since,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class RunState:
    run_id: str = ""
    runbook: str = ""
    definition: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    requested_by: str = ""
    created_at: str | None = None
    steps: Mapping[str, StepState] = field(default_factory=dict)
    rollbacks: Mapping[str, StepState] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    finished_step: str | None = None
    reason: str = ""
    ended_at: str | None = None
    resumes: int = 0
    damaged_lines: int = 0

    def step(self, step_id: str, phase: str = "main") -> StepState:
        table = self.rollbacks if phase == "rollback" else self.steps
        return table.get(step_id) or StepState(step_id)


def fold(records: Iterable[Mapping[str, Any]], damaged_lines: int = 0) -> RunState:
    """The state the records describe, in order; unknown record types are ignored (a
    newer payapi may write more)."""
    state = RunState(damaged_lines=damaged_lines)
    steps: dict[str, StepState] = {}
    rollbacks: dict[str, StepState] = {}
    for rec in records:
        kind = rec.get("type")
        table = rollbacks if rec.get("phase") == "rollback" else steps
        sid = str(rec.get("step", ""))
        cur = table.get(sid) or StepState(sid)
        if kind == "run":
            state = replace(
                state,
                run_id=str(rec.get("run_id", "")),
                runbook=str(rec.get("runbook", "")),
                definition=rec.get("definition") or {},
                params=rec.get("params") or {},
                requested_by=str(rec.get("requested_by", "")),
                created_at=rec.get("at"),
            )
        elif kind == "start":
            table[sid] = replace(
                cur,
                status=StepStatus.RUNNING,
                attempts=max(cur.attempts, int(rec.get("attempt", 0))),
                started_at=rec.get("at"),
                ended_at=None,
                duration=None,
            )
        elif kind == "end":
            ok = rec.get("status") == "ok"
            skipped = rec.get("status") == "skipped"
            table[sid] = replace(
                cur,
                status=StepStatus.OK
                if ok
                else (StepStatus.SKIPPED if skipped else StepStatus.FAILED),
                failures=cur.failures if ok or skipped else cur.failures + 1,
                ended_at=rec.get("end") or rec.get("at"),
                duration=rec.get("duration"),
                output=str(rec.get("output", "")),
                approved_by=rec.get("approved_by") or cur.approved_by,
            )
        elif kind == "skip":
            table[sid] = replace(cur, status=StepStatus.SKIPPED, output=str(rec.get("reason", "")))
        elif kind == "interrupted":
            table[sid] = replace(cur, interrupted=cur.interrupted + 1)
        elif kind == "approval":
            decision = rec.get("decision")
            if decision == "approved":
                table[sid] = replace(cur, approved_by=str(rec.get("by")), approval_refused=None)
            elif decision == "refused":
                table[sid] = replace(
                    cur,
                    approval_refused=str(rec.get("reason") or "refused"),
                    refused_by=None if rec.get("by") is None else str(rec.get("by")),
                )
            elif decision == "waiting":
                since = cur.waiting_since or rec.get("at")
                status = (
                    StepStatus.WAITING_APPROVAL if cur.status is StepStatus.PENDING else cur.status
                )
                table[sid] = replace(cur, status=status, waiting_since=since)
        elif kind == "finish":
            state = replace(
                state,
                status=RunStatus(rec.get("status", "failed")),
                finished_step=rec.get("step"),
                reason=str(rec.get("reason", "")),
                ended_at=rec.get("at"),
            )
        elif kind == "resume":
            if state.finished_step:
                # A run that stopped (an expired approval among the reasons) asks anew;
                # one still waiting keeps its first request's time. A refusal stands.
                _clear(steps, state.finished_step, state.status is not RunStatus.WAITING_APPROVAL)
            rollbacks.clear()  # a resumed run that had rolled back starts its rollback anew
            state = replace(
                state,
                status=RunStatus.RUNNING,
                finished_step=None,
                reason="",
                ended_at=None,
                resumes=state.resumes + 1,
            )
    return replace(state, steps=dict(steps), rollbacks=dict(rollbacks))


def _clear(steps: dict[str, StepState], sid: str, restart_wait: bool) -> None:
    cur = steps.get(sid)
    if cur is None:
        return
    status = StepStatus.PENDING if cur.status is not StepStatus.OK else cur.status
    since = None if restart_wait else cur.waiting_since
    steps[sid] = replace(cur, failures=0, status=status, waiting_since=since)
