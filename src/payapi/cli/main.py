"""The ``payapi`` command: thin typer commands over the packages that do the work.

Global options come before the subcommand: ``payapi --config PATH clients create NAME``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from payapi.backup.wal import fast_path

# The `payapi` script imports this module before calling main(). A plain
# `payapi wal push %p` (archive_command: once per WAL segment) is served here, before
# typer and the command modules are imported; `python -m payapi` does the same.
if sys.argv and Path(sys.argv[0]).name == "payapi":
    fast_path(sys.argv[1:])

import typer

from payapi import __version__
from payapi.cli import (
    audit_cmd,
    backup_cmd,
    breach_cmd,
    clients_cmd,
    credentials_cmd,
    deploy_cmd,
    dns_cmd,
    drill_run_cmd,
    failover_cmd,
    health_cmd,
    incident_cmd,
    lab_cmd,
    openapi_cmd,
    plan_cmd,
    recover_cmd,
    region_cmd,
    restore_cmd,
    retention_cmd,
    runbook_cmd,
    schedule_cmd,
    security_cmd,
    serve_cmd,
    state_cmd,
    status_page_cmd,
    topology_cmd,
    verify_cmd,
    wal_cmd,
)
from payapi.cli.context import CliContext
from payapi.cli.output import fail
from payapi.core.errors import PayapiError
from payapi.core.settings import CONFIG_ENV

app = typer.Typer(
    name="payapi",
    help="Payment API platform and its disaster-recovery toolkit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"payapi {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", envvar=CONFIG_ENV, help="payapi.toml to use (or $PAYAPI_CONFIG)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    as_login: str | None = typer.Option(
        None, "--as", metavar="LOGIN", help="Act as this operator (a vault user or host/…)."
    ),
    api_key_file: Path | None = typer.Option(
        None, "--api-key-file", help="The operator's API key file (else $PAYAPI_API_KEY)."
    ),
) -> None:
    ctx.obj = CliContext(config_path=config, operator_login=as_login, api_key_file=api_key_file)


app.add_typer(plan_cmd.app, name="plan", help="The DR plan as data: show, check.")
app.add_typer(audit_cmd.app, name="audit", help="The hash-chained audit log.")
app.add_typer(clients_cmd.app, name="clients", help="API clients of the payment platform.")
app.add_typer(credentials_cmd.app, name="credentials", help="Rotate and verify credentials.")
app.add_typer(lab_cmd.app, name="lab", help="The local platform on loopback.")
app.add_typer(
    retention_cmd.app,
    name="retention",
    help="GFS retention of backups and WAL: plan, purge, simulate.",
)
app.add_typer(serve_cmd.app, name="serve", help="Run one service in the foreground.")
app.add_typer(schedule_cmd.app, name="schedule", help="The backup schedule: show, run.")
app.add_typer(backup_cmd.app, name="backup", help="Back up, list and verify backups.")
app.add_typer(dns_cmd.app, name="dns", help="The global endpoint's DNS record: show, set.")
app.add_typer(health_cmd.app, name="health", help="Health of a region: health check.")
app.add_typer(topology_cmd.app, name="topology", help="Regions, members, the endpoint.")
app.add_typer(region_cmd.app, name="region", help="Regional failover and failback.")
app.add_typer(
    incident_cmd.app, name="incident", help="Incidents: declare, update, complete, ack, list."
)
app.add_typer(drill_run_cmd.app, name="drill", help="DR drills: run, monitor, restore-normal.")
app.add_typer(runbook_cmd.app, name="runbook", help="Runbooks: list, run, show, resume, runs.")
recover_cmd.app.command("breach")(breach_cmd.breach)
app.add_typer(recover_cmd.app, name="recover", help="Recovery: corruption, breach, system.")
app.add_typer(security_cmd.app, name="security", help="Security verification: security check.")
app.add_typer(status_page_cmd.app, name="status-page", help="The public status page.")
app.add_typer(state_cmd.app, name="state", help="Document and compare the platform's state.")
app.add_typer(verify_cmd.app, name="verify", help="Recovery verification: verify system.")
app.add_typer(deploy_cmd.release_app, name="release", help="Record trusted releases.")
app.command("deploy")(deploy_cmd.deploy)
app.add_typer(wal_cmd.app, name="wal", help="WAL archiving (archive/restore_command).")
app.command("restore")(restore_cmd.restore)
app.command("openapi")(openapi_cmd.openapi)
app.command("failover")(failover_cmd.failover)


def main() -> None:
    """Entry point: a known failure (any :class:`PayapiError`) becomes one line on stderr
    and its exit code; anything else is a bug and keeps its traceback."""
    import os

    from payapi.core import logs

    # Logs go to stderr so that stdout stays clean for --json output.
    logs.configure(os.environ.get("PAYAPI_LOG_LEVEL", "WARNING"))
    try:
        app()
    except PayapiError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", code=130)


if __name__ == "__main__":
    main()
