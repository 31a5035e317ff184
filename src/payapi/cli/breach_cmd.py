"""`payapi recover breach --reason TEXT [--clients A,B | --all-clients]`: the seed's
Security Breach Recovery (:mod:`payapi.recovery.breach`), every step timed.

Exit 0 done, 1 a step failed (the block on the clients stays in place: containment never
lifts itself on a failure), 2 bad usage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import EXIT_USAGE, console, emit, fail, journal


def _security(settings: Any, comprehensive: bool) -> Any:
    from payapi.ops import security_scan

    def check() -> tuple[bool, str]:
        report = security_scan.check(settings, comprehensive=comprehensive).to_json()
        bad = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
        if bad:
            return False, "; ".join(bad)
        return True, f"security check: {len(report['checks'])} checks pass"

    return check


def _deploy(ctx: typer.Context, version: str, releases: Path | None) -> Any:
    """The clean deployment step: ``payapi deploy --clean-deployment --version V``."""
    from payapi.cli.deploy_cmd import _releases_file, _restart
    from payapi.ops import deploy as d

    settings = get_ctx(ctx).settings

    def check() -> tuple[bool, str]:
        d.release_of(d.load_releases(_releases_file(ctx, releases)), version)
        installed = d.installed_check(version)
        return True, f"{installed}; {_restart(settings.config_path)}"

    return check


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
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Contain (block at EAPI, revoke tokens), rotate, verify, monitor, lift the block."""
    from payapi.recovery.breach import recover_breach

    if all_clients == (clients is not None):
        fail("give exactly one of --clients A,B and --all-clients", EXIT_USAGE)
    names = None if all_clients else [c.strip() for c in (clients or "").split(",") if c.strip()]
    if names == []:
        fail("--clients names no client", EXIT_USAGE)
    if not reason.strip():
        fail("--reason must not be empty", EXIT_USAGE)
    if not yes:
        if not sys.stdin.isatty():
            fail("breach recovery: confirm with --yes (no terminal to ask on)", EXIT_USAGE)
        if not typer.confirm("Block, rotate and revoke now?", default=False, err=True):
            fail("breach recovery: not confirmed", EXIT_USAGE)
    settings = get_ctx(ctx).settings
    with journal(quiet=as_json) as j:
        outcome = recover_breach(
            settings,
            reason=reason,
            clients=names,
            rules_dir=rules_dir,
            security=_security(settings, comprehensive),
            deploy=_deploy(ctx, version, releases) if version else None,
            journal=j,
        )
    emit(outcome.to_json(), as_json=as_json, human=_show)
    if not outcome.ok:
        raise typer.Exit(1)
