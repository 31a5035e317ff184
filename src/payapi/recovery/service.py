"""The runbook service: what the CLI (and, next, drills) call. Keyword-only functions
over the catalogue, the dry run, the executor and the run journals."""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payapi.core.journal import Journal
from payapi.core.settings import Settings
from payapi.recovery import catalogue, dry_run, run_journal
from payapi.recovery.approval import ApprovalPolicy
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
) -> RunResult:
    runbook, values = resolve(settings, name=name, given=given)
    return _executor(settings, journal, audit, policy, requested_by).start(runbook, values)


def resume_run(
    settings: Settings,
    *,
    run_id: str,
    journal: Journal,
    audit: AuditSink | None = None,
    policy: ApprovalPolicy | None = None,
    requested_by: str | None = None,
) -> RunResult:
    return _executor(settings, journal, audit, policy, requested_by).resume(run_id)


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
        if events:
            out["events"] = self.records
        return out


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
