"""`payapi serve vault|sapi|eapi`: run one service in the foreground (the lab spawns these)."""

from __future__ import annotations

import typer

from payapi.cli.context import get_ctx

app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)

# Two servers of one service share a config (the active and the standby vault of a
# region): the port is the one thing that differs.
PortOpt = typer.Option(None, "--port", min=1, max=65535, help="Listen here instead.")


def _run(app_obj: object, host: str, port: int) -> None:
    import uvicorn

    from payapi.core import logs

    logs.configure()
    uvicorn.run(
        app_obj,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )


@app.command("vault")
def vault(ctx: typer.Context, port: int | None = PortOpt) -> None:
    """The Conjur-compatible vault."""
    from payapi.vault.app import create_app

    s = get_ctx(ctx).settings
    _run(create_app(s), s.vault.host, port or s.vault.port)


@app.command("sapi")
def sapi(ctx: typer.Context, port: int | None = PortOpt) -> None:
    """Payment-SAPI, the internal system API."""
    from payapi.sapi.app import create_app

    s = get_ctx(ctx).settings
    _run(create_app(s), s.sapi.host, port or s.sapi.port)


@app.command("eapi")
def eapi(ctx: typer.Context, port: int | None = PortOpt) -> None:
    """Payment-EAPI, the external API."""
    from payapi.eapi.app import create_app

    s = get_ctx(ctx).settings
    _run(create_app(s), s.eapi.host, port or s.eapi.port)

