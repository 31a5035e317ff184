"""Escalation and overdue "Next Update" reminders with an injected clock: an unacked page
escalates to the secondary contact after the delay, once; an acked one does not."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from payapi.core.plan import Plan, default_plan_text, parse_plan
from payapi.core.settings import IncidentSettings, Settings
from payapi.incident.escalation import (
    IncidentView,
    escalations_due,
    overdue_updates,
    sweep,
)
from payapi.incident.notify import Message, Recipient, SendResult

T0 = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
DELAY = timedelta(minutes=15)


def real_plan() -> Plan:
    data = yaml.safe_load(default_plan_text())
    for key, role in data["communication"]["roles"].items():
        role["primary"] = {"name": f"P {key}", "phone": "+1555000", "email": f"p.{key}@ex.com"}
        role["secondary"] = {"name": f"S {key}", "phone": "+1555001", "email": f"s.{key}@ex.com"}
    return parse_plan(yaml.safe_dump(data))


PLAN = real_plan()
COORD = "dr-coordinator"
PAGE = (COORD, "p.dr-coordinator@ex.com", T0)


def test_unacked_page_escalates_to_the_secondary_after_the_delay() -> None:
    before = escalations_due(PLAN, [PAGE], [], delay=DELAY, now=T0 + DELAY - timedelta(seconds=1))
    assert before == []
    (esc,) = escalations_due(PLAN, [PAGE], [], delay=DELAY, now=T0 + DELAY)
    assert esc.role == COORD and esc.due_at == T0 + DELAY
    assert esc.secondary == Recipient(COORD, "S dr-coordinator", "s.dr-coordinator@ex.com")


def test_an_ack_within_the_delay_stops_the_escalation() -> None:
    acks = [(COORD, T0 + timedelta(minutes=3))]
    assert escalations_due(PLAN, [PAGE], acks, delay=DELAY, now=T0 + timedelta(hours=2)) == []


def test_an_ack_by_another_role_does_not_count() -> None:
    acks = [("communications-lead", T0 + timedelta(minutes=1))]
    assert len(escalations_due(PLAN, [PAGE], acks, delay=DELAY, now=T0 + DELAY)) == 1


def test_escalation_happens_once_the_secondary_page_is_the_state() -> None:
    pages = [PAGE, (COORD, "s.dr-coordinator@ex.com", T0 + DELAY)]
    assert escalations_due(PLAN, pages, [], delay=DELAY, now=T0 + 3 * DELAY) == []


def test_a_role_title_is_accepted_and_unknown_roles_are_ignored() -> None:
    pages = [("DR Coordinator", "p.dr-coordinator@ex.com", T0), ("nobody", "x@ex.com", T0)]
    assert [e.role for e in escalations_due(PLAN, pages, [], delay=DELAY, now=T0 + DELAY)] == [
        "DR Coordinator"
    ]


def test_placeholder_contacts_never_escalate_to_themselves() -> None:
    placeholder = parse_plan(default_plan_text())
    pages = [(COORD, "[Phone]", T0)]
    assert escalations_due(placeholder, pages, [], delay=DELAY, now=T0 + DELAY) == []


def view(**kw: object) -> IncidentView:
    base: IncidentView = {
        "incident_id": "INC-20250301-001",
        "pages": [PAGE],
        "acks": [],
        "next_update_at": None,
        "drill": False,
    }
    base.update(kw)  # type: ignore[typeddict-item]
    return base


def test_overdue_next_update_and_its_repeat() -> None:
    due = T0 + timedelta(minutes=30)
    inc = view(next_update_at=due)
    assert overdue_updates([inc], now=due - timedelta(seconds=1), repeat=DELAY) == []
    (od,) = overdue_updates([inc], now=due + timedelta(minutes=2), repeat=DELAY)
    assert od.overdue_by == timedelta(minutes=2)
    reminded = view(next_update_at=due, last_reminder_at=due + timedelta(minutes=2))
    assert overdue_updates([reminded], now=due + timedelta(minutes=10), repeat=DELAY) == []
    assert len(overdue_updates([reminded], now=due + timedelta(minutes=17), repeat=DELAY)) == 1
    # A new Next Update after the reminder: not overdue until it passes.
    later = view(next_update_at=due + timedelta(hours=1), last_reminder_at=due)
    assert overdue_updates([later], now=due + timedelta(minutes=20), repeat=DELAY) == []


class Recorder:
    def __init__(self, ok: bool = True) -> None:
        self.sent: list[tuple[Message, list[Recipient]]] = []
        self.ok = ok

    def __call__(
        self, settings: Settings, plan: Plan, message: Message, recipients: Sequence[Recipient]
    ) -> list[SendResult]:
        self.sent.append((message, list(recipients)))
        return [
            SendResult("outbox", "file", r.role, self.ok, "0" * 64, None, False) for r in recipients
        ]


def test_sweep_pages_the_secondary_and_reminds_of_overdue_updates(tmp_path: Path) -> None:
    settings = Settings(config_path=tmp_path / "p.toml", incident=IncidentSettings())
    rec = Recorder()
    incidents = [
        view(next_update_at=T0 + timedelta(minutes=10)),
        view(
            incident_id="INC-20250301-002",
            acks=[(COORD, T0)],
            drill=True,
            next_update_at=T0 + timedelta(hours=1),
        ),
    ]
    report = sweep(settings, PLAN, incidents, T0 + DELAY, deliver=rec)
    assert report.ok
    assert [(a.incident_id, a.kind) for a in report.actions] == [
        ("INC-20250301-001", "escalation"),
        ("INC-20250301-001", "reminder"),
    ]
    esc_msg, esc_to = rec.sent[0]
    assert esc_to == [Recipient(COORD, "S dr-coordinator", "s.dr-coordinator@ex.com")]
    assert esc_msg.subject.startswith("DR ESCALATION: INC-20250301-001")
    assert "payapi incident ack INC-20250301-001 --role dr-coordinator" in esc_msg.body
    _, remind_to = rec.sent[1]
    assert [r.role for r in remind_to] == ["communications-lead", "dr-coordinator"]
    assert report.to_json()["overdue"][0]["overdue_minutes"] == 5


def test_sweep_stamps_drill_messages_and_fails_when_nothing_was_reached(tmp_path: Path) -> None:
    settings = Settings(config_path=tmp_path / "p.toml")
    rec = Recorder(ok=False)
    report = sweep(settings, PLAN, [view(drill=True)], T0 + DELAY, deliver=rec)
    ((msg, _),) = rec.sent
    assert msg.drill and msg.subject.startswith("[DRILL] DR ESCALATION")
    assert msg.body.startswith("[DRILL] DR ESCALATION")
    assert not report.ok


def test_sweep_through_the_real_deliver_writes_the_outbox(tmp_path: Path) -> None:
    settings = Settings(config_path=tmp_path / "p.toml")
    report = sweep(settings, PLAN, [view()], T0 + DELAY)
    assert report.ok and len(list((tmp_path / "outbox").iterdir())) == 1


def test_sweep_views_are_built_from_the_journal_and_escalate_an_unacked_page(
    tmp_path: Path,
) -> None:
    """A declaration's successful send counts as a page to the role's primary contact; a
    failed send does not."""
    from payapi.incident import service
    from payapi.incident.journal import IncidentJournal
    from payapi.incident.render import Templates

    journal = IncidentJournal(tmp_path / "incidents")
    out = service.declare(
        journal=journal,
        plan=PLAN,
        templates=Templates(),
        description="Primary database lost",
        impact="Payments are refused",
        services=["db"],
        now=T0,
    )
    sends = [
        SendResult("outbox", "file", COORD, True, "0" * 64, None, False),
        SendResult("outbox", "file", "communications-lead", False, "0" * 64, "refused", False),
    ]
    service.record_sends(
        journal=journal, incident_id=out.incident.id, n=out.n, results=sends, now=T0
    )
    [view] = service.sweep_views(PLAN, service.get_all(journal=journal))
    assert view["incident_id"] == out.incident.id
    assert list(view["pages"]) == [PAGE]
    [due] = escalations_due(PLAN, view["pages"], view["acks"], delay=DELAY, now=T0 + DELAY)
    assert due.role == COORD
