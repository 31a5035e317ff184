"""Doing, apart from deciding: drive a run by asking the planner what is next and acting
on it, writing every step to the run's journal and to the audit sink.

The order of writes is what makes ``resume`` safe: a ``start`` record is durable before
the action runs and an ``end`` record (then a ``checkpoint``) after it returns, so a run
killed at any point leaves a journal whose fold says exactly which step had not ended;
the planner re-runs that one and no completed one. Progress goes to the operation's
:class:`~payapi.core.journal.Journal` (the CLI prints it as the steps run).

An action that raises something other than :class:`ActionFailed` is still a failed
attempt (logged with its traceback): a bug in one action must not leave a recovery
half-done without a journal entry. An audit sink that fails never stops the run; the
journal notes the event that was not written.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payapi.core.errors import PayapiError, UsageError
from payapi.core.journal import Journal
from payapi.core.redaction import redact_url
from payapi.core.run_journal import Writer, open_writer, path_of
from payapi.core.settings import Settings
from payapi.recovery import actions
from payapi.recovery.approval import (
    AllowAll,
    Answer,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
)
from payapi.recovery.audit_sink import AuditSink, no_audit
from payapi.recovery.planner import Decision, Kind, next_step
from payapi.recovery.run_state import RunState, RunStatus, StepStatus, fold
from payapi.recovery.runbook import Check, Runbook, Step
from payapi.recovery.templating import TemplateError, render

log = logging.getLogger(__name__)

OUTPUT_CHARS = 500
TIMEOUT_GRACE_SECONDS = 1.0  # an action is given this long past its timeout to return


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    path: Path
    state: RunState
    reason: str

    @property
    def ok(self) -> bool:
        return self.state.status is RunStatus.SUCCEEDED


class _Failed(Exception):
    """One attempt failed; the message is its output."""


class _Skipped(Exception):
    """The step's action does not apply here; the message says why."""


def new_run_id(runbook: str, now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{runbook}-{secrets.token_hex(3)}"


def _line(text: str) -> str:
    line = redact_url(" ".join(text.split()))
    return line if len(line) <= OUTPUT_CHARS else line[: OUTPUT_CHARS - 1] + "…"


def _with_timeout(fn: Callable[[], str], timeout: float) -> str:
    """``fn()``, or :class:`_Failed` once ``timeout`` (plus a grace) has passed: the
    thread is left to finish on its own (actions are told their timeout and honour it)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:
            box["exc"] = exc

    worker = threading.Thread(target=target, daemon=True, name="runbook-action")
    worker.start()
    worker.join(timeout + TIMEOUT_GRACE_SECONDS)
    if worker.is_alive():
        raise _Failed(f"timed out after {timeout:g}s")
    if "exc" in box:
        raise box["exc"]
    return str(box.get("out", ""))


class Executor:
    """Runs and resumes runbooks; everything it needs from outside is injected."""

    def __init__(
        self,
        *,
        journal_dir: Path,
        journal: Journal | None = None,
        audit: AuditSink = no_audit,
        policy: ApprovalPolicy | None = None,
        requested_by: str = "payapi-cli",
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        settings: Settings | None = None,
    ) -> None:
        self.journal_dir = journal_dir
        self.settings = settings
        self.journal = journal or Journal.silent()
        self.audit = audit
        self.policy: ApprovalPolicy = policy or AllowAll()
        self.requested_by = requested_by
        self.clock = clock
        self.sleep = sleep

    # ------------------------------------------------------------------ entry points

    def start(self, runbook: Runbook, params: Mapping[str, Any]) -> RunResult:
        """A new run of ``runbook`` with resolved ``params`` (see ``Runbook.resolve``)."""
        run_id = new_run_id(runbook.name, self.clock())
        path = path_of(self.journal_dir, run_id)
        with open_writer(path, create=True) as w:
            run = _Run(self, w, runbook, [], 0)
            run.write(
                "run",
                run_id=run_id,
                runbook=runbook.name,
                definition=runbook.model_dump(mode="json"),
                params=dict(params),
                requested_by=self.requested_by,
            )
            self.journal.note(f"run {run_id} of runbook {runbook.name}: journal {path}")
            return run.drive()

    def resume(self, run_id: str) -> RunResult:
        """Continue ``run_id`` where it stopped: the step that did not finish is run
        again from its start; steps that completed are not repeated."""
        path = path_of(self.journal_dir, run_id)
        with open_writer(path, create=False) as w:
            read = w.read()
            state = fold(read.records, read.damaged_lines)
            if not state.definition:
                raise PayapiError(f"run {run_id}: its journal has no run header")
            if state.status is RunStatus.SUCCEEDED:
                raise UsageError(f"run {run_id} already succeeded: nothing to resume")
            refused = state.step(state.finished_step or "")
            if state.status is RunStatus.ABORTED and refused.approval_refused is not None:
                by = f" by {refused.refused_by}" if refused.refused_by else ""
                raise UsageError(
                    f"run {run_id} was aborted: the approval of step {refused.id} was "
                    f"refused{by} ({refused.approval_refused}); a refused run is not resumed "
                    "(start a new run)"
                )
            runbook = Runbook.model_validate(state.definition)
            run = _Run(self, w, runbook, list(read.records), read.damaged_lines)
            run.write("resume", by=self.requested_by, previous_status=str(state.status))
            self.journal.note(f"resume run {run_id} (was {state.status})")
            return run.drive()

    def approve(
        self,
        run_id: str,
        *,
        step: str,
        check: Callable[[RunState, ApprovalRequest], ApprovalDecision],
    ) -> RunResult:
        """Approve ``step`` of a run that waits for it, then drive the run on (as this
        process: ``requested_by`` is the approver). ``check`` (called holding the run's
        lock) judges the approver; a refusal raises from it and nothing is written. An
        approval that expired meanwhile aborts the run instead."""
        return self._answer(run_id, step, check, Answer.APPROVED)

    def refuse(
        self,
        run_id: str,
        *,
        step: str,
        check: Callable[[RunState, ApprovalRequest], ApprovalDecision],
    ) -> RunResult:
        """Refuse ``step`` of a run that waits for it: the refusal (who, why) is
        journaled and audited and the run ends ``aborted``. ``check`` judges the refuser
        holding the run's lock and returns the REFUSED decision to record, or raises
        (then nothing is written)."""
        return self._answer(run_id, step, check, Answer.REFUSED)

    def _answer(
        self,
        run_id: str,
        step: str,
        check: Callable[[RunState, ApprovalRequest], ApprovalDecision],
        expected: Answer,
    ) -> RunResult:
        path = path_of(self.journal_dir, run_id)
        with open_writer(path, create=False) as w:
            read = w.read()
            state = fold(read.records, read.damaged_lines)
            if not state.definition:
                raise PayapiError(f"run {run_id}: its journal has no run header")
            if state.status is not RunStatus.WAITING_APPROVAL or state.finished_step != step:
                waiting = (
                    f"waits for the approval of step {state.finished_step}"
                    if state.status is RunStatus.WAITING_APPROVAL
                    else f"is {state.status}, not waiting for an approval"
                )
                raise UsageError(f"run {run_id} {waiting}")
            runbook = Runbook.model_validate(state.definition)
            spec = runbook.step(step).approval
            assert spec is not None  # it waits for one
            request = ApprovalRequest(run_id, runbook.name, step, spec.role, state.requested_by)
            decision = check(state, request)
            if decision.answer is not expected:  # the check must raise, not answer otherwise
                raise PayapiError(f"run {run_id}: step {step}: {decision.reason}")
            run = _Run(self, w, runbook, list(read.records), read.damaged_lines)
            run.write("resume", by=self.requested_by, previous_status=str(state.status))
            d = next_step(runbook, run.state, self.clock())
            if d.kind is Kind.WAIT_APPROVAL and d.step == step:
                run.record_approval(step, spec.role, decision)
                verb = "approved" if expected is Answer.APPROVED else "refused"
                why = f": {decision.reason}" if expected is Answer.REFUSED else ""
                self.journal.note(f"{step}: {verb} by {decision.by}{why}")
            return run.drive()


class _Run:
    """One process's drive of one run: the journal writer and the records so far."""

    def __init__(
        self,
        ex: Executor,
        writer: Writer,
        runbook: Runbook,
        records: list[dict[str, Any]],
        damaged: int,
    ) -> None:
        self.ex = ex
        self.writer = writer
        self.runbook = runbook
        self.records = records
        self.damaged = damaged

    @property
    def state(self) -> RunState:
        return fold(self.records, self.damaged)

    def write(self, type_: str, **fields: Any) -> None:
        record = {"type": type_, **fields, "at": self.ex.clock().isoformat()}
        self.writer.append(record)
        self.records.append(record)

    def _audit(self, type_: str, details: dict[str, Any]) -> None:
        state = self.state
        subject = f"runbook:{self.runbook.name}/{state.run_id}"
        try:
            self.ex.audit(type_, subject, {"run_id": state.run_id, **details})
        except Exception as exc:  # the audit log must not stop a recovery
            log.warning("runbook audit event not written", exc_info=True)
            text = f"audit event {type_} not written: {type(exc).__name__}"
            self.write("note", text=text)
            self.ex.journal.note(text)

    def drive(self) -> RunResult:
        while True:
            state = self.state
            d = next_step(self.runbook, state, self.ex.clock())
            if d.kind in (Kind.DONE, Kind.ABORTED):
                assert d.status is not None
                self.write("finish", status=str(d.status), step=d.step, reason=d.reason)
                self.ex.journal.note(f"run {state.run_id}: {d.status}: {d.reason}")
                return RunResult(state.run_id, self.writer.path, self.state, d.reason)
            if d.kind is Kind.SKIP:
                self.write("skip", step=d.step, reason=d.reason)
                self._audit("runbook.step.skipped", {"step": d.step})
                self.ex.journal.note(d.reason)
                continue
            if d.kind is Kind.WAIT_APPROVAL:
                if not self._approve(state, d):
                    reason = f"{d.step}: waiting for the approval of {d.role}"
                    self.write("finish", status="waiting_approval", step=d.step, reason=reason)
                    self.ex.journal.note(reason)
                    return RunResult(state.run_id, self.writer.path, self.state, reason)
                continue
            self._wait(d)
            if d.rerun:
                self.write(
                    "interrupted",
                    step=d.step,
                    phase=d.phase,
                    attempt=d.attempt - 1,
                    note=d.reason,
                )
                self.ex.journal.note(d.reason)
            self._attempt(state, d)

    def _approve(self, state: RunState, d: Decision) -> bool:
        """Ask the policy; True when the decision is made (approved or refused)."""
        assert d.step is not None and d.role is not None
        request = ApprovalRequest(
            state.run_id, self.runbook.name, d.step, d.role, state.requested_by
        )
        answer = self.ex.policy.decide(request)
        self.record_approval(d.step, d.role, answer)
        return answer.answer is not Answer.PENDING

    def record_approval(self, step: str, role: str, answer: ApprovalDecision) -> None:
        decision = {Answer.APPROVED: "approved", Answer.REFUSED: "refused"}.get(
            answer.answer, "waiting"
        )
        reason = _line(answer.reason)
        self.write("approval", step=step, role=role, decision=decision, by=answer.by, reason=reason)
        details = {"step": step, "role": role, "by": answer.by}
        if decision == "refused":
            details["reason"] = reason
        self._audit(f"runbook.approval.{decision}", details)

    def _wait(self, d: Decision) -> None:
        if d.not_before is None:
            return
        wait = (d.not_before - self.ex.clock()).total_seconds()
        if wait > 0:
            self.ex.journal.note(f"retry {d.step} in {wait:.1f}s (backoff)")
            self.ex.sleep(wait)

    def _attempt(self, state: RunState, d: Decision) -> None:
        assert d.step is not None
        step = self.runbook.step(d.step)
        approved_by = state.step(step.id).approved_by if d.phase == "main" else None
        started = self.ex.clock()
        common = {"step": step.id, "phase": d.phase, "attempt": d.attempt}
        self.write("start", **common, action=step.action)
        self._audit("runbook.step.started", {**common, "action": step.action})
        label = f"{step.id}: {step.label}" if step.title else step.id
        if d.phase == "rollback":
            label = f"rollback {label} (for {d.failed_step})"
        if d.attempt > 1:
            label += f" (attempt {d.attempt})"
        try:
            with self.ex.journal.step(label):
                output = self._execute(step, state.run_id, d.attempt)
                self.ex.journal.note(output)
            status = "ok"
        except _Skipped as exc:
            output, status = str(exc), "skipped"
            self.ex.journal.note(f"{step.id}: skipped: {output}")
        except _Failed as exc:
            output, status = str(exc), "failed"
            self.ex.journal.note(f"{step.id}: attempt {d.attempt} failed: {output}")
        ended = self.ex.clock()
        duration = round((ended - started).total_seconds(), 3)
        self.write(
            "end",
            **common,
            start=started.isoformat(),
            end=ended.isoformat(),
            duration=duration,
            status=status,
            output=output,
            approved_by=approved_by,
        )
        self._audit(
            "runbook.step.ended",
            {**common, "status": status, "duration_seconds": duration, "approved_by": approved_by},
        )
        done = [s for s, st in self.state.steps.items() if st.status is StepStatus.OK]
        self.write("checkpoint", after=step.id, completed=done)

    def _execute(self, step: Step, run_id: str, attempt: int) -> str:
        """The step's action, then its verification; :class:`_Failed` with one line
        (:class:`_Skipped` when the action does not apply: no verification then)."""
        values = dict(self.state.params)
        out = self._call(
            step.action, step.params, values, run_id, step.id, attempt, step.timeout, skip=True
        )
        if step.verify is None:
            return out
        check: Check = step.verify
        try:
            seen = self._call(
                check.action, check.params, values, run_id, step.id, attempt, check.timeout
            )
        except _Failed as exc:
            raise _Failed(f"{out}; verification {check.action} failed: {exc}") from None
        return f"{out}; verified ({check.action}): {seen}"

    def _call(
        self,
        name: str,
        raw: Mapping[str, Any],
        values: Mapping[str, Any],
        run_id: str,
        step_id: str,
        attempt: int,
        timeout: float,
        *,
        skip: bool = False,
    ) -> str:
        try:
            action = actions.get(name)
            params = actions.validate(action, render(raw, values))
        except (actions.UnknownAction, actions.ActionParamsError, TemplateError) as exc:
            raise _Failed(str(exc)) from None
        ctx = actions.ActionContext(run_id, step_id, attempt, timeout, self.ex.settings)
        try:
            return _line(_with_timeout(lambda: action.run(params, ctx), timeout))
        except actions.ActionSkipped as exc:
            if skip:
                raise _Skipped(_line(str(exc))) from None
            raise _Failed(_line(f"{name} does not apply: {exc}")) from None
        except (actions.ActionFailed, _Failed) as exc:
            raise _Failed(_line(str(exc))) from None
        except Exception as exc:
            log.exception("runbook action %s raised", name)
            raise _Failed(_line(f"{name}: {type(exc).__name__}: {exc}")) from None
