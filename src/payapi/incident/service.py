"""Incident service functions (Dispatch style: keyword-only, one job each).

``declare``, ``update``, ``complete``, ``ack`` and ``close`` each append to the journal
(under its lock, so ids and states cannot race), render their message from the plan and
the arguments, and return what the caller needs to send it. Sending is not done here: the
CLI hands the message to the channels (:mod:`payapi.incident.notify`) and gives each
result back to :func:`record_sends`, so every attempt is in the timeline.

Nothing here asks a server: live health for ``complete`` is gathered by the caller (the
CLI, which may import :mod:`payapi.ops`) and passed in as :class:`ServiceState` values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from payapi.core.errors import UsageError
from payapi.core.plan import Channel, Contact, Plan, Role, UnknownComponentError
from payapi.incident.escalation import IncidentView, contact_address, find_role
from payapi.incident.journal import IncidentJournal
from payapi.incident.model import (
    Incident,
    IncidentState,
    ServiceState,
    format_duration,
    format_time,
    next_id,
    project,
    transition,
)
from payapi.incident.render import MessageKind, Rendered, Templates

__all__ = [
    "Addressee",
    "Outcome",
    "SendLike",
    "ack",
    "close",
    "complete",
    "declare",
    "get",
    "get_all",
    "recipients",
    "record_sends",
    "sweep_views",
    "unreachable_roles",
    "update",
]

UNDER_ASSESSMENT = "Under assessment"  # the seed's default estimate
NOT_SCHEDULED = "To be scheduled"
NONE_ITEM = "None"


class IncidentNotFound(UsageError):
    """No incident has that id in the journal."""


@dataclass(frozen=True, slots=True)
class Addressee:
    """Who a message goes to: the same fields as ``notify.Recipient``."""

    role: str
    name: str
    contact: str


class SendLike(Protocol):
    """What :func:`record_sends` reads of a send result (``notify.SendResult``)."""

    @property
    def channel(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def sha256(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def fallback(self) -> bool: ...


@dataclass(frozen=True)
class Outcome:
    """What a command did: the incident after it, and the message to send (number ``n``)."""

    incident: Incident
    message: Rendered
    n: int
    recipients: tuple[Addressee, ...]
    unreachable: tuple[str, ...] = ()
    recovered_services: tuple[ServiceState, ...] = ()


# --------------------------------------------------------------------------- plan


def _roles(plan: Plan) -> dict[str, Role]:
    """The communication roles, then the DR team's roles they do not already name."""
    roles: dict[str, Role] = dict(plan.communication.roles)
    for rid, role in plan.team.items():
        roles.setdefault(rid, role)
    return roles


def _usable(value: str) -> bool:
    v = value.strip()
    return bool(v) and not (v.startswith("[") and v.endswith("]"))


def _reach(contact: Contact) -> str | None:
    """The address a message can reach this contact at (email first), or None."""
    for value in (contact.email, contact.phone):
        if _usable(value):
            return value.strip()
    return None


def recipients(plan: Plan) -> tuple[Addressee, ...]:
    """Each role's primary contact (its secondary when the primary has no address)."""
    out: list[Addressee] = []
    for rid, role in _roles(plan).items():
        for contact in (role.primary, role.secondary):
            where = _reach(contact)
            if where is not None:
                out.append(Addressee(rid, contact.name, where))
                break
    return tuple(out)


def unreachable_roles(plan: Plan) -> tuple[str, ...]:
    """Roles neither of whose contacts has an address (still the seed's placeholders)."""
    return tuple(
        rid
        for rid, role in _roles(plan).items()
        if _reach(role.primary) is None and _reach(role.secondary) is None
    )


def _name_of(plan: Plan, title: str) -> str:
    for role in _roles(plan).values():
        if role.title.lower() == title.lower():
            return role.primary.name
    raise UsageError(f"the plan has no {title} role (communication.roles or team)")


def _channel(plan: Plan, word: str) -> Channel | None:
    chans = plan.communication.channels
    for ch in (*chans.primary, *chans.backup):
        if word in ch.name.lower():
            return ch
    return None


def _bridge(plan: Plan) -> str:
    ch = _channel(plan, "conference bridge")
    return ch.address if ch is not None and ch.address else "[Link]"


def _slack(plan: Plan) -> str:
    ch = _channel(plan, "slack")
    return ch.address if ch is not None and ch.address else "#disaster-recovery"


def _titles(plan: Plan, services: Sequence[str]) -> list[str]:
    return [plan.components[s].title for s in services]


def _resolve_services(plan: Plan, services: Sequence[str]) -> tuple[str, ...]:
    names = [s.strip() for s in services if s.strip()]
    if not names:
        raise UsageError("--services: name at least one affected service")
    try:
        return tuple(dict.fromkeys(plan.resolve(s) for s in names))
    except UnknownComponentError as exc:
        raise UsageError(f"--services: {exc}") from None


# --------------------------------------------------------------------------- reading


def get_all(*, journal: IncidentJournal) -> list[Incident]:
    return list(project(journal.entries()).values())


def get(*, journal: IncidentJournal, incident_id: str) -> Incident:
    found = project(journal.entries()).get(incident_id.strip().upper())
    if found is None:
        raise IncidentNotFound(f"no incident {incident_id!r} in {journal.path}")
    return found


# --------------------------------------------------------------------------- writing


def _render_and_record(
    *,
    journal: IncidentJournal,
    templates: Templates,
    incident: Incident,
    kind: MessageKind,
    fields: Mapping[str, Any],
    now: datetime,
) -> tuple[Rendered, int]:
    message = templates.render(kind, fields, drill=incident.drill)
    n = incident.messages + 1
    journal.append(
        type="message_rendered",
        incident=incident.id,
        at=now,
        data={
            "n": n,
            "kind": kind,
            "subject": message.subject,
            "sha256": hashlib.sha256(message.text.encode()).hexdigest(),
            "text": message.text,
        },
    )
    return message, n


def declare(
    *,
    journal: IncidentJournal,
    plan: Plan,
    templates: Templates,
    description: str,
    impact: str,
    services: Sequence[str],
    now: datetime,
    estimate: str | None = None,
    next_update: timedelta = timedelta(minutes=30),
    drill: bool = False,
    actor: str = "",
) -> Outcome:
    """Open an incident and render the Disaster Declaration."""
    if not description.strip():
        raise UsageError("--description: empty")
    if not impact.strip():
        raise UsageError("--impact: empty")
    names = _resolve_services(plan, services)
    roles = {
        rid: {"title": r.title, "primary": r.primary.name, "secondary": r.secondary.name}
        for rid, r in _roles(plan).items()
    }
    unreachable = unreachable_roles(plan)
    with journal.locked():
        existing = [i.id for i in get_all(journal=journal)]
        incident_id = next_id(existing, now)
        next_at = now + next_update
        fields = {
            "incident_id": incident_id,
            "description": " ".join(description.split()),
            "time_declared": format_time(now),
            "impact": " ".join(impact.split()),
            "affected_services": ", ".join(_titles(plan, names)),
            "dr_coordinator": _name_of(plan, "DR Coordinator"),
            "communications_lead": _name_of(plan, "Communications Lead"),
            "estimate": estimate or UNDER_ASSESSMENT,
            "next_update": format_time(next_at),
            "conference_bridge": _bridge(plan),
            "slack_channel": _slack(plan),
        }
        templates.render("declaration", fields, drill=drill)  # a bad template writes nothing
        journal.append(
            type="declared",
            incident=incident_id,
            at=now,
            data={
                "description": fields["description"],
                "impact": fields["impact"],
                "services": list(names),
                "drill": drill,
                "estimate": estimate,
                "next_update_at": next_at.isoformat(),
                "roles": roles,
                "unreachable_roles": list(unreachable),
                "actor": actor,
            },
        )
        incident = get(journal=journal, incident_id=incident_id)
        message, n = _render_and_record(
            journal=journal,
            templates=templates,
            incident=incident,
            kind="declaration",
            fields=fields,
            now=now,
        )
        incident = get(journal=journal, incident_id=incident_id)
    return Outcome(incident, message, n, recipients(plan), unreachable)


def _to(journal: IncidentJournal, incident: Incident, target: IncidentState, now: datetime) -> None:
    transition(incident.state, target)
    journal.append(
        type="state",
        incident=incident.id,
        at=now,
        data={"from": str(incident.state), "to": str(target)},
    )


def update(
    *,
    journal: IncidentJournal,
    plan: Plan,
    templates: Templates,
    incident_id: str,
    status: str,
    progress: Sequence[str],
    remaining: Sequence[str],
    now: datetime,
    estimate: str | None = None,
    next_update: timedelta = timedelta(minutes=30),
) -> Outcome:
    """A Status Update; the first one moves a declared incident to ``recovering``."""
    if not status.strip():
        raise UsageError("--status: empty")
    if not [p for p in progress if p.strip()]:
        raise UsageError("--progress: give at least one milestone")
    with journal.locked():
        incident = get(journal=journal, incident_id=incident_id)
        if incident.state not in (IncidentState.DECLARED, IncidentState.RECOVERING):
            raise UsageError(f"{incident.id} is {incident.state}: it takes no more updates")
        next_at = now + next_update
        fields = {
            "incident_id": incident.id,
            "description": incident.description,
            "time": format_time(now),
            "status": " ".join(status.split()),
            "progress": [" ".join(p.split()) for p in progress if p.strip()],
            "remaining": [" ".join(r.split()) for r in remaining if r.strip()] or [NONE_ITEM],
            "estimate": estimate or incident.estimate or UNDER_ASSESSMENT,
            "next_update": format_time(next_at),
        }
        templates.render("status-update", fields, drill=incident.drill)
        if incident.state is IncidentState.DECLARED:
            _to(journal, incident, IncidentState.RECOVERING, now)
        journal.append(
            type="updated",
            incident=incident.id,
            at=now,
            data={
                "status": fields["status"],
                "progress": fields["progress"],
                "remaining": fields["remaining"],
                "estimate": estimate,
                "next_update_at": next_at.isoformat(),
            },
        )
        incident = get(journal=journal, incident_id=incident.id)
        message, n = _render_and_record(
            journal=journal,
            templates=templates,
            incident=incident,
            kind="status-update",
            fields=fields,
            now=now,
        )
        incident = get(journal=journal, incident_id=incident.id)
    return Outcome(incident, message, n, recipients(plan))


def complete(
    *,
    journal: IncidentJournal,
    plan: Plan,
    templates: Templates,
    incident_id: str,
    outcomes: Sequence[str],
    follow_ups: Sequence[str],
    health: Mapping[str, ServiceState],
    now: datetime,
    review_at: datetime | None = None,
) -> Outcome:
    """The Recovery Complete message: duration from the timeline, services from ``health``
    (a live check per affected service; a service missing from it is "not checked")."""
    if not [o for o in outcomes if o.strip()]:
        raise UsageError("--outcome: give at least one line of outcome summary")
    with journal.locked():
        incident = get(journal=journal, incident_id=incident_id)
        if incident.state not in (IncidentState.DECLARED, IncidentState.RECOVERING):
            raise UsageError(f"{incident.id} is already {incident.state}")
        if now < incident.declared_at:
            raise UsageError("the completion time is before the declaration")
        states = tuple(
            health.get(s)
            or ServiceState(s, plan.components[s].title, False, "not checked (no health check)")
            for s in incident.services
        )
        duration = format_duration((now - incident.declared_at).total_seconds())
        fields = {
            "incident_id": incident.id,
            "description": incident.description,
            "time_completed": format_time(now),
            "total_recovery_duration": duration,
            "recovered_services": [{"title": s.title, "state": s.state} for s in states],
            "outcomes": [" ".join(o.split()) for o in outcomes if o.strip()],
            "follow_ups": [" ".join(f.split()) for f in follow_ups if f.strip()] or [NONE_ITEM],
            "review_at": format_time(review_at) if review_at is not None else NOT_SCHEDULED,
        }
        templates.render("recovery-complete", fields, drill=incident.drill)
        if incident.state is IncidentState.DECLARED:
            _to(journal, incident, IncidentState.RECOVERING, now)
            incident = get(journal=journal, incident_id=incident.id)
        _to(journal, incident, IncidentState.RECOVERED, now)
        journal.append(
            type="completed",
            incident=incident.id,
            at=now,
            data={
                "total_recovery_duration": duration,
                "recovered_services": [s.to_json() | {"healthy": s.healthy} for s in states],
                "outcomes": fields["outcomes"],
                "follow_ups": fields["follow_ups"],
                "review_at": review_at.isoformat() if review_at else None,
            },
        )
        incident = get(journal=journal, incident_id=incident.id)
        message, n = _render_and_record(
            journal=journal,
            templates=templates,
            incident=incident,
            kind="recovery-complete",
            fields=fields,
            now=now,
        )
        incident = get(journal=journal, incident_id=incident.id)
    return Outcome(incident, message, n, recipients(plan), (), states)


def close(*, journal: IncidentJournal, incident_id: str, now: datetime) -> Incident:
    """Close a recovered incident (after its post-recovery review)."""
    with journal.locked():
        incident = get(journal=journal, incident_id=incident_id)
        _to(journal, incident, IncidentState.CLOSED, now)
        return get(journal=journal, incident_id=incident.id)


def ack(*, journal: IncidentJournal, incident_id: str, role: str, now: datetime) -> Incident:
    """Record that ``role``'s contact acknowledged the incident's page."""
    want = role.strip().lower()
    with journal.locked():
        incident = get(journal=journal, incident_id=incident_id)
        if incident.state is IncidentState.CLOSED:
            raise UsageError(f"{incident.id} is closed")
        if want not in incident.roles:
            known = ", ".join(incident.roles)
            raise UsageError(f"--role: {role!r} is not a role of {incident.id} (roles: {known})")
        journal.append(type="acked", incident=incident.id, at=now, data={"role": want})
        return get(journal=journal, incident_id=incident.id)


def record_sends(
    *,
    journal: IncidentJournal,
    incident_id: str,
    n: int,
    results: Sequence[SendLike],
    now: datetime,
) -> None:
    """One ``message_sent`` entry per result: channel, kind, role, ok, SHA-256, error."""
    with journal.locked():
        for r in results:
            journal.append(
                type="message_sent",
                incident=incident_id,
                at=now,
                data={
                    "n": n,
                    "channel": r.channel,
                    "kind": r.kind,
                    "role": r.role,
                    "ok": r.ok,
                    "sha256": r.sha256,
                    "error": r.error,
                    "fallback": r.fallback,
                },
            )


def record_copy(
    *, journal: IncidentJournal, incident_id: str, result: Mapping[str, Any], now: datetime
) -> None:
    """The journal's copy into the backup repository, as a timeline event (best effort)."""
    journal.append(type="repository_copy", incident=incident_id, at=now, data=dict(result))


def sweep_views(plan: Plan, incidents: Sequence[Incident]) -> list[IncidentView]:
    """The sweep's view of each open incident: its pages (a declaration's successful sends
    went to each role's primary contact; the sweep's own sends are journaled with their
    contact), its acks, its next update and its last reminder. Pure."""
    out: list[IncidentView] = []
    for inc in incidents:
        if inc.state not in (IncidentState.DECLARED, IncidentState.RECOVERING):
            continue
        pages: list[tuple[str, str, datetime]] = []
        reminders: list[datetime] = []
        for ev in inc.timeline:
            if ev.type == "message_sent" and ev.data.get("ok"):
                role = find_role(plan, str(ev.data.get("role", "")))
                if role is not None:
                    pages.append((str(ev.data["role"]), contact_address(role.primary), ev.at))
            elif ev.type == "sweep_sent" and ev.data.get("ok"):
                if ev.data.get("kind") == "escalation":
                    pages.append((str(ev.data["role"]), str(ev.data["contact"]), ev.at))
                else:
                    reminders.append(ev.at)
        out.append(
            {
                "incident_id": inc.id,
                "pages": pages,
                "acks": list(inc.acks.items()),
                "next_update_at": inc.next_update_at,
                "drill": inc.drill,
                "last_reminder_at": max(reminders, default=None),
            }
        )
    return out
