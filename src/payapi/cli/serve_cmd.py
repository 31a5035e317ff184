"""`payapi serve vault|sapi|eapi|endpoint`: run one service in the foreground (the lab spawns
these)."""

from __future__ import annotations

from collections.abc import Callable

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


@app.command("endpoint")
def endpoint(ctx: typer.Context, port: int | None = PortOpt) -> None:
    """The global endpoint: forwards each connection to the region the DNS record names."""
    import asyncio

    from payapi.core import logs
    from payapi.servers.endpoint import GlobalEndpoint, serve_until_signalled
    from payapi.systems.dns import endpoint_listen, endpoint_lookup

    s = get_ctx(ctx).settings
    host, listen_port = endpoint_listen(s)
    forwarder = GlobalEndpoint(
        endpoint_lookup(s),
        host=host,
        port=port or listen_port,
        refresh_seconds=s.topology.endpoint_refresh_seconds,
        connect_timeout=s.topology.endpoint_connect_timeout_seconds,
    )
    logs.configure()
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional: plain asyncio forwards too, a little slower
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_until_signalled(forwarder))
