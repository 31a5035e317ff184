"""`payapi serve vault|sapi|eapi`: run one service in the foreground (the lab spawns these)."""

from __future__ import annotations

import typer

from payapi.cli.context import get_ctx

app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)


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
def vault(ctx: typer.Context) -> None:
    """The Conjur-compatible vault."""
    from payapi.vault.app import create_app

    s = get_ctx(ctx).settings
    _run(create_app(s), s.vault.host, s.vault.port)


@app.command("sapi")
def sapi(ctx: typer.Context) -> None:
    """Payment-SAPI, the internal system API."""
    from payapi.sapi.app import create_app

    s = get_ctx(ctx).settings
    _run(create_app(s), s.sapi.host, s.sapi.port)


@app.command("eapi")
def eapi(ctx: typer.Context) -> None:
    """Payment-EAPI, the external API."""
    from payapi.eapi.app import create_app

    s = get_ctx(ctx).settings
    _run(create_app(s), s.eapi.host, s.eapi.port)
