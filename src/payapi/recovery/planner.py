"""Deciding, apart from doing: given a runbook and the state its journal folds into,
what happens next and why. Pure (no I/O; the time is an argument), so every case is a
unit test.

The rules, in the order they apply to the first step that is not finished:

- a step started and never ended (the process died): run it again from its start (the
  journal cannot tell how far it got; actions are idempotent);
- a step that needs an approval it does not have waits for it; a refused approval ends
  the run ``aborted`` (for good: a refusal survives a resume; a step whose failure is
  answered by a rollback runs that first, as its clean-up), and so does one still
  missing ``approval.timeout`` after it was first requested (expired: judged at ``now``,
  the injected clock; a resume asks anew);
- a step whose last attempt failed is retried while it has retries left, not before its
  backoff has passed since that failure;
- a step out of retries: ``abort`` ends the run (failed), ``continue`` goes on to the next
  step (the failure stays in the journal), ``rollback`` runs the named step (with that
  step's own timeout and retries): the run ends rolled back when it succeeds, failed when
  it does not;
- a step that ended ok with ``skip_to`` skips the steps after it up to that one (or
  all of them: ``end``): each is skipped (journaled, never run), the first remedy of a
  ladder that works ends the ladder. A skipped step is finished, neither ok nor failed,
  and so is a step whose action said it does not apply here;
- a pending step runs; when every step is finished, the run is done.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from payapi.recovery.run_state import RunState, RunStatus, StepState, StepStatus
from payapi.recovery.runbook import SKIP_TO_END, Runbook, Step


class Kind(StrEnum):
    RUN = "run"  # run ``step`` attempt ``attempt`` now
    RETRY = "retry"  # run it again, not before ``not_before``
    WAIT_APPROVAL = "wait_approval"  # ``step`` needs an approval by ``role``
    ROLLBACK = "rollback"  # run rollback step ``step`` (for ``failed_step``)
    SKIP = "skip"  # do not run ``step`` (an earlier step's skip_to); journal why
    DONE = "done"  # every step finished; ``status`` says how the run ended
    ABORTED = "aborted"  # the run stops here; ``status`` says how


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str
    step: str | None = None
    attempt: int = 0
    not_before: datetime | None = None
    role: str | None = None
    failed_step: str | None = None  # ROLLBACK: the step whose failure it answers
    rerun: bool = False  # the attempt before it was interrupted
    status: RunStatus | None = None  # DONE / ABORTED

    @property
    def phase(self) -> str:
        return "rollback" if self.kind is Kind.ROLLBACK else "main"

    @property
    def acts(self) -> bool:
        return self.kind in (Kind.RUN, Kind.RETRY, Kind.ROLLBACK)


def _exhausted(step: Step, st: StepState) -> bool:
    return st.status is StepStatus.FAILED and st.failures > step.retries


def _when(st: StepState, delay: float) -> datetime | None:
    if st.ended_at is None:
        return None
    return datetime.fromisoformat(st.ended_at) + timedelta(seconds=delay)


def _attempt(step: Step, st: StepState, kind: Kind) -> Decision | None:
    """Run, re-run or retry ``step`` as its state asks; None when it is finished."""
    if st.status is StepStatus.RUNNING:
        return Decision(
            kind,
            f"{step.id}: attempt {st.attempts} started at {st.started_at} and never ended "
            "(the run was interrupted): re-run from its start",
            step.id,
            st.attempts + 1,
            rerun=True,
        )
    if st.status is StepStatus.FAILED and not _exhausted(step, st):
        delay = step.backoff.delay(st.failures)
        return Decision(
            Kind.RETRY if kind is Kind.RUN else kind,
            f"{step.id}: attempt {st.attempts} failed ({st.output}); retry "
            f"{st.failures} of {step.retries} after {delay:g}s",
            step.id,
            st.attempts + 1,
            not_before=_when(st, delay),
        )
    if st.status in (StepStatus.PENDING, StepStatus.WAITING_APPROVAL):
        first = "" if st.attempts == 0 else f" (attempt {st.attempts + 1})"
        return Decision(kind, f"{step.id}: next step{first}", step.id, st.attempts + 1)
    return None


def _rollback(runbook: Runbook, state: RunState, step: Step, st: StepState) -> Decision:
    assert step.rollback is not None
    rb = runbook.step(step.rollback)
    rs = state.step(rb.id, "rollback")
    todo = _attempt(rb, rs, Kind.ROLLBACK)
    if todo is not None:
        if rs.attempts == 0:
            todo = Decision(
                Kind.ROLLBACK,
                f"{step.id} failed after {st.failures} attempt(s) ({st.output}): "
                f"roll back with {rb.id}",
                rb.id,
                1,
            )
        return replace(todo, failed_step=step.id)
    if rs.status is StepStatus.OK:
        return Decision(
            Kind.ABORTED,
            f"{step.id} failed ({st.output}); rolled back by {rb.id}",
            step.id,
            status=RunStatus.ROLLED_BACK,
        )
    return Decision(
        Kind.ABORTED,
        f"{step.id} failed ({st.output}); its rollback {rb.id} failed too ({rs.output})",
        step.id,
        status=RunStatus.FAILED,
    )


def _refused(runbook: Runbook, state: RunState, step: Step, why: str) -> Decision:
    """A refused step never runs and the run ends ``aborted``. When the step's failure is
    answered by a rollback (the clean-up of what the steps before it made, such as a
    corruption run's scratch copy), that runs first: a refusal is for good, so nothing
    will use what it would clean up. (An expired approval does not clean up: a resume
    asks anew and goes on with what the earlier steps made.)"""
    if step.on_failure == "rollback" and step.rollback is not None:
        rb = runbook.step(step.rollback)
        rs = state.step(rb.id, "rollback")
        todo = _attempt(rb, rs, Kind.ROLLBACK)
        if todo is not None:
            if rs.attempts == 0:
                todo = Decision(Kind.ROLLBACK, f"{why}: clean up with {rb.id}", rb.id, 1)
            return replace(todo, failed_step=step.id)
        if rs.status is StepStatus.OK:
            why += f"; cleaned up by {rb.id}"
        else:
            why += f"; its clean-up {rb.id} failed ({rs.output})"
    return Decision(Kind.ABORTED, why, step.id, status=RunStatus.ABORTED)


def approval_expired(step: Step, st: StepState, now: datetime | None) -> bool:
    """Has ``step``'s approval been waited for longer than its timeout at ``now``?"""
    if step.approval is None or st.waiting_since is None or now is None:
        return False
    since = datetime.fromisoformat(st.waiting_since)
    return (now - since).total_seconds() > step.approval.timeout


def next_step(runbook: Runbook, state: RunState, now: datetime | None = None) -> Decision:
    """What to do next for the run ``state`` describes (see the module's rules); ``now``
    (None: never) is when an approval still missing is judged expired."""
    tolerated: list[str] = []
    skipping: tuple[str, str] | None = None  # (the step that succeeded, its skip_to)
    for step in runbook.steps:
        st = state.step(step.id)
        if skipping is not None and step.id == skipping[1]:
            skipping = None
        if skipping is not None:
            if st.status is StepStatus.PENDING and st.attempts == 0:
                by, target = skipping
                until = "the end" if target == SKIP_TO_END else target
                return Decision(
                    Kind.SKIP, f"{step.id}: skipped: {by} succeeded (skip to {until})", step.id
                )
            continue  # it finished before (a journal from a resumed run): leave it be
        if st.status is StepStatus.OK:
            if step.skip_to is not None:
                skipping = (step.id, step.skip_to)
            continue
        if st.status is StepStatus.SKIPPED:
            continue
        if _exhausted(step, st):
            if step.on_failure == "continue":
                tolerated.append(step.id)
                continue
            if step.on_failure == "rollback":
                return _rollback(runbook, state, step, st)
            return Decision(
                Kind.ABORTED,
                f"{step.id} failed after {st.failures} attempt(s): {st.output}",
                step.id,
                status=RunStatus.FAILED,
            )
        if step.approval is not None and st.approved_by is None:
            if st.approval_refused is not None:
                by = f" by {st.refused_by}" if st.refused_by else ""
                return _refused(
                    runbook,
                    state,
                    step,
                    f"{step.id}: the approval of {step.approval.role} was refused{by} "
                    f"({st.approval_refused})",
                )
            if approval_expired(step, st, now):
                return Decision(
                    Kind.ABORTED,
                    f"{step.id}: the approval of {step.approval.role} expired (requested "
                    f"{st.waiting_since}, timeout {step.approval.timeout:g}s)",
                    step.id,
                    status=RunStatus.ABORTED,
                )
            return Decision(
                Kind.WAIT_APPROVAL,
                f"{step.id}: needs the approval of {step.approval.role}",
                step.id,
                role=step.approval.role,
            )
        todo = _attempt(step, st, Kind.RUN)
        if todo is not None:
            return todo
    notes = []
    if tolerated:
        notes.append(f"{', '.join(tolerated)} failed, on_failure: continue")
    skipped = [s.id for s in runbook.steps if state.step(s.id).status is StepStatus.SKIPPED]
    if skipped:
        notes.append(f"skipped: {', '.join(skipped)}")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return Decision(Kind.DONE, f"every step finished{extra}", status=RunStatus.SUCCEEDED)
