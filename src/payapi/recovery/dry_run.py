"""``--dry-run``: every step resolved as the run would resolve it, and nothing done.

For each step (and each rollback step): its parameters rendered from the run's values,
its action looked up, the parameters validated by the action's model, and the action's
``describe()`` of what it would do, read against the live state (a GET, whether a
program is on PATH; never a change). The verification is resolved the same way. A step
that cannot be resolved is a problem in the report, not an exception, so the approver
sees every problem at once. No journal is written: a dry run is not a run, and ``runs``
lists only what changed something, or tried to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from payapi.core.settings import Settings
from payapi.recovery import actions
from payapi.recovery.runbook import Runbook, Step
from payapi.recovery.templating import TemplateError, render

DRY_RUN_ID = "dry-run"


@dataclass(frozen=True)
class Resolved:
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    would: str = ""
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "params": self.params,
            "would": self.would,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class StepPlan:
    step: Step
    phase: str  # "main" | "rollback"
    action: Resolved
    verify: Resolved | None

    @property
    def problems(self) -> list[str]:
        found = [self.action.problem, self.verify.problem if self.verify else None]
        return [p for p in found if p]

    def to_json(self) -> dict[str, Any]:
        s = self.step
        return {
            "step": s.id,
            "title": s.title,
            "phase": self.phase,
            **self.action.to_json(),
            "timeout": s.timeout,
            "retries": s.retries,
            "on_failure": s.on_failure,
            "rollback": s.rollback,
            "skip_to": s.skip_to,
            "approval": s.approval.role if s.approval else None,
            "verify": self.verify.to_json() if self.verify else None,
        }


@dataclass(frozen=True)
class DryRun:
    runbook: Runbook
    params: Mapping[str, Any]
    steps: list[StepPlan]

    @property
    def ok(self) -> bool:
        return not any(p.problems for p in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook.name,
            "title": self.runbook.title,
            "dry_run": True,
            "ok": self.ok,
            "params": dict(self.params),
            "steps": [p.to_json() for p in self.steps],
        }


def _resolve(
    name: str,
    raw: Mapping[str, Any],
    values: Mapping[str, Any],
    step_id: str,
    timeout: float,
    settings: Settings | None,
) -> Resolved:
    try:
        rendered = render(raw, values)
    except TemplateError as exc:
        return Resolved(name, dict(raw), problem=str(exc))
    try:
        action = actions.get(name)
        params = actions.validate(action, rendered)
    except (actions.UnknownAction, actions.ActionParamsError) as exc:
        return Resolved(name, rendered, problem=str(exc))
    ctx = actions.ActionContext(DRY_RUN_ID, step_id, 1, timeout, settings)
    try:
        would = action.describe(params, ctx)
    except Exception as exc:  # a describe that breaks is a problem to show, not a crash
        return Resolved(name, rendered, problem=f"describe: {type(exc).__name__}: {exc}")
    return Resolved(name, params.model_dump(mode="json"), would)


def plan(runbook: Runbook, values: Mapping[str, Any], settings: Settings | None = None) -> DryRun:
    """Resolve every step of ``runbook`` with the run's parameter ``values`` (actions
    read the live state of the platform ``settings`` configure)."""
    steps: list[StepPlan] = []
    for phase, group in (("main", runbook.steps), ("rollback", runbook.rollback_steps)):
        for s in group:
            main = _resolve(s.action, s.params, values, s.id, s.timeout, settings)
            check = None
            if s.verify is not None:
                v = s.verify
                check = _resolve(v.action, v.params, values, s.id, v.timeout, settings)
            steps.append(StepPlan(s, phase, main, check))
    return DryRun(runbook, dict(values), steps)


def plan_step(step: Step, values: Mapping[str, Any], settings: Settings | None = None) -> StepPlan:
    """One main step resolved: what the approver of a waiting step reviews."""
    main = _resolve(step.action, step.params, values, step.id, step.timeout, settings)
    check = None
    if step.verify is not None:
        v = step.verify
        check = _resolve(v.action, v.params, values, step.id, v.timeout, settings)
    return StepPlan(step, "main", main, check)
