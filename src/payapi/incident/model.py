"""The incident as data: its state machine (pure), its id, and the projection that builds
an :class:`Incident` from its journal entries.

An incident is never stored as a row that could be overwritten: it is what its entries in
the hash-chained journal (:mod:`payapi.incident.journal`) say, replayed in order. The
state moves one way, ``declared → recovering → recovered → closed``; :func:`transition`
is the one rule and refuses anything else with a :class:`UsageError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from payapi.core.errors import UsageError
from payapi.incident.journal import Entry, parse_time

__all__ = [
    "ID_PATTERN",
    "Incident",
    "IncidentState",
    "InvalidTransition",
    "ServiceState",
    "TimelineEvent",
    "format_duration",
    "format_time",
    "next_id",
    "project",
    "transition",
]

ID_PATTERN = re.compile(r"^INC-(\d{8})-(\d{3,})\Z")


class IncidentState(StrEnum):
    DECLARED = "declared"
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    CLOSED = "closed"


_ORDER = (
    IncidentState.DECLARED,
    IncidentState.RECOVERING,
    IncidentState.RECOVERED,
    IncidentState.CLOSED,
)


class InvalidTransition(UsageError):
    """The incident cannot go from its state to the one asked for."""


def transition(current: IncidentState, target: IncidentState) -> IncidentState:
    """``target`` when it is the state right after ``current``; else InvalidTransition."""
    i = _ORDER.index(current)
    if i + 1 < len(_ORDER) and _ORDER[i + 1] is target:
        return target
    raise InvalidTransition(f"an incident cannot go from {current} to {target}")


def next_id(existing: Iterable[str], day: datetime) -> str:
    """``INC-YYYYMMDD-NNN``: NNN counts the incidents declared that UTC day, from 001."""
    stamp = f"{day:%Y%m%d}"
    used = [int(m.group(2)) for i in existing if (m := ID_PATTERN.match(i)) and m[1] == stamp]
    return f"INC-{stamp}-{max(used, default=0) + 1:03d}"


def format_time(when: datetime) -> str:
    """The seed's ``YYYY-MM-DD HH:MM UTC``."""
    from datetime import UTC

    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def format_duration(seconds: float) -> str:
    """``HH:MM`` (hours may exceed 24), minutes rounded down."""
    minutes = max(0, int(seconds // 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One affected service as a live health check saw it when the incident completed."""

    service: str  # the plan's component name
    title: str
    healthy: bool
    state: str  # "Fully operational", or what is wrong

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "title": self.title, "state": self.state}


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    seq: int
    at: datetime
    type: str
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at.isoformat(), "type": self.type, **self.data}


@dataclass(frozen=True)
class Incident:
    id: str
    state: IncidentState
    description: str
    impact: str
    services: tuple[str, ...]
    drill: bool
    declared_at: datetime
    roles: Mapping[str, Mapping[str, Any]]
    timeline: tuple[TimelineEvent, ...]
    estimate: str | None = None
    next_update_at: datetime | None = None
    completed_at: datetime | None = None
    messages: int = 0
    acks: Mapping[str, datetime] = field(default_factory=dict)

    def to_json(self, *, timeline: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "incident_id": self.id,
            "state": str(self.state),
            "description": self.description,
            "impact": self.impact,
            "services": list(self.services),
            "drill": self.drill,
            "declared_at": self.declared_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "estimate": self.estimate,
            "next_update_at": self.next_update_at.isoformat() if self.next_update_at else None,
            "roles": {k: dict(v) for k, v in self.roles.items()},
            "acks": {k: v.isoformat() for k, v in self.acks.items()},
            "messages": self.messages,
        }
        if timeline:
            out["timeline"] = [e.to_json() for e in self.timeline]
        return out


def _time(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) else None


def project(entries: Sequence[Entry]) -> dict[str, Incident]:
    """Every incident the entries describe, in declaration order (pure)."""
    found: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.incident is None:
            continue
        d = e.data
        event = TimelineEvent(e.seq, e.time, e.type, d)
        if e.type == "declared":
            found[e.incident] = {
                "id": e.incident,
                "state": IncidentState.DECLARED,
                "description": str(d["description"]),
                "impact": str(d["impact"]),
                "services": tuple(d["services"]),
                "drill": bool(d["drill"]),
                "declared_at": e.time,
                "roles": dict(d.get("roles", {})),
                "estimate": d.get("estimate"),
                "next_update_at": _time(d.get("next_update_at")),
                "timeline": [event],
                "messages": 0,
                "acks": {},
            }
            continue
        inc = found.get(e.incident)
        if inc is None:
            continue  # an entry of an incident whose declaration is not here
        inc["timeline"].append(event)
        if e.type == "state":
            inc["state"] = IncidentState(d["to"])
        elif e.type == "updated":
            if d.get("estimate"):
                inc["estimate"] = d["estimate"]
            inc["next_update_at"] = _time(d.get("next_update_at")) or inc["next_update_at"]
        elif e.type == "completed":
            inc["completed_at"] = e.time
            inc["next_update_at"] = None
        elif e.type == "message_rendered":
            inc["messages"] += 1
        elif e.type == "acked":
            inc["acks"][str(d["role"])] = e.time
    return {k: Incident(**{**v, "timeline": tuple(v["timeline"])}) for k, v in found.items()}
