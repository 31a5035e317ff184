"""`payapi recover breach --reason TEXT [--clients A,B | --all-clients]`: the seed's
Security Breach Recovery (:mod:`payapi.recovery.breach`) as the shipped runbook
``security-breach`` run by the engine: journaled (``payapi runbook show|resume RUN_ID``),
``execute`` on ``webservice:runbooks/security-breach`` checked for ``payapi --as``,
``--dry-run`` changes nothing.

Exit 0 done, 1 a step failed (the block on the clients stays in place: containment never
lifts itself on a failure; resume the run), 2 bad usage, 3 refused by access control.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, journal
from payapi.core.errors import PayapiError


def _show(data: dict[str, Any]) -> None:
    table = Table(title=f"security breach recovery ({data['clients']})")
    for col in ("step", "status", "seconds", "detail"):
        table.add_column(col)
    for s in data["steps"]:
        colour = {"ok": "green", "failed": "red"}.get(s["status"], "yellow")
        table.add_row(
            s["name"], f"[{colour}]{s['status']}[/{colour}]", f"{s['seconds']:.1f}", s["detail"]
        )
    console.print(table)
    verdict = "[green]done[/green]" if data["ok"] else f"[red]failed[/red]: {data['error']}"
    console.print(f"{verdict} in {data['total_seconds']:.1f}s")
    console.print(f"run {data['run_id']} (payapi runbook show|resume)", highlight=False)


def breach(
    ctx: typer.Context,
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    clients: str | None = typer.Option(
        None, "--clients", help="The compromised clients (comma-separated)."
    ),
    all_clients: bool = typer.Option(False, "--all-clients", help="Every client."),
    rules_dir: Path | None = typer.Option(
        None, "--rules-dir", help="Where Prometheus loads rules: the security rules go there."
    ),
    comprehensive: bool = typer.Option(
        False, "--comprehensive", help="The security check reads every backup object."
    ),
    version: str | None = typer.Option(
        None, "--version", help="Redeploy this recorded release clean (payapi deploy)."
    ),
    releases: Path | None = typer.Option(None, "--releases", help="The release record."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what each step would do, read live; change nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Contain (block at EAPI, revoke tokens), rotate, verify, monitor, lift the block."""
    from payapi.cli.recovery_providers import install
    from payapi.cli.runbook_cmd import _show_dry_run
    from payapi.recovery import breach as b
    from payapi.recovery import service

    if all_clients == (clients is not None):
        fail("give exactly one of --clients A,B and --all-clients", EXIT_USAGE)
    names = None if all_clients else [c.strip() for c in (clients or "").split(",") if c.strip()]
    if names == []:
        fail("--clients names no client", EXIT_USAGE)
    if not reason.strip():
        fail("--reason must not be empty", EXIT_USAGE)
    given = {
        "reason": reason,
        "clients": ",".join(names or []),
        "all_clients": "true" if names is None else "false",
        "rules_dir": str(rules_dir.expanduser().absolute()) if rules_dir else "",
        "comprehensive": "true" if comprehensive else "false",
        "version": version or "",
        "releases": str(releases.expanduser().absolute()) if releases else "",
    }
    settings = get_ctx(ctx).settings
    install()
    try:
        if dry_run:
            plan = service.plan_dry_run(settings, name=b.RUNBOOK, given=given)
            emit(plan.to_json(), as_json=as_json, human=_show_dry_run)
            if not plan.ok:
                raise typer.Exit(1)
            return
        service.resolve(settings, name=b.RUNBOOK, given=given)
        if not yes:
            if not sys.stdin.isatty():
                fail("breach recovery: confirm with --yes (no terminal to ask on)", EXIT_USAGE)
            if not typer.confirm("Block, rotate and revoke now?", default=False, err=True):
                fail("breach recovery: not confirmed", EXIT_USAGE)
        b.client_ids(settings, names)  # an unknown name: refused, nothing done
        with journal(quiet=as_json) as j:
            result = service.start_run(
                settings,
                name=b.RUNBOOK,
                given=given,
                journal=j,
                operator=get_ctx(ctx).operator(),
            )
        outcome = b.outcome(service.view(result.path))
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    emit(outcome, as_json=as_json, human=_show)
    if not outcome["ok"]:
        raise typer.Exit(1)
