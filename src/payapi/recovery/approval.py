"""Approvals: the hook a step with ``approval: ROLE`` waits on.

The engine asks an :class:`ApprovalPolicy` (injected; the default approves everything)
whether the step may run. The answer is approved (by whom: written into the journal as
``approved_by``), refused (the run ends ``aborted``, for good: a resume does not ask
again) or pending (the run stops in ``waiting_approval``; ``runbook resume`` asks again).

Who may approve is :func:`judge` (pure): a holder of the step's role (a member of that
vault group) **other than the requester**; the requester only with ``--yes`` and a role
of ``[recovery] self_approve_roles`` (automation). Who may refuse is :func:`judge_refusal`:
any holder of the role, the requester included (calling off one's own run needs no
second pair of eyes). :class:`RunnerPolicy` is what a run
started or resumed by a named operator asks: it approves only such a self-approval, and
otherwise waits for ``payapi runbook approve``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Answer(StrEnum):
    APPROVED = "approved"
    REFUSED = "refused"
    PENDING = "pending"


@dataclass(frozen=True)
class ApprovalRequest:
    run_id: str
    runbook: str
    step: str
    role: str
    requested_by: str


@dataclass(frozen=True)
class ApprovalDecision:
    answer: Answer
    by: str | None = None
    reason: str = ""


class ApprovalPolicy(Protocol):
    def decide(self, request: ApprovalRequest) -> ApprovalDecision: ...


class AllowAll:
    """Approves every step: what runs get until access control is configured. The
    journal says so (``approved_by`` names this policy, never a person)."""

    name = "policy:allow-all"

    def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision(Answer.APPROVED, self.name, "no approval policy configured")


def judge(
    request: ApprovalRequest,
    *,
    approver: str,
    roles: Collection[str],
    yes: bool = False,
    self_approve_roles: Collection[str] = (),
) -> ApprovalDecision:
    """May ``approver`` (holding the groups ``roles``) approve ``request``? Approved
    by them, or refused with the reason (four eyes: never the requester, unless
    ``yes`` and one of their roles may self-approve)."""
    if request.role not in roles:
        return ApprovalDecision(
            Answer.REFUSED, approver, f"{approver} does not hold the role {request.role}"
        )
    if approver == request.requested_by:
        allowed = sorted(set(roles) & set(self_approve_roles))
        if yes and allowed:
            return ApprovalDecision(
                Answer.APPROVED, approver, f"self-approved with --yes (role {allowed[0]})"
            )
        return ApprovalDecision(
            Answer.REFUSED,
            approver,
            f"{approver} requested this run and cannot approve it (another holder of "
            f"{request.role} must)",
        )
    return ApprovalDecision(Answer.APPROVED, approver, f"approved as {request.role}")


def judge_refusal(
    request: ApprovalRequest, *, refuser: str, roles: Collection[str], reason: str = ""
) -> ApprovalDecision:
    """May ``refuser`` (holding ``roles``) refuse ``request``? REFUSED (by them, with
    their reason: what the journal records, and the run aborts) when they hold the
    step's role; PENDING otherwise (nothing changes: nobody aborts a run they could not
    have approved)."""
    if request.role not in roles:
        return ApprovalDecision(
            Answer.PENDING, refuser, f"{refuser} does not hold the role {request.role}"
        )
    return ApprovalDecision(Answer.REFUSED, refuser, reason.strip() or "no reason given")


class RunnerPolicy:
    """The policy of a run driven by a named operator: a step that needs an approval
    waits for ``runbook approve``, unless the operator may self-approve it (``--yes``
    and a self-approve role, and they hold the step's role)."""

    def __init__(
        self,
        login: str,
        roles: Collection[str],
        *,
        yes: bool = False,
        self_approve_roles: Collection[str] = (),
    ) -> None:
        self.login = login
        self.roles = frozenset(roles)
        self.yes = yes
        self.self_approve_roles = frozenset(self_approve_roles)

    def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        if self.yes and self.login == request.requested_by:
            d = judge(
                request,
                approver=self.login,
                roles=self.roles,
                yes=True,
                self_approve_roles=self.self_approve_roles,
            )
            if d.answer is Answer.APPROVED:
                return d
        return ApprovalDecision(
            Answer.PENDING,
            None,
            f"waiting for a holder of {request.role} other than {request.requested_by}",
        )
