"""`payapi region failover --to dr` / `region failback --to primary`: the seed's Regional
Failure Recovery and its way back, one command each, every step timed.

Exit 0 when the procedure succeeded, 1 when a step failed (the JSON says which), 2 when it
was refused before it changed anything (unknown region, the serving region still
reachable without ``--force``, no confirmation).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, journal
from payapi.core.errors import UsageError

app = typer.Typer(help="Regional failover and failback.", no_args_is_help=True)

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: confirm with --yes (no terminal to ask on)")
    if not typer.confirm(f"{what}?", default=False):
        raise UsageError(f"{what}: not confirmed")


def _verifier(settings: Any) -> Any:
    """The verification step: ``health check --environment REGION`` (ops.health)."""
    from payapi.core.plan import load_plan
    from payapi.ops import health, health_observe

    plan = load_plan(settings.plan_file)

    def verify(region: str) -> tuple[bool, str]:
        observations = health_observe.observe(settings, region)
        report = health.assess(observations, health_observe.context(settings, plan)).to_json()
        bad = [f"{n} ({c['detail']})" for n, c in report["components"].items() if not c["healthy"]]
        if not bad:
            return True, f"health check --environment {region}: every component healthy"
        return False, "unhealthy: " + "; ".join(bad)

    return verify


def _lab_of(config: Path | None) -> Path | None:
    from payapi.lab.regions import lab_dir_of

    return lab_dir_of(config)


def _show(data: dict[str, Any]) -> None:
    table = Table(title=f"region {data['from']} → {data['to']}")
    for col in ("step", "status", "seconds", "detail"):
        table.add_column(col)
    for s in data["steps"]:
        colour = {"ok": "green", "failed": "red"}.get(s["status"], "yellow")
        table.add_row(
            s["name"],
            f"[{colour}]{s['status']}[/{colour}]",
            f"{s['seconds']:.1f}",
            s.get("detail", ""),
        )
    console.print(table)
    window = data["data_window_seconds"]
    shown = "unknown" if window is None else f"{window:.1f}s"
    verdict = "[green]done[/green]" if data["ok"] else f"[red]failed[/red]: {data['error']}"
    console.print(f"{verdict} in {data['total_seconds']:.1f}s; data window at risk: {shown}")


def _finish(ctx: typer.Context, outcome: Any, as_json: bool) -> None:
    data = outcome.to_json()
    if outcome.ok:
        lab_dir = _lab_of(get_ctx(ctx).settings.config_path)
        if lab_dir is not None:
            from payapi.lab.regions import TwoRegionLab

            TwoRegionLab(lab_dir).set_active(outcome.target)
    emit(data, as_json=as_json, human=_show)
    if not outcome.ok:
        raise typer.Exit(1)


@app.command("failover")
def failover(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="The region to fail over to (e.g. dr)."),
    yes: bool = YesOpt,
    force: bool = typer.Option(
        False, "--force", help="Fail over even though the serving region answers: fence it first."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Regional failover: assess, (fence), DNS, database, vault, Redis, services, verify."""
    from payapi.recovery.regional import region_failover

    settings = get_ctx(ctx).settings
    _confirm(f"fail the platform over to region {to}", yes)
    with journal(quiet=as_json) as j:
        outcome = region_failover(
            settings, to=to, force=force, journal=j, verify=_verifier(settings)
        )
    _finish(ctx, outcome, as_json)


@app.command("failback")
def failback(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="The region to give service back to."),
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Failback with zero data loss: rebuild as a standby, catch up, pause, switch."""
    from payapi.recovery.regional import region_failback

    settings = get_ctx(ctx).settings
    _confirm(f"give service back to region {to}", yes)
    with journal(quiet=as_json) as j:
        outcome = region_failback(settings, to=to, journal=j, verify=_verifier(settings))
    _finish(ctx, outcome, as_json)


@app.command("seed-redis")
def seed_redis_cmd(
    ctx: typer.Context,
    region: str = typer.Option(..., "--region", help="The standby region whose Redis to seed."),
    as_json: bool = JsonOpt,
) -> None:
    """Restore the newest Redis snapshot into a standby region's Redis (the schedule runs
    it a few minutes after each snapshot). Refused for a region that serves."""
    from payapi.recovery.regional import probe
    from payapi.recovery.regional_redis import seed_redis

    settings = get_ctx(ctx).settings
    if region not in settings.regions:
        known = ", ".join(sorted(settings.regions)) or "none configured"
        raise UsageError(f"unknown region {region!r} (regions: {known})")
    conf = settings.regions[region]
    if probe(region, conf).writable:
        raise UsageError(f"region {region} serves: seeding would replace its live Redis")
    with journal(quiet=as_json) as j:
        detail = seed_redis(conf, j)
    emit(
        {"region": region, "detail": detail},
        as_json=as_json,
        human=lambda d: console.print(f"{d['region']}: {d['detail']}"),
    )
