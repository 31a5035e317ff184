"""The ``payapi`` command: thin typer commands over the packages that do the work.

Global options come before the subcommand: ``payapi --config PATH clients create NAME``.
"""

from __future__ import annotations

import sys

from payapi.backup.wal_prefetch import prefetch_for_argv

# The `payapi` script imports this module before calling main(). A plain
# `payapi wal push %p` (archive_command: once per WAL segment) is served here, before
# typer and the command modules are imported; `python -m payapi` does the same. The
# segment is read on a thread from the start (it overlaps the imports).
if sys.argv and sys.argv[0].rsplit("/", 1)[-1] == "payapi":
    _prepared = prefetch_for_argv(sys.argv[1:])
    from payapi.backup.wal import fast_path

    fast_path(sys.argv[1:], hard_exit=True, prepared=_prepared)

from pathlib import Path

import typer
import typer.core
import typer.main

# typer 0.27 carries its own click (typer._click); its types are the ones it checks.
from typer import _click as click

from payapi import __version__
from payapi.cli.context import CliContext
from payapi.cli.output import fail
from payapi.core.errors import PayapiError
from payapi.core.settings import CONFIG_ENV

# The subcommands, loaded only when one is run: `payapi --help` and `payapi wal fetch` import
# no command module they do not run (each subprocess call of the CLI pays its imports).
# Groups are (module, Typer attribute, help); single commands (module, function, help).
GROUPS: dict[str, tuple[str, str, str]] = {
    "plan": ("plan_cmd", "app", "The DR plan as data: show, check."),
    "audit": ("audit_cmd", "app", "The hash-chained audit log."),
    "clients": ("clients_cmd", "app", "API clients of the payment platform."),
    "credentials": ("credentials_cmd", "app", "Rotate and verify credentials."),
    "lab": ("lab_cmd", "app", "The local platform on loopback."),
    "retention": (
        "retention_cmd",
        "app",
        "GFS retention of backups and WAL: plan, purge, simulate.",
    ),
    "serve": ("serve_cmd", "app", "Run one service in the foreground."),
    "schedule": ("schedule_cmd", "app", "The backup schedule: show, run."),
    "backup": ("backup_cmd", "app", "Back up, list and verify backups."),
    "dns": ("dns_cmd", "app", "The global endpoint's DNS record: show, set."),
    "health": ("health_cmd", "app", "Health of a region: health check."),
    "topology": ("topology_cmd", "app", "Regions, members, the endpoint."),
    "region": ("region_cmd", "app", "Regional failover and failback."),
    "incident": ("incident_cmd", "app", "Incidents: declare, update, complete, ack, list."),
    # One group: drill_cmd (report, history, action) merges drill_run_cmd (run, monitor…).
    "drill": (
        "drill_cmd",
        "app",
        "DR drills: run, monitor, restore-normal, report, history, improvement actions.",
    ),
    "runbook": ("runbook_cmd", "app", "Runbooks: list, run, show, resume, runs."),
    "recover": ("recover_cmd", "app", "Recovery: corruption, component, breach, system."),
    "security": ("security_cmd", "app", "Security verification: security check."),
    "status-page": ("status_page_cmd", "app", "The public status page."),
    "state": ("state_cmd", "app", "Document and compare the platform's state."),
    "verify": ("verify_cmd", "app", "Recovery verification: verify system."),
    "release": ("deploy_cmd", "release_app", "Record trusted releases."),
    "wal": ("wal_cmd", "app", "WAL archiving (archive/restore_command)."),
}
COMMANDS: dict[str, tuple[str, str, str]] = {
    "deploy": ("deploy_cmd", "deploy", "Deploy a recorded release (--clean-deployment)."),
    "restore": ("restore_cmd", "restore", "Restore a component from a backup (or to a time)."),
    "openapi": ("openapi_cmd", "openapi", "Print a service's OpenAPI document."),
    "failover": ("failover_cmd", "failover", "Fail a component over to its standby."),
}


def _load(name: str) -> click.Command | None:
    """Import the module of subcommand ``name`` and build its click command."""
    import importlib

    if name in GROUPS:
        module, attr, help_text = GROUPS[name]
        sub = getattr(importlib.import_module(f"payapi.cli.{module}"), attr)
        group = typer.main.get_group(sub)
        group.name, group.help = name, help_text
        return group
    if name in COMMANDS:
        module, attr, help_text = COMMANDS[name]
        func = getattr(importlib.import_module(f"payapi.cli.{module}"), attr)
        holder = typer.Typer()
        holder.command(name)(func)
        return typer.main.get_command(holder)
    return None


class LazyGroup(typer.core.TyperGroup):
    """The root group: subcommands are imported when they are looked up to run; the help
    listing shows their names and one-line help without importing them."""

    _listing = False

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return [*GROUPS, *COMMANDS]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> click.Command | None:  # type: ignore[override]
        if self._listing:
            entry = GROUPS.get(cmd_name) or COMMANDS.get(cmd_name)
            return (
                typer.core.TyperCommand(cmd_name, help=entry[2], short_help=entry[2])
                if entry
                else None
            )
        return _load(cmd_name)

    def format_help(self, ctx: typer.Context, formatter: click.HelpFormatter) -> None:  # type: ignore[override]
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
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
