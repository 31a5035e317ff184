"""The runbook service: what the CLI (and, next, drills) call. Keyword-only functions
over the catalogue, the dry run, the executor and the run journals."""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payapi.core import run_journal
from payapi.core.journal import Journal
from payapi.core.settings import Settings
from payapi.recovery import access, catalogue, dry_run
from payapi.recovery.approval import (
    Answer,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    RunnerPolicy,
    judge,
    judge_refusal,
)
from payapi.recovery.audit_sink import AuditSink, ChainAudit, no_audit
from payapi.recovery.executor import Executor, RunResult
from payapi.recovery.run_state import RunState, RunStatus, StepState, fold
from payapi.recovery.runbook import Runbook


def requester() -> str:
    """Who asked for the run (the OS login until operators are vault identities)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def audit_sink(settings: Settings, actor: str) -> AuditSink:
    """The hash chain when a payment database is configured, else nothing."""
    dsn = settings.postgres.payment_dsn
    if not dsn:
        return no_audit
    return ChainAudit(dsn, settings.audit.head_file, actor)


@dataclass(frozen=True)
class Identity:
    """Who acts on a runbook: ``checked`` when the vault vouched for the login (and
    said which groups it holds), else the OS user of a platform without access control."""

    login: str
    checked: bool
    groups: frozenset[str] = frozenset()


def _deny(
    settings: Settings, login: str, runbook: str, privilege: str, message: str, **extra: str
) -> access.AccessDenied:
    """Audit a refusal (``recovery.access_denied``: who, which runbook, what was asked —
    never a key) and return the error to raise."""
    details = {"login": login, "runbook": runbook, "privilege": privilege, **extra}
    try:
        audit_sink(settings, login)("recovery.access_denied", f"runbook:{runbook}", details)
    except Exception:  # the refusal stands even when it cannot be audited
        import logging

        logging.getLogger(__name__).warning("access denial not audited", exc_info=True)
    return access.AccessDenied(message)


def authorize(
    settings: Settings, *, operator: access.Operator | None, runbook: str, action: str
) -> Identity:
    """``execute`` on ``webservice:runbooks/<runbook>`` for ``operator`` (the vault
    decides, asked as them). No operator: the OS user, unless ``[recovery]
    require_operator``. A refusal is audited and raises :class:`access.AccessDenied`."""
    if operator is None:
        login = requester()
        if settings.recovery.require_operator:
            raise _deny(
                settings,
                login,
                runbook,
                access.PRIVILEGE,
                f"{action} runbook {runbook}: an operator is required "
                "([recovery] require_operator): payapi --as LOGIN",
            )
        return Identity(login, checked=False)
    try:
        st = access.standing(settings, operator, runbook)
    except access.AccessDenied as exc:
        raise _deny(settings, operator.login, runbook, access.PRIVILEGE, str(exc)) from None
    if not st.may_execute:
        raise _deny(
            settings,
            operator.login,
            runbook,
            access.PRIVILEGE,
            f"{operator.login} may not {action} runbook {runbook}: no {access.PRIVILEGE} "
            f"on {access.RESOURCE_KIND}:{access.resource_id(runbook)}",
        )
    return Identity(operator.login, checked=True, groups=st.groups)


def _policy(settings: Settings, who: Identity, yes: bool) -> ApprovalPolicy | None:
    if not who.checked:
        return None  # the executor's default: as before access control
    return RunnerPolicy(
        who.login, who.groups, yes=yes, self_approve_roles=settings.recovery.self_approve_roles
    )


def list_runbooks(settings: Settings) -> list[catalogue.Entry]:
    return catalogue.discover(settings.recovery.runbook_dirs)


def resolve(
    settings: Settings, *, name: str, given: Mapping[str, str]
) -> tuple[Runbook, dict[str, Any]]:
    """The runbook ``name`` and its parameter values (``ParameterError``: exit 2)."""
    runbook = catalogue.find(settings.recovery.runbook_dirs, name).runbook
    return runbook, runbook.resolve(given)


def plan_dry_run(settings: Settings, *, name: str, given: Mapping[str, str]) -> dry_run.DryRun:
    runbook, values = resolve(settings, name=name, given=given)
    return dry_run.plan(runbook, values, settings)


def _executor(
    settings: Settings,
    journal: Journal,
    audit: AuditSink | None,
    policy: ApprovalPolicy | None,
    requested_by: str | None,
) -> Executor:
    who = requested_by or requester()
    return Executor(
        journal_dir=settings.runbook_journal_dir(),
        journal=journal,
        audit=audit if audit is not None else audit_sink(settings, who),
        policy=policy,
        requested_by=who,
        settings=settings,
    )


def start_run(
    settings: Settings,
    *,
    name: str,
    given: Mapping[str, str],
    journal: Journal,
    audit: AuditSink | None = None,
    policy: ApprovalPolicy | None = None,
    requested_by: str | None = None,
    operator: access.Operator | None = None,
    yes: bool = False,
) -> RunResult:
    runbook, values = resolve(settings, name=name, given=given)
    if requested_by is None:
        who = authorize(settings, operator=operator, runbook=name, action="run")
        requested_by, policy = who.login, policy or _policy(settings, who, yes)
    return _executor(settings, journal, audit, policy, requested_by).start(runbook, values)


def resume_run(
    settings: Settings,
    *,
    run_id: str,
    journal: Journal,
    audit: AuditSink | None = None,
    policy: ApprovalPolicy | None = None,
    requested_by: str | None = None,
    operator: access.Operator | None = None,
) -> RunResult:
    if requested_by is None:
        name = show_run(settings, run_id=run_id).state.runbook
        who = authorize(settings, operator=operator, runbook=name, action="resume")
        requested_by, policy = who.login, policy or _policy(settings, who, False)
    return _executor(settings, journal, audit, policy, requested_by).resume(run_id)


def _decider(
    settings: Settings, run_id: str, operator: access.Operator | None, verb: str, what: str
) -> tuple[str, Identity]:
    """The runbook of ``run_id`` and who decides on it: an operator with ``execute`` on
    it (``verb``: approve or refuse); without one, refused and audited."""
    name = show_run(settings, run_id=run_id).state.runbook
    if operator is None:
        raise _deny(
            settings,
            requester(),
            name,
            "approve",
            f"{verb} run {run_id}: {what} needs an operator: payapi --as LOGIN",
        )
    return name, authorize(settings, operator=operator, runbook=name, action=verb)


def approve_run(
    settings: Settings,
    *,
    run_id: str,
    step: str,
    journal: Journal,
    operator: access.Operator | None,
    yes: bool = False,
) -> RunResult:
    """``operator`` approves ``step`` of a waiting run (they need ``execute`` on the
    runbook, to hold the step's role, and not to be the requester unless ``yes`` and a
    self-approve role), then the run goes on in this process. A refusal is audited,
    exits 3 and leaves the run as it was."""
    name, who = _decider(settings, run_id, operator, "approve", "an approval")

    def check(state: RunState, request: ApprovalRequest) -> ApprovalDecision:
        d = judge(
            request,
            approver=who.login,
            roles=who.groups,
            yes=yes,
            self_approve_roles=settings.recovery.self_approve_roles,
        )
        if d.answer is not Answer.APPROVED:
            raise _deny(
                settings,
                who.login,
                name,
                "approve",
                f"approval of {run_id} step {step} refused: {d.reason}",
                run_id=run_id,
                step=step,
                role=request.role,
            )
        return d

    ex = _executor(settings, journal, None, _policy(settings, who, False), who.login)
    return ex.approve(run_id, step=step, check=check)


def refuse_run(
    settings: Settings,
    *,
    run_id: str,
    step: str,
    journal: Journal,
    operator: access.Operator | None,
    reason: str = "",
) -> RunResult:
    """``operator`` refuses ``step`` of a waiting run: they need ``execute`` on the
    runbook and to hold the step's role (the requester may refuse their own run). The
    refusal is journaled (who, why) and audited (``runbook.approval.refused``) and the
    run ends ``aborted``. A non-holder is refused (exit 3, audited) and the run is left
    as it was: nobody can abort a run they could not have approved."""
    name, who = _decider(settings, run_id, operator, "refuse", "a refusal")

    def check(state: RunState, request: ApprovalRequest) -> ApprovalDecision:
        d = judge_refusal(request, refuser=who.login, roles=who.groups, reason=reason)
        if d.answer is not Answer.REFUSED:
            raise _deny(
                settings,
                who.login,
                name,
                "approve",
                f"refusal of {run_id} step {step} refused: {d.reason}",
                run_id=run_id,
                step=step,
                role=request.role,
            )
        return d

    ex = _executor(settings, journal, None, _policy(settings, who, False), who.login)
    return ex.refuse(run_id, step=step, check=check)


@dataclass(frozen=True)
class RunView:
    """A run as ``show`` and ``runs`` print it: its folded state, its records, and
    whether some process is driving it right now."""

    path: Path
    state: RunState
    records: list[dict[str, Any]]
    busy: bool

    @property
    def status(self) -> str:
        if self.state.status is RunStatus.RUNNING and not self.busy:
            return "interrupted"  # no finish record and nobody drives it: killed
        return str(self.state.status)

    def _steps(self, phase: str) -> list[dict[str, Any]]:
        definition = self.state.definition
        group = definition.get("steps" if phase == "main" else "rollback_steps", [])
        out = []
        for s in group:
            st: StepState = self.state.step(s["id"], phase)
            if phase == "rollback" and st.attempts == 0:
                continue
            out.append({**st.to_json(), "title": s.get("title", ""), "action": s["action"]})
        return out

    def to_json(self, *, events: bool = False) -> dict[str, Any]:
        s = self.state
        out: dict[str, Any] = {
            "run_id": s.run_id,
            "runbook": s.runbook,
            "status": self.status,
            "reason": s.reason,
            "requested_by": s.requested_by,
            "params": dict(s.params),
            "started": s.created_at,
            "ended": s.ended_at,
            "resumes": s.resumes,
            "journal": str(self.path),
            "damaged_lines": s.damaged_lines,
            "steps": self._steps("main"),
            "rollbacks": self._steps("rollback"),
        }
        out["pending_approval"] = self.pending_approval()
        if events:
            out["events"] = self.records
        return out

    def pending_approval(self) -> dict[str, Any] | None:
        """The step a waiting run needs approved, resolved as a dry run would (its
        ``describe()`` against the live state): what the approver reviews."""
        s = self.state
        if s.status is not RunStatus.WAITING_APPROVAL or not s.finished_step:
            return None
        runbook = Runbook.model_validate(s.definition)
        step = runbook.step(s.finished_step)
        if step.approval is None:
            return None
        plan = dry_run.plan_step(step, s.params).to_json()
        return {
            **plan,
            "role": step.approval.role,
            "requested_by": s.requested_by,
            "waiting_since": s.step(step.id).waiting_since,
            "timeout": step.approval.timeout,
        }


def view(path: Path) -> RunView:
    read = run_journal.read(path)
    return RunView(
        path, fold(read.records, read.damaged_lines), read.records, run_journal.is_busy(path)
    )


def show_run(settings: Settings, *, run_id: str) -> RunView:
    return view(run_journal.path_of(settings.runbook_journal_dir(), run_id))


def list_runs(settings: Settings) -> list[RunView]:
    folder = settings.runbook_journal_dir()
    return [view(run_journal.path_of(folder, rid)) for rid in run_journal.run_ids(folder)]


# --------------------------------------------------------------------------- component recovery

COMPONENT_RUNBOOK = "component-{}"


def component_outcome(view: RunView) -> str:
    """One line on how a ``component-*`` run ended: healthy already, recovered by which
    rung, or not recovered."""
    steps = {s["step"]: s for s in view.to_json()["steps"]}
    component = view.state.runbook.removeprefix("component-")
    check = steps.get("check", {})
    if check.get("status") == "ok":
        return f"{component} is healthy: nothing to do"
    if view.state.status is not RunStatus.SUCCEEDED:
        return f"{component} is not recovered: {view.state.reason}"
    rung = next(
        (
            s["step"]
            for s in view.to_json()["steps"]
            if s["step"] not in ("check", "verify") and s["status"] == "ok"
        ),
        None,
    )
    return f"{component} recovered" + (f" by {rung}" if rung else "") + " and verified"
