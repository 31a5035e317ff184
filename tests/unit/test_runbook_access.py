"""Access control on runbooks, the pure parts: who may approve (four eyes, self-approve
roles), approval expiry with an injected clock, the executor's approve, the lab's team
policy. The vault is not needed: its answers are given."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payapi.core.errors import UsageError
from payapi.core.journal import Journal
from payapi.core.plan import load_plan
from payapi.core.settings import Settings
from payapi.recovery import access, service
from payapi.recovery.approval import (
    Answer,
    ApprovalDecision,
    ApprovalRequest,
    RunnerPolicy,
    judge,
    judge_refusal,
)
from payapi.recovery.executor import Executor
from payapi.recovery.planner import Kind, next_step
from payapi.recovery.run_state import RunState, RunStatus, fold
from payapi.recovery.runbook import Runbook
from payapi.vault.policy import resolve

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REQ = ApprovalRequest("r1", "demo", "b", "dr-coordinator", "infra-lead")


def book(timeout: str = "1h") -> Runbook:
    return Runbook.model_validate(
        {
            "name": "demo",
            "title": "Demo",
            "steps": [
                {"id": "a", "action": "noop"},
                {
                    "id": "b",
                    "action": "noop",
                    "approval": {"role": "dr-coordinator", "timeout": timeout},
                },
                {"id": "c", "action": "noop"},
            ],
        }
    )


# -- judge: who may approve ----------------------------------------------------------


def test_a_holder_of_the_role_other_than_the_requester_approves() -> None:
    d = judge(REQ, approver="dr-coordinator", roles={"dr-coordinator"})
    assert d.answer is Answer.APPROVED and d.by == "dr-coordinator"


def test_the_requester_cannot_approve_their_own_run() -> None:
    d = judge(REQ, approver="infra-lead", roles={"dr-coordinator", "infrastructure-lead"})
    assert d.answer is Answer.REFUSED and "requested this run" in d.reason
    # --yes alone does not make it a self-approval
    d = judge(REQ, approver="infra-lead", roles={"dr-coordinator"}, yes=True)
    assert d.answer is Answer.REFUSED


def test_a_non_holder_is_refused() -> None:
    d = judge(REQ, approver="app-lead", roles={"application-lead"})
    assert d.answer is Answer.REFUSED and "does not hold the role dr-coordinator" in d.reason


def test_a_self_approve_role_with_yes_approves_its_own_run() -> None:
    d = judge(
        REQ,
        approver="infra-lead",
        roles={"dr-coordinator", "automation"},
        yes=True,
        self_approve_roles=["automation"],
    )
    assert d.answer is Answer.APPROVED and "self-approved" in d.reason
    # ...but still only for a role it holds
    d = judge(
        REQ,
        approver="infra-lead",
        roles={"automation"},
        yes=True,
        self_approve_roles=["automation"],
    )
    assert d.answer is Answer.REFUSED


def test_the_runner_policy_waits_unless_it_may_self_approve() -> None:
    assert RunnerPolicy("infra-lead", {"dr-coordinator"}).decide(REQ).answer is Answer.PENDING
    yes = RunnerPolicy("infra-lead", {"dr-coordinator"}, yes=True)
    assert yes.decide(REQ).answer is Answer.PENDING  # no self-approve role
    auto = RunnerPolicy(
        "infra-lead", {"dr-coordinator", "automation"}, yes=True, self_approve_roles={"automation"}
    )
    assert auto.decide(REQ).answer is Answer.APPROVED
    other = RunnerPolicy(
        "app-lead", {"dr-coordinator"}, yes=True, self_approve_roles={"dr-coordinator"}
    )
    assert other.decide(REQ).answer is Answer.PENDING  # approving others' runs: runbook approve


# -- expiry: the planner decides with the time it is given ---------------------------


def waiting(at: datetime, *more: dict[str, Any]) -> RunState:
    rb = book()
    recs: list[dict[str, Any]] = [
        {
            "type": "run",
            "run_id": "r1",
            "runbook": "demo",
            "definition": rb.model_dump(mode="json"),
        },
        {"type": "start", "step": "a", "phase": "main", "attempt": 1},
        {"type": "end", "step": "a", "phase": "main", "attempt": 1, "status": "ok"},
        {"type": "approval", "step": "b", "decision": "waiting", "at": at.isoformat()},
        {"type": "finish", "status": "waiting_approval", "step": "b", "at": at.isoformat()},
        *more,
    ]
    return fold(recs)


def test_an_approval_expires_after_its_timeout() -> None:
    state = waiting(T0)
    assert next_step(book(), state, T0 + timedelta(minutes=59)).kind is Kind.WAIT_APPROVAL
    d = next_step(book(), state, T0 + timedelta(minutes=61))
    assert d.kind is Kind.ABORTED and d.status is RunStatus.ABORTED and "expired" in d.reason
    assert next_step(book(), state).kind is Kind.WAIT_APPROVAL  # no clock: never expires


def test_a_second_request_keeps_the_first_ones_time() -> None:
    later = {
        "type": "approval",
        "step": "b",
        "decision": "waiting",
        "at": (T0 + timedelta(minutes=50)).isoformat(),
    }
    state = waiting(T0, {"type": "resume", "by": "x"}, later)
    assert state.step("b").waiting_since == T0.isoformat()


def test_resuming_an_expired_run_asks_anew() -> None:
    expired = {"type": "finish", "status": "failed", "step": "b", "reason": "expired"}
    state = waiting(T0, {"type": "resume", "by": "x"}, expired, {"type": "resume", "by": "x"})
    assert state.step("b").waiting_since is None


# -- the executor's approve ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def start_waiting(tmp_path: Path) -> tuple[Clock, str]:
    clock = Clock()
    ex = Executor(
        journal_dir=tmp_path,
        clock=clock,
        policy=RunnerPolicy("infra-lead", set()),
        requested_by="infra-lead",
    )
    result = ex.start(book(), {})
    assert result.state.status is RunStatus.WAITING_APPROVAL
    return clock, result.run_id


def approver(clock: Clock, tmp_path: Path, by: str = "dr-coordinator") -> Executor:
    return Executor(journal_dir=tmp_path, clock=clock, requested_by=by, journal=Journal.silent())


def ok(state: RunState, request: ApprovalRequest) -> ApprovalDecision:
    return judge(request, approver="dr-coordinator", roles={"dr-coordinator"})


def test_an_approval_lets_the_run_finish(tmp_path: Path) -> None:
    clock, run_id = start_waiting(tmp_path)
    result = approver(clock, tmp_path).approve(run_id, step="b", check=ok)
    assert result.ok
    assert result.state.step("b").approved_by == "dr-coordinator"
    assert result.state.requested_by == "infra-lead"


def test_a_refused_approval_changes_nothing(tmp_path: Path) -> None:
    clock, run_id = start_waiting(tmp_path)
    path = tmp_path / f"{run_id}.jsonl"
    before = path.read_bytes()

    def refuse(state: RunState, request: ApprovalRequest) -> ApprovalDecision:
        raise access.AccessDenied("no")

    with pytest.raises(access.AccessDenied) as err:
        approver(clock, tmp_path, "infra-lead").approve(run_id, step="b", check=refuse)
    assert err.value.exit_code == 3
    assert path.read_bytes() == before


def test_approving_a_step_that_does_not_wait_is_a_usage_error(tmp_path: Path) -> None:
    clock, run_id = start_waiting(tmp_path)
    with pytest.raises(UsageError, match="waits for the approval of step b"):
        approver(clock, tmp_path).approve(run_id, step="c", check=ok)


def test_an_expired_approval_aborts_the_run(tmp_path: Path) -> None:
    clock, run_id = start_waiting(tmp_path)
    clock.now = T0 + timedelta(hours=2)
    result = approver(clock, tmp_path).approve(run_id, step="b", check=ok)
    assert result.state.status is RunStatus.ABORTED and "expired" in result.reason
    assert result.state.step("b").approved_by is None


def refusal(state: RunState, request: ApprovalRequest) -> ApprovalDecision:
    return judge_refusal(
        request, refuser="dr-coordinator", roles={"dr-coordinator"}, reason="  not tonight "
    )


def test_a_refusal_by_a_holder_aborts_the_run_and_a_resume_does_not_rerun_it(
    tmp_path: Path,
) -> None:
    clock, run_id = start_waiting(tmp_path)
    result = approver(clock, tmp_path).refuse(run_id, step="b", check=refusal)
    assert result.state.status is RunStatus.ABORTED
    assert "refused by dr-coordinator (not tonight)" in result.reason
    assert result.state.step("b").attempts == 0 and result.state.step("c").attempts == 0
    path = tmp_path / f"{run_id}.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()]
    (rec,) = [r for r in records if r["type"] == "approval" and r["decision"] == "refused"]
    assert (rec["by"], rec["reason"], rec["step"]) == ("dr-coordinator", "not tonight", "b")
    assert records[-1]["type"] == "finish" and records[-1]["status"] == "aborted"
    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"refused by dr-coordinator .*not resumed"):
        approver(clock, tmp_path, "infra-lead").resume(run_id)
    with pytest.raises(UsageError, match="is aborted, not waiting"):
        approver(clock, tmp_path).approve(run_id, step="b", check=ok)
    assert path.read_bytes() == before


def test_a_refusal_is_audited_with_who_and_why(tmp_path: Path) -> None:
    clock, run_id = start_waiting(tmp_path)
    events: list[tuple[str, str, dict[str, Any]]] = []
    ex = approver(clock, tmp_path)
    ex.audit = lambda type_, subject, details: events.append((type_, subject, details))
    ex.refuse(run_id, step="b", check=refusal)
    (ev,) = [e for e in events if e[0] == "runbook.approval.refused"]
    assert ev[2]["by"] == "dr-coordinator" and ev[2]["reason"] == "not tonight"
    assert ev[2]["role"] == "dr-coordinator" and ev[2]["step"] == "b"


def test_only_a_holder_of_the_role_may_refuse_the_requester_included() -> None:
    d = judge_refusal(REQ, refuser="infra-lead", roles={"dr-coordinator"}, reason="")
    assert d.answer is Answer.REFUSED and d.by == "infra-lead" and d.reason == "no reason given"
    d = judge_refusal(REQ, refuser="app-lead", roles={"application-lead"}, reason="x")
    assert d.answer is Answer.PENDING and "does not hold" in d.reason


def test_a_refusal_the_check_denies_changes_nothing(tmp_path: Path) -> None:
    clock, run_id = start_waiting(tmp_path)
    path = tmp_path / f"{run_id}.jsonl"
    before = path.read_bytes()

    def deny(state: RunState, request: ApprovalRequest) -> ApprovalDecision:
        raise access.AccessDenied("no")

    with pytest.raises(access.AccessDenied):
        approver(clock, tmp_path, "app-lead").refuse(run_id, step="b", check=deny)
    assert path.read_bytes() == before


# -- operators without the vault ------------------------------------------------------


def test_no_operator_is_refused_when_one_is_required(tmp_path: Path) -> None:
    settings = Settings(config_path=tmp_path / "payapi.toml")
    settings.recovery.require_operator = True
    with pytest.raises(access.AccessDenied) as err:
        service.authorize(settings, operator=None, runbook="demo", action="run")
    assert err.value.exit_code == 3 and "payapi --as LOGIN" in str(err.value)
    settings.recovery.require_operator = False
    who = service.authorize(settings, operator=None, runbook="demo", action="run")
    assert not who.checked and who.login


def test_the_operator_repr_hides_the_key() -> None:
    from pydantic import SecretStr

    op = access.Operator("alice", SecretStr("s3cr3t-key"))
    assert "s3cr3t" not in repr(op)


# -- the lab's team ---------------------------------------------------------------------


def test_the_team_policy_grants_execute_as_the_matrix_says() -> None:
    doc = resolve(
        access.team_policy(["engine-selftest", "approval-selftest", "later-one"]), "dr", "root"
    )
    permits = {(p.role_id, p.resource_id) for p in doc.permits if p.privilege == "execute"}
    web = "dr:webservice:runbooks/"
    for name in ("engine-selftest", "approval-selftest", "later-one"):
        assert ("dr:group:dr-coordinator", web + name) in permits  # everything
    assert ("dr:group:security-lead", web + "engine-selftest") in permits
    assert ("dr:group:security-lead", web + "approval-selftest") not in permits
    assert not any(r.endswith("later-one") and "lead" in g for g, r in permits)
    members = {(m.role_id, m.member_id) for m in doc.grants}
    assert ("dr:group:infrastructure-lead", "dr:user:infra-lead") in members


def test_the_team_is_the_plans() -> None:
    assert set(access.TEAM) <= set(load_plan().team)


def test_group_names_come_from_full_role_ids() -> None:
    ids = ["dr:user:infra-lead", "dr:group:infrastructure-lead", "dr:policy:root", "junk"]
    assert access.groups_of(ids) == frozenset({"infrastructure-lead"})


def test_pending_step_is_shown_for_review(tmp_path: Path) -> None:
    _, run_id = start_waiting(tmp_path)
    data = service.view(tmp_path / f"{run_id}.jsonl").to_json()
    pending = data["pending_approval"]
    assert pending["step"] == "b" and pending["role"] == "dr-coordinator"
    assert pending["requested_by"] == "infra-lead" and pending["would"]
    json.dumps(data)
