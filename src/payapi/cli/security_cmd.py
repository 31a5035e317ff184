"""`payapi security check [--comprehensive] [--json]`: the seed's security verification
(``security-scan.sh --comprehensive``, ``verify-security-config.sh``).

Reading is :mod:`payapi.ops.security_scan`, the verdicts :mod:`payapi.ops.security`;
this module prints. Exit 0 only when every check passes, 1 otherwise. No secret is ever
printed: a leak is named by what it is and where it was found.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, fail
from payapi.core.errors import PayapiError

app = typer.Typer(help="security", no_args_is_help=True)


def print_checks(data: dict[str, Any], title: str = "Security check") -> None:
    table = Table(title=title, title_justify="left")
    for col in ("Check", "OK", "Detail"):
        table.add_column(col, overflow="fold")
    for c in data["checks"]:
        mark = Text("yes", "green") if c["ok"] else Text("NO", "bold red")
        table.add_row(Text(c["name"]), mark, Text(str(c["detail"])))
    console.print(table)
    verdict = "passed" if data["ok"] else f"FAILED: {', '.join(data['failed'])}"
    console.print(f"{title}: {verdict}", markup=False, highlight=False)


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    comprehensive: bool = typer.Option(
        False,
        "--comprehensive",
        help="Read every backup object (not only manifests) and every kept secret version.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for automation)."),
) -> None:
    """No secret in logs, Redis, the database, backups or the configuration; listeners on
    the configured interfaces; the audit chain intact; no default or stale credentials;
    the vault data key private. Exit 0 when all pass, 1 otherwise."""
    from payapi.ops import security_scan

    try:
        report = security_scan.check(get_ctx(ctx).settings, comprehensive=comprehensive)
    except PayapiError as exc:
        fail(f"security check: {exc}", exc.exit_code)
    emit(report.to_json(), as_json=as_json, human=print_checks)
    raise typer.Exit(report.exit_code)
