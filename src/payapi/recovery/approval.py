"""Approvals: the hook a step with ``approval: ROLE`` waits on.

The engine asks an :class:`ApprovalPolicy` (injected; the default approves everything)
whether the step may run. The answer is approved (by whom: written into the journal as
``approved_by``), refused (the run ends failed; a resume asks again) or pending (the run
stops in ``waiting_approval``; ``runbook resume`` asks again). Who may approve (a holder
of the role other than the requester, checked against the vault) is the next issue's
policy; this module only fixes the shape.
"""

from __future__ import annotations

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
