"""`payapi credentials`: rotate (graceful or emergency) and verify client credentials."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import typer
from rich.table import Table

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, fail, warn
from payapi.core.durations import DurationError, parse_duration
from payapi.core.naming import InvalidName
from payapi.credentials.service import (
    CredentialError,
    Platform,
    emergency_rotate,
    rotate_client,
    verify_clients,
)

app = typer.Typer(help="Rotate and verify credentials.", no_args_is_help=True)
rotate_app = typer.Typer(
    help="Rotate one client's secret (graceful), or every client's (emergency).",
    invoke_without_command=True,
)
app.add_typer(rotate_app, name="rotate")


@rotate_app.callback()
def rotate(
    ctx: typer.Context,
    client: str | None = typer.Option(None, "--client", help="Client name."),
    grace: str = typer.Option("24h", "--grace", help="How long the old secret keeps working."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Graceful rotation: a new secret; the old one works until the grace period ends."""
    if ctx.invoked_subcommand is not None:
        return
    if client is None:
        fail("give --client NAME, or use `credentials rotate emergency`", code=2)
    try:
        grace_td = parse_duration(grace)
    except DurationError as exc:
        fail(f"--grace: {exc}", code=2)
    settings = get_ctx(ctx).settings

    async def run() -> dict[str, Any]:
        p = Platform.from_settings(settings)
        try:
            r = await rotate_client(p, name=client, grace=grace_td)
        finally:
            await p.aclose()
        return {
            "name": r.name,
            "client_id": r.client_id,
            "client_secret": r.client_secret.get_secret_value(),
            "previous_valid_until": r.previous_valid_until,
        }

    try:
        result = asyncio.run(run())
    except (CredentialError, InvalidName) as exc:
        fail(str(exc))

    def human(d: dict[str, Any]) -> None:
        console.print(f"rotated {d['name']}; old secret valid until {d['previous_valid_until']}")
        console.print(f"  new client_secret: {d['client_secret']}  (shown once)")

    emit(result, as_json=as_json, human=human)


@rotate_app.command("emergency")
def emergency(
    ctx: typer.Context,
    all_clients: bool = typer.Option(False, "--all-clients", help="Rotate every client."),
    client: list[str] = typer.Option([], "--client", help="Rotate these clients only."),
    force: bool = typer.Option(False, "--force", help="Required: this breaks every client."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    include_services: bool = typer.Option(
        False, "--include-services", help="Also rotate the SAPI service token."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Replace every client's secret and revoke every token at once (security breach)."""
    if not all_clients and not client:
        fail("give --all-clients or --client NAME", code=2)
    if not force:
        fail(
            "emergency rotation breaks every client until it fetches new secrets; "
            "add --force to proceed",
            code=2,
        )
    if not reason.strip():
        fail("--reason must not be empty", code=2)
    settings = get_ctx(ctx).settings

    async def run() -> dict[str, Any]:
        p = Platform.from_settings(settings)
        try:
            r = await emergency_rotate(
                p,
                reason=reason,
                names=None if all_clients else client,
                include_services=include_services,
            )
        finally:
            await p.aclose()
        d = asdict(r)
        d["rotated"] = len(r.clients) - len(r.errors)
        return d

    result = asyncio.run(run())

    def human(d: dict[str, Any]) -> None:
        console.print(
            f"emergency rotation: {d['rotated']}/{len(d['clients'])} clients rotated, "
            f"{d['tokens_revoked']} tokens revoked in {d['seconds']}s"
        )
        if not d["audited"]:
            warn("the audit log was unreachable; event not recorded")

    emit(result, as_json=as_json, human=human)
    if result["errors"]:
        fail(f"{len(result['errors'])} clients not rotated: {result['errors'][0]}")
    if not result["redis_cleared"]:
        fail(
            "secrets rotated, but Redis was unreachable: tokens may still be valid; "
            "run the rotation again when Redis answers"
        )


@app.command("verify")
def verify(
    ctx: typer.Context,
    all_clients: bool = typer.Option(False, "--all-clients", help="Verify every client."),
    client: list[str] = typer.Option([], "--client", help="Verify these clients only."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Each credential is present, readable and accepted by EAPI; exit 1 otherwise."""
    if not all_clients and not client:
        fail("give --all-clients or --client NAME", code=2)
    settings = get_ctx(ctx).settings

    async def run() -> list[dict[str, Any]]:
        p = Platform.from_settings(settings)
        try:
            checks = await verify_clients(p, names=None if all_clients else client)
        finally:
            await p.aclose()
        return [{**asdict(c), "ok": c.ok} for c in checks]

    results = asyncio.run(run())

    def human(rows: list[dict[str, Any]]) -> None:
        table = Table("client", "present", "readable", "accepted", "problem")
        for r in rows:
            table.add_row(
                r["name"],
                *(("yes" if r[k] else "NO") for k in ("present", "readable", "accepted")),
                r["problem"] or "",
            )
        console.print(table)

    emit(
        {"clients": results, "ok": all(r["ok"] for r in results)},
        as_json=as_json,
        human=lambda d: human(d["clients"]),
    )
    bad = [r["name"] for r in results if not r["ok"]]
    if bad:
        fail(f"{len(bad)} of {len(results)} clients failed verification: {', '.join(bad)}")
