"""`payapi clients`: API clients of the payment platform."""

from __future__ import annotations

import asyncio

import typer

from payapi.cli.context import get_ctx
from payapi.cli.output import console, emit, fail
from payapi.core.naming import InvalidName
from payapi.credentials.service import CredentialError, Platform, create_client, list_clients

app = typer.Typer(help="API clients of the payment platform.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Client name: a-z, 0-9 and '-'."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Provision a client in the vault. The secret is shown once, here, and nowhere else."""
    settings = get_ctx(ctx).settings

    async def run() -> dict[str, str]:
        p = Platform.from_settings(settings)
        try:
            c = await create_client(p, name=name)
        finally:
            await p.aclose()
        return {
            "name": c.name,
            "client_id": c.client_id,
            "client_secret": c.client_secret.get_secret_value(),
        }

    try:
        result = asyncio.run(run())
    except (CredentialError, InvalidName) as exc:
        fail(str(exc))

    def human(d: dict[str, str]) -> None:
        console.print(f"client [bold]{d['name']}[/bold] created")
        console.print(f"  client_id:     {d['client_id']}")
        console.print(f"  client_secret: {d['client_secret']}")
        console.print("[yellow]The secret is shown once; it lives in the vault.[/yellow]")

    emit(result, as_json=as_json, human=human)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Names of the clients provisioned in the vault."""
    settings = get_ctx(ctx).settings

    async def run() -> list[str]:
        p = Platform.from_settings(settings)
        try:
            return await list_clients(p)
        finally:
            await p.aclose()

    names = asyncio.run(run())

    def human(d: list[str]) -> None:
        for n in d:
            console.print(n)

    emit(names, as_json=as_json, human=human)
