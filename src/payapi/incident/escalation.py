"""Escalation and overdue "Next Update" reminders: pure decisions, and a sweep that acts.

Deciding (pure, no clock, no I/O; ``now`` is injected):

- :func:`escalations_due`: a role whose primary contact was paged and has not
  acknowledged within the delay (``[incident] escalation_minutes``) gets its secondary
  contact paged. The rule, per role: take the first page to the role's primary contact;
  an ack by the role at or after that page covers the role for the whole incident; the
  escalation is due when ``now >= first page + delay``, there is no such ack, and no page
  has gone to the role's secondary contact since (the pages *are* the state: a sweep that
  runs every minute escalates once). There is no third tier: an unacknowledged secondary
  is visible in the sweep's report, not paged again.
- :func:`overdue_updates`: an incident whose ``next_update_at`` has passed is overdue;
  the Communications Lead and the DR Coordinator are reminded, then again every delay
  while it stays overdue (``last_reminder_at``).

Acting: :func:`sweep` (``payapi incident sweep --json``, run every minute by the
scheduler) sends those messages through :func:`payapi.incident.notify.deliver` and
returns what it sent, for the caller to record in each incident's timeline. The
incidents come in as plain values (:class:`IncidentView`), so this module does not
depend on how the journal stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict

from payapi.core.plan import Contact, Plan, Role
from payapi.core.settings import Settings
from payapi.incident.notify import (
    DRILL_MARK,
    Message,
    Recipient,
    SendResult,
    deliver,
    reached,
)

__all__ = [
    "Escalation",
    "IncidentView",
    "Overdue",
    "SweepAction",
    "SweepReport",
    "contact_address",
    "escalations_due",
    "find_role",
    "overdue_updates",
    "sweep",
]

# Who is reminded when a "Next Update" is overdue (roles of the packaged plan).
REMIND_ROLES = ("communications-lead", "dr-coordinator")


class IncidentView(TypedDict):
    """What the sweep needs to know of one open incident (the core's journal has more)."""

    incident_id: str
    pages: Sequence[tuple[str, str, datetime]]  # (role, contact, sent_at)
    acks: Sequence[tuple[str, datetime]]  # (role, at)
    next_update_at: datetime | None
    drill: bool
    last_reminder_at: NotRequired[datetime | None]


@dataclass(frozen=True)
class Escalation:
    """Page ``secondary`` of ``role``: its primary was paged at ``paged_at`` and has not
    acknowledged by ``due_at``."""

    role: str
    primary_contact: str
    paged_at: datetime
    due_at: datetime
    secondary: Recipient

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "paged_at": self.paged_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "secondary_role": self.secondary.role,
        }


@dataclass(frozen=True)
class Overdue:
    incident_id: str
    next_update_at: datetime
    overdue_by: timedelta

    def to_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "next_update_at": self.next_update_at.isoformat(),
            "overdue_minutes": int(self.overdue_by.total_seconds() // 60),
        }


def contact_address(contact: Contact) -> str:
    """The one address a message uses for a person: the email (the file outbox and SMTP
    take it; a webhook receives it as ``to``), else the phone."""
    return contact.email if "@" in contact.email else contact.phone


def find_role(plan: Plan, name: str) -> Role | None:
    """The plan's role by key or by title; None when the plan has no such role."""
    roles = plan.communication.roles
    if name in roles:
        return roles[name]
    return next((r for r in roles.values() if r.title == name), None)


def _aware(when: datetime) -> None:
    if when.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware, got {when.isoformat()}")


def escalations_due(
    plan: Plan,
    pages: Iterable[tuple[str, str, datetime]],
    acks: Iterable[tuple[str, datetime]],
    *,
    delay: timedelta,
    now: datetime,
) -> list[Escalation]:
    """The secondary contacts to page at ``now`` (the rule in the module docstring), in
    the order of the roles' first pages."""
    _aware(now)
    pages = list(pages)
    acks = list(acks)
    out: list[Escalation] = []
    seen: set[str] = set()
    for role_name, _contact, _at in sorted(pages, key=lambda p: p[2]):
        if role_name in seen:
            continue
        seen.add(role_name)
        role = find_role(plan, role_name)
        if role is None:
            continue
        primary = contact_address(role.primary)
        secondary = contact_address(role.secondary)
        first = min(
            (at for r, c, at in pages if r == role_name and c == primary),
            default=None,
        )
        if first is None or secondary == primary:
            continue
        _aware(first)
        if any(r == role_name and at >= first for r, at in acks):
            continue
        if any(r == role_name and c == secondary and at >= first for r, c, at in pages):
            continue  # already escalated
        if now < first + delay:
            continue
        out.append(
            Escalation(
                role_name,
                primary,
                first,
                first + delay,
                Recipient(role_name, role.secondary.name, secondary),
            )
        )
    return out


def overdue_updates(
    incidents: Iterable[IncidentView], *, now: datetime, repeat: timedelta
) -> list[Overdue]:
    """Incidents whose "Next Update" time has passed and that were not reminded within
    ``repeat`` (pure)."""
    _aware(now)
    out: list[Overdue] = []
    for inc in incidents:
        due = inc["next_update_at"]
        if due is None or now < due:
            continue
        last = inc.get("last_reminder_at")
        if last is not None and last >= due and now < last + repeat:
            continue
        out.append(Overdue(inc["incident_id"], due, now - due))
    return out


def _stamp(text: str, drill: bool) -> str:
    return f"{DRILL_MARK} {text}" if drill and not text.startswith(DRILL_MARK) else text


def _message(subject: str, lines: Sequence[str], drill: bool) -> Message:
    subject = _stamp(subject, drill)
    return Message(subject, "\n".join([subject, "", *lines]) + "\n", drill)


def _utc(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class SweepAction:
    """One message the sweep sent: an escalation or a reminder, and its results."""

    incident_id: str
    kind: str  # "escalation" | "reminder"
    role: str
    recipients: tuple[Recipient, ...]
    results: tuple[SendResult, ...]

    @property
    def ok(self) -> bool:
        return reached(self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "kind": self.kind,
            "role": self.role,
            "recipients": [{"role": r.role, "contact": r.contact} for r in self.recipients],
            "ok": self.ok,
            "sent": [r.to_json() for r in self.results],
        }


@dataclass(frozen=True)
class SweepReport:
    now: datetime
    actions: tuple[SweepAction, ...] = ()
    escalations: tuple[Escalation, ...] = ()
    overdue: tuple[Overdue, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """False when a message reached no channel (``incident sweep`` exits 1)."""
        return all(a.ok for a in self.actions)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "ok": self.ok,
            "escalations": [e.to_json() for e in self.escalations],
            "overdue": [o.to_json() for o in self.overdue],
            "actions": [a.to_json() for a in self.actions],
        }


Deliver = Callable[[Settings, Plan, Message, Sequence[Recipient]], list[SendResult]]


def sweep(
    settings: Settings,
    plan: Plan,
    incidents: Iterable[IncidentView],
    now: datetime,
    deliver: Deliver = deliver,
) -> SweepReport:
    """Page the secondary contacts that are due and remind of overdue updates, for every
    open incident; one :class:`SweepAction` per message, for the timeline."""
    delay = timedelta(minutes=settings.incident.escalation_minutes)
    incidents = list(incidents)
    actions: list[SweepAction] = []
    all_escalations: list[Escalation] = []
    for inc in incidents:
        drill = inc["drill"]
        for esc in escalations_due(plan, inc["pages"], inc["acks"], delay=delay, now=now):
            all_escalations.append(esc)
            role = find_role(plan, esc.role)
            title = role.title if role is not None else esc.role
            msg = _message(
                f"DR ESCALATION: {inc['incident_id']} - {title} page not acknowledged",
                [
                    f"The {title} was paged at {_utc(esc.paged_at)} and has not "
                    f"acknowledged within {int(delay.total_seconds() // 60)} minutes.",
                    f"You are the secondary {title}: please acknowledge with",
                    f"  payapi incident ack {inc['incident_id']} --role {esc.role}",
                ],
                drill,
            )
            results = deliver(settings, plan, msg, [esc.secondary])
            actions.append(
                SweepAction(
                    inc["incident_id"], "escalation", esc.role, (esc.secondary,), tuple(results)
                )
            )
    overdue = overdue_updates(incidents, now=now, repeat=delay)
    by_id = {inc["incident_id"]: inc for inc in incidents}
    for od in overdue:
        recipients = _remind_recipients(plan)
        msg = _message(
            f"DR UPDATE OVERDUE: {od.incident_id}",
            [
                f"The next status update was due at {_utc(od.next_update_at)} "
                f"({int(od.overdue_by.total_seconds() // 60)} minutes ago).",
                f"  payapi incident update {od.incident_id} --status ...",
            ],
            by_id[od.incident_id]["drill"],
        )
        results = deliver(settings, plan, msg, recipients)
        actions.append(
            SweepAction(
                od.incident_id, "reminder", REMIND_ROLES[0], tuple(recipients), tuple(results)
            )
        )
    return SweepReport(now, tuple(actions), tuple(all_escalations), tuple(overdue))


def _remind_recipients(plan: Plan) -> list[Recipient]:
    out: list[Recipient] = []
    for key in REMIND_ROLES:
        role = plan.communication.roles.get(key)
        if role is not None:
            out.append(Recipient(key, role.primary.name, contact_address(role.primary)))
    return out
