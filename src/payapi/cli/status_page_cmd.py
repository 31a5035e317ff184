"""`payapi status-page build --out DIR [--include-drills] [--json]` and
`payapi status-page serve --dir DIR [--port P]`: the public status page.

Health comes from :func:`payapi.ops.health_observe.observe` judged by
:func:`payapi.ops.health.assess` (the cli may use ops; the incident package may not); the
page itself is :mod:`payapi.incident.status_page`. Exit 0 when the page was written,
1 when it could not be, 2 for bad usage (an unknown environment, an invalid plan).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, info
from payapi.core.errors import PayapiError
from payapi.core.plan import Plan, PlanError, load_plan
from payapi.core.settings import Settings
from payapi.incident.status_page import HealthLike, PublicIncident
from payapi.incident.status_page import build as build_page
from payapi.incident.status_page import serve as serve_page

app = typer.Typer(help="status page", no_args_is_help=True)

# Health checks that are not plan components, as the public reads them.
_EXTRA_LABELS = {"replication": "Disaster-recovery replication", "dns": "Global endpoint"}


def _health(settings: Settings, plan: Plan, environment: str | None) -> Mapping[str, HealthLike]:
    from payapi.ops import health, health_observe

    report = health.assess(
        health_observe.observe(settings, environment), health_observe.context(settings, plan)
    )
    return report.components


def _public_names(
    plan: Plan, components: Mapping[str, HealthLike]
) -> tuple[dict[str, HealthLike], dict[str, str]]:
    """Health checks keyed by the plan's component names (postgres → database), with the
    plan's titles as labels."""
    keyed: dict[str, HealthLike] = {}
    labels: dict[str, str] = {}
    for name, h in components.items():
        try:
            canonical = plan.resolve(name)
            label = plan.component(canonical).title
        except PlanError:
            canonical, label = name, _EXTRA_LABELS.get(name, name)
        keyed[canonical] = h
        labels[canonical] = label
    return keyed, labels


def _incidents(settings: Settings) -> list[PublicIncident]:
    """The incidents' public updates, from the incident journal: the declaration's impact,
    each update's status and progress, the completion. Only these texts are read (never
    the rendered messages, which name people), and the page scrubs them again."""
    from payapi.incident import service
    from payapi.incident.journal import IncidentJournal
    from payapi.incident.status_page import PublicUpdate

    journal = IncidentJournal(settings.incident_journal_dir())
    out: list[PublicIncident] = []
    for inc in service.get_all(journal=journal):
        updates = [PublicUpdate(inc.declared_at, "declared", inc.impact)]
        for ev in inc.timeline:
            if ev.type == "updated":
                body = "; ".join(str(p) for p in ev.data.get("progress", ()))
                updates.append(PublicUpdate(ev.at, str(ev.data.get("status", "")), body))
            elif ev.type == "completed":
                updates.append(PublicUpdate(ev.at, "recovered", "Recovery complete."))
        out.append(
            PublicIncident(
                inc.id,
                inc.description,
                str(inc.state),
                inc.declared_at,
                tuple(inc.services),
                tuple(updates),
                inc.drill,
            )
        )
    return out


def _internal(settings: Settings, plan: Plan) -> list[str]:
    """Strings that must never be on the page: people's names, phones and emails, and
    every host, URL and DSN of the configuration."""
    out: list[str] = []
    for role in plan.communication.roles.values():
        for c in (role.primary, role.secondary):
            if not c.is_placeholder:
                out += [c.name, c.phone, c.email]
    out += [settings.vault.url, *settings.vault.urls, settings.vault.dsn]
    out += [settings.sapi.url, settings.eapi.url, settings.sapi.dsn]
    out += [settings.postgres.payment_dsn, settings.postgres.vault_dsn, settings.redis.url]
    out += [settings.topology.endpoint or "", settings.topology.dns_record or ""]
    for ch in settings.incident.channels:
        out += [ch.host or "", ch.from_address or "", *ch.to]
    for region in settings.regions.values():
        for members in (region.postgres, region.redis, region.vault):
            out += [m.url for m in members] + [m.patroni_url or "" for m in members]
    return [s for s in out if s]


def _print_human(data: dict[str, Any]) -> None:
    console.print(data["status"]["description"], markup=False, highlight=False)
    for c in data["components"]:
        console.print(f"  {c['name']}: {c['status']}", markup=False, highlight=False)
    console.print(f"incidents: {len(data['incidents'])}", markup=False, highlight=False)


@app.command("build")
def build(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="The folder to write index.html and status.json."),
    environment: str | None = typer.Option(
        None, "--environment", "-e", help="The region whose health is shown (default: primary)."
    ),
    include_drills: bool = typer.Option(
        False, "--include-drills", help="Also publish drill incidents (never by default)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print status.json's content."),
) -> None:
    """Write the static status page (HTML + status.json, self-contained) from the health
    checks and the open incidents. No host, DSN or person's name is ever on it."""
    try:
        settings = get_ctx(ctx).settings
        plan = load_plan(settings.plan_file)
        components, labels = _public_names(plan, _health(settings, plan, environment))
    except PlanError as exc:
        fail(f"status-page build: {exc}", EXIT_USAGE)
    except PayapiError as exc:
        fail(f"status-page build: {exc}", exc.exit_code)
    try:
        data = build_page(
            out,
            components,
            _incidents(settings),
            labels=labels,
            internal=_internal(settings, plan),
            include_drills=include_drills,
        )
    except OSError as exc:
        fail(f"status-page build: cannot write {out}: {exc.strerror or exc}")
    emit(data, as_json=as_json, human=_print_human)


@app.command("serve")
def serve(
    directory: Path = typer.Option(..., "--dir", help="The folder `status-page build` wrote."),
    port: int = typer.Option(8099, "--port", min=0, max=65535, help="Port on 127.0.0.1."),
) -> None:
    """Serve the status page on loopback until interrupted (put a real web server or a
    CDN in front of it for the public)."""
    if not (directory / "index.html").is_file():
        fail(f"status-page serve: no index.html in {directory} (run status-page build)", 2)
    try:
        server = serve_page(directory, port)
    except OSError as exc:
        fail(f"status-page serve: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
    info(f"status page on {server.url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
