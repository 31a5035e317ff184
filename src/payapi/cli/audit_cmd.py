"""`payapi audit` commands: verify the hash chain, list recent events.

The database is ``postgres.payment_dsn`` and the chain head ``audit.head_file`` from the
config. ``verify`` exits 0 when the chain is intact and 1 (one line naming the seq and the
kind of problem) when it is not, so it can gate a restore or run from cron.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import typer
from rich.table import Table

from payapi import audit
from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, fail, info
from payapi.core.settings import ConfigError, Settings

app = typer.Typer(help="audit", no_args_is_help=True)

T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 10.0


def _settings(ctx: typer.Context) -> Settings:
    try:
        return get_ctx(ctx).settings
    except ConfigError as exc:
        fail(str(exc))


def _run(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Connect, run, close; database failures become one line (never the DSN itself)."""

    async def go() -> T:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except asyncpg.UndefinedTableError:
        fail("the audit_events table does not exist: apply the payment_db migrations first")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        fail(f"cannot use the payment database: {type(exc).__name__}: {exc}")
    except audit.AuditError as exc:
        fail(str(exc))


def _dsn(settings: Settings) -> str:
    if not settings.postgres.payment_dsn:
        fail("postgres.payment_dsn is not configured (config file or PAYAPI_POSTGRES__PAYMENT_DSN)")
    return settings.postgres.payment_dsn


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Recompute every hash and compare the newest event with the head file."""
    settings = _settings(ctx)
    dsn = _dsn(settings)
    head_file = settings.audit.head_file
    result = _run(dsn, lambda conn: audit.verify(conn, head_file))

    def human(r: audit.VerifyResult) -> None:
        if r.ok:
            last = r.last_seq if r.last_seq is not None else "none"
            console.print(
                f"audit chain intact: {r.events_checked} events, last seq {last}",
                highlight=False,
            )
        for note in r.notes:
            info(f"note: {note}")

    emit(result.to_json() if as_json else result, as_json=as_json, human=human)
    if not result.ok:
        assert result.problem is not None
        fail(result.problem.line())


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the newest events."),
    type_: str | None = typer.Option(None, "--type", help="Only events of this type."),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON."),
) -> None:
    """Show the newest events, oldest first."""
    dsn = _dsn(_settings(ctx))
    events = _run(dsn, lambda conn: audit.list_events(conn, limit=limit, type=type_))

    def human(evs: list[audit.AuditEvent]) -> None:
        table = Table(title="Audit events", title_justify="left")
        for col in ("Seq", "Occurred (UTC)", "Type", "Actor", "Subject", "Details"):
            table.add_column(col)
        for e in evs:
            table.add_row(
                str(e.seq),
                e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.type,
                e.actor,
                e.subject or "-",
                ", ".join(f"{k}={_short(v)}" for k, v in e.details.items()),
            )
        console.print(table)

    emit([e.to_json() for e in events] if as_json else events, as_json=as_json, human=human)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
