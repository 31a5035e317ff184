"""`payapi incident`: declare, update, complete, ack, close, list, show, timeline, verify.

The incident lives in the journal on local disk (:mod:`payapi.incident.journal`), so every
command here works with every server down. This module wires what the incident package
may not: live health from :mod:`payapi.ops` for ``complete``, and the channels
(:mod:`payapi.incident.notify`; the file outbox when none is configured). Each send
result goes into the timeline; a message that reached no channel is exit 1.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.options import parse_now
from payapi.cli.output import EXIT_FAILED, EXIT_USAGE, console, emit, fail, warn
from payapi.core.durations import parse_duration
from payapi.core.errors import PayapiError
from payapi.core.plan import Plan, load_plan
from payapi.core.settings import Settings

app = typer.Typer(help="incident", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (for automation).")
NOW_OPTION = typer.Option(None, "--now", hidden=True, help="An injected clock (ISO 8601).")

# The affected services a health check can judge: plan component -> health component.
HEALTH_COMPONENT = {
    "payment-eapi": "eapi",
    "payment-sapi": "sapi",
    "vault": "vault",
    "redis": "redis",
    "database": "postgres",
}
OPERATIONAL = "Fully operational"


def _setup(ctx: typer.Context) -> tuple[Settings, Plan, Any, Any]:
    from payapi.incident.journal import IncidentJournal
    from payapi.incident.render import Templates

    try:
        settings = get_ctx(ctx).settings
        plan = load_plan(settings.plan_file)
        templates = Templates(settings.incident.templates)
    except PayapiError as exc:
        fail(f"incident: {exc}", EXIT_USAGE)
    return settings, plan, IncidentJournal(settings.incident_journal_dir()), templates


def _duration(text: str, what: str) -> Any:
    try:
        return parse_duration(text)
    except PayapiError as exc:
        fail(f"{what}: {exc}", EXIT_USAGE)


def _deliver(
    settings: Settings, plan: Plan, journal: Any, outcome: Any, now: datetime
) -> list[Any]:
    """Send through the configured channels (the file outbox when none is configured)."""
    from payapi.incident import service

    # Looked up in sys.modules (not a plain import) so a test can stand in for the channels.
    notify = importlib.import_module("payapi.incident.notify")
    inc, msg = outcome.incident, outcome.message
    message = notify.Message(subject=msg.subject, body=msg.text, drill=msg.drill)
    to = [notify.Recipient(role=a.role, name=a.name, contact=a.contact) for a in outcome.recipients]
    results = list(notify.deliver(settings, plan, message, to))
    service.record_sends(journal=journal, incident_id=inc.id, n=outcome.n, results=results, now=now)
    return results


def _copy(settings: Settings, journal: Any, incident_id: str, now: datetime) -> dict[str, Any]:
    from payapi.incident import service
    from payapi.incident.journal import copy_to_repository

    result = copy_to_repository(settings, journal).to_json()
    try:
        service.record_copy(journal=journal, incident_id=incident_id, result=result, now=now)
    except PayapiError as exc:
        warn(f"the repository copy could not be recorded: {exc}")
    return result


def _sent(results: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"channel": r.channel, "role": r.role, "ok": r.ok} for r in results]


def _finish(data: dict[str, Any], results: Sequence[Any], *, as_json: bool) -> None:
    def human(d: dict[str, Any]) -> None:
        console.print(d["message"], markup=False, highlight=False, end="")
        for s in d["sent"]:
            mark = "sent" if s["ok"] else "FAILED"
            console.print(f"{mark}: {s['channel']} -> {s['role']}", markup=False, highlight=False)
        for role in d.get("unreachable_roles", []):
            warn(f"role {role} cannot be reached: its contacts are placeholders in the plan")
        copy = d.get("repository_copy")
        if copy and not copy["ok"]:
            warn(f"journal not copied to the backup repository: {copy['error']}")

    emit(data, as_json=as_json, human=human)
    if as_json:
        for role in data.get("unreachable_roles", []):
            warn(f"role {role} cannot be reached: its contacts are placeholders in the plan")
    if not any(r.ok for r in results):
        fail(f"{data['incident_id']}: the message reached no channel", EXIT_FAILED)


@app.command("declare")
def declare(
    ctx: typer.Context,
    description: str = typer.Option(..., "--description", help="Brief description."),
    impact: str = typer.Option(..., "--impact", help="Brief impact description."),
    services: str = typer.Option(..., "--services", help="Affected services: eapi,sapi,..."),
    estimate: str | None = typer.Option(None, "--estimate", help="Estimated recovery time."),
    next_update: str = typer.Option("30m", "--next-update", help="When the next update is due."),
    drill: bool = typer.Option(False, "--drill", help="A drill: every message says [DRILL]."),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Declare a disaster: open an incident and send the Disaster Declaration."""
    from payapi.incident import service

    settings, plan, journal, templates = _setup(ctx)
    when = parse_now(now)
    outcome = service.declare(
        journal=journal,
        plan=plan,
        templates=templates,
        description=description,
        impact=impact,
        services=services.split(","),
        estimate=estimate,
        next_update=_duration(next_update, "--next-update"),
        drill=drill,
        now=when,
    )
    results = _deliver(settings, plan, journal, outcome, when)
    inc = outcome.incident
    data = {
        "incident_id": inc.id,
        "state": str(inc.state),
        "declared_at": inc.declared_at.isoformat(),
        "drill": inc.drill,
        "message": outcome.message.text,
        "sent": _sent(results),
        "unreachable_roles": list(outcome.unreachable),
        "repository_copy": _copy(settings, journal, inc.id, when),
    }
    _finish(data, results, as_json=as_json)


@app.command("update")
def update(
    ctx: typer.Context,
    incident_id: str = typer.Argument(..., metavar="ID"),
    status: str = typer.Option(..., "--status", help="Current status (the recovery phase)."),
    progress: list[str] = typer.Option(..., "--progress", help="A milestone (repeatable)."),
    remaining: list[str] = typer.Option([], "--remaining", help="A remaining step (repeatable)."),
    estimate: str | None = typer.Option(None, "--estimate", help="Revised recovery estimate."),
    next_update: str = typer.Option("30m", "--next-update", help="When the next update is due."),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Send a Status Update (the first one moves the incident to recovering)."""
    from payapi.incident import service

    settings, plan, journal, templates = _setup(ctx)
    when = parse_now(now)
    outcome = service.update(
        journal=journal,
        plan=plan,
        templates=templates,
        incident_id=incident_id,
        status=status,
        progress=progress,
        remaining=remaining,
        estimate=estimate,
        next_update=_duration(next_update, "--next-update"),
        now=when,
    )
    results = _deliver(settings, plan, journal, outcome, when)
    inc = outcome.incident
    data = {
        "incident_id": inc.id,
        "state": str(inc.state),
        "message": outcome.message.text,
        "sent": _sent(results),
        "repository_copy": _copy(settings, journal, inc.id, when),
    }
    _finish(data, results, as_json=as_json)


def gather_health(settings: Settings, plan: Plan, services: Sequence[str]) -> dict[str, Any]:
    """Live health of the affected services, as :class:`ServiceState` per service. Never
    raises: when the region cannot be observed at all, each service says why."""
    from payapi.incident.model import ServiceState
    from payapi.ops import health, health_observe

    checked = [s for s in services if s in HEALTH_COMPONENT]
    out: dict[str, Any] = {}
    if not checked:
        return out
    try:
        report = health.assess(
            health_observe.observe(settings), health_observe.context(settings, plan)
        )
        components = dict(report.components)
    except PayapiError as exc:
        why = f"unreachable ({exc})"
        return {s: ServiceState(s, plan.components[s].title, False, why) for s in checked}
    for s in checked:
        title = plan.components[s].title
        c = components.get(HEALTH_COMPONENT[s])
        if c is None:
            out[s] = ServiceState(s, title, False, "not checked")
        elif c.detail == health.NOT_CONFIGURED:
            out[s] = ServiceState(s, title, False, "unreachable (not configured)")
        elif c.healthy:
            out[s] = ServiceState(s, title, True, OPERATIONAL)
        else:
            out[s] = ServiceState(s, title, False, f"not healthy: {c.detail}")
    return out


@app.command("complete")
def complete(
    ctx: typer.Context,
    incident_id: str = typer.Argument(..., metavar="ID"),
    outcome_: list[str] = typer.Option(..., "--outcome", help="Outcome summary (repeatable)."),
    follow_up: list[str] = typer.Option([], "--follow-up", help="Follow-up action (repeatable)."),
    review_at: str | None = typer.Option(None, "--review-at", help="Post-recovery review (ISO)."),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Send Recovery Complete: duration from the timeline, services from live health."""
    from payapi.incident import service

    settings, plan, journal, templates = _setup(ctx)
    when = parse_now(now)
    review = None
    if review_at is not None:
        try:
            review = datetime.fromisoformat(review_at.strip().replace("Z", "+00:00"))
        except ValueError:
            fail(f"--review-at: not an ISO 8601 time: {review_at!r}", EXIT_USAGE)
        review = review.replace(tzinfo=UTC) if review.tzinfo is None else review
    incident = service.get(journal=journal, incident_id=incident_id)
    result = service.complete(
        journal=journal,
        plan=plan,
        templates=templates,
        incident_id=incident.id,
        outcomes=outcome_,
        follow_ups=follow_up,
        health=gather_health(settings, plan, incident.services),
        review_at=review,
        now=when,
    )
    results = _deliver(settings, plan, journal, result, when)
    inc = result.incident
    done = next(e for e in reversed(inc.timeline) if e.type == "completed")
    data = {
        "incident_id": inc.id,
        "state": str(inc.state),
        "declared_at": inc.declared_at.isoformat(),
        "completed_at": inc.completed_at.isoformat() if inc.completed_at else None,
        "total_recovery_duration": done.data["total_recovery_duration"],
        "recovered_services": [s.to_json() for s in result.recovered_services],
        "message": result.message.text,
        "sent": _sent(results),
        "repository_copy": _copy(settings, journal, inc.id, when),
    }
    _finish(data, results, as_json=as_json)


@app.command("ack")
def ack(
    ctx: typer.Context,
    incident_id: str = typer.Argument(..., metavar="ID"),
    role: str = typer.Option(..., "--role", help="The role whose contact acknowledges."),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Record that a role's primary contact acknowledged the page."""
    from payapi.incident import service

    _, _, journal, _ = _setup(ctx)
    when = parse_now(now)
    inc = service.ack(journal=journal, incident_id=incident_id, role=role, now=when)
    key = role.strip().lower()
    data = {"incident_id": inc.id, "role": key, "acked_at": inc.acks[key].isoformat()}
    emit(
        data,
        as_json=as_json,
        human=lambda d: console.print(
            f"{d['incident_id']}: {d['role']} acknowledged", markup=False
        ),
    )


@app.command("close")
def close(
    ctx: typer.Context,
    incident_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = JSON_OPTION,
    now: str | None = NOW_OPTION,
) -> None:
    """Close a recovered incident (after its post-recovery review)."""
    from payapi.incident import service

    _, _, journal, _ = _setup(ctx)
    inc = service.close(journal=journal, incident_id=incident_id, now=parse_now(now))
    data = {"incident_id": inc.id, "state": str(inc.state)}
    emit(
        data,
        as_json=as_json,
        human=lambda d: console.print(f"{d['incident_id']}: {d['state']}", markup=False),
    )


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every incident in the journal."""
    from payapi.incident import service

    _, _, journal, _ = _setup(ctx)
    rows = [i.to_json(timeline=False) for i in service.get_all(journal=journal)]

    def human(data: list[dict[str, Any]]) -> None:
        if not data:
            console.print("no incidents", markup=False)
        for r in data:
            drill = " [drill]" if r["drill"] else ""
            when = r["declared_at"]
            line = f"{r['incident_id']}  {r['state']:<10} {when}  {r['description']}{drill}"
            console.print(line, markup=False, highlight=False)

    emit(rows, as_json=as_json, human=human)


@app.command("show")
def show(
    ctx: typer.Context,
    incident_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = JSON_OPTION,
) -> None:
    """One incident: state, roles, acknowledgements, and its timeline."""
    from payapi.incident import service

    _, _, journal, _ = _setup(ctx)
    inc = service.get(journal=journal, incident_id=incident_id)

    def human(d: dict[str, Any]) -> None:
        for key in ("incident_id", "state", "description", "impact", "declared_at", "completed_at"):
            console.print(f"{key}: {d[key]}", markup=False, highlight=False)
        console.print(f"services: {', '.join(d['services'])}", markup=False, highlight=False)
        if d["drill"]:
            console.print("drill: yes", markup=False)
        for role, at in d["acks"].items():
            console.print(f"acknowledged: {role} at {at}", markup=False, highlight=False)

    emit(inc.to_json(timeline=False), as_json=as_json, human=human)


@app.command("timeline")
def timeline(
    ctx: typer.Context,
    incident_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every event of one incident, in order."""
    from payapi.incident import service

    _, _, journal, _ = _setup(ctx)
    inc = service.get(journal=journal, incident_id=incident_id)
    events = [e.to_json() for e in inc.timeline]

    def human(data: list[dict[str, Any]]) -> None:
        for e in data:
            rest = {k: v for k, v in e.items() if k not in ("seq", "at", "type", "text")}
            if isinstance(rest.get("sha256"), str):
                rest["sha256"] = rest["sha256"][:12]
            detail = ", ".join(
                f"{k}={v}" for k, v in rest.items() if not isinstance(v, dict | list)
            )
            console.print(f"{e['at']}  {e['type']:<17} {detail}", markup=False, highlight=False)

    emit(events, as_json=as_json, human=human)


@app.command("verify")
def verify(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Check the journal's hash chain and head; exit 1 when an entry was tampered with."""
    _, _, journal, _ = _setup(ctx)
    result = journal.verify()

    def human(d: dict[str, Any]) -> None:
        if d["ok"]:
            console.print(f"incident journal ok: {d['entries_checked']} entries", markup=False)
        else:
            console.print(d["problem"]["message"], markup=False, highlight=False)
        for note in d["notes"]:
            console.print(f"note: {note}", markup=False, highlight=False)

    emit(result.to_json(), as_json=as_json, human=human)
    raise typer.Exit(0 if result.ok else EXIT_FAILED)


@app.command("sweep")
def sweep(ctx: typer.Context, as_json: bool = JSON_OPTION, now: str | None = NOW_OPTION) -> None:
    """Page the secondary contact of every unacknowledged page past the escalation delay,
    and remind of overdue "Next Update" times (the scheduler runs it every minute)."""
    from payapi.incident import escalation, service

    settings, plan, journal, _ = _setup(ctx)
    when = parse_now(now)
    report = escalation.sweep(
        settings, plan, service.sweep_views(plan, service.get_all(journal=journal)), when
    )
    with journal.locked():
        for action in report.actions:
            for r in action.results:
                journal.append(
                    type="sweep_sent",
                    incident=action.incident_id,
                    at=when,
                    data={
                        "kind": action.kind,
                        "role": action.role,
                        "contact": ",".join(x.contact for x in action.recipients),
                        "channel": r.channel,
                        "ok": r.ok,
                        "sha256": r.sha256,
                        "error": r.error,
                    },
                )
    emit(
        report.to_json(),
        as_json=as_json,
        human=lambda d: console.print(
            f"{len(d['escalations'])} escalations, {len(d['overdue'])} overdue updates",
            markup=False,
        ),
    )
    if not report.ok:
        raise typer.Exit(1)
